"""Sample quality of the shipped GANs, always next to the real-vs-real baseline at the same n.

    python -m bench.gan_quality [--quick]

- FID and KID on the project's own feature networks (core.metrics) of each Fashion-MNIST model,
  on 10,000 samples (--quick: 500), and of the face model against the synthetic test faces.
- Conditional GAN class accuracy: the shipped Fashion-MNIST classifier labels samples drawn for each
  requested class (target >= 85%).
"""
from __future__ import annotations

import argparse

import torch

from bench.common import save_results

ACCURACY_TARGET = 0.85

README_ROWS = [
    {"figure": "DCGAN (Fashion-MNIST) FID, n samples vs real test images",
     "measured": "{dcgan_fashion.fid:.1f} (n = {n})", "reference": "real vs real {dcgan_fashion.real_fid:.2f}"},
    {"figure": "Conditional GAN (Fashion-MNIST) FID", "measured": "{cgan_fashion.fid:.1f} (n = {n})",
     "reference": "real vs real {cgan_fashion.real_fid:.2f}"},
    {"figure": "Conditional GAN: samples the classifier labels as the requested class",
     "measured": "{cgan_fashion.class_accuracy:.1%}", "reference": "≥ 85 %"},
    {"figure": "WGAN-GP (synthetic faces) FID on the face-attribute features",
     "measured": "{wgangp_faces.fid:.1f} (n = {n})", "reference": "real vs real {wgangp_faces.real_fid:.2f}"},
]

# Sentences of the README's GAN section, with the figures from this benchmark's latest full run.
README_PROSE = [
    "at n = {n:,} the CGAN reaches FID {cgan_fashion.fid:.1f} and {cgan_fashion.class_accuracy:.0%} class accuracy, "
    "the DCGAN FID {dcgan_fashion.fid:.0f} (real vs real: {dcgan_fashion.real_fid:.1f})",
    "(FID {wgangp_faces.fid:.0f} on the face features; real vs real {wgangp_faces.real_fid:.1f})",
]


def generate_many(G, n: int, seed: int, labels=None, batch: int = 500) -> torch.Tensor:
    """n samples in [0, 1], drawn in batches (one seeded generator per batch)."""
    from core import gan
    from core.runtime import make_generator

    out = []
    for i, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        out.append(gan.sample(G, size, make_generator(seed + i),
                              labels=None if labels is None else labels[start:start + size]))
    return torch.cat(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 10000)
    from core import gan
    from core.checkpoints import load_shipped
    from core.metrics.classifiers import fashion_probabilities
    from core.metrics.quality import face_quality, fashion_quality
    from core.registry import list_shipped, shipped_path

    figures = {"n": n}
    for name in list_shipped("gan"):
        if not shipped_path("gan", name).with_suffix(".json").is_file():
            continue
        G = gan.load_generator(load_shipped("gan", name))
        labels = torch.arange(n) % G.cfg.num_classes if G.cfg.num_classes else None
        images = generate_many(G, n, seed=1, labels=labels)
        if G.cfg.channels == 1:
            result = fashion_quality(images, value_range=(0, 1))
        else:
            result = face_quality(images, value_range=(0, 1))
        if labels is not None:
            predicted = fashion_probabilities(images, value_range=(0, 1)).argmax(-1)
            per_class = [(predicted[labels == c] == c).float().mean().item() for c in range(G.cfg.num_classes)]
            result["class_accuracy"] = round((predicted == labels).float().mean().item(), 4)
            result["class_accuracy_per_class"] = [round(a, 3) for a in per_class]
            result["class_accuracy_target"] = ACCURACY_TARGET
        figures[name] = result
    save_results("gan_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
