"""Likelihood across model families, on the same data: Fashion-MNIST test resized to 16x16 and
quantised to K = 4 levels (core.pixelcnn.load_levels("test", 16, 4)).

    python -m bench.likelihood [--quick] [--n 5000] [--k 100]

- Bits per dimension, -log2 p(x) / 256: exact for the PixelCNNs (plain and gated); for the
  categorical VAE (assets/checkpoints/vae/fashion16_k4.pt, a softmax over the same K levels per pixel)
  two upper bounds, the ELBO and the importance-weighted bound with k samples (core.vae.bits_per_dim_bounds).
  The normalizing flow joins when assets/checkpoints/flow ships; until then the JSON says it is missing.
- Completions: the lower half of test images hidden, one completion each at temperature 1; the share
  the shipped Fashion-MNIST classifier labels as the original's class, next to the same share for the
  (quantised) originals themselves.
- FID/KID of PixelCNN samples against quantised real test images, next to real vs real (quantised
  train vs quantised test) at the same n, on two feature networks: the Fashion-MNIST classifier's
  penultimate features and ImageNet EfficientNet-Lite0's pooled head features; the JSON says whether
  the plain/gated ranking is the same on both. (core.metrics has no precision/recall.)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import save_results

SIZE, LEVELS = 16, 4
PIXELCNNS = {"plain": "plain_fashion16_k4", "gated": "gated_fashion16_k4"}
SAMPLE_BATCH = 500  # images drawn at once: one network call per pixel serves the whole batch
LITE0_SIZE = 64     # the 16-px images are enlarged to this for EfficientNet-Lite0 (its head map is then 2x2)

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


def flow_note() -> str:
    from core.registry import CHECKPOINT_DIR

    folder = Path(CHECKPOINT_DIR) / "flow"
    if not folder.is_dir() or not any(folder.glob("*.pt")):
        return "no normalizing flow ships yet (assets/checkpoints/flow is missing): not measured"
    return f"a flow checkpoint is in {folder.name}/ but this bench does not measure it yet"


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
    """ImageNet EfficientNet-Lite0's head activations [N, 1280], averaged over positions (the
    analogue of Inception's pool3 features in the original FID), grey copied to the three colours."""
    from core.backbones import load_backbone

    # Loaded outside no_grad/inference mode: the backbone is cached and shared with code that
    # differentiates through it (core.vae.feature_loss).
    backbone = load_backbone("efficientnet_lite0")
    device = backbone.mean.device
    out = []
    with torch.no_grad():
        for chunk in levels.split(batch):
            x = as_grey(chunk, LITE0_SIZE).expand(-1, 3, -1, -1).to(device)
            out.append(backbone(x, ["head"])["head"].float().mean(dim=(2, 3)).cpu())
    return torch.cat(out)


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


def compare_sets(feature_fn, sets: dict[str, torch.Tensor], real_test: torch.Tensor, real_train: torch.Tensor) -> dict:
    """FID/KID of each set against the real test images, and "real": train vs test at the same n."""
    from core.metrics.quality import compare

    test_feats = feature_fn(real_test)
    result = {key: compare(feature_fn(images), test_feats) for key, images in sets.items()}
    result["real"] = compare(feature_fn(real_train), test_feats)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="PixelCNN samples per model for FID/KID (default 5000)")
    parser.add_argument("--k", type=int, default=None, help="IWAE importance samples (default 100)")
    parser.add_argument("--vae-images", type=int, default=None, help="test images for the VAE bounds (default all)")
    parser.add_argument("--completions", type=int, default=None, help="half-hidden test images (default 200)")
    args = parser.parse_args(argv)
    n = args.n or (100 if args.quick else 5000)
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
        rows = lambda total, seed: torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        real_test = test_levels[rows(len(test_levels), 1)]
        train_levels = load_train()
        real_train = train_levels[rows(len(train_levels), 2)]
        section = {"n": n, "temperature": 1.0,
                   "real": "quantised train vs quantised test images, the same n (what a perfect model scores)"}
        for net, fn in (("classifier", classifier_features), ("efficientnet_lite0", lite0_features)):
            section[net] = compare_sets(fn, samples, real_test, real_train)
        if len(models) == 2:
            order = {net: sorted(models, key=lambda key: section[net][key]["fid"]) for net in ("classifier",
                                                                                               "efficientnet_lite0")}
            section["better_by_fid"] = {net: keys[0] for net, keys in order.items()}
            section["ranking_agrees"] = order["classifier"] == order["efficientnet_lite0"]
        figures["samples"] = section
        timings["features_s"] = time.perf_counter() - start
    figures["precision_recall"] = "not measured: core.metrics has no precision/recall"

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
    bpd["flow"] = flow_note()
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("likelihood", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
