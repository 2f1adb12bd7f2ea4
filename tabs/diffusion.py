"""Diffusion tab: DDPM/DDIM/DPM-Solver++ (2M) sampling with a step-by-step viewer, the forward (noising) process with
its schedule, steps versus quality, and interpolation between start noises.

Widgets and events only; schedules, the U-Net and the samplers live in core.diffusion.
Nothing heavy is imported until a handler runs, so the app starts fast. One sampling run
precomputes every frame of the viewer (kept per user in gr.State), so scrubbing the slider
or playing the animation never runs the network again.
"""
from __future__ import annotations

import time

import gradio as gr

from core.registry import ROOT, read_card
from tabs import stepviewer
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (PALETTE, bench_records, caption, image_upload, number, on_gpu, picture, pyplot, queue,
                         shipped_choices, user_errors)

TAB = "diffusion"
VIEW = "diffusion-view"  # scrubbing, playing and noising are cheap: their own, wider slot
MODEL_LABELS = {"fashion32": "Fashion-MNIST · 32×32 (grayscale)", "faces32": "synthetic faces · 32×32 (colour)"}
SCHEDULES = ["cosine", "offset-cosine", "linear"]  # same names as core.diffusion.SCHEDULES (no torch here)
# (label, core.diffusion.SAMPLERS key): the key is what a link's `sampler=` and the API take
SAMPLER_CHOICES = [("DDIM", "DDIM"), ("DDPM", "DDPM"), ("DPM-Solver++ (2M)", "DPM++2M")]
SAMPLER_INFO = "DPM-Solver++ (2M) is 2nd-order: about DDIM-50 quality in 20 steps"
MAX_SAMPLES = 36           # images per run (a 6x6 grid)
MAX_STEPS = 1000           # core.diffusion.MAX_STEPS: the finest time grid
QUALITY_STEPS = [1, 2, 5, 10, 20, 50, 100]
MAX_INTERPOLATION = 16
SHOW_PX = 64               # each 32-px image is enlarged to this for display
GPU_SECONDS = 60           # ZeroGPU: 1000 DDIM steps on 36 images take well under a minute on a GPU
EXAMPLES = sorted((ROOT / "assets" / "examples" / "diffusion").glob("*.png"))

INTRO = """**Diffusion: learn to remove noise, then start from pure noise.** Training shows the U-Net an image mixed with noise and asks for the noise; sampling runs time **backwards**
(t = 1 → 0), each step guessing the clean image x̂₀ and re-noising that guess a little less than before."""

LESSON = Lesson(
    tab=TAB, main="diffusion-sample", result="diffusion-final",
    chapters="*Generative Deep Learning* ch. 8 (diffusion models: DDPM, DDIM, the U-Net) · lecture deck: DDPM · "
             "Lu et al. 2022 (DPM-Solver++)",
    equations=(r"Forward (fixed): $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$, "
               r"training: $\lVert \varepsilon - \varepsilon_\theta(x_t, t) \rVert^2$ · "
               r"DDIM step: $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$, "
               r"$x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t-1}}\,\hat\varepsilon$"),
    try_this=(
        Try("1 step", {"sampler": "DDIM", "steps": 1, "eta": 0},
            "One jump from pure noise to the network's first guess x̂₀: at t = 1 the signal is about 1 %, so the "
            "guess's small error is magnified a hundredfold. Compare with 50 steps."),
        Try("50 steps", {"sampler": "DDIM", "steps": 50, "eta": 0},
            "The same seed, so the same start noise: scrub the step viewer and watch coarse shapes settle first, "
            "details last."),
        Try("DDPM, 20 steps", {"sampler": "DDPM", "steps": 20},
            "DDPM adds fresh noise at every step: with few steps it cannot remove it all. DDIM at η = 0 adds none."),
        Try("DPM-Solver++, 20 steps", {"sampler": "DPM++2M", "steps": 20, "eta": 0},
            "A second-order solver: each step also uses the previous step's guess x̂₀. 20 network calls give "
            "nearly what DDIM needs 50 for (FID 90 against 83 on the clothes classifier's features)."),
        Try("faces", {"model": "faces32", "steps": 50, "sampler": "DDIM", "eta": 0},
            "The same sampler and code on colour faces: only the training images differ."),
    ),
    misconceptions=(
        ("Sampling runs the forward process.",
         "Sampling runs time backwards, t = 1 → 0; the forward process (noising) is only used in training."),
        ("The network predicts the next, cleaner image.",
         "It predicts the noise ε in its input; the sampler turns that into the guess x̂₀ and the next x_t."),
        ("More steps always means a new model.",
         "Steps are chosen at sampling time: the same network serves 1, 20 or 1000 steps, because it is told "
         "the noise level, not a step number."),
        ("DDIM and DDPM are different networks.",
         "They are two samplers for the same trained network: DDIM (η = 0) is deterministic, DDPM adds noise."),
        ("Fewer steps need a better network.",
         "DPM-Solver++ (2M) gets more out of the same network: it also reuses the previous step's guess x̂₀, "
         "so 20 network calls go about as far as 50 DDIM steps."),
    ),
    code=(Code("one sampling step (DDIM and DDPM)", "core/diffusion.py", ("Sampler.step",),
               r"$\hat x_0 = (x_t - \sigma_t \hat\varepsilon)/s_t$, then "
               r"$x_{t-1} = s_{t-1}\hat x_0 + \sqrt{\sigma_{t-1}^2 - \eta^2\tilde\beta}\;\hat\varepsilon + "
               r"\eta\sqrt{\tilde\beta}\,z$ (signal rate $s=\sqrt{\bar\alpha}$, noise rate $\sigma=\sqrt{1-\bar\alpha}$)"),
          Code("the DPM-Solver++ (2M) step", "core/diffusion.py", ("half_log_snr", "dpm_solver_step"),
               r"time in $\lambda_t = \log(s_t/\sigma_t)$, step $h = \lambda_{t-1} - \lambda_t$: "
               r"$x_{t-1} = \frac{\sigma_{t-1}}{\sigma_t} x_t - s_{t-1}(e^{-h} - 1)\,D$ with "
               r"$D = \hat x_0 + \frac{\hat x_0 - \hat x_0^{\,\mathrm{before}}}{2r}$, "
               r"$r = h_{\mathrm{before}}/h$ (first step: $D = \hat x_0$, which is DDIM)"),
          Code("the training loss", "core/diffusion.py", ("diffusion_loss",),
               r"$L = \mathbb{E}_{x_0, t, \varepsilon}\,\lVert \varepsilon_\theta(s_t x_0 + \sigma_t \varepsilon, \sigma_t^2) - "
               r"\varepsilon \rVert^2$")),
)


# --- shipped models ---------------------------------------------------------------------------

def model_choices() -> list[tuple[str, str]]:
    """The unconditional models (the measured Fashion-MNIST one first: the default). The text- and
    class-conditional ones in the same folder (condition_dim > 0) belong to the Text to image tab."""
    return [(label, name) for label, name in shipped_choices(TAB, MODEL_LABELS) if _unconditional(name)]


def _unconditional(name: str) -> bool:
    try:
        return not read_card(TAB, name).get("config", {}).get("condition_dim")
    except (OSError, ValueError):  # a card being rewritten by a training in progress: not listed this time
        return False


def model_card(name) -> str:
    if not name:
        return ""
    card = read_card(TAB, name)
    config = card.get("config", {})
    return (f"**{MODEL_LABELS.get(name, name)}**: U-Net widths {config.get('widths')}, trained on the "
            f"{config.get('schedule')} schedule for {card.get('steps', '?'):,} steps "
            f"({card.get('wall_time_s', 0) / 60:.0f} min, {card.get('hardware', '?')}); data: {card.get('data')}. "
            f"EMA weights. Made with `{card.get('command')}`." + _measured_quality(name))


def _measured_quality(name) -> str:
    """The latest bench/diffusion_quality.py figures for this model, so the tab says how good it is."""
    _, record = next(bench_records("diffusion_quality"), (None, None))  # full figures when there are any
    if record is None:
        return ""
    figures = record.get("figures", {})
    faces = figures.get("faces", {})
    if faces.get("model") == name:
        return (f"\n\nMeasured ({record.get('date', '')[:10]}, n = {faces['n']:,}): FID {faces['fid']:.1f} at 50 DDIM "
                f"steps on the face-attribute features (the face WGAN-GP: {faces['wgangp_fid']:.1f}; real vs real "
                f"{faces['real_fid']:.1f}).")
    if figures.get("model") != name or "ddim_50" not in figures:
        return ""
    best = figures["ddim_50"]
    return (f"\n\nMeasured ({record.get('date', '')[:10]}, n = {figures['n']:,}): FID {best['fid']:.1f} at 50 DDIM "
            f"steps; a perfect model would score {best['real_fid']:.1f} (real vs real at the same n).")


def _model(name):
    from core import diffusion

    if name not in dict((v, k) for k, v in model_choices()):
        raise ValueError("Pick one of the shipped diffusion models." if name else
                         "No diffusion model is trained yet: see the README for the training command.")
    return diffusion.load_model(name)


# --- argument checks: clamp what can be clamped, refuse with a sentence what cannot ----------------

def _samples(n) -> tuple[int, str]:
    n = number(n, 0, 0, MAX_SAMPLES + 1, whole=True)
    if n < 1:
        raise ValueError(f"Ask for at least 1 sample, not {n}.")
    if n > MAX_SAMPLES:
        return MAX_SAMPLES, f"Limited to {MAX_SAMPLES} samples per run (a CPU lab). "
    return n, ""


def _steps(steps) -> int:
    if not 1 <= number(steps, 0, 0, MAX_STEPS + 1) <= MAX_STEPS:
        raise ValueError(f"Steps must be between 1 and {MAX_STEPS} (the finest grid the model knows); "
                         f"{steps} was asked for.")
    steps = int(steps)
    return steps


def _eta(eta) -> float:
    eta = float(eta if eta is not None else 0.0)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"η must be between 0 (deterministic DDIM) and 1 (as random as DDPM); got {eta}.")
    return eta


# --- pictures ------------------------------------------------------------------------------------

def _grid(images, columns: int):
    """[N, C, 32, 32] in [0, 1] -> an enlarged PIL grid."""
    from PIL import Image

    from core.data.images import image_grid

    grid = image_grid(images, nrow=columns)
    factor = max(1, SHOW_PX // images.shape[-1])
    return grid.resize((grid.width * factor, grid.height * factor), Image.NEAREST)


def _side_by_side(left, right, left_title: str, right_title: str):
    """Two grids with a title above each, as one image (the viewer's frame)."""
    from PIL import Image, ImageDraw

    gap, top = 16, 22
    canvas = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height) + top), "white")
    canvas.paste(left.convert("RGB"), (0, top))
    canvas.paste(right.convert("RGB"), (left.width + gap, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), left_title, fill="black")
    draw.text((left.width + gap + 4, 4), right_title, fill="black")
    return canvas


def _columns(n: int) -> int:
    import math

    return max(1, math.ceil(math.sqrt(n)))


def _caption(step: int, steps: int, t: float, signal: float, noise: float) -> str:
    if step == 0:
        return (f"**Step 0 of {steps}** · t = 1.00 (start: pure noise) · signal rate {signal:.3f}, "
                f"noise rate {noise:.3f}. Time runs backwards: each step moves t towards 0.")
    where = "t = 0: the finished image" if step == steps else "t ↓ towards 0 (the image)"
    return (f"**Step {step} of {steps}** · t = {t:.3f} ({where}) · signal rate {signal:.3f}, "
            f"noise rate {noise:.3f}. Left: x_t, the sample so far. Right: x̂₀, the network's current guess "
            "of the clean image.")


# --- sampling with the step viewer -----------------------------------------------------------------

def generate(name, seed, n, sampler, steps, eta, schedule):
    """Sample n images, keeping a viewer frame per step. Streams
    (final grid, frames state, viewer slider, viewer image, caption, note)."""
    from core import diffusion
    from core.runtime import make_generator

    model = _model(name)
    n, note = _samples(n)
    steps, eta = _steps(steps), _eta(eta)
    if sampler == "DDPM" and eta > 0:
        note += "η only applies to DDIM; DDPM always adds the full posterior noise. "
    if sampler == "DPM++2M" and eta > 0:
        note += "η only applies to DDIM; DPM-Solver++ (2M) is deterministic (it adds no noise). "
    if schedule != model.config.schedule:
        note += (f"Sampling on the {schedule} schedule although the model trained on {model.config.schedule}: "
                 "it works because the network is told the noise level, not a step number. ")
    walker = diffusion.Sampler(sampler, steps, eta, schedule)
    generator = make_generator(seed)
    x = diffusion.start_noise(n, model.config, generator)
    columns = _columns(n)
    keep = stepviewer.kept_steps(steps)
    if keep:
        note += f"The viewer keeps {len(keep)} of the {steps + 1} frames, evenly spread. "
    signal, noise = walker.rates(0)
    blank = _grid(diffusion.to_unit(x) * 0 + 0.5, columns)
    start = _grid(diffusion.to_unit(x), columns)
    frames = [(_side_by_side(start, blank, "x_t at t = 1 (pure noise)", "x0 guess: none yet"),
               _caption(0, steps, 1.0, signal, noise))]
    yield None, frames, stepviewer.at_last(frames), frames[0][0], frames[0][1], note.strip() or "Sampling…"
    last_yield = time.monotonic()
    for frame in diffusion.denoise(model, walker, x, generator):
        if keep is None or frame.step in keep:
            left = _grid(diffusion.to_unit(frame.x_t), columns)
            right = _grid(diffusion.to_unit(frame.x0), columns)
            image = _side_by_side(left, right, f"x_t at t = {frame.t:.3f}", "x0 guess (predicted clean image)")
            frames.append((image, _caption(frame.step, steps, frame.t, frame.signal_rate, frame.noise_rate)))
        if time.monotonic() - last_yield > 0.5 or frame.step == steps:
            last_yield = time.monotonic()
            done = frame.step == steps
            yield (_grid(diffusion.to_unit(frame.x_t), columns) if done else None, frames,
                   stepviewer.at_last(frames), frames[-1][0], frames[-1][1],
                   note.strip() or ("Done." if done else f"Step {frame.step} of {steps}…"))


# --- forward process ---------------------------------------------------------------------------

def _example_image(example, upload):
    from core.data.images import center_crop_square, pil_to_tensor, prepare_image

    if upload is not None:
        image, _ = prepare_image(upload)
    else:
        matches = [p for p in EXAMPLES if p.name == example]
        if not matches:
            raise ValueError("Pick one of the example images or upload one.")
        image, _ = prepare_image(str(matches[0]))
    return pil_to_tensor(center_crop_square(image, 32)) * 2 - 1


def schedule_plot(schedule, t):
    """Signal and noise rates of a schedule against t, with the chosen t marked."""
    import torch

    from core.diffusion import schedule_rates

    plt = pyplot()
    grid = torch.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(4.6, 2.8), dpi=100)
    for name in SCHEDULES:
        signal, noise = schedule_rates(name, grid)
        width, alpha = (2.2, 1.0) if name == schedule else (1.0, 0.35)
        ax.plot(grid, signal, color=PALETTE[0], lw=width, alpha=alpha, label=f"signal ({name})" if name == schedule else None)
        ax.plot(grid, noise, color=PALETTE[1], lw=width, alpha=alpha, label=f"noise ({name})" if name == schedule else None)
    ax.axvline(float(t), color="black", ls="--", lw=1)
    ax.set_xlabel("diffusion time t   (sampling runs from 1 back to 0)")
    ax.set_ylabel("rate")
    ax.set_title("faint lines: the other schedules", fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def forward_process(example, upload, t, schedule, seed=0):
    """One image noised at time t, a strip over t = 0 … 1, and the schedule plot."""
    import torch

    from core.diffusion import add_noise, schedule_rates, to_unit
    from core.runtime import make_generator

    if schedule not in SCHEDULES:
        raise ValueError(f"Pick a schedule: {', '.join(SCHEDULES)}.")
    t = number(t, 0.0, 0.0, 1.0)
    x0 = _example_image(example, upload)
    noise = torch.randn(x0.shape, generator=make_generator(seed))  # the same ε at every t: only the mix changes
    x_t = add_noise(x0, t, noise, schedule)
    times = torch.linspace(0, 1, 11)
    strip = add_noise(x0.expand(len(times), -1, -1, -1), times, noise.expand(len(times), -1, -1, -1), schedule)
    signal, noise_rate = schedule_rates(schedule, torch.tensor(t))
    caption = (f"t = {t:.2f}: x_t = {float(signal):.3f} · x₀ + {float(noise_rate):.3f} · ε "
               f"(signal² + noise² = {float(signal ** 2 + noise_rate ** 2):.3f}). Strip: t = 0, 0.1, …, 1.")
    return _grid(to_unit(x_t), 1), _grid(to_unit(strip), len(times)), schedule_plot(schedule, t), caption


# --- steps versus quality, interpolation ------------------------------------------------------------

def clipped_share(images) -> float:
    """The share of pixel values in [0, 1] images that sit at pure black or pure white."""
    return float(((images <= 0.002) | (images >= 0.998)).float().mean())


def steps_versus_quality(name, seed, n_rows=4):
    """The same start noise sampled with 1, 2, 5, … 100 DDIM steps (η = 0): one column per count,
    and a note measuring what the single step does."""
    import torch

    from core import diffusion
    from core.runtime import make_generator

    model = _model(name)
    n_rows = number(n_rows, 1, 1, 8, whole=True)
    noise = diffusion.start_noise(n_rows, model.config, make_generator(seed))
    columns = [diffusion.sample(model, n_rows, make_generator(seed), steps=s, noise=noise)
               for s in QUALITY_STEPS]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # row = one start noise, column = one step count
    signal, _ = diffusion.schedule_rates(model.config.schedule, torch.tensor(1.0))
    note = ("Columns, left to right: " + ", ".join(f"{s} step{'s' * (s > 1)}" for s in QUALITY_STEPS) + ". "
            f"In the 1-step column {clipped_share(columns[0]):.0%} of the pixel values are pure black or white "
            f"({QUALITY_STEPS[-1]} steps: {clipped_share(columns[-1]):.0%}): the guess from pure noise divides "
            f"the network's error by the signal rate at t = 1, {float(signal):.3f} on this model's "
            f"{model.config.schedule} schedule.")
    return _grid(grid, len(QUALITY_STEPS)), note


def interpolation(name, seed_a, seed_b, frames, steps=50):
    """Spherical interpolation between two seeds' start noises, each decoded with DDIM η = 0."""
    from core import diffusion
    from core.latent import interpolate
    from core.runtime import clamp_seed, make_generator

    model = _model(name)
    seed_a, seed_b = clamp_seed(seed_a), clamp_seed(seed_b)
    if seed_a == seed_b:
        raise ValueError(f"Both ends use seed {seed_a}: pick two different seeds.")
    frames = number(frames, 2, 2, MAX_INTERPOLATION, whole=True)
    steps = _steps(steps)
    a = diffusion.start_noise(1, model.config, make_generator(seed_a))
    b = diffusion.start_noise(1, model.config, make_generator(seed_b))
    noises = interpolate(a, b, frames, mode="slerp").squeeze(1)
    images = diffusion.sample(model, frames, make_generator(0), steps=steps, noise=noises)
    return _grid(images, frames)


# --- layout ----------------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    choices = model_choices()
    if not choices:
        gr.Markdown("**No diffusion model is shipped yet.** Train one with "
                    "`python -m core.train diffusion --data fashion --minutes 60` (see the README); "
                    "the forward-process view below works without a model.")
    default = choices[0][1] if choices else None
    with gr.Tab("Sample and watch the steps"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                model = gr.Dropdown(choices, value=default, label="model", interactive=bool(choices))
                with gr.Row():
                    go = gr.Button("Sample", variant="primary", elem_id="diffusion-sample")
                    stop = gr.Button("Stop")
                note = gr.Markdown()
                with gr.Row():
                    seed = gr.Number(0, label="seed", precision=0, minimum=0, min_width=80)
                    sampler = gr.Radio(SAMPLER_CHOICES, value="DDIM", label="sampler", info=SAMPLER_INFO,
                                       min_width=150)
                n = gr.Slider(1, MAX_SAMPLES, value=16, step=1, label="samples")
                steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="steps")
                with gr.Accordion("η and the schedule", open=False):
                    eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η (DDIM: 0 deterministic … 1 random)")
                    schedule = gr.Dropdown(SCHEDULES, value="cosine", label="schedule used for sampling")
                with gr.Accordion("model card: how it was trained, how good it is", open=False):
                    card = gr.Markdown(model_card(default) if default else "")
            with gr.Column(scale=1):
                final = picture("samples (t = 0)", "one image per start noise, in the order they were drawn from the "
                                 "seed; grey levels are pixel values, black 0 to white 1", elem_id="diffusion-final")
            with gr.Column(scale=2):
                viewer = stepviewer.build(TAB, "step viewer: x_t (left) and the guess x̂₀ (right)",
                                          "step (0 = pure noise at t = 1 → last = image at t = 0)")
        run = gr.on([go.click, page.ran.change], user_errors(on_gpu(GPU_SECONDS)(generate)),
                    [model, seed, n, sampler, steps, eta, schedule],
                    [final, viewer.frames, viewer.position, viewer.picture, viewer.caption, note],
                    api_name="diffusion_sample", **queue(TAB, 1))
        stop.click(None, None, None, cancels=[run], api_name="diffusion_stop", api_visibility="private")
        model.change(model_card, model, card, api_name="diffusion_model_card", api_visibility="private",
                     **queue(VIEW, 8))
        stepviewer.wire(viewer, TAB, VIEW)
        page.link({"model": model, "seed": seed, "samples": n, "sampler": sampler, "steps": steps, "eta": eta,
                   "schedule": schedule})

    with gr.Tab("Forward process", elem_id="diffusion-forward-tab") as forward_tab:
        with gr.Row():
            with gr.Column():
                example = gr.Dropdown([p.name for p in EXAMPLES], value=EXAMPLES[0].name if EXAMPLES else None,
                                      label="dataset image")
                upload = image_upload("…or upload your own (cropped to 32×32)", sources=["upload"])
                t = gr.Slider(0, 1, value=0.3, step=0.01, label="t (0 = image, 1 = noise)")
                fwd_schedule = gr.Dropdown(SCHEDULES, value="cosine", label="schedule")
            with gr.Column():
                noised = picture("x_t", "the image mixed with noise at time t", elem_id="diffusion-noised")
                fwd_caption = gr.Markdown()
                plot = gr.Plot(label="schedule")
                caption("**The schedule**: time t across (0 = image, 1 = noise); up, the signal rate (blue) and "
                        "the noise rate (orange) that mix the image and the noise; the dashed line is the chosen t.")
        strip = picture("the same image and noise at t = 0, 0.1, …, 1",
                     "left to right, time runs forward: the image fades as the noise grows", elem_id="diffusion-strip")
        inputs, outputs = [example, upload, t, fwd_schedule], [noised, strip, plot, fwd_caption]
        forward = user_errors(forward_process)
        example.change(forward, inputs, outputs, api_name="diffusion_forward_process", **queue(VIEW, 8))
        for control, widget in ((upload, "upload"), (fwd_schedule, "schedule")):
            control.change(forward, inputs, outputs, api_name=f"diffusion_forward_process_from_{widget}",
                           api_visibility="undocumented", **queue(VIEW, 8))
        # .input fires on drags and on typing in the number box (.release only on drags and blur).
        t.input(forward, inputs, outputs, api_name="diffusion_forward_process_from_t", api_visibility="undocumented",
                trigger_mode="always_last", show_progress="hidden", **queue(VIEW, 8))
        # Drawn when the panel is opened (not at start-up: the plot needs matplotlib, start-up must not import it).
        forward_tab.select(forward, inputs, outputs, api_name="diffusion_forward_process_on_open",
                           api_visibility="undocumented", **queue(VIEW, 8))

    with gr.Tab("Steps versus quality"):
        gr.Markdown("The same start noise, decoded with DDIM (η = 0) in 1, 2, 5, 10, 20, 50 and 100 steps. "
                    "One step jumps straight to the network's first guess x̂₀ = (x₁ − noise · ε̂) / signal, made "
                    "from pure noise. A perfect noise estimate would make it the blurry average of everything the "
                    "noise could have been; but at t = 1 the signal rate is only about 0.01, so the network's "
                    "small error in ε̂ is magnified about a hundredfold and clipped to the pixel range: "
                    "**salt-and-pepper noise**. Every further step guesses again at a higher signal rate, where "
                    "errors are magnified less: two steps already give shapes, more steps commit to details.")
        with gr.Row():
            q_seed = gr.Number(0, label="seed", precision=0, minimum=0)
            rows = gr.Slider(1, 8, value=4, step=1, label="rows (start noises)")
            q_go = gr.Button("Compare", variant="primary")
        q_image = picture(f"columns: {', '.join(map(str, QUALITY_STEPS))} steps",
                           "each row starts from one noise; each column decodes it with more DDIM steps", elem_id="diffusion-quality")
        q_note = gr.Markdown()
        q_go.click(user_errors(on_gpu(GPU_SECONDS)(steps_versus_quality)), [model, q_seed, rows], [q_image, q_note],
                   api_name="diffusion_steps_versus_quality", **queue(TAB, 1))

    with gr.Tab("Interpolate start noise"):
        gr.Markdown("Spherical interpolation (slerp) between the start noises of two seeds, each decoded "
                    "deterministically (DDIM, η = 0): the image changes smoothly because the same noise always "
                    "gives the same image.")
        with gr.Row():
            seed_a = gr.Number(1, label="seed A", precision=0, minimum=0)
            seed_b = gr.Number(2, label="seed B", precision=0, minimum=0)
            count = gr.Slider(2, MAX_INTERPOLATION, value=8, step=1, label="frames")
            i_steps = gr.Slider(5, 100, value=50, step=1, label="DDIM steps")
            i_go = gr.Button("Interpolate", variant="primary")
        i_image = picture("A → B", "left to right: start noises on the great circle from seed A's to seed B's, each "
                                    "decoded the same way", elem_id="diffusion-interpolation")
        i_go.click(user_errors(on_gpu(GPU_SECONDS)(interpolation)), [model, seed_a, seed_b, count, i_steps], i_image,
                   api_name="diffusion_interpolation", **queue(TAB, 1))
    return page
