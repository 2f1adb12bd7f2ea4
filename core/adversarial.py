"""Adversarial examples: changes too small to see that make a classifier wrong, and a defence.

A classifier f gives logits f(x) for an image x; the cross-entropy L(f(x), y) says how wrong it is
about the class y. Training lowers L by moving the *weights*. An attack keeps the weights frozen and
moves the *pixels* instead, within a budget ε: no pixel may change by more than ε (the L∞ ball
‖x' − x‖∞ ≤ ε), and every pixel stays a pixel (x' ∈ [0, 1]ⁿ).

* FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015): one step of size ε

      x' = clip(x + ε · sign(∇ₓ L(f(x), y)), 0, 1)

  Why the sign: near x the network is close to linear, L(x + δ) ≈ L(x) + δ · ∇ₓL, and among all δ
  with ‖δ‖∞ ≤ ε the one that raises this most is δ = ε · sign(∇ₓL). The rise, ε · ‖∇ₓL‖₁, grows with
  the number of pixels: many tiny changes, each invisible, add up.
* Iterative FGSM / PGD, projected gradient descent (Kurakin et al. 2017; Madry et al. 2018): many
  steps of size α, each followed by the projection Π back onto the allowed set,

      x_{k+1} = Π(x_k + α · sign(∇ₓ L(f(x_k), y))),   Π(z) = clip(z, max(x − ε, 0), min(x + ε, 1))

  optionally from a random start x_0 = Π(x + U(−ε, ε)). Where one FGSM step trusts the linear
  picture, PGD follows the loss as it bends, and fools networks FGSM does not.
* Untargeted attacks raise the loss of the true class y ("be wrong"); targeted ones lower the loss
  of a chosen class t ("say t"), stepping *down* the gradient: x' = x − α · sign(∇ₓ L(f(x), t)).
* Adversarial training (Madry et al. 2018) is the defence: train on the worst images in the ball,

      min_θ  E_(x, y) [ max_{‖δ‖∞ ≤ ε} L(f_θ(x + δ), y) ],

  the inner max approximated by PGD against the model being trained (`adversarial_examples`; the
  trainer's --adversarial-epsilon in core.metrics.classifiers). The robust model pays for it with
  clean accuracy: it may no longer use the fragile features the attack exploits.

`attack()` returns a generator of `AttackStep`s, one per step (step 0 is the starting image), so a
UI can show the image drift and the probabilities move. Gradients flow to the pixels only: the
network's weights are never changed, and its requires_grad flags and train/eval mode are restored
afterwards. Randomness (PGD's random start) comes only from the CPU `torch.Generator` passed in, so
the same seed gives the same attack on every device; every step's tensors come back on the CPU.

Two frozen networks to attack (`load_classifier`): the project's Fashion-MNIST classifier (grey
[N, 1, 32, 32], core.metrics.classifiers; also its adversarially trained copy once trained) and the
packaged ImageNet EfficientNet-Lite0 (RGB [N, 3, H, W], core.backbones, head included; its input
scaling, (x − 0.5)/0.5 as the package's TensorFlow Lite weights want rather than ImageNet's mean and
std, happens inside). Lite0 recognises a photo at 160-256 px (Grace Hopper: "military uniform" at
p = 0.46-0.66); much smaller or larger and its answers drift, so give it about 224 px.

Measured on one CPU thread: a 10-step PGD on a 224-px photo with Lite0 takes 0.8 s; at ε = 8/255 PGD
(10 steps) fools the shipped Fashion-MNIST classifier on 68 % of 200 test images, FGSM on 46 %.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.metrics.classifiers import ROBUST_NAME
from core.runtime import autocast, frozen

METHODS = ("fgsm", "pgd")
CLASSIFIERS = ("fashion_mnist", ROBUST_NAME, "efficientnet_lite0")
# The fine-tuning that makes ROBUST_NAME (its card records the command actually run).
ROBUST_COMMAND = ("python -m core.train classifier --dataset fashion --init-from "
                  "assets/checkpoints/classifier/fashion_mnist.pt --adversarial-epsilon 8/255 --pgd-steps 7 "
                  "--epochs 3 --lr 1e-3 --shift 1 --label-smoothing 0 --threads 1")
MAX_STEPS = 1000
EVALUATION_STEPS = 20  # PGD steps when measuring robustness: more than training uses, so it is not flattered


class Classifier:
    """One interface to every network an attack can target: images in [0, 1] -> class logits."""

    def __init__(self, name: str, network: nn.Module, class_names: list[str], channels: int,
                 mixed_precision: bool = False):
        self.name, self.network, self.class_names, self.channels = name, network, list(class_names), channels
        self.mixed_precision = mixed_precision  # bf16 autocast on GPUs that have it, as DeepDream runs the backbone

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images) -> Tensor:
        """The network's input, checked: float [N, C, H, W] in [0, 1] (28-px clothes are padded to 32)."""
        from core.metrics.classifiers import fashion_input, to_unit_range

        if self.channels == 1:
            return fashion_input(images, (0, 1))
        x = to_unit_range(images, (0, 1))
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} needs RGB images shaped [N, 3, H, W], got {list(x.shape)}.")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"The image is {x.shape[-1]}x{x.shape[-2]} pixels; it needs at least 32 on each side.")
        return x

    def logits(self, images: Tensor) -> Tensor:
        """f(x): logits [N, classes], in float32 whatever precision the network ran in."""
        if self.mixed_precision:
            with autocast(images.device):
                return self.network(images).float()
        return self.network(images).float()


class _ImageNetLogits(nn.Module):
    """A backbone's whole network, stages and classifier head: [0, 1] images -> 1000 ImageNet logits."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone.classify(images)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (offline: no download);
    "class <index>" without torchvision."""
    try:
        from torchvision.models import MobileNet_V2_Weights
    except ImportError:
        return [f"class {i}" for i in range(1000)]
    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def fashion_classifier(model: nn.Module, name: str = "fashion_mnist") -> Classifier:
    """Wrap a FashionClassifier (shipped, or one being trained); the wrapper changes nothing in it."""
    from core.data.fashion_mnist import CLASS_NAMES

    return Classifier(name, model, CLASS_NAMES, channels=1)


@functools.cache
def load_classifier(name: str = "fashion_mnist") -> Classifier:
    """A shipped network, frozen, on the app's device; loaded once and shared read-only."""
    from core.metrics.classifiers import load_fashion_classifier
    from core.registry import shipped_path

    if name == "efficientnet_lite0":
        from core.backbones import load_backbone

        return Classifier(name, _ImageNetLogits(load_backbone(name)).eval(), imagenet_class_names(), channels=3,
                          mixed_precision=True)
    if name == "fashion_mnist":
        return fashion_classifier(load_fashion_classifier().requires_grad_(False), name)
    if name == ROBUST_NAME:
        path = shipped_path("classifier", ROBUST_NAME)
        if not path.is_file():
            raise ValueError(f"The adversarially trained classifier has not been trained yet; "
                             f"make it with: {ROBUST_COMMAND}")
        return fashion_classifier(load_fashion_classifier(str(path)).requires_grad_(False), name)
    raise ValueError(f"Unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}.")


@dataclass
class AttackStep:
    """One step of an attack on a batch; every tensor is on the CPU."""
    step: int                # 0 is the starting image (the clean one, or its random start), then 1 … steps
    images: Tensor           # x' [N, C, H, W] in [0, 1], within ε of the clean images
    probabilities: Tensor    # softmax(f(x')) [N, classes]
    loss: Tensor             # per image: untargeted L(f(x'), y), which the attack raises; targeted L(f(x'), t), lowered
    success: Tensor          # per image: untargeted, the top class is no longer y; targeted, it is t

    @property
    def predictions(self) -> Tensor:
        return self.probabilities.argmax(-1)


def _is_number(value) -> bool:
    """A real number (Python's, NumPy's or a one-element tensor), not a bool or a string."""
    if isinstance(value, (bool, str)):
        return False
    try:
        float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def check_settings(method: str, epsilon: float, step_size: float | None, steps: int, random_start: bool = False,
                   generator: torch.Generator | None = None) -> tuple[float, float, int]:
    """Refuse settings that cannot work, with a sentence; return (ε, α, steps) as the attack uses them."""
    if method not in METHODS:
        raise ValueError(f"Unknown attack {method!r}; choose one of {', '.join(METHODS)}.")
    if not (_is_number(epsilon) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"ε, the largest change allowed per pixel, must be a number of at least 0, not {epsilon}.")
    epsilon = min(float(epsilon), 1.0)  # pixels live in [0, 1]: a larger ball allows nothing more
    if method == "fgsm":
        if random_start:
            raise ValueError("FGSM takes one step from the image itself; choose PGD for a random start.")
        return epsilon, epsilon, 1  # one step of the whole budget: α = ε
    if not (_is_number(steps) and float(steps).is_integer() and 1 <= steps <= MAX_STEPS):
        raise ValueError(f"PGD needs a whole number of steps between 1 and {MAX_STEPS}, not {steps}.")
    steps = int(steps)
    if step_size is None:
        # Madry et al.'s robustness library's rule: 2.5 ε in all, so a walk can cross the ball and back.
        step_size = 2.5 * epsilon / steps
    elif not (_is_number(step_size) and math.isfinite(step_size) and 0 < step_size <= 1):
        raise ValueError(f"The step size α must be above 0 and at most 1, not {step_size}.")
    if random_start and generator is None:
        raise ValueError("A random start needs a torch.Generator (core.runtime.make_generator(seed)).")
    return epsilon, float(step_size), steps


def _classes(classifier: Classifier, values, n: int, what: str) -> Tensor:
    """Labels or targets as class indices [n]: one number for every image, or one per image."""
    try:
        classes = torch.as_tensor(values).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"The {what} must be class numbers, not {values!r}.") from None
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise ValueError(f"The {what} must be whole class numbers, not {values!r}.")
    if len(classes) == 1:
        classes = classes.expand(n)
    if len(classes) != n:
        raise ValueError(f"Give one {what} for all {n} images or one per image, not {len(classes)}.")
    count = len(classifier.class_names)
    if classes.min() < 0 or classes.max() >= count:
        raise ValueError(f"{classifier.name} knows classes 0 to {count - 1}; the {what} {values!r} is outside them.")
    return classes.long().cpu()


@torch.no_grad()
def probabilities(classifier: Classifier, images: Tensor) -> Tensor:
    """softmax(f(x)) [N, classes] on the CPU for prepared images, the network run as at test time."""
    with frozen(classifier.network):
        return classifier.logits(images.to(classifier.device)).softmax(-1).cpu()


@torch.no_grad()
def predict(classifier: Classifier, images: Tensor) -> Tensor:
    """The network's top class for each image (images already prepared, on its device)."""
    with frozen(classifier.network):
        return classifier.logits(images).argmax(-1)


def _walk(classifier: Classifier, original: Tensor, goal: Tensor, targeted: bool, epsilon: float,
          step_size: float, steps: int, start: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """The attack itself, on the network's device: yields (k, x_k, f(x_k), L(f(x_k), goal)) for
    k = 0 … steps, with the network `frozen` throughout."""
    with frozen(classifier.network):
        lower = (original - epsilon).clamp(0, 1)   # max(x − ε, 0)
        upper = (original + epsilon).clamp(0, 1)   # min(x + ε, 1)
        x = start
        for step in range(steps + 1):
            x_in = x.detach().requires_grad_(True)  # a new leaf: the x handed out last step is left as it was
            with torch.enable_grad():
                logits = classifier.logits(x_in)
                loss = F.cross_entropy(logits, goal, reduction="none")          # L(f(x), y) per image
                grad = torch.autograd.grad(loss.sum(), x_in)[0] if step < steps else None  # ∇ₓ L
            yield step, x.detach(), logits.detach(), loss.detach()
            if grad is None:
                break
            direction = -grad.sign() if targeted else grad.sign()  # down to the target, up away from y
            x = torch.clamp(x + step_size * direction, lower, upper)    # Π(x_k + α · sign(∇ₓL))


def _random_start(original: Tensor, epsilon: float, generator: torch.Generator) -> Tensor:
    """x_0 = Π(x + U(−ε, ε)), the noise drawn on the CPU (same seed, same start on every device)."""
    noise = (torch.rand(original.shape, generator=generator) * 2 - 1) * epsilon
    return (original + noise.to(original.device)).clamp(original - epsilon, original + epsilon).clamp(0, 1)


def attack(classifier: Classifier, images, labels=None, *, method: str = "fgsm", epsilon: float,
           step_size: float | None = None, steps: int = 10, target=None, random_start: bool = False,
           generator: torch.Generator | None = None) -> Iterator[AttackStep]:
    """Attack `images` ([N, C, H, W] in [0, 1], see Classifier.prepare); returns a generator of
    AttackSteps, step 0 (the starting image) to the last. Settings are checked at the call.

    labels: the true classes (one number or one per image); None takes the network's own prediction
        on the clean image ("make it change its mind").
    method: "fgsm" (one step of size ε; `steps` and `step_size` do not apply) or "pgd".
    target: None for untargeted, else the class (one, or one per image) the network should answer.
    random_start: PGD only, from x + U(−ε, ε), drawn from `generator`.
    ε of 0 leaves the images exactly as they are; ε above 1 is the same as 1.
    """
    epsilon, step_size, steps = check_settings(method, epsilon, step_size, steps, random_start, generator)
    original = classifier.prepare(images).to(classifier.device)
    clean_classes = predict(classifier, original)
    if labels is None:
        labels = clean_classes  # "make it change its mind"
    else:
        labels = _classes(classifier, labels, len(original), "label").to(original.device)
    if target is None:
        goal, targeted = labels, False
    else:
        goal, targeted = _classes(classifier, target, len(original), "target").to(original.device), True
        already = (goal == clean_classes).nonzero().flatten().tolist()
        if already:
            raise ValueError(f"The network already classifies image {already[0]} as "
                             f"{classifier.class_names[goal[already[0]]]!r}, the target; choose another target class.")
    start = _random_start(original, epsilon, generator) if random_start else original
    return _attack_steps(classifier, original, goal, targeted, epsilon, step_size, steps, start)


def _attack_steps(classifier, original, goal, targeted, epsilon, step_size, steps, start) -> Iterator[AttackStep]:
    for step, x, logits, loss in _walk(classifier, original, goal, targeted, epsilon, step_size, steps, start):
        probabilities = logits.softmax(-1)
        top = probabilities.argmax(-1)
        success = top == goal if targeted else top != goal
        yield AttackStep(step, x.cpu(), probabilities.cpu(), loss.cpu(), success.cpu())


def run_attack(classifier: Classifier, images, labels=None, **settings) -> AttackStep:
    """The whole attack at once: its last step."""
    last = None
    for last in attack(classifier, images, labels, **settings):
        pass
    return last


def success_rate(classifier: Classifier, images, labels=None, method: str = "pgd", epsilon: float = 8 / 255, *,
                 target=None, batch_size: int = 250, **settings) -> float:
    """The fraction of `images` on which the attack reaches its goal, in batches.

    Untargeted with true labels, that is 1 − the accuracy under attack (images the network got wrong
    already count as fooled); with labels=None, the fraction whose prediction the attack changed.
    Targeted (one target class), images the network already puts in that class are left out."""
    x = classifier.prepare(images)
    labels = None if labels is None else _classes(classifier, labels, len(x), "label")
    if target is not None:
        keep = predict(classifier, x.to(classifier.device)).cpu() != _classes(classifier, target, len(x), "target")
        x, labels = x[keep], (None if labels is None else labels[keep])
        if not len(x):
            raise ValueError("The network already puts every image in the target class.")
    fooled = 0
    for start in range(0, len(x), batch_size):
        batch_labels = None if labels is None else labels[start:start + batch_size]
        last = run_attack(classifier, x[start:start + batch_size], batch_labels, method=method,
                          epsilon=epsilon, target=target, **settings)
        fooled += int(last.success.sum())
    return fooled / len(x)


def adversarial_examples(model: nn.Module, images: Tensor, labels: Tensor, *, epsilon: float, steps: int,
                         generator: torch.Generator, step_size: float | None = None) -> Tensor:
    """Madry et al.'s inner maximisation: PGD images from a random start, against `model` (a
    FashionClassifier, e.g. the one being trained), on the images' device, with no input checks and no
    copies to the CPU (the trainer calls it every batch). The model's weights and mode are left as they were."""
    epsilon, step_size, steps = check_settings("pgd", epsilon, step_size, steps, True, generator)
    images = images.detach()
    walk = _walk(fashion_classifier(model), images, labels, False, epsilon, step_size, steps,
                 _random_start(images, epsilon, generator))
    for _, x, _, _ in walk:
        pass
    return x
