"""Energy-based model tab: Langevin dynamics turning noise into clothes step by step, what goes wrong with
other step sizes and noise levels, the energy as an out-of-distribution score, repairing damaged images,
and a 2-D EBM learning live with its particles moving on the landscape.

Widgets and events only; the energy networks, Langevin dynamics and training live in core.ebm. Nothing
heavy is imported until a handler runs, so the app starts fast.
"""
from __future__ import annotations

import functools
import time

import gradio as gr

from core.data.toy2d import EXTENT
from core.registry import read_card, shipped_path
from core.runtime import MAX_SEED
from tabs import live2d, stepviewer
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (PALETTE, SEQUENTIAL, bench_records, clamped, fashion_test_split, figure_to_image,
                         image_upload, on_gpu, picture, pyplot, queue, user_errors)
from tabs.live2d import learning_rate, play, require, steps_per_frame

TAB = "ebm"
VIEW = "ebm-view"   # scrubbing and playing the viewers: cheap, their own wider slot
LIVE = "ebm-live"   # the live 2-D EBM: one user's game never waits for another's sampling
SHIPPED = "fashion"
TRAIN_COMMAND = "python -m core.train ebm --epochs 20 --minutes 70 --threads 1"
MAX_SAMPLES = 36
MAX_STEPS = 2000
DEFAULT_STEPS = 200
DEFAULT_STEP_SIZE, DEFAULT_NOISE = 10.0, 0.005  # the sampler the shipped model trained with
MAX_STEP_SIZE, MAX_NOISE = 1000.0, 1.0
SHOW = 2                 # each 32-px image is shown at 64 px
SCORED = 500             # images per set in the energy histogram
COMPARE_STEPS = 200
COMPARE_COLUMNS = 8
LABEL_PX = 13
GPU_SECONDS = 60         # ZeroGPU: 36 samples × 2000 Langevin steps take seconds on a GPU
LR_LOG_LOW, LR_LOG_HIGH, LR_LOG_DEFAULT = -4.0, 0.0, -2.5
FAILED_AFTER, FAILED_GAP = 50, 1.0  # live 2-D: energies this far apart this long mean training has failed
# Colour-blind safe (tabs.common.PALETTE): real data blue, the model's samples and particles orange; the live
# landscape's data in sky blue, which stands out on viridis's dark valleys.
REAL, SAMPLES, FACES, NOISE_COLOUR = PALETTE[0], PALETTE[1], PALETTE[3], "#999999"
PARTICLES, LIVE_DATA = PALETTE[1], PALETTE[4]

INTRO = """**One network E(x) gives every image a single number, its energy: low for images like the training clothes, high for
anything else.** Sampling walks downhill on E from noise (Langevin dynamics); training pushes E down on real images and up on the walk's."""

LESSON = Lesson(
    tab=TAB, main="ebm-sample", result="ebm-final",
    chapters="*Generative Deep Learning* ch. 7 (energy-based models: the Boltzmann distribution, Langevin dynamics, "
             "contrastive divergence, the replay buffer) · Du & Mordatch 2019",
    equations=(r"$p(x) = e^{-E(x)}/Z$ · Langevin: $x_{k+1} = x_k - \eta\,\nabla_x E(x_k) + \sigma\,\varepsilon$, "
               r"$\varepsilon \sim \mathcal N(0, I)$ · contrastive divergence: "
               r"$L = \overline{E(x_{\rm real})} - \overline{E(x^-)} + \alpha\,\big(\overline{E(x_{\rm real})^2} + "
               r"\overline{E(x^-)^2}\big)$"),
    try_this=(
        Try("10 steps", {"steps": 10, "step": 10, "noise": 0.005, "start": "noise"},
            "After 10 steps the samples are still noise, and their energy is far above the dashed line of real "
            "clothes: from fresh noise the walk needs a few hundred steps to arrive."),
        Try("Step η = 1000", {"steps": 200, "step": 1000, "noise": 0.005, "start": "noise"},
            "A hundred times the trained step slams every pixel to black or white, and the energy rates these blocks "
            "*lower* than real clothes (the orange line ends below the dashed one): training never showed the model "
            "such images, so it never learned to push their energy up."),
        Try("Noise σ = 0.05", {"steps": 200, "step": 10, "noise": 0.05, "start": "noise"},
            "Ten times the trained noise: every step adds more than the gradient removes, so the garments stay "
            "grainy and end at a higher energy than with σ = 0.005."),
        Try("Training chains", {"steps": 50, "step": 10, "noise": 0.005, "start": "chains"},
            "The chains training kept walking for thousands of steps (its replay buffer): every kind of garment, "
            "where fresh noise rolls mostly into the widest valley (shirts). An EBM's variety comes from long chains."),
    ),
    misconceptions=(
        ("The network outputs the probability of an image.",
         "It outputs one unnormalised number, the energy. p(x) = exp(−E(x))/Z needs Z, a sum over every possible "
         "image that is never computed: Langevin only needs ∇ₓE, and training replaces Z's gradient by the energies "
         "of the model's own samples."),
        ("Sampling trains the network.",
         "During Langevin dynamics only the image moves: the gradient is taken with respect to the pixels and the "
         "weights stay frozen. Training is a separate step (contrastive divergence) that uses the walk's results."),
        ("A lower energy means a better image.",
         "The energy only knows what contrastive divergence showed it: the too-large step's black-and-white blocks "
         "score lower than real clothes. Low energy means “like what training pushed down”, nothing more."),
        ("The noise σ is what makes the samples varied.",
         "At the trained σ = 0.005 it hardly matters: without it the walk ends at nearly the same images (see "
         "“What goes wrong”). The variety comes from where the chains start, and from training's long chains."),
    ),
    code=(Code("Langevin dynamics, the walk downhill", "core/ebm.py", ("langevin",),
               r"$x_{k+1} = \mathrm{clip}\big(x_k - \eta\,\mathrm{clip}(\nabla_x E(x_k), \pm c) + "
               r"\sigma\,\varepsilon\big)$, $\varepsilon \sim \mathcal N(0, I)$ (η = `step_size`, σ = `noise`, "
               r"c = `grad_clip`; pixels clipped to [−1, 1])"),
          Code("contrastive divergence, the training loss", "core/ebm.py", ("contrastive_divergence",),
               r"$L = \overline{E(x_{\rm real})} - \overline{E(x^-)} + \alpha\,\big(\overline{E(x_{\rm real})^2} + "
               r"\overline{E(x^-)^2}\big)$: down on real images, up on the samples $x^-$")),
)

IDEA = """An energy-based model is one network E(x) that gives any image a single number, its **energy**: low for
images like the training data, high for anything else. It defines a probability by the Boltzmann
distribution of physics, **p(x) = exp(−E(x)) / Z**, where Z = ∫ exp(−E(x)) dx sums over every possible image
and can never be computed. Neither sampling nor training needs it:

**Sampling: Langevin dynamics.** Start from noise and walk downhill on the energy, adding a little noise at
each step so the walk explores instead of sticking in the nearest dip:
**x ← x − η · ∇ₓE(x) + σ · ε**, ε ~ N(0, I). Only the image moves: the gradient is taken with respect to the
input, and the network's weights stay as they are. (Textbook Langevin ties σ = √(2η) and samples p exactly
after infinitely many tiny steps; the book's EBM, like Du & Mordatch 2019, takes a few hundred large steps,
clips each pixel's gradient, and uses far less noise.)

**Training: contrastive divergence.** The gradient of the log-likelihood is ∇E(real) − E_p[∇E(x)]: push the
energy **down on real images** and **up on the model's own samples**, which Langevin provides:
**loss = mean E(x_real) − mean E(x_sample) + α · (mean E(x_real)² + mean E(x_sample)²)**; the α term keeps the
energies near 0. The chains start mostly from a **replay buffer** of earlier samples, so each training step's
60 Langevin steps continue long chains instead of starting again from noise."""

SAMPLE_TEXT = """Start from uniform noise and follow every image down the energy. The viewer keeps the frames, so the
slider scrubs through the steps without running the network again; the plot shows **each sample's energy
over the steps** (thin lines), their mean (thick), and the mean energy of real test clothes (dashed): the walk
has arrived when the samples score like real images. The model trained with steps of 10, noise 0.005 and
60 steps per training step from its buffer; from fresh noise it takes a few hundred, and most chains roll into
the widest valley (mostly shirts). **Start from the training chains** to continue the persistent chains
that training kept walking for thousands of steps (the newest 1,024 of its replay buffer, shipped with the
model): they have spread over every kind of garment, which is where an EBM's variety comes from."""

COMPARE_TEXT = """The same start noise in every column, walked 200 steps by five samplers. **No noise** gives
almost the same images as the trained sampler: with σ this small the walk is nearly plain gradient descent,
and the variety comes from where each chain starts. **More noise** keeps the images noisy: every step adds
more than the gradient can remove. **Too large a step** slams every pixel to pure black or white: crisp
silhouettes, but none of Fashion-MNIST's grey shades, and the energy rates them *better* than real clothes.
Training never showed the model such images (its samples were walked with the small step), so it never
learned to push their energy up: an EBM only knows what contrastive divergence showed it. **Too small a step**
never leaves the noise. The numbers beside each row are its mean final energy."""

SCORE_TEXT = """The energy is a score: the network was trained only to rank images, so it can flag what it never
saw. The histogram shows the energies of real test clothes, uniform noise, the model's own samples and
synthetic faces (grey, 32 px); upload any picture to see where it falls. The AUROC says how well one
threshold on the energy separates the clothes from the others (1: perfectly, 0.5: a coin toss)."""

REPAIR_TEXT = """Damage a test image, then let Langevin dynamics walk it downhill. With **noise**, every pixel moves;
with a **hidden rectangle** (painted flat grey), the pixels outside it are held fixed and only the hole walks
(inpainting): the energy, a judgement of the whole image, fills the hole with what fits the rest."""

LIVE_TEXT = """A small MLP energy on the plane learns the data in front of you by contrastive divergence. **Left**:
the energy landscape (dark = low energy = likely), the data (light blue) and Langevin particles (orange) that walk on
it; as training goes on, a valley forms along the data and the particles settle into it (on the eight
Gaussians it first digs one ring through all eight, and only later the dips between them). **Right**:
the mean energy of real points and of the samples: contrastive divergence pulls the first down and the
second up, and they meet when the samples cannot be told from the data. Set the learning rate to 1 (log10 = 0)
to see training fail: the landscape changes faster than the particles can follow, and the two energies part."""


# --- the shipped model -----------------------------------------------------------------------------

def shipped() -> bool:
    return shipped_path(TAB, SHIPPED).is_file()


def _model():
    from core import ebm

    if not shipped():
        raise ValueError(f"No energy model is shipped yet: make one with `{TRAIN_COMMAND}`.")
    return ebm.load_model(SHIPPED)


@functools.lru_cache(maxsize=None)
def _test_images():
    """Fashion-MNIST's test split at 32×32 in the model's [−1, 1], made once per process and only read afterwards."""
    return fashion_test_split()[0] * 2 - 1


@functools.lru_cache(maxsize=None)
def _real_energies():
    """E(x) of the first SCORED real test images, computed once per process and only read afterwards."""
    from core.ebm import energies

    return energies(_model(), _test_images()[:SCORED])


def _real_energy() -> float:
    """The mean energy of real test images: the level a finished sample should reach."""
    return _real_energies().mean().item()


def model_card() -> str:
    try:
        card = read_card(TAB, SHIPPED)
    except (OSError, ValueError):
        return f"**No energy model is shipped yet**: make one with `{TRAIN_COMMAND}`."
    earlier = card.get("fine_tuned_from") or {}
    steps = card.get("steps", 0) + (earlier.get("steps") or 0)
    commands = " then ".join(f"`{command}`" for command in [card.get("command"), *card.get("resumed_with", [])]
                             if command)
    text = (f"**Shipped model `{SHIPPED}`**: the book's energy network (four stride-2 convolutions with Swish, "
            f"{card.get('parameters', 0):,} parameters), {steps:,} steps of contrastive divergence on Fashion-MNIST "
            f"({card.get('wall_time_s', 0) / 60:.0f} min on {card.get('hardware', '?')}), made with {commands}.")
    for _, record in bench_records("ebm_quality"):  # the full run's figures where there are some
        auroc = ((record.get("figures") or {}).get("ood") or {}).get("auroc") or {}
        if isinstance(auroc.get("noise"), (int, float)) and isinstance(auroc.get("faces"), (int, float)):
            text += (f" Energy as an out-of-distribution score (`bench/ebm_quality.py`): AUROC "
                     f"{auroc['noise']:.3f} against noise, {auroc['faces']:.3f} against faces"
                     + (" (quick run)." if record.get("quick") else "."))
            break
    return text


# --- settings from widgets or API calls --------------------------------------------------------------

def _sampler(steps, step_size, noise) -> tuple[int, float, float, str]:
    steps, a = clamped(steps, DEFAULT_STEPS, 1, MAX_STEPS, "steps", whole=True)
    step_size, b = clamped(step_size, DEFAULT_STEP_SIZE, 0.0, MAX_STEP_SIZE, "the step size")
    noise, c = clamped(noise, DEFAULT_NOISE, 0.0, MAX_NOISE, "the noise")
    note = a + b + c
    if step_size == 0:
        note += "With step size 0 the images never move downhill: only the noise changes them. "
    return steps, step_size, noise, note


def _checked(energy, step: int):
    """Energies of a step, refused in a sentence when they are no longer numbers."""
    import torch

    if not torch.isfinite(energy).all():
        raise ValueError(f"The energies became {energy[~torch.isfinite(energy)][0].item()} at step {step}: the "
                         "model has diverged, so its gradient no longer leads anywhere.")
    return energy


def _grid(images, columns: int, scale: int = SHOW):
    """[N, 1, 32, 32] in [−1, 1] -> an enlarged PIL grid."""
    from PIL import Image

    from core.data.images import image_grid

    grid = image_grid((images + 1) / 2, nrow=columns, padding=1)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def _columns(n: int) -> int:
    return min(n, max(1, round(n ** 0.5 + 0.49)))


# --- sampling with the step viewer -------------------------------------------------------------------

def _caption(step: int, steps: int, energy) -> str:
    if step == 0:
        return (f"**Step 0 of {steps}**: the starting images, mean energy {energy.mean():.3f} "
                f"(real clothes: {_real_energy():.3f}).")
    return (f"**Step {step} of {steps}**: mean energy {energy.mean():.3f}, from {energy.min():.3f} to "
            f"{energy.max():.3f} (real clothes: {_real_energy():.3f}).")


def energy_plot(curves, steps: int):
    """Each sample's energy over the steps (thin), their mean (thick), real clothes' mean (dashed)."""
    import numpy as np

    plt = pyplot()
    curves = np.asarray(curves)  # [steps so far + 1, n]
    fig, ax = plt.subplots(figsize=(5.2, 2.8), dpi=80)
    x = np.arange(len(curves))
    ax.plot(x, curves, color=SAMPLES, linewidth=0.5, alpha=0.45)
    ax.plot(x, curves.mean(1), color=SAMPLES, linewidth=2, label="samples (mean)")
    ax.axhline(_real_energy(), color=REAL, linestyle="--", linewidth=1.2, label="real test clothes (mean)")
    ax.set_xlim(0, max(steps, 1))
    ax.set_yscale("symlog", linthresh=0.05)
    ticks = [t for t in (-1, -0.1, 0, 0.1, 1, 3) if curves.min() - 0.05 <= t <= curves.max() + 0.5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])  # symlog's own ticks pile up around 0
    ax.set_xlabel("Langevin step", fontsize=8)
    ax.set_ylabel("energy E(x)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return figure_to_image(fig)


STARTS = {"noise": "uniform noise", "chains": "the training chains (replay buffer)"}


def _start(start_from, n: int, generator):
    """Where the chains start: fresh uniform noise, or n of the persistent chains training kept walking."""
    import torch

    from core import ebm

    if start_from not in STARTS:
        raise ValueError(f"Start from {' or '.join(STARTS.values())}, not {start_from!r}.")
    if start_from == "noise":
        return ebm.uniform_noise(n, _model().config.image_size, generator)
    chains = ebm.load_chains(SHIPPED)
    if not len(chains):
        raise ValueError("This checkpoint keeps no training chains: start from uniform noise.")
    return chains[torch.randperm(len(chains), generator=generator)[:n]]


def generate(seed, n, steps, step_size, noise, start_from="noise"):
    """Langevin from noise (or the training chains), a viewer frame per step kept. Streams
    (final grid, frames, viewer slider, viewer picture, caption, energy plot, note)."""
    from core import ebm
    from core.runtime import make_generator

    model = _model()
    n, note = clamped(n, 16, 1, MAX_SAMPLES, "samples", whole=True)
    steps, step_size, noise, sampler_note = _sampler(steps, step_size, noise)
    note += sampler_note
    generator = make_generator(seed)
    start = _start(start_from, n, generator)
    columns = _columns(n)
    keep = stepviewer.kept_steps(steps)
    if keep:
        note += f"The viewer keeps {len(keep)} of the {steps + 1} frames, evenly spread. "
    start_energy = ebm.energies(model, start)
    frames = [(_grid(start, columns), _caption(0, steps, start_energy))]
    yield (None, frames, stepviewer.at_last(frames), *frames[0], energy_plot([start_energy], steps),
           note.strip() or "Sampling…")
    last_yield = time.monotonic()
    x = start
    curves = []  # curves[k] = E(x_k): the walk reports each image's energy with the step that leaves it
    for step, (x, before) in enumerate(ebm.sample(model, n, generator, steps, step_size, noise, start=start), 1):
        curves.append(_checked(before, step))
        if keep is None or step in keep:
            frames.append((_grid(x, columns), _caption(step, steps, ebm.energies(model, x))))
        if time.monotonic() - last_yield > 0.5 and step < steps:
            last_yield = time.monotonic()
            yield (None, frames, stepviewer.at_last(frames), *frames[-1], energy_plot(curves, steps),
                   note.strip() or f"Step {step} of {steps}…")
    curves.append(_checked(ebm.energies(model, x), steps))
    yield (_grid(x, columns), frames, stepviewer.at_last(frames), *frames[-1], energy_plot(curves, steps),
           note.strip() or "Done.")


# --- what goes wrong: five samplers from the same start -------------------------------------------------

def samplers(config) -> list[tuple[str, float, float]]:
    """(label, step size, noise) of the rows the comparison draws: the model's own first."""
    own, noise = config.step_size, config.noise
    return [(f"trained sampler: step {own:g}, noise {noise:g}", own, noise),
            (f"no noise: step {own:g}, noise 0", own, 0.0),
            (f"more noise: step {own:g}, noise {noise * 10:g}", own, noise * 10),
            (f"too large a step: {own * 100:g}", own * 100, noise),
            (f"too small a step: {own / 100:g}", own / 100, noise)]


def _labelled_rows(rows, labels: list[str]):
    """Grids, one per row, with a label above each."""
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), LABEL_PX)  # PIL's own font lacks σ, η
    margin = LABEL_PX + 8
    width = max(row.width for row in rows)
    canvas = Image.new("RGB", (width, sum(row.height + margin for row in rows)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for row, label in zip(rows, labels):
        draw.text((4, y + 3), label, fill="black", font=font)
        canvas.paste(row.convert("RGB"), (0, y + margin))
        y += row.height + margin
    return canvas


def compare_samplers(seed):
    """The same start noises walked by five samplers -> (labelled grid, note)."""
    from core import ebm
    from core.runtime import clamp_seed, make_generator

    model = _model()
    start = ebm.uniform_noise(COMPARE_COLUMNS, model.config.image_size, make_generator(seed))
    rows, labels, finals = [], [], []
    for label, step_size, noise in samplers(model.config):
        x, _ = ebm.last(ebm.sample(model, COMPARE_COLUMNS, make_generator(seed), COMPARE_STEPS, step_size, noise,
                                   start=start))
        energy = _checked(ebm.energies(model, x), COMPARE_STEPS)
        finals.append(x)
        rows.append(_grid(x, COMPARE_COLUMNS))
        labels.append(f"{label}   ·   mean energy {energy.mean():.3f}")
    moved = (finals[0] - finals[1]).abs().mean().item()
    note = (f"Seed {clamp_seed(seed)}, {COMPARE_STEPS} steps each; real test clothes have mean energy "
            f"{_real_energy():.3f}. Removing the noise changes the trained sampler's images by {moved:.3f} per "
            "pixel on average (the pixel range is 2): at this noise level Langevin is nearly gradient descent.")
    return _labelled_rows(rows, labels), note


# --- the energy as a score ---------------------------------------------------------------------------------

def _upload_energy(upload):
    """An uploaded picture -> ([1, 1, 32, 32] in [−1, 1], notes): as Fashion-MNIST draws clothes, 28 px in a
    32-px frame."""
    import torch.nn.functional as F

    from core.data.images import as_clothes

    x, notes = as_clothes(upload, 28)
    return F.pad(x, (2, 2, 2, 2)) * 2 - 1, notes


def score(seed, upload):
    """Energies of real clothes, noise, samples, faces (and an upload) -> (histogram, note)."""
    import numpy as np
    import torch

    from core import ebm
    from core.metrics.ood import auroc
    from core.runtime import make_generator

    model = _model()
    picture = _upload_energy(upload) if upload is not None else None  # a bad upload is refused before any work
    generator = make_generator(seed)
    sets = {"uniform noise": ebm.uniform_noise(SCORED, model.config.image_size, generator),
            "synthetic faces (grey)": ebm.grey_faces(SCORED)}
    samples, _ = ebm.last(ebm.sample(model, 64, generator, DEFAULT_STEPS))
    sets["the model's samples"] = samples
    scores = {"real test clothes": _real_energies().numpy(),
              **{name: _checked(ebm.energies(model, images), 0).numpy() for name, images in sets.items()}}
    colours = {"real test clothes": REAL, "uniform noise": NOISE_COLOUR, "synthetic faces (grey)": FACES,
               "the model's samples": SAMPLES}
    upload_note, upload_energy = "", None
    if picture is not None:
        x, notes = picture
        upload_energy = _checked(ebm.energies(model, x), 0).item()
        below = (scores["real test clothes"] < upload_energy).mean()
        upload_note = (f" **Your picture** ({', '.join(notes)}): energy {upload_energy:.3f}, higher than "
                       f"{below:.0%} of the real test clothes"
                       + (": the model says it is not Fashion-MNIST." if below > 0.95 else "."))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=80)
    everything = np.concatenate(list(scores.values()) + ([[upload_energy]] if upload_energy is not None else []))
    bins = np.linspace(everything.min(), everything.max() + 1e-6, 60)
    for name, values in scores.items():
        ax.hist(values, bins=bins, alpha=0.6, color=colours[name], label=f"{name} (n = {len(values)})")
    if upload_energy is not None:
        ax.axvline(upload_energy, color="black", linewidth=2, label="your picture")
    ax.set_xlabel("energy E(x): low = looks like the training data", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    real = torch.from_numpy(scores["real test clothes"])
    aurocs = {name: auroc(real, torch.from_numpy(values)) for name, values in scores.items()
              if name != "real test clothes"}
    note = ("AUROC of the energy, real test clothes against: "
            + ", ".join(f"{name} {value:.3f}" for name, value in aurocs.items())
            + ". Against its own samples a good model scores near 0.5: they should be as likely as real images."
            + upload_note)
    return figure_to_image(fig), note


# --- repair ----------------------------------------------------------------------------------------------

CORRUPTIONS = {"noise": "add noise", "mask": "hide a rectangle"}


def repair(index, kind, amount, top, left, height, width, steps, seed):
    """Damage test image `index`, then walk it downhill. Streams
    (frames, viewer slider, viewer picture, caption, note)."""
    import torch

    from core import ebm
    from core.runtime import make_generator

    images = _test_images()
    index, note = clamped(index, 0, 0, len(images) - 1, "the test image", whole=True)
    if kind not in CORRUPTIONS:
        raise ValueError(f"Choose a damage: {' or '.join(CORRUPTIONS)}, not {kind!r}.")
    steps, step_size, noise, sampler_note = _sampler(steps, DEFAULT_STEP_SIZE, DEFAULT_NOISE)
    note += sampler_note
    model = _model()
    generator = make_generator(seed)
    original = images[index:index + 1]
    side = original.shape[-1]
    if kind == "noise":
        amount, more = clamped(amount, 0.5, 0.0, 2.0, "the noise level")
        damaged, known = ebm.corrupt(original, "noise", amount, generator)
    else:
        top, a = clamped(top, 8, 0, side - 1, "the top row", whole=True)
        left, b = clamped(left, 8, 0, side - 1, "the left column", whole=True)
        height, c = clamped(height, 16, 1, side - top, "the height", whole=True)
        width, d = clamped(width, 16, 1, side - left, "the width", whole=True)
        more = a + b + c + d
        damaged, known = ebm.corrupt(original, "mask", 0.0, generator, box=(top, left, height, width))
    note += more

    original_energy = ebm.energies(model, original).item()

    def frame(x, step, energy):
        strip = _grid(torch.cat([original, damaged, x]), 3, scale=4)
        return strip, (f"**Step {step} of {steps}** · energy {energy:.3f} (the original: {original_energy:.3f}) · "
                       "left to right: the original, the damaged image, the walk so far")

    frames = [frame(damaged, 0, ebm.energies(model, damaged).item())]
    keep = stepviewer.kept_steps(steps)
    yield frames, stepviewer.at_last(frames), *frames[0], note.strip() or "Repairing…"
    x, last_yield = damaged, time.monotonic()
    for step, (x, energy) in enumerate(ebm.repair(model, damaged, known, generator, steps, step_size, noise), 1):
        _checked(energy, step)
        if keep is None or step in keep:
            frames.append(frame(x, step, ebm.energies(model, x).item()))
        if time.monotonic() - last_yield > 0.5 and step < steps:
            last_yield = time.monotonic()
            yield frames, stepviewer.at_last(frames), *frames[-1], note.strip() or f"Step {step} of {steps}…"
    damage, remaining = (damaged - original).abs().mean().item(), (x - original).abs().mean().item()
    result = (f"The walk left {remaining / damage:.0%} of the damage (mean absolute difference from the original)."
              if damage > 0 else  # noise level 0: a ratio to no damage would read 35546272%
              f"The damage changed nothing, so there was nothing to repair: the walk moved the image by "
              f"{remaining:.3f} per pixel on average.")
    yield frames, stepviewer.at_last(frames), *frames[-1], (note + result).strip()


# --- the live 2-D EBM ------------------------------------------------------------------------------------

def _learning_rate(value) -> float:
    return learning_rate(value, LR_LOG_DEFAULT, LR_LOG_LOW, LR_LOG_HIGH)


def live_reset(distribution, seed, lr_log):
    """A fresh 2-D EBM for this user -> (state, picture, status)."""
    from core.ebm import Ebm2D
    from core.runtime import clamp_seed

    ebm = Ebm2D(distribution, seed=clamp_seed(seed), lr=_learning_rate(lr_log))
    return ebm, live_picture(ebm), live_status(ebm)


def live_start(ebm, distribution, seed, lr_log):
    """Opening the panel: keep this user's EBM if there is one, else start one."""
    if ebm is None:
        return live_reset(distribution, seed, lr_log)
    return ebm, live_picture(ebm), live_status(ebm)


def _advance(ebm, steps):
    ebm.train(steps_per_frame(steps))
    return ebm, live_picture(ebm), live_status(ebm)


def live_step(ebm, steps, lr_log):
    require(ebm).set_learning_rate(_learning_rate(lr_log))
    return _advance(ebm, steps)


def live_play(ebm, steps, lr_log):
    require(ebm).set_learning_rate(_learning_rate(lr_log))
    yield from play(_advance, ebm, steps)


def live_set_learning_rate(ebm, lr_log):
    if ebm is not None:
        ebm.set_learning_rate(_learning_rate(lr_log))
    return ebm


def live_status(ebm) -> str:
    if ebm.diverged:
        return (f"⚠️ **The EBM diverged**: {ebm.diverged} (learning rate {ebm.lr:.1e}). Steps this large push the "
                "energies apart without limit: lower the learning rate and press Reset.")
    if not ebm.history:
        return f"Step 0: an untrained energy (learning rate {ebm.lr:.1e}). Press Play or Step."
    _, real, fake = ebm.history[-1]
    now = (f"Step {ebm.step:,}: mean energy of the data {real:+.3f}, of the Langevin samples {fake:+.3f} "
           f"(learning rate {ebm.lr:.1e}).")
    recent = ebm.history[-FAILED_AFTER:]
    if len(recent) == FAILED_AFTER and sum(abs(f - r) for _, r, f in recent) / FAILED_AFTER > FAILED_GAP:
        return (f"⚠️ **Training is failing**: over the last {FAILED_AFTER} steps the samples' energy and the data's "
                f"have been more than {FAILED_GAP:g} apart on average. Steps this large reshape the landscape faster than the particles "
                f"can follow it, so contrastive divergence only pushes the two apart. Lower the learning rate and "
                f"press Reset. {now}")
    return now


def live_picture(ebm):
    """The energy landscape with the data and the particles; the two mean energies over the steps."""
    import numpy as np

    plt = pyplot()
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=72, gridspec_kw={"width_ratios": [1, 1.1]})
    landscape = np.nan_to_num(ebm.energy_map(60).numpy(), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(landscape, [1, 99])
    ax.imshow(landscape, extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), cmap=SEQUENTIAL, vmin=low,
              vmax=max(high, low + 1e-6), interpolation="bilinear")
    ax.contour(np.linspace(-EXTENT, EXTENT, 60), np.linspace(EXTENT, -EXTENT, 60), landscape, levels=8,
               colors="white", linewidths=0.4, alpha=0.6)
    data = ebm.shown_data.numpy()
    particles = ebm.particles.numpy()
    particles = particles[np.isfinite(particles).all(axis=1)]
    ax.scatter(data[:, 0], data[:, 1], s=2, c=LIVE_DATA, alpha=0.7)
    ax.scatter(particles[:, 0], particles[:, 1], s=3, c=PARTICLES)
    ax.set_xlim(-EXTENT, EXTENT), ax.set_ylim(-EXTENT, EXTENT)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("energy (dark = low), data (light blue), Langevin particles (orange)", fontsize=9)
    if ebm.history:
        steps, real, fake = zip(*ebm.history)
        curve.plot(steps, real, color=REAL, linewidth=1, label="E(data)")
        curve.plot(steps, fake, color=PARTICLES, linewidth=1, label="E(samples)")
        curve.legend(fontsize=8)
        values = np.array([real, fake])
        values = values[np.isfinite(values)]
        if len(values):
            low, high = values.min(), values.max()
            central = np.percentile(values, [5, 95])
            if high - low > 20 * (central[1] - central[0]):  # a few wild spikes (a failing run) would flatten the rest
                low, high = central
            pad = 0.1 * (high - low) + 1e-3
            curve.set_ylim(low - pad, high + pad)
    curve.axhline(0, color=NOISE_COLOUR, linewidth=0.6)
    curve.set_xlabel("step", fontsize=8)
    curve.tick_params(labelsize=7)
    curve.set_title("mean energies: contrastive divergence pushes them apart,\nLangevin brings them together",
                    fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


# --- layout ----------------------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    if not shipped():
        gr.Markdown(f"**No energy model is shipped yet**, so the Fashion-MNIST views are missing: make it with "
                    f"`{TRAIN_COMMAND}`. The live 2-D EBM below works without it.")
        _build_live()
        _build_idea()
        return page
    _build_sampling(page)
    _build_compare()
    _build_score()
    _build_repair()
    _build_live()
    return page


def _build_idea() -> None:
    with gr.Accordion("The idea: energy, Langevin dynamics, contrastive divergence", open=False):
        gr.Markdown(IDEA)


def _build_sampling(page) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            with gr.Row():
                go = gr.Button("Sample", variant="primary", elem_id="ebm-sample")
                stop = gr.Button("Stop")
            note = gr.Markdown(elem_id="ebm-note")
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED, min_width=80)
                n = gr.Slider(1, MAX_SAMPLES, 16, step=1, label="samples", min_width=150)
            steps = gr.Slider(1, MAX_STEPS, DEFAULT_STEPS, step=1, label="Langevin steps")
            step_size = gr.Slider(0, MAX_STEP_SIZE, DEFAULT_STEP_SIZE, step=0.5, label="step size η")
            noise = gr.Slider(0, MAX_NOISE, DEFAULT_NOISE, step=0.001, label="noise σ")
            start_from = gr.Radio([(label, key) for key, label in STARTS.items()], value="noise", label="start from")
            with gr.Accordion("model card: how it was trained, how good it is", open=False):
                gr.Markdown(model_card())
            with gr.Accordion("what this view shows", open=False):
                gr.Markdown(SAMPLE_TEXT)
        with gr.Column(scale=1):
            final = picture("samples (the last step)", "one 32×32 garment per chain, in the order the seed drew their "
                             "start noise; black is pixel value −1, white +1", elem_id="ebm-final")
            plot = picture("energy over the steps", "across, the Langevin step; up, the energy E(x) (symmetric log "
                            "scale, lower = more like the data). Thin orange lines: each sample; thick orange: their "
                            "mean; dashed blue: the mean of real test clothes", elem_id="ebm-energy-plot")
        with gr.Column(scale=2):
            viewer = stepviewer.build(TAB, "step viewer: the samples at step k",
                                      "step (0 = the start → last = the samples)")
    _build_idea()
    run = gr.on([go.click, page.ran.change], user_errors(on_gpu(GPU_SECONDS)(generate)),
                [seed, n, steps, step_size, noise, start_from],
                [final, viewer.frames, viewer.position, viewer.picture, viewer.caption, plot, note],
                api_name="ebm_sample", **queue(TAB, 1))
    stop.click(None, None, None, cancels=[run], api_name="ebm_stop", api_visibility="private")
    stepviewer.wire(viewer, TAB, VIEW)
    page.link({"seed": seed, "samples": n, "steps": steps, "step": step_size, "noise": noise, "start": start_from})


def _build_compare() -> None:
    with gr.Accordion("What goes wrong: step size and noise", open=True):
        gr.Markdown(COMPARE_TEXT)
        with gr.Row():
            seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
            go = gr.Button("Compare the samplers", elem_id="ebm-compare")
        note = gr.Markdown()
        grid = picture("five samplers, the same start noise in each column", "one row per sampler (its step size "
                        "and noise above it, with the row's mean final energy), each after 200 steps; black −1, "
                        "white +1", elem_id="ebm-compare-grid")
        go.click(user_errors(on_gpu(GPU_SECONDS)(compare_samplers)), seed, [grid, note], api_name="ebm_compare",
                 **queue(TAB, 1))


def _build_score() -> None:
    with gr.Accordion("The energy as a score: spotting what the model never saw", open=True):
        gr.Markdown(SCORE_TEXT)
        with gr.Row():
            upload = image_upload("your picture (optional)", height=160)
            with gr.Column():
                seed = gr.Number(0, label="seed (noise and samples)", precision=0, minimum=0, maximum=MAX_SEED)
                go = gr.Button("Score", elem_id="ebm-score")
        note = gr.Markdown(elem_id="ebm-score-note")
        histogram = picture("energies", "a histogram: across, the energy E(x) (low = like the training data); up, "
                             "how many images. Blue: real test clothes; grey: uniform noise; pink: synthetic faces in "
                             "grey; orange: the model's own samples; a black line: your picture",
                             elem_id="ebm-histogram")
        go.click(user_errors(on_gpu(GPU_SECONDS)(score)), [seed, upload], [histogram, note], api_name="ebm_score",
                 **queue(TAB, 1))


def _build_repair() -> None:
    with gr.Accordion("Repair: damage an image, let Langevin pull it back", open=True):
        gr.Markdown(REPAIR_TEXT)
        with gr.Row():
            index = gr.Number(0, label="test image", precision=0, minimum=0, maximum=9999)
            kind = gr.Radio([(label, key) for key, label in CORRUPTIONS.items()], value="mask", label="damage")
            amount = gr.Slider(0, 2, 0.5, step=0.05, label="noise level (add noise)")
            steps = gr.Slider(1, MAX_STEPS, DEFAULT_STEPS, step=1, label="Langevin steps")
            seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
        with gr.Row():
            top = gr.Slider(0, 31, 8, step=1, label="rectangle: top row")
            left = gr.Slider(0, 31, 8, step=1, label="left column")
            height = gr.Slider(1, 32, 16, step=1, label="height")
            width = gr.Slider(1, 32, 16, step=1, label="width")
        go = gr.Button("Damage and repair", variant="primary", elem_id="ebm-repair")
        note = gr.Markdown(elem_id="ebm-repair-note")
        viewer = stepviewer.build(f"{TAB}_repair", "the original, the damaged image, the walk at step k",
                                  "step (0 = damaged → last = repaired)")
        go.click(user_errors(on_gpu(GPU_SECONDS)(repair)), [index, kind, amount, top, left, height, width, steps, seed],
                 [viewer.frames, viewer.position, viewer.picture, viewer.caption, note], api_name="ebm_repair",
                 **queue(TAB, 1))
        stepviewer.wire(viewer, f"{TAB}_repair", VIEW)


def _build_live() -> None:
    with gr.Accordion("Watch an EBM learn (2-D)", open=False) as live_box:
        gr.Markdown(LIVE_TEXT)
        with gr.Row():
            controls = live2d.settings_row("moons")
            lr = gr.Slider(LR_LOG_LOW, LR_LOG_HIGH, LR_LOG_DEFAULT, step=0.25,
                           label="learning rate (log10; -2.5 ≈ 0.003)")
        live2d.buttons_row(controls)
        live = picture("the live EBM", f"left, the plane (both axes −{EXTENT:g} … {EXTENT:g}) coloured by the energy, dark purple = "
                           "low (likely) to yellow = high, with white contour lines, the data in light blue and the "
                           "Langevin particles in orange; right, across the training steps, the mean energy of the "
                           "data (blue) and of the particles (orange)", elem_id="ebm-live-picture")
        live2d.wire(TAB, live_box, controls, [lr], [live], live_reset, live_start, live_step, live_play, LIVE)
        lr.change(user_errors(live_set_learning_rate), [controls.state, lr], controls.state,
                  api_name="ebm_live_learning_rate", api_visibility="private", **queue(LIVE, 4))
