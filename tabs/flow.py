"""Normalizing-flow tab: a RealNVP learning toy 2-D data live (both directions, layer by layer, the
learned density, the NLL), a click explorer that follows one point through every coupling, and the
shipped image flow's samples, temperatures and interpolations.

Widgets and events only; the flows live in core.flow. Nothing heavy is imported until a handler runs,
so the app starts fast.
"""
from __future__ import annotations

import functools

import gradio as gr

from core.data.toy2d import EXTENT
from core.registry import read_card, shipped_path
from core.runtime import MAX_SEED
from tabs import live2d
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (PALETTE, bench_records, caption, clicked_pixel, figure_to_image, number, on_gpu, picture,
                         pyplot, queue, user_errors)
from tabs.live2d import learning_rate, play, require, steps_per_frame

TAB = "flow"
LIVE = "flow-live"  # the live flow and the click explorer: one user's game never waits for another's image grid
SHIPPED = "fashion16_k4"
TRAIN_COMMAND = "python -m core.train flow --epochs 50 --minutes 75 --threads 1"
DEFAULT_COUPLINGS, MAX_COUPLINGS = 8, 16
LR_LOG_LOW, LR_LOG_HIGH, LR_LOG_DEFAULT = -4.0, 0.0, -2.5
DENSITY_RESOLUTION = 60  # the heat map's cells per side: 3,600 log-likelihoods per frame
FRAME_DPI = 72           # the live picture: modest, so a frame draws in about 0.1 s on one CPU thread
PLANE_PX, PLANE_DPI = 320, 80  # the clickable planes: square, the axes filling every pixel
# blue, orange and vermillion (red-orange) from the colour-blind-safe palette; grey for the Gaussian's draws
DATA, PULLED, GAUSS, PATH = PALETTE[0], PALETTE[1], "#8c959f", PALETTE[5]
LINK_FRAMES = 50         # a link or a "Try this" button: a fresh flow, then this many frames of Play
MAX_SIDE = 12            # samples per side of a grid
MIN_T, MAX_T, DEFAULT_T = 0.05, 1.5, 0.7
TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
MAX_ROWS = 6             # latents in the temperature grid
MAX_STEPS = 16           # images between the two ends of an interpolation
SCALE = 6                # a 16-px image is shown at 96 px, nearest neighbour: every pixel visible
LABEL_PX = 14            # the τ labels above the temperature grid
GPU_SECONDS = 15         # ZeroGPU: 144 samples are one inverse pass, well under a second on a GPU
BITS_LABELS = {"flow": "this flow (upper bound)", "pixelcnn_gated": "gated PixelCNN",
               "pixelcnn_plain": "plain PixelCNN", "vae_iwae": "VAE (IWAE bound)", "vae_elbo": "VAE (ELBO bound)"}

INTRO = """**An invertible map to a Gaussian.** A flow f turns a data point x into a latent z = f(x) of the same size; because
f is invertible, log p(x) is exact, and sampling is x = f⁻¹(z) with z ~ N(0, I). Below: a flow learning 2-D data live."""

LESSON = Lesson(
    tab=TAB, main="flow-play", result="flow-live-picture",
    chapters="*Generative Deep Learning* ch. 6 (normalizing flows: RealNVP, GLOW) · Dinh et al. 2017 (RealNVP)",
    equations=(r"Change of variables: $\log p(x) = \log p_Z(z) + \log\left|\det \frac{\partial z}{\partial x}\right|$, "
               r"$z = f(x)$ · affine coupling: $x_a' = x_a$, $x_b' = x_b \odot e^{s(x_a)} + t(x_a)$, "
               r"$\log\left|\det J\right| = \sum s(x_a)$"),
    try_this=(
        Try("learning rate 1", {"data": "moons", "lr": 0, "couplings": DEFAULT_COUPLINGS, "layer": DEFAULT_COUPLINGS},
            "The flow diverges within a few steps and the status says why: one step this large throws the "
            "couplings' scales so far that log p(x) is no longer finite. Lower the learning rate and it learns."),
        Try("one coupling", {"data": "moons", "lr": LR_LOG_DEFAULT, "couplings": 1, "layer": 1},
            "The bent grid's vertical lines stay straight: one coupling moves only the second coordinate, by "
            "amounts computed from the first. The moons cannot become a Gaussian and the NLL stalls far above "
            "eight couplings'; alternating couplings is what lets every coordinate move."),
        Try("layer 4 of 8", {"data": "moons", "lr": LR_LOG_DEFAULT, "couplings": DEFAULT_COUPLINGS, "layer": 4},
            "The top-right panel shows the data after 4 of the 8 couplings: halfway from two moons to a round "
            "Gaussian blob. Drag the layer slider from 0 to 8 to watch space bend one coupling at a time."),
        Try("checkerboard", {"data": "checkerboard", "lr": LR_LOG_DEFAULT, "couplings": DEFAULT_COUPLINGS,
                             "layer": DEFAULT_COUPLINGS},
            "The learned density keeps thin bridges between the squares: a flow is a smooth bijection of one "
            "Gaussian blob, so it can stretch it thin but never cut it into separate pieces."),
    ),
    misconceptions=(
        ("A flow compresses the data into a smaller code, like a VAE.",
         "z has exactly as many numbers as x (2 for the points, 256 for a 16×16 image): f is a bijection and "
         "throws nothing away."),
        ("The log-determinant needs an expensive determinant of the Jacobian.",
         "A coupling's Jacobian is triangular, so log|det J| = Σ s(x_a): one sum. The layers are designed for "
         "exactly that."),
        ("Inverting a coupling means inverting its networks s and t.",
         "Never: x_a passes unchanged, so s(x_a) and t(x_a) are simply computed again and only the affine map "
         "is undone. That is why s and t may be any networks."),
        ("A flow's likelihood is a bound, like a VAE's ELBO.",
         "For continuous data it is exact. For images, only dequantisation (adding uniform noise to the discrete "
         "levels) turns it into a bound on the discrete likelihood."),
    ),
    code=(Code("the change of variables", "core/flow.py", ("RealNVP2D.log_prob", "run_steps", "standard_normal_log_prob"),
               r"$\log p(x) = \log p(z) + \log\left|\det \frac{\partial z}{\partial x}\right|$ with $z = f(x)$; "
               r"the layers' log-determinants add up, and $\log p(z) = -\tfrac12 \sum_j (z_j^2 + \log 2\pi)$"),
          Code("the affine coupling (RealNVP)", "core/flow.py",
               ("AffineCoupling.scale_and_shift", "AffineCoupling.forward", "AffineCoupling.inverse"),
               r"$x_b' = x_b \odot e^{s(x_a)} + t(x_a)$, $\log\left|\det J\right| = \sum s(x_a)$; inverse: "
               r"$x_b = (x_b' - t(x_a')) \odot e^{-s(x_a')}$")),
)

HOW_TEXT = """A flow is a single invertible function f that turns a data point x into a latent z = f(x) **of the same
size**, trained so that z looks like standard Gaussian noise. Invertible means no probability mass is
created or lost, only moved, so the density of x follows exactly from the **change of variables**:

**log p(x) = log p_Z(f(x)) + log |det ∂f/∂x|**

The first term asks whether x lands where the Gaussian is dense; the second accounts for how much f
stretches space around x (a region f spreads out must have been denser before). Training maximises this
exact log-likelihood: no bound as in a VAE, no critic as in a GAN.

**Affine coupling (RealNVP).** Split the coordinates into a part x_a that passes unchanged and a part x_b
that is scaled and shifted by amounts computed from x_a:  x_a' = x_a,  **x_b' = x_b · exp(s(x_a)) + t(x_a)**,
with s and t any neural networks. The Jacobian is **triangular** (x_a' ignores x_b, and each x_b' depends on
its own x_b only through the factor exp(s)), and a triangular determinant is the product of its diagonal:
**log |det J| = Σ s(x_a)**, free. The **inverse** never inverts s or t, because x_a is still there to feed
them: x_b = (x_b' − t(x_a')) · exp(−s(x_a')). Layers alternate which part passes, so every coordinate
moves; their log-determinants add up.

**Sampling** runs the stack backwards: z ~ N(0, I), x = f⁻¹(z). At a **temperature** τ, z ~ N(0, τ² I):
τ < 1 stays near the Gaussian's centre, where the flow keeps its most typical images (GLOW's trick),
trading variety for tidiness. **Dequantisation**: pixels take discrete levels k, and a density could put
infinite spikes on them, so the image flow is trained on y = (k + u)/K with u ~ U[0, 1), which spreads each
level over its bin; the density of y then bounds the discrete likelihood, in bits per dimension
comparable with PixelCNN's."""

LIVE_TEXT = """**The live flow, four panels** (each square is the same [−3, 3]², crossed by the axes). **Top left**, data
space: the data x (blue) and Gaussian draws pulled back through f⁻¹ (orange); when orange covers blue, the flow
generates the data. **Top right**: the data after the first k couplings (blue), a square grid bent the same way (grey
lines) and z ~ N(0, I) for reference (grey dots); the **layer** slider sets k. **Bottom left**: the learned density
exp(log p(x)), black = 0, brighter = denser (magma). **Bottom right**: the negative log-likelihood in nats per point
against training steps: training batch (blue), held out (orange), the best single Gaussian (grey, dashed)."""

EXPLORER_TEXT = """Click a point of either plane (or type it and press a button): it is marked with a vermillion ring, and its
path through every coupling step is drawn in the other plane in vermillion, numbered step by step, ending at its image
(the star). They use the live flow above as it is now."""

DATA_PLANE_CAPTION = """**Data plane x**: the data (blue dots) over the learned density in grey (white = none, darker = denser),
[−3, 3]², x across and y up; vermillion: the clicked point or the path back from the latent plane."""

LATENT_PLANE_CAPTION = """**Latent plane z**: the data's images z = f(x) (grey dots) and the standard Gaussian's 1σ, 2σ, 3σ circles,
[−3, 3]²; vermillion: the clicked point or the path from the data plane, ending at the star."""


# --- the live 2-D flow ------------------------------------------------------------------------

class LiveFlow:
    """One user's live flow (a core.flow.Flow2D, kept in gr.State) and what the tab draws besides:
    the layer shown, the held-out NLL at every frame, and the best Gaussian's NLL, the line to beat."""

    def __init__(self, flow, layer: int, note: str = ""):
        self.flow, self.layer, self.note = flow, layer, note
        self.picture = None  # its LivePicture, made at the first frame (building the page imports no matplotlib)
        self.held_out = [(0, flow.held_out_nll())]
        self.gaussian_nll = gaussian_nll(flow.held_out)

    @property
    def step(self) -> int:
        return self.flow.step

    @property
    def diverged(self) -> str | None:
        return self.flow.diverged

    def train(self, steps: int) -> None:
        self.flow.train(steps)
        self.held_out.append((self.flow.step, self.flow.held_out_nll()))


def gaussian_nll(points) -> float:
    """−mean log N(x; μ, Σ) with μ and Σ fitted to the points themselves: the best any one Gaussian does."""
    import torch

    fitted = torch.distributions.MultivariateNormal(points.mean(0), torch.cov(points.T, correction=0))
    return -fitted.log_prob(points).mean().item()


def _couplings(value) -> tuple[int, str]:
    """The number of couplings (clamped to the slider's range) and a sentence when it was not the one asked for."""
    n = number(value, DEFAULT_COUPLINGS, 1, MAX_COUPLINGS, whole=True)
    if value is None:
        return n, ""
    try:
        asked = float(value)
    except (TypeError, ValueError):
        return n, f"{value!r} is not a number of couplings: {n} used. "
    if asked == n:
        return n, ""
    why = " (with none, f would be the identity: nothing to learn)" if asked < 1 else ""
    return n, f"Couplings set to {n}: the live flow has 1 to {MAX_COUPLINGS}{why}. "


def _learning_rate(value) -> float:
    return learning_rate(value, LR_LOG_DEFAULT, LR_LOG_LOW, LR_LOG_HIGH)


def _layer(value, couplings: int) -> int:
    return number(value, couplings, 0, couplings, whole=True)


def live_reset(distribution, seed, lr_log, couplings, layer):
    """A fresh flow for this user -> (state, picture, layer slider, status)."""
    from core.flow import Flow2D
    from core.runtime import clamp_seed

    n, note = _couplings(couplings)
    live = LiveFlow(Flow2D(distribution, couplings=n, seed=clamp_seed(seed), lr=_learning_rate(lr_log)),
                    _layer(layer, n), note)
    return live, live_picture(live), gr.Slider(maximum=n, value=live.layer), live_status(live)


def live_start(live, distribution, seed, lr_log, couplings, layer):
    """Opening the tab or the panel: keep this user's flow if there is one, else start one."""
    if live is None:
        return live_reset(distribution, seed, lr_log, couplings, layer)
    return live, live_picture(live), gr.Slider(maximum=live.flow.couplings, value=live.layer), live_status(live)


def _advance(live, steps):
    """Train one frame's steps and draw (the layer and learning rate the state holds now)."""
    live.train(steps_per_frame(steps))
    return live, live_picture(live), gr.skip(), live_status(live)


def _apply(live, lr_log, layer) -> None:
    require(live).flow.set_learning_rate(_learning_rate(lr_log))
    live.layer = _layer(layer, live.flow.couplings)


def live_step(live, steps, lr_log, couplings, layer):
    """Train `steps` steps once -> (state, picture, layer slider, status). `couplings` is read by Reset
    only (changing it resets the flow)."""
    _apply(live, lr_log, layer)
    return _advance(live, steps)


def live_play(live, steps, lr_log, couplings, layer):
    """Keep training, a frame every `steps` steps, until paused or diverged. The layer and learning-rate
    sliders take effect while it plays (their events update the state every frame reads)."""
    _apply(live, lr_log, layer)
    yield from play(_advance, live, steps)


def live_run(live, distribution, seed, per_frame, lr_log, couplings, layer):
    """A link or a "Try this" button: a fresh flow with these settings, then Play for LINK_FRAMES frames
    (the settings may change the data or the couplings, so the flow shown must start from them) ->
    streams (state, picture, layer slider, status)."""
    live, picture, slider, status = live_reset(distribution, seed, lr_log, couplings, layer)
    yield live, picture, slider, status
    frame = None
    for frame in play(_advance, live, per_frame, frames=LINK_FRAMES):
        yield frame
    if frame is not None and not live.diverged:
        yield gr.skip(), gr.skip(), gr.skip(), f"{frame[3]} Paused after {LINK_FRAMES} frames: press ▶ Play to go on."


def live_layer(live, layer):
    """Show the data after the first `layer` couplings -> the picture (no training)."""
    require(live)
    live.layer = _layer(layer, live.flow.couplings)
    return live_picture(live)


def live_set_learning_rate(live, lr_log):
    if live is not None:
        live.flow.set_learning_rate(_learning_rate(lr_log))
    return live


def live_status(live) -> str:
    flow = live.flow
    setting = f"learning rate {flow.lr:.1e}, {flow.couplings} couplings"
    if live.diverged:
        return (f"⚠️ **The flow diverged**: {live.diverged} ({setting}). Steps this large throw the couplings' "
                "scales around until log p(x) is no longer finite: lower the learning rate and press Reset.")
    held_out, gaussian = live.held_out[-1][1], live.gaussian_nll
    versus = (f"the best Gaussian scores {gaussian:.3f}, so the flow is "
              f"{'better' if held_out < gaussian else 'worse'} by {abs(gaussian - held_out):.3f}")
    if not flow.history:
        return f"{live.note}Step 0: held-out NLL {held_out:.3f} nats per point ({versus}). {setting.capitalize()}. " \
               "Press Play or Step."
    return (f"Step {flow.step:,}: NLL {flow.history[-1][1]:.3f} nats per point on the training batch, "
            f"{held_out:.3f} held out ({versus}). {setting.capitalize()}.")


def _finite(points):
    import numpy as np

    return points[np.isfinite(points).all(axis=1)]


def _title(ax, title: str) -> None:
    ax.set_title(title, fontsize=9, y=1.0)  # a fixed place: placing it automatically costs a layout pass per frame


def _square(ax, title: str, axes: bool = True) -> None:
    ax.set_xlim(-EXTENT, EXTENT), ax.set_ylim(-EXTENT, EXTENT)
    ax.set_xticks([]), ax.set_yticks([])  # ticks were a third of the frame; the explainer says it is [-3, 3]²
    if axes:
        ax.axhline(0, color="#eaeef2", linewidth=0.6, zorder=0), ax.axvline(0, color="#eaeef2", linewidth=0.6, zorder=0)
    ax.set_aspect("equal")
    _title(ax, title)


def _density(flow):
    """The density map with non-finite cells (a diverged flow) as 0, and a colour scale that keeps a
    sharp peak from washing out the rest."""
    import numpy as np

    density = np.nan_to_num(flow.density_map(DENSITY_RESOLUTION).numpy(), nan=0.0, posinf=0.0, neginf=0.0)
    return density, float(np.percentile(density, 99.5)) or 1.0


class LivePicture:
    """One user's four-panel picture, kept in their LiveFlow: drawn in full only when its frame changes
    (the layer shown, the NLL panel's range), otherwise only the moving parts are redrawn over a saved
    background (blitting). Titles, frames and ticks cost most of a full draw; a frame costs a few ms.
    A Figure of its own, not pyplot's registry, so users' pictures share nothing."""

    def __init__(self):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(8.4, 7.6), dpi=FRAME_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        axes = self.figure.subplots(2, 2)
        self.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.07, top=0.93, wspace=0.12, hspace=0.2)
        (self.ax_data, self.ax_latent), (self.ax_density, self.ax_nll) = axes
        for ax in (self.ax_data, self.ax_latent, self.ax_density):
            _square(ax, "", axes=ax is not self.ax_density)
        _title(self.ax_data, "data space: the data x (blue) and Gaussian\n"
                             "draws pulled back, f⁻¹(z) with z ~ N(0, I) (orange)")
        _title(self.ax_density, "learned density exp(log p(x))")
        _title(self.ax_nll, "NLL, nats per point: training batch (blue),\nheld out (orange), the best Gaussian (dashed)")
        self.ax_nll.set_xlabel("step", fontsize=8)
        self.ax_nll.tick_params(labelsize=7)
        self.ax_nll.locator_params(nbins=4)
        empty = [[0.0, 0.0]]
        self.data = self.ax_data.scatter(*zip(*empty), s=3, c=DATA, animated=True)
        self.pulled = self.ax_data.scatter(*zip(*empty), s=3, c=PULLED, animated=True)
        self.grid = self.ax_latent.add_collection(LineCollection([], colors="#bfc6ce", linewidths=0.6, animated=True))
        self.gauss = self.ax_latent.scatter(*zip(*empty), s=3, c=GAUSS, alpha=0.5, animated=True)
        self.moved = self.ax_latent.scatter(*zip(*empty), s=3, c=DATA, animated=True)
        self.density = self.ax_density.imshow([[0.0]], extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), cmap="magma",
                                              interpolation="bilinear", animated=True)
        (self.train_curve,) = self.ax_nll.plot([], [], color=DATA, linewidth=0.7, alpha=0.7, animated=True)
        (self.held_curve,) = self.ax_nll.plot([], [], color=PULLED, marker="o", markersize=2.5, linewidth=1,
                                              animated=True)
        self.gaussian_line = self.ax_nll.axhline(0, color=GAUSS, linestyle="--", linewidth=1, animated=True)
        self.moving = [self.data, self.pulled, self.grid, self.gauss, self.moved, self.density, self.train_curve,
                       self.held_curve, self.gaussian_line]
        self.frame_key, self.background = None, None

    def _frame(self, live) -> tuple:
        """What the background depends on: the latent panel's title and the NLL panel's axes. The axes grow
        in steps (x to the next power of two, y to whole tenths), so most frames reuse the background."""
        import numpy as np

        flow, k = live.flow, live.layer
        n = flow.couplings
        stage = "k = 0: the data itself" if k == 0 else f"k = {n}: z = f(x)" if k == n else f"after {k} of {n} couplings"
        held = [v for _, v in live.held_out if np.isfinite(v)]
        shown = [v for _, v in flow.history if np.isfinite(v)] + held + [live.gaussian_nll]
        low = np.floor((min(shown) - 0.1) * 10) / 10
        high = np.ceil((min(max(shown), live.gaussian_nll + 2.0) + 0.1) * 10) / 10  # cuts a diverged run's spike
        steps = 2 ** int(np.ceil(np.log2(max(flow.step, 16))))
        return stage, float(low), float(high), steps

    def render(self, live):
        import numpy as np
        from PIL import Image

        flow, k = live.flow, live.layer
        key = self._frame(live)
        if key != self.frame_key:  # a new frame: titles, limits and ticks drawn once, then saved
            stage, low, high, steps = key
            _title(self.ax_latent, f"{stage} (blue), a square grid bent\nthe same way; z ~ N(0, I) for reference (grey)")
            self.ax_nll.set_ylim(low, high)
            self.ax_nll.set_xlim(0, steps)
            self.canvas.draw()
            self.background = self.canvas.copy_from_bbox(self.figure.bbox)
            self.frame_key = key
        self.canvas.restore_region(self.background)
        self.data.set_offsets(flow.shown_data.numpy())
        self.pulled.set_offsets(_finite(flow.sample_points().numpy()))
        lines = flow.grid_lines(k).numpy()
        self.grid.set_segments(list(np.where(np.isfinite(lines), lines, np.nan)))
        self.gauss.set_offsets(flow.shown_z.numpy())
        self.moved.set_offsets(_finite(flow.latent_points(k).numpy()))
        density, top = _density(flow)
        self.density.set_data(density)
        self.density.set_clim(0, top)
        if flow.history:
            self.train_curve.set_data(*zip(*flow.history))
        held = [(s, v) for s, v in live.held_out if np.isfinite(v)]
        if held:
            self.held_curve.set_data(*zip(*held))
        self.gaussian_line.set_ydata([live.gaussian_nll, live.gaussian_nll])
        for artist in self.moving:
            artist.axes.draw_artist(artist)
        self.canvas.blit(self.figure.bbox)
        width, height = self.canvas.get_width_height()
        return Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba()).convert("RGB")


def live_picture(live):
    """Four panels: data and pulled-back samples; the data after k couplings with the bent grid; the
    learned density; the NLL curves against the best Gaussian's (colours named in the titles)."""
    if live.picture is None:
        live.picture = LivePicture()
    return live.picture.render(live)


# --- the click explorer: one point through every coupling -----------------------------------------

def pixel_to_point(px: float, py: float, size: int = PLANE_PX) -> tuple[float, float]:
    """A pixel of a plane image (column, row from the top) -> the point at its centre in [-EXTENT, EXTENT]²."""
    cell = 2 * EXTENT / size
    return -EXTENT + (px + 0.5) * cell, EXTENT - (py + 0.5) * cell


def point_to_pixel(x: float, y: float, size: int = PLANE_PX) -> tuple[float, float]:
    """The inverse of pixel_to_point (fractional pixels; round to get the pixel under the point)."""
    cell = 2 * EXTENT / size
    return (x + EXTENT) / cell - 0.5, (EXTENT - y) / cell - 0.5


def _point(x, y) -> tuple[float, float, str]:
    px, py = number(x, 0.0, -EXTENT, EXTENT), number(y, 0.0, -EXTENT, EXTENT)
    try:
        inside = float(x) == px and float(y) == py
    except (TypeError, ValueError):
        inside = False
    return px, py, "" if inside else f"The point was moved into the plotted square [−{EXTENT:g}, {EXTENT:g}]². "


def _plane(live, which: str, marked=None, path=None):
    """One square plane, the axes filling the image so that pixel_to_point holds exactly: `marked` (the
    clicked point) as a vermillion ring, `path` (the steps from the other plane) as a numbered line ending in a star."""
    import math

    import numpy as np

    plt = pyplot()
    flow = live.flow
    side = PLANE_PX / PLANE_DPI
    fig = plt.figure(figsize=(side, side), dpi=PLANE_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-EXTENT, EXTENT), ax.set_ylim(-EXTENT, EXTENT)
    ax.set_axis_off()
    if which == "data":
        density, top = _density(flow)
        # grey behind the blue data: "gray" on the negated density, so no density is white and the peak light grey
        ax.imshow(-density, extent=(-EXTENT, EXTENT, -EXTENT, EXTENT), cmap="gray", vmin=-top * 1.6, vmax=0,
                  interpolation="bilinear", aspect="auto")
        points = flow.shown_data.numpy()
    else:
        ax.set_facecolor("white")
        angles = np.linspace(0, 2 * math.pi, 100)
        for r in (1, 2, 3):
            ax.plot(r * np.cos(angles), r * np.sin(angles), color="#d0d7de", linewidth=0.8)
        points = _finite(flow.latent_points().numpy())
    ax.axhline(0, color="#d0d7de", linewidth=0.6), ax.axvline(0, color="#d0d7de", linewidth=0.6)
    ax.scatter(points[:, 0], points[:, 1], s=2, c=DATA if which == "data" else GAUSS, alpha=0.6)
    if marked is not None:
        ax.scatter([marked[0]], [marked[1]], s=90, facecolors="none", edgecolors=PATH, linewidths=2)
    if path is not None:
        ax.plot(path[:, 0], path[:, 1], color=PATH, linewidth=1.2, marker="o", markersize=3)
        for i, (x, y) in enumerate(path[:-1]):
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=PATH)
        ax.scatter([path[-1, 0]], [path[-1, 1]], s=160, marker="*", c=PATH, edgecolors="black", linewidths=0.6,
                   zorder=3)
    return figure_to_image(fig)


def point_path(live, x: float, y: float, to: str):
    """One point through every coupling step, [couplings + 1, 2]: from the data plane to z (to="latent")
    or from the latent plane back to x (to="data")."""
    import numpy as np
    import torch

    flow = require(live).flow
    if live.diverged:
        raise ValueError("The flow has diverged, so its map is not worth following: lower the learning rate and "
                         "press Reset.")
    path = torch.stack(flow.to_latent((x, y)) if to == "latent" else flow.to_data((x, y))).numpy()
    if not np.isfinite(path).all():
        raise ValueError("This point's path is not finite: the flow has blown up. Lower the learning rate and "
                         "press Reset.")
    return path


def _explore(live, x, y, to: str):
    """A point of one plane through every coupling -> (data plane, latent plane, sentence)."""
    import math

    import torch

    from core.flow import standard_normal_log_prob

    x, y, note = _point(x, y)
    path = point_path(live, x, y, to)
    flow = live.flow
    data_point = path[0] if to == "latent" else path[-1]
    with torch.no_grad():  # the two terms of the change of variables, at this one point
        z, log_det = flow.model(torch.tensor(data_point[None], dtype=torch.float32))
    log_pz, log_det = standard_normal_log_prob(z).item(), log_det.item()
    log_px = log_pz + log_det
    density = math.exp(min(log_px, 700.0))  # a flow gone wild may claim more than a float holds
    start, end = path[0], path[-1]
    if to == "latent":
        how = f"x = ({start[0]:+.2f}, {start[1]:+.2f}) → z = f(x) = ({end[0]:+.2f}, {end[1]:+.2f})"
        pictures = _plane(live, "data", marked=start), _plane(live, "latent", path=path)
    else:
        how = (f"z = ({start[0]:+.2f}, {start[1]:+.2f}) → x = f⁻¹(z) = ({end[0]:+.2f}, {end[1]:+.2f}), "
               "the couplings undone last to first")
        pictures = _plane(live, "data", path=path), _plane(live, "latent", marked=start)
    outside = " It lands outside the plotted square." if abs(end).max() > EXTENT else ""
    sentence = (f"{note}{how}, through {flow.couplings} coupling steps.{outside} At x: log p(x) = log N(z; 0, I) + "
                f"log |det ∂f/∂x| = {log_pz:.2f} + {log_det:.2f} = {log_px:.2f} (density {density:.3g}).")
    return (*pictures, sentence)


def to_latent(live, x, y):
    """A data point x through every coupling to z = f(x) -> (data plane, latent plane, sentence)."""
    return _explore(live, x, y, "latent")


def to_data(live, x, y):
    """A latent point z back through every coupling to x = f⁻¹(z) -> (data plane, latent plane, sentence)."""
    return _explore(live, x, y, "data")


def _clicked(evt) -> tuple[float, float]:
    """The point under a click on a plane image (a click on its edge counts as the nearest pixel)."""
    return pixel_to_point(*clicked_pixel(evt, PLANE_PX, PLANE_PX, "the plane"))


def click_data(live, evt: gr.SelectData):
    x, y = _clicked(evt)
    return (round(x, 3), round(y, 3), *to_latent(live, x, y))


def click_latent(live, evt: gr.SelectData):
    x, y = _clicked(evt)
    return (round(x, 3), round(y, 3), *to_data(live, x, y))


# --- the shipped image flow -----------------------------------------------------------------------

def shipped() -> bool:
    return shipped_path(TAB, SHIPPED).is_file()


def _model():
    from core import flow

    if not shipped():
        raise ValueError(f"No image flow is shipped yet: make one with `{TRAIN_COMMAND}`.")
    return flow.load_model(SHIPPED)


@functools.lru_cache(maxsize=None)
def _test_images():
    """Fashion-MNIST's test split at 16×16, 4 levels, read once per process and only read afterwards."""
    from core.pixelcnn import load_levels

    try:
        return load_levels("test", 16, 4)
    except FileNotFoundError as exc:
        raise ValueError(f"The Fashion-MNIST test images are not here, so there is nothing to interpolate ({exc}).") \
            from None


def _temperature(value) -> tuple[float, str]:
    t = number(value, DEFAULT_T, MIN_T, MAX_T)
    if value is None:
        return t, ""
    try:
        if float(value) == t:
            return t, ""
    except (TypeError, ValueError):
        return t, f"Temperature {value!r} is not a number: τ = {t:g} used. "
    return t, (f"Temperature set to τ = {t:g}: the slider's {MIN_T:g} … {MAX_T:g} (at τ = 0 every sample would be "
               "the same image). ")


def _enlarge(image, factor: int = SCALE):
    from PIL import Image

    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _grid(images, levels: int, columns: int):
    """Images in [0, 1] shown at the data's levels (as PixelCNN's samples are), enlarged."""
    from core.data.images import image_grid
    from core.pixelcnn import quantise, to_unit

    return _enlarge(image_grid(to_unit(quantise(images, levels), levels), nrow=columns, padding=1))


def samples(seed, side, temperature):
    """A grid of new images x = f⁻¹(τ · z) -> (image, note)."""
    from core import flow
    from core.runtime import clamp_seed, make_generator

    n = number(side, 0, 0, MAX_SIDE + 1, whole=True)
    if n < 1:
        raise ValueError(f"The grid needs at least 1 image per side, not {side}.")
    note = f"Limited to {MAX_SIDE}×{MAX_SIDE} samples. " if n > MAX_SIDE else ""
    n = min(n, MAX_SIDE)
    t, t_note = _temperature(temperature)
    model = _model()
    images = flow.sample(model, n * n, make_generator(seed), t)
    return _grid(images, model.config.levels, n), (f"{note}{t_note}{n * n} samples, seed {clamp_seed(seed)}, "
                                                   f"τ = {t:g}: one inverse pass of the flow for all of them.")


def temperature_grid(seed, rows):
    """Each row one latent z, each column x = f⁻¹(τ · z) at one of TEMPERATURES, τ written above."""
    import torch
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    from core import flow
    from core.runtime import make_generator

    rows = number(rows, 4, 1, MAX_ROWS, whole=True)
    model = _model()
    z = torch.randn(rows, model.config.image_size ** 2, generator=make_generator(seed))
    columns = torch.stack([flow.sample(model, rows, None, t, z=z) for t in TEMPERATURES], dim=1)
    grid = _grid(columns.flatten(0, 1), model.config.levels, len(TEMPERATURES)).convert("RGB")
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), LABEL_PX)  # PIL's own font has no τ
    margin = LABEL_PX + 10
    canvas = Image.new("RGB", (grid.width, grid.height + margin), "white")
    canvas.paste(grid, (0, margin))
    draw = ImageDraw.Draw(canvas)
    tile = (model.config.image_size + 1) * SCALE
    for column, t in enumerate(TEMPERATURES):
        draw.text((SCALE + column * tile + tile / 2, margin / 2), f"τ = {t:g}", fill="black", font=font, anchor="mm")
    return canvas


def _test_index(value, default: int, count: int, name: str) -> tuple[int, str]:
    i = number(value, default, 0, count - 1, whole=True)
    if value is None:
        return i, ""
    try:
        if float(value) == i:
            return i, ""
    except (TypeError, ValueError):
        pass
    return i, f"Image {name} set to {i} (the test images are numbered 0 … {count - 1:,}). "


def interpolation(index_a, index_b, steps):
    """From test image A to test image B along the straight line between their latents -> (strip, note):
    A itself, the decoded steps (w = 0 … 1), B itself."""
    import torch

    from core import flow
    from core.pixelcnn import to_unit

    images = _test_images()
    a, note_a = _test_index(index_a, 0, len(images), "A")
    b, note_b = _test_index(index_b, 1, len(images), "B")
    if a == b:
        raise ValueError(f"Both ends are test image {a}, so the path would stand still: pick two different images.")
    steps = number(steps, 8, 2, MAX_STEPS, whole=True)
    model = _model()
    k = model.config.levels
    between = flow.interpolate(model, images[a], images[b], steps)
    strip = torch.cat([to_unit(images[a:a + 1], k), between, to_unit(images[b:b + 1], k)])
    return _grid(strip, k, len(strip)), (f"{note_a}{note_b}Test image {a}, then f⁻¹((1 − w)·f(A) + w·f(B)) for "
                                         f"{steps} values of w from 0 to 1, then test image {b}.")


def image_card() -> str:
    """The shipped flow's card and the likelihood bench's bits per dimension, only what exists."""
    try:
        card = read_card(TAB, SHIPPED)
    except (OSError, ValueError):
        card = {}
    parts = []
    if card:
        bpd = (card.get("metrics") or {}).get("test_bits_per_dim")
        likelihood = (f"test {bpd:.3f} bits per dimension" if isinstance(bpd, (int, float)) else
                      "test bits per dimension not measured yet (still training)")
        minutes = card.get("wall_time_s", 0) / 60
        parts.append(f"**Shipped flow `{SHIPPED}`**: {card.get('parameters', 0):,} parameters, "
                     f"{card.get('steps', 0):,} steps ({minutes:.0f} min on {card.get('hardware', '?')}); {likelihood}."
                     + (f" Made with `{card['command']}`." if card.get("command") else ""))
    measured = {}
    for _, record in bench_records("likelihood"):  # the full run's figure where there is one, else the quick run's
        bits = (record.get("figures") or {}).get("bits_per_dim") or {}
        for key, label in BITS_LABELS.items():
            if key not in measured and isinstance(bits.get(key), (int, float)):
                measured[key] = f"{label} {bits[key]:.3f}" + (" (quick run)" if record.get("quick") else "")
    if measured:
        parts.append("Test bits per dimension on the same 16×16, 4-level images (`bench/likelihood.py`): "
                     + " · ".join(measured[key] for key in BITS_LABELS if key in measured)
                     + ". Lower is better; a uniform guess costs 2.")
    return "  \n".join(parts)


# --- layout -----------------------------------------------------------------------------------

def build():
    from gradio.context import Context

    this_tab = Context.block  # the gr.Tab app.build_app opened around build()
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    controls, settings, picture = _build_live(page)
    point, explorer = _build_explorer(controls.state)
    if isinstance(this_tab, gr.Tab):  # the live panel starts open, so its expand event never fires: start on opening
        layer = settings[-1]
        this_tab.select(user_errors(live_start), [controls.state, controls.distribution, controls.seed, *settings],
                        [controls.state, picture, layer, controls.status], api_name="flow_live_start_on_open",
                        api_visibility="private", **queue(LIVE, 4)) \
            .then(user_errors(to_latent), [controls.state, *point], explorer, api_name="flow_explorer_on_open",
                  api_visibility="private", **queue(LIVE, 4))
    with gr.Accordion("How a flow works: change of variables, coupling layers, sampling, dequantisation", open=False):
        gr.Markdown(HOW_TEXT)
    if shipped():
        _build_images()
    else:
        gr.Markdown(f"**No image flow is shipped yet**, so the Fashion-MNIST views are missing: make it with "
                    f"`{TRAIN_COMMAND}`. The live 2-D flow above works without it.")
    return page


def _build_live(page):
    """The live panel -> (its controls, the tab's own settings [learning rate, couplings, layer], the picture).
    Play is the main action: a link or a "Try this" button starts a fresh flow with its settings and plays."""
    with gr.Accordion("Watch a flow learn (2-D)", open=True, elem_id="flow-live-box") as live_box:
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                buttons = gr.Column()  # filled below, once the settings exist: the buttons stay at the top
                controls = live2d.settings_row("moons")
                lr = gr.Slider(LR_LOG_LOW, LR_LOG_HIGH, LR_LOG_DEFAULT, step=0.25,
                               label="learning rate (log10; -2.5 ≈ 0.003)")
                couplings = gr.Slider(1, MAX_COUPLINGS, DEFAULT_COUPLINGS, step=1,
                                      label="coupling layers (changing it resets)")
                layer = gr.Slider(0, DEFAULT_COUPLINGS, DEFAULT_COUPLINGS, step=1, elem_id="flow-layer",
                                  label="layer k: the top-right panel shows the data after the first k couplings")
            with buttons:
                live2d.buttons_row(controls)
            controls.play.elem_id = "flow-play"
            with gr.Column(scale=3):
                picture = gr.Image(label="the live flow", show_label=False, type="pil", format="png",
                                   interactive=False, elem_id="flow-live-picture",
                                   alt_text="A normalizing flow learning 2-D data: the data and pulled-back Gaussian "
                                            "draws, the data bent towards a Gaussian, the learned density, the NLL curve")
                caption(LIVE_TEXT)
        settings = [lr, couplings, layer]
        live2d.wire(TAB, live_box, controls, settings, [picture, layer], live_reset, live_start, live_step, live_play,
                    LIVE)
        # .input, not .change: a link or a "Try this" button sets it too, and live_run resets then.
        couplings.input(user_errors(live_reset), [controls.distribution, controls.seed, *settings],
                        [controls.state, picture, layer, controls.status], api_name="flow_live_reset_from_couplings",
                        api_visibility="undocumented", trigger_mode="always_last", **queue(LIVE, 4))
        # .input, not .change: Reset sets the slider too, and that must not draw the picture twice.
        layer.input(user_errors(live_layer), [controls.state, layer], picture, api_name="flow_live_layer",
                    trigger_mode="always_last", **queue(LIVE, 4))
        lr.change(user_errors(live_set_learning_rate), [controls.state, lr], controls.state,
                  api_name="flow_live_learning_rate", api_visibility="private", **queue(LIVE, 4))
        run = page.ran.change(user_errors(live_run), [controls.state, controls.distribution, controls.seed,
                                                      controls.per_frame, *settings],
                              [controls.state, picture, layer, controls.status], api_name="flow_live_run",
                              api_visibility="private", **queue(LIVE, 4))
        controls.pause.click(None, None, None, cancels=[run], api_name="flow_live_pause_run", api_visibility="private")
        page.link({"data": controls.distribution, "seed": controls.seed, "steps": controls.per_frame, "lr": lr,
                   "couplings": couplings, "layer": layer})
    return controls, settings, picture


def _build_explorer(state):
    """The click explorer -> (the x, y boxes, its outputs: the two planes and the sentence)."""
    with gr.Accordion("Follow one point through the flow", open=True):
        gr.Markdown(EXPLORER_TEXT)
        with gr.Row():
            with gr.Column():
                data_plane = gr.Image(label="data plane x (click)", type="pil", format="png", interactive=False,
                                      elem_id="flow-data-plane", height=PLANE_PX, width=PLANE_PX,
                                      alt_text="The data plane: the data over the learned density; click a point")
                caption(DATA_PLANE_CAPTION)
            with gr.Column():
                latent_plane = gr.Image(label="latent plane z (click)", type="pil", format="png", interactive=False,
                                        elem_id="flow-latent-plane", height=PLANE_PX, width=PLANE_PX,
                                        alt_text="The latent plane: the data's images z = f(x) and the Gaussian's "
                                                 "circles; click a point")
                caption(LATENT_PLANE_CAPTION)
        with gr.Row():
            x = gr.Number(-0.8, label="x (first coordinate)", minimum=-EXTENT, maximum=EXTENT)
            y = gr.Number(1.2, label="y (second coordinate)", minimum=-EXTENT, maximum=EXTENT)
            forward = gr.Button("to latent: z = f(x, y)")
            backward = gr.Button("to data: x = f⁻¹(x, y)")
        sentence = gr.Markdown(elem_id="flow-path-note")
        outputs = [data_plane, latent_plane, sentence]
        forward.click(user_errors(to_latent), [state, x, y], outputs, api_name="flow_to_latent", **queue(LIVE, 4))
        backward.click(user_errors(to_data), [state, x, y], outputs, api_name="flow_to_data", **queue(LIVE, 4))
        data_plane.select(user_errors(click_data), state, [x, y, *outputs], api_name="flow_click_data",
                          api_visibility="private", **queue(LIVE, 4))
        latent_plane.select(user_errors(click_latent), state, [x, y, *outputs], api_name="flow_click_latent",
                            api_visibility="private", **queue(LIVE, 4))
    return [x, y], outputs


def _build_images() -> None:
    gpu = on_gpu(GPU_SECONDS)
    with gr.Accordion("Images: a flow on Fashion-MNIST (16×16, 4 levels)", open=True):
        gr.Markdown("A multi-scale RealNVP with GLOW's ActNorm and invertible 1×1 convolutions, trained on "
                    "dequantised images. Every sample is one pass backwards through the flow: x = f⁻¹(τ · z).")
        with gr.Accordion("model card: how it was trained, its bits per dimension beside the other models", open=False):
            gr.Markdown(image_card())
        with gr.Row():
            seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
            side = gr.Slider(1, MAX_SIDE, 8, step=1, label="images per side")
            temperature = gr.Slider(MIN_T, MAX_T, DEFAULT_T, step=0.05, label="temperature τ (z ~ N(0, τ²I))")
        go = gr.Button("Generate", variant="primary", elem_id="flow-generate")
        note = gr.Markdown(elem_id="flow-note")
        grid = picture("samples", "new 16×16 images x = f⁻¹(τ · z), one per latent drawn from the seed, shown at "
                        "the data's 4 grey levels (black 0 to white 3)", elem_id="flow-samples")
        go.click(user_errors(gpu(samples)), [seed, side, temperature], [grid, note], api_name="flow_samples",
                 **queue(TAB, 2))

        gr.Markdown("**The same latent at several temperatures.** Each row is one z, scaled by τ before the inverse: "
                    "at small τ the image is pulled towards the flow's most typical garment, at large τ it breaks "
                    "up.")
        with gr.Row():
            t_seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
            rows = gr.Slider(1, MAX_ROWS, 4, step=1, label="latents (rows)")
            t_go = gr.Button("Draw")
        t_grid = picture("one latent per row, τ above each column", "left to right the same z scaled by τ = "
                          + ", ".join(f"{t:g}" for t in TEMPERATURES) + " and decoded; grey levels black 0 to white 3")
        t_go.click(user_errors(gpu(temperature_grid)), [t_seed, rows], t_grid, api_name="flow_temperatures",
                   **queue(TAB, 2))

        gr.Markdown("**Interpolation through the latent space.** Encode two test images, walk the straight line "
                    "between their latents and decode every point: f is a bijection, so the ends are the images "
                    "themselves (up to the 4 levels).")
        with gr.Row():
            index_a = gr.Number(0, label="test image A", precision=0, minimum=0, maximum=9999)
            index_b = gr.Number(1, label="test image B", precision=0, minimum=0, maximum=9999)
            steps = gr.Slider(2, MAX_STEPS, 8, step=1, label="steps")
            i_go = gr.Button("Interpolate")
        i_note = gr.Markdown()
        strip = picture("A, the path, B", "left: test image A; then f⁻¹((1 − w)·f(A) + w·f(B)) for w from 0 to 1; "
                         "right: test image B; grey levels black 0 to white 3")
        i_go.click(user_errors(gpu(interpolation)), [index_a, index_b, steps], [strip, i_note],
                   api_name="flow_interpolate", **queue(TAB, 2))
