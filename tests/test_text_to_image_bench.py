"""bench.text_to_image end to end on tiny models made here (a CLIP, caption- and class-conditional U-Nets and an
unconditional one, random weights saved as checkpoints with cards), judged by the shipped classifiers: every figure
has its structure, lies in its range and is recomputed by other routes (core.text_to_image.generate and adherence,
core.captions.facts, core.clip.retrieval_accuracy, core.metrics)."""
import hashlib
import json
import math

import numpy as np
import pytest
import torch

import bench.common
from bench.report import MISSING, fill, table
from tests.conftest import real_fashion_test_split

N, PAIR_N, STEPS, RETRIEVAL_N, CEILING_FACES = 8, 2, 2, 50, 300
CLIP_CONFIG = dict(image_size=32, widths=(8, 8, 8), text_width=16, text_layers=1, heads=2, embedding_dim=8)


def _unet(channels: int, condition_dim: int, seed: int):
    from core.diffusion import DiffusionConfig, UNet

    torch.manual_seed(seed)
    model = UNet(DiffusionConfig(channels=channels, image_size=32, widths=(8, 16), patch=2, embedding_dim=8,
                                 condition_dim=condition_dim)).eval()
    # Both start at zero (no noise predicted, the condition ignored): give them weights so that the prompt and
    # the guidance weight change the pictures.
    torch.nn.init.normal_(model.head[-1].weight, std=0.3)
    if condition_dim:
        torch.nn.init.normal_(model.condition[-1].weight, std=0.5)
    return model


def _save(path, model, command: str, data: str, steps: int):
    from core.checkpoints import make_card, save_checkpoint

    save_checkpoint(path, model, model.config, make_card(commands=[command], data=data, wall_time_s=1.5, steps=steps))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from core.clip import ClipConfig, TinyCLIP

    folder = tmp_path_factory.mktemp("text_to_image")
    paths = {}
    for name, seed in (("clip", 0), ("other_clip", 1)):
        torch.manual_seed(seed)
        paths[name] = _save(folder / f"{name}.pt", TinyCLIP(ClipConfig(**CLIP_CONFIG)).eval(),
                            "python -m core.train clip --steps 1", "captioned test faces", 1)
    clip_sha = hashlib.sha256(open(paths["clip"], "rb").read()).hexdigest()
    paths["captions"] = _save(folder / "captions.pt", _unet(3, CLIP_CONFIG["embedding_dim"], 2),
                              "python -m core.train diffusion --data faces --condition captions --steps 3",
                              f"faces; captions embedded by the shipped CLIP faces32 (sha256 {clip_sha}, ...)", 3)
    paths["classes"] = _save(folder / "classes.pt", _unet(1, 10, 3),
                             "python -m core.train diffusion --data fashion --condition classes --steps 4",
                             "Fashion-MNIST with class one-hots", 4)
    paths["faces"] = _save(folder / "faces.pt", _unet(3, 0, 4), "python -m core.train diffusion --data faces --steps 5",
                           "faces", 5)
    return paths


@pytest.fixture
def results(monkeypatch, tmp_path):
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return tmp_path


def _arguments(tiny, **overrides):
    options = {"n": N, "pair-n": PAIR_N, "steps": STEPS, "retrieval-n": RETRIEVAL_N, "ceiling-faces": CEILING_FACES,
               "speed-images": 2, "speed-steps": 2, "speed-repeats": 1, "threads": 1,
               **{role: tiny[role] for role in ("captions", "clip", "classes", "faces")}, **overrides}
    return ["--quick", *[x for name, value in options.items() for x in (f"--{name}", str(value))]]


def _load(path, cls, config_cls):
    from core.checkpoints import build_model, load_checkpoint

    return build_model(load_checkpoint(path), cls, config_cls).requires_grad_(False)


def _in_unit(x) -> bool:
    return 0.0 <= x <= 1.0


def test_the_bench_measures_adherence_quality_retrieval_and_speed_and_each_figure_is_recomputable(tiny, results,
                                                                                                  tmp_path):
    import bench.text_to_image as t2i_bench
    from core.captions import HELD_OUT, SEEN, caption_of_pair, captions_for, facts, parse_prompt
    from core.clip import ClipConfig, TinyCLIP, retrieval_accuracy, test_set
    from core.data.faces import face_split
    from core.diffusion import DiffusionConfig, UNet
    from core.metrics.classifiers import face_features, fashion_probabilities
    from core.metrics.quality import compare
    from core.runtime import make_generator
    from core.text_to_image import STRIP_WEIGHTS, Pipeline, adherence, generate

    real_fashion_test_split()  # Fashion-MNIST installed, or a skip saying how
    figure_before = t2i_bench.FIGURE.stat().st_mtime_ns if t2i_bench.FIGURE.exists() else None
    plot_path = tmp_path / "guidance.png"
    figures = t2i_bench.main(_arguments(tiny, plot=plot_path))
    saved = json.loads((results / "text_to_image.quick.json").read_text())
    assert saved["quick"] is True and saved["figures"] == json.loads(json.dumps(figures))
    assert "missing" not in figures and figures["threads"] == 1 and figures["steps"] == STEPS
    keys = [t2i_bench.weight_key(w) for w in STRIP_WEIGHTS]
    assert keys == ["w0", "w1", "w3", "w7_5"]

    # Which files were measured: the SHA-256 of each and its card's command; the caption model's CLIP is this one.
    records = figures["checkpoints"]
    for role, steps in (("clip", 1), ("captions", 3), ("classes", 4), ("faces", 5)):
        assert records[role]["sha256"] == hashlib.sha256(open(tiny[role], "rb").read()).hexdigest()
        assert records[role]["command"].startswith("python -m core.train") and records[role]["steps"] == steps
    assert "--condition captions" in records["captions"]["command"]
    assert set(records["classifiers"]) == {"face_attributes32", "fashion_mnist"}
    assert figures["clip_matches_captions_model"] is True

    clip = _load(tiny["clip"], TinyCLIP, ClipConfig)
    pipeline = Pipeline("faces32_captions", _load(tiny["captions"], UNet, DiffusionConfig), "captions", clip)

    # Adherence of the pair prompts: the batched images are generate()'s, the figures adherence()'s on them.
    pairs = figures["pairs"]
    assert pairs["n"] == PAIR_N and pairs["weights"] == list(STRIP_WEIGHTS)
    for group, expected in (("seen", SEEN), ("held_out", HELD_OUT)):
        records = pairs[group]["pairs"]
        assert [tuple(tuple(c) for c in r["pair"]) for r in records] == expected
        for key in keys:
            assert pairs[group][key]["attributes"] == pytest.approx(np.mean([r[key]["attributes"] for r in records]),
                                                                    abs=1e-4)
            for r in records:
                scores = r[key]
                assert set(scores["per_attribute"]) == {" ".join(c) for c in r["pair"]}
                assert all(_in_unit(v) for v in [*scores["per_attribute"].values(), scores["attributes"],
                                                 scores["both"]])
                assert scores["both"] <= min(scores["per_attribute"].values()) + 1e-9
                assert scores["attributes"] == pytest.approx(np.mean(list(scores["per_attribute"].values())), abs=1e-4)
    pair = SEEN[0]
    prompt = caption_of_pair(pair)
    batched = t2i_bench.pair_images(pipeline, pair, PAIR_N, STRIP_WEIGHTS, STEPS, 0)
    assert batched.shape == (len(STRIP_WEIGHTS), PAIR_N, 3, 32, 32)
    assert (batched[0] - batched[-1]).abs().max() > 0.1  # the weight changes the picture
    for k, w in enumerate(STRIP_WEIGHTS):
        alone = generate(pipeline, prompt, PAIR_N, make_generator(0), w, steps=STEPS)
        # The same up to rounding: another batch size sums in another order, and the first step's guess
        # x_0 = (x_1 - noise ε) / signal divides by signal(1) = 0.01.
        assert (batched[k] - alone).abs().max() < 2e-3, w
        by_hand = {name: round(v, 4) for name, v in adherence(batched[k], prompt).items()}
        assert pairs["seen"]["pairs"][0][keys[k]]["per_attribute"] == by_hand
    # The ceiling: the real test faces whose exact labels have the pair (found here through facts()).
    real = face_split("test", CEILING_FACES, size=32)
    having = [i for i in range(CEILING_FACES) if all(facts(real.labels, i)[f] == v for f, v in pair)]
    ceiling = pairs["seen"]["pairs"][0]["real"]
    assert ceiling["faces"] == len(having) > 0
    assert ceiling["per_attribute"] == {name: round(v, 4) for name, v in adherence(real.images[having], prompt).items()}
    assert ceiling["attributes"] > 0.5  # the shipped classifier reads real faces well

    # Quality and own-caption adherence at each weight, against the real test faces.
    part = figures["captions"]
    test = face_split("test", N, size=32)
    texts = captions_for(test.labels, np.random.default_rng(0))
    assert part["n"] == N and part["examples"] == texts[:3]
    for key in [*keys, "real"]:
        scores = part[key]
        assert math.isfinite(scores["fid"]) and scores["fid"] >= 0 and math.isfinite(scores["kid_mean"])
        assert all(_in_unit(scores[k]) for k in ("precision", "recall", "adherence", "all_claims"))
        assert scores["all_claims"] <= scores["adherence"] + 1e-9
    real_scores = compare(face_features(face_split("train", N, size=32).images), face_features(test.images))
    assert part["real"]["fid"] == real_scores["fid"]
    own = [np.mean(list(adherence(test.images[i:i + 1], text).values())) for i, text in enumerate(texts)]
    assert part["real"]["adherence"] == pytest.approx(np.mean(own), abs=1e-4)

    # Fashion-MNIST: every class equally, the classifier's accuracy at the class asked for.
    fashion = figures["classes"]
    per_class = math.ceil(N / 10)
    assert fashion["n"] == 10 * per_class and fashion["per_class"] == per_class
    for key in [*keys, "real"]:
        scores = fashion[key]
        assert _in_unit(scores["accuracy"]) and len(scores["class_accuracy"]) == 10
        assert scores["accuracy"] == pytest.approx(np.mean(scores["class_accuracy"]), abs=1e-3)
        assert math.isfinite(scores["fid"]) and scores["fid"] >= 0 and _in_unit(scores["precision"])
    real_images, real_classes = t2i_bench.fashion_real(per_class)
    assert real_classes.tolist() == sorted(real_classes.tolist()) and real_classes.bincount().tolist() == [per_class] * 10
    by_hand = (fashion_probabilities(real_images, (0, 1)).argmax(-1) == real_classes).float().mean().item()
    assert fashion["real"]["accuracy"] == round(by_hand, 4)

    # CLIP retrieval, and how often the retrieved face fits the caption: a full caption fits exactly the faces
    # with the same facts, so here fitting is counted by comparing facts.
    retrieval = figures["retrieval"]
    images, captions = test_set(RETRIEVAL_N, 32)
    for name, value in retrieval_accuracy(clip, images, captions).items():
        assert retrieval[name] == round(value, 4)
    assert retrieval["faces"] == RETRIEVAL_N and retrieval["chance_top1"] == 1 / RETRIEVAL_N
    assert retrieval["chance_top5"] == 5 / RETRIEVAL_N
    labels = face_split("test", RETRIEVAL_N, size=32).labels
    fact = [facts(labels, i) for i in range(RETRIEVAL_N)]
    assert all(len(parse_prompt(c).claims) == 9 for c in captions)  # every family said
    with torch.no_grad():
        top = (clip.encode_texts(captions) @ clip.encode_images(images).T).argmax(1)
    assert retrieval["fits_top1"] == pytest.approx(np.mean([fact[j] == fact[i] for i, j in enumerate(top.tolist())]),
                                                   abs=1e-4)
    same = [sum(f == g for g in fact) for f in fact]
    assert retrieval["mean_faces_fitting_a_caption"] == pytest.approx(np.mean(same), abs=0.01) and min(same) >= 1
    assert retrieval["fits_chance"] == pytest.approx(np.mean(same) / RETRIEVAL_N, abs=1e-4)
    assert retrieval["fits_top1"] >= retrieval["text_to_image_top1"]  # the right face always fits its caption

    # Speed: both timed as often, the ratio of the medians, the target.
    speed = figures["speed"]
    assert speed["threads"] == 1 and speed["images"] == 2 and speed["steps"] == 2 and speed["weight"] == 3.0
    for name in ("guided", "unconditional"):
        assert speed[name]["runs"] == 1 and 0 < speed[name]["min_s"] <= speed[name]["median_s"] <= speed[name]["max_s"]
    assert speed["ratio"] == pytest.approx(speed["guided"]["median_s"] / speed["unconditional"]["median_s"], rel=1e-2)
    assert speed["meets_target"] == (speed["ratio"] <= 2.0) and speed["target_ratio"] == 2.0
    assert speed["parameters"]["guided"] > speed["parameters"]["unconditional"]  # the condition's layers

    # The figure went where it was asked to, and the shipped one was left alone.
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figures["plot"].endswith("guidance.png")
    assert (t2i_bench.FIGURE.stat().st_mtime_ns if t2i_bench.FIGURE.exists() else None) == figure_before

    for row in t2i_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    for sentence in t2i_bench.README_PROSE:
        fill(sentence, figures)
    rows = table(results, ["text_to_image"])
    assert MISSING not in rows and rows.count("`bench/text_to_image.py`") == len(t2i_bench.README_ROWS)
    assert f"{figures['retrieval']['fits_top1']:.1%} (quick)" in rows


def test_missing_models_are_listed_with_their_commands_and_their_figures_left_out(tiny, results, tmp_path):
    import bench.text_to_image as t2i_bench

    figure_before = t2i_bench.FIGURE.stat().st_mtime_ns if t2i_bench.FIGURE.exists() else None
    # No Fashion model and no unconditional faces; a CLIP other than the one the caption model's card names.
    figures = t2i_bench.main(_arguments(tiny, classes=tmp_path / "none.pt", faces=tmp_path / "faces.pt",
                                        clip=tiny["other_clip"]))
    missing = figures["missing"]
    assert len(missing) == 2 and missing[0].startswith("classes") and "--condition classes" in missing[0]
    assert missing[1].startswith("faces") and "python -m core.train diffusion --data faces" in missing[1]
    assert "classes" not in figures and "speed" not in figures and "plot" not in figures  # --quick draws nothing
    assert {"pairs", "captions", "retrieval"} <= set(figures)
    assert figures["clip_matches_captions_model"] is False
    assert set(figures["checkpoints"]) == {"captions", "clip", "classifiers"}
    missing_rows = [line for line in table(results, ["text_to_image"]).splitlines() if MISSING in line]
    assert len(missing_rows) == 4  # the three Fashion rows and the speed row
    assert "Class-conditional" in missing_rows[0] and "speed" in missing_rows[3]

    # Without a CLIP the caption model cannot read a prompt: only what needs neither is left (here: nothing).
    figures = t2i_bench.main(_arguments(tiny, classes=tmp_path / "none.pt", clip=tmp_path / "clip.pt"))
    assert [m.split(" ")[0] for m in figures["missing"]] == ["clip", "classes", "captions:"]
    assert not {"pairs", "captions", "classes", "retrieval", "speed"} & set(figures)
    assert "clip_matches_captions_model" not in figures
    rows = table(results, ["text_to_image"]).splitlines()
    assert len([line for line in rows if line.endswith(f"| {MISSING} |")]) == len(t2i_bench.README_ROWS)
    assert (t2i_bench.FIGURE.stat().st_mtime_ns if t2i_bench.FIGURE.exists() else None) == figure_before
