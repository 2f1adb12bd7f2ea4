"""The live 2-D trainer view the GAN, flow and energy tabs share: a toy distribution, a seed,
Reset / Play / Pause / Step, a status line and a picture redrawn every few training steps.

A tab supplies a trainer object (its own class in core: `.train(steps)`, `.step`, `.diverged`, a
sentence or None) kept in this user's gr.State, and three plain functions:
    reset(distribution, seed, *settings) -> (trainer, picture, status)
    start(trainer, distribution, seed, *settings) -> the same (opening the panel keeps a running game)
    step(trainer, steps, *settings) -> the same (train once)
`play` turns `step` into a stream that stops by itself on divergence, and `wire` connects the buttons
with the same endpoint names in every tab: <prefix>_live_reset, _start, _play, _pause, _step.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.runtime import MAX_SEED
from tabs.common import number, queue, user_errors

FRAMES = 400  # a Play press runs at most this many frames, then pauses by itself
NOT_STARTED = "Press Reset first to start training."


def learning_rate(log10_value, default: float = -3.0, low: float = -5.0, high: float = 1.0) -> float:
    """A log10 slider value -> the learning rate (clamped to the sliders' range)."""
    return 10.0 ** number(log10_value, default, low, high)


def steps_per_frame(value, high: int = 500) -> int:
    return number(value, 1, 1, high, whole=True)


def require(trainer):
    if trainer is None:
        raise ValueError(NOT_STARTED)
    return trainer


def play(step, trainer, *args, frames: int = FRAMES):
    """Yield step(trainer, *args) frame after frame until paused (the event is cancelled), diverged,
    or `frames` frames."""
    require(trainer)
    for _ in range(frames):
        yield step(trainer, *args)
        if trainer.diverged:
            return


def distribution_choices(names=None) -> list[tuple[str, str]]:
    from core.data.toy2d import DISTRIBUTIONS, LABELS

    return [(LABELS[name], name) for name in (names or DISTRIBUTIONS)]


@dataclass
class Controls:
    state: gr.State
    distribution: gr.Dropdown
    seed: gr.Number
    per_frame: gr.Slider
    reset: gr.Button | None = None
    play: gr.Button | None = None
    pause: gr.Button | None = None
    step: gr.Button | None = None
    status: gr.Markdown | None = None


def settings_row(default: str, names=None, per_frame: int = 10, max_per_frame: int = 100) -> Controls:
    """Distribution, seed and steps per frame, in the row being built; the tab adds its own sliders after."""
    controls = Controls(gr.State(None), gr.Dropdown(distribution_choices(names), value=default, label="data"),
                        gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED),
                        gr.Slider(1, max_per_frame, per_frame, step=1, label="steps per frame"))
    return controls


def buttons_row(controls: Controls) -> Controls:
    with gr.Row():
        controls.reset = gr.Button("Reset")
        controls.play = gr.Button("▶ Play", variant="primary")
        controls.pause = gr.Button("Pause")
        controls.step = gr.Button("Step")
    controls.status = gr.Markdown()
    return controls


def wire(prefix: str, box: gr.Accordion, controls: Controls, settings: list, pictures: list,
         reset, start, step, play_stream, slot: str) -> None:
    """Connect the buttons. `settings` are the tab's own inputs after (distribution, seed) for reset/start
    and after steps-per-frame for step/play; `pictures` the outputs after the state (then the status)."""
    c = controls
    game = [c.distribution, c.seed, *settings]
    outputs = [c.state, *pictures, c.status]
    training = [c.state, c.per_frame, *settings]
    c.reset.click(user_errors(reset), game, outputs, api_name=f"{prefix}_live_reset", **queue(slot, 4))
    c.distribution.change(user_errors(reset), game, outputs, api_name=f"{prefix}_live_reset_from_distribution",
                          api_visibility="undocumented", **queue(slot, 4))
    box.expand(user_errors(start), [c.state, *game], outputs, api_name=f"{prefix}_live_start",
               api_visibility="undocumented", **queue(slot, 4))
    playing = c.play.click(user_errors(play_stream), training, outputs, api_name=f"{prefix}_live_play",
                           **queue(slot, 4))
    c.pause.click(None, None, None, cancels=[playing], api_name=f"{prefix}_live_pause", api_visibility="private")
    c.step.click(user_errors(step), training, outputs, api_name=f"{prefix}_live_step", **queue(slot, 4))
