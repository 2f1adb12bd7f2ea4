"""World Models tab: a car that learns to drive inside its own dream (core/world_models.py).

Three parts. Real: a controller drives a fresh CarRacing track, frames streamed, with V's reconstruction
of each frame and z as bars. Dream: M imagines the next frames, decoded by V; steer with buttons or let a
controller drive, at a temperature from calm to chaotic. Why it works: the same actions in the real
car and in the dream, side by side, M's one-step prediction error against the dream's drift, and the
mixture M predicts for any dimension of the next z. Per-user dreams live in gr.State; models are
shared read-only.
"""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from core.registry import list_shipped, read_card
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import PALETTE, bench_records, caption, figure_to_image, number, pyplot, queue, user_errors

TAB = "world_models"
CONTROLLERS = {"real": "trained in the real car", "dream": "trained only in the dream",
               "noisy": "the noisy policy that collected the data"}
DRIVERS = [(label, key) for key, label in CONTROLLERS.items()]
BUTTONS = {"◀ left": (-1.0, 0.3, 0.0), "▲ gas": (0.0, 1.0, 0.0), "▶ right": (1.0, 0.3, 0.0),
           "▼ brake": (0.0, 0.0, 0.8), "coast": (0.0, 0.0, 0.0)}
BUTTON_KEYS = ("left", "gas", "right", "brake", "coast")
FRAMES_PER_PRESS = 8      # one button press: this many dream frames with that action
DREAM_FPS = 30            # the dream is shown at this rate (a step costs a few ms: bench/world_models.py)
STREAM_EVERY_S = 0.1      # the real drive sends a frame this often (it simulates faster than a browser shows)
MAX_DREAM_STEPS = 600
# core.world_models' own values, repeated so that building the page imports no torch (a test checks they agree)
DREAM_START, MAX_TEMPERATURE = 50, 3.0
MAX_COMPARE_STEPS = 300
BLUE, ORANGE = (tuple(int(PALETTE[i][j:j + 2], 16) for j in (1, 3, 5)) for i in (0, 1))  # PALETTE[0], [1]
INTRO = ("**V** (a VAE) squeezes each frame into z, 32 numbers; **M** (an LSTM with a mixture-density head) "
         "predicts the next z and the reward; **C**, one linear layer found by CMA-ES, drives from [z, h]. "
         "M can play the game alone, so C can even be trained **inside M's dream**.")

LESSON = Lesson(
    tab=TAB, main="wm-drive", result="wm-seen",
    chapters="*Generative Deep Learning* ch. 12 (world models: V, M, C, training in the dream) · ch. 3 (the VAE) "
             "· Ha & Schmidhuber 2018, *World Models*",
    equations=(r"M: $p(z_{t+1} \mid z_t, a_t, h_t) = \prod_d \sum_k \pi_{dk}\,\mathcal{N}(z_{t+1,d};\ \mu_{dk}, "
               r"\sigma_{dk}^2)$ · C: $a_t = \mathrm{squash}(W [z_t, h_t] + b)$ · dreaming at temperature $\tau$: "
               r"$k \sim \mathrm{softmax}(\mathrm{logit}_\pi / \tau)$, $z = \mu_k + \sigma_k \sqrt{\tau}\,\varepsilon$"),
    try_this=(
        Try("real-trained C", {"driver": "real", "track": 1, "steps": 1000},
            "C is a single linear layer, 867 numbers, reading only z (what V makes of the frame) and h (what M "
            "remembers), and found by CMA-ES without a single gradient; yet it drives a track it never saw."),
        Try("dream-trained C", {"driver": "dream", "track": 1, "steps": 1000},
            "This controller never drove the real car: every episode of its training was dreamed by M. It "
            "steers, but compare its return with the real-trained one's on the same track: it partly learned "
            "to exploit M's mistakes."),
        Try("noisy driver", {"driver": "noisy", "track": 1, "steps": 1000},
            "The random-ish policy that collected V's and M's training data. Everything V and M know of the "
            "world comes from drives like this one; its return is the floor a controller has to beat."),
    ),
    misconceptions=(
        ("The controller is a deep network trained by backpropagation.",
         "C is one linear layer (867 numbers) found by CMA-ES, an evolution strategy: it only ever sees the "
         "return of whole episodes, never a gradient. The networks that learn by gradient descent are V and M."),
        ("M predicts the next frame.",
         "M predicts a distribution over the next z: for each of its 32 numbers a mixture of 5 Gaussians, plus "
         "the reward. The dream's pictures are V's decoder drawing a z drawn from that mixture."),
        ("A high return in the dream means a good driver.",
         "Trained in the dream, C can exploit M's mistakes, such as places where M wrongly expects reward. A "
         "harder dream (τ above 1; the paper used 1.15) is harder to exploit; the real car is the judge."),
        ("Temperature 0 shows what M really thinks will happen.",
         "τ = 0 takes the likeliest Gaussian's mean for every number: one calm future, which no real drive "
         "follows for long. M's belief is the whole mixture, drawn below the dream."),
    ),
    code=(Code("C: the controller, one linear layer", "core/world_models.py", ("Controller.forward", "squash"),
               r"$a_t = \mathrm{squash}(W [z_t, h_t] + b)$: steer $= \tanh$, gas $= (\tanh + 1)/2$, "
               r"brake $= \max(0, \tanh)$"),
          Code("M: the mixture's likelihood (training) and one dream step (sampling at τ)", "core/world_models.py",
               ("component_log_probs", "mixture_log_prob", "dream_step", "sample_mixture"),
               r"$\log p(z) = \log \sum_k \pi_k\,\mathcal{N}(z;\ \mu_k, \sigma_k^2)$, training minimises "
               r"$-\log p(z_{t+1})$ · dream: $k \sim \mathrm{softmax}(\mathrm{logit}_\pi / \tau)$, "
               r"$z = \mu_k + \sigma_k \sqrt{\tau}\,\varepsilon$")),
)


def _ready() -> bool:
    return {"vae", "rnn"} <= set(list_shipped("world_models"))


def _controllers() -> list[tuple[str, str]]:
    shipped = set(list_shipped("world_models"))
    return [(label, key) for label, key in DRIVERS if key == "noisy" or f"controller_{key}" in shipped]


def _controller(choice):
    """(controller or None for the noisy policy, a phrase for it)."""
    from core import world_models as wm

    if choice not in CONTROLLERS:
        raise ValueError(f"Unknown driver {str(choice)[:40]!r}: pick one from the list.")
    if choice == "noisy":
        return None, CONTROLLERS[choice]
    if f"controller_{choice}" not in list_shipped("world_models"):
        raise ValueError(f"No controller {CONTROLLERS[choice]} is shipped yet.")
    return wm.load_controller(choice), f"the controller {CONTROLLERS[choice]}"


def upscale(frame: np.ndarray, size: int = 256) -> np.ndarray:
    """A small frame enlarged with whole pixels kept square, so what the network saw is what you see."""
    k = max(1, size // frame.shape[0])
    return frame.repeat(k, 0).repeat(k, 1)


def z_bars(z, height: int = 96, bar: int = 8, limit: float = 3.0) -> np.ndarray:
    """z as a bar chart drawn straight into pixels (fast enough for every streamed frame): one bar per
    dimension from the zero line, blue above, orange below, clipped at +-limit."""
    z = np.clip(np.asarray(z, dtype=np.float32), -limit, limit)
    image = np.full((height, bar * len(z), 3), 255, np.uint8)
    middle = height // 2
    for i, value in enumerate(z):
        size = int(round(abs(value) / limit * (middle - 2)))
        rows = slice(middle - size, middle) if value >= 0 else slice(middle, middle + size)
        image[rows, i * bar + 1:(i + 1) * bar - 1] = BLUE if value >= 0 else ORANGE
    image[middle, :] = 0
    return image


# --- Real -----------------------------------------------------------------------------------------------

def drive_real(choice, track, steps):
    """Stream one real episode: (what the car sees, V's reconstruction, z as bars, a status line)."""
    from core import world_models as wm
    from core.runtime import clamp_seed

    controller, who = _controller(choice)
    track = clamp_seed(track)
    steps = number(steps, wm.MAX_EPISODE_STEPS, 1, wm.MAX_EPISODE_STEPS, whole=True)
    actions = None
    if controller is None:
        policy = wm.NoisyPolicy(track)
        actions = [policy() for _ in range(steps)]
    last = 0.0
    step = None
    for step in wm.drive(wm.load_vae(), wm.load_rnn(), controller, track, steps, actions=actions):
        if time.monotonic() - last >= STREAM_EVERY_S or step.done:
            last = time.monotonic()
            yield _real_views(step, who, track, steps)
    if step is not None and not step.done:
        yield _real_views(step, who, track, steps)


def _real_views(step, who: str, track: int, steps: int):
    steer, gas, brake = step.action
    status = (f"Track {track}, {who}: step {step.t + 1} of {steps}, return **{step.total:.1f}** "
              f"(steer {steer:+.2f}, gas {gas:.2f}, brake {brake:.2f}).")
    if step.done or step.t + 1 == steps:
        status += (" **Finished.** Each new tile of track is worth 1000/N (N ≈ 300 tiles a track) and every step "
                   "costs 0.1; the paper's controller averages 906 ± 21 over 1,000-step episodes.")
    return upscale(step.observation, 288), upscale(step.reconstruction), z_bars(step.z), status


# --- Dream ----------------------------------------------------------------------------------------------

def start_dream(start, seed, tau):
    """A new dream from the chosen real frame: (state, frame, z bars, mixture figure, status)."""
    from core import world_models as wm
    from core.runtime import clamp_seed

    starts = wm.dream_starts()
    index = number(start, 1, 1, len(starts), whole=True) - 1
    dream = wm.Dream(wm.load_rnn(), starts[index], clamp_seed(seed), label=f"Dream {index + 1}")
    frame = wm.decode(wm.load_vae(), dream.z)[0]
    return (dream, upscale(frame), z_bars(dream.z[0]), None,
            f"{dream.label} started from a real frame (V's z of it): press a button to drive.")


def press(label, tau, dream):
    """FRAMES_PER_PRESS dream frames with one button's action, streamed at DREAM_FPS."""
    if label not in BUTTONS:
        raise ValueError(f"Unknown button {str(label)[:20]!r}: one of {', '.join(BUTTONS)}.")
    yield from _dream_frames(dream, tau, FRAMES_PER_PRESS, lambda z, h: BUTTONS[label], f"“{label}”")


def _press_of(label: str):
    """The handler of one visible button (the button's own label is not an input an API client can send)."""
    def press_button(tau, dream):
        yield from press(label, tau, dream)
    press_button.__name__ = f"press_{BUTTON_KEYS[list(BUTTONS).index(label)]}"
    return press_button


def let_controller_dream(choice, tau, frames, dream):
    """The chosen controller drives the dream for `frames` frames (Stop ends it)."""
    import torch

    controller, who = _controller(choice)
    frames = number(frames, 200, 1, MAX_DREAM_STEPS, whole=True)
    if controller is None:
        from core.world_models import NoisyPolicy

        policy = NoisyPolicy(dream.t if dream else 0)

        def act(z, h):
            return policy()
    else:
        def act(z, h):
            with torch.no_grad():  # here, not around the yields: a generator resumes on other server threads
                return controller(z[None], h)[0].numpy()
    yield from _dream_frames(dream, tau, frames, act, who)


def _dream_frames(dream, tau, frames: int, act, what: str):
    from core import world_models as wm

    if dream is None:
        raise ValueError("Start a dream first.")
    tau = wm.check_temperature(number(tau, 1.0, 0, wm.MAX_TEMPERATURE))
    vae = wm.load_vae()
    mixture = None
    for i in range(frames):
        began = time.monotonic()
        action = np.asarray(act(dream.z[0], dream.h), dtype=np.float32)
        z, reward, mixture = dream.step(action, tau)
        frame = wm.decode(vae, z[None])[0]
        last = i == frames - 1
        status = (f"{dream.label}, step {dream.t}: {what} at temperature {tau:g}. M expects reward "
                  f"{reward:+.2f} for this step; dreamed return so far **{dream.total:.1f}**.")
        yield (dream, upscale(frame), z_bars(z), _mixture_figure(mixture, z, dims=4) if last else gr.skip(), status)
        time.sleep(max(0.0, 1 / DREAM_FPS - (time.monotonic() - began)))


def _mixture_figure(mixture, drawn, dims: int = 4, actual=None, title: str = "M's prediction for the next z"):
    """p(z_t+1, d) for the first `dims` dimensions of z: the mixture (solid), each weighted component
    (dashed), the value drawn in the dream (blue), and the real one where there is one (orange)."""
    import torch

    plt = pyplot()
    fig, axes = plt.subplots(1, dims, figsize=(2.6 * dims, 2.3), dpi=90, squeeze=False)
    from core.world_models import component_log_probs

    sigma = mixture.log_sigma.exp()
    for d, ax in enumerate(axes[0]):
        lo = float((mixture.mu[:, d] - 3 * sigma[:, d]).min())
        hi = float((mixture.mu[:, d] + 3 * sigma[:, d]).max())
        x = torch.linspace(lo, hi, 300)
        points = x[:, None].expand(-1, mixture.mu.shape[-1])      # x in every dimension; dimension d is drawn
        parts = component_log_probs(mixture, points)[:, :, d].exp().T  # pi_k N(x | mu_k, sigma_k^2), [K, 300]
        for part in parts:
            ax.plot(x, part, ls="--", lw=0.8, color="0.5")
        ax.plot(x, parts.sum(0), color="black", lw=1.5)
        ax.axvline(float(drawn[d]), color=np.array(BLUE) / 255, lw=2, label="dreamed")
        if actual is not None:
            ax.axvline(float(actual[d]), color=np.array(ORANGE) / 255, lw=2, ls=":", label="real")
        ax.set_title(f"z[{d}]", fontsize=9)
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title + " (dashed: each Gaussian, weighted)", fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


# --- Why it works ---------------------------------------------------------------------------------------

def compare(choice, track, steps, tau, seed):
    """The same actions in the real car and in M: filmstrips, error curves, and the state for the
    mixture view."""
    from core import world_models as wm
    from core.runtime import clamp_seed

    controller, who = _controller(choice)
    if controller is None:
        raise ValueError("Pick a trained controller: the comparison replays its actions in the dream.")
    steps = number(steps, 150, wm.DREAM_START + 10, MAX_COMPARE_STEPS, whole=True)
    tau = wm.check_temperature(number(tau, 1.0, 0, wm.MAX_TEMPERATURE))
    vae, rnn = wm.load_vae(), wm.load_rnn()
    check = wm.check_dream(vae, rnn, controller, clamp_seed(track), steps, tau, clamp_seed(seed))
    dream_frames = wm.decode(vae, check.dream_z)
    state = {"check": check, "tau": tau}
    return (state, _filmstrip(check, dream_frames), _error_figure(check, tau),
            gr.update(maximum=len(check.real_z) - 1, value=check.start + 1),
            f"Track {clamp_seed(track)}, {who}, {len(check.real_z)} steps. From step {check.start} M dreams "
            f"on alone at temperature {tau:g}, fed the same actions the real car took.")


def _filmstrip(check, dream_frames, columns: int = 8) -> np.ndarray:
    picks = np.linspace(check.start, len(check.real_z) - 1, columns).round().astype(int)
    real = np.concatenate([check.real_frames[t] for t in picks], 1)
    dreamed = np.concatenate([dream_frames[t] for t in picks], 1)
    gap = np.full((4, real.shape[1], 3), 255, np.uint8)
    strip = np.concatenate([real, gap, dreamed], 0)
    return upscale(strip, 2 * strip.shape[0])


def _error_figure(check, tau: float):
    from core.world_models import mixture_mean

    plt = pyplot()
    real = check.real_z
    one_step = ((mixture_mean(check.predicted) - real[1:]) ** 2).mean(1)
    stay = ((real[:-1] - real[1:]) ** 2).mean(1)
    drift = ((check.dream_z - real) ** 2).mean(1)
    t = np.arange(1, len(real))
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=90)
    ax.plot(t, one_step, color=np.array(BLUE) / 255, label="M one step ahead (reads the real z's)")
    ax.plot(t, stay, color="0.6", label="'nothing changes' (z_t+1 = z_t)")
    ax.plot(np.arange(len(real)), drift, color=np.array(ORANGE) / 255, lw=2,
            label=f"the dream, open loop from step {check.start} (τ = {tau:g})")
    ax.axvline(check.start, color="black", lw=0.8, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("squared error per dimension of z")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_image(fig)


def mixture_at(state, step):
    """M's predicted mixture for z at `step` (from the real history before it), against the real z."""
    import torch

    from core import world_models as wm

    if not state or "check" not in state:
        raise ValueError("Compare the dream with reality first.")
    check = state["check"]
    t = number(step, 1, 1, len(check.real_z) - 1, whole=True)
    mixture = wm.Mixture(*(m[t - 1] for m in check.predicted))
    gen = torch.Generator().manual_seed(t)
    drawn = wm.sample_mixture(wm.Mixture(*(m[None] for m in mixture)), state["tau"], gen)[0]
    return _mixture_figure(mixture, drawn, actual=check.real_z[t],
                           title=f"Step {t}: M's p(z | the real past), a sample at τ = {state['tau']:g}, "
                                 "and the real z")


# --- layout -----------------------------------------------------------------------------------------------

def _model_lines() -> str:
    lines = []
    for name, what in (("vae", "V"), ("rnn", "M"), ("controller_real", "C, real"), ("controller_dream", "C, dream")):
        if name not in list_shipped("world_models"):
            continue
        card = read_card("world_models", name)
        metrics = card.get("metrics", {})
        figure = {"vae": lambda m: f"validation mse {m.get('mse_per_pixel', float('nan')):.4f} per pixel",
                  "rnn": lambda m: f"validation NLL {m.get('nll_per_dim', float('nan')):.3f} nats per dimension",
                  }.get(name, lambda m: f"real return {m.get('real_mean_return')} on its card's 5 tracks")(metrics)
        lines.append(f"- **{what}**: `{card['command']}` ({card['wall_time_s'] / 60:.0f} min, "
                     f"{card['hardware']}); {figure}")
    for _, record in bench_records("world_models"):
        returns = record.get("figures", {}).get("returns", {})
        if returns:
            lines.append("- Measured over 20 real tracks (bench/world_models.py): " + ", ".join(
                f"{key} {value['mean']:.0f} ± {value['std']:.0f}" for key, value in returns.items()
                if isinstance(value, dict) and "mean" in value))
        break
    return "\n".join(lines)


def _picture(title: str, explanation: str, **kwargs) -> gr.Image:
    """An output picture with its caption above it, in the same column."""
    caption(f"**{title}**: {explanation}")
    return gr.Image(label=title, show_label=False, interactive=False, alt_text=f"{title}: {explanation}", **kwargs)


Z_BARS = ("one bar per number of z, from the middle line: blue above zero, orange below, the bar's height its "
          "size (clipped at ±3)")


def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    if not _ready():
        gr.Markdown("**Not ready:** V and M are not shipped yet. Train them with `python -m core.train world_models "
                    "--stage rollouts`, then `--stage vae`, `--stage rnn` and `--stage controller`.")
        for button in (*page.buttons, page.copy):  # nothing for them to run
            button.visible = False
        return page
    drivers = _controllers()

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=250):
            with gr.Row():
                go = gr.Button("Drive", variant="primary", elem_id="wm-drive")
                stop = gr.Button("Stop", elem_id="wm-stop")
            driver = gr.Dropdown(drivers, value=drivers[0][1], label="driver", elem_id="wm-driver")
            track = gr.Number(value=1, label="track (seed)", precision=0,
                              minimum=0)
            steps = gr.Slider(50, 1000, value=1000, step=50, label="steps (CarRacing ends at 1,000)")
            with gr.Accordion("The shipped models and how each was trained", open=False):
                gr.Markdown(_model_lines())
        with gr.Column(scale=4):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=290):
                    seen = _picture("what the car sees (96×96)", "the real CarRacing frame, enlarged with whole "
                                    "pixels", elem_id="wm-seen")
                with gr.Column(min_width=260):
                    remade = _picture("V's reconstruction from z (64×64)", "V's decoder drawing the 32 numbers it "
                                      "made of this frame: what C and M work from", elem_id="wm-remade")
                with gr.Column(min_width=260):
                    bars = _picture("z: the 32 numbers C and M read", Z_BARS, elem_id="wm-z")
            status = gr.Markdown(elem_id="wm-status")

    gr.Markdown("#### Dream: M plays the game, V draws it\nThe dream starts from a real frame; each button drives "
                f"{FRAMES_PER_PRESS} dreamed frames. Temperature 0 is the most likely future, 1 what M learned, "
                "above 1 an unstable world that is harder to exploit (the paper trained in dreams at 1.15).")
    dream = gr.State(None)
    with gr.Row():
        start = gr.Slider(1, read_card("world_models", "rnn")["dream_starts"], value=1, step=1,
                          label=f"start from real frame (step {DREAM_START} of a rollout)")
        dream_seed = gr.Number(value=0, label="dream seed", precision=0, minimum=0)
        tau = gr.Slider(0, MAX_TEMPERATURE, value=1.0, step=0.05, label="temperature τ", elem_id="wm-tau")
        begin = gr.Button("Start a dream", elem_id="wm-dream-start")
    with gr.Row():
        buttons = [gr.Button(label, elem_id=f"wm-{key}") for label, key in zip(BUTTONS, BUTTON_KEYS)]
    with gr.Row():
        dream_driver = gr.Dropdown(drivers, value=drivers[0][1], label="or let a driver dream")
        dream_frames = gr.Slider(10, MAX_DREAM_STEPS, value=200, step=10, label="frames")
        auto = gr.Button("Let it drive the dream", elem_id="wm-dream-drive")
        dream_stop = gr.Button("Stop")
    with gr.Row():
        with gr.Column():
            dream_view = _picture("the dream (V decodes M's z)", "no simulator: M drew the next z from its mixture and "
                                  "V's decoder drew the picture", elem_id="wm-dream")
        with gr.Column():
            dream_bars = _picture("dreamed z", Z_BARS)
    mixture_view = _picture("M's mixture for the next z (first 4 numbers)",
                            "one panel per number of z; across, its possible values; up, the probability density "
                            "M gives them: black the mixture, dashed grey each weighted Gaussian, the blue line the "
                            "value the dream drew", elem_id="wm-mixture")
    dream_status = gr.Markdown(elem_id="wm-dream-status")

    gr.Markdown("#### Why it works: the dream against reality\nThe controller drives a real track; M then replays "
                "the same actions. One step ahead, reading the real frames, M is close; left to dream alone its "
                "world drifts away.")
    compare_state = gr.State(None)
    with gr.Row():
        compare_driver = gr.Dropdown([d for d in drivers if d[1] != "noisy"] or drivers, label="driver",
                                     value=([d for d in drivers if d[1] != "noisy"] or drivers)[0][1])
        compare_track = gr.Number(value=2, label="track (seed)", precision=0, minimum=0)
        compare_steps = gr.Slider(DREAM_START + 10, MAX_COMPARE_STEPS, value=150, step=10, label="steps")
        compare_tau = gr.Slider(0, MAX_TEMPERATURE, value=1.0, step=0.05, label="dream temperature τ")
        compare_seed = gr.Number(value=0, label="dream seed", precision=0, minimum=0)
    compare_go = gr.Button("Compare", elem_id="wm-compare")
    compare_note = gr.Markdown()
    strip = _picture("real (top) and dreamed (bottom), same actions", "eight moments from the dream's start to the "
                     "end, left to right; top row the real frames, bottom row M's dream decoded by V",
                     elem_id="wm-strip")
    errors = _picture("prediction error", "across, the step; up, the squared error per number of z: blue, M one "
                      "step ahead reading the real past; grey, guessing that nothing changes; orange, the dream "
                      "left alone from the dotted line", elem_id="wm-errors")
    step_pick = gr.Slider(1, MAX_COMPARE_STEPS, value=DREAM_START + 1, step=1, label="step: M's mixture for z there")
    step_mixture = _picture("mixture against the real z", "as above, for the chosen step of the real drive: the "
                            "blue line a value drawn at the dream's τ, the dotted orange line the real z",
                            elem_id="wm-step-mixture")

    drive_event = gr.on([go.click, page.ran.change], user_errors(drive_real), [driver, track, steps],
                        [seen, remade, bars, status], api_name="world_models_drive", **queue(TAB, 2))
    stop.click(None, None, None, cancels=[drive_event], api_name="world_models_stop", api_visibility="private")
    dream_views = [dream, dream_view, dream_bars, mixture_view, dream_status]
    begin.click(user_errors(start_dream), [start, dream_seed, tau], dream_views, api_name="world_models_dream_start",
                **queue(TAB, 2))
    for button, key in zip(buttons, BUTTON_KEYS):
        # A press while frames are still coming is dropped (trigger_mode "once"): no backlog of presses.
        button.click(user_errors(_press_of(button.value)), [tau, dream], dream_views, trigger_mode="once",
                     show_progress="hidden", api_name=f"world_models_dream_{key}", api_visibility="private",
                     **queue(TAB, 2))
    # For API clients: one endpoint that names the button (hidden widgets: the page has the buttons).
    button_name = gr.Dropdown(list(BUTTONS), value="▲ gas", label="button", visible=False)
    gr.Button(visible=False).click(user_errors(press), [button_name, tau, dream], dream_views,
                                   api_name="world_models_dream_press", **queue(TAB, 2))
    auto_event = auto.click(user_errors(let_controller_dream), [dream_driver, tau, dream_frames, dream], dream_views,
                            api_name="world_models_dream_drive", **queue(TAB, 2))
    dream_stop.click(None, None, None, cancels=[auto_event], api_name="world_models_dream_stop",
                     api_visibility="private")
    compare_go.click(user_errors(compare), [compare_driver, compare_track, compare_steps, compare_tau, compare_seed],
                     [compare_state, strip, errors, step_pick, compare_note], api_name="world_models_compare",
                     **queue(TAB, 2)).then(
        user_errors(mixture_at), [compare_state, step_pick], [step_mixture],
        api_name="world_models_mixture_after_compare", api_visibility="undocumented", **queue(TAB, 2))
    step_pick.input(user_errors(mixture_at), [compare_state, step_pick], [step_mixture], trigger_mode="always_last",
                    show_progress="hidden", api_name="world_models_mixture", **queue(TAB, 2))
    page.link({"driver": driver, "track": track, "steps": steps})
    return page
