"""The step viewer the diffusion and energy tabs share: watch an iterative sampler work, one step at a time.

A sampling run (the tab's own streaming handler) keeps one frame per step, a (picture, caption) pair,
in the user's gr.State. The viewer then shows any step from a slider, plays them as an animation and
saves them as a GIF, all without running the network again. The endpoints are named alike in every
tab: <prefix>_show_frame, _play, _pause, _steps_gif.

    viewer = stepviewer.build("diffusion", "step viewer: x_t (left) and the guess x̂₀ (right)", "step (0 = …)")
    run = go.click(generate, inputs, [viewer.frames, viewer.position, viewer.picture, viewer.caption, …])
    stepviewer.wire(viewer, "diffusion", slot)
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from tabs import common
from tabs.common import number, queue, user_errors

MAX_FRAMES = 101  # frames kept per run: the start and up to 100 steps, evenly spread
SECONDS_PER_FRAME = 0.08
NOT_RUN = "Sample first: the viewer shows the steps of the last run."


def kept_steps(steps: int, max_frames: int = MAX_FRAMES) -> set[int] | None:
    """The steps 0 … `steps` whose frames a run keeps: all of them (None) when they fit, else
    `max_frames` evenly spread, the first and the last always among them."""
    if steps < max_frames:
        return None
    return {round(i * steps / (max_frames - 1)) for i in range(max_frames)}


def at_last(frames) -> dict:
    """The slider's update for a run that has just added frames: its range, and the newest frame."""
    return gr.update(maximum=max(1, len(frames) - 1), value=len(frames) - 1)  # a slider needs maximum > minimum


def show_frame(frames, index):
    """The viewer at one precomputed frame (no network call) -> (picture, caption)."""
    if not frames:
        return None, NOT_RUN
    return frames[number(index, 0, 0, len(frames) - 1, whole=True)]


def play(frames, index, seconds_per_frame: float = SECONDS_PER_FRAME):
    """Animate from the current frame (from the start when at the end) -> (index, picture, caption) per frame."""
    if not frames:
        raise ValueError("Sample first: there are no steps to play yet.")
    index = number(index, 0, 0, len(frames) - 1, whole=True)
    for i in range(0 if index >= len(frames) - 1 else index, len(frames)):
        yield i, *frames[i]
        time.sleep(seconds_per_frame)


def frames_gif(frames, name: str = "steps") -> str:
    """The frames as an animated GIF that holds the last frame a while -> its path."""
    from core.data.images import save_gif

    if not frames:
        raise ValueError("Sample first: there are no steps to save yet.")
    pictures = [picture for picture, _ in frames] + [frames[-1][0]] * 10
    path = Path(tempfile.mkdtemp(prefix=f"genlab-{name}-")) / f"{name}_steps.gif"
    return save_gif(pictures, path, seconds_per_frame=SECONDS_PER_FRAME)


@dataclass
class Viewer:
    frames: gr.State
    picture: gr.Image
    caption: gr.Markdown
    position: gr.Slider
    play: gr.Button
    pause: gr.Button
    gif_button: gr.Button
    gif: gr.File


def build(prefix: str, title: str, slider_label: str) -> Viewer:
    """The viewer's widgets, in the column being built: the title above the picture (Gradio's own label
    would sit over the picture's top-left corner), the caption, the step slider, Play / Pause / Make GIF."""
    gr.Markdown(f"**{title}**")
    picture = gr.Image(label=title, show_label=False, type="pil", format="png", interactive=False,
                       elem_id=f"{prefix}-viewer", alt_text=title)
    caption = common.caption("")  # filled per frame: which step, which time, what the picture shows
    position = gr.Slider(0, 1, value=0, step=1, label=slider_label, elem_id=f"{prefix}-viewer-step")
    with gr.Row():
        play_button = gr.Button("▶ Play")
        pause = gr.Button("Pause")
        gif_button = gr.Button("Make GIF")
    gif = gr.File(label="GIF of the steps")
    return Viewer(gr.State([]), picture, caption, position, play_button, pause, gif_button, gif)


def wire(viewer: Viewer, prefix: str, slot: str) -> None:
    """Scrub, play, pause and save: cheap events in the tab's viewing slot."""
    v = viewer
    v.position.input(show_frame, [v.frames, v.position], [v.picture, v.caption], api_name=f"{prefix}_show_frame",
                     **queue(slot, 8))
    playing = v.play.click(user_errors(play), [v.frames, v.position], [v.position, v.picture, v.caption],
                           api_name=f"{prefix}_play", api_visibility="private", **queue(slot, 8))
    v.pause.click(None, None, None, cancels=[playing], api_name=f"{prefix}_pause", api_visibility="private")
    v.gif_button.click(user_errors(lambda frames: frames_gif(frames, prefix)), v.frames, v.gif,
                       api_name=f"{prefix}_steps_gif", **queue(slot, 8))
