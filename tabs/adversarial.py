"""Adversarial examples tab: the gradient DeepDream climbs, pointed at the class instead of a layer,
so that an invisible change makes a classifier wrong.

Pick a photo (EfficientNet-Lite0, 1000 ImageNet classes) or a Fashion-MNIST test image (the project's
classifier), a method (FGSM or PGD), a budget ε in grey levels and, if you like, the class the network
should answer. The original, the perturbation (magnified, its scale stated) and the adversarial image
are shown side by side, with the top-5 probabilities before and after and the true and target classes'
probabilities over the steps (streamed while PGD walks; Stop ends it). A second section runs the same PGD
attack on the plain and the adversarially trained Fashion-MNIST classifier.

Widgets and events only; the attacks live in core.adversarial. Nothing heavy is imported until a
handler runs, so the app starts fast.
"""
from __future__ import annotations

import ast
import functools
import re
import time

import gradio as gr

from core.registry import ROOT, read_card, shipped_path
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (PALETTE, bench_records, caption, fashion_test_split, figure_to_image, image_upload, number,
                         on_gpu, pyplot, queue, user_errors)

TAB = "adversarial"
EXAMPLES_DIR = ROOT / "assets" / "examples" / "dream"
LITE0, PLAIN, ROBUST = "efficientnet_lite0", "fashion_mnist", "fashion_mnist_robust"
NETWORK_LABELS = {LITE0: "EfficientNet-Lite0 (ImageNet photos, 1000 classes)",
                  PLAIN: "Fashion-MNIST classifier",
                  ROBUST: "Fashion-MNIST classifier, adversarially trained"}
PHOTO, TEST_IMAGE = "photo", "fashion"
SOURCES = [("a photo (upload one or pick an example)", PHOTO), ("a Fashion-MNIST test image", TEST_IMAGE)]
METHODS = [("FGSM (one step of size ε)", "fgsm"), ("PGD (small steps, projected back into the ε-ball)", "pgd")]
UNTARGETED = "none: just make it wrong (untargeted)"
PHOTO_SIZE = 224        # Lite0's training size: its top class drifts much below 160 or above 256 px
CLOTHES_SIZE = 28       # an upload attacked by a Fashion-MNIST classifier is drawn as clothes at 28 px
SHOWN_PX = 224          # pictures are shown at about this size (32-px clothes enlarged 7x, every pixel visible)
TEST_IMAGES = 10_000
DEFAULT_EPSILON, MAX_EPSILON = 4, 32           # in grey levels (1/255); an API call may ask up to 255
DEFAULT_STEPS, MAX_STEPS = 10, 200
SIDE_EPSILON, SIDE_STEPS, SIDE_MAX_STEPS = 8, 10, 40
SIDE_BATCH = 100        # test images the side-by-side attack is also measured on
PREVIEW_EVERY_S = 0.3   # stream PGD this often; every step would flood the browser
RUNNING = "Step "       # how the status line of an attack in progress begins
DEFAULT_PHOTO = EXAMPLES_DIR / "grace_hopper.jpg"  # in the photo box from the start: `?tab=adversarial` attacks it
# Blue for the true class, orange for the target (or the most likely other class), grey for the rest: colours
# every common colour-vision deficiency tells apart (tabs.common.PALETTE).
TRUE_COLOUR, TARGET_COLOUR, OTHER_COLOUR = PALETTE[0], PALETTE[1], "#999999"
# Seconds of GPU a call may hold on a ZeroGPU Space (tabs.common.on_gpu). The slowest settings the sliders
# allow: 200 PGD steps on a 224-px photo, about 0.08 s a step on one CPU thread (bench/adversarial.py's
# 10-step figure), 16 s; the side by side: 2 x 100 test images x 41 steps of a small CNN, about 10 s.
# A GPU is assumed to be at least 10x faster (not measured here).
ATTACK_GPU_S, SIDE_GPU_S = 30, 30

INTRO = """**The gradient DeepDream climbs, pointed at the class:** freeze the weights, move the **pixels** to raise the
classifier's loss, and let no pixel change by more than ε grey levels. The network says something else; you see no change."""

# How an attack relates to what students know already (below the views, with the side by side).
BACKGROUND = """**Training** moves the weights to lower the loss L(f(x), y); an **attack** freezes them and moves the pixels
to raise it, within ‖x′ − x‖∞ ≤ ε and [0, 1]. Near x the network is almost linear, and among all changes of at most ε per
pixel the sign of the gradient raises the loss most: thousands of invisible changes add up (FGSM, one step of ε).
PGD takes many small steps α and clips back into the ε-ball after each, so it follows the loss as it bends. A
**targeted** attack steps *down* the loss of a chosen class t instead: "say t". **DeepDream** climbs the same kind
of gradient to raise a layer's activations; a **GAN**'s generator is *trained* to fool a network, while an
adversarial example fools one with no training at all. **Adversarial training** is the defence: train on PGD's
images, so the fragile features the attack uses are no longer worth relying on."""

LESSON = Lesson(
    tab=TAB, main="adversarial-run", result="adversarial-result",
    chapters="not in either book: Goodfellow, Shlens & Szegedy 2015, *Explaining and harnessing adversarial "
             "examples* (FGSM) · Madry et al. 2018, *Towards deep learning models resistant to adversarial attacks* "
             "(PGD, adversarial training) · *Deep Learning with Python* §12.2 (DeepDream: the same pixel gradient)",
    equations=(r"FGSM: $x' = \mathrm{clip}_{[0,1]}\big(x + \varepsilon\,\mathrm{sign}\,\nabla_x L(f(x), y)\big)$ · "
               r"PGD: $x_{k+1} = \Pi_{\lVert x' - x\rVert_\infty \le \varepsilon}\big(x_k + \alpha\,\mathrm{sign}\,"
               r"\nabla_x L(f(x_k), y)\big)$ · robust training: $\min_\theta \mathbb{E}\,\max_{\lVert \delta\rVert_\infty "
               r"\le \varepsilon} L(f_\theta(x + \delta), y)$"),
    try_this=(
        Try("1 grey level", {"source": PHOTO, "network": LITE0, "method": "pgd", "epsilon": 1, "steps": DEFAULT_STEPS,
                             "target": UNTARGETED, "random": False},
            "No pixel of the photo moves by more than 1 of its 255 grey levels, and the network changes its mind: "
            "the middle picture is that change magnified. Invisible to us, decisive for the network."),
        Try("say “goldfish”", {"source": PHOTO, "network": LITE0, "method": "pgd", "epsilon": DEFAULT_EPSILON,
                               "steps": DEFAULT_STEPS, "target": "goldfish (1)", "random": False},
            "A targeted attack walks down the loss of a class of our choosing: within 4 grey levels the network "
            "is made nearly certain it sees a goldfish. Watch p(target) climb in the plot."),
        Try("clothes: FGSM", {"source": TEST_IMAGE, "test_image": 0, "network": PLAIN, "method": "fgsm",
                              "epsilon": 8, "target": UNTARGETED, "random": False},
            "One step of the whole budget (8/255) does not fool the classifier on this ankle boot. Now choose "
            "PGD (10 steps) and attack again: the same budget, spent in small steps that follow the loss, "
            "turns it into a sneaker."),
        Try("robust network", {"source": TEST_IMAGE, "test_image": 0, "network": ROBUST, "method": "pgd",
                               "epsilon": 8, "steps": DEFAULT_STEPS, "target": UNTARGETED, "random": False},
            "The same PGD attack that fools the plain classifier fails on the adversarially trained one: it was "
            "trained on such images, and pays for it with some clean accuracy. The side by side below attacks "
            "both on 100 test images at once."),
    ),
    misconceptions=(
        ("The perturbation is random noise.",
         "Random noise of the same size barely moves the prediction; the attack follows the sign of the "
         "gradient, so every pixel's tiny change pushes the loss the same way."),
        ("Only a badly trained network can be fooled.",
         "The shipped classifiers are accurate on clean test images, and PGD still fools them: accuracy on "
         "natural images says nothing about the worst case within ε."),
        ("More PGD steps just repeat FGSM.",
         "FGSM takes one step of the whole budget along the gradient at x; PGD re-reads the gradient after "
         "each small step and clips back into the ε-ball, so it finds stronger attacks within the same ε."),
        ("Adversarial training makes a network robust for free.",
         "It costs clean accuracy (here about 88 % instead of 93 %) and only protects against the threat it was "
         "trained for: this ε, this norm."),
    ),
    code=(Code("the attack's loop: FGSM is one step, PGD many", "core/adversarial.py", ("_walk", "_random_start"),
               r"$x_{k+1} = \mathrm{clip}\big(x_k \pm \alpha\,\mathrm{sign}\,\nabla_x L(f(x_k), y),\;"
               r"\max(x - \varepsilon, 0),\; \min(x + \varepsilon, 1)\big)$ (+ away from the true class, "
               r"− towards a target; FGSM: one step with $\alpha = \varepsilon$)"),),
)

SIDE_TEXT = """The same PGD attack (random start, step size 2.5 ε / steps) on one Fashion-MNIST test image against both
classifiers, and on the {batch} test images from that one on. The robust classifier was fine-tuned on PGD
images at ε = 8/255 (the minimum over the weights of the maximum over the ε-ball of the loss). Against a
robust network the perturbation that works tends to look like a feature of another class (Tsipras et al.
2019), and the robustness is paid for with some clean accuracy."""


# --- small helpers ------------------------------------------------------------------------------

def robust_shipped() -> bool:
    """The adversarially trained classifier is there, card and all (a training in progress has no card yet)."""
    path = shipped_path("classifier", ROBUST)
    return path.is_file() and path.with_suffix(".json").is_file()


@functools.cache
def robust_command() -> str:
    """core.adversarial.ROBUST_COMMAND, read from the source (building the page must not import torch)."""
    tree = ast.parse((ROOT / "core" / "adversarial.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ROBUST_COMMAND" for t in node.targets):
            return ast.literal_eval(node.value)
    return "python -m core.train classifier --adversarial-epsilon 8/255 (see core/adversarial.py)"


def not_shipped_sentence() -> str:
    return f"The adversarially trained classifier has not been trained yet; make it with: `{robust_command()}`"


def network_choices() -> list[tuple[str, str]]:
    names = [LITE0, PLAIN] + ([ROBUST] if robust_shipped() else [])
    return [(NETWORK_LABELS[name], name) for name in names]


def _check_network(network) -> str:
    if network not in NETWORK_LABELS:
        raise ValueError(f"Unknown network {network!r}; choose one of {', '.join(NETWORK_LABELS)}.")
    return network


def _class_names(network: str) -> list[str]:
    from core.adversarial import imagenet_class_names
    from core.data.fashion_mnist import CLASS_NAMES

    return imagenet_class_names() if network == LITE0 else list(CLASS_NAMES)


def target_choices(network, current=None):
    """The target box for a network: untargeted, then every class as "name (index)". The `current` target
    stays chosen when the network has that class (a "Try this" button sets the network and the target at once)."""
    names = _class_names(_check_network(network))
    try:
        index = parse_target(current, names)
    except ValueError:
        index = None
    value = UNTARGETED if index is None else f"{names[index]} ({index})"
    return gr.Dropdown(choices=[UNTARGETED, *(f"{name} ({i})" for i, name in enumerate(names))], value=value)


def source_changed(source, network):
    """A Fashion-MNIST test image is for a Fashion-MNIST classifier: the network box follows."""
    if source == TEST_IMAGE and network == LITE0:
        return gr.Dropdown(choices=network_choices(), value=PLAIN)
    return gr.skip()


def parse_target(value, names: list[str]) -> int | None:
    """The target box's value (or an API client's class name or number) -> a class index, None for untargeted."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if float(value).is_integer() and 0 <= value < len(names):
            return int(value)
        raise ValueError(f"The target class must be a class number from 0 to {len(names) - 1}, not {value}.")
    text = str(value).strip()
    if not text or text == UNTARGETED or text.lower() in ("none", "untargeted"):
        return None
    lowered = [name.lower() for name in names]
    numbered = re.fullmatch(r"(.*?)\s*\((\d+)\)", text)
    if numbered and int(numbered[2]) < len(names) and lowered[int(numbered[2])] == numbered[1].lower():
        return int(numbered[2])
    if text.isdigit() and int(text) < len(names):
        return int(text)
    for name in (text, numbered[1] if numbered else text):
        if name.lower() in lowered:
            return lowered.index(name.lower())
    raise ValueError(f"“{text[:60]}” is not one of this network's {len(names)} classes: pick one from the list "
                     "(or none, for an untargeted attack).")


def _test_image(index) -> tuple:
    try:
        images, labels = fashion_test_split()
    except ValueError as exc:
        raise ValueError(f"{exc} Attack a photo instead.") from None
    i = number(index, 0, 0, len(images) - 1, whole=True)
    return images[i:i + 1], int(labels[i]), i


def _load(source, image, index, network: str) -> tuple:
    """The image to attack as the network wants it -> (x [1, C, H, W] in [0, 1], true label or None,
    what it is, notes)."""
    from core.data.images import as_clothes, center_crop_square, pil_to_tensor, prepare_image

    if source == TEST_IMAGE:
        x, label, i = _test_image(index)
        return x, label, f"Fashion-MNIST test image {i}", []
    if source != PHOTO:
        raise ValueError(f"Unknown source {source!r}: attack a photo or a Fashion-MNIST test image.")
    if image is None:
        raise ValueError("No photo was given: upload one or pick an example (or attack a Fashion-MNIST test image).")
    if network == LITE0:
        picture, notes = prepare_image(image, max_side=2048)
        x = pil_to_tensor(center_crop_square(picture, PHOTO_SIZE))
        return x, None, "your photo", notes + [f"centre-cropped and resized to {PHOTO_SIZE}×{PHOTO_SIZE}, "
                                               "the size EfficientNet-Lite0 was trained at"]
    x, notes = as_clothes(image, CLOTHES_SIZE)
    return x, None, "your photo, drawn as clothes", notes


def _shown(x):
    """A [1, C, H, W] image as a PIL picture about SHOWN_PX wide; small images enlarged, nearest neighbour."""
    from PIL import Image

    from core.data.images import tensor_to_pil

    picture = tensor_to_pil(x)
    factor = SHOWN_PX // picture.width
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    return picture


def magnification(epsilon: float) -> float:
    """How much the perturbation is magnified: ±ε becomes the whole range, black to white (never shrunk)."""
    return max(1.0, 0.5 / epsilon)


def _perturbation(delta, epsilon: float):
    """0.5 + δ · magnification, grey where nothing changed."""
    return _shown((0.5 + delta * magnification(epsilon)).clamp(0, 1))


def perturbation_label(epsilon: float) -> str:
    """The sentence under the pictures that gives the perturbation's scale."""
    levels = epsilon * 255
    return (f"The middle picture is the perturbation x′ − x **magnified ×{magnification(epsilon):.3g}** (grey: "
            f"unchanged; black and white: −ε and +ε). ε = {levels:g}/255: no pixel moves by more than {levels:g} "
            "of its 255 grey levels.")


def _name(names, index) -> str:
    return names[int(index)]


def top5_bars(names, before, after, label: int, target: int | None, steps: int):
    """One figure: the top-5 probabilities of the clean image and of the adversarial one, the true class
    in blue, the target in orange."""
    import torch

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 2.9), dpi=80)
    for ax, p, title in ((axes[0], before, "before: the image itself"),
                         (axes[1], after, f"after {steps} step{'s' if steps != 1 else ''}: "
                                          f"p(true class) = {float(after[label]):.3f}")):
        values, indices = torch.topk(p, min(5, len(p)))
        colours = [TRUE_COLOUR if i == label else TARGET_COLOUR if i == target else OTHER_COLOUR
                   for i in indices.tolist()]
        labels = [_name(names, i)[:28] for i in indices.tolist()]
        ax.barh(range(len(values))[::-1], values.tolist(), color=colours)
        ax.set_yticks(range(len(values))[::-1], labels, fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        for row, value in zip(range(len(values))[::-1], values.tolist()):
            ax.text(min(value + 0.02, 0.8), row, f"{value:.2f}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.suptitle("top-5 probabilities (blue: the true class; orange: the target)", fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


def _curve(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "probability", "class"])


def _epsilon(value) -> float:
    """ε from the slider, in grey levels -> a fraction of the range; 0 is refused with a sentence."""
    levels = number(value, DEFAULT_EPSILON, 0, 255)
    if levels <= 0:
        raise ValueError("ε = 0 allows no pixel to change, so there is nothing to attack with: "
                         "choose ε of at least 1/255.")
    return levels / 255


# --- the attack -------------------------------------------------------------------------------------

def attack_image(source, image, index, network, method, epsilon, steps, step_size, target, random_start, seed):
    """Stream (original, perturbation, adversarial, its scale, top-5 bars, probabilities over the steps, status) while
    the attack runs. ε and the step size are in grey levels (1/255); step size 0 is PGD's usual
    2.5 ε / steps; `target` is a class of the network's ("name (index)", a name or a number) or untargeted."""
    from core.adversarial import attack, load_classifier, probabilities
    from core.runtime import clamp_seed, make_generator

    network = _check_network(network)
    notes = []
    if source == TEST_IMAGE and network == LITE0:
        network = PLAIN
        notes.append("a Fashion-MNIST test image is attacked with the Fashion-MNIST classifier")
    eps = _epsilon(epsilon)
    if method not in ("fgsm", "pgd"):
        raise ValueError(f"Unknown attack {method!r}: choose FGSM or PGD.")
    steps = number(steps, DEFAULT_STEPS, 1, MAX_STEPS, whole=True) if method == "pgd" else 1
    alpha = number(step_size, 0, 0, 255) / 255 if method == "pgd" else eps
    if random_start and method == "fgsm":
        notes.append("FGSM takes its one step from the image itself: the random start is for PGD")
    start_at_random = bool(random_start) and method == "pgd"
    x, label, what, load_notes = _load(source, image, index, network)
    notes += load_notes
    for note in notes:
        gr.Info(note)
    classifier = load_classifier(network)
    x = classifier.prepare(x)  # as the network sees it: 28-px clothes padded to 32
    names = classifier.class_names
    goal = parse_target(target, names)
    clean = probabilities(classifier, x)[0]
    prediction = int(clean.argmax())
    if goal is not None and goal == prediction:
        raise ValueError(f"The network already says “{names[goal]}” for this image: choose another target class "
                         "(or none, for an untargeted attack).")
    true = label if label is not None else prediction
    true_name = names[true]
    true_series = f"true class: {true_name}" if label is not None else f"its first answer: {true_name}"
    other_series = f"target: {names[goal]}" if goal is not None else "the most likely other class"
    settings = dict(method=method, epsilon=eps, target=goal,
                    random_start=start_at_random, generator=make_generator(seed) if start_at_random else None)
    if method == "pgd":
        settings.update(steps=steps, step_size=alpha if alpha > 0 else None)
    walk = attack(classifier, x, None if label is None else [label], **settings)

    rows, last_shown, begin, update = [], 0.0, time.perf_counter(), None
    scale = perturbation_label(eps)
    for update in walk:
        p = update.probabilities[0]
        others = p.clone()
        others[true] = -1
        second = goal if goal is not None else int(others.argmax())
        rows += [(update.step, float(p[true]), true_series), (update.step, float(p[second]), other_series)]
        now = time.perf_counter()
        if update.step == 0 or (update.step < steps and now - last_shown >= PREVIEW_EVERY_S):  # the last: below
            last_shown = now
            top = int(p.argmax())
            status = (f"Step {update.step}/{steps}: the network says “{names[top]}” (p = {float(p[top]):.2f}); "
                      f"p(“{true_name}”) = {float(p[true]):.3f}"
                      + (f", p(target “{names[goal]}”) = {float(p[goal]):.3f}" if goal is not None else ""))
            first = update.step == 0  # the first frame clears the previous attack's bars
            # ... and gives this attack's two series their colours: the true class blue, the other orange.
            curve = (gr.LinePlot(_curve(rows), color_map={true_series: TRUE_COLOUR, other_series: TARGET_COLOUR})
                     if first else _curve(rows))
            yield (_shown(x) if first else gr.skip(), _perturbation(update.images - x, eps), _shown(update.images),
                   scale if first else gr.skip(), None if first else gr.skip(), curve, status)
    seconds = time.perf_counter() - begin
    bars = top5_bars(names, clean, update.probabilities[0], true, goal, steps)
    summary = _summary(classifier, x, update, clean, true, goal, label, what, method, eps, alpha, steps,
                       start_at_random, clamp_seed(seed), seconds, notes)
    yield (_shown(x), _perturbation(update.images - x, eps), _shown(update.images), scale, bars, _curve(rows), summary)


def _summary(classifier, x, last, clean, true, goal, label, what, method, eps, alpha, steps, random_start, seed,
             seconds, notes) -> str:
    from core.adversarial import probabilities

    names = classifier.class_names
    after = last.probabilities[0]
    top_before, top_after = int(clean.argmax()), int(after.argmax())
    delta = last.images - x
    more = "try a larger ε or more steps" if method == "pgd" else "try a larger ε, or PGD"
    if goal is not None:
        verdict = ("**Fooled**: it now says the target" if top_after == goal else
                   f"**Not fooled (yet)**: the target is not its top class; {more}")
    elif label is not None and top_before != label:
        verdict = "**It was wrong already** on the image itself; the attack only makes it surer"
    else:
        verdict = ("**Fooled**: it changed its mind" if top_after != true else
                   f"**Not fooled**: it still says the true class; {more}")
    rounded = (last.images * 255).round() / 255
    saved = probabilities(classifier, rounded)[0]
    top_saved = int(saved.argmax())
    if method == "pgd":
        recipe = (f"PGD, {steps} steps of α = {alpha * 255 if alpha > 0 else 2.5 * eps * 255 / steps:.3g}/255"
                  + (f", random start (seed {seed})" if random_start else ", from the image itself"))
    else:
        recipe = "FGSM, one step of ε"
    truth = (f"true class “{names[true]}”" if label is not None else
             f"its own answer on the image, “{names[true]}”, taken as the true class")
    lines = [f"{verdict}. {what[0].upper() + what[1:]}, {NETWORK_LABELS[classifier.name]}: “{names[top_before]}” "
             f"(p = {float(clean[top_before]):.3f}) → “{names[top_after]}” (p = {float(after[top_after]):.3f}); "
             f"{truth}: p = {float(clean[true]):.3f} → {float(after[true]):.3f}"
             + (f"; target “{names[goal]}”: p = {float(clean[goal]):.3f} → {float(after[goal]):.3f}"
                if goal is not None else "") + ".",
             f"**Attack:** {recipe}, ε = {eps * 255:g}/255; {seconds:.2f} s. The largest change of any pixel is "
             f"{float(delta.abs().max()) * 255:.2f} grey levels, the mean {float(delta.abs().mean()) * 255:.2f}.",
             f"**As an 8-bit image** (every pixel rounded to a whole grey level, as the picture shown): it says "
             f"“{names[top_saved]}” (p = {float(saved[top_saved]):.3f})."]
    if notes:
        lines.append("**Notes:** " + "; ".join(notes))
    return "\n\n".join(lines)


def stopped_status(status: str | None) -> str:
    """The status once an attack has ended: one that Stop cancelled says so; a finished or failed one keeps its line."""
    status = (status or "").strip()
    return f"**Stopped** at: {status}." if status.startswith(RUNNING) else status


# --- side by side: the plain and the robust classifier -------------------------------------------

def _accuracy(name: str) -> str:
    try:
        metrics = read_card("classifier", name).get("metrics") or {}
    except (OSError, ValueError):
        return "?"
    accuracy = metrics.get("test_accuracy")
    return f"{100 * accuracy:.1f} %" if isinstance(accuracy, (int, float)) else "?"


def measured_text() -> str:
    """The bench's success rates at ε = 8/255 and the clean accuracies, only what has been measured."""
    for _, record in bench_records(TAB):
        figures = record.get("figures") or {}
        parts = []
        for key in (PLAIN, ROBUST):
            entry = figures.get(key) or {}
            rates = (entry.get("success") or {}).get("pgd") or {}
            if "8" in rates and isinstance(entry.get("clean_accuracy"), (int, float)):
                parts.append(f"{NETWORK_LABELS[key].lower()}: clean accuracy {100 * entry['clean_accuracy']:.1f} %, "
                             f"PGD at 8/255 fools it on {100 * rates['8']:.0f} %")
        if parts:
            quick = " (quick run)" if record.get("quick") else ""
            return (f"Measured by `bench/adversarial.py` on {figures.get('n', '?')} test images{quick}: "
                    + "; ".join(parts) + ".")
    return ""


def side_card() -> str:
    """The two classifiers' clean accuracies, the bench's figures, and the command while the robust one is missing."""
    robust = robust_shipped()
    parts = [f"Clean test accuracy: plain {_accuracy(PLAIN)}"
             + (f", adversarially trained {_accuracy(ROBUST)}." if robust else "."), measured_text()]
    if not robust:
        parts.append(f"**{not_shipped_sentence()}** Until then only the plain classifier is attacked here.")
    return " ".join(part for part in parts if part)


def side_by_side(index, epsilon, steps, seed):
    """The same PGD attack on one test image against the plain and the robust classifier -> (picture, note).
    Without the robust classifier the plain one is attacked alone and the note says how to make it."""
    from core.adversarial import load_classifier, probabilities, run_attack, success_rate
    from core.data.fashion_mnist import CLASS_NAMES
    from core.runtime import clamp_seed, make_generator

    eps = _epsilon(epsilon)
    steps = number(steps, SIDE_STEPS, 1, SIDE_MAX_STEPS, whole=True)
    x, label, i = _test_image(index)
    images, labels = fashion_test_split()  # read once per process: _test_image has just loaded it
    batch = slice(i, min(i + SIDE_BATCH, len(images)))
    names = [PLAIN] + ([ROBUST] if robust_shipped() else [])
    rows, results = [], []
    for name in names:
        classifier = load_classifier(name)
        settings = dict(method="pgd", epsilon=eps, steps=steps, random_start=True)
        last = run_attack(classifier, x, [label], generator=make_generator(seed), **settings)
        clean = probabilities(classifier, x)[0]
        rate = success_rate(classifier, images[batch], labels[batch], generator=make_generator(seed), **settings)
        results.append((name, clean, last))
        cn = classifier.class_names
        before, after = int(clean.argmax()), int(last.predictions[0])
        rows.append(f"| {NETWORK_LABELS[name]} | {_accuracy(name)} | {cn[before]} ({float(clean[before]):.2f}) | "
                    f"{cn[after]} ({float(last.probabilities[0, after]):.2f}) | "
                    f"{float(clean[label]):.3f} → {float(last.probabilities[0, label]):.3f} | {100 * rate:.0f} % |")
    picture = _side_picture(x, results, label, eps)
    note = [f"Test image {i} (true class “{CLASS_NAMES[label]}”); PGD, ε = {eps * 255:g}/255, {steps} steps of "
            f"2.5 ε / {steps}, random start (seed {clamp_seed(seed)}).",
            "| classifier | clean test accuracy | says before | says after | p(true class) | fooled on test images "
            f"{batch.start}–{batch.stop - 1} |", "|---|---|---|---|---|---|", *rows]
    if len(names) == 1:
        note.append(f"\n{not_shipped_sentence()}")
    return picture, "\n".join(note)


def _side_picture(x, results, label: int, eps: float):
    """One row per classifier: the image, the perturbation (magnified), the adversarial image."""
    from core.data.fashion_mnist import CLASS_NAMES

    plt = pyplot()
    fig, axes = plt.subplots(len(results), 3, figsize=(6.6, 2.4 * len(results)), dpi=80, squeeze=False)
    for row, (name, clean, last) in zip(axes, results):
        delta = (0.5 + (last.images - x) * magnification(eps)).clamp(0, 1)
        after = int(last.predictions[0])
        panels = [(x, f"says {CLASS_NAMES[int(clean.argmax())]} ({float(clean.max()):.2f})"),
                  (delta, f"perturbation ×{magnification(eps):.3g}"),
                  (last.images, f"says {CLASS_NAMES[after]} ({float(last.probabilities[0, after]):.2f})")]
        colours = ("black", "black", TARGET_COLOUR if after != label else "black")  # orange: fooled
        for ax, (image, title), colour in zip(row, panels, colours):
            ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=8, color=colour)
        row[0].set_ylabel("robust" if name == ROBUST else "plain", fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


# --- layout -------------------------------------------------------------------------------------

def build():
    from gradio.context import Context

    this_tab = Context.block  # the gr.Tab app.build_app opened around build()
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            with gr.Row():
                run_button = gr.Button("Attack", variant="primary", elem_id="adversarial-run")
                stop_button = gr.Button("Stop", elem_id="adversarial-stop")
            with gr.Row():
                method = gr.Radio(METHODS, value="pgd", label="method")
                epsilon = gr.Slider(0, MAX_EPSILON, DEFAULT_EPSILON, step=1, elem_id="adversarial-epsilon",
                                    label="ε, the largest change of any pixel, in grey levels (x/255)")
            source = gr.Radio(SOURCES, value=PHOTO, label="attack", elem_id="adversarial-source")
            image = image_upload("photo", elem_id="adversarial-image", height=200,
                                 value=str(DEFAULT_PHOTO) if DEFAULT_PHOTO.is_file() else None)
            if examples:
                gr.Examples(examples, inputs=[image], label="example photos", api_visibility="private",
                            elem_id="adversarial-examples")
            index = gr.Slider(0, TEST_IMAGES - 1, 0, step=1, label="Fashion-MNIST test image (when attacking one)")
            network = gr.Dropdown(network_choices(), value=LITE0, label="network", elem_id="adversarial-network")
            target = gr.Dropdown([UNTARGETED], value=UNTARGETED, allow_custom_value=True, filterable=True,
                                 label="target class (type to search)", elem_id="adversarial-target")
            with gr.Accordion("PGD's steps, step size and random start", open=False):
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, DEFAULT_STEPS, step=1, label="PGD steps")
                    step_size = gr.Slider(0, 8, 0, step=0.25,
                                          label="PGD step size α in grey levels (0: 2.5 ε / steps)")
                with gr.Row():
                    random_start = gr.Checkbox(False, label="PGD from a random start in the ε-ball")
                    seed = gr.Number(0, precision=0, label="seed (random start)")
        with gr.Column(scale=2):
            caption("**Left to right**: the image x as the network sees it; the change x′ − x, magnified (scale "
                    "below); the adversarial image x′, redrawn while PGD walks.")
            with gr.Row():
                original = gr.Image(label="original x", type="pil", format="png", interactive=False,
                                    height=SHOWN_PX + 40, elem_id="adversarial-original",
                                    alt_text="the image before the attack, as the network sees it")
                perturbation = gr.Image(label="perturbation x′ − x, magnified", type="pil", format="png",
                                        interactive=False, height=SHOWN_PX + 40, elem_id="adversarial-perturbation",
                                        alt_text="the change the attack made, magnified: grey unchanged, "
                                                 "black −ε, white +ε")
                adversarial = gr.Image(label="adversarial x′ (live)", type="pil", format="png", interactive=False,
                                       height=SHOWN_PX + 40, elem_id="adversarial-result",
                                       alt_text="the adversarial image, which looks the same as the original")
            scale = gr.Markdown(perturbation_label(DEFAULT_EPSILON / 255), elem_id="adversarial-scale")
            status = gr.Markdown(elem_id="adversarial-status")
            bars = gr.Image(label="top-5 probabilities before and after", type="pil", format="png",
                            interactive=False, elem_id="adversarial-bars",
                            alt_text="bar charts of the five most likely classes before and after the attack")
            caption("**Top-5 probabilities**: left before the attack, right after it; each bar is one class's "
                    "probability (0 to 1); blue the true class (or the network's first answer), orange the target, "
                    "grey the others.")
            curve = gr.LinePlot(x="step", y="probability", color="class", y_lim=[0, 1],
                                label="the true and target classes' probabilities over the steps",
                                title="p(true class) falls; p(target) rises (step 0: the start)")
            caption("**Over the steps**: attack steps across (0 = the start); up, the probability the network "
                    "gives the true class (blue) and the target, or else the most likely other class (orange).")
            with gr.Accordion("Why it works: the same gradient as training, DeepDream and GANs", open=False):
                gr.Markdown(BACKGROUND)

    with gr.Accordion("Side by side: the plain and the adversarially trained classifier", open=True):
        gr.Markdown(SIDE_TEXT.format(batch=SIDE_BATCH))
        gr.Markdown(side_card(), elem_id="adversarial-side-card")
        with gr.Row():
            side_index = gr.Number(0, precision=0, minimum=0, maximum=TEST_IMAGES - 1, label="test image")
            side_epsilon = gr.Slider(1, MAX_EPSILON, SIDE_EPSILON, step=1, label="ε in grey levels (x/255)")
            side_steps = gr.Slider(1, SIDE_MAX_STEPS, SIDE_STEPS, step=1, label="PGD steps")
            side_seed = gr.Number(0, precision=0, label="seed")
        side_button = gr.Button("Attack both", elem_id="adversarial-side-run")
        caption("**One row per classifier** (plain, then adversarially trained): the test image and what it says, "
                "the perturbation magnified (grey unchanged), the adversarial image and what it says; an orange "
                "title means fooled.")
        side_picture = gr.Image(label="the same attack on both classifiers", show_label=False, type="pil",
                                format="png", interactive=False, elem_id="adversarial-side-picture",
                                alt_text="the same test image attacked against the plain and the robust classifier")
        side_note = gr.Markdown(elem_id="adversarial-side-note")

    network.change(user_errors(target_choices), [network, target], [target], api_name="adversarial_target_choices",
                   api_visibility="private", **queue(f"{TAB}-ui", 8))
    source.change(user_errors(source_changed), [source, network], [network], api_name="adversarial_source_changed",
                  api_visibility="private", **queue(f"{TAB}-ui", 8))
    if isinstance(this_tab, gr.Tab):  # ImageNet's 1000 names need torchvision: loaded when the tab opens
        this_tab.select(user_errors(target_choices), [network, target], [target], api_name="adversarial_targets_on_open",
                        api_visibility="private", **queue(f"{TAB}-ui", 8))
    attack_event = gr.on(
        [run_button.click, page.ran.change], user_errors(on_gpu(ATTACK_GPU_S)(attack_image)),
        [source, image, index, network, method, epsilon, steps, step_size, target, random_start, seed],
        [original, perturbation, adversarial, scale, bars, curve, status], api_name="adversarial_attack",
        **queue(TAB, 1))
    stop_button.click(None, None, None, cancels=[attack_event], api_name="adversarial_stop", api_visibility="private")
    # .then runs once the attack has ended in any way, after its last streamed update.
    attack_event.then(stopped_status, [status], [status], api_name="adversarial_attack_ended",
                      api_visibility="private", **queue(f"{TAB}-ui", 8))
    side_button.click(user_errors(on_gpu(SIDE_GPU_S)(side_by_side)), [side_index, side_epsilon, side_steps, side_seed],
                      [side_picture, side_note], api_name="adversarial_side_by_side", **queue(TAB, 1))
    page.link({"source": source, "test_image": index, "network": network, "method": method, "epsilon": epsilon,
               "steps": steps, "alpha": step_size, "target": target, "random": random_start, "seed": seed})
    return page
