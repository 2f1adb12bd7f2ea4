"""Sample quality of the shipped diffusion models against sampler and step count, on every judge.

    python -m bench.diffusion_quality [--quick] [--n N] [--face-n N]

- The Fashion-MNIST model with each sampler of SAMPLERS_MEASURED (DDIM at 10, 20, 50 steps; DPM-Solver++
  (2M) at 10 and 20 when core.diffusion has it) on 5,000 samples (--quick: 200, a smoke test: FID at
  n = 200 is mostly bias), judged by every Fashion-MNIST feature network (core.metrics.quality.JUDGES:
  the project's classifier, the second Fashion-MNIST network, ImageNet EfficientNet-Lite0): FID, KID,
  improved precision and recall (k = 3), each beside real vs real at the same n.
- The shipped DCGAN at the same n and seed, judged the same way, and whether the judges rank the sets
  alike ("ranking"; the sentence under the README table). `beats_dcgan_at_50_steps`: DDIM at 50 steps
  has the lower FID on every judge.
- The Fashion-MNIST classifier's mean top-class probability on samples vs on as many real test
  images (target: within 10% of real): do the samples look like *some* clothing class?
- The synthetic-faces model (when shipped) at 50 DDIM steps beside the face GANs (WGAN-GP, and the
  StyleGAN when shipped) on 1,000 faces (--quick: 100), on both face judges.

Each set's top-level fid/kid/real_* are its first judge's (the classifier), as before the judges.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import save_results

MODEL = "fashion32"
FACES_MODEL = "faces32"
# (sampler kind of core.diffusion.Sampler, steps); a kind core.diffusion does not have is listed as missing.
SAMPLERS_MEASURED = [("DDIM", 10), ("DDIM", 20), ("DDIM", 50), ("DPM++2M", 10), ("DPM++2M", 20)]
STEP_COUNTS = tuple(steps for kind, steps in SAMPLERS_MEASURED if kind == "DDIM")
FACE_GANS = ("wgangp_faces", "stylegan_faces")
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


def sampler_key(kind: str, steps: int) -> str:
    """The results key of a sampler setting: ddim_50, dpmpp2m_20, ..."""
    return f"{kind.lower().replace('+', 'p')}_{steps}"


def README_TABLE(figures: dict) -> str | None:  # noqa: N802 (read by bench.report like README_ROWS)
    from bench.gan_quality import judge_tables

    sets = [key for key in figures.get("sets", []) if key in figures]
    groups = {"fashion": sets, "faces": list(figures.get("faces", {}).get("sets", []))}
    faces = figures.get("faces", {})
    merged = {**figures, **{key: faces[key] for key in groups["faces"] if key in faces}}
    merged["ranking"] = {**({"fashion": figures["ranking"]} if "ranking" in figures else {}),
                         **({"faces": faces["ranking"]} if "ranking" in faces else {})}
    return judge_tables(merged, "Diffusion", groups)


def sample_many(model, n: int, steps: int, seed: int = 1, batch: int = 250, kind: str = "DDIM") -> torch.Tensor:
    """n samples in [0, 1], one seeded generator per batch (the same noise for every sampler and step count)."""
    from core import diffusion
    from core.runtime import make_generator

    return torch.cat([diffusion.sample(model, min(batch, n - start), make_generator(seed + i), steps=steps, kind=kind)
                      for i, start in enumerate(range(0, n, batch))])


def top_class_confidence(images: torch.Tensor, value_range) -> float:
    from core.metrics.classifiers import fashion_probabilities

    return round(fashion_probabilities(images, value_range=value_range).max(-1).values.mean().item(), 4)


def gan_images(name: str, n: int) -> torch.Tensor | None:
    """n samples of a shipped GAN in [0, 1] (seed 1, as bench.gan_quality draws them), or None if not shipped."""
    from core.registry import shipped_path

    if not shipped_path("gan", name).with_suffix(".json").is_file():
        return None
    from bench.gan_quality import generate_many
    from core import gan
    from core.checkpoints import load_shipped

    return generate_many(gan.load_generator(load_shipped("gan", name)), n, seed=1)


def face_figures(n: int) -> dict | None:
    """The faces model at 50 DDIM steps beside the shipped face GANs, all at n samples, on both face
    judges (None if the faces model or the WGAN-GP is not shipped)."""
    from core.registry import list_shipped

    if FACES_MODEL not in list_shipped("diffusion") or "wgangp_faces" not in list_shipped("gan"):
        return None
    from bench.gan_quality import judged_result
    from core import diffusion
    from core.metrics.quality import ranking

    key = f"{FACES_MODEL}_ddim_50"
    sets = {key: judged_result(sample_many(diffusion.load_model(FACES_MODEL), n, 50), "faces")}
    for name in FACE_GANS:
        images = gan_images(name, n)
        if images is not None:
            sets[name] = judged_result(images, "faces")
    # The faces model's first-judge figures at the top level, and the WGAN-GP's FID, as before the judges.
    return {"model": FACES_MODEL, **{k: v for k, v in sets[key].items() if k != "judges"},
            "wgangp_fid": sets["wgangp_faces"]["fid"], "sets": list(sets), **sets,
            "ranking": ranking({name: result["judges"] for name, result in sets.items()})}


def faces_again(face_n: int, quick: bool) -> dict:
    """The latest results with only their faces measured again; "fashion_measured" keeps the date of the
    Fashion-MNIST figures, which are not re-measured."""
    import json

    from bench.common import RESULTS_DIR

    record = json.loads((RESULTS_DIR / ("diffusion_quality.quick.json" if quick else "diffusion_quality.json")).read_text())
    figures = {**record["figures"], "fashion_measured": record["figures"].get("fashion_measured", record["date"])}
    faces = face_figures(face_n)
    if faces is not None:
        figures["faces"] = faces
    save_results("diffusion_quality", figures, quick=quick)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="Fashion-MNIST samples per set (default 5,000; quick 200)")
    parser.add_argument("--face-n", type=int, default=None, help="faces per set (default 1,000; quick 100)")
    parser.add_argument("--faces-only", action="store_true",
                        help="measure the faces again (a face model changed) and keep the latest run's Fashion-MNIST figures")
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 5000)
    face_n = args.face_n or (100 if args.quick else 1000)
    if args.faces_only:
        return faces_again(face_n, args.quick)
    from bench.gan_quality import judged_result
    from core import diffusion
    from core.metrics.quality import JUDGE_NAMES, JUDGES, fashion_real_images, ranking

    model = diffusion.load_model(MODEL)
    figures = {"n": n, "face_n": face_n, "model": MODEL, "sampler": "eta = 0; same start noise for every sampler",
               "judges": {net: JUDGE_NAMES[net] for net in JUDGES["fashion"]}, "missing": [], "sets": []}
    for kind, steps in SAMPLERS_MEASURED:
        key = sampler_key(kind, steps)
        if kind not in diffusion.SAMPLERS:
            figures["missing"].append(f"{key} (core.diffusion has no {kind} sampler)")
            continue
        images = sample_many(model, n, steps, kind=kind)
        result = {"kind": kind, "steps": steps, **judged_result(images, "fashion"),
                  "top_class_confidence": top_class_confidence(images, (0, 1))}
        figures[key] = result
        figures["sets"].append(key)
        print(f"{kind} {steps} steps: " + ", ".join(f"{net} FID {s['fid']:.2f} (real {s['real_fid']:.2f})"
                                                     for net, s in result["judges"].items()), flush=True)
    real_confidence = top_class_confidence(fashion_real_images("test", n), (0, 255))
    final = figures.get(sampler_key("DDIM", 50))
    figures["real_top_class_confidence"] = real_confidence
    if final is not None:
        figures["confidence_within_10pct_of_real"] = (
            abs(final["top_class_confidence"] - real_confidence) <= CONFIDENCE_TOLERANCE * real_confidence)
    dcgan = gan_images("dcgan_fashion", n)
    if dcgan is None:
        figures["missing"].append("dcgan_fashion")
        figures["dcgan_fid_same_n"] = None
    else:
        figures["dcgan_fashion"] = judged_result(dcgan, "fashion")
        figures["sets"].append("dcgan_fashion")
        figures["dcgan_fid_same_n"] = figures["dcgan_fashion"]["fid"]
        if final is not None:
            beats = {net: s["fid"] < figures["dcgan_fashion"]["judges"][net]["fid"] for net, s in final["judges"].items()}
            figures["beats_dcgan_at_50_steps_per_judge"] = beats
            figures["beats_dcgan_at_50_steps"] = all(beats.values())
    if len(figures["sets"]) >= 2:
        figures["ranking"] = ranking({key: figures[key]["judges"] for key in figures["sets"]})
    faces = face_figures(face_n)
    if faces is None:
        figures["missing"].append(FACES_MODEL)
    else:
        figures["faces"] = faces
    save_results("diffusion_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
