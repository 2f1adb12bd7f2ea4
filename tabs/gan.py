"""GAN tab: samples from the shipped DCGAN / conditional GAN / WGAN-GP / StyleGAN, latent walks, truncation,
StyleGAN's style mixing and noise inputs, each model's training story, and a tiny GAN learning live on 2-D points.

Widgets and events only; the models, losses and sampling live in core.gan and core.gan2d.
Nothing heavy is imported until a handler runs, so the app starts fast.
"""
from __future__ import annotations

import functools
import secrets
import tempfile

import gradio as gr

from core.registry import read_card, shipped_path
from core.runtime import MAX_SEED
from tabs import live2d
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (DIVERGING, PALETTE, SEQUENTIAL, clamped, figure_to_image, number, on_gpu, picture, pyplot,
                         queue, shipped_choices, user_errors)
from tabs.live2d import learning_rate, play, require, steps_per_frame

TAB = "gan"
LIVE = "gan-live"  # the 2-D GAN gets its own slot: one user's live game never waits for another's grid
MODEL_LABELS = {"dcgan_fashion": "DCGAN · Fashion-MNIST", "cgan_fashion": "Conditional GAN · Fashion-MNIST",
                "wgangp_faces": "WGAN-GP · synthetic faces", "stylegan_faces": "StyleGAN · synthetic faces"}
STYLE_NOISE = {"fixed": "const", "fresh, drawn from seed A": "random", "off": "off"}  # label -> core.stylegan mode
NOISE_DRAWS = 8    # fresh noise draws behind the "what the noise does" panel
CROSSOVER = 2      # default: the 4-px and first 8-px layers from seed A (at 32 px these decide most of a face)
ALL_CLASSES = "one row per class"
MAX_GRID = 16      # images per side of a grid
GRID_PADDING = 2   # pixels between the images of a grid, before enlarging
ROW_LABEL_PX = 14  # font size of the class names beside a conditional grid's rows
MAX_WALK = 24      # frames in a latent walk
SHOW_PX = 96       # each image is enlarged to this many pixels for display
GAME_DATA = ("ring", "grid", "eight_gaussians", "spiral", "moons")  # the live game's data sets
GPU_SECONDS = 20   # ZeroGPU: a grid or a walk takes well under a second on a GPU

INTRO = ("**The forger and the art dealer.** A **generator** turns noise into images and a **discriminator** (a WGAN's "
         "*critic*) learns to tell them from real ones; each trains against the other. **DCGAN**: real/fake "
         "cross-entropy. **WGAN-GP**: a score kept 1-Lipschitz by a gradient penalty. **Conditional GAN**: told the class.")

LESSON = Lesson(
    tab=TAB, main="gan-generate", result="gan-samples",
    chapters="*Deep Learning with Python* 2nd ed. §12.5 (GANs) · *Generative Deep Learning* 2nd ed. ch. 4 "
             "(DCGAN, WGAN-GP, conditional GAN) and ch. 10 (StyleGAN)",
    equations=(r"GAN: $\min_G \max_D\ \mathbb E_x[\log D(x)] + \mathbb E_z[\log(1 - D(G(z)))]$ · "
               r"WGAN-GP critic: $L_D = \mathbb E_z[D(G(z))] - \mathbb E_x[D(x)] + "
               r"\lambda\,\mathbb E_{\hat x}\big[(\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2\big]$, "
               r"$\hat x = \epsilon x + (1 - \epsilon) G(z)$"),
    try_this=(
        Try("Truncation ψ 0.3", {"truncation": 0.3},
            "The same seed with every noise component kept within ±0.9: the images become more typical and "
            "more alike. Truncation trades variety for quality; the generator is unchanged."),
        Try("Ask for sneakers", {"model": "cgan_fashion", "class": "Sneaker", "truncation": 1.0},
            "The conditional GAN is given the class as an input: every image is a sneaker, and the noise only "
            "chooses which sneaker."),
        Try("Faces (WGAN-GP)", {"model": "wgangp_faces", "truncation": 1.0},
            "The same kind of generator trained with a critic and a gradient penalty on 32-px colour faces. "
            "Open the training story below to see its Wasserstein estimate fall."),
        Try("Faces (StyleGAN)", {"model": "stylegan_faces", "truncation": 1.0},
            "Same faces, same seed, a StyleGAN: z is mapped to w and every layer reads it as a style. Compare "
            "with the WGAN-GP's grid, then open 'StyleGAN: style mixing' below and move the crossover."),
    ),
    misconceptions=(
        ("The discriminator's loss tells you how good the images are.",
         "The shipped DCGAN's discriminator loss rises and then levels off while its images keep improving (see "
         "the training story). Only a WGAN's critic gap estimates a distance, and only within one run."),
        ("The generator copies training images.",
         "It never sees one: its only signal is the discriminator's gradient. It can still collapse onto a few "
         "modes, which is a different failure."),
        ("A GAN gives the likelihood of an image.",
         "It has no density at all: it only draws samples. Judge it by samples and measures such as FID."),
        ("StyleGAN's noise inputs are what make two faces different.",
         "Identity, pose and colours come from w. The per-layer noise only moves fine details: in 'what the "
         "noise does' below, four noise draws of one face differ in a few pixels, and the spread map shows where."),
        ("The gradient penalty clips the critic's weights.",
         "That was the first WGAN. WGAN-GP asks the gradient's norm to be 1 at random points between real and "
         "fake images, a soft version of the 1-Lipschitz constraint."),
    ),
    code=(Code("the gradient penalty (WGAN-GP)", "core/gan.py", ("gradient_penalty",),
               r"$\hat x = \epsilon x + (1-\epsilon)\tilde x,\ \epsilon \sim U[0, 1]$; "
               r"$\mathrm{GP} = \mathbb E_{\hat x}\big[(\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2\big]$"),
          Code("StyleGAN's modulated convolution (a style per layer)", "core/stylegan.py", ("ModulatedConv2d.forward",),
               r"$s = A(w)$, $w'_{ijk} = s_i\,w_{ijk}$, "
               r"$w''_{ijk} = w'_{ijk} \big/ \sqrt{\textstyle\sum_{i,k} {w'_{ijk}}^2 + \epsilon}$"),
          Code("one training step: critic, then generator", "core/gan.py", ("train_step",),
               r"DCGAN: $L_D = -\log \sigma(D(x)) - \log(1 - \sigma(D(G(z))))$, $L_G = -\log \sigma(D(G(z)))$ · "
               r"WGAN-GP: $L_D = D(G(z)) - D(x) + \lambda\,\mathrm{GP}$, $L_G = -D(G(z))$")),
)


# --- shipped models --------------------------------------------------------------------------

def model_choices() -> list[tuple[str, str]]:
    return shipped_choices("gan", MODEL_LABELS)  # the book's order: DCGAN, the conditional GAN, WGAN-GP


def _check_shipped(name) -> str:
    if name not in dict(model_choices()).values():
        raise ValueError(f"There is no shipped GAN called {name!r}.")
    return name


@functools.lru_cache(maxsize=None)
def _generator(name: str):
    """The shipped generator, built once per process on the app's device and only read afterwards."""
    from core import gan
    from core.checkpoints import load_shipped
    from core.runtime import app_device

    return gan.load_generator(load_shipped("gan", _check_shipped(name)), app_device())


def _class_names(name: str) -> list[str]:
    return read_card("gan", name).get("class_names") or []


def _labels_for(name: str, class_choice, columns: int):
    """Labels and rows for a conditional model: one class, or every class on its own row."""
    names = _class_names(name)
    if not names:
        return None, None
    if class_choice in (None, "", ALL_CLASSES):
        return [c for c in range(len(names)) for _ in range(columns)], len(names)
    if class_choice not in names:
        raise ValueError(f"Pick one of the classes: {', '.join(names)}.")
    return names.index(class_choice), None


def _is_style(name: str) -> bool:
    return read_card("gan", name)["config"].get("architecture") == "style"


def _truncation(value) -> float | None:
    value = float(value if value is not None else 1.0)
    if not 0.05 <= value <= 1.0:
        raise ValueError("Truncation must be between 0.05 (narrow, typical images) and 1 (the full normal).")
    return None if value >= 1.0 else value


def _enlarge(image, factor: int):
    from PIL import Image

    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _name_rows(grid, names: list[str], image_size: int, scale: int, padding: int = GRID_PADDING):
    """An enlarged grid with each row's class name written in a margin on its left."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=ROW_LABEL_PX)
    margin = max(int(font.getlength(name)) for name in names) + 12
    canvas = Image.new("RGB", (margin + grid.width, grid.height), "white")
    canvas.paste(grid.convert("RGB"), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(names):
        middle = (padding + row * (image_size + padding) + image_size / 2) * scale
        draw.text((margin - 6, middle), name, fill="black", font=font, anchor="rm")
    return canvas


def samples(name, seed, grid_size, class_choice=ALL_CLASSES, truncation=1.0):
    """A grid of new images from a shipped model -> (image, note). A conditional model's grid of
    every class carries the class names beside its rows."""
    from core import gan
    from core.data.images import image_grid
    from core.runtime import make_generator

    side, notes = number(grid_size, 0, 0, MAX_GRID + 1, whole=True), []
    if side < 1:
        raise ValueError(f"The grid needs at least 1 image per side, not {grid_size}.")
    if side > MAX_GRID:
        side = MAX_GRID
        notes.append(f"Grid size limited to {MAX_GRID}×{MAX_GRID}.")
    G = _generator(name)
    labels, rows = _labels_for(name, class_choice, side)
    n = side * (rows or side)
    images = gan.sample(G, n, make_generator(seed), labels=labels, truncation=_truncation(truncation))
    scale = max(1, SHOW_PX // G.cfg.image_size)
    grid = _enlarge(image_grid(images, nrow=side, padding=GRID_PADDING), scale)
    if rows:
        names = _class_names(name)
        grid = _name_rows(grid, names, G.cfg.image_size, scale)
        notes.append("Rows, top to bottom: " + ", ".join(names) + ".")
    return grid, " ".join(notes)


def class_box(name, class_choice=ALL_CLASSES):
    """The class dropdown for a model: enabled for a conditional one, else disabled and reset."""
    names = _class_names(_check_shipped(name))
    return gr.update(value=class_choice if class_choice in names else ALL_CLASSES, interactive=bool(names))


def model_samples(name, seed, grid_size, class_choice=ALL_CLASSES, truncation=1.0):
    """Another model chosen: its class box, and a grid from it -> (class box, image, note)."""
    box = class_box(name, class_choice)
    return (box, *samples(name, seed, grid_size, box["value"], truncation))


def new_samples(name, grid_size, class_choice=ALL_CLASSES, truncation=1.0):
    seed = secrets.randbelow(MAX_SEED + 1)
    image, note = samples(name, seed, grid_size, class_choice, truncation)
    return seed, image, note


def latent_walk(name, seed_a, seed_b, steps, mode="slerp", class_choice=ALL_CLASSES, truncation=1.0):
    """Images along a straight (lerp) or great-circle (slerp) path between two seeds' noise
    -> (strip image, GIF path). With every class of a conditional model, one named row per class."""
    from core import gan
    from core.data.images import image_grid, save_gif
    from core.runtime import clamp_seed, make_generator

    seed_a, seed_b = clamp_seed(seed_a), clamp_seed(seed_b)
    if seed_a == seed_b:
        raise ValueError(f"Both ends of the walk use seed {seed_a}, so it would stand still: pick two different seeds.")
    steps = number(steps, 2, 2, MAX_WALK, whole=True)
    G = _generator(name)
    trunc = _truncation(truncation)
    labels, rows = _labels_for(name, class_choice, 1)
    rows = rows or 1
    # The same z per row: rows differ only in the class label (conditional model, all classes).
    z0 = gan.noise(G.cfg, 1, make_generator(seed_a), trunc).expand(rows, -1)
    z1 = gan.noise(G.cfg, 1, make_generator(seed_b), trunc).expand(rows, -1)
    path = gan.interpolate(z0, z1, steps, mode)                     # [steps, rows, z_dim]
    images = gan.generate(G, path.reshape(steps * rows, -1),
                          None if labels is None else ([labels] * steps if rows == 1 else labels * steps), trunc)
    frames = images.reshape(steps, rows, *images.shape[1:])
    scale = max(1, SHOW_PX // G.cfg.image_size)
    strip = _enlarge(image_grid(frames.transpose(0, 1).reshape(steps * rows, *images.shape[1:]), nrow=steps,
                                padding=GRID_PADDING), scale)
    if rows > 1:
        strip = _name_rows(strip, _class_names(name), G.cfg.image_size, scale)
    gif_frames = [_enlarge(image_grid(frame, nrow=1, padding=0), scale) for frame in frames]
    gif_frames += gif_frames[-2:0:-1]  # there and back again, so the loop has no jump
    gif = save_gif(gif_frames, tempfile.NamedTemporaryFile(suffix=".gif", delete=False).name, 0.12)
    return strip, gif


# --- StyleGAN: style mixing and noise ---------------------------------------------------------

def _style_generator(name):
    if not _is_style(_check_shipped(name)):
        raise ValueError(f"{MODEL_LABELS.get(name, name)} has no per-layer styles: pick a StyleGAN model.")
    return _generator(name)


def _labelled_row(images, labels: list[str], scale: int):
    """Images side by side, enlarged, each with a short label underneath."""
    from PIL import Image, ImageDraw, ImageFont

    from core.data.images import image_grid

    row = _enlarge(image_grid(images, nrow=len(images), padding=GRID_PADDING), scale)
    font = ImageFont.load_default(size=ROW_LABEL_PX - 2)
    canvas = Image.new("RGB", (row.width, row.height + ROW_LABEL_PX + 6), "white")
    canvas.paste(row.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    step = (images.shape[-1] + GRID_PADDING) * scale
    for i, label in enumerate(labels):
        draw.text((GRID_PADDING * scale + i * step + step / 2, row.height + 2), label, fill="black", font=font, anchor="ma")
    return canvas


def style_mix(name, seed_a, seed_b, crossover, psi, noise_choice):
    """Coarse styles from seed A, fine from seed B -> (A · mix · B, the crossover swept, the noise panel, note).

    The sweep runs from crossover 0 (every layer reads B's w: image B) to the last (every layer reads A's:
    image A). The noise panel keeps the mix's styles and redraws only the per-pixel noise."""
    import torch

    from core import stylegan
    from core.runtime import clamp_seed, make_generator

    G = _style_generator(name)
    seed_a, seed_b = clamp_seed(seed_a), clamp_seed(seed_b)
    layers = G.num_styles
    crossover, crossover_note = clamped(crossover, CROSSOVER, 0, layers, "the crossover layer", whole=True)
    psi, psi_note = clamped(psi, 0.7, 0.0, 1.0, "ψ")
    if noise_choice not in STYLE_NOISE:
        raise ValueError(f"Noise must be one of: {', '.join(STYLE_NOISE)}.")
    noise = STYLE_NOISE[noise_choice]
    ws_a, ws_b = stylegan.styles(G, stylegan.latents(G, [seed_a, seed_b]), psi).split(1)

    def draw(ws):  # "fresh" noise is drawn from seed A, so the same settings give the same picture
        return stylegan.render(G, ws, noise, make_generator(seed_a) if noise == "random" else None)

    mixed = stylegan.mix_styles(ws_a, ws_b, crossover)
    scale = max(1, SHOW_PX // G.cfg.image_size)
    trio = _labelled_row(torch.cat([draw(ws_a), draw(mixed), draw(ws_b)]), ["A", "mix", "B"], scale)
    sweep_ws = torch.cat([stylegan.mix_styles(ws_a, ws_b, c) for c in range(layers + 1)])
    sweep = _labelled_row(draw(sweep_ws), [str(c) for c in range(layers + 1)], scale)
    resolutions = G.layer_resolutions()
    coarse = f"{resolutions[0]}–{resolutions[crossover - 1]} px" if crossover else "none"
    fine = f"{resolutions[crossover]}–{resolutions[-1]} px" if crossover < layers else "none"
    note = (f"{psi_note}{crossover_note}Layers 0–{crossover - 1} read seed {seed_a}'s style (coarse: {coarse}); "
            f"layers {crossover}–{layers - 1} read seed {seed_b}'s (fine: {fine})." if 0 < crossover < layers else
            f"{psi_note}{crossover_note}Crossover {crossover}: every layer reads seed "
            f"{seed_a if crossover else seed_b}'s style, so the mix is that image.")
    return trio, sweep, noise_panel(G, mixed, seed_a), note


def noise_panel(G, ws, seed: int):
    """The same styles with NOISE_DRAWS fresh noise draws, the noise switched off, and where the draws differ
    (per-pixel standard deviation, SEQUENTIAL colours: bright = the noise changes this pixel most)."""
    import matplotlib
    import torch

    from core import stylegan
    from core.runtime import make_generator

    draws = torch.cat([stylegan.render(G, ws, "random", make_generator(seed + 1 + i)) for i in range(NOISE_DRAWS)])
    quiet = stylegan.render(G, ws, "off")
    spread = draws.std(0).mean(0)
    spread = (spread / spread.max().clamp_min(1e-6)).numpy()
    heat = torch.from_numpy(matplotlib.colormaps[SEQUENTIAL](spread)[..., :3]).permute(2, 0, 1).float()[None]
    shown = torch.cat([draws[:4], quiet, heat])
    scale = max(1, SHOW_PX // G.cfg.image_size)
    return _labelled_row(shown, ["noise 1", "noise 2", "noise 3", "noise 4", "no noise", "spread"], scale)


# --- the training story ----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _timeline_strip(name: str):
    from PIL import Image

    path = shipped_path("gan", name).with_name(f"{name}.timeline.png")
    return Image.open(path).copy()


def story_frame(name, index):
    """One frame of the timeline: the fixed noise batch as the model saw it at that point."""
    card = read_card("gan", _check_shipped(name))
    timeline = card["timeline"]
    count = len(timeline["steps"])
    index = number(index, 0, 0, count - 1, whole=True)
    height = timeline["frame_height"]
    strip = _timeline_strip(name)
    frame = strip.crop((0, index * height, strip.width, (index + 1) * height))
    caption = (f"Frame {index + 1} of {count}: step {timeline['steps'][index]:,} "
               f"(epoch {timeline['epochs'][index]:g}). The same noise every frame, so the change is learning.")
    return _enlarge(frame, 2), caption


def story_model(name):
    """Model changed: reset the scrubber to the last frame and redraw curves and card."""
    card = read_card("gan", _check_shipped(name))
    last = len(card["timeline"]["steps"]) - 1
    image, caption = story_frame(name, last)
    return gr.Slider(minimum=0, maximum=last, value=last, step=1), image, caption, loss_curves(name), card_markdown(name)


def loss_curves(name):
    """The losses logged during training, as a picture."""
    plt = pyplot()

    card = read_card("gan", name)
    curves = card.get("curves") or []
    steps = [c["step"] for c in curves]
    wgan = card["config"]["loss"] == "wgan-gp"
    panels = ([("loss_d", "critic loss"), ("loss_g", "generator loss")], [("wasserstein", "Wasserstein estimate"),
              ("gp", "gradient penalty")]) if wgan else \
        ([("loss_d", "discriminator loss"), ("loss_g", "generator loss")], [("d_real", "D(real)"), ("d_fake", "D(fake)")])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), dpi=90)
    for ax, panel in zip(axes, panels):
        for colour, (key, label) in zip(PALETTE, panel):  # blue, then orange
            ax.plot(steps, [c.get(key) for c in curves], label=label, linewidth=1, color=colour)
        ax.set_xlabel("generator step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_image(fig)


def card_markdown(name) -> str:
    card = read_card("gan", name)
    cfg = card["config"]
    notes = card.get("notes", "")
    return (f"**{MODEL_LABELS.get(name, name)}**: {cfg['image_size']}×{cfg['image_size']} pixels, "
            f"{card['parameters']['generator']:,} generator parameters, trained {card['steps']:,} steps "
            f"({card['epochs']} epochs) in {card['wall_time_s'] / 60:.0f} min on {card['hardware']}.  \n"
            f"Data: {card['data']}.  \nCommand: `{card['command']}`" + (f"  \n{notes}" if notes else ""))


# --- the live 2-D GAN ------------------------------------------------------------------------

def live_reset(distribution, seed, lr_g_log, lr_d_log):
    """A fresh game for this user -> (state, picture, status)."""
    from core.gan2d import Gan2D
    from core.runtime import clamp_seed

    live = Gan2D(distribution, seed=clamp_seed(seed), lr_g=learning_rate(lr_g_log),
                 lr_d=learning_rate(lr_d_log))
    return live, live_picture(live), live_status(live)


def live_start(live, distribution, seed, lr_g_log, lr_d_log):
    """Opening the panel: keep this user's game if there is one, else start one."""
    if live is None:
        return live_reset(distribution, seed, lr_g_log, lr_d_log)
    return live, live_picture(live), live_status(live)


def live_step(live, steps, lr_g_log, lr_d_log):
    """Train `steps` rounds once -> (state, picture, status)."""
    require(live).set_learning_rates(learning_rate(lr_g_log), learning_rate(lr_d_log))
    live.train(steps_per_frame(steps))
    return live, live_picture(live), live_status(live)


def live_play(live, steps, lr_g_log, lr_d_log):
    """Keep training, a frame every `steps` rounds, until paused or diverged."""
    yield from play(live_step, live, steps, lr_g_log, lr_d_log)


def live_set_learning_rates(live, lr_g_log, lr_d_log):
    if live is not None:
        live.set_learning_rates(learning_rate(lr_g_log), learning_rate(lr_d_log))
    return live


def live_status(live) -> str:
    lr_g, lr_d = live.opt_g.param_groups[0]["lr"], live.opt_d.param_groups[0]["lr"]
    if live.diverged:
        return (f"⚠️ **The game diverged**: {live.diverged} (learning rates G {lr_g:.0e}, D {lr_d:.0e}). "
                "Lower the learning rates and press Reset.")
    if not live.history:
        return f"Step 0. Learning rates G {lr_g:.0e}, D {lr_d:.0e}. Press Play or Step."
    _, loss_d, loss_g = live.history[-1]
    return (f"Step {live.step:,}: D loss {loss_d:.3f}, G loss {loss_g:.3f} (at the equilibrium D loss → "
            f"2·ln 2 ≈ 1.386 and G loss → ln 2 ≈ 0.693). Learning rates G {lr_g:.0e}, D {lr_d:.0e}.")


def live_picture(live):
    """D's decision map (DIVERGING: orange = "fake", purple = "real") with the real (black) and generated
    (blue) points, and both losses (blue D, orange G)."""
    from core.data.toy2d import EXTENT

    plt = pyplot()

    fig, (ax_map, ax_loss) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=80, gridspec_kw={"width_ratios": [1, 1.15]})
    ax_map.imshow(live.decision_map(60).numpy(), extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), cmap=DIVERGING,
                  vmin=0, vmax=1, interpolation="bilinear")
    real, fake = live.real_points().numpy(), live.fake_points().numpy()
    ax_map.scatter(real[:, 0], real[:, 1], s=4, c=PALETTE[7], label="real")
    ax_map.scatter(fake[:, 0].clip(-EXTENT, EXTENT), fake[:, 1].clip(-EXTENT, EXTENT), s=5, c=PALETTE[0],
                   edgecolors="white", linewidths=0.3, label="generated")
    ax_map.set_xlim(-EXTENT, EXTENT), ax_map.set_ylim(-EXTENT, EXTENT)
    ax_map.set_title("D's map: purple = 'real', orange = 'fake', white = unsure", fontsize=9)
    ax_map.legend(loc="lower right", fontsize=7, markerscale=3)
    if live.history:
        steps, loss_d, loss_g = zip(*live.history)
        ax_loss.plot(steps, loss_d, label="discriminator", linewidth=0.8, color=PALETTE[0])
        ax_loss.plot(steps, loss_g, label="generator", linewidth=0.8, color=PALETTE[1])
        ax_loss.legend(fontsize=8)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("losses", fontsize=9)
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_image(fig)


# --- layout ----------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    choices = model_choices()
    if choices:
        _build_models(choices, page)
    else:
        gr.Markdown("**No trained GAN is shipped yet** (`python -m core.train gan --help` makes one). "
                    "The live 2-D GAN below works without one.")
    _build_live()
    return page


def _build_models(choices, page) -> None:
    names = [value for _, value in choices]
    class_options = [ALL_CLASSES] + next((_class_names(n) for n in names if _class_names(n)), [])
    conditional = bool(_class_names(names[0]))  # the default model (the DCGAN) has no classes: box disabled
    gpu = on_gpu(GPU_SECONDS)  # sampling handlers: on ZeroGPU the model's GPU exists only inside these calls
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="gan-generate")
                fresh = gr.Button("New samples (random seed)")
            model = gr.Dropdown(choices, value=names[0], label="model", min_width=240, elem_id="gan-model")
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED, min_width=90)
                grid = gr.Slider(1, MAX_GRID, 8, step=1, label="grid size (images per side)", min_width=160)
            klass = gr.Dropdown(class_options, value=ALL_CLASSES, interactive=conditional,
                                label="class (conditional GAN only)", min_width=200, elem_id="gan-class")
            truncation = gr.Slider(0.05, 1.0, 1.0, step=0.05, label="truncation ψ",
                                   info="below 1: more typical, less varied images. DCGAN-style models redraw each "
                                        "noise component beyond ±3ψ (BigGAN); StyleGAN pulls w towards its average")
            note = gr.Markdown(elem_id="gan-note")
        with gr.Column(scale=2):
            image = picture("samples", "one new image per noise vector drawn from the seed, row by row (a "
                             "conditional grid of every class: one named row per class); shown enlarged",
                             elem_id="gan-samples")
    inputs = [model, seed, grid, klass, truncation]
    gr.on([go.click, page.ran.change], user_errors(gpu(samples)), inputs, [image, note], api_name="gan_samples",
          **queue(TAB, 2))
    model.change(user_errors(gpu(model_samples)), inputs, [klass, image, note], api_name="gan_samples_from_model",
                 api_visibility="undocumented", **queue(TAB, 2))
    # .input, not .change: a class box reset by a model change must not draw the grid a second time.
    klass.input(user_errors(gpu(samples)), inputs, [image, note], api_name="gan_samples_from_class",
                api_visibility="undocumented", **queue(TAB, 2))
    fresh.click(user_errors(gpu(new_samples)), [model, grid, klass, truncation], [seed, image, note],
                api_name="gan_new_samples", **queue(TAB, 2))
    page.link({"model": model, "seed": seed, "grid": grid, "class": klass, "truncation": truncation})
    with gr.Accordion("Latent walk", open=True):
        gr.Markdown("Walk from one seed's noise to another's. **slerp** follows the sphere where Gaussian noise "
                    "lives; **lerp** cuts through its middle, where mid-way images often fade.")
        with gr.Row():  # the two dropdowns on their own row: beside five other controls they were cut off
            walk_model = gr.Dropdown(choices, value=names[0], label="model", elem_id="gan-walk-model")
            walk_class = gr.Dropdown(class_options, value=ALL_CLASSES, interactive=conditional,
                                     label="class (conditional GAN only)", elem_id="gan-walk-class")
        with gr.Row():
            seed_a = gr.Number(1, label="from seed", precision=0, minimum=0, maximum=MAX_SEED)
            seed_b = gr.Number(2, label="to seed", precision=0, minimum=0, maximum=MAX_SEED)
            steps = gr.Slider(2, MAX_WALK, 10, step=1, label="steps")
            mode = gr.Radio(["slerp", "lerp"], value="slerp", label="path")
        walk_button = gr.Button("Walk", variant="primary")
        strip = picture("the walk, left to right", "images from noise vectors on the path from the first seed's "
                         "noise (left) to the second's (right)")
        gif = picture("as an animation", "the same walk played there and back again", type="filepath")
        walk_model.change(user_errors(class_box), [walk_model, walk_class], walk_class, api_name="gan_walk_class_box",
                          api_visibility="private", **queue(TAB, 2))
        walk_button.click(user_errors(gpu(latent_walk)),
                          [walk_model, seed_a, seed_b, steps, mode, walk_class, truncation],
                          [strip, gif], api_name="gan_latent_walk", **queue(TAB, 2))
    style_names = [n for n in names if _is_style(n)]
    if style_names:
        _build_style_mixing([(label, value) for label, value in choices if value in style_names], gpu)
    with gr.Accordion("Training story: from noise to images", open=False) as story_box:
        story = gr.Dropdown(choices, value=names[0], label="model")
        frames = len(read_card("gan", names[0])["timeline"]["steps"])
        scrub = gr.Slider(0, frames - 1, frames - 1, step=1, label="timeline (drag: from noise to clothes)")
        frame_caption = gr.Markdown()
        frame = picture("the same noise, during training", "the generator's images for one fixed batch of noise "
                         "at the training step the slider names")
        curves = picture("losses during training", "generator steps across; left: the two networks' losses "
                          "(blue D or the critic, orange G); right: D(real) in blue and D(fake) in orange for a "
                          "DCGAN, the Wasserstein estimate in blue and the gradient penalty in orange for a WGAN-GP")
        with gr.Accordion("model card", open=False):
            card = gr.Markdown(card_markdown(names[0]))
        scrub.change(user_errors(story_frame), [story, scrub], [frame, frame_caption], api_name="gan_story_frame",
                     **queue(TAB + "-story", 8))
        story.change(user_errors(story_model), story, [scrub, frame, frame_caption, curves, card],
                     api_name="gan_story_model", **queue(TAB, 2))
        # Drawn when first opened: the curves need matplotlib, which start-up must not import.
        story_box.expand(user_errors(story_model), story, [scrub, frame, frame_caption, curves, card],
                         api_name="gan_story_model_on_open", api_visibility="undocumented", **queue(TAB, 2))


def _build_style_mixing(choices, gpu) -> None:
    layers = _generator_layers(choices[0][1])
    with gr.Accordion("StyleGAN: style mixing, truncation in w, noise", open=False):
        gr.Markdown("A mapping network turns z into **w**; each layer of the synthesis network reads its own copy of "
                    "w as a **style**. Give the first layers (coarse: 4–8 px) seed A's w and the rest (fine: 8–32 px) "
                    "seed B's. At 32 px the coarse layers decide most of a face; the sweep shows where it changes.")
        with gr.Row():
            style_model = gr.Dropdown(choices, value=choices[0][1], label="model", elem_id="gan-style-model")
            mix_a = gr.Number(3, label="seed A (coarse styles)", precision=0, minimum=0, maximum=MAX_SEED)
            mix_b = gr.Number(8, label="seed B (fine styles)", precision=0, minimum=0, maximum=MAX_SEED)
        with gr.Row():
            crossover = gr.Slider(0, layers, CROSSOVER, step=1, label="crossover layer",
                                  info=f"layers below it read A's style, the rest B's (0: all B, {layers}: all A)")
            psi = gr.Slider(0.0, 1.0, 0.7, step=0.05, label="ψ (truncation in w)",
                            info="w' = w̄ + ψ (w − w̄): 0 is the average face, 1 the full variety")
            noise = gr.Radio(list(STYLE_NOISE), value="fixed", label="noise inputs")
        mix_button = gr.Button("Mix styles", variant="primary", elem_id="gan-style-mix")
        note = gr.Markdown()
        trio = picture("A, the mix, B", "left seed A's face, right seed B's, in the middle the mix: A's styles in "
                        "the layers below the crossover, B's above", elem_id="gan-style-trio")
        sweep = picture("the crossover swept", "the same two seeds mixed at every crossover, from 0 (left: every "
                         "layer reads B, image B) to the last (right: every layer reads A, image A)")
        noise_image = picture("what the noise does", "the mix with four fresh draws of the per-layer noise, with "
                              "the noise switched off, and the spread: per-pixel standard deviation over eight draws "
                              "(viridis: bright yellow = the noise changes this pixel most, dark = not at all)")
        mix_button.click(user_errors(gpu(style_mix)), [style_model, mix_a, mix_b, crossover, psi, noise],
                         [trio, sweep, noise_image, note], api_name="gan_style_mix", **queue(TAB, 2))


def _generator_layers(name: str) -> int:
    """How many styles a shipped style generator reads, from its card: building the app imports no torch, so this
    is len(core.stylegan.style_resolutions(image_size)) without the import (test_gan checks the two agree)."""
    config = read_card("gan", name)["config"]
    return 1 + 2 * (config["image_size"].bit_length() - 3)  # one layer at 4 px, two at each doubling


def _build_live() -> None:
    with gr.Accordion("Watch a GAN learn (2-D)", open=False) as live_box:
        gr.Markdown("A tiny generator (2-D noise → 2-D point) against a tiny discriminator, trained live. "
                    "The background is the discriminator's verdict; watch the blue forgeries slide towards the "
                    "black data and the map fade to white as it can no longer tell. Push a learning rate to 1 "
                    "or more to see the game fall apart.")
        with gr.Row():
            controls = live2d.settings_row("ring", names=GAME_DATA)
            lr_g = gr.Slider(-5, 1, -3, step=0.25, label="generator learning rate (log10; -3 = 0.001)")
            lr_d = gr.Slider(-5, 1, -3, step=0.25, label="discriminator learning rate (log10)")
        live2d.buttons_row(controls)
        live = picture("real vs generated points, and the losses",
                           "left, the plane (x across, y up): D's probability that a point is real as the background "
                           "(purple = real, orange = fake, white = 0.5, can't tell), real points black, generated "
                           "points blue; right, the losses against the training step (blue D, orange G)")
        live2d.wire("gan", live_box, controls, [lr_g, lr_d], [live], live_reset, live_start, live_step,
                    live_play, LIVE)
        for slider, which in ((lr_g, "generator"), (lr_d, "discriminator")):  # page only: Step and Play read them too
            slider.change(user_errors(live_set_learning_rates), [controls.state, lr_g, lr_d], controls.state,
                          api_name=f"gan_live_learning_rate_{which}", api_visibility="private", **queue(LIVE, 4))
