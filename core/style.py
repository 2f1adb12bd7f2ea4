"""Neural style transfer (Gatys, Ecker & Bethge 2015): paint a photo in the style of another image.

A frozen ImageNet convnet (core.backbones) describes an image at several depths. Two of its
descriptions are what we match:

* **content**: the feature maps of one middle layer. Two images with close feature maps
  show the same things in the same places.
* **style**: the Gram matrices of several layers, G[i, j] = mean over positions of f_i * f_j.
  Averaging over positions throws away *where* things are and keeps *which features fire
  together*: colours, strokes, textures. Shallow layers give fine texture, deep layers larger
  motifs.

We then optimise the *pixels* of the output image (the network never changes) to minimise

    loss = content_weight * content + style_weight * style + tv_weight * total_variation

where total variation (squared differences of neighbouring pixels) removes high-frequency
speckle that the network barely sees. Every term is divided by the squared norm of its target,
so the weights mean the same thing for every layer, image size and backbone.

Extras that users of style-transfer tools ask for, all expressed as changes of the *targets*:
several style images blended (their Gram matrices averaged with weights), style strength
(the target slides from the content's own Gram matrices to the style's), style scale (the style
image's size relative to the output: bigger means bigger brush strokes), and keeping the
content's colours (transfer on luminance only, or first recolour the style image to the
content's colour statistics; Gatys et al. 2016, "Preserving color in neural artistic style
transfer").

Sizes well above 256 px are painted coarse to fine (Gatys et al. 2017, "Controlling perceptual
factors"): at about 256 px first, then enlarged and refined (see `level_sizes`). A start from noise
begins at 128 px and pulls harder on the content (`Recipe.noise_content_weight`).

`stylize()` is a generator: it yields the current image and the three loss terms every few
iterations, so a UI can show the painting appear and a Stop button can end it.

The optimisation runs where the backbone is (core.backbones.load_backbone puts it on the app's
device), always in float32, also on CUDA: no bf16 autocast here (see `stylize`). The pictures it
reports are on the CPU; the noise start is drawn from a CPU generator, so a seed means one start
on every device.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from core.data.images import pil_to_tensor
from core.dream import noise_image
from core.runtime import make_generator

MIN_SIZE, MAX_SIZE = 64, 1024  # output long side, pixels
MAX_ASPECT = 4.0                # longer/shorter side; wider images are centre-cropped
MIN_STYLE_SIDE = 32             # the deepest style layer still needs a few positions
MAX_ITERATIONS = 2000
COARSEST = 256                  # px: larger outputs are painted at about this size first (level_sizes)
COARSEST_FROM_NOISE = 128       # the photo emerges from noise in fewer, cheaper iterations at a small size
FINER_SHARE = 0.3               # of the iterations, shared by the finer levels
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "blend")
COLOUR_MODES = ("none", "luminance", "statistics")
ADAM_LR = 0.02                  # pixels live in [0, 1]: about 5 grey levels per step
# Iterations that reach a finished picture at 256 px (Lite0): from noise the picture has further to go.
DEFAULT_ITERATIONS = {"content": 100, "blend": 100, "noise": 200}


@dataclass(frozen=True)
class Recipe:
    """Which layers of a backbone carry content and style, and weights that look good with them."""
    content_layer: str
    style_layers: tuple[str, ...]
    style_layer_weights: tuple[float, ...]
    content_weight: float
    style_weight: float
    tv_weight: float
    # From the photo the pixels start at the content optimum and stay near it whatever its weight; from
    # noise they must be pulled there, and at content_weight the painting's texture wins everywhere.
    noise_content_weight: float


# Layers and weights per backbone; the Lite0 ones were checked by eye on several paintings.
RECIPES = {
    # Style from the stem and the ReLU6 expansion activations (6x wider than the block outputs,
    # which are linear bottlenecks), from fine (stride 2) to coarse (stride 16) texture.
    "efficientnet_lite0": Recipe(
        content_layer="block5",
        style_layers=("stem", "block2.expand", "block4.expand", "block6.expand", "block9.expand"),
        style_layer_weights=(1.0, 1.0, 1.0, 1.0, 1.0),
        content_weight=1.0, style_weight=1e3, tv_weight=50.0, noise_content_weight=30.0),
    # Deep Learning with Python: content block5_conv2, style block1..5_conv1 (after their ReLUs).
    "vgg19": Recipe(
        content_layer="relu5_2",
        style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        style_layer_weights=(1.0, 1.0, 1.0, 1.0, 1.0),
        content_weight=1.0, style_weight=1e3, tv_weight=50.0, noise_content_weight=30.0),  # as Lite0: not tuned
}


def recipe_for(backbone_name: str) -> Recipe:
    try:
        return RECIPES[backbone_name]
    except KeyError:
        raise ValueError(f"No style-transfer layers are defined for the backbone '{backbone_name}'; "
                         f"choose one of {', '.join(RECIPES)}.") from None


@dataclass(frozen=True)
class StyleSettings:
    """Everything a user can change. Weights and iterations left as None take the backbone's recipe
    and DEFAULT_ITERATIONS for the chosen start."""
    size: int = 256                      # long side of the output, pixels
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    iterations: int | None = None        # optimiser steps; an L-BFGS step costs 1-2 network evaluations
    optimizer: str = "lbfgs"
    init: str = "content"                # where the pixels start: content, noise, or a blend
    colour: str = "none"                 # keep the content's colours: none, luminance, statistics
    style_scale: float = 1.0             # style image long side / output long side
    strength: float = 1.0                # 0 = the content's own style, 1 = the style image's
    seed: int = 0                        # only matters for noise/blend init
    report_every: int = 10
    coarse_to_fine: bool = True          # False: every iteration at the full size (see level_sizes)


@dataclass
class StyleProgress:
    """One report from `stylize`: the image so far and the weighted loss terms."""
    image: torch.Tensor                  # [1, 3, H, W] in [0, 1], colours already restored
    iteration: int                       # optimiser steps done (never more than total)
    total: int
    losses: dict[str, float]             # weighted terms: content, style, tv
    evaluations: int = 0                 # network forward + backward passes (L-BFGS's line search adds some)
    notes: list[str] = field(default_factory=list)  # new since the last report: adjustments, early stops
    done: bool = False


# ---------------------------------------------------------------------------------- losses

def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, C]: G[i, j] = mean over the H*W positions of f_i * f_j.

    Dividing by the number of positions (not summing) makes the Gram matrix of a texture the
    same at any image size, so one style weight works at 256 and at 1024 pixels.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)             # F: one row of H*W responses per channel
    return flat @ flat.transpose(1, 2) / (h * w)     # G = F Fᵀ / (H W): how often channels i and j fire together


def relative_error(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||value - target||^2 / ||target||^2: 1 means "as far as zero is", whatever the layer's scale."""
    return (value - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)  # ‖v − t‖² / ‖t‖²


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return relative_error(features, target)  # ‖F^c(x) − F^c(photo)‖² / ‖F^c(photo)‖², one middle layer c


def style_loss(features: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor],
               layer_weights: dict[str, float]) -> torch.Tensor:
    """Weighted mean over layers of the relative Gram error."""
    total = sum(layer_weights.values())  # Σ w_l
    # L_style = Σ_l (w_l / Σ w) · ‖G^l(x) − G^l(style)‖² / ‖G^l(style)‖², the style's Grams computed once
    return sum(w / total * relative_error(gram_matrix(features[name]), target_grams[name])
               for name, w in layer_weights.items())


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (down and right)."""
    return ((image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()     # mean (x[i+1, j] − x[i, j])²
            + (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean())  # + mean (x[i, j+1] − x[i, j])²


# ---------------------------------------------------------------------------------- colour

# YIQ (NTSC): Y is luminance, I and Q carry the colour.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]])


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB -> [N, 3, H, W] grey (the luminance copied into all three channels)."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def with_colours_of(image: torch.Tensor, colour_source: torch.Tensor) -> torch.Tensor:
    """The luminance of `image` with the chrominance (I, Q) of `colour_source` (same size)."""
    yiq = torch.cat([rgb_to_yiq(image)[:, :1], rgb_to_yiq(colour_source)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def match_luminance(grey: torch.Tensor, reference_grey: torch.Tensor) -> torch.Tensor:
    """Shift and scale `grey` so its mean and spread equal those of `reference_grey`."""
    scaled = (grey - grey.mean()) / grey.std().clamp_min(1e-6) * reference_grey.std() + reference_grey.mean()
    return scaled.clamp(0, 1)


def _sqrt_psd(matrix: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-5).sqrt()
    return vectors @ torch.diag(1 / values if inverse else values) @ vectors.T


def match_colour_statistics(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Recolour `image` by an affine map of RGB so its colour mean and covariance equal `reference`'s."""
    def stats(x):
        pixels = x[0].reshape(3, -1)
        mean = pixels.mean(dim=1, keepdim=True)
        centred = pixels - mean
        return pixels, mean, centred @ centred.T / pixels.shape[1]
    pixels, mean, cov = stats(image)
    _, ref_mean, ref_cov = stats(reference)
    transform = _sqrt_psd(ref_cov) @ _sqrt_psd(cov, inverse=True)
    out = transform @ (pixels - mean) + ref_mean
    return out.reshape(image.shape).clamp(0, 1)


# ---------------------------------------------------------------------------------- inputs

def _limit_aspect(image: Image.Image, what: str, notes: list[str]) -> Image.Image:
    w, h = image.size
    if max(w, h) / min(w, h) <= MAX_ASPECT:
        return image
    if w > h:
        new_w, new_h = int(h * MAX_ASPECT), h
    else:
        new_w, new_h = w, int(w * MAX_ASPECT)
    left, top = (w - new_w) // 2, (h - new_h) // 2
    notes.append(f"the {what} image ({w}x{h}) is very elongated; its centre was cropped to {new_w}x{new_h}")
    return image.crop((left, top, left + new_w, top + new_h))


def _resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    w, h = image.size
    scale = long_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)


def fit_content(image: Image.Image, size: int, notes: list[str]) -> torch.Tensor:
    """The content image as a [1, 3, H, W] tensor whose long side is `size`."""
    image = _limit_aspect(image, "content", notes)
    return pil_to_tensor(_resize_long_side(image, size))


def fit_style(image: Image.Image, long_side: int, index: int, notes: list[str]) -> torch.Tensor:
    """A style image at `long_side` pixels, never so small that the deepest layer sees nothing."""
    image = _limit_aspect(image, f"style #{index}", notes)
    w, h = image.size
    long_side = max(long_side, round(MIN_STYLE_SIDE * max(w, h) / min(w, h)))
    if long_side > 2 * max(w, h):
        notes.append(f"style image #{index} is small ({w}x{h}) and was enlarged {long_side / max(w, h):.1f}x; "
                     "its strokes will look soft")
    return pil_to_tensor(_resize_long_side(image, long_side))


def _checked(settings: StyleSettings, recipe: Recipe, notes: list[str]) -> StyleSettings:
    """Fill in the recipe's weights, clamp every number into range, refuse unknown choices."""
    def clamp(name, value, lo, hi):
        if not lo <= value <= hi:
            notes.append(f"{name} {value:g} is out of range; using {min(max(value, lo), hi):g}")
        return min(max(value, lo), hi)

    for name, choices in (("optimizer", OPTIMIZERS), ("init", INITS), ("colour", COLOUR_MODES)):
        if getattr(settings, name) not in choices:
            raise ValueError(f"Unknown {name} '{getattr(settings, name)}'; choose one of {', '.join(choices)}.")
    weights = {}
    for term in ("content", "style", "tv"):
        value = getattr(settings, f"{term}_weight")
        default = recipe.noise_content_weight if term == "content" and settings.init == "noise" else \
            getattr(recipe, f"{term}_weight")
        value = default if value is None else float(value)
        if not value >= 0:  # also catches NaN
            raise ValueError(f"The {term} weight must be zero or positive, not {value}.")
        weights[f"{term}_weight"] = value
    if not any(weights.values()):
        raise ValueError("All three loss weights are zero, so there is nothing to optimise: "
                         "raise the content or style weight.")
    if settings.init == "noise" and 0 < weights["content_weight"] < recipe.noise_content_weight / 3:
        notes.append(f"from noise, content weight {weights['content_weight']:g} lets the painting's texture cover "
                     f"everything; about {recipe.noise_content_weight:g} brings the photo out")
    iterations = DEFAULT_ITERATIONS[settings.init] if settings.iterations is None else int(settings.iterations)
    return replace(
        settings, **weights,
        size=int(clamp("size", int(settings.size), MIN_SIZE, MAX_SIZE)),
        iterations=int(clamp("iterations", iterations, 1, MAX_ITERATIONS)),
        style_scale=clamp("style scale", float(settings.style_scale), 0.25, 2.0),
        strength=clamp("strength", float(settings.strength), 0.0, 1.0),
        report_every=max(1, int(settings.report_every)))


def _blend_weights(styles: Sequence[tuple[Image.Image, float]]) -> list[float]:
    if not styles:
        raise ValueError("Upload a style image (or pick an example).")
    weights = []
    for _, weight in styles:
        weight = float(weight or 0)
        weights.append(weight if weight > 0 else 0.0)  # negative and NaN count as zero
    if sum(weights) <= 0:
        raise ValueError("Every style image has blend weight zero: give at least one a weight above zero.")
    return [w / sum(weights) for w in weights]


# ---------------------------------------------------------------------------------- the loop

def initial_image(content: torch.Tensor, init: str, generator: torch.Generator) -> torch.Tensor:
    """Starting from the content converges in far fewer iterations; noise gives a freer painting.

    The noise is smooth (grey with soft blotches of colour), not per-pixel: the network barely sees
    pixel-level noise, so the optimiser would spend its iterations removing it through the TV term."""
    if init == "content":
        return content.clone()
    noise = noise_image(*content.shape[-2:], generator).to(content)
    return noise if init == "noise" else 0.6 * content + 0.4 * noise


def level_sizes(size: int, coarsest: int = COARSEST) -> list[int]:
    """Long side of each level, coarsest first. Sizes well above `coarsest` are painted coarse to fine
    (Gatys et al. 2017): the network's receptive fields are fixed in pixels, so matched directly at
    512 px the Gram matrices only describe the painting's fine grain and its larger motifs never form;
    painted at 256 px first, then enlarged and refined, the result is as stylised as at 256 px."""
    sizes = [size]
    while sizes[0] > 1.5 * coarsest:
        sizes.insert(0, max(coarsest, round(sizes[0] / 2)))
    return sizes


def level_iterations(total: int, levels: int) -> list[int]:
    """Most iterations at the cheap coarsest level; the finer levels only add detail."""
    finer = [max(1, round(FINER_SHARE * total / (levels - 1)))] * (levels - 1) if levels > 1 else []
    return [total - sum(finer), *finer]


def _targets(backbone, content, styles, blend, settings, recipe, side: int, notes: list[str]) -> dict:
    """The content image and the content features and style Gram matrices to match, at `side` px."""
    device = next(backbone.parameters()).device
    content_rgb = fit_content(content, side, notes).to(device)
    style_long_side = round(settings.style_scale * max(content_rgb.shape[-2:]))
    style_images = [fit_style(image, style_long_side, i + 1, notes).to(device)
                    for i, (image, _) in enumerate(styles)]

    # Colour preservation works on the targets: the optimisation then only has to get the
    # luminance (or the recoloured style) right.
    content_target = content_rgb
    if settings.colour == "luminance":
        content_target = luminance(content_rgb)
        style_images = [match_luminance(luminance(s), content_target) for s in style_images]
    elif settings.colour == "statistics":
        style_images = [match_colour_statistics(s, content_rgb) for s in style_images]

    with torch.no_grad():
        content_features = backbone(content_target, [recipe.content_layer, *recipe.style_layers])
        style_features = [backbone(s, recipe.style_layers) for s in style_images]
        grams = {name: settings.strength * sum(b * gram_matrix(f[name]) for b, f in zip(blend, style_features))
                 + (1 - settings.strength) * gram_matrix(content_features[name])
                 for name in recipe.style_layers}
    return {"content_rgb": content_rgb, "content_target": content_target,
            "content_features": content_features[recipe.content_layer], "grams": grams}


def stylize(backbone, content: Image.Image, styles: Sequence[tuple[Image.Image, float]],
            settings: StyleSettings = StyleSettings(), recipe: Recipe | None = None) -> Iterator[StyleProgress]:
    """Optimise an image to have `content`'s content and the blended style of `styles`.

    backbone: a core.backbones.Backbone (anything with .name and backbone(images, layers) -> dict).
    content, styles: RGB PIL images already cleaned by core.data.images.prepare_image; each
    style comes with its blend weight. Yields a StyleProgress every `report_every` iterations
    (at the current level's size, see level_sizes); the last one has done=True and the full size.
    Raises ValueError (lazily, on the first next()) for bad input.
    `recipe` overrides the backbone's layers and default weights (RECIPES).
    """
    recipe = recipe or recipe_for(backbone.name)
    notes: list[str] = []
    settings = _checked(settings, recipe, notes)
    blend = _blend_weights(styles)
    sizes = level_sizes(settings.size, COARSEST_FROM_NOISE if settings.init == "noise" else COARSEST) \
        if settings.coarse_to_fine else [settings.size]
    budgets = level_iterations(settings.iterations, len(sizes))
    if min(budgets) < 1:  # too few iterations to share: all of them at the full size
        sizes, budgets = sizes[-1:], [settings.iterations]
    if len(sizes) > 1:
        notes.append("painted coarse to fine (a small painting first, then enlarged and refined): "
                     + ", then ".join(f"{side} px ({n} iterations)" for side, n in zip(sizes, budgets)))
    style_weights = dict(zip(recipe.style_layers, recipe.style_layer_weights))
    layers = [recipe.content_layer, *recipe.style_layers]
    last = {"evaluations": 0, "iterations": 0}
    pixels = None
    reported_notes = 0

    for level, (side, budget) in enumerate(zip(sizes, budgets)):
        # Notes about the inputs (crops, enlargements) are said once, for the full size.
        targets = _targets(backbone, content, styles, blend, settings, recipe, side,
                           notes if level == len(sizes) - 1 else [])
        if pixels is None:
            start = initial_image(targets["content_target"], settings.init, make_generator(settings.seed))
        else:  # the coarser level's painting, enlarged: the finer level only adds detail
            start = F.interpolate(pixels.detach(), size=targets["content_target"].shape[-2:], mode="bicubic",
                                  align_corners=False).clamp(0, 1)
        pixels = start.requires_grad_(True)
        # A level that converged early leaves its iterations to the next; the last one ends at the total.
        goal = last["iterations"] + budget if level < len(sizes) - 1 else settings.iterations

        def loss_terms(image: torch.Tensor, targets=targets) -> dict[str, torch.Tensor]:
            features = backbone(image, layers)
            return {"content": settings.content_weight * content_loss(features[recipe.content_layer],
                                                                      targets["content_features"]),
                    "style": settings.style_weight * style_loss(features, targets["grams"], style_weights),
                    "tv": settings.tv_weight * total_variation(image)}

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            terms = loss_terms(pixels)
            total = sum(terms.values())
            total.backward()
            last.update({k: v.item() for k, v in terms.items()}, evaluations=last["evaluations"] + 1)
            if "first_total" not in last:
                last["first_total"] = total.item()
            return total

        def report(done: bool = False, content_rgb=targets["content_rgb"]) -> StyleProgress:
            nonlocal reported_notes
            image = pixels.detach().clamp(0, 1)
            if settings.colour == "luminance":
                image = with_colours_of(image, content_rgb)
            new_notes, reported_notes = notes[reported_notes:], len(notes)
            return StyleProgress(image=image.cpu(), iteration=last["iterations"], total=settings.iterations,
                                 losses={k: last[k] for k in ("content", "style", "tv")},
                                 evaluations=last["evaluations"], notes=new_notes, done=done)

        # Float32, no autocast: L-BFGS's curvature estimate comes from differences of successive
        # gradients and its line search compares nearly equal losses, both lost in bf16's rounding.
        # Measured with bf16 autocast (CPU, Lite0, 256 px, final pictures scored in float32): 8 % higher
        # loss after 100 iterations, and a 300-iteration run stopped at 275, unable to lower the loss.
        if settings.optimizer == "lbfgs":
            # The whole image is one parameter vector: L-BFGS's curvature estimate gets there in
            # ~10x fewer evaluations than Adam. The line search keeps steps sane whatever the weights.
            optimizer = torch.optim.LBFGS([pixels], lr=1.0, max_iter=settings.report_every,
                                          history_size=20, line_search_fn="strong_wolfe")
        else:
            optimizer = torch.optim.Adam([pixels], lr=ADAM_LR)

        level_done, level_start = False, last["iterations"]
        while not level_done:
            chunk = min(settings.report_every, goal - last["iterations"])
            if settings.optimizer == "lbfgs":
                # max_iter counts L-BFGS steps; the evaluation cap only guards against a runaway line search.
                max_eval = 4 * chunk + 10
                optimizer.param_groups[0].update(max_iter=chunk, max_eval=max_eval)
                evaluations_before = last["evaluations"]
                optimizer.step(closure)
                steps = level_start + optimizer.state[pixels].get("n_iter", 0) - last["iterations"]
                last["iterations"] += steps
                # Fewer steps than asked, and not for lack of evaluations: nothing left to improve.
                converged = steps < chunk and last["evaluations"] - evaluations_before < max_eval
            else:
                for _ in range(chunk):
                    optimizer.step(closure)
                    with torch.no_grad():
                        pixels.clamp_(0, 1)
                last["iterations"] += chunk
                converged = False
            if converged and level == len(sizes) - 1:
                already = last["first_total"] < 1e-9
                notes.append(f"L-BFGS stopped after {last['iterations']} of {settings.iterations} iterations: "
                             + ("the loss was zero from the start, so with these weights the starting picture "
                                "is already the answer (raise the style weight or strength)" if already else
                                "the loss could not be lowered any further"))
            level_done = converged or last["iterations"] >= goal
            yield report(level_done and level == len(sizes) - 1)
