"""PixelCNN tab: images drawn one pixel at a time, completion of a partly hidden image, and why it
works (each pixel's predicted distribution, receptive fields with and without the blind spot, masks).

Widgets and events only; the models, masks and sampling live in core.pixelcnn.
Nothing heavy is imported until a handler runs, so the app starts fast.
"""
from __future__ import annotations

import functools
import math
import time

import gradio as gr

from core.registry import read_card
from core.runtime import MAX_SEED
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (PALETTE, caption, figure_to_image, image_upload, number, on_gpu, picture, pyplot, queue,
                         shipped_choices, user_errors)

TAB = "pixelcnn"
VIEW = "pixelcnn-view"  # clicks and previews are cheap: their own, wider slot
PLAIN, GATED = "plain_fashion16_k4", "gated_fashion16_k4"
MODEL_LABELS = {PLAIN: "plain PixelCNN (the book's) · 16×16, 4 levels",
                GATED: "gated PixelCNN (no blind spot) · 16×16, 4 levels"}
SHORT = {PLAIN: "plain PixelCNN", GATED: "gated PixelCNN"}
MAKE = {PLAIN: "python -m core.train pixelcnn --model plain --channels 64 --blocks 5 --epochs 100 --minutes 32 --threads 1",
        GATED: "python -m core.train pixelcnn --model gated --channels 32 --blocks 5 --epochs 100 --minutes 32 --threads 1"}
MAX_SAMPLES = 16        # a 4×4 grid: 16 network calls per row of pixels
MAX_COMPLETIONS = 8
MAX_TEMPERATURE = 2.0
TEST_IMAGES = 10_000    # Fashion-MNIST's test split
GRID_SCALE = 6          # a 16-px sample is shown at 96 px, nearest-neighbour: every pixel visible
TILE_SCALE = 8          # completions: 128 px each
CLICK_SCALE = 16        # the clickable image: 256 px, one pixel = a 16×16 block
MIN_UPLOAD_SIDE = 8     # smaller pictures hold too little to complete (a 1×1 image is one grey)
PENDING = ((0.62, 0.77, 0.95), (0.53, 0.69, 0.90))  # not drawn yet, or hidden: a pale blue checkerboard
GPU_SECONDS = 60        # ZeroGPU: 16 samples (256 network calls) take a few seconds on a GPU
INSPECT_GPU_SECONDS = 15  # one forward pass and two backward passes


def _rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


# receptive-field colours (colour-blind safe: blue, orange and vermillion from tabs.common.PALETTE, greys)
AFTER, SEES, BLIND, ITSELF, BEYOND = ((0.80, 0.80, 0.80), _rgb(PALETTE[0]), _rgb(PALETTE[1]), _rgb(PALETTE[5]),
                                      (0.98, 0.96, 0.90))

INTRO = """**An image as a sequence of pixels.** The network predicts each pixel, in raster order (row by row, left to right), from
the pixels before it, as a softmax over K = 4 grey levels; sampling draws a pixel, feeds it back and draws the next."""

LESSON = Lesson(
    tab=TAB, main="pixelcnn-generate", result="pixelcnn-samples",
    chapters="*Generative Deep Learning* ch. 5 (autoregressive models: PixelCNN) · van den Oord et al. 2016 "
             "(the gated PixelCNN)",
    equations=(r"Chain rule: $p(x) = \prod_{i=1}^{H W} p(x_i \mid x_1, \dots, x_{i-1})$ · "
               r"each factor a softmax over the K levels, sampled at temperature T: "
               r"$p_T(x_i = k \mid x_{<i}) \propto \exp(\ell_{ik} / T)$ · test loss: "
               r"$-\log_2 p(x) / (H W)$ bits per pixel, exact"),
    try_this=(
        Try("T = 0 (greedy)", {"temperature": 0},
            "Every sample is black: at each pixel the likeliest level is the background, so always taking the "
            "likeliest pixel never starts a garment. The most likely next pixel is not a typical image."),
        Try("T = 0.5", {"temperature": 0.5},
            "Sharper softmaxes: the shapes that do appear are clean, but many samples stay empty or stop part "
            "way, because background keeps winning. Low temperature trades variety for safety."),
        Try("T = 2", {"temperature": 2},
            "Flattened softmaxes: unlikely levels are drawn often and each bad pixel is fed back as if true, so "
            "the errors compound into speckle."),
        Try("gated model", {"model": GATED, "temperature": 1},
            "The gated PixelCNN sees every earlier pixel (no blind spot): fewer broken garments, a slightly "
            "lower test loss (model card), and the same 256 network calls per grid, each slower (two stacks)."),
    ),
    misconceptions=(
        ("A PixelCNN paints the whole image at once, like a GAN.",
         "Training is parallel (the masks let one pass compute every pixel's prediction), but sampling is "
         "sequential: one network call per pixel, 256 for a 16×16 image, however many images share the batch."),
        ("The mask hides the future only in the first layer.",
         "Every layer is masked. Mask A (first layer) also hides the centre pixel itself; mask B (later layers) "
         "lets the centre through, because by then it holds features of earlier pixels only."),
        ("Temperature 0 gives the best image.",
         "It gives the single likeliest choice at each step, which here is black background all the way: "
         "greedy choices add up to an unusual image, not the most typical one."),
        ("A deep enough plain PixelCNN sees every earlier pixel.",
         "Stacked masked 3×3 kernels never reach a wedge above and to the right (the blind spot), however deep; "
         "the gated PixelCNN's vertical and horizontal stacks fix that."),
    ),
    code=(Code("the masked convolution", "core/pixelcnn.py", ("raster_mask", "MaskedConv2d.forward"),
               r"$y_i = \sum_j (W \odot M)_{j}\, x_{i+j}$ with $M = 0$ on pixel $i$ (mask A) and after it, so "
               r"logits $\ell_i$ depend only on $x_{<i}$: $p(x) = \prod_i \mathrm{softmax}(\ell_i)_{x_i}$"),
          Code("the sampling loop", "core/pixelcnn.py", ("pixel_distribution", "complete"),
               r"for $i = 1 \dots H W$ in raster order: $x_i \sim \mathrm{softmax}(\ell_i(x_{<i}) / T)$, "
               r"then feed $x_i$ back (one network call per pixel)")),
)


# --- shipped models ---------------------------------------------------------------------------

def model_choices() -> list[tuple[str, str]]:
    return shipped_choices(TAB, MODEL_LABELS)  # the book's plain model first: the default


def missing_models() -> list[str]:
    """One sentence per expected model that is not shipped (yet), saying how to make it."""
    shipped = {name for _, name in model_choices()}
    return [f"The {SHORT[name]} is not shipped yet, so its views are missing: make it with `{MAKE[name]}`."
            for name in (PLAIN, GATED) if name not in shipped]


def _check(name) -> str:
    if name not in {value for _, value in model_choices()}:
        if not model_choices():
            raise ValueError(f"No PixelCNN is trained yet: make one with `{MAKE[PLAIN]}`.")
        raise ValueError(f"There is no shipped PixelCNN called {name!r}; pick one from the list.")
    return name


def _model(name):
    from core import pixelcnn

    return pixelcnn.load_model(_check(name))


def _shape(name) -> tuple[int, int]:
    """(image size, levels) from the card: previews and clicks need no model (nor, on ZeroGPU, a GPU)."""
    config = _card(_check(name)).get("config", {})
    return int(config.get("image_size", 16)), int(config.get("levels", 4))


def _card(name) -> dict:
    try:
        return read_card(TAB, name)
    except (OSError, ValueError):
        return {}


def _bits_per_dim(name) -> str:
    bpd = (_card(name).get("metrics") or {}).get("test_bits_per_dim")
    return f"{bpd:.3f} bits per pixel" if isinstance(bpd, (int, float)) else "not measured yet (still training)"


def model_card(name) -> str:
    card = _card(name) if name else {}
    if not card:
        return ""
    config = card.get("config", {})
    return (f"**{MODEL_LABELS.get(name, name)}**: {config.get('channels')} channels, {config.get('blocks')} "
            f"{'gated layers' if config.get('kind') == 'gated' else 'residual blocks'}, "
            f"{card.get('parameters', 0):,} parameters, {card.get('steps', 0):,} steps "
            f"({card.get('wall_time_s', 0) / 60:.0f} min on {card.get('hardware', '?')}). Test likelihood: "
            f"{_bits_per_dim(name)}. Made with `{card.get('command')}`")


# --- argument checks ----------------------------------------------------------------------------

def _temperature(value) -> tuple[float, str]:
    t = number(value, 1.0, 0.0, MAX_TEMPERATURE)
    note = ""
    try:
        if float(value) != t:
            note = f"Temperature set to {t:g} (0 = greedy … {MAX_TEMPERATURE:g}). "
    except (TypeError, ValueError):
        note = f"Temperature {value!r} is not a number: {t:g} used. "
    if t == 0:
        note += "T = 0 is greedy: each pixel takes its likeliest level, so every sample is the same image. "
    return t, note


def _count(value, default: int, high: int, what: str) -> tuple[int, str]:
    n = number(value, default, 1, high + 1, whole=True)
    if n > high:
        return high, f"Limited to {high} {what} per run (a CPU lab). "
    return n, ""


# --- pictures -----------------------------------------------------------------------------------

def _render(levels, k: int, pending=None):
    """Levels [N, 1, H, W] -> RGB [N, 3, H, W] in [0, 1]; `pending` (bool, broadcastable) pale blue."""
    import torch

    from core.pixelcnn import to_unit

    rgb = to_unit(levels, k).repeat(1, 3, 1, 1)
    if pending is not None:
        h, w = rgb.shape[-2:]
        checker = (torch.arange(h)[:, None] + torch.arange(w)) % 2
        colour = torch.tensor(PENDING)[checker].permute(2, 0, 1)[None].expand_as(rgb)
        rgb = torch.where(pending.expand(len(rgb), 1, -1, -1).expand_as(rgb), colour, rgb)
    return rgb


def _enlarge(image, factor: int):
    from PIL import Image

    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _grid(rgb, columns: int, scale: int = GRID_SCALE):
    from core.data.images import image_grid

    return _enlarge(image_grid(rgb, nrow=columns, padding=1), scale)


def _tile(rgb, scale: int = TILE_SCALE):
    from core.data.images import tensor_to_pil

    return _enlarge(tensor_to_pil(rgb), scale)


# --- generate -----------------------------------------------------------------------------------

def generate(name, n, temperature, seed):
    """New images, pixel by pixel. Streams (grid, status) after every finished row; the rows not
    drawn yet are pale blue."""
    import torch

    from core import pixelcnn
    from core.runtime import clamp_seed, make_generator

    model = _model(name)
    n, note = _count(n, MAX_SAMPLES, MAX_SAMPLES, "samples")
    t, t_note = _temperature(temperature)
    note += t_note
    size, k = model.config.image_size, model.config.levels
    columns = math.ceil(math.sqrt(n))
    rows = torch.arange(size).view(1, 1, size, 1).expand(1, 1, size, size)
    start = time.monotonic()
    yield _grid(_render(torch.zeros(n, 1, size, size, dtype=torch.long), k, rows >= 0), columns), \
        note + f"Row 0 of {size}…"
    for row, canvas in pixelcnn.sample(model, n, make_generator(seed), t):
        elapsed = time.monotonic() - start
        calls = (row + 1) * size  # one network call per pixel position (all n images at once)
        done = row == size - 1
        status = (f"Done: {n} samples in {elapsed:.1f} s, {calls} network calls (one per pixel), seed "
                  f"{clamp_seed(seed)}, T = {t:g}." if done else
                  f"Row {row + 1} of {size} · {elapsed:.1f} s · {calls} network calls so far.")
        yield _grid(_render(canvas, k, None if done else rows > row), columns), note + status


# --- complete -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _test_set(size: int, levels: int):
    """Fashion-MNIST test images as levels [N, 1, size, size] and their labels; read once per
    process and only read afterwards."""
    from core.data.fashion_mnist import load_fashion_mnist
    from core.pixelcnn import load_levels

    try:
        _, labels = load_fashion_mnist("test")
        return load_levels("test", size, levels), labels
    except FileNotFoundError as exc:
        raise ValueError(f"The Fashion-MNIST test images are not here, so upload an image instead ({exc})") from None


def _upload_levels(upload, size: int, levels: int):
    """Any uploaded image -> levels [1, 1, size, size] and notes: grey, centre-cropped, quantised,
    inverted when its border is light (Fashion-MNIST's clothes are light on black)."""
    from core.data.images import as_clothes
    from core.pixelcnn import quantise

    x, notes = as_clothes(upload, size, MIN_UPLOAD_SIDE)
    return quantise(x, levels), notes


def _source(index, upload, size: int, levels: int):
    """The image to complete or inspect -> (levels [1, 1, H, W], its name, true label or None, notes)."""
    if upload is not None:
        canvas, notes = _upload_levels(upload, size, levels)
        return canvas, "your image", None, notes
    images, labels = _test_set(size, levels)
    i = number(index, 0, 0, len(images) - 1, whole=True)
    return images[i:i + 1], f"test image {i}", int(labels[i]), []


def _hidden(size: int, row_from, row_to, col_from, col_to):
    """The hidden rectangle as a bool [H, W]: rows row_from ≤ r < row_to, columns likewise (the ends
    are swapped if given the wrong way round)."""
    import torch

    r0, r1 = sorted(number(v, d, 0, size, whole=True) for v, d in ((row_from, size // 2), (row_to, size)))
    c0, c1 = sorted(number(v, d, 0, size, whole=True) for v, d in ((col_from, 0), (col_to, size)))
    hidden = torch.zeros(size, size, dtype=torch.bool)
    hidden[r0:r1, c0:c1] = True
    return hidden


@functools.lru_cache(maxsize=None)
def _classifier():
    from core.metrics.classifiers import load_fashion_classifier

    return load_fashion_classifier()


def classify(levels, k: int) -> list[tuple[str, float]] | None:
    """The shipped Fashion-MNIST classifier's (class, probability) for each 16×16 image, or None if it
    is not shipped. It reads 28×28 images in [0, 1] (padded to 32 by fashion_input): upsample first."""
    import torch.nn.functional as F

    from core.data.fashion_mnist import CLASS_NAMES
    from core.metrics.classifiers import fashion_probabilities
    from core.pixelcnn import to_unit

    try:
        model = _classifier()
    except ValueError:  # CheckpointError: not shipped
        return None
    x = F.interpolate(to_unit(levels, k), size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    probs = fashion_probabilities(x, (0, 1), model)
    best = probs.max(dim=1)
    return [(CLASS_NAMES[int(c)], float(p)) for p, c in zip(best.values, best.indices)]


def _caption(what: str, verdict) -> str:
    return f"{what}: {verdict[0]} ({verdict[1]:.0%})" if verdict else what


def preview(name, index, upload, row_from, row_to, col_from, col_to):
    """The chosen image with its hidden region in pale blue (completion tab), and the same image at
    16× for clicking (why-it-works tab) -> (preview, clickable image, note)."""
    size, k = _shape(name)
    canvas, what, _, notes = _source(index, upload, size, k)
    hidden = _hidden(size, row_from, row_to, col_from, col_to)
    note = f"{what.capitalize()}" + (f" ({'; '.join(notes)})" if notes else "") + \
        f": {int(hidden.sum())} of {size * size} pixels hidden."
    return _tile(_render(canvas, k, hidden[None, None])[0]), _tile(_render(canvas, k)[0], CLICK_SCALE), note


def complete_image(name, index, upload, row_from, row_to, col_from, col_to, n, temperature, seed):
    """Several completions of the chosen image with the hidden rectangle re-drawn, pixel by pixel,
    the known pixels kept. Streams (gallery of (image, caption), status) after every row."""
    import torch

    from core import pixelcnn
    from core.data.fashion_mnist import CLASS_NAMES
    from core.runtime import make_generator

    model = _model(name)
    size, k = model.config.image_size, model.config.levels
    canvas, what, label, notes = _source(index, upload, size, k)
    hidden = _hidden(size, row_from, row_to, col_from, col_to)
    if not hidden.any():
        raise ValueError("Nothing is hidden (the row or column range is empty), so there is nothing to complete: "
                         "widen the hidden region.")
    n, note = _count(n, 4, MAX_COMPLETIONS, "completions")
    t, t_note = _temperature(temperature)
    note += t_note + (f"{what.capitalize()}: {'; '.join(notes)}. " if notes else "")
    if hidden.all():
        note += "The hidden region covers the whole image, so this is plain sampling: nothing of it is kept. "
    flat = hidden.flatten()
    first = int(flat.nonzero()[0])
    if (~flat[first:]).any():  # known pixels after the hole in raster order
        note += ("Known pixels after the first hidden one (in raster order) are kept but not looked at: "
                 "a PixelCNN predicts each pixel only from the pixels before it. ")
    title = what + (f", labelled {CLASS_NAMES[label]}" if label is not None else "")
    original = classify(canvas, k)
    head = [(_tile(_render(canvas, k)[0]), _caption(title, original and original[0])),
            (_tile(_render(canvas, k, hidden[None, None])[0]), "hidden (pale blue)")]
    known = ~hidden
    start = time.monotonic()
    rows = torch.arange(size).view(size, 1).expand(size, size)
    for row, done in pixelcnn.complete(model, canvas.expand(n, -1, -1, -1), known, make_generator(seed), t):
        finished = row == size - 1
        pending = None if finished else (hidden & (rows > row))[None, None]
        tiles = _render(done, k, pending)
        verdicts = classify(done, k) if finished else None
        gallery = head + [(_tile(tiles[i]), _caption(f"completion {i + 1}", verdicts and verdicts[i]))
                          for i in range(n)]
        elapsed = time.monotonic() - start
        if not finished:
            yield gallery, note + f"Row {row + 1} of {size} · {elapsed:.1f} s."
            continue
        status = f"Done: {n} completions of {int(hidden.sum())} hidden pixels in {elapsed:.1f} s."
        if verdicts is None:
            status += " (The Fashion-MNIST classifier is not shipped, so the completions are not labelled.)"
        elif label is not None:
            same = sum(v[0] == CLASS_NAMES[label] for v in verdicts)
            status += f" The classifier puts {same} of the {n} in the original's class, {CLASS_NAMES[label]}."
        yield gallery, note + status


# --- why it works -------------------------------------------------------------------------------

def _pixel(row, col, size: int) -> tuple[int, int]:
    try:
        r, c = float(row), float(col)
    except (TypeError, ValueError):
        raise ValueError(f"Give the pixel as a row and a column, numbers from 0 to {size - 1}.") from None
    if not (0 <= r <= size - 1 and 0 <= c <= size - 1):
        raise ValueError(f"({row}, {col}) is outside the {size}×{size} image: rows and columns go from 0 to "
                         f"{size - 1}.")
    return int(r), int(c)


def field_categories(field, row: int, col: int):
    """A receptive field (bool [H, W]) as int codes: 0 after the pixel in raster order (the masks forbid
    looking there), 1 before it and seen, 2 before it and within the field's bounding box but not seen
    (the blind spot), 3 the pixel itself, 4 before it but beyond the network's reach."""
    import torch

    size_h, size_w = field.shape
    order = torch.arange(size_h * size_w).view(size_h, size_w)
    before = order < row * size_w + col
    seen = field.clone()
    seen[row, col] = True
    rows, cols = seen.nonzero(as_tuple=True)
    reach = torch.zeros_like(seen)
    reach[int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1] = True
    codes = torch.zeros(size_h, size_w, dtype=torch.long)
    codes[before & ~reach] = 4
    codes[before & reach & ~field] = 2
    codes[before & field] = 1
    codes[row, col] = 3
    return codes


def blind_in_reach(field, row: int, col: int) -> tuple[int, int]:
    """(blind, earlier): of the pixels before (row, col) inside the bounding box of what the network
    reaches, how many it cannot see, and how many there are."""
    codes = field_categories(field, row, col)
    return int((codes == 2).sum()), int(((codes == 1) | (codes == 2)).sum())


def fields_picture(fields: dict, row: int, col: int):
    """Receptive fields side by side (name -> bool [H, W]), coloured by field_categories."""
    import torch
    from matplotlib.patches import Patch

    plt = pyplot()
    palette = torch.tensor([AFTER, SEES, BLIND, ITSELF, BEYOND])
    fig, axes = plt.subplots(1, len(fields), figsize=(3.4 * len(fields), 4.3), dpi=90, squeeze=False,
                             layout="constrained")
    for ax, (name, field) in zip(axes[0], fields.items()):
        ax.imshow(palette[field_categories(field, row, col)].numpy(), interpolation="nearest")
        blind, earlier = blind_in_reach(field, row, col)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"blind spot: {blind} of the {earlier} earlier pixels in reach", fontsize=9)
        size_h, size_w = field.shape
        ax.set_xticks([x - 0.5 for x in range(size_w + 1)], minor=True)
        ax.set_yticks([y - 0.5 for y in range(size_h + 1)], minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="both", length=0, labelsize=7)
    fig.legend(handles=[Patch(color=SEES, label="before it, can influence it"),
                        Patch(color=BLIND, label="before it, cannot (blind spot)"),
                        Patch(color=BEYOND, label="before it, out of reach"), Patch(color=ITSELF, label="the pixel"),
                        Patch(color=AFTER, label="after it (masked)")], loc="outside lower center", ncol=3,
               fontsize=8, frameon=False)
    return figure_to_image(fig)


def distribution_picture(probs, actual: int, row: int, col: int, label: str):
    """A bar per level, each bar in its own grey; the level the image really has is outlined."""
    plt = pyplot()
    k = len(probs)
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=90)
    greys = [(i / (k - 1),) * 3 for i in range(k)]
    bars = ax.bar(range(k), probs, color=greys, edgecolor="black", linewidth=0.8)
    bars[actual].set_edgecolor(ITSELF)
    bars[actual].set_linewidth(3)
    for i, p in enumerate(probs):
        ax.text(i, p + 0.02, f"{p:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_xticks(range(k), [f"level {i}" for i in range(k)], fontsize=8)
    ax.set_title(f"p(pixel ({row}, {col}) | pixels before it), {label}\nvermillion outline: the image's level",
                 fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


def _marked(canvas, k: int, row: int, col: int):
    """The clickable image, with the chosen pixel outlined in vermillion (ITSELF)."""
    from PIL import ImageDraw

    image = _tile(_render(canvas, k)[0], CLICK_SCALE)
    draw = ImageDraw.Draw(image)
    s = CLICK_SCALE
    draw.rectangle([col * s, row * s, col * s + s - 1, row * s + s - 1],
                   outline=tuple(round(255 * v) for v in ITSELF), width=3)
    return image


def inspect_pixel(name, index, upload, row, col):
    """One pixel of the chosen image -> (image with the pixel marked, its predicted distribution,
    the receptive fields of the plain and the gated model, a sentence)."""
    from core import pixelcnn

    model = _model(name)
    size, k = model.config.image_size, model.config.levels
    r, c = _pixel(row, col, size)
    canvas, what, _, _ = _source(index, upload, size, k)
    probs = pixelcnn.pixel_distribution(model, canvas, r, c)[0].tolist()
    actual = int(canvas[0, 0, r, c])
    shipped = {value for _, value in model_choices()}
    fields = {SHORT[m]: pixelcnn.receptive_field(_model(m), r, c) for m in (PLAIN, GATED) if m in shipped}
    bits = -math.log2(max(probs[actual], 1e-12))
    sentence = (f"**Pixel ({r}, {c})** of {what} has level {actual}; the {SHORT.get(name, name)} gave that level "
                f"p = {probs[actual]:.2f}, i.e. −log₂ p = {bits:.2f} bits (the test loss averages this over every "
                f"pixel). ")
    if r == 0 and c == 0:
        sentence += ("It is the first pixel: nothing comes before it, so its distribution is the same for "
                     "every image. ")
    for label, field in fields.items():
        blind, earlier = blind_in_reach(field, r, c)
        if blind:
            sentence += (f"Of the {earlier} earlier pixels within the {label}'s reach, {blind} cannot influence it: "
                         "its blind spot (orange). ")
        elif earlier:
            sentence += f"All {earlier} earlier pixels within the {label}'s reach can influence it. "
    sentence += " ".join(missing_models())
    figure = fields_picture(fields, r, c) if fields else None
    return _marked(canvas, k, r, c), distribution_picture(probs, actual, r, c, what), figure, sentence.strip()


def click_pixel(name, index, upload, evt: gr.SelectData):
    """A click on the enlarged image -> the pixel under it (clamped to the image), then inspect_pixel."""
    if evt is None or evt.index is None:
        raise ValueError("Click on the image to choose a pixel.")
    size, _ = _shape(name)
    x, y = evt.index[0], evt.index[1]
    row = min(max(int(y) // CLICK_SCALE, 0), size - 1)
    col = min(max(int(x) // CLICK_SCALE, 0), size - 1)
    return (row, col, *inspect_pixel(name, index, upload, row, col))


def masks_picture():
    """The 0/1 masks of every layer type: white = the weight is used, dark = masked to 0; the
    centre (the output pixel's own position) outlined in vermillion."""
    from matplotlib.patches import Rectangle

    from core.pixelcnn import horizontal_mask, raster_mask, vertical_mask

    plt = pyplot()
    masks = [("mask A, 7×7\n(plain: first layer)", raster_mask(7, "A")),
             ("mask B, 3×3\n(plain: residual blocks)", raster_mask(3, "B")),
             ("vertical, 3×3\n(gated: rows above)", vertical_mask(3)),
             ("horizontal A, 1×3\n(gated: first layer)", horizontal_mask(3, "A")),
             ("horizontal B, 1×3\n(gated: later layers)", horizontal_mask(3, "B"))]
    fig, axes = plt.subplots(1, len(masks), figsize=(12, 3), dpi=80, gridspec_kw={"width_ratios": [7, 3, 3, 3, 3]})
    for ax, (title, mask) in zip(axes, masks):
        ax.imshow(mask.numpy(), cmap="gray", vmin=-0.3, vmax=1, interpolation="nearest")
        h, w = mask.shape
        ax.add_patch(Rectangle((w // 2 - 0.5, h // 2 - 0.5), 1, 1, fill=False, edgecolor=ITSELF, linewidth=2.5))
        ax.set_xticks([x - 0.5 for x in range(w + 1)], minor=True)
        ax.set_yticks([y - 0.5 for y in range(h + 1)], minor=True)
        ax.grid(which="minor", color="#888", linewidth=0.6)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


def why_text() -> str:
    """The explanation, with each shipped model's test bits per dimension from its card."""
    figures = "; ".join(f"{SHORT[name]}: {_bits_per_dim(name)}"
                        for _, name in model_choices() if name in MODEL_LABELS)
    return f"""**The chain rule.** Any distribution over images factorises, pixel by pixel in raster order:
p(x) = ∏ᵢ p(xᵢ | x₁, …, xᵢ₋₁). A PixelCNN outputs every one of these conditionals in one pass, a softmax
over the K levels at each pixel, so training is plain cross-entropy and the test loss is an **exact**
likelihood, −log₂ p(x) / pixels, in bits per dimension (a VAE gives only a bound).
{f"Measured on the 10,000 Fashion-MNIST test images: {figures}. " if figures else ""}Uniform guessing over
4 levels would cost 2 bits per pixel.

**Masks.** The convolution kernels are multiplied by fixed 0/1 masks so that the output at pixel i never
sees pixel i or anything after it. **Mask A** (first layer) hides the centre too: x_i must be predicted
without x_i. **Mask B** (later layers) lets the centre through, because there it holds features
already computed from pixels strictly before i.

**The blind spot.** Stacked masked 3×3 kernels grow the receptive field up and to the left, but each
layer's field is cut off at the upper right, so a wedge of earlier pixels above and to the right is
never reached, however deep the network. The **gated PixelCNN** uses two stacks: a vertical one that
sees whole rows above (shifted down one row before it is given to the other, so it never sees the
current row) and a horizontal one that sees the current row to the left. Together they cover every
earlier pixel within reach. Click a pixel of the image below: orange marks the plain model's blind spot."""


# --- layout -------------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    choices = model_choices()
    if not choices:
        gr.Markdown(INTRO)
        for sentence in missing_models():
            gr.Markdown(sentence)
        gr.Markdown(why_text())
        return page
    default = choices[0][1]
    gpu = on_gpu(GPU_SECONDS)
    with gr.Row(equal_height=False):
        gr.Markdown(INTRO, scale=3)
        with gr.Column(scale=2, min_width=280):
            model = gr.Dropdown(choices, value=default, label="model (every view below uses it)",
                                elem_id="pixelcnn-model")
    for sentence in missing_models():
        gr.Markdown(sentence)

    with gr.Tab("Generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="pixelcnn-generate")
                    stop = gr.Button("Stop")
                status = gr.Markdown(elem_id="pixelcnn-status")
                temperature = gr.Slider(0, MAX_TEMPERATURE, 1.0, step=0.05, label="temperature T (0 = greedy)")
                n = gr.Slider(1, MAX_SAMPLES, MAX_SAMPLES, step=1, label="samples")
                seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
                with gr.Accordion("model card: how it was trained, its test likelihood", open=False):
                    card = gr.Markdown(model_card(default))
            with gr.Column(scale=2):
                grid = gr.Image(label="samples", show_label=False, type="pil", format="png", interactive=False,
                                elem_id="pixelcnn-samples", alt_text="PixelCNN samples: 16×16 grey images drawn pixel "
                                                                     "by pixel; pale blue where not drawn yet")
                caption("**Samples**: new 16×16 images, drawn pixel by pixel in raster order; grey levels are the "
                        "K = 4 levels, black 0 to white 3; the pale blue checkerboard is not drawn yet.")
        run = gr.on([go.click, page.ran.change], user_errors(gpu(generate)), [model, n, temperature, seed],
                    [grid, status], api_name="pixelcnn_generate", **queue(TAB, 2))
        stop.click(None, None, None, cancels=[run], api_name="pixelcnn_stop", api_visibility="private")
        page.link({"model": model, "temperature": temperature, "samples": n, "seed": seed})
        model.change(model_card, model, card, api_name="pixelcnn_model_card", api_visibility="private",
                     **queue(VIEW, 8))

    with gr.Tab("Complete an image") as complete_tab:
        gr.Markdown("Hide part of an image and let the model draw it again, several times. Each hidden pixel is "
                    "sampled from p(xᵢ | the pixels before it), the visible pixels before it included; the "
                    "known pixels are kept. Each completion is labelled by the Fashion-MNIST classifier.")
        with gr.Row():
            with gr.Column():
                index = gr.Slider(0, TEST_IMAGES - 1, 0, step=1, label="Fashion-MNIST test image")
                upload = image_upload("…or upload your own (made grey, cropped to 16×16, 4 levels)",
                                      sources=["upload"], elem_id="pixelcnn-upload")
            with gr.Column():
                shown = picture("the image to complete", "16×16 at 4 grey levels (black 0 to white 3); the pale "
                                 "blue checkerboard is the hidden region the model will draw again")
                shown_note = gr.Markdown()
        with gr.Row():
            row_from = gr.Slider(0, 16, 8, step=1, label="hide rows from")
            row_to = gr.Slider(0, 16, 16, step=1, label="…up to (not including)")
            col_from = gr.Slider(0, 16, 0, step=1, label="hide columns from")
            col_to = gr.Slider(0, 16, 16, step=1, label="…up to (not including)")
        with gr.Row():
            count = gr.Slider(1, MAX_COMPLETIONS, 4, step=1, label="completions")
            c_temperature = gr.Slider(0, MAX_TEMPERATURE, 1.0, step=0.05, label="temperature (0 = greedy)")
            c_seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
        with gr.Row():
            c_go = gr.Button("Complete", variant="primary", elem_id="pixelcnn-complete")
            c_stop = gr.Button("Stop")
        c_status = gr.Markdown(elem_id="pixelcnn-complete-status")
        caption("**Original, hidden, completions**: first the original (with the classifier's label), then the "
                "hidden region in pale blue, then each completion: the known pixels kept, the hidden ones drawn "
                "again row by row, each labelled by the Fashion-MNIST classifier.")
        gallery = gr.Gallery(label="original, hidden, completions", show_label=False, columns=MAX_COMPLETIONS + 2,
                             height=220, object_fit="contain", format="png", elem_id="pixelcnn-completions")
        source = [model, index, upload]
        hide = [row_from, row_to, col_from, col_to]
        c_run = c_go.click(user_errors(gpu(complete_image)), [*source, *hide, count, c_temperature, c_seed],
                           [gallery, c_status], api_name="pixelcnn_complete", **queue(TAB, 2))
        c_stop.click(None, None, None, cancels=[c_run], api_name="pixelcnn_complete_stop", api_visibility="private")

    with gr.Tab("Why it works") as why_tab:
        gr.Markdown(why_text())
        gr.Markdown("The image is the one chosen under *Complete an image*. Click a pixel (or type its row and "
                    "column): its predicted distribution under the chosen model, and which earlier pixels can "
                    "influence it in each model, computed from gradients.")
        with gr.Row():
            with gr.Column(scale=1):
                clickable = picture("click a pixel", "the image at 16× (one pixel = a 16×16 block, grey levels "
                                     "black 0 to white 3); the chosen pixel is outlined in vermillion (red-orange)",
                                     elem_id="pixelcnn-clickable")
                with gr.Row():
                    row = gr.Number(8, label="row", precision=0, minimum=0, maximum=15)
                    col = gr.Number(8, label="column", precision=0, minimum=0, maximum=15)
                    inspect_button = gr.Button("Inspect")
            with gr.Column(scale=1):
                distribution = picture("predicted distribution", "one bar per grey level, its height the "
                                        "probability the model gives that level from the pixels before this one; "
                                        "the level the image really has is outlined in vermillion")
        sentence = gr.Markdown()
        fields = picture("receptive fields: plain and gated", "for the chosen pixel (vermillion), which pixels can "
                          "change its prediction: blue = before it and seen, orange = before it but never seen (the "
                          "blind spot), cream = before it but beyond reach, grey = after it (masked)",
                          elem_id="pixelcnn-fields")
        masks = picture("the masks of each layer type", "each kernel's weights: white = used, dark = multiplied "
                         "by 0; the vermillion square is the output pixel's own position")
        outputs = [clickable, distribution, fields, sentence]
        inspect = user_errors(on_gpu(INSPECT_GPU_SECONDS)(inspect_pixel))
        inspect_button.click(inspect, [*source, row, col], outputs, api_name="pixelcnn_inspect_pixel", **queue(VIEW, 4))
        clickable.select(user_errors(on_gpu(INSPECT_GPU_SECONDS)(click_pixel)), source, [row, col, *outputs],
                         api_name="pixelcnn_click_pixel", api_visibility="private", **queue(VIEW, 4))
        # Drawn when the panel is opened: the pictures need torch and matplotlib, which start-up must not import.
        why_tab.select(inspect, [*source, row, col], outputs, api_name="pixelcnn_inspect_on_open",
                       api_visibility="private", **queue(VIEW, 4))
        why_tab.select(masks_picture, None, masks, api_name="pixelcnn_masks", api_visibility="private",
                       **queue(VIEW, 4))

    show = user_errors(preview)
    triggers = {"on_open": complete_tab.select, "from_index": index.change, "from_upload": upload.change,
                **{f"from_{which}": slider.change for which, slider in zip(("row_from", "row_to", "col_from", "col_to"),
                                                                           hide)}}
    for which, trigger in triggers.items():  # page only: Complete reads the same widgets
        trigger(show, [*source, *hide], [shown, clickable, shown_note], api_name=f"pixelcnn_preview_{which}",
                api_visibility="private", **queue(VIEW, 8))
    return page
