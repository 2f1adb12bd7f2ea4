"""DeepDream: change an image so that chosen layers of an ImageNet convnet fire harder.

The recipe (Mordvintsev et al. 2015; Chollet, *Deep Learning with Python*, ch. 12):

1. Pick layers and weights. The objective is the weighted sum of the mean squared activations of
   those layers: whatever patterns the layers detect, a little, get amplified.
2. Gradient *ascent* on the pixels (the network's weights never change). The gradient is divided by
   its mean absolute value, so `step` is "how far the average pixel moves per iteration", whatever
   the network and layer.
3. Work over octaves: dream on a small copy first, enlarge it, dream again. Patterns found at a
   coarse scale grow fine detail at the next one.
4. Enlarging blurs, so before each larger octave the detail the photo lost by shrinking is added
   back ("lost-detail re-injection").
5. Beyond the book: a random shift (jitter, `torch.roll`) before every step, so the network's
   stride grid does not print a checkerboard; `max_loss` stops an octave early before the picture
   turns to mush; start from noise; a guide image; zoom animations.

`dream()` is a generator that yields a `DreamUpdate` after every iteration, so a UI can show the
picture growing and stop it at any time. Randomness (jitter, noise) comes only from the CPU
`torch.Generator` passed in: the same seed gives the same dream, on every device.

The dream runs where the backbone is (core.backbones.load_backbone puts it on the app's device);
images go in and come out on the CPU. On CUDA the network runs under bf16 autocast
(core.runtime.autocast; GENLAB_FP32=1 turns it off): measured with bf16 autocast on a CPU, the
objective climbs as high as in float32 (within 4 % after 20 steps). Gradient ascent amplifies any
tiny difference, though: a photo changed by 1e-6 gives a visibly different dream after about ten
steps, in float32 too. So a GPU's dream follows the CPU's for the first steps only (tests:
cuda_checks_dream), then grows its own, equally valid, patterns; on one device a seed is exact.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from core.backbone_layers import DREAM_LAYERS, OFFLINE_DEFAULT
from core.backbones import Backbone
from core.runtime import autocast

MAX_OCTAVES, MAX_ITERATIONS, MAX_JITTER = 8, 200, 64


@dataclass
class DreamConfig:
    layers: dict[str, float] = field(default_factory=lambda: dict(DREAM_LAYERS[OFFLINE_DEFAULT]))
    octaves: int = 3             # how many sizes to dream at
    octave_scale: float = 1.4    # each octave is this much larger than the one before
    iterations: int = 20         # gradient-ascent steps per octave
    step: float = 0.02           # mean absolute pixel change per step (pixels are in [0, 1])
    max_loss: float | None = None  # stop an octave once the objective passes this
    jitter: int = 16             # random shift in pixels before each step


def default_config(backbone_name: str) -> DreamConfig:
    return DreamConfig(layers=dict(DREAM_LAYERS.get(backbone_name, DREAM_LAYERS[OFFLINE_DEFAULT])))


@dataclass
class DreamUpdate:
    image: Tensor          # [1, 3, h, w] in [0, 1] at the current octave's size
    octave: int            # 1-based
    iteration: int         # 1-based within the octave
    loss: float            # objective before this step
    octave_sizes: list[tuple[int, int]]  # (height, width), smallest first
    progress: float        # fraction of all planned steps done
    note: str = ""         # e.g. why an octave stopped early


def check_config(config: DreamConfig, backbone: Backbone) -> DreamConfig:
    """Refuse settings that cannot work, with a sentence saying why."""
    if config.iterations < 1:
        raise ValueError("Choose at least one iteration per octave (0 would return the photo unchanged).")
    if not 1 <= config.octaves <= MAX_OCTAVES:
        raise ValueError(f"Choose between 1 and {MAX_OCTAVES} octaves.")
    if config.iterations > MAX_ITERATIONS:
        raise ValueError(f"Choose at most {MAX_ITERATIONS} iterations per octave.")
    if not (math.isfinite(config.octave_scale) and 1.0 < config.octave_scale <= 3.0):
        raise ValueError("The octave scale must be above 1 (each octave larger than the last) and at most 3.")
    if not (math.isfinite(config.step) and 0 < config.step <= 1):
        raise ValueError("The step size must be above 0 and at most 1.")
    if not 0 <= config.jitter <= MAX_JITTER:
        raise ValueError(f"Jitter must be between 0 and {MAX_JITTER} pixels.")
    layers = {name: float(w) for name, w in config.layers.items() if w}
    if not layers:
        raise ValueError("Choose at least one layer with a non-zero weight.")
    unknown = [name for name in layers if name not in backbone.layer_names]
    if unknown:
        raise ValueError(f"{backbone.name} has no layer {', '.join(unknown)}; "
                         f"choose from {', '.join(backbone.layer_names)}.")
    return replace(config, layers=layers)


def octave_sizes(height: int, width: int, octaves: int, scale: float, min_side: int = 32) -> list[tuple[int, int]]:
    """(height, width) of each octave, smallest first, ending at the full size.

    No octave goes below `min_side` pixels (the network's smallest input), so very small images
    get fewer distinct sizes.
    """
    sizes = []
    for i in reversed(range(octaves)):
        shrink = max(scale ** -i, min_side / min(height, width))
        size = (round(height * shrink), round(width * shrink))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    return sizes


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def features(backbone: Backbone, image: Tensor, layers: list[str]) -> dict[str, Tensor]:
    """The layers' activations, in float32 whatever precision the network ran in (see the module docstring)."""
    with autocast(image.device):
        found = backbone(image, layers)
    return {name: activation.float() for name, activation in found.items()}


def _core(activation: Tensor) -> Tensor:
    """Drop a 2-pixel border when the map is big enough: padding makes edges light up regardless of content."""
    return activation[..., 2:-2, 2:-2] if min(activation.shape[-2:]) > 8 else activation


def activation_objective(activations: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Chollet's loss: the weighted sum of each layer's mean squared activation."""
    # L(x) = sum_l w_l * mean(a_l(x)^2), each map a_l without its border
    return sum(weight * _core(activations[name]).square().mean() for name, weight in weights.items())


def guide_objective(activations: dict[str, Tensor], guide: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Grow what the guide image contains: every position's feature vector moves toward the guide
    feature it already resembles most (the best-matching dot product), instead of just growing louder."""
    total = 0.0
    for name, weight in weights.items():
        features = activations[name][0].flatten(1)    # [C, positions]
        targets = guide[name][0].flatten(1)           # [C, guide positions]
        similarity = features.T @ targets             # [positions, guide positions]
        total = total + weight * similarity.max(dim=1).values.mean()
    return total


def ascent_step(backbone: Backbone, image: Tensor, objective, step: float, jitter: int,
                generator: torch.Generator) -> tuple[Tensor, float]:
    """One jittered gradient-ascent step. Returns the new image and the objective before the step."""
    # A random shift (dy, dx) each step, so no fixed pixel grid of the network is amplified.
    dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
    shifted = torch.roll(image, (dy, dx), dims=(2, 3)).detach().requires_grad_(True)  # x, jittered
    loss = objective(shifted)                                                           # L(x)
    (grad,) = torch.autograd.grad(loss, shifted)                                        # g = dL/dx
    # Normalised gradient: `step` means the same pixel change for every layer and network.
    grad = grad / grad.abs().mean().clamp_min(1e-12)                                    # g / mean|g|
    # x + eta * g: ascent (plus, not minus), kept a picture in [0, 1]
    moved = (shifted.detach() + step * grad).clamp(0, 1)
    return torch.roll(moved, (-dy, -dx), dims=(2, 3)), float(loss.detach())


def make_objective(backbone: Backbone, weights: dict[str, float], guide_features: dict[str, Tensor] | None):
    layers = list(weights)
    if guide_features is None:
        return lambda image: activation_objective(features(backbone, image, layers), weights)
    return lambda image: guide_objective(features(backbone, image, layers), guide_features, weights)


def guide_features_at(backbone: Backbone, guide: Tensor, layers: list[str], longer_side: int) -> dict[str, Tensor]:
    """The guide's activations with the guide scaled to the octave's size, so feature scales match."""
    h, w = guide.shape[-2:]
    shrink = longer_side / max(h, w)
    size = (max(32, round(h * shrink)), max(32, round(w * shrink)))
    with torch.no_grad():
        return features(backbone, resize(guide, size), layers)


def dream(backbone: Backbone, image: Tensor, config: DreamConfig, generator: torch.Generator,
          guide: Tensor | None = None) -> Iterator[DreamUpdate]:
    """DeepDream `image` ([1, 3, H, W] in [0, 1]); yields after every step. The last update's
    image has the input's size. With `guide`, grow the guide image's features instead.
    Every update's image is on the CPU, wherever the backbone is."""
    config = check_config(config, backbone)
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"Expected one RGB image shaped [1, 3, H, W], got {list(image.shape)}.")
    height, width = image.shape[-2:]
    if min(height, width) < 32:
        raise ValueError(f"The image is {width}x{height} pixels; it needs at least 32 pixels on each side.")
    device = backbone.mean.device
    original = image.detach().to(device)
    guide = guide.to(device) if guide is not None else None
    sizes = octave_sizes(height, width, config.octaves, config.octave_scale)
    total_steps, done = len(sizes) * config.iterations, 0

    current = resize(original, sizes[0])  # x_1: the photo at the smallest octave size
    for octave, size in enumerate(sizes, start=1):
        if octave > 1:
            # Enlarging the dream blurs it; put back the detail the photo itself lost by being
            # shrunk to the previous octave and enlarged again.
            # x_k+1 = up(x_k) + (photo_k+1 - up(photo_k))
            lost_detail = resize(original, size) - resize(resize(original, sizes[octave - 2]), size)
            current = (resize(current, size) + lost_detail).clamp(0, 1)
        guide_features = guide_features_at(backbone, guide, list(config.layers), max(size)) if guide is not None else None
        objective = make_objective(backbone, config.layers, guide_features)
        for iteration in range(1, config.iterations + 1):
            current, loss = ascent_step(backbone, current, objective, config.step, config.jitter, generator)
            done += 1
            note = ""
            if config.max_loss is not None and loss > config.max_loss:
                note = f"octave {octave} stopped after {iteration} iterations: objective {loss:.3g} passed max loss {config.max_loss:g}"
                done = octave * config.iterations
            yield DreamUpdate(current.detach().cpu(), octave, iteration, loss, sizes, done / total_steps, note)
            if note:
                break


def run_dream(backbone: Backbone, image: Tensor, config: DreamConfig, generator: torch.Generator,
              guide: Tensor | None = None) -> tuple[Tensor, list[float]]:
    """The whole dream at once: (final image, objective per step)."""
    losses, last = [], None
    for last in dream(backbone, image, config, generator, guide):
        losses.append(last.loss)
    return last.image, losses


def noise_image(height: int, width: int, generator: torch.Generator) -> Tensor:
    """A grey canvas with faint smooth noise: something for the network to start seeing things in."""
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    return (0.5 + 0.2 * (F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False) - 0.5)).clamp(0, 1)


def activation_map(backbone: Backbone, image: Tensor, weights: dict[str, float]) -> Tensor:
    """Where the chosen layers fire: the weighted mean squared activation at each position, enlarged
    to the image's size ([H, W]). Its mean is the objective; comparing the map before and after a
    dream, on one colour scale, shows what got amplified and where. Computed where the backbone is;
    returned on the CPU."""
    with torch.no_grad():
        activations = features(backbone, image.to(backbone.mean.device), list(weights))
        energy = sum(w * resize(activations[n].square().mean(1, keepdim=True), image.shape[-2:])
                     for n, w in weights.items())
    return energy[0, 0].cpu()


def zoom_in(image: Tensor, zoom: float) -> Tensor:
    """Crop the centre 1/zoom of the picture and enlarge it back to full size."""
    h, w = image.shape[-2:]
    ch, cw = max(8, round(h / zoom)), max(8, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(image[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear", align_corners=False)


def zoom_dream(backbone: Backbone, image: Tensor, config: DreamConfig, frames: int, zoom: float,
               generator: torch.Generator) -> Iterator[tuple[int, Tensor]]:
    """The endless-zoom animation: dream, zoom in a little, dream on the result, ... Yields `frames`
    (frame index, frame) pairs, frame 0 being the input. Each frame feeds on the last one, so a
    short dream per frame (one octave, a few iterations) is enough."""
    if not 2 <= frames <= 300:
        raise ValueError("Choose between 2 and 300 frames.")
    if not (math.isfinite(zoom) and 1.0 <= zoom <= 2.0):
        raise ValueError("The zoom per frame must be between 1 (none) and 2.")
    check_config(config, backbone)
    current = image.detach()
    yield 0, current
    for index in range(1, frames):
        current, _ = run_dream(backbone, zoom_in(current, zoom), config, generator)
        yield index, current


def save_animation(frames: list, path, fps: float = 12) -> str:
    """Frames (PIL images) to a GIF, or to an MP4 when the path ends in .mp4 and imageio can write video."""
    from core.data.images import save_gif

    path = str(path)
    if not path.lower().endswith(".mp4"):
        return save_gif(frames, path, seconds_per_frame=1 / fps)
    import imageio.v3 as iio
    import numpy as np

    try:
        iio.imwrite(path, np.stack([np.asarray(f.convert("RGB")) for f in frames]), fps=fps, codec="libx264")
    except Exception as exc:  # imageio raises many kinds of error when no video backend is installed
        raise ValueError(f"MP4 needs a video writer (pip install imageio-ffmpeg); choose GIF instead ({exc.__class__.__name__}).") from None
    return path
