"""Sample quality of the shipped GANs on every judge, always next to real vs real at the same n.

    python -m bench.gan_quality [--quick] [--n N] [--face-n N]

- Every generator of GENERATORS that is shipped (and any other shipped GAN), judged by every feature
  network of its domain (core.metrics.quality.JUDGES: for clothes the project's classifier, the second
  Fashion-MNIST network and ImageNet EfficientNet-Lite0; for faces the face-attribute classifier and
  EfficientNet-Lite0): FID, KID, improved precision and recall (k = 3), each beside real vs real at the
  same n. Fashion-MNIST models on 5,000 samples, face models on 1,000 (--quick: 200 and 100).
- Whether the judges rank the generators of one domain alike ("ranking" in the results, and the
  sentence under each README table).
- Conditional GAN class accuracy: the shipped Fashion-MNIST classifier labels samples drawn for each
  requested class (target >= 85%).

Each generator's top-level fid/kid/real_* are its first judge's (the classifier), as before the judges.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import save_results

ACCURACY_TARGET = 0.85
# The GANs measured, in this order (a missing one is listed under "missing"); stylegan_faces is the
# StyleGAN-style face model of core.gan (--model stylegan).
GENERATORS = ("dcgan_fashion", "cgan_fashion", "wgangp_faces", "stylegan_faces")
DOMAIN_TITLES = {"fashion": "Fashion-MNIST", "faces": "synthetic faces"}

README_ROWS = [
    {"figure": "DCGAN (Fashion-MNIST) FID, n samples vs real test images",
     "measured": "{dcgan_fashion.fid:.1f} (n = {n})", "reference": "real vs real {dcgan_fashion.real_fid:.2f}"},
    {"figure": "Conditional GAN (Fashion-MNIST) FID", "measured": "{cgan_fashion.fid:.1f} (n = {n})",
     "reference": "real vs real {cgan_fashion.real_fid:.2f}"},
    {"figure": "Conditional GAN: samples the classifier labels as the requested class",
     "measured": "{cgan_fashion.class_accuracy:.1%}", "reference": "≥ 85 %"},
    {"figure": "WGAN-GP (synthetic faces) FID on the face-attribute features",
     "measured": "{wgangp_faces.fid:.1f} (n = {wgangp_faces.n})", "reference": "real vs real {wgangp_faces.real_fid:.2f}"},
    {"figure": "StyleGAN (synthetic faces) FID on the face-attribute features",
     "measured": "{stylegan_faces.fid:.1f} (n = {stylegan_faces.n})",
     "reference": "WGAN-GP {wgangp_faces.fid:.1f}; real vs real {stylegan_faces.real_fid:.2f}"},
]

# Sentences of the README's GAN section, with the figures from this benchmark's latest full run.
README_PROSE = [
    "at n = {n:,} the CGAN reaches FID {cgan_fashion.fid:.1f} and {cgan_fashion.class_accuracy:.0%} class accuracy, "
    "the DCGAN FID {dcgan_fashion.fid:.0f} (real vs real: {dcgan_fashion.real_fid:.1f})",
    "(FID {wgangp_faces.fid:.0f} on the face features; real vs real {wgangp_faces.real_fid:.1f})",
    "the StyleGAN's FID on the same features is {stylegan_faces.fid:.0f}",
]


def judge_tables(figures: dict, title: str, groups: dict[str, list[str]]) -> str | None:
    """The README's tables of one benchmark: per domain, its generators as rows and every judge's FID,
    KID, precision and recall as columns, then the sentence saying whether the judges rank them alike.
    `groups`: {domain: [keys of `figures` holding a result with "judges"]}. None for results saved
    before the judges existed (nothing to quote yet)."""
    from core.metrics.quality import judge_table

    if "judges" not in figures:
        return None
    parts = []
    for domain, keys in groups.items():
        keys = [key for key in keys if key in figures]
        if not keys:
            continue
        n = figures[keys[0]]["n"]
        parts.append(f"{title}, {DOMAIN_TITLES[domain]}, n = {n:,} samples each (in brackets: real vs real at the "
                     f"same n; P, R: precision and recall, k = 3):")
        parts.append(judge_table({key: figures[key]["judges"] for key in keys}))
        if domain in figures.get("ranking", {}):
            parts.append(f"Judges: {figures['ranking'][domain]['sentence']}.")
    return "\n\n".join(parts) if parts else None


def README_TABLE(figures: dict) -> str | None:  # noqa: N802 (read by bench.report like README_ROWS)
    groups = {}
    for key, value in figures.items():
        if isinstance(value, dict) and "judges" in value and "domain" in value:
            groups.setdefault(value["domain"], []).append(key)
    return judge_tables(figures, "GANs", groups)


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


def shipped_generators(wanted=GENERATORS) -> tuple[list[str], list[str]]:
    """(shipped GAN names to measure: `wanted` first, then any other shipped one; wanted ones not shipped)."""
    from core.registry import list_shipped, shipped_path

    shipped = [name for name in list_shipped("gan") if shipped_path("gan", name).with_suffix(".json").is_file()]
    return ([name for name in wanted if name in shipped] + [name for name in shipped if name not in wanted],
            [name for name in wanted if name not in shipped])


def domain_of(images: torch.Tensor) -> str:
    return "fashion" if images.shape[1] == 1 else "faces"


def judged_result(images: torch.Tensor, domain: str, value_range=(0, 1)) -> dict:
    """judge() on every network of the domain; the first judge's figures also at the top level; and the
    standard Inception FID where its weights can be had ("inception": figures, or {"skipped": why})."""
    from core.metrics.quality import JUDGES, inception_fid, judge

    judged = judge(images, domain, value_range)
    first = judged[JUDGES[domain][0]]
    return {**first, **({"size": images.shape[-1]} if domain == "faces" else {}), "domain": domain, "judges": judged,
            "inception": inception_fid(images, domain, value_range)}


def rankings(figures: dict, groups: dict[str, list[str]]) -> dict:
    """core.metrics.quality.ranking per domain that has two or more generators."""
    from core.metrics.quality import ranking

    return {domain: ranking({key: figures[key]["judges"] for key in keys})
            for domain, keys in groups.items() if len(keys) >= 2}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="samples per Fashion-MNIST GAN (default 5,000; quick 200)")
    parser.add_argument("--face-n", type=int, default=None, help="samples per face GAN (default 1,000; quick 100)")
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 5000)
    face_n = args.face_n or (100 if args.quick else 1000)
    from core import gan
    from core.checkpoints import load_shipped
    from core.metrics.classifiers import fashion_probabilities
    from core.metrics.quality import JUDGE_NAMES, JUDGES

    names, missing = shipped_generators()
    figures = {"n": n, "face_n": face_n,
               "judges": {domain: {net: JUDGE_NAMES[net] for net in nets} for domain, nets in JUDGES.items()},
               "missing": missing}
    groups: dict[str, list[str]] = {}
    for name in names:
        G = gan.load_generator(load_shipped("gan", name))
        count = n if G.cfg.channels == 1 else face_n
        labels = torch.arange(count) % G.cfg.num_classes if G.cfg.num_classes else None
        images = generate_many(G, count, seed=1, labels=labels)
        result = judged_result(images, domain_of(images))
        if labels is not None:
            predicted = fashion_probabilities(images, value_range=(0, 1)).argmax(-1)
            per_class = [(predicted[labels == c] == c).float().mean().item() for c in range(G.cfg.num_classes)]
            result["class_accuracy"] = round((predicted == labels).float().mean().item(), 4)
            result["class_accuracy_per_class"] = [round(a, 3) for a in per_class]
            result["class_accuracy_target"] = ACCURACY_TARGET
        figures[name] = result
        groups.setdefault(result["domain"], []).append(name)
        print(f"{name}: " + ", ".join(f"{net} FID {s['fid']:.2f} (real {s['real_fid']:.2f}) P {s['precision']:.2f} "
                                      f"R {s['recall']:.2f}" for net, s in result["judges"].items()), flush=True)
    figures["ranking"] = rankings(figures, groups)
    save_results("gan_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
