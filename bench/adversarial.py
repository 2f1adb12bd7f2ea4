"""Adversarial examples' measured figures (issue #25): how often FGSM and PGD fool the networks at each
budget ε, what adversarial training buys, and how fast an attack on a photo is.

    python -m bench.adversarial [--quick] [--n 1000] [--threads N]

- Fashion-MNIST: the first n test images (default 1,000; --quick 200) attacked, untargeted with their
  true labels, by FGSM and by PGD (PGD_STEPS steps of α = 2.5 ε / steps from the image itself, as
  core.adversarial does by default) at ε = 1, 2, 4 and 8/255, on the shipped classifier and on its
  adversarially trained copy (core.adversarial.load_classifier("fashion_mnist_robust")) once that is
  trained; "missing" says when it is not. The success rate is the fraction of images the attacked network
  gets wrong (1 − the accuracy under attack, so images it got wrong already count), beside its clean
  accuracy on the same images and the test accuracy its card records.
- Photos: the project's example photos (assets/examples/dream), centre-cropped and resized to 224 px as
  the tab does, attacked the same way on the packaged ImageNet EfficientNet-Lite0. They have no labels:
  the success rate is the fraction whose top class the attack changed; the JSON lists the classes before
  and after.
- Speed: one PGD attack of PGD_STEPS steps on a 224-px photo with Lite0 on one CPU thread, the median of
  several (target <= 3 s).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import save_results, time_calls

EPSILONS = (1, 2, 4, 8)  # in grey levels: ε = k/255
METHODS = ("fgsm", "pgd")
PGD_STEPS = 10
PHOTO_SIZE = SPEED_SIZE = 224
SPEED_TARGET_S = 3.0
PLAIN, ROBUST, LITE0 = "fashion_mnist", "fashion_mnist_robust", "efficientnet_lite0"
PHOTO_TARGET = 1  # ImageNet's "goldfish": far from every example photo, so reaching it says more than "changed"

README_PROSE = ["PGD at ε = 8/255 fools the plain classifier on {fashion_mnist.success.pgd.8:.1%} of {n:,} test images "
                "and the adversarially trained one on {fashion_mnist_robust.success.pgd.8:.1%}",
                "its clean accuracy is {fashion_mnist_robust.clean_accuracy:.1%} against "
                "{fashion_mnist.clean_accuracy:.1%}",
                "targeted PGD turns {photos.success.pgd_targeted.1:.0%} of the example photos into a "
                "{photos.target} at ε = 1/255"]


def _rates(key: str, method: str) -> str:
    return " / ".join(f"{{{key}.success.{method}.{k}:.0%}}" for k in EPSILONS)


_EPS = "ε = " + ", ".join(map(str, EPSILONS)) + "/255"
README_ROWS = [
    *[{"figure": f"Attack success rate, {label}, Fashion-MNIST classifier ({_EPS}; n = {{n}} test images)",
       "measured": _rates(PLAIN, method), "reference": f"clean error {{{PLAIN}.clean_error:.0%}}"}
      for method, label in (("fgsm", "FGSM"), ("pgd", f"PGD {PGD_STEPS} steps"))],
    *[{"figure": f"Attack success rate, {label}, adversarially trained Fashion-MNIST classifier ({_EPS}; "
                 "n = {n})",
       "measured": _rates(ROBUST, method), "reference": f"plain classifier {_rates(PLAIN, method)}"}
      for method, label in (("fgsm", "FGSM"), ("pgd", f"PGD {PGD_STEPS} steps"))],
    {"figure": "Clean accuracy on the same test images: adversarially trained classifier (n = {n})",
     "measured": f"{{{ROBUST}.clean_accuracy:.1%}}", "reference": f"plain classifier {{{PLAIN}.clean_accuracy:.1%}}"},
    *[{"figure": f"Attack success rate, {label}, EfficientNet-Lite0 on the {{photos.n}} example photos at "
                 f"{PHOTO_SIZE} px ({_EPS}; top class changed)",
       "measured": _rates("photos", method), "reference": "—"}
      for method, label in (("fgsm", "FGSM"), ("pgd", f"PGD {PGD_STEPS} steps"))],
    {"figure": f"Targeted PGD ({PGD_STEPS} steps), EfficientNet-Lite0 on the {{photos.n}} example photos: the share "
               f"it turns into class {PHOTO_TARGET} ({{photos.target}}) with the top probability ({_EPS})",
     "measured": _rates("photos", "pgd_targeted"), "reference": "chance 1/1000"},
    {"figure": f"PGD attack, {PGD_STEPS} steps, {SPEED_SIZE}-px photo, EfficientNet-Lite0, one CPU thread (median)",
     "measured": "{speed.median_s:.2f} s", "reference": f"≤ {SPEED_TARGET_S:g} s"},
]


# --- what the bench measures (module functions, so tests can put tiny stand-ins in their place) ---

def load(name: str):
    """core.adversarial's classifier; the robust one raises ValueError (with the command) until it is trained."""
    from core.adversarial import load_classifier

    return load_classifier(name)


def test_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n Fashion-MNIST test images [n, 1, 32, 32] in [0, 1] and their labels."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float

    images, labels = load_fashion_mnist("test", download=False)
    return to_float(images[:n]), labels[:n]


def example_photos(size: int) -> tuple[list[str], torch.Tensor]:
    """The example photos' names and the photos, centre-cropped and resized to size x size: [N, 3, size, size]."""
    from core.data.images import center_crop_square, pil_to_tensor, prepare_image
    from core.registry import ROOT

    paths = sorted(p for p in (ROOT / "assets" / "examples" / "dream").glob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [pil_to_tensor(center_crop_square(prepare_image(str(p), max_side=2048)[0], size)) for p in paths]
    return [p.stem for p in paths], torch.cat(photos)


def settings(method: str, k: int) -> dict:
    """The attack at ε = k/255: FGSM, or PGD_STEPS steps of PGD with core.adversarial's default step size."""
    return {"method": method, "epsilon": k / 255, **({"steps": PGD_STEPS} if method == "pgd" else {})}


def card_accuracy(name: str) -> float | None:
    from core.registry import read_card

    try:
        return (read_card("classifier", name).get("metrics") or {}).get("test_accuracy")
    except (OSError, ValueError):
        return None


def fashion(classifier, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Clean accuracy and the success rate of each method at each ε on the test images."""
    from core.adversarial import predict, success_rate

    start = time.perf_counter()
    clean = (predict(classifier, classifier.prepare(images).to(classifier.device)).cpu() == labels).float().mean()
    success = {method: {str(k): round(success_rate(classifier, images, labels, **settings(method, k)), 4)
                        for k in EPSILONS} for method in METHODS}
    return {"clean_accuracy": round(clean.item(), 4), "clean_error": round(1 - clean.item(), 4),
            "card_test_accuracy": card_accuracy(classifier.name), "success": success,
            "wall_s": round(time.perf_counter() - start, 1)}


def photos(classifier, names: list[str], images: torch.Tensor) -> dict:
    """The photos' top classes before and after each attack, and the fraction the attack changed."""
    from core.adversarial import probabilities, run_attack

    start = time.perf_counter()
    class_names = classifier.class_names
    clean = probabilities(classifier, classifier.prepare(images))
    before = clean.argmax(-1)
    success, after = {}, {}
    for method in METHODS:
        success[method], after[method] = {}, {}
        for k in EPSILONS:
            predictions = run_attack(classifier, images, **settings(method, k)).predictions
            success[method][str(k)] = round((predictions != before).float().mean().item(), 4)
            after[method][str(k)] = [class_names[i] for i in predictions.tolist()]
    success["pgd_targeted"] = {}
    for k in EPSILONS:
        predictions = run_attack(classifier, images, target=PHOTO_TARGET, **settings("pgd", k)).predictions
        success["pgd_targeted"][str(k)] = round((predictions == PHOTO_TARGET).float().mean().item(), 4)
    return {"n": len(names), "photos": names, "size": int(images.shape[-1]), "target": class_names[PHOTO_TARGET],
            "before": [{"class": class_names[i], "index": i, "p": round(float(clean[j, i]), 4)}
                       for j, i in enumerate(before.tolist())],
            "success": success, "after": after, "wall_s": round(time.perf_counter() - start, 1)}


def speed(classifier, repeats: int) -> dict:
    """A PGD_STEPS-step PGD attack on one SPEED_SIZE-px photo on one CPU thread."""
    from core.adversarial import run_attack
    from core.runtime import set_threads

    _, images = example_photos(SPEED_SIZE)
    photo = images[:1]
    threads = torch.get_num_threads()
    set_threads(1)
    try:
        timing = time_calls(lambda: run_attack(classifier, photo, **settings("pgd", 2)), repeats=repeats, warmup=1)
    finally:
        set_threads(threads)
    return {"steps": PGD_STEPS, "size": SPEED_SIZE, "epsilon": "2/255", "threads": 1,
            "median_s": round(timing["median_s"], 4), "max_s": round(timing["max_s"], 4), "runs": timing["runs"],
            "target_s": SPEED_TARGET_S, "meets_target": timing["median_s"] <= SPEED_TARGET_S}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="Fashion-MNIST test images (default 1000; quick 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default GENLAB_THREADS or all cores)")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else 200 if args.quick else 1000
    if n < 1:
        raise SystemExit(f"--n needs at least 1 test image, not {n}")
    from core.runtime import set_threads

    threads = set_threads(args.threads)
    figures = {"n": n, "threads": threads, "epsilons": [f"{k}/255" for k in EPSILONS], "pgd_steps": PGD_STEPS,
               "attacks": {"fgsm": "one step of size ε from the image",
                           "pgd": f"{PGD_STEPS} steps of α = 2.5 ε / {PGD_STEPS} from the image itself, each "
                                  "projected back into the ε-ball and [0, 1]"},
               "success_rate": {"fashion": "untargeted with the true labels: the fraction the network gets wrong "
                                           "after the attack (1 − accuracy under attack)",
                                "photos": "untargeted: the fraction whose top class the attack changed"},
               "missing": []}
    images, labels = test_images(n)
    for name in (PLAIN, ROBUST):
        try:
            classifier = load(name)
        except ValueError as exc:  # the robust classifier is not trained yet
            figures["missing"].append(name)
            figures[f"{name}_note"] = str(exc)
            continue
        figures[name] = fashion(classifier, images, labels)
    lite0 = load(LITE0)
    figures["photos"] = photos(lite0, *example_photos(PHOTO_SIZE))
    start = time.perf_counter()
    figures["speed"] = speed(lite0, repeats=3 if args.quick else 10)
    figures["speed"]["wall_s"] = round(time.perf_counter() - start, 1)
    save_results("adversarial", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
