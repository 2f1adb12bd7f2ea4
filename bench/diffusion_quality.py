"""Sample quality of the shipped Fashion-MNIST diffusion model against DDIM step counts.

    python -m bench.diffusion_quality [--quick] [--n N]

- FID and KID (core.metrics, the project's own Fashion-MNIST feature network) at 10, 20 and 50 DDIM
  steps (eta = 0) on 5,000 samples (--quick: 200, a smoke test: FID at n = 200 is mostly bias), next to the real-vs-real baseline at the same n.
- The shipped DCGAN at the same n and seed, when it exists: at 50 steps the diffusion model should
  have the lower FID.
- The Fashion-MNIST classifier's mean top-class probability on samples vs on as many real test
  images (target: within 10% of real): do the samples look like *some* clothing class?
- The synthetic-faces model (when shipped) at 50 steps: FID on the face-attribute features next to the
  face WGAN-GP at the same n (no target; diffusion versus GAN on the same data).
"""
from __future__ import annotations

import argparse

import torch

from bench.common import save_results

MODEL = "fashion32"
FACES_MODEL = "faces32"
STEP_COUNTS = (10, 20, 50)
CONFIDENCE_TOLERANCE = 0.10

README_ROWS = [
    {"figure": f"Diffusion (fashion32) FID at {steps} DDIM steps, n samples vs real test images",
     "measured": f"{{ddim_{steps}.fid:.1f}} (n = {{n}})", "reference": f"real vs real {{ddim_{steps}.real_fid:.2f}}"}
    for steps in STEP_COUNTS
] + [
    {"figure": "Diffusion (fashion32) KID at 50 DDIM steps (unscaled, on the classifier's 128-d features; "
               "± std over subsets)",
     "measured": "{ddim_50.kid_mean:.2f} ± {ddim_50.kid_std:.2f}", "reference": "real vs real {ddim_50.real_kid_mean:.2f}"},
    {"figure": "DCGAN FID at the same n and seed, beside diffusion at 50 steps",
     "measured": "{dcgan_fid_same_n:.1f}", "reference": "diffusion {ddim_50.fid:.1f}"},
    {"figure": "Diffusion (faces32) FID at 50 DDIM steps on the face-attribute features",
     "measured": "{faces.fid:.1f} (n = {faces.n})", "reference": "face WGAN-GP {faces.wgangp_fid:.1f}; real vs real {faces.real_fid:.2f}"},
    {"figure": "Classifier's mean top-class probability on diffusion samples (50 steps)",
     "measured": "{ddim_50.top_class_confidence:.3f}", "reference": "within 10 % of real: {real_top_class_confidence:.3f}"},
]


def sample_many(model, n: int, steps: int, seed: int = 1, batch: int = 250) -> torch.Tensor:
    """n samples in [0, 1], one seeded generator per batch (the same noise for every step count)."""
    from core import diffusion
    from core.runtime import make_generator

    return torch.cat([diffusion.sample(model, min(batch, n - start), make_generator(seed + i), steps=steps)
                      for i, start in enumerate(range(0, n, batch))])


def top_class_confidence(images: torch.Tensor, value_range) -> float:
    from core.metrics.classifiers import fashion_probabilities

    return round(fashion_probabilities(images, value_range=value_range).max(-1).values.mean().item(), 4)


def dcgan_fid(n: int) -> float | None:
    from core.registry import shipped_path

    if not shipped_path("gan", "dcgan_fashion").with_suffix(".json").is_file():
        return None
    from bench.gan_quality import generate_many
    from core import gan
    from core.checkpoints import load_shipped
    from core.metrics.quality import fashion_quality

    images = generate_many(gan.load_generator(load_shipped("gan", "dcgan_fashion")), n, seed=1)
    return fashion_quality(images, value_range=(0, 1))["fid"]


def face_figures(n: int) -> dict | None:
    """The faces model against the face WGAN-GP, both at n samples (None if either is not shipped)."""
    from core.registry import list_shipped

    if FACES_MODEL not in list_shipped("diffusion") or "wgangp_faces" not in list_shipped("gan"):
        return None
    from bench.gan_quality import generate_many
    from core import diffusion, gan
    from core.checkpoints import load_shipped
    from core.metrics.quality import face_quality

    result = face_quality(sample_many(diffusion.load_model(FACES_MODEL), n, 50), value_range=(0, 1))
    gan_images = generate_many(gan.load_generator(load_shipped("gan", "wgangp_faces")), n, seed=1)
    result["wgangp_fid"] = face_quality(gan_images, value_range=(0, 1))["fid"]
    return {"model": FACES_MODEL, **result}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 5000)
    from core import diffusion
    from core.metrics.quality import fashion_quality, fashion_real_images

    model = diffusion.load_model(MODEL)
    figures = {"n": n, "model": MODEL, "sampler": "DDIM eta=0"}
    for steps in STEP_COUNTS:
        images = sample_many(model, n, steps)
        result = fashion_quality(images, value_range=(0, 1))
        result["top_class_confidence"] = top_class_confidence(images, (0, 1))
        figures[f"ddim_{steps}"] = result
        print(f"{steps} steps: FID {result['fid']:.2f} (real vs real {result['real_fid']:.2f}), "
              f"KID {result['kid_mean']:.4f}", flush=True)
    real_confidence = top_class_confidence(fashion_real_images("test", n), (0, 255))
    final = figures[f"ddim_{STEP_COUNTS[-1]}"]
    figures["real_top_class_confidence"] = real_confidence
    figures["confidence_within_10pct_of_real"] = (
        abs(final["top_class_confidence"] - real_confidence) <= CONFIDENCE_TOLERANCE * real_confidence)
    figures["dcgan_fid_same_n"] = dcgan_fid(n)
    if figures["dcgan_fid_same_n"] is not None:
        figures["beats_dcgan_at_50_steps"] = final["fid"] < figures["dcgan_fid_same_n"]
    faces = face_figures(min(n, 1000))  # 3-channel sampling is slower; 1,000 faces show the gap
    if faces is not None:
        figures["faces"] = faces
    save_results("diffusion_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
