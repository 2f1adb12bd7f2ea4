"""Style transfer tab (Gatys): repaint a photo with the textures of one or more style images.

The picture changes live while the optimiser works, and beside it the three loss terms (log
scale): content (does it still show the photo?), style (do the Gram matrices match the painting's?)
and total variation (is it free of pixel speckle?). Handlers are plain functions that tests call;
the network loads on first use.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import gradio as gr

from core.backbone_layers import BACKBONE_LABELS, OFFLINE_DEFAULT
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import PALETTE, caption, image_upload, number, on_gpu, queue, user_errors

TAB = "style"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples" / "style"
BACKBONES = ["efficientnet_lite0", "vgg19"]  # the ones core.style.RECIPES has layers for
STYLE_SLOTS = 3
# Slider starting points; tests check they equal core.style's StyleSettings, DEFAULT_ITERATIONS and Lite0
# recipe (core.style cannot be imported here: it imports torch, and the app must start fast).
DEFAULT_SIZE = 256
DEFAULT_ITERATIONS = {"content": 100, "blend": 100, "noise": 200}
DEFAULT_LOG_WEIGHTS = {"content": 0.0, "style": 3.0, "tv": 1.7}
NOISE_LOG_CONTENT = 1.5  # from noise the content must pull harder (core.style.Recipe.noise_content_weight)
RESULT_HEIGHT = 448      # px: a fixed box, so the live picture never collapses while it loads
# The photo and painting the tab opens with, so that `?tab=style` (a link, a "Try this" button) paints at once.
DEFAULT_CONTENT, DEFAULT_STYLE = "grace_hopper.jpg", "mosaic.png"
TERM_COLOURS = {"content": PALETTE[0], "style": PALETTE[1], "tv": PALETTE[2]}  # blue, orange, green
# Measured with one thread (CPU seconds, 100 L-BFGS iterations, Lite0): 9 at 256 px, 17 at 512, 41 at 1024.
# The cost grows with the pixel count, but above 384 px most iterations run at 256 px (core.style.level_sizes).
# Seconds of GPU a call may hold on a ZeroGPU Space (tabs.common.on_gpu; shorter requests queue ahead).
# The slowest settings the sliders allow on Lite0 (1024 px, 1000 iterations, ~1.15 evaluations each), from
# bench/results/style_speed.json (CPU seconds per evaluation: 0.082 at 256 px, 0.305 at 512, about 4x that
# at 1024): about 330 s on one CPU thread. A GPU is assumed to be at least 20x faster (not measured here;
# VGG19 gains more than Lite0), and the margin covers a first call's VGG19 download (548 MB).
STYLE_GPU_S = 60
SIZE_COST = ("256 px: about 10 s on one CPU core; 512 px about 2× that, 1024 px about 4-5× (sizes above 384 px "
             "are painted at 256 px first, then refined)")
LOSS_CAPTION = ("From the photo, style falls while content and total variation rise from zero: the photo is "
                "their optimum, so they measure what the style costs. From noise all three fall.")
# Log-scale sliders: exponent range per term. The leftmost position switches the term off.
LOG_RANGES = {"content": (-3.0, 3.0), "style": (-1.0, 6.0), "tv": (-1.0, 4.0)}
INTRO = """**The network never changes: the output's pixels do.** A frozen ImageNet network compares them with the photo's
feature maps (content) and the painting's Gram matrices (style: which features fire *together*, wherever they are)."""

LESSON = Lesson(
    tab=TAB, main="style-run", result="style-result",
    chapters="*Deep Learning with Python* 2nd ed. §12.3 (neural style transfer) · Gatys, Ecker & Bethge 2016, "
             "*Image style transfer using convolutional neural networks*",
    equations=(r"$L(x) = \alpha\,\lVert F^c(x) - F^c(p)\rVert^2 + \beta \sum_l w_l \lVert G^l(x) - G^l(s)\rVert^2 + "
               r"\gamma\,\mathrm{TV}(x)$ with the Gram matrix $G^l = \tfrac{1}{HW} F^l {F^l}^{\top}$ "
               r"($p$ the photo, $s$ the painting, $F^l$ a layer's $C \times HW$ feature maps), minimised over the pixels $x$"),
    try_this=(
        Try("start from noise", {"start": "noise", "content": NOISE_LOG_CONTENT, "style": DEFAULT_LOG_WEIGHTS["style"],
                                 "iterations": DEFAULT_ITERATIONS["noise"], "colour": "none", "scale": 1.0},
            "The picture starts as random pixels. The content term pulls the photo's layout out of them (one middle "
            "layer's feature maps); the Gram matrices lay the mosaic's texture on top. All three terms fall."),
        Try("keep the colours", {"start": "content", "content": DEFAULT_LOG_WEIGHTS["content"],
                                 "style": DEFAULT_LOG_WEIGHTS["style"], "iterations": DEFAULT_ITERATIONS["content"],
                                 "colour": "luminance", "scale": 1.0},
            "The same strokes, but in the photo's colours: the style was transferred to the brightness only, and "
            "the photo's colour channels were put back. Style is texture *and* colour unless you separate them."),
        Try("style ×100", {"start": "content", "content": DEFAULT_LOG_WEIGHTS["content"],
                           "iterations": DEFAULT_ITERATIONS["content"], "colour": "none", "scale": 1.0,
                           "style": DEFAULT_LOG_WEIGHTS["style"] + 2},
            "Only the ratio of the weights matters: with the style term 100 times stronger the mosaic's tiles and "
            "colours cover much more of the face. The face survives because the run starts from the photo and "
            "the optimiser only walks downhill from there: start from noise to see the content weight decide."),
    ),
    misconceptions=(
        ("Style transfer trains a network on the painting.",
         "No weight changes. The ImageNet network stays frozen; the optimiser changes the output's pixels, "
         "one optimisation per picture (fast feed-forward stylisers are a later, different idea)."),
        ("The Gram matrix remembers where the strokes are.",
         "It sums over every position, so it keeps which features occur together and how strongly, but not "
         "where: that is why the painting's layout never shows up, only its textures."),
        ("A bigger style weight is always “more artistic”.",
         "The weights only trade one term against the other: too much style buries the photo under the texture, "
         "too little leaves it untouched. Without total variation the optimiser can also leave pixel speckle "
         "that the network barely sees."),
    ),
    code=(Code("the Gram matrix and the style loss", "core/style.py", ("gram_matrix", "relative_error", "style_loss"),
               r"$G^l = \tfrac{1}{HW} F^l {F^l}^{\top}$, "
               r"$L_\text{style} = \sum_l \tfrac{w_l}{\sum w}\,\lVert G^l(x) - G^l(s)\rVert^2 / \lVert G^l(s)\rVert^2$"),
          Code("the content loss and total variation", "core/style.py", ("content_loss", "total_variation"),
               r"$L_\text{content} = \lVert F^c(x) - F^c(p)\rVert^2 / \lVert F^c(p)\rVert^2$, "
               r"$\mathrm{TV}(x) = \overline{(x_{i+1,j} - x_{i,j})^2} + \overline{(x_{i,j+1} - x_{i,j})^2}$")),
)


def weight_from_slider(term: str, exponent: float) -> float:
    """Slider exponent -> weight 10**exponent; the leftmost position means 0 (the term is off)."""
    low, high = LOG_RANGES[term]
    exponent = number(exponent, low, low, high)
    return 0.0 if exponent <= low else 10.0 ** exponent


def backbone_defaults(backbone_name: str, init: str = "content"):
    """Slider values (exponents) for the chosen network's recipe and start."""
    from core.style import recipe_for

    recipe = recipe_for(backbone_name)
    weights = {term: getattr(recipe, f"{term}_weight") for term in ("content", "style", "tv")}
    if init == "noise":
        weights["content"] = recipe.noise_content_weight
    return [gr.Slider(value=round(math.log10(weight), 1)) for weight in weights.values()]


def start_defaults(init: str, backbone_name: str):
    """The content weight and iterations a start needs (noise has further to go), for the sliders."""
    return [backbone_defaults(backbone_name, init)[0], gr.Slider(value=DEFAULT_ITERATIONS.get(init, 100))]


def stopped_status(status: str | None) -> str:
    """The status once a run has ended: one that Stop cancelled says so (Gradio ends the generator
    silently); a finished or failed one keeps its line."""
    status = (status or "").strip()
    return "Stopped" + status[len("Working"):] if status.startswith("Working") else status


def _loss_table(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["iteration", "log10 loss", "term"])


def _load(path, what: str, max_side: int, notes: list[str]):
    from core.data.images import prepare_image

    if path is None:
        return None
    try:
        image, image_notes = prepare_image(path, max_side=max_side)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    for note in image_notes:
        gr.Info(f"{what}: {note}")
        notes.append(f"{what}: {note}")
    return image


def run_style(content, style_1, blend_1, style_2, blend_2, style_3, blend_3, backbone_name, size,
              content_exp, style_exp, tv_exp, iterations, optimizer, init, colour, style_scale, strength_percent,
              seed):
    """Stream (picture, loss curves, status, PNG file) while the picture is optimised."""
    from core.backbones import load_backbone
    from core.data.images import tensor_to_pil
    from core.style import StyleSettings, recipe_for, stylize

    notes: list[str] = []
    if content is None:
        raise ValueError("Upload a content photo (or pick an example).")
    # Uploads are cut to 1024 px here; stylize resizes them to the output and style sizes.
    content_image = _load(content, "content image", 1024, notes)
    styles = []
    for index, (path, blend) in enumerate([(style_1, blend_1), (style_2, blend_2), (style_3, blend_3)], start=1):
        image = _load(path, f"style image #{index}", 1024, notes)
        if image is not None:
            styles.append((image, number(blend, 0.0, 0.0, 1.0)))
    settings = StyleSettings(
        # Only made finite here: core.style clamps into range with a note for the user.
        size=number(size, DEFAULT_SIZE, 0, 10_000, whole=True),
        iterations=number(iterations, DEFAULT_ITERATIONS.get(init, 100), 0, 10_000, whole=True),
        optimizer=optimizer, init=init, colour=colour, style_scale=number(style_scale, 1.0, 0.0, 10.0),
        strength=number(strength_percent, 0.0, -100.0, 1000.0) / 100,
        content_weight=weight_from_slider("content", content_exp), style_weight=weight_from_slider("style", style_exp),
        tv_weight=weight_from_slider("tv", tv_exp), seed=seed, report_every=5 if optimizer == "adam" else 10)
    backbone = load_backbone(backbone_name)
    if backbone.name != backbone_name:
        gr.Warning(backbone.source)
        notes.append(backbone.source)

    recipe = recipe_for(backbone.name)
    layers = f"Content layer **{recipe.content_layer}**; style layers **{', '.join(recipe.style_layers)}**."
    png = Path(tempfile.mkdtemp(prefix="style_")) / "style_transfer.png"
    rows, start = [], time.perf_counter()
    for step in stylize(backbone, content_image, styles, settings):
        for note in step.notes:
            gr.Info(note)
            notes.append(note)
        rows += [(step.iteration, math.log10(value), term) for term, value in step.losses.items() if value > 0]
        picture = tensor_to_pil(step.image)
        picture.save(png)  # every time, so Stop still leaves the latest picture to download
        seconds = time.perf_counter() - start
        losses = ", ".join(f"{term} {value:.3g}" for term, value in step.losses.items())
        status = (f"{'Done' if step.done else 'Working'}: {step.iteration}/{step.total} iterations "
                  f"({step.evaluations} network evaluations), {seconds:.1f} s ({picture.width}×{picture.height}, "
                  f"{backbone.name}). Weighted losses: {losses}. " + layers)
        if notes:
            status += "\n\n**Notes:** " + "; ".join(notes)
        yield picture, _loss_table(rows), status, str(png)


# --- layout -----------------------------------------------------------------------------------

def _examples(*names):
    return [str(EXAMPLES_DIR / name) for name in names if (EXAMPLES_DIR / name).exists()]


def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            with gr.Row():
                run_button = gr.Button("Paint", variant="primary", elem_id="style-run")
                stop_button = gr.Button("Stop", elem_id="style-stop")
            with gr.Row():
                content = image_upload("content photo", elem_id="style-content", height=150,
                                       value=_examples(DEFAULT_CONTENT)[0] if _examples(DEFAULT_CONTENT) else None)
                style_1 = image_upload("style image", elem_id="style-style", height=150,
                                       value=_examples(DEFAULT_STYLE)[0] if _examples(DEFAULT_STYLE) else None)
            with gr.Row():
                gr.Examples(_examples(DEFAULT_CONTENT), inputs=[content], label="content example",
                            api_visibility="private")
                gr.Examples(_examples("brush_strokes.png", DEFAULT_STYLE), inputs=[style_1], label="style examples",
                            api_visibility="private")
            exponents = {}
            with gr.Row():
                for term, label in (("content", "content"), ("style", "style"), ("tv", "total variation")):
                    low, high = LOG_RANGES[term]
                    exponents[term] = gr.Slider(low, high, value=DEFAULT_LOG_WEIGHTS[term], step=0.1,
                                                label=f"{label} weight = 10^x",
                                                info="all the way left = off", elem_id=f"style-{term}-weight")
            with gr.Row():
                iterations = gr.Slider(1, 1000, value=DEFAULT_ITERATIONS["content"], step=1,
                                       label="iterations (an L-BFGS one costs 1-2 network evaluations)",
                                       elem_id="style-iterations")
                size = gr.Slider(64, 1024, value=DEFAULT_SIZE, step=32, label="output size (longer side, px)",
                                 info=SIZE_COST)
            with gr.Row():
                init = gr.Radio([("content photo", "content"), ("noise", "noise"), ("blend of both", "blend")],
                                value="content", label="start from", elem_id="style-init",
                                info=f"noise sets content weight 10^{NOISE_LOG_CONTENT:g} and "
                                     f"{DEFAULT_ITERATIONS['noise']} iterations: the photo must be pulled out of it")
                colour = gr.Radio([("no: take the painting's", "none"), ("yes, via luminance", "luminance"),
                                   ("yes, via colour statistics", "statistics")], value="none",
                                  label="keep the photo's colours?")
            with gr.Accordion("Blend more styles (their Gram matrices are averaged with these weights)", open=False):
                blends = [gr.Slider(0, 1, value=1.0, step=0.05, label="blend weight of the style image above")]
                extra = []
                for i in range(2, STYLE_SLOTS + 1):
                    with gr.Row():
                        extra.append(image_upload(f"style image #{i}"))
                        blends.append(gr.Slider(0, 1, value=1.0, step=0.05, label=f"blend weight #{i}"))
            with gr.Accordion("Network, optimiser, stroke scale, strength, seed", open=False):
                backbone = gr.Dropdown([(BACKBONE_LABELS[n], n) for n in BACKBONES], value=OFFLINE_DEFAULT,
                                       label="network (VGG19 falls back to Lite0 when it cannot be downloaded)")
                optimizer = gr.Radio([("L-BFGS (fast to converge)", "lbfgs"), ("Adam", "adam")], value="lbfgs",
                                     label="optimiser")
                with gr.Row():
                    style_scale = gr.Slider(0.25, 2.0, value=1.0, step=0.05,
                                            label="style scale (style image size / output size: bigger = bigger strokes)")
                    strength = gr.Slider(0, 100, value=100, step=1, label="style strength (%)")
                    seed = gr.Number(value=0, precision=0, label="seed (noise start)")
        with gr.Column(scale=1):
            caption("**Result (live)**: the output's pixels as the optimiser changes them, redrawn every few "
                    "iterations; it starts from the photo, noise or a blend of both (\"start from\").")
            result = gr.Image(label="result (live)", show_label=False, type="pil", format="png", interactive=False,
                              height=RESULT_HEIGHT, buttons=["download", "fullscreen"], elem_id="style-result",
                              alt_text="the photo repainted with the textures of the style image, as optimised so far")
            status = gr.Markdown(elem_id="style-status")
            curves = gr.LinePlot(x="iteration", y="log10 loss", color="term", label="weighted loss terms",
                                 title="weighted loss terms (log10)", caption=LOSS_CAPTION, elem_id="style-curves",
                                 color_map=TERM_COLOURS)
            caption("**Weighted loss terms**: iterations across; up, log10 of each term times its weight; blue the "
                    "content term, orange the style term, green total variation. A term switched off is not drawn.")
            png = gr.File(label="download PNG")

    # .input: only a person choosing moves the sliders; a link or a "Try this" button sets them itself.
    backbone.input(user_errors(backbone_defaults), [backbone, init], list(exponents.values()),
                   api_name="style_backbone_defaults", api_visibility="private", **queue(f"{TAB}-ui", 8))
    init.input(user_errors(start_defaults), [init, backbone], [exponents["content"], iterations],
               api_name="style_start_defaults", api_visibility="private", **queue(f"{TAB}-ui", 8))
    paint_event = gr.on(
        [run_button.click, page.ran.change], user_errors(on_gpu(STYLE_GPU_S)(run_style)),
        [content, style_1, blends[0], extra[0], blends[1], extra[1], blends[2], backbone, size,
         exponents["content"], exponents["style"], exponents["tv"], iterations, optimizer, init, colour,
         style_scale, strength, seed],
        [result, curves, status, png], api_name="style_transfer", **queue(TAB, 1))
    stop_button.click(None, None, None, cancels=[paint_event], api_name="style_stop", api_visibility="private")
    # .then runs once the run has ended in any way, after its last streamed update.
    paint_event.then(stopped_status, [status], [status], api_name="style_transfer_ended", api_visibility="private",
                     **queue(f"{TAB}-ui", 8))
    page.link({"content": exponents["content"], "style": exponents["style"], "tv": exponents["tv"],
               "iterations": iterations, "size": size, "start": init, "colour": colour, "network": backbone,
               "optimizer": optimizer, "scale": style_scale, "strength": strength, "seed": seed,
               "blend": blends[0]})
    return page
