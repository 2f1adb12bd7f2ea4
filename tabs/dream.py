"""DeepDream tab: amplify what an ImageNet convnet half-sees in a photo, octave by octave.

The picture grows live while it dreams; beside it the objective climbs iteration by iteration,
the octave sizes are listed, and heat maps show where the chosen layers fire before and after:
the dream is the network's own detectors, turned up. A zoom section makes the classic endless
zoom animation. Handlers are plain functions (tests call them); the network loads on first use.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from core.backbone_layers import BACKBONE_LABELS, BACKBONE_NAMES, DREAM_LAYERS, LAYER_NAMES, OFFLINE_DEFAULT
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import SEQUENTIAL, caption, image_upload, number, on_gpu, queue, user_errors

TAB = "dream"
LAYER_SLOTS = 4  # Inception v3's book setting uses four layers
BACKBONE_CHOICES = [(BACKBONE_LABELS[n], n) for n in BACKBONE_NAMES]
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples" / "dream"
# The photo the tab opens with, so that Dream, a "Try this" button and a link (?tab=dream) run without an
# upload: cloud shapes, where people see faces and animals too (pareidolia), as DeepDream does.
DEFAULT_PHOTO = EXAMPLES_DIR / "clouds.jpg"
PREVIEW_EVERY_S = 0.4  # stream the picture this often; every iteration would flood the browser
RESULT_HEIGHT = 520  # px on the page; the picture is scaled down to fit, never up
RUNNING = ("Octave ", "Frame ")  # how the status lines of a dream and a zoom in progress begin
# Seconds of GPU a call may hold on a ZeroGPU Space (tabs.common.on_gpu; shorter requests queue ahead).
# The slowest settings the sliders allow, on Lite0 and one CPU thread, from bench/results/dream_speed.json
# (0.24 s per 437x512 iteration, cost growing with the pixels): a dream at 1024 px, 6 octaves x 100
# iterations, about 170 s; a zoom of 120 frames x 30 iterations at 512x384, about 760 s. A GPU is assumed
# to be at least 20x faster (not measured here; larger networks gain more), and the margin covers a
# first call's network download (VGG19: 548 MB).
DREAM_GPU_S, ZOOM_GPU_S = 60, 90
INTRO = """**Gradient *ascent* on the pixels of a photo, so that chosen layers of an ImageNet network fire harder:**
whatever they faintly detect gets drawn in, octave by octave (a small copy first, then larger ones). The network's weights never change."""

LESSON = Lesson(
    tab=TAB, main="dream-run", result="dream-result",
    chapters=("*Deep Learning with Python* 2nd ed. §12.2 (DeepDream) · Mordvintsev, Olah & Tyka 2015, "
              "“Inceptionism: going deeper into neural networks” (Google Research blog)"),
    equations=(r"Objective: $L(x) = \sum_l w_l\, \mathrm{mean}\big(a_l(x)^2\big)$ · "
               r"ascent step: $x \leftarrow x + \eta\, \nabla_x L / \mathrm{mean}|\nabla_x L|$ · "
               r"next octave: $x_{k+1} = \mathrm{up}(x_k) + \big(\mathrm{photo}_{k+1} - "
               r"\mathrm{up}(\mathrm{photo}_k)\big)$"),
    try_this=(
        Try("shallow layer", {"layer1": "block3", "noise": False},
            "An early block only knows edges, stripes and colour blobs: the clouds vanish under a fine striped "
            "texture everywhere. Shallow layers paint texture; they have no notion of objects."),
        Try("deep layer", {"layer1": "block10", "octaves": 3, "noise": False},
            "A middle-to-deep block responds to parts of objects: eye-like rings, loops and fur-like patterns grow "
            "where the clouds already looked a little like them. ImageNet is full of dogs and birds, so eyes win."),
        Try("1 octave", {"layer1": "block10", "octaves": 1, "noise": False},
            "Dreaming at one size only: the patterns are all the same small size and the clouds keep their shapes. "
            "Compare with 3 or 5 octaves, where patterns grow at several scales and large structures appear."),
        Try("from noise", {"layer1": "block10", "noise": True},
            "No photo at all, only smooth noise: what appears is what the layer itself is tuned to, the eyes and "
            "loops, filling the whole picture. The photo only decides where they grow."),
    ),
    misconceptions=(
        ("DeepDream trains the network.",
         "The weights are frozen. The gradient is taken with respect to the pixels, and only the picture changes."),
        ("It is gradient descent, like training.",
         "It is gradient ascent: the objective is made larger, which is why the objective curve climbs."),
        ("The eyes and animals are hidden in the photo.",
         "They come from the network: it amplifies whatever its chosen layer detects, even faintly, and an "
         "ImageNet network has many detectors for dogs' and birds' eyes and fur. From noise you get them too."),
        ("Octaves just enlarge a small dream.",
         "Each octave enlarges the dream, adds back the photo's detail lost by shrinking, then dreams again at "
         "that size, so patterns are grown at several scales, not stretched."),
    ),
    code=(Code("one gradient-ascent step on the pixels", "core/dream.py", ("activation_objective", "ascent_step"),
               r"$L(x) = \sum_l w_l\, \mathrm{mean}(a_l^2)$, then $x \leftarrow \mathrm{clip}_{[0,1]}\big(x + "
               r"\eta\, \nabla_x L / \mathrm{mean}|\nabla_x L|\big)$, with the image shifted by a random jitter "
               r"before and shifted back after"),
          Code("the octave loop", "core/dream.py", ("dream",),
               r"$x_1 = \mathrm{photo}_1$ (the smallest size); "
               r"$x_{k+1} = \mathrm{up}(x_k) + \big(\mathrm{photo}_{k+1} - \mathrm{up}(\mathrm{photo}_k)\big)$, "
               r"then the ascent steps at that size")),
)


def layer_slot_values(backbone_name: str) -> list:
    """Default (layer, weight) for each slot; unused slots are (None, 1.0)."""
    defaults = list(DREAM_LAYERS[backbone_name].items())
    defaults += [(None, 1.0)] * (LAYER_SLOTS - len(defaults))
    return [value for pair in defaults[:LAYER_SLOTS] for value in pair]


def collect_layers(slot_values) -> dict[str, float]:
    """(layer, weight, layer, weight, ...) from the slots -> {layer: weight}, summing repeats."""
    layers = {}
    for layer, weight in zip(slot_values[::2], slot_values[1::2]):
        if layer:
            layers[layer] = layers.get(layer, 0.0) + number(weight, 0.0, 0.0, 3.0)
    return layers


def _load_input(image, from_noise: bool, max_side: int, seed):
    """The picture to dream on as a tensor, plus notes for the user (resized, converted, ...)."""
    from core.data.images import pil_to_tensor, prepare_image
    from core.dream import noise_image
    from core.runtime import make_generator

    max_side = number(max_side, 512, 64, 1024, whole=True)
    if from_noise:
        return noise_image(max_side * 3 // 4, max_side, make_generator(seed)), ["started from smooth noise"]
    picture, notes = prepare_image(image, max_side=max_side)
    return pil_to_tensor(picture), notes


def _backbone(name: str):
    from core.backbones import load_backbone

    backbone = load_backbone(name)
    if backbone.name != name:
        gr.Warning(backbone.source)
    return backbone


def _network_boxes(backbone, requested: str) -> list:
    """Updates for the network box and the layer slots: after a fallback they show what was used."""
    if backbone.name == requested:
        return [gr.skip()] * (1 + 2 * LAYER_SLOTS)
    return [gr.Dropdown(choices=BACKBONE_CHOICES, value=backbone.name), *change_backbone(backbone.name)]


def _config(backbone, requested: str, slot_values, octaves, scale, iterations, step, jitter, max_loss):
    from core.dream import MAX_ITERATIONS, MAX_JITTER, MAX_OCTAVES, DreamConfig

    # Empty, NaN and infinite numbers are made finite here; core.dream refuses what is still out of range.
    config = DreamConfig(layers=collect_layers(slot_values), octaves=number(octaves, 0, 0, MAX_OCTAVES + 1, whole=True),
                         octave_scale=number(scale, 1.4, 1.0, 3.0),
                         iterations=number(iterations, 0, 0, MAX_ITERATIONS + 1, whole=True),
                         step=number(step, 0.02, 0.0, 1.0), jitter=number(jitter, 0, 0, MAX_JITTER, whole=True),
                         max_loss=float(max_loss) if max_loss and max_loss > 0 else None)
    if backbone.name != requested:
        # After a failed download the layers picked for VGG & co. do not exist in Lite0: use its defaults.
        config.layers = dict(DREAM_LAYERS[backbone.name])
    return config


def _heat_overlay(image, energy):
    """Photo in grey with the activation energy painted over it in the sequential colours (dark to yellow)."""
    import matplotlib
    import numpy as np
    from PIL import Image

    heat = matplotlib.colormaps[SEQUENTIAL](energy.clamp(0, 1).numpy())[..., :3]
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    return Image.fromarray((255 * (0.35 * grey + 0.65 * heat)).astype(np.uint8))


def _why(backbone, config, sizes, losses, seconds, notes) -> str:
    layers = " + ".join(f"{w:g} × mean(activation²) of **{name}**" for name, w in config.layers.items())
    octaves = " → ".join(f"{w}×{h}" for h, w in sizes)
    lines = [f"**Objective being maximised:** {layers}",
             f"**Octave sizes** (scale {config.octave_scale:g}): {octaves}",
             f"**Network:** {backbone.source}"]
    if losses:
        lines.append(f"**Objective:** {losses[0]:.3g} at the first step → {losses[-1]:.3g} at the last "
                     f"({len(losses)} steps, {seconds:.1f} s, {seconds / len(losses):.2f} s per step)")
    if notes:
        lines.append("**Notes:** " + "; ".join(notes))
    return "\n\n".join(lines)


def _loss_table(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "objective", "octave"])


def run_dream(image, from_noise, guide, backbone_name, *settings):
    """Stream (picture, status, objective curve, explanation, heat maps, PNG file, network box, the
    LAYER_SLOTS (layer, weight) pairs) while dreaming; the last 1 + 2 * LAYER_SLOTS change only after a fallback.

    `settings`: the LAYER_SLOTS (layer, weight) pairs, then octaves, scale, iterations, step,
    jitter, max_loss, seed, max_side.
    """
    from core.data.images import pil_to_tensor, prepare_image, tensor_to_pil
    from core.dream import activation_map, dream
    from core.runtime import make_generator

    slots, (octaves, scale, iterations, step, jitter, max_loss, seed, max_side) = \
        settings[:2 * LAYER_SLOTS], settings[2 * LAYER_SLOTS:]
    if number(iterations, 0, 0, 1) < 1:
        raise ValueError("Choose at least one iteration per octave (0 would return the photo unchanged).")
    generator = make_generator(seed)
    picture, notes = _load_input(image, from_noise, max_side, seed)
    guide_tensor = None
    if guide is not None:
        guide_picture, guide_notes = prepare_image(guide, max_side=512)
        guide_tensor = pil_to_tensor(guide_picture)
        notes += ["guide image: " + n for n in guide_notes] + ["guided: growing the guide's features"]
    for note in notes:
        gr.Info(note)
    backbone = _backbone(backbone_name)
    config = _config(backbone, backbone_name, slots, octaves, scale, iterations, step, jitter, max_loss)

    start, last_shown, rows, update = time.perf_counter(), 0.0, [], None
    boxes = _network_boxes(backbone, backbone_name)
    for update in dream(backbone, picture, config, generator, guide_tensor):
        rows.append((len(rows) + 1, update.loss, str(update.octave)))
        if update.note:
            notes.append(update.note)
        now = time.perf_counter()
        if now - last_shown >= PREVIEW_EVERY_S or update.iteration == config.iterations or update.note:
            last_shown = now
            status = (f"Octave {update.octave}/{len(update.octave_sizes)} ({update.image.shape[-1]}×"
                      f"{update.image.shape[-2]}), iteration {update.iteration}: objective {update.loss:.3g}")
            # The first frame clears the previous dream's explanation and file; later ones leave them be.
            first = len(rows) == 1
            yield (tensor_to_pil(update.image), f"{status} · {100 * update.progress:.0f}% done", _loss_table(rows),
                   "" if first else gr.skip(), None if first else gr.skip(), None if first else gr.skip(),
                   *(boxes if first else [gr.skip()] * len(boxes)))
    seconds = time.perf_counter() - start
    result = tensor_to_pil(update.image)
    energy_before = activation_map(backbone, picture, config.layers)
    energy_after = activation_map(backbone, update.image, config.layers)
    scale = float(max(energy_before.max(), energy_after.max(), 1e-12))  # one colour scale for both
    maps = [(_heat_overlay(tensor_to_pil(picture), energy_before / scale),
             f"the input: mean activation² {float(energy_before.mean()):.3g}"),
            (_heat_overlay(result, energy_after / scale), f"the dream: mean activation² {float(energy_after.mean()):.3g}")]
    with tempfile.NamedTemporaryFile(prefix="deepdream_", suffix=".png", delete=False) as handle:
        result.save(handle.name)
    why = _why(backbone, config, update.octave_sizes, [r[1] for r in rows], seconds, notes)
    yield (result, f"Done in {seconds:.1f} s.", _loss_table(rows), why, maps, handle.name,
           *[gr.skip()] * len(boxes))


def run_zoom(image, from_noise, backbone_name, *settings):
    """Stream (latest frame, status, animation file, network box, layer slots) for the zoom animation.

    `settings`: the LAYER_SLOTS (layer, weight) pairs, then step, jitter, seed, frame size,
    frames, zoom per frame, iterations per frame, format ("GIF" or "MP4").
    """
    from core.data.images import tensor_to_pil
    from core.dream import save_animation, zoom_dream
    from core.runtime import make_generator

    slots, (step, jitter, seed, frame_size, frames, zoom, frame_iterations, video_format) = \
        settings[:2 * LAYER_SLOTS], settings[2 * LAYER_SLOTS:]
    if number(frame_iterations, 0, 0, 1) < 1:
        raise ValueError("Choose at least one iteration per frame.")
    generator = make_generator(seed)
    picture, notes = _load_input(image, from_noise, frame_size, seed)
    for note in notes:
        gr.Info(note)
    backbone = _backbone(backbone_name)
    config = _config(backbone, backbone_name, slots, 1, 1.4, frame_iterations, step, jitter, 0)
    frames, zoom = number(frames, 12, 0, 301, whole=True), number(zoom, 1.05, 0.0, 3.0)  # core refuses 0, 301, 3
    pictures, start, boxes = [], time.perf_counter(), _network_boxes(backbone, backbone_name)
    for index, frame in zoom_dream(backbone, picture, config, frames, zoom, generator):
        pictures.append(tensor_to_pil(frame))
        yield (pictures[-1], f"Frame {index + 1}/{frames} ({time.perf_counter() - start:.1f} s)", gr.skip(),
               *(boxes if index == 0 else [gr.skip()] * len(boxes)))
    suffix = ".mp4" if video_format == "MP4" else ".gif"
    with tempfile.NamedTemporaryFile(prefix="deepdream_zoom_", suffix=suffix, delete=False) as handle:
        path = handle.name
    try:
        save_animation(pictures, path)
    except ValueError as exc:  # no video writer installed: a GIF is still worth having
        gr.Warning(str(exc))
        path = save_animation(pictures, path[:-4] + ".gif")
    yield (pictures[-1], f"Done: {len(pictures)} frames in {time.perf_counter() - start:.1f} s → {Path(path).name}", path,
           *[gr.skip()] * len(boxes))


def stopped_status(status: str | None) -> str:
    """The status line once a run has ended: a run that Stop cancelled says so (Gradio ends the
    generator, which then cannot say anything itself); a finished or failed one keeps its line."""
    status = (status or "").strip()
    return f"**Stopped** at: {status}." if status.startswith(RUNNING) else status


def change_backbone(backbone_name: str):
    """New layer choices and the backbone's default layers for the slots."""
    if backbone_name not in BACKBONE_NAMES:
        raise ValueError(f"Unknown backbone {backbone_name!r}.")
    values = layer_slot_values(backbone_name)
    updates = []
    for layer, weight in zip(values[::2], values[1::2]):
        updates += [gr.Dropdown(choices=LAYER_NAMES[backbone_name], value=layer), gr.Slider(value=weight)]
    return updates


# --- layout -----------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            with gr.Row():
                run_button = gr.Button("Dream", variant="primary", elem_id="dream-run")
                stop_button = gr.Button("Stop", elem_id="dream-stop")
            image = image_upload("photo to dream on", elem_id="dream-image", height=240,
                                 value=str(DEFAULT_PHOTO) if DEFAULT_PHOTO.is_file() else None)
            if examples:
                gr.Examples(examples, inputs=[image], label="examples", api_visibility="private")
            from_noise = gr.Checkbox(value=False, label="start from noise instead of the photo")
            backbone = gr.Dropdown(BACKBONE_CHOICES, value=OFFLINE_DEFAULT, elem_id="dream-network",
                                   label="network (online ones fall back to Lite0 when they cannot be downloaded)")
            slots = []
            defaults = layer_slot_values(OFFLINE_DEFAULT)
            for i in range(LAYER_SLOTS):
                with gr.Row():
                    slots.append(gr.Dropdown(LAYER_NAMES[OFFLINE_DEFAULT], value=defaults[2 * i], label=f"layer {i + 1}",
                                             allow_custom_value=False, scale=2, elem_id=f"dream-layer-{i + 1}"))
                    slots.append(gr.Slider(0, 3, value=defaults[2 * i + 1], step=0.1, label="weight", scale=1))
            with gr.Row():
                octaves = gr.Slider(1, 6, value=3, step=1, label="octaves")
                iterations = gr.Slider(0, 100, value=20, step=1, label="iterations per octave", elem_id="dream-iterations")
            with gr.Accordion("octave scale, step, jitter, seed, working size", open=False):
                with gr.Row():
                    scale = gr.Slider(1.1, 2.0, value=1.4, step=0.05, label="octave scale")
                    step = gr.Slider(0.002, 0.1, value=0.02, step=0.002, label="step (mean pixel change per iteration)")
                with gr.Row():
                    jitter = gr.Slider(0, 64, value=16, step=1, label="jitter (px)")
                    max_loss = gr.Number(value=0, label="max objective per octave (0 = no limit)")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed")
                    max_side = gr.Slider(128, 1024, value=512, step=32, label="working size (longer side, px)")
            with gr.Accordion("Guide image (optional): grow its features instead of the layers' loudest", open=False):
                guide = image_upload("guide", elem_id="dream-guide")
        with gr.Column(scale=1):
            # A fixed height: without one the block takes the <img>'s size, and Gradio's lazy <img> is 0 px
            # until it loads, which it never does while the page is scrolled down to the Dream button
            # (open guide accordion) and the picture is replaced every 0.4 s: a 2-px strip.
            result = gr.Image(label="dream (live)", type="pil", format="png", interactive=False, height=RESULT_HEIGHT,
                              elem_id="dream-result", alt_text="the photo after DeepDream: patterns the network's "
                              "chosen layers detect, amplified into the picture")
            caption("**The dream**, growing live: the photo after gradient ascent, in its own colours. Whatever the "
                    "chosen layers detect (textures for shallow layers, eyes and fur for deeper ones) is drawn in.")
            status = gr.Markdown(elem_id="dream-status")
            # One series: Gradio 6.31's LinePlot never draws a colour series that first appears in a
            # streamed update, so colouring by octave would show octave 1 only.
            curve = gr.LinePlot(x="step", y="objective", label="objective per iteration",
                                title="objective per iteration (it climbs: that is gradient ascent)")
            caption("**The objective**: every ascent step across (all octaves in a row), the objective up: the "
                    "weighted mean of the chosen layers' squared activations. Within an octave it climbs; each jump "
                    "marks a new octave, a larger copy of the picture.")
            why = gr.Markdown()
            maps = gr.Gallery(label="where the chosen layers fire (bright = strong)", columns=2, height=260)
            caption("**Where the layers fire**, before (the input) and after (the dream): the picture in grey with "
                    "the chosen layers' activation energy (mean of the squared activations over channels) painted "
                    "over it, dark purple where they are quiet to bright yellow where they fire hardest; both maps "
                    "share one colour scale.")
            png = gr.File(label="download PNG")

    with gr.Accordion("Zoom animation: dream, zoom in a little, dream again ...", open=False):
        with gr.Row():
            frames = gr.Slider(2, 120, value=12, step=1, label="frames")
            zoom = gr.Slider(1.0, 1.3, value=1.05, step=0.01, label="zoom per frame")
            frame_iterations = gr.Slider(1, 30, value=5, step=1, label="iterations per frame")
            frame_size = gr.Slider(128, 512, value=320, step=32, label="frame size (px)")
            video_format = gr.Radio(["GIF", "MP4"], value="GIF", label="format")
        with gr.Row():
            zoom_button = gr.Button("Make the animation", variant="primary")
            zoom_stop = gr.Button("Stop")
        with gr.Row():
            with gr.Column():
                zoom_frame = gr.Image(label="latest frame", type="pil", interactive=False, height=RESULT_HEIGHT,
                                      alt_text="the latest frame of the zoom animation: a dream, enlarged a little "
                                      "and dreamt on again")
                caption("**The latest frame**: each frame is the previous one enlarged by the zoom factor (its "
                        "centre kept) and dreamt on for a few iterations, so new patterns keep growing out of old ones.")
            zoom_status = gr.Markdown()
            animation = gr.File(label="animation")

    backbone.change(user_errors(change_backbone), [backbone], slots, api_name="dream_change_backbone",
                    api_visibility="private", **queue(f"{TAB}-ui", 8))
    # After a fallback to Lite0 a run also shows that network and its layers in the boxes.
    network_boxes = [backbone, *slots]
    dream_event = gr.on(
        [run_button.click, page.ran.change], user_errors(on_gpu(DREAM_GPU_S)(run_dream)),
        [image, from_noise, guide, backbone, *slots, octaves, scale, iterations, step, jitter, max_loss, seed, max_side],
        [result, status, curve, why, maps, png, *network_boxes], api_name="dream_run", **queue(TAB, 1))
    stop_button.click(None, None, None, cancels=[dream_event], api_name="dream_stop", api_visibility="private")
    # .then runs once the run has ended in any way, after its last streamed update (an update sent by
    # the Stop click itself could arrive before that last frame and be overwritten).
    dream_event.then(stopped_status, [status], [status], api_name="dream_run_ended", api_visibility="private",
                     **queue(f"{TAB}-ui", 8))
    zoom_event = zoom_button.click(
        user_errors(on_gpu(ZOOM_GPU_S)(run_zoom)),
        [image, from_noise, backbone, *slots, step, jitter, seed, frame_size, frames, zoom, frame_iterations,
         video_format],
        [zoom_frame, zoom_status, animation, *network_boxes], api_name="dream_zoom", **queue(TAB, 1))
    zoom_stop.click(None, None, None, cancels=[zoom_event], api_name="dream_zoom_stop", api_visibility="private")
    zoom_event.then(stopped_status, [zoom_status], [zoom_status], api_name="dream_zoom_ended",
                    api_visibility="private", **queue(f"{TAB}-ui", 8))
    # Not the network: choosing one replaces the layer lists, which a link's layers could not follow.
    page.link({"noise": from_noise, **{f"{kind}{i + 1}": slot for i in range(LAYER_SLOTS)
                                       for kind, slot in zip(("layer", "weight"), slots[2 * i:2 * i + 2])},
               "octaves": octaves, "iterations": iterations, "scale": scale, "step": step, "jitter": jitter,
               "max_objective": max_loss, "seed": seed, "size": max_side})
    return page
