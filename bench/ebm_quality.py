"""The energy-based model's measured figures (issue #20): its samples, its energies as an outlier
detector, and the speed of its sampler.

    python -m bench.ebm_quality [--quick] [--n 5000] [--steps 60,1000] [--ood N] [--threads N]

The model is the shipped energy network (assets/checkpoints/ebm/fashion.pt, core.ebm.load_model); the
JSON records which checkpoint (its training steps and time) was measured.

- Samples: n chains (default 5,000; --quick 300) start from uniform noise in [-1, 1] and walk by
  Langevin dynamics with the model's own sampler settings (step size, noise and gradient clip of
  model.config, those it was trained with), SAMPLE_BATCH chains at a time, one seeded CPU generator
  per batch. Each chain runs once to the longest length in --steps (default 60 and 1000: the training
  sampler's 60 steps, and a long chain as the book uses to generate; --quick 60 and 200) and its image is
  kept at every length asked for: the shorter sets are the same chains seen earlier. The shortest
  length is saved as "ebm_short", the longest as "ebm_long" (any others as "ebm_<steps>"), beside
  the shipped DCGAN (assets/checkpoints/gan/dcgan_fashion.pt, "dcgan") at the same n.
- Each set, and real vs real (n training images against the same n test images, what a perfect model
  scores), gets FID, KID and improved precision/recall (k = 3) against n random test images on two
  feature networks: the project's Fashion-MNIST classifier's penultimate features and ImageNet
  EfficientNet-Lite0's pooled head features (images enlarged 32 -> 64 px); the JSON says whether the
  EBM-vs-DCGAN ranking by FID is the same on both ("ranking": one that flips with the feature network
  is not a result). The classifier's mean top-class probability (and the share of each class it
  sees) on each set and on the real test images.
- Out-of-distribution detection, with the energy as the outlier score (high = unlike the training
  data): Fashion-MNIST test images (all 10,000; --quick n; --ood to choose), as many uniform-noise
  images and grey synthetic faces (core.ebm.grey_faces), and the longest chain's samples; the mean
  energy of each set and the AUROC (core.metrics.ood) of test vs noise, test vs faces and, for
  information, test vs samples.
- The training chains: the newest replay-buffer samples the checkpoint ships (1,024; core.ebm.load_chains),
  the persistent chains contrastive divergence walked over training, measured the same way at their own
  n beside real vs real and the DCGAN at that n.
- Speed: 16 samples x 60 Langevin steps on one CPU thread, median of several calls (target <= 3 s),
  and the time each sample set took to draw.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bench.common import save_results, time_calls

EBM = "fashion"
DCGAN = "dcgan_fashion"
DEFAULT_STEPS, QUICK_STEPS = "60,1000", "60,200"
SAMPLE_BATCH = 250  # chains walked at once: faster per image than the tab's 16, and a few MB
LITE0_SIZE = 64     # the 32-px images are enlarged to this for EfficientNet-Lite0 (its head map is then 2x2)
SPEED_IMAGES, SPEED_STEPS, SPEED_TARGET_S = 16, 60, 3.0
FEATURE_NETS = ("classifier", "efficientnet_lite0")
NOT_A_RESULT = "a ranking that flips when the feature network changes is not a result"

README_PROSE = ["FID {classifier.ebm_long.fid:.0f} on the classifier's features and {efficientnet_lite0.ebm_long.fid:.0f} "
                "on EfficientNet-Lite0's, against the DCGAN's {classifier.dcgan.fid:.1f} and "
                "{efficientnet_lite0.dcgan.fid:.1f} (real vs real {classifier.real.fid:.2f} and "
                "{efficientnet_lite0.real.fid:.1f}; n = {n:,})",
                "recall {classifier.ebm_long.recall:.2f} against the DCGAN's {classifier.dcgan.recall:.2f}",
                "AUROC {ood.auroc.noise:.3f} against uniform noise and {ood.auroc.faces:.3f} against the grey faces",
                "its own samples score {ood.auroc.samples:.2f}"]

_NETS = (("classifier", "classifier"), ("efficientnet_lite0", "EfficientNet-Lite0"))
_LENGTHS = "{sets.ebm_short.steps} / {sets.ebm_long.steps} Langevin steps"

README_ROWS = [
    *[{"figure": f"EBM samples FID, {label} features ({_LENGTHS} from noise; the DCGAN)",
       "measured": f"{{{net}.ebm_short.fid:.1f}} / {{{net}.ebm_long.fid:.1f}}; DCGAN {{{net}.dcgan.fid:.1f}} "
                   "(n = {n})",
       "reference": f"real vs real {{{net}.real.fid:.2f}}"}
      for net, label in _NETS],
    {"figure": "EBM vs DCGAN ranking by FID on the two feature networks", "measured": "{ranking.verdict}",
     "reference": NOT_A_RESULT},
    *[{"figure": f"EBM samples precision / recall (k = 3), {label} features, "
                 "{sets.ebm_short.steps} steps; {sets.ebm_long.steps} steps",
       "measured": f"{{{net}.ebm_short.precision:.2f}} / {{{net}.ebm_short.recall:.2f}}; "
                   f"{{{net}.ebm_long.precision:.2f}} / {{{net}.ebm_long.recall:.2f}}",
       "reference": f"real vs real {{{net}.real.precision:.2f}} / {{{net}.real.recall:.2f}}; "
                    f"DCGAN {{{net}.dcgan.precision:.2f}} / {{{net}.dcgan.recall:.2f}}"}
      for net, label in _NETS],
    *[{"figure": f"EBM training chains (the shipped replay-buffer samples) FID, {label} features",
       "measured": f"{{training_chains.{net}.chains.fid:.1f}}; DCGAN {{training_chains.{net}.dcgan.fid:.1f}} "
                   "(n = {training_chains.n})",
       "reference": f"real vs real {{training_chains.{net}.real.fid:.2f}}"}
      for net, label in _NETS],
    {"figure": "EBM training chains precision / recall (k = 3), classifier; EfficientNet-Lite0 features",
     "measured": "{training_chains.classifier.chains.precision:.2f} / {training_chains.classifier.chains.recall:.2f}; "
                 "{training_chains.efficientnet_lite0.chains.precision:.2f} / "
                 "{training_chains.efficientnet_lite0.chains.recall:.2f}",
     "reference": "real vs real {training_chains.classifier.real.precision:.2f} / "
                  "{training_chains.classifier.real.recall:.2f}; "
                  "{training_chains.efficientnet_lite0.real.precision:.2f} / "
                  "{training_chains.efficientnet_lite0.real.recall:.2f}"},
    {"figure": f"Classifier's mean top-class probability on EBM samples ({_LENGTHS})",
     "measured": "{confidence.ebm_short.mean_top_probability:.3f} / {confidence.ebm_long.mean_top_probability:.3f}",
     "reference": "real test images {confidence.real_test.mean_top_probability:.3f}; "
                  "DCGAN {confidence.dcgan.mean_top_probability:.3f}"},
    {"figure": "Out-of-distribution AUROC of the EBM's energy: Fashion-MNIST test vs uniform noise "
               "({ood.images.test:,} of each)",
     "measured": "{ood.auroc.noise:.3f}",
     "reference": "chance 0.5; mean energy test {ood.mean_energy.test:.3f}, noise {ood.mean_energy.noise:.3f}"},
    {"figure": "Out-of-distribution AUROC of the EBM's energy: Fashion-MNIST test vs grey synthetic faces "
               "({ood.images.faces:,} of each)",
     "measured": "{ood.auroc.faces:.3f}",
     "reference": "chance 0.5; mean energy test {ood.mean_energy.test:.3f}, faces {ood.mean_energy.faces:.3f}"},
    {"figure": "EBM: {speed.images} samples × {speed.steps} Langevin steps, one CPU thread (median)",
     "measured": "{speed.median_s:.2f} s", "reference": f"≤ {SPEED_TARGET_S:g} s"},
]


# --- what the bench measures (module functions, so tests can put tiny stand-ins in their place) ---

def shipped_ebm():
    from core.ebm import load_model

    return load_model(EBM)


def ebm_card() -> dict:
    """The shipped EBM's training steps and time, so the JSON says which checkpoint it measured
    (the file is rewritten while a training run goes on)."""
    from core.registry import shipped_path

    path = shipped_path("ebm", EBM).with_suffix(".json")
    card = json.loads(path.read_text()) if path.is_file() else {}
    return {"name": EBM, "steps": card.get("steps"), "wall_time_s": card.get("wall_time_s"), "date": card.get("date"),
            "command": card.get("command"), "resumed_with": card.get("resumed_with")}


def shipped_dcgan():
    from core import gan
    from core.checkpoints import load_shipped
    from core.registry import shipped_path

    if not shipped_path("gan", DCGAN).is_file():
        return None
    return gan.load_generator(load_shipped("gan", DCGAN))


def real_sets(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random Fashion-MNIST test and n training images, [n, 1, 32, 32] in [0, 1] (zero-padded): the
    same images core.metrics.quality.fashion_quality compares with (seed 0)."""
    from core.data.fashion_mnist import to_float
    from core.metrics.quality import fashion_real_images

    return to_float(fashion_real_images("test", n)), to_float(fashion_real_images("train", n))


def ood_test_images(count: int | None) -> torch.Tensor:
    """The first `count` Fashion-MNIST test images (all with None), [N, 1, 32, 32] in [-1, 1]."""
    from core.ebm import load_images

    return load_images("test", limit=count)


def faces(count: int) -> torch.Tensor:
    from core.ebm import grey_faces

    return grey_faces(count)


def draw_chains(model, n: int, steps: list[int], seed: int) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """n Langevin chains from uniform noise with the model's sampler, SAMPLE_BATCH at a time (one seeded
    CPU generator per batch), run once to max(steps); returns the images [n, 1, S, S] in [-1, 1] at each
    length in `steps` and the seconds it took to reach it (the same chains: a longer one continues a
    shorter one, exactly as sample(..., steps=k) would end)."""
    from core.ebm import sample
    from core.runtime import make_generator

    wanted, longest = set(steps), max(steps)
    images, seconds = {k: [] for k in steps}, dict.fromkeys(steps, 0.0)
    for i, start in enumerate(range(0, n, SAMPLE_BATCH)):
        begin = time.perf_counter()
        for k, (x, _) in enumerate(sample(model, min(SAMPLE_BATCH, n - start), make_generator(seed + i),
                                          steps=longest), start=1):
            if k in wanted:  # detached: langevin marks the tensor it yielded as requiring grad for its next step
                images[k].append(x.detach())
                seconds[k] += time.perf_counter() - begin
    return {k: torch.cat(v) for k, v in images.items()}, seconds


def draw_dcgan(G, n: int, seed: int) -> torch.Tensor:
    from bench.gan_quality import generate_many

    return generate_many(G, n, seed=seed)  # [n, 1, 32, 32] in [0, 1]


def classifier_features(images: torch.Tensor) -> torch.Tensor:
    from core.metrics.classifiers import fashion_features

    return fashion_features(images, value_range=(0, 1))


def lite0_features(images: torch.Tensor) -> torch.Tensor:
    from core.metrics.quality import lite0_features as features

    return features(images, value_range=(0, 1), size=LITE0_SIZE)


def confidence(images: torch.Tensor) -> dict:
    """The classifier's mean top-class probability on [0, 1] images, and the share of each class it picks."""
    from core.metrics.classifiers import fashion_probabilities

    top = fashion_probabilities(images, value_range=(0, 1)).max(-1)
    shares = torch.bincount(top.indices, minlength=10).double() / len(images)
    return {"mean_top_probability": round(top.values.mean().item(), 4),
            "class_shares": [round(s, 4) for s in shares.tolist()]}


def set_key(steps: int, all_steps: list[int]) -> str:
    """The JSON key of the samples after `steps` Langevin steps (README rows name the shortest and longest)."""
    return "ebm_long" if steps == max(all_steps) else "ebm_short" if steps == min(all_steps) else f"ebm_{steps}"


def ranking(section: dict, ebm_keys: list[str]) -> dict:
    """Which of each EBM set and the DCGAN has the lower FID on each feature network (`section`: the
    figures, with each network's scores and "sets"), and whether the two networks agree."""
    order = {net: sorted([*ebm_keys, "dcgan"], key=lambda key: section[net][key]["fid"]) for net in FEATURE_NETS}
    pairs, words = {}, []
    for key in ebm_keys:
        better = {net: "ebm" if section[net][key]["fid"] < section[net]["dcgan"]["fid"] else "dcgan"
                  for net in FEATURE_NETS}
        agrees = len(set(better.values())) == 1
        pairs[key] = {**better, "agrees": agrees}
        steps = section["sets"][key]["steps"]
        winner = "EBM" if better["classifier"] == "ebm" else "DCGAN"
        words.append(f"at {steps} steps " + (f"the {winner} has the lower FID on both" if agrees
                                             else "the order flips with the feature network: not a result"))
    return {"order_by_fid": order, "orders_agree": order["classifier"] == order["efficientnet_lite0"],
            "ebm_vs_dcgan": pairs, "ebm_vs_dcgan_agrees": all(p["agrees"] for p in pairs.values()),
            "verdict": "; ".join(words), "note": NOT_A_RESULT}


def speed(model, repeats: int) -> dict:
    """What the tab's sampler costs: SPEED_IMAGES images, SPEED_STEPS Langevin steps, one CPU thread."""
    from core.ebm import last, sample
    from core.runtime import make_generator, set_threads

    threads = torch.get_num_threads()
    set_threads(1)
    try:
        seeds = iter(range(10**6))
        timing = time_calls(lambda: last(sample(model, SPEED_IMAGES, make_generator(next(seeds)), steps=SPEED_STEPS)),
                            repeats=repeats, warmup=1)
    finally:
        set_threads(threads)
    return {"images": SPEED_IMAGES, "steps": SPEED_STEPS, "threads": 1, "median_s": round(timing["median_s"], 4),
            "max_s": round(timing["max_s"], 4), "runs": timing["runs"], "target_s": SPEED_TARGET_S,
            "meets_target": timing["median_s"] <= SPEED_TARGET_S}


def out_of_distribution(model, count: int | None, samples: torch.Tensor, steps: int, seed: int) -> dict:
    """Mean energy of test images, uniform noise, grey faces and the model's samples; AUROC of each
    against the test images, the energy as the outlier score."""
    from core.ebm import energies, uniform_noise
    from core.metrics.ood import auroc
    from core.runtime import make_generator

    test = ood_test_images(count)
    count = len(test)
    noise = uniform_noise(len(test), test.shape[-1], make_generator(seed))
    sets = {"test": test, "noise": noise, "faces": faces(count), "samples": samples}
    energy = {key: energies(model, images) for key, images in sets.items()}
    return {"score": "the energy E(x): high = unlike the training data",
            "sets": {"test": "Fashion-MNIST test images, zero-padded to 32x32, in [-1, 1]",
                     "noise": f"uniform noise in [-1, 1] (seed {seed})",
                     "faces": "synthetic faces (core.ebm.grey_faces, test split), grey, 32 px, in [-1, 1]",
                     "samples": f"the model's own samples after {steps} Langevin steps (ebm_long)"},
            "images": {key: len(images) for key, images in sets.items()},
            "mean_energy": {key: round(e.mean().item(), 4) for key, e in energy.items()},
            "std_energy": {key: round(e.std().item(), 4) for key, e in energy.items()},
            "auroc": {key: round(auroc(energy["test"], energy[key]), 4) for key in ("noise", "faces", "samples")}}


def shipped_chains() -> torch.Tensor:
    """The newest replay-buffer samples the checkpoint ships (core.ebm.load_chains), in [-1, 1]."""
    from core.ebm import load_chains

    return load_chains(EBM)


def training_chains(chains: torch.Tensor, G) -> dict:
    """The shipped training chains as samples: FID/KID, precision/recall and the classifier's confidence
    and class shares on both feature networks, at their own n, beside real vs real and the DCGAN at that n."""
    from core.metrics.quality import compare_sets

    n = len(chains)
    sets = {"chains": (chains + 1) / 2}
    if G is not None:
        sets["dcgan"] = draw_dcgan(G, n, seed=3)
    real_test, real_train = real_sets(n)
    result = {"n": n, "what": "the newest replay-buffer samples of the training run, shipped in the checkpoint "
                              "(persistent Langevin chains, walked for thousands of steps over training)"}
    for net, fn in zip(FEATURE_NETS, (classifier_features, lite0_features)):
        result[net] = compare_sets(fn, sets, real_test, real_train)
    result["confidence"] = {key: confidence(images) for key, images in [*sets.items(), ("real_test", real_test)]}
    return result


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--steps takes chain lengths separated by commas, such as 60,1000, not {text!r}") from None
    if not steps or steps[0] < 1:
        raise SystemExit(f"--steps needs at least one chain length of 1 or more, not {text!r}")
    return steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="samples per set for FID/KID (default 5000; quick 300)")
    parser.add_argument("--steps", default=None,
                        help=f"Langevin chain lengths, comma-separated (default {DEFAULT_STEPS}; quick {QUICK_STEPS})")
    parser.add_argument("--ood", type=int, default=None,
                        help="test images (and as many noise images and faces) for the AUROCs (default all; quick n)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default GENLAB_THREADS or all cores)")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 5000)
    steps = parse_steps(args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS))
    ood_count = args.ood or (n if args.quick else None)
    from core.ebm import energies
    from core.metrics.quality import compare_sets
    from core.runtime import set_threads

    threads = set_threads(args.threads)
    timings = {}
    model = shipped_ebm()
    config = model.config
    figures = {"n": n, "threads": threads, "checkpoint": ebm_card(),
               "sampler": {"start": "uniform noise in [-1, 1]", "steps": steps, "step_size": config.step_size,
                           "noise": config.noise, "grad_clip": config.grad_clip, "batch": SAMPLE_BATCH,
                           "chains": "one run per chain to the longest length; the shorter sets are the same "
                                     "chains seen earlier"},
               "missing": []}

    # Samples: the EBM's chains at each length, the DCGAN, real vs real; everything as [0, 1] images.
    start = time.perf_counter()
    walked, seconds = draw_chains(model, n, steps, seed=1000)
    timings["ebm_sampling_s"] = time.perf_counter() - start
    keys = {k: set_key(k, steps) for k in steps}
    sets = {keys[k]: (walked[k] + 1) / 2 for k in steps}
    info = {keys[k]: {"what": f"EBM, {k} Langevin steps from uniform noise", "steps": k,
                      "draw_s": float(f"{seconds[k]:.3g}"), "draw_ms_per_image": round(1000 * seconds[k] / n, 3),
                      "mean_energy": round(energies(model, walked[k]).mean().item(), 4)}
            for k in steps}
    G = shipped_dcgan()
    if G is None:
        figures["missing"].append("dcgan")
    else:
        start = time.perf_counter()
        sets["dcgan"] = draw_dcgan(G, n, seed=1)
        info["dcgan"] = {"what": f"the shipped DCGAN (assets/checkpoints/gan/{DCGAN}.pt)",
                         "draw_s": float(f"{time.perf_counter() - start:.3g}")}
    info["real"] = {"what": "n random Fashion-MNIST training images against the same n test images "
                            "(what a perfect model scores)"}
    figures["sets"] = info
    real_test, real_train = real_sets(n)

    start = time.perf_counter()
    for net, fn in zip(FEATURE_NETS, (classifier_features, lite0_features)):
        figures[net] = compare_sets(fn, sets, real_test, real_train)
    figures["feature_networks"] = {"classifier": "the project's Fashion-MNIST classifier, 128-d penultimate features",
                                   "efficientnet_lite0": f"ImageNet EfficientNet-Lite0, 1280-d head features "
                                                         f"averaged over positions, images enlarged to {LITE0_SIZE} px",
                                   "precision_recall": "improved precision and recall (Kynkäänniemi et al., 2019), "
                                                       "k = 3, against the real test features"}
    timings["features_s"] = time.perf_counter() - start
    figures["confidence"] = {key: confidence(images) for key, images in [*sets.items(), ("real_test", real_test)]}
    if G is not None:
        figures["ranking"] = ranking(figures, [keys[k] for k in steps])

    chains = shipped_chains()
    if len(chains):  # the persistent chains training kept walking: their own n, beside real vs real at that n
        start = time.perf_counter()
        figures["training_chains"] = training_chains(chains, G)
        timings["training_chains_s"] = time.perf_counter() - start
    else:
        figures["missing"].append("training_chains")

    start = time.perf_counter()
    figures["ood"] = out_of_distribution(model, ood_count, walked[steps[-1]], steps[-1], seed=2000)
    timings["ood_s"] = time.perf_counter() - start
    start = time.perf_counter()
    figures["speed"] = speed(model, repeats=5 if args.quick else 20)
    timings["speed_s"] = time.perf_counter() - start
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("ebm_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
