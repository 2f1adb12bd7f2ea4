"""Likelihood across model families, on the same data: Fashion-MNIST test resized to 16x16 and
quantised to K = 4 levels (core.pixelcnn.load_levels("test", 16, 4)).

    python -m bench.likelihood [--quick] [--n 5000] [--k 100]
    python -m bench.likelihood --flow-only     # measure the flow, merge it into the saved results

- Bits per dimension, -log2 p(x) / 256: exact for the PixelCNNs (plain and gated); for the
  categorical VAE (assets/checkpoints/vae/fashion16_k4.pt, a softmax over the same K levels per pixel)
  two upper bounds, the ELBO and the importance-weighted bound with k samples (core.vae.bits_per_dim_bounds);
  for the normalizing flow (assets/checkpoints/flow/fashion16_k4.pt, a density on [0, 1]^256) an upper
  bound too, with one uniform dequantisation per test image (core.flow.test_bits_per_dim).
- Completions: the lower half of test images hidden, one completion each at temperature 1; the share
  the shipped Fashion-MNIST classifier labels as the original's class, next to the same share for the
  (quantised) originals themselves.
- FID/KID of PixelCNN samples against quantised real test images, next to real vs real (quantised
  train vs quantised test) at the same n, on two feature networks: the Fashion-MNIST classifier's
  penultimate features and ImageNet EfficientNet-Lite0's pooled head features; the JSON says whether
  the plain/gated ranking is the same on both. Each set also gets improved precision and recall
  (core.metrics.precision_recall, k = 3): fidelity and variety apart.
- The flow: FID/KID and precision/recall of n samples at temperatures τ = 0.7 and 1.0 (the same latents
  z at both, x = f⁻¹(τ z)), quantised to the K levels like the real images before the feature networks
  see them, on both feature networks, and whether they rank the temperatures alike; the time of 64
  samples (target ≤ 1 s); invertibility, max |y − f⁻¹(f(y))| on dequantised test images (target ≤ 1e-4).
  --flow-only measures just this and merges it into bench/results/likelihood.json, keeping the
  PixelCNN figures there (sampling them at n = 5000 takes half an hour).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import time

import torch
import torch.nn.functional as F

import bench.common
from bench.common import save_results, time_calls
from core.metrics.quality import compare_sets

SIZE, LEVELS = 16, 4
PIXELCNNS = {"plain": "plain_fashion16_k4", "gated": "gated_fashion16_k4"}
SAMPLE_BATCH = 500  # images drawn at once: one network call per pixel serves the whole batch
LITE0_SIZE = 64     # the 16-px images are enlarged to this for EfficientNet-Lite0 (its head map is then 2x2)
FLOW = "fashion16_k4"
TEMPERATURES = (0.7, 1.0)
SAMPLE64_TARGET_S = 1.0
ROUND_TRIP_TARGET = 1e-4
FEATURE_NETS = ("classifier", "efficientnet_lite0")
PRECISION_RECALL = ("improved precision and recall (Kynkäänniemi et al., 2019), k = 3 nearest neighbours, of each "
                    "set's features against the real test features, in every samples entry")

README_ROWS = [
    {"figure": "PixelCNN (plain) test bits/dim, Fashion-MNIST 16x16, 4 levels (exact)",
     "measured": "{bits_per_dim.pixelcnn_plain:.3f}", "reference": "uniform guess 2.000"},
    {"figure": "Gated PixelCNN test bits/dim (exact)", "measured": "{bits_per_dim.pixelcnn_gated:.3f}",
     "reference": "plain {bits_per_dim.pixelcnn_plain:.3f}"},
    {"figure": "Categorical VAE test bits/dim, ELBO bound (same data)", "measured": "≤ {bits_per_dim.vae_elbo:.3f}",
     "reference": "PixelCNN exact {bits_per_dim.pixelcnn_gated:.3f} (gated)"},
    {"figure": "Categorical VAE test bits/dim, IWAE bound (k = {bits_per_dim.vae_iwae_k})",
     "measured": "≤ {bits_per_dim.vae_iwae:.3f}", "reference": "ELBO {bits_per_dim.vae_elbo:.3f}"},
    {"figure": "Gated PixelCNN completions of half-hidden test images the classifier gives the original's class",
     "measured": "{completions.gated_share:.1%} (n = {completions.images})",
     "reference": "originals {completions.original_share:.1%}"},
    {"figure": "Plain PixelCNN completions given the original's class",
     "measured": "{completions.plain_share:.1%} (n = {completions.images})",
     "reference": "originals {completions.original_share:.1%}"},
    {"figure": "PixelCNN samples FID, classifier features (plain / gated)",
     "measured": "{samples.classifier.plain.fid:.1f} / {samples.classifier.gated.fid:.1f} (n = {samples.n})",
     "reference": "real vs real {samples.classifier.real.fid:.2f}"},
    {"figure": "PixelCNN samples FID, EfficientNet-Lite0 features (plain / gated)",
     "measured": "{samples.efficientnet_lite0.plain.fid:.1f} / {samples.efficientnet_lite0.gated.fid:.1f} "
                 "(n = {samples.n})",
     "reference": "real vs real {samples.efficientnet_lite0.real.fid:.2f}"},
    {"figure": "Normalizing flow test bits/dim, upper bound (one uniform dequantisation per image; same data)",
     "measured": "≤ {bits_per_dim.flow:.3f}",
     "reference": "PixelCNN exact {bits_per_dim.pixelcnn_gated:.3f} (gated); VAE IWAE ≤ {bits_per_dim.vae_iwae:.3f}"},
    *[{"figure": f"Flow samples FID, {label} features (τ = 0.7 / τ = 1.0)",
       "measured": f"{{flow.samples.{net}.tau_0_7.fid:.1f}} / {{flow.samples.{net}.tau_1_0.fid:.1f}} "
                   "(n = {flow.samples.n})",
       "reference": f"real vs real {{flow.samples.{net}.real.fid:.2f}}"}
      for net, label in (("classifier", "classifier"), ("efficientnet_lite0", "EfficientNet-Lite0"))],
    *[{"figure": f"Flow samples precision / recall (k = 3), {label} features, at τ = 0.7; at τ = 1.0",
       "measured": f"{{flow.samples.{net}.tau_0_7.precision:.2f}} / {{flow.samples.{net}.tau_0_7.recall:.2f}}; "
                   f"{{flow.samples.{net}.tau_1_0.precision:.2f}} / {{flow.samples.{net}.tau_1_0.recall:.2f}}",
       "reference": f"real vs real {{flow.samples.{net}.real.precision:.2f}} / {{flow.samples.{net}.real.recall:.2f}}"}
      for net, label in (("classifier", "classifier"), ("efficientnet_lite0", "EfficientNet-Lite0"))],
    {"figure": "Flow: 64 samples at τ = 1 (median)", "measured": "{flow.sample64.median_s:.3f} s",
     "reference": f"≤ {SAMPLE64_TARGET_S:g} s"},
    {"figure": "Flow invertibility: max |y − f⁻¹(f(y))| over {flow.invertibility.images} dequantised test images",
     "measured": "{flow.invertibility.max_abs_error:.1e}", "reference": f"≤ {ROUND_TRIP_TARGET:g}"},
]

README_PROSE = ["the gated model reaches {bits_per_dim.pixelcnn_gated:.4f} bits per dimension and the plain one "
                "{bits_per_dim.pixelcnn_plain:.4f}, both exact, while the VAE's bounds are "
                "{bits_per_dim.vae_elbo:.3f} (ELBO) and {bits_per_dim.vae_iwae:.3f} (IWAE, k = 100)"]

# --- what the bench measures (module functions, so tests can put tiny stand-ins in their place) ---

def load_test(limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantised test images (long [N, 1, 16, 16]) and their class labels [N]."""
    from core.data.fashion_mnist import load_fashion_mnist
    from core.pixelcnn import load_levels

    _, labels = load_fashion_mnist("test")
    return load_levels("test", SIZE, LEVELS, limit=limit), labels[:limit]


def load_train(limit: int | None = None) -> torch.Tensor:
    from core.pixelcnn import load_levels

    return load_levels("train", SIZE, LEVELS, limit=limit)


def shipped_pixelcnns() -> dict:
    from core.pixelcnn import load_model
    from core.registry import shipped_path

    return {key: load_model(name) for key, name in PIXELCNNS.items() if shipped_path("pixelcnn", name).is_file()}


def shipped_vae():
    from core.registry import shipped_path
    from core.vae import LIKELIHOOD_MODEL, load_vae

    return load_vae(LIKELIHOOD_MODEL)[0] if shipped_path("vae", LIKELIHOOD_MODEL).is_file() else None


def shipped_flow():
    from core.flow import load_model
    from core.registry import shipped_path

    return load_model(FLOW) if shipped_path("flow", FLOW).is_file() else None


def flow_card() -> dict:
    """The shipped flow's training steps and time, so the JSON says which checkpoint it measured."""
    from core.registry import shipped_path

    path = shipped_path("flow", FLOW).with_suffix(".json")
    card = json.loads(path.read_text()) if path.is_file() else {}
    return {"name": FLOW, "steps": card.get("steps"), "wall_time_s": card.get("wall_time_s"),
            "card_test_bits_per_dim": card.get("metrics", {}).get("test_bits_per_dim")}


def as_grey(levels: torch.Tensor, size: int) -> torch.Tensor:
    """Levels -> grey [N, 1, size, size] in [0, 1], enlarged bilinearly (what the feature networks see)."""
    from core.pixelcnn import to_unit

    return F.interpolate(to_unit(levels, LEVELS), size=(size, size), mode="bilinear",
                         align_corners=False).clamp(0, 1)


def classifier_labels(levels: torch.Tensor) -> torch.Tensor:
    from core.metrics.classifiers import fashion_probabilities

    return fashion_probabilities(as_grey(levels, 28), value_range=(0, 1)).argmax(-1)


def classifier_features(levels: torch.Tensor) -> torch.Tensor:
    from core.metrics.classifiers import fashion_features

    return fashion_features(as_grey(levels, 28), value_range=(0, 1))


def lite0_features(levels: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """ImageNet EfficientNet-Lite0's pooled head features [N, 1280] of the levels as grey, enlarged
    to LITE0_SIZE (core.metrics.quality.lite0_features)."""
    from core.metrics.quality import lite0_features as features
    from core.pixelcnn import to_unit

    return features(to_unit(levels, LEVELS), value_range=(0, 1), size=LITE0_SIZE, batch=batch)


def last_canvas(steps) -> torch.Tensor:
    canvas = None
    for _, canvas in steps:
        pass
    return canvas


def draw_samples(model, n: int, seed: int) -> torch.Tensor:
    """n PixelCNN samples at temperature 1, SAMPLE_BATCH at a time, one seeded CPU generator per batch."""
    from core.pixelcnn import sample
    from core.runtime import make_generator

    return torch.cat([last_canvas(sample(model, min(SAMPLE_BATCH, n - start), make_generator(seed + i)))
                      for i, start in enumerate(range(0, n, SAMPLE_BATCH))])


def complete_lower_halves(model, levels: torch.Tensor, seed: int) -> torch.Tensor:
    from core.pixelcnn import complete
    from core.runtime import make_generator

    known = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    known[:SIZE // 2] = True  # the upper half is given, the lower half is drawn pixel by pixel
    return last_canvas(complete(model, levels, known, make_generator(seed)))


def real_sets(test_levels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random quantised test images and n training images: the real side of every FID here."""
    rows = lambda total, seed: torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    train_levels = load_train()
    return test_levels[rows(len(test_levels), 1)], train_levels[rows(len(train_levels), 2)]


def tau_key(temperature: float) -> str:
    return f"tau_{temperature:.1f}".replace(".", "_")  # a JSON key the README's {dotted.path} can name


def draw_flow_samples(model, n: int, seed: int, temperature: float) -> torch.Tensor:
    """n flow samples x = f⁻¹(τ z), SAMPLE_BATCH at a time, quantised to the K levels like the real images.
    The same seed gives the same latents z at every temperature."""
    from core.flow import sample
    from core.pixelcnn import quantise
    from core.runtime import make_generator

    images = torch.cat([sample(model, min(SAMPLE_BATCH, n - start), make_generator(seed + i), temperature)
                        for i, start in enumerate(range(0, n, SAMPLE_BATCH))])
    return quantise(images, model.config.levels)


@torch.no_grad()
def round_trip_error(model, levels: torch.Tensor, seed: int = 0, batch: int = SAMPLE_BATCH) -> float:
    """max |y − f⁻¹(f(y))| over the images, each dequantised once with uniform noise."""
    from core.flow import dequantize
    from core.runtime import make_generator

    gen = make_generator(seed)
    device = next(model.parameters()).device
    worst = 0.0
    for chunk in levels.split(batch):
        y = dequantize(chunk, model.config.levels, gen).to(device)
        worst = max(worst, (model.inverse(model(y)[0]) - y).abs().max().item())
    return worst


def sample64_time(model, repeats: int) -> dict:
    """What the tab's Sample button costs the model: 64 images at τ = 1 from a fresh seeded generator."""
    from core.flow import sample
    from core.runtime import make_generator

    seeds = iter(range(10**6))
    timing = time_calls(lambda: sample(model, 64, make_generator(next(seeds))), repeats=repeats, warmup=1)
    return {"median_s": round(timing["median_s"], 4), "max_s": round(timing["max_s"], 4), "runs": timing["runs"],
            "target_s": SAMPLE64_TARGET_S, "meets_target": timing["median_s"] <= SAMPLE64_TARGET_S}


def measure_flow(model, test_levels: torch.Tensor, real_test: torch.Tensor, real_train: torch.Tensor, n: int,
                 quick: bool, timings: dict) -> tuple[float, dict]:
    """The flow's test bits/dim bound and its section of the JSON (samples, speed, invertibility)."""
    from core.flow import test_bits_per_dim

    start = time.perf_counter()
    bound = round(test_bits_per_dim(model, test_levels), 4)
    timings["flow_bits_per_dim_s"] = time.perf_counter() - start
    start = time.perf_counter()
    samples = {tau_key(t): draw_flow_samples(model, n, seed=300, temperature=t) for t in TEMPERATURES}
    timings["flow_sampling_s"] = time.perf_counter() - start
    start = time.perf_counter()
    section = {"n": n, "temperatures": list(TEMPERATURES),
               "latents": "the same n latents z at each temperature, x = f⁻¹(τ z)",
               "quantised": f"samples in [0, 1] quantised to {model.config.levels} levels "
                            "(core.pixelcnn.quantise), as the real images are",
               "real": "quantised train vs quantised test images, the same n (what a perfect model scores)"}
    for net, fn in zip(FEATURE_NETS, (classifier_features, lite0_features)):
        section[net] = compare_sets(fn, samples, real_test, real_train)
    order = {net: sorted(samples, key=lambda key: section[net][key]["fid"]) for net in FEATURE_NETS}
    section["better_tau_by_fid"] = {net: keys[0] for net, keys in order.items()}
    section["tau_ranking_agrees"] = order["classifier"] == order["efficientnet_lite0"]
    timings["flow_features_s"] = time.perf_counter() - start
    images = test_levels[:200] if quick else test_levels
    error = float(f"{round_trip_error(model, images):.3g}")
    flow = {"checkpoint": flow_card(), "samples": section, "sample64": sample64_time(model, 3 if quick else 20),
            "invertibility": {"images": len(images), "max_abs_error": error, "target": ROUND_TRIP_TARGET,
                              "meets_target": error <= ROUND_TRIP_TARGET,
                              "dequantisation": "one uniform draw per pixel, seed 0"}}
    return bound, flow


BOUND_NOTE = "upper bound: one uniform dequantisation per test image (seed 0), as core.flow.test_bits_per_dim"


def merge_flow_only(args, n: int) -> dict:
    """Measure only the flow and put its figures into the saved results, keeping everything else."""
    results = bench.common.RESULTS_DIR
    base = results / "likelihood.quick.json" if args.quick and (results / "likelihood.quick.json").is_file() \
        else results / "likelihood.json"
    if not base.is_file():
        raise SystemExit(f"--flow-only merges into {base}, which does not exist: run python -m bench.likelihood first")
    record = json.loads(base.read_text())
    figures = record["figures"]
    model = shipped_flow()
    if model is None:
        raise SystemExit(f"No flow to measure: assets/checkpoints/flow/{FLOW}.pt is missing")
    timings = {}
    test_levels, _ = load_test()
    real_test, real_train = real_sets(test_levels, n)
    bound, figures["flow"] = measure_flow(model, test_levels, real_test, real_train, n, args.quick, timings)
    figures["bits_per_dim"].update(flow=bound, flow_bound=BOUND_NOTE)
    figures["missing"] = [key for key in figures.get("missing", []) if key != "flow"]
    pixelcnn_entries = figures.get("samples", {}).get("classifier", {}).values()
    figures["precision_recall"] = PRECISION_RECALL + (
        "" if all("precision" in entry for entry in pixelcnn_entries)
        else " (the PixelCNN entries, measured before precision/recall existed, get them on the next full run)")
    figures["merged"] = {"flow_measured": _dt.datetime.now().isoformat(timespec="seconds"),
                         "rest_measured": record.get("date"), "rest_from": base.name}
    figures.setdefault("wall_s", {}).update({key: round(value, 1) for key, value in timings.items()})
    save_results("likelihood", figures, quick=args.quick)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="samples per PixelCNN and per flow temperature for FID/KID (default 5000)")
    parser.add_argument("--k", type=int, default=None, help="IWAE importance samples (default 100)")
    parser.add_argument("--vae-images", type=int, default=None, help="test images for the VAE bounds (default all)")
    parser.add_argument("--completions", type=int, default=None, help="half-hidden test images (default 200)")
    parser.add_argument("--flow-only", action="store_true",
                        help="measure only the flow and merge it into the saved bench/results/likelihood.json")
    args = parser.parse_args(argv)
    n = args.n or (100 if args.quick else 5000)
    if args.flow_only:
        return merge_flow_only(args, n)
    k = args.k or (10 if args.quick else 100)
    n_complete = args.completions or (20 if args.quick else 200)
    vae_images = args.vae_images or (500 if args.quick else None)
    timings = {}

    start = time.perf_counter()
    test_levels, test_labels = load_test()
    models = shipped_pixelcnns()
    figures = {"data": f"Fashion-MNIST test ({len(test_levels)} images) resized to {SIZE}x{SIZE}, {LEVELS} levels",
               "bits_per_dim": {}, "missing": [key for key in PIXELCNNS if key not in models]}
    bpd = figures["bits_per_dim"]
    from core.pixelcnn import test_bits_per_dim

    for key, model in models.items():
        bpd[f"pixelcnn_{key}"] = round(test_bits_per_dim(model, test_levels), 4)  # exact: -log2 p(x) / 256
    timings["pixelcnn_bits_per_dim_s"] = time.perf_counter() - start

    # Completions: classes kept when the lower half is drawn again.
    start = time.perf_counter()
    picks = torch.randperm(len(test_levels), generator=torch.Generator().manual_seed(0))[:n_complete]
    originals, labels = test_levels[picks], test_labels[picks]
    completions = {"images": len(picks), "temperature": 1.0, "hidden": f"lower half (rows {SIZE // 2}-{SIZE - 1})",
                   "classifier_input": "levels as grey, enlarged 16->28 bilinearly",
                   "original_share": round((classifier_labels(originals) == labels).float().mean().item(), 4)}
    for key, model in models.items():
        completed = complete_lower_halves(model, originals, seed=1)
        completions[f"{key}_share"] = round((classifier_labels(completed) == labels).float().mean().item(), 4)
        completions[f"{key}_kept_upper_half"] = bool(torch.equal(completed[:, :, :SIZE // 2], originals[:, :, :SIZE // 2]))
    figures["completions"] = completions
    timings["completions_s"] = time.perf_counter() - start

    # Samples: FID/KID on two feature networks, each next to real vs real at the same n.
    start = time.perf_counter()
    if models:
        samples = {key: draw_samples(model, n, seed=100 * (j + 1)) for j, (key, model) in enumerate(models.items())}
        timings["sampling_s"] = time.perf_counter() - start
        start = time.perf_counter()
        real_test, real_train = real_sets(test_levels, n)
        section = {"n": n, "temperature": 1.0,
                   "real": "quantised train vs quantised test images, the same n (what a perfect model scores)"}
        for net, fn in zip(FEATURE_NETS, (classifier_features, lite0_features)):
            section[net] = compare_sets(fn, samples, real_test, real_train)
        if len(models) == 2:
            order = {net: sorted(models, key=lambda key: section[net][key]["fid"]) for net in FEATURE_NETS}
            section["better_by_fid"] = {net: keys[0] for net, keys in order.items()}
            section["ranking_agrees"] = order["classifier"] == order["efficientnet_lite0"]
        figures["samples"] = section
        timings["features_s"] = time.perf_counter() - start
    figures["precision_recall"] = PRECISION_RECALL

    # The normalizing flow: its bound, samples at two temperatures, speed and invertibility.
    flow = shipped_flow()
    if flow is None:
        figures["missing"].append("flow")
    else:
        real_test, real_train = real_sets(test_levels, n)
        bpd["flow"], figures["flow"] = measure_flow(flow, test_levels, real_test, real_train, n, args.quick, timings)
        bpd["flow_bound"] = BOUND_NOTE

    # The categorical VAE: two upper bounds on the same -log2 p(x) / 256.
    start = time.perf_counter()
    vae = shipped_vae()
    if vae is None:
        figures["missing"].append("vae")
    else:
        from core.vae import bits_per_dim_bounds

        images = test_levels[:vae_images]
        elbo, iwae = bits_per_dim_bounds(vae, images, k=k)
        bpd.update(vae_elbo=round(elbo, 4), vae_iwae=round(iwae, 4), vae_iwae_k=k, vae_images=len(images),
                   vae_bound_gap=round(elbo - iwae, 4))
        bpd["vae_iwae_above_elbo_in_nats"] = iwae <= elbo  # a higher log p bound is a lower bits/dim
    timings["vae_bounds_s"] = time.perf_counter() - start
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("likelihood", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
