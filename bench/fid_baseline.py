"""The feature networks behind every FID/KID in GenLab, and the real-vs-real floor they give.

    python -m bench.fid_baseline            # Fashion-MNIST n = 10,000, faces n = 5,000
    python -m bench.fid_baseline --quick    # n = 1,000 and 300

Prints and saves, for each Fashion-MNIST judge of core.metrics.quality.JUDGES that is trained here
(the classifier: "fashion"; the second network, a ResNet: "fashion_resnet") and for the face classifier:
- each classifier's accuracy (a feature network that cannot tell classes apart makes a
  meaningless FID);
- FID and KID of real against real at n (Fashion-MNIST train vs test; faces train split vs
  test split): what a perfect generator would score with that many samples;
- the same with the test images damaged (Gaussian noise sigma 0.1, Gaussian blur sigma 1 px),
  to calibrate what a given FID looks like.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import save_results

README_ROWS = [
    {"figure": "Fashion-MNIST classifier (FID/KID feature net): accuracy on n test images",
     "measured": "{fashion.classifier_accuracy:.2%} (n = {fashion.n})", "reference": "≥ 92 % (n = 10000)"},
    {"figure": "Fashion-MNIST FID, real train vs real test images at n (the floor for GAN/diffusion FIDs)",
     "measured": "{fashion.real_fid:.2f} (n = {fashion.n})", "reference": "≈ 0; the bias of FID at this n"},
    {"figure": "Fashion-MNIST KID, real vs real (unbiased: 0 means same distribution; ± std over 100 subsets)",
     "measured": "{fashion.real_kid:.3f} ± {fashion.real_kid_std:.3f}", "reference": "0"},
    {"figure": "Fashion-MNIST FID, test images + Gaussian noise σ = 0.1 vs clean (calibration)",
     "measured": "{fashion.noise_fid:.1f}", "reference": "≫ real-vs-real FID"},
    {"figure": "Fashion-MNIST FID, test images blurred σ = 1 px vs clean (calibration)",
     "measured": "{fashion.blur_fid:.1f}", "reference": "≫ real-vs-real FID"},
    {"figure": "Face attribute classifier (FID/KID feature net for faces): mean accuracy over the 14 "
               "attributes, n test faces", "measured": "{faces.classifier_accuracy:.2%} (smiling {faces.attribute_accuracy.smiling:.2%})",
     "reference": "≥ 95 % (labels are exact)"},
    {"figure": "Synthetic faces FID, train split vs test split at n (the floor for face FIDs)",
     "measured": "{faces.real_fid:.2f} (n = {faces.n})", "reference": "≈ 0; the bias of FID at this n"},
]

FASHION_JUDGES = ("classifier", "resnet", "lite0")  # core.metrics.quality.JUDGES["fashion"]
JUDGE_KEYS = {"classifier": "fashion", "resnet": "fashion_resnet", "lite0": "fashion_lite0"}


def README_TABLE(figures: dict) -> str | None:  # noqa: N802 (read by bench.report like README_ROWS)
    """Every Fashion-MNIST judge side by side (None for results saved before the second judge existed)."""
    keys = [JUDGE_KEYS[net] for net in FASHION_JUDGES if JUDGE_KEYS[net] in figures]
    if "fashion_resnet" not in figures:
        return None
    lines = [f"Fashion-MNIST judges, n = {figures['fashion']['n']:,} (real vs real: train against test images; the "
             f"damaged test images against their clean selves):", "",
             "| judge | test accuracy | FID real vs real | KID real vs real | FID noise σ = 0.1 | FID blur σ = 1 px |",
             "|---|---|---|---|---|---|"]
    for key in keys:
        f = figures[key]
        accuracy = "— (ImageNet)" if f.get("classifier_accuracy") is None else f"{f['classifier_accuracy']:.2%}"
        lines.append(f"| {f['network']} | {accuracy} | {f['real_fid']:.2f} | {f['real_kid']:.3g} ± {f['real_kid_std']:.2g} "
                     f"| {f['noise_fid']:.1f} | {f['blur_fid']:.1f} |")
    return "\n".join(lines)


# The README's "Measuring sample quality" quotes both accuracies (the test accuracy of each shipped
# weights, measured here on all n test images).
README_PROSE = [
    "Fashion-MNIST classifier ({fashion.classifier_accuracy:.1%} test accuracy, n = {fashion.n:,})",
    "(one yes/no head per attribute, {faces.classifier_accuracy:.1%} on {faces.n:,} test faces)",
]


def _named(scores: dict, prefix: str) -> dict:
    return {f"{prefix}fid": scores["fid"], f"{prefix}kid": scores["kid_mean"], f"{prefix}kid_std": scores["kid_std"]}


def fashion_figures(n: int, network: str = "classifier") -> dict:
    """Accuracy, real vs real and the damaged copies on one Fashion-MNIST judge ("classifier", "resnet" or
    "lite0", whose accuracy is None: it names ImageNet classes)."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float
    from core.metrics.classifiers import fashion_probabilities, load_fashion_classifier, load_fashion_resnet
    from core.metrics.quality import compare, fashion_baseline, fashion_real_features, fashion_real_images, features, gaussian_blur

    start = time.perf_counter()
    images, labels = load_fashion_mnist("test")
    accuracy = None
    if network != "lite0":
        model = load_fashion_resnet() if network == "resnet" else load_fashion_classifier()
        # On the first n test images: the whole test set at the default n = 10,000.
        predicted = fashion_probabilities(images[:n], (0, 255), model=model).argmax(-1)
        accuracy = round(float((predicted == labels[:n]).float().mean()), 4)
    figures = {"n": n, "network": network, "classifier_accuracy": accuracy,
               **_named(fashion_baseline(n, network=network), "real_")}
    # Damaged copies of the n reference test images against their clean selves.
    clean = to_float(fashion_real_images("test", n))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    reference = fashion_real_features("test", n, network=network)
    for name, damaged in (("noise_", (clean + 0.1 * noise).clamp(0, 1)), ("blur_", gaussian_blur(clean, 1.0))):
        figures.update(_named(compare(features(network, "fashion", damaged, (0, 1)), reference), name))
    figures["seconds"] = round(time.perf_counter() - start, 1)
    return figures


def face_figures(n: int) -> dict:
    from core.data.faces import face_split
    from core.metrics.classifiers import face_attributes
    from core.metrics.quality import face_baseline

    start = time.perf_counter()
    batch = face_split("test", n)
    probs = face_attributes(batch.images)
    per_attribute = {name: round(float(((p > 0.5) == batch.labels[name]).float().mean()), 4)
                     for name, p in probs.items()}
    figures = {"n": n, "classifier_accuracy": round(sum(per_attribute.values()) / len(per_attribute), 4),
               "attribute_accuracy": per_attribute, **_named(face_baseline(n), "real_")}
    figures["seconds"] = round(time.perf_counter() - start, 1)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="Fashion-MNIST sample count (default 10,000; quick 1,000)")
    parser.add_argument("--face-n", type=int, default=None, help="face sample count (default 5,000; quick 300)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a busy 2-core machine two threads spin-wait on "
                             "each other and this run took 5x longer)")
    args = parser.parse_args(argv)
    from core.registry import shipped_path

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        fashion_n = args.n or (1000 if args.quick else 10000)
        figures = {"fashion": fashion_figures(fashion_n)}
        if shipped_path("classifier", "fashion_mnist_resnet").is_file():
            figures["fashion_resnet"] = fashion_figures(fashion_n, "resnet")
        else:
            print("second Fashion-MNIST judge (fashion_mnist_resnet) not shipped yet: skipping its figures")
        figures["fashion_lite0"] = fashion_figures(fashion_n, "lite0")
        if shipped_path("classifier", "face_attributes").is_file():
            figures["faces"] = face_figures(args.face_n or (300 if args.quick else 5000))
        else:
            print("face attribute classifier not shipped yet: skipping the face figures")
    finally:
        torch.set_num_threads(previous_threads)
    save_results("fid_baseline", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
