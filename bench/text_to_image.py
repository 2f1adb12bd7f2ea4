"""Text-to-image (issue #21), measured: how closely the guided models follow their prompts, what guidance
costs in sample quality and in time, and how well the tiny CLIP matches captions and faces.

    python -m bench.text_to_image [--quick] [--n N] [--pair-n N] [--threads N] [--steps 50]
                                  [--captions PATH] [--clip PATH] [--classes PATH] [--faces PATH] [--plot PATH]

The models are the shipped ones (assets/checkpoints/diffusion/faces32_captions.pt, assets/checkpoints/clip/faces32.pt,
assets/checkpoints/diffusion/fashion32_classes.pt, and the unconditional assets/checkpoints/diffusion/faces32.pt for
the speed comparison), or the files given. Each file is read once into memory, and what was read is both hashed and
loaded, so a checkpoint a running trainer replaces mid-bench cannot make the record lie: "checkpoints" holds each one's
SHA-256 and its card's command, steps, wall time and date. A model not shipped yet is listed under "missing" with the
command that makes it, and the figures that need it are left out (the caption model needs the CLIP too).
"clip_matches_captions_model" says whether the CLIP measured is the one the caption model's card says embedded its
training captions (a retrained CLIP silently changes what every prompt means to an older U-Net).

Every image is drawn by DDIM with eta = 0 in --steps steps (default 50), the same start noise at every guidance weight
w in core.text_to_image.STRIP_WEIGHTS (0: the prompt ignored, 1: the plain conditional model, 3, 7.5), all weights of an
image in one batch, both of classifier-free guidance's predictions in one network call (core.text_to_image.guided_denoise).

- Prompt adherence against guidance, the trade-off of Ho & Salimans (2022): for each attribute pair of
  core.captions.SEEN (pairs training captions do say) and core.captions.HELD_OUT (pairs no training face has), the
  prompt core.captions.caption_of_pair, --pair-n images (default 64; --quick 4, seed --seed): the share the
  face-attribute classifier trained on 32-px faces (face_attributes32) reads as having each asked-for attribute
  (core.text_to_image.adherence), their mean, and
  the share with both; per pair and averaged per group. Beside it the ceiling: the same classifier's figures on the
  real test faces (core.data.faces.face_split('test', --ceiling-faces, size=32); default 5,000, --quick 1,000) that
  truly have both attributes (their exact labels).
- Quality against guidance: the first --n test faces (default 500; --quick 16) at 32 px, one caption each
  (core.captions.captions_for on their labels, numpy rng seeded --seed), one image per caption at each weight; FID, KID
  and improved precision/recall (k = 3) on the face-attribute classifier's features against those real test faces
  (core.metrics.quality.compare_sets), beside real vs real (as many train-split faces against the same test faces,
  as bench/fid_baseline.py does); and the images' adherence to their own captions (per image the share of its
  caption's claims the classifier reads as held, and the share of images with every claim held), beside the real
  test faces' adherence to their own captions.
- The same for the class-conditional Fashion-MNIST model: ceil(--n / 10) images of each class at each weight; the
  shipped Fashion-MNIST classifier's accuracy at reading the class asked for (beside its accuracy on as many real test
  images of each class), and FID/KID/precision/recall on its features against random real test images (beside as many
  random train images against the same test images).
- CLIP retrieval on core.clip.test_set(--retrieval-n, 32) (default 1,000 test faces, one full caption each):
  core.clip.retrieval_accuracy's text->image and image->text top-1 and top-5 beside chance (1/n, 5/n); and the share
  of caption->image top-1 retrievals whose face satisfies every claim of the caption (core.captions.parse_prompt and
  labels_of against the retrieved face's exact labels): several faces can fit one full caption, so this is the fairer
  figure; beside its chance, the mean share of the faces that fit a caption.
- Speed on --threads threads (default GENLAB_THREADS or all cores): --speed-images images (16) x --speed-steps DDIM
  steps (50) of core.text_to_image.generate at w = 3 (two predictions a step, batched) against core.diffusion.sample
  of the unconditional faces32 model, the same size; one untimed call each, then --speed-repeats (5; --quick 2)
  timed calls of each, alternating; the ratio of the medians, target <= 2.0.

The full run draws docs/figures/text_to_image_guidance.png (adherence against FID, one point per weight); --quick
draws nothing unless --plot is given.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import checkpoint_record, portable, save_results

SPEED_TARGET = 2.0          # guided generation may cost at most twice the unconditional model's
SPEED_WEIGHT = 3.0
IMAGES_PER_CALL = 256       # images in one guided batch (each is predicted twice)
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "text_to_image_guidance.png"
MODELS = {  # role -> (technique, shipped name, the command that makes it when it is missing)
    "captions": ("diffusion", "faces32_captions", "python -m core.train diffusion --data faces --size 32 --condition "
                                                  "captions --batch-size 32 --minutes 50 --threads 1"),
    "clip": ("clip", "faces32", "python -m core.train clip --steps 3000 --threads 1"),
    "classes": ("diffusion", "fashion32_classes", "python -m core.train diffusion --data fashion --condition classes "
                                                  "--batch-size 32 --minutes 30 --threads 1"),
    "faces": ("diffusion", "faces32", "python -m core.train diffusion --data faces --size 32"),
}


def weight_key(weight: float) -> str:
    """The figures' key for a guidance weight: 0 -> "w0", 7.5 -> "w7_5" (dotted README fields allow no ".")."""
    return "w" + f"{float(weight):g}".replace(".", "_")


def _weights_text() -> str:
    from core.text_to_image import STRIP_WEIGHTS

    return " / ".join(f"{w:g}" for w in STRIP_WEIGHTS)


def _per_weight(template: str, sep: str = " / ") -> str:
    """`template` with {w} replaced by each weight's key, joined: "{pairs.seen.{w}.attributes:.0%}" for every weight."""
    from core.text_to_image import STRIP_WEIGHTS

    return sep.join(template.replace("{w}", weight_key(w)) for w in STRIP_WEIGHTS)


README_ROWS = [
    {"figure": f"Text-to-image (faces32_captions): attributes of two-attribute prompts present, guidance w = "
               f"{_weights_text()}, pairs training captions say ({{pairs.n}} faces a pair, face-attribute classifier)",
     "measured": _per_weight("{pairs.seen.{w}.attributes:.0%}"),
     "reference": "real faces with the pair: {pairs.seen.real.attributes:.0%}"},
    {"figure": f"Text-to-image: the same for held-out pairs no training face has (composition), w = {_weights_text()}; "
               "in brackets: faces with both",
     "measured": _per_weight("{pairs.held_out.{w}.attributes:.0%} ({pairs.held_out.{w}.both:.0%})"),
     "reference": "real faces with the pair: {pairs.held_out.real.attributes:.0%} ({pairs.held_out.real.both:.0%})"},
    {"figure": f"Text-to-image: FID on the face features, one image per test-face caption, w = {_weights_text()}",
     "measured": _per_weight("{captions.{w}.fid:.1f}") + " (n = {captions.n})",
     "reference": "real vs real {captions.real.fid:.2f}"},
    {"figure": f"Text-to-image: the same images' precision / recall (k = 3), w = {_weights_text()}",
     "measured": _per_weight("{captions.{w}.precision:.2f}/{captions.{w}.recall:.2f}", " · "),
     "reference": "real vs real {captions.real.precision:.2f}/{captions.real.recall:.2f}"},
    {"figure": f"Text-to-image: the same images' adherence to their own captions (share of claims read as held), "
               f"w = {_weights_text()}",
     "measured": _per_weight("{captions.{w}.adherence:.0%}"),
     "reference": "the real test faces: {captions.real.adherence:.0%}"},
    {"figure": f"Class-conditional diffusion (fashion32_classes): the classifier reads the class asked for, "
               f"w = {_weights_text()}",
     "measured": _per_weight("{classes.{w}.accuracy:.1%}") + " (n = {classes.n})",
     "reference": "real test images: {classes.real.accuracy:.1%}"},
    {"figure": f"Class-conditional diffusion: FID on the Fashion-MNIST features, w = {_weights_text()}",
     "measured": _per_weight("{classes.{w}.fid:.1f}") + " (n = {classes.n})",
     "reference": "real vs real {classes.real.fid:.2f}"},
    {"figure": f"Class-conditional diffusion: precision / recall (k = 3) of the same images, w = {_weights_text()} "
               "(recall falling: guidance trades variety for faithfulness)",
     "measured": _per_weight("{classes.{w}.precision:.2f}/{classes.{w}.recall:.2f}", " · "),
     "reference": "real vs real {classes.real.precision:.2f}/{classes.real.recall:.2f}"},
    {"figure": "Tiny CLIP retrieval on {retrieval.faces:,} test faces (full captions): text→image top-1 / top-5; "
               "image→text top-1 / top-5",
     "measured": "{retrieval.text_to_image_top1:.1%} / {retrieval.text_to_image_top5:.1%}; "
                 "{retrieval.image_to_text_top1:.1%} / {retrieval.image_to_text_top5:.1%}",
     "reference": "chance {retrieval.chance_top1:.1%} / {retrieval.chance_top5:.1%}"},
    {"figure": "Tiny CLIP: caption→image top-1 retrievals whose face fits every claim of the caption "
               "(several faces can fit one caption)",
     "measured": "{retrieval.fits_top1:.1%}", "reference": "a random face: {retrieval.fits_chance:.1%}"},
    {"figure": "Text-to-image speed: {speed.images} images × {speed.steps} DDIM steps with guidance, against the "
               "unconditional faces32 model ({speed.threads} thread(s), median)",
     "measured": "{speed.ratio:.2f}× ({speed.guided.median_s:.2f} s vs {speed.unconditional.median_s:.2f} s)",
     "reference": f"≤ {SPEED_TARGET:g}×"},
]

README_PROSE = [
    "at guidance w = 3 the text-to-image model draws the attributes of a held-out pair in "
    "{pairs.held_out.w3.attributes:.0%} of its faces (pairs training captions say: {pairs.seen.w3.attributes:.0%}; "
    "w = 0, the prompt ignored: {pairs.held_out.w0.attributes:.0%}; real faces with the pair: "
    "{pairs.held_out.real.attributes:.0%}), at FID {captions.w3.fid:.1f} (w = 0: {captions.w0.fid:.1f}; "
    "w = 7.5: {captions.w7_5.fid:.1f}; real vs real {captions.real.fid:.2f})",
]


# --- loading what is measured ---------------------------------------------------------------

def read_checkpoint(path, folder: Path):
    """(the checkpoint, its record) from one read of `path`: the bytes are hashed and those same bytes loaded
    (through a copy in `folder`), so a file replaced meanwhile cannot be hashed as one model and measured as another."""
    from core.checkpoints import load_checkpoint

    data = Path(path).read_bytes()
    copy = folder / f"{hashlib.sha256(str(path).encode()).hexdigest()[:12]}.pt"
    copy.write_bytes(data)
    checkpoint = load_checkpoint(copy)
    return checkpoint, {**checkpoint_record(path, checkpoint.card, data), "data": checkpoint.card.get("data")}


def load_models(paths: dict) -> tuple[dict, dict, list[str]]:
    """The pipelines and models at `paths` (roles of MODELS): {"captions": Pipeline, "classes": Pipeline,
    "faces": UNet, "clip": TinyCLIP} for those that exist, their records, and a line for each missing one."""
    from core.checkpoints import build_model
    from core.clip import ClipConfig, TinyCLIP
    from core.diffusion import DiffusionConfig, UNet
    from core.runtime import app_device
    from core.text_to_image import Pipeline

    models, records, missing = {}, {}, []
    device = app_device()
    with tempfile.TemporaryDirectory() as folder:
        for role, (_, _, command) in MODELS.items():
            path = Path(paths[role])
            if not path.is_file():
                missing.append(f"{role} ({portable(path)}: {command})")
                continue
            checkpoint, records[role] = read_checkpoint(path, Path(folder))
            cls, config = (TinyCLIP, ClipConfig) if role == "clip" else (UNet, DiffusionConfig)
            models[role] = build_model(checkpoint, cls, config).to(device).requires_grad_(False)
    if "captions" in models and "clip" not in models:
        missing.append("captions: its prompts need the CLIP, which is missing")
        del models["captions"]
    if "captions" in models:
        models["captions"] = Pipeline("faces32_captions", models["captions"], "captions", models["clip"])
    if "classes" in models:
        models["classes"] = Pipeline("fashion32_classes", models["classes"], "classes")
    return models, records, missing


def classifier_records() -> dict:
    """The shipped judges' files: the face-attribute classifier of 32-pixel faces and the Fashion-MNIST one."""
    from core.checkpoints import file_sha256
    from core.registry import read_card, shipped_path

    out = {}
    for name in ("face_attributes32", "fashion_mnist"):
        path = shipped_path("classifier", name)
        if path.is_file():
            out[name] = {"file": portable(path), "sha256": file_sha256(path),
                         "command": read_card("classifier", name).get("command")}
    return out


# --- drawing images ---------------------------------------------------------------------------

@torch.no_grad()
def guided_images(pipeline, conditions: torch.Tensor, noise: torch.Tensor, weights, steps: int,
                  per_call: int = IMAGES_PER_CALL) -> torch.Tensor:
    """[len(weights), N, C, H, W] in [0, 1]: image i drawn from start noise noise[i] with condition conditions[i]
    (or conditions[0] for all), at every guidance weight, DDIM eta = 0; the weights of an image share a batch."""
    from core.diffusion import Sampler, to_unit
    from core.text_to_image import check_weight, empty_condition, guided_denoise

    model = pipeline.model
    sampler = Sampler("DDIM", steps, 0.0, model.config.schedule)
    empty = empty_condition(pipeline)
    weights = check_weight(list(weights))
    k = len(weights)
    chunk = max(1, per_call // k)
    out = []
    for start in range(0, len(noise), chunk):
        x = noise[start:start + chunk]
        m = len(x)
        condition = conditions[:1].expand(m, -1) if len(conditions) == 1 else conditions[start:start + m]
        frame = None
        for frame in guided_denoise(model, sampler, x.repeat(k, 1, 1, 1), condition.repeat(k, 1), empty,
                                    weights.repeat_interleave(m)):
            pass
        out.append(to_unit(frame.x_t).reshape(k, m, *x.shape[1:]))
    return torch.cat(out, dim=1)


def pair_images(pipeline, pair, n: int, weights, steps: int, seed: int) -> torch.Tensor:
    """[len(weights), n, 3, H, W]: what core.text_to_image.generate(pipeline, caption_of_pair(pair), n,
    make_generator(seed), w, steps) draws at each w, in one batch."""
    from core.captions import caption_of_pair
    from core.diffusion import start_noise
    from core.runtime import make_generator
    from core.text_to_image import read_prompt

    condition = read_prompt(pipeline, caption_of_pair(pair))[0]
    return guided_images(pipeline, condition, start_noise(n, pipeline.model.config, make_generator(seed)), weights,
                         steps)


# --- scoring ------------------------------------------------------------------------------------

def fits(labels: dict, i: int, claims) -> bool:
    """Does face i's exact labels satisfy every claim ((family, value) pairs)?"""
    from core.captions import labels_of

    return all(bool(labels[label][i]) == wanted for claim in claims for label, wanted in labels_of(claim))


def claims_held(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Per image i, the share of texts[i]'s claims the face-attribute classifier reads as held (the rule of
    core.text_to_image.adherence, one caption per image), and whether all are: two [N] float tensors."""
    from core.captions import parse_prompt
    from core.text_to_image import attribute_readings, claim_holds

    readings = attribute_readings(images)
    share, every = [], []
    for i, text in enumerate(texts):
        held = [bool(claim_holds(readings, claim)[i]) for claim in parse_prompt(text).claims]
        share.append(sum(held) / len(held) if held else float("nan"))
        every.append(float(all(held)) if held else float("nan"))
    return torch.tensor(share), torch.tensor(every)


def _pair_scores(images: torch.Tensor, prompt: str) -> dict:
    """adherence's share per attribute, their mean, and the share of images with both."""
    from core.text_to_image import adherence

    per_attribute = adherence(images, prompt)
    _, both = claims_held(images, [prompt] * len(images))
    return {"per_attribute": {k: round(v, 4) for k, v in per_attribute.items()},
            "attributes": round(sum(per_attribute.values()) / len(per_attribute), 4),
            "both": round(both.mean().item(), 4)}


def _group_mean(records: list[dict], key: str) -> dict:
    return {"attributes": round(float(np.mean([r[key]["attributes"] for r in records])), 4),
            "both": round(float(np.mean([r[key]["both"] for r in records])), 4)}


def pair_figures(pipeline, n: int, weights, steps: int, seed: int, ceiling_faces: int) -> dict:
    """Adherence of every SEEN and HELD_OUT pair's prompt at every weight, with the real faces' ceiling."""
    from core.captions import HELD_OUT, SEEN, caption_of_pair
    from core.data.faces import face_split

    real = face_split("test", ceiling_faces, size=32)
    out = {"n": n, "steps": steps, "seed": seed, "weights": [float(w) for w in weights],
           "ceiling_faces": ceiling_faces}
    for group, pairs in (("seen", SEEN), ("held_out", HELD_OUT)):
        records = []
        for pair in pairs:
            prompt = caption_of_pair(pair)
            images = pair_images(pipeline, pair, n, weights, steps, seed)
            record = {"pair": [list(claim) for claim in pair], "prompt": prompt}
            for w, batch in zip(weights, images):
                record[weight_key(w)] = _pair_scores(batch, prompt)
            having = [i for i in range(ceiling_faces) if fits(real.labels, i, pair)]
            record["real"] = {"faces": len(having), **(_pair_scores(real.images[having], prompt) if having else {})}
            records.append(record)
        out[group] = {weight_key(w): _group_mean(records, weight_key(w)) for w in weights}
        with_real = [r for r in records if r["real"]["faces"]]
        out[group]["real"] = {"faces": sum(r["real"]["faces"] for r in records),
                              **(_group_mean(with_real, "real") if with_real else {})}
        out[group]["pairs"] = records
    return out


def caption_figures(pipeline, n: int, weights, steps: int, seed: int) -> dict:
    """One image per test-face caption at each weight: FID/KID/precision/recall against those test faces and the
    adherence to their own captions; "real": train faces vs the test faces, and the test faces' own adherence."""
    from core.captions import captions_for
    from core.data.faces import face_split
    from core.diffusion import start_noise
    from core.metrics.classifiers import face_features
    from core.metrics.quality import compare_sets
    from core.runtime import make_generator
    from core.text_to_image import caption_conditions

    test = face_split("test", n, size=32)
    texts = captions_for(test.labels, np.random.default_rng(seed))
    noise = start_noise(n, pipeline.model.config, make_generator(seed))
    images = guided_images(pipeline, caption_conditions(pipeline.clip, texts), noise, weights, steps)
    sets = {weight_key(w): batch for w, batch in zip(weights, images)}
    scores = compare_sets(face_features, sets, test.images, face_split("train", n, size=32).images)
    for key, batch in [*sets.items(), ("real", test.images)]:
        share, every = claims_held(batch, texts)
        scores[key].update(adherence=round(share.mean().item(), 4), all_claims=round(every.mean().item(), 4))
    return {"n": n, "steps": steps, "seed": seed, "weights": [float(w) for w in weights], "size": 32,
            "captions": f"core.captions.captions_for(face_split('test', {n}, size=32).labels, "
                        f"np.random.default_rng({seed}))", "examples": texts[:3], **scores}


def fashion_real(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` test images of each class, [10 * per_class, 1, 32, 32] in [0, 1], and their classes."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float

    images, labels = load_fashion_mnist("test")
    index = torch.cat([(labels == c).nonzero()[:per_class, 0] for c in range(10)])
    return to_float(images[index]), labels[index]


def class_figures(pipeline, per_class: int, weights, steps: int, seed: int) -> dict:
    """per_class images of each class at each weight: the classifier's accuracy at the class asked for and
    FID/KID/precision/recall against random real test images (train vs test: "real")."""
    from core.data.fashion_mnist import to_float
    from core.diffusion import start_noise
    from core.metrics.classifiers import fashion_features, fashion_probabilities
    from core.metrics.quality import compare_sets, fashion_real_images
    from core.runtime import make_generator
    from core.text_to_image import class_conditions

    n = 10 * per_class
    classes = torch.arange(10).repeat(per_class)  # 0..9, 0..9, ...
    conditions = class_conditions([[int(c)] for c in classes])
    noise = start_noise(n, pipeline.model.config, make_generator(seed))
    images = guided_images(pipeline, conditions, noise, weights, steps)
    sets = {weight_key(w): batch for w, batch in zip(weights, images)}
    feature = lambda x: fashion_features(x, (0, 1))
    scores = compare_sets(feature, sets, to_float(fashion_real_images("test", n, seed)),
                          to_float(fashion_real_images("train", n, seed)))
    real_images, real_classes = fashion_real(per_class)
    for key, batch, asked in [*((k, v, classes) for k, v in sets.items()), ("real", real_images, real_classes)]:
        right = fashion_probabilities(batch, (0, 1)).argmax(-1) == asked
        scores[key].update(accuracy=round(right.float().mean().item(), 4),
                           class_accuracy=[round(right[asked == c].float().mean().item(), 4) for c in range(10)])
    return {"n": n, "per_class": per_class, "steps": steps, "seed": seed, "weights": [float(w) for w in weights],
            **scores}


def retrieval_figures(clip, n: int) -> dict:
    """core.clip.retrieval_accuracy on test_set(n, 32), chance, and how often the top-1 face fits its caption."""
    from core.captions import parse_prompt
    from core.clip import embed_images, embed_texts, retrieval_accuracy, test_set
    from core.data.faces import face_split

    images, texts = test_set(n, 32)
    labels = face_split("test", n, size=32).labels  # test_set's faces, with their labels
    scores = retrieval_accuracy(clip, images, texts)
    top = (embed_texts(clip, texts) @ embed_images(clip, images).T).argmax(1)  # each caption's best face
    claims = [parse_prompt(text).claims for text in texts]
    fitting = [sum(fits(labels, j, c) for j in range(n)) for c in claims]
    return {"faces": n, "captions": "core.clip.test_set: one full caption each (every family said)",
            **{k: round(v, 4) for k, v in scores.items()}, "chance_top1": round(1 / n, 6),
            "chance_top5": round(min(5, n) / n, 6),
            "fits_top1": round(float(np.mean([fits(labels, int(j), c) for j, c in zip(top, claims)])), 4),
            "fits_chance": round(float(np.mean(fitting)) / n, 4),
            "mean_faces_fitting_a_caption": round(float(np.mean(fitting)), 2)}


def speed(pipeline, unconditional, images: int, steps: int, repeats: int, seed: int) -> dict:
    """Guided generation (core.text_to_image.generate at w = SPEED_WEIGHT) against core.diffusion.sample of the
    unconditional model: one untimed call each, then `repeats` timed calls of each, alternating."""
    from core import diffusion
    from core.captions import HELD_OUT, caption_of_pair
    from core.runtime import make_generator
    from core.text_to_image import generate

    prompt = caption_of_pair(HELD_OUT[0])
    calls = {"guided": lambda: generate(pipeline, prompt, images, make_generator(seed), SPEED_WEIGHT, steps),
             "unconditional": lambda: diffusion.sample(unconditional, images, make_generator(seed), steps=steps)}
    times = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:
                times[name].append(time.perf_counter() - start)
    summary = {name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
                      "max_s": round(max(t), 4), "runs": len(t)} for name, t in times.items()}
    ratio = summary["guided"]["median_s"] / summary["unconditional"]["median_s"]
    parameters = lambda model: sum(p.numel() for p in model.parameters())
    return {"threads": torch.get_num_threads(), "images": images, "steps": steps, "weight": SPEED_WEIGHT,
            "prompt": prompt, **summary, "ratio": round(ratio, 3), "target_ratio": SPEED_TARGET,
            "meets_target": ratio <= SPEED_TARGET,
            "parameters": {"guided": parameters(pipeline.model), "unconditional": parameters(unconditional)}}


# --- the figure -----------------------------------------------------------------------------------

def plot(figures: dict, path: Path) -> Path | None:
    """Adherence (y) against FID (x), one labelled point per guidance weight: the faces (adherence to their own
    captions; the two-attribute prompts at the same weights) and Fashion-MNIST (class accuracy)."""
    panels = [key for key in ("captions", "classes") if key in figures]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], panels):
        part = figures[key]
        keys = [weight_key(w) for w in part["weights"]]
        fid = [part[k]["fid"] for k in keys]
        if key == "captions":
            series = [("own captions (one per test face)", [part[k]["adherence"] for k in keys], "o-")]
            if "pairs" in figures:
                for group, words in (("seen", "pairs training says"), ("held_out", "held-out pairs")):
                    series.append((f"two-attribute prompts, {words}",
                                   [figures["pairs"][group][k]["attributes"] for k in keys], "s--"))
            real_y, ylabel = part["real"]["adherence"], "attributes read as present (face-attribute classifier)"
            title = f"Text-to-image faces, n = {part['n']}"
        else:
            series = [("class asked for, read back", [part[k]["accuracy"] for k in keys], "o-")]
            real_y, ylabel = part["real"]["accuracy"], "classifier reads the class asked for"
            title = f"Class-conditional Fashion-MNIST, n = {part['n']}"
        for i, (label, ys, style) in enumerate(series):
            ax.plot(fid, ys, style, label=label)
            for x, y, w in zip(fid, ys, part["weights"]) if i == 0 else ():  # the others share these x
                ax.annotate(f"w={w:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.plot([part["real"]["fid"]], [real_y], "*", markersize=12, color="k", label="real images (real vs real FID)")
        ax.set(xlabel="FID on the classifier's features (lower: closer to real)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Classifier-free guidance: prompt adherence against sample quality", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- the command -----------------------------------------------------------------------------------

def main(argv=None) -> dict:
    from core.registry import shipped_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="captions (and Fashion images) for FID (default 500; quick 16)")
    parser.add_argument("--pair-n", type=int, default=None, help="images per attribute pair (default 64; quick 4)")
    parser.add_argument("--ceiling-faces", type=int, default=None,
                        help="test faces searched for real faces with each pair (default 5000; quick 1000)")
    parser.add_argument("--retrieval-n", type=int, default=1000, help="test faces for CLIP retrieval")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of every image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-images", type=int, default=16)
    parser.add_argument("--speed-steps", type=int, default=50)
    parser.add_argument("--speed-repeats", type=int, default=None, help="timed calls of each (default 5; quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default GENLAB_THREADS or all cores)")
    for role, (technique, name, _) in MODELS.items():
        parser.add_argument(f"--{role}", default=str(shipped_path(technique, name)),
                            help=f"the {role} checkpoint (default: the shipped {technique}/{name}.pt)")
    parser.add_argument("--plot", default=None,
                        help=f"where to draw the figure (default {portable(FIGURE)}; --quick: no figure)")
    args = parser.parse_args(argv)
    from core.runtime import set_threads
    from core.text_to_image import STRIP_WEIGHTS

    quick = args.quick
    n = args.n or (16 if quick else 500)
    pair_n = args.pair_n or (4 if quick else 64)
    threads = set_threads(args.threads)
    models, records, missing = load_models({role: getattr(args, role) for role in MODELS})
    records["classifiers"] = classifier_records()
    figures = {"threads": threads, "weights": list(STRIP_WEIGHTS), "steps": args.steps, "checkpoints": records}
    if "captions" in records and "clip" in records:
        # core.text_to_image.conditional_training_set writes the CLIP's SHA-256 into the card's data line
        figures["clip_matches_captions_model"] = records["clip"]["sha256"] in str(records["captions"]["data"])
        if not figures["clip_matches_captions_model"]:
            print("warning: the caption model's card names another CLIP than the one measured", flush=True)
    timings = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        figures[name] = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]} s", flush=True)

    if "captions" in models:
        pipeline = models["captions"]
        timed("pairs", lambda: pair_figures(pipeline, pair_n, STRIP_WEIGHTS, args.steps, args.seed,
                                            args.ceiling_faces or (1000 if quick else 5000)))
        timed("captions", lambda: caption_figures(pipeline, n, STRIP_WEIGHTS, args.steps, args.seed))
    if "classes" in models:
        timed("classes", lambda: class_figures(models["classes"], math.ceil(n / 10), STRIP_WEIGHTS, args.steps,
                                               args.seed))
    if "clip" in models:
        timed("retrieval", lambda: retrieval_figures(models["clip"], args.retrieval_n))
    if "captions" in models and "faces" in models:
        timed("speed", lambda: speed(models["captions"], models["faces"], args.speed_images, args.speed_steps,
                                     args.speed_repeats or (2 if quick else 5), args.seed))
    if missing:
        figures["missing"] = missing
    figures["wall_s"] = timings
    target = args.plot or (None if quick else FIGURE)
    if target is not None:
        drawn = plot(figures, Path(target))
        if drawn is not None:
            figures["plot"] = portable(drawn)
    save_results("text_to_image", figures, quick=quick)
    return figures


if __name__ == "__main__":
    main()
