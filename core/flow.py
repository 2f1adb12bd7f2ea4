"""Normalizing flows: RealNVP (Dinh et al., 2017), from data to a Gaussian and back.

A flow is an invertible map f from a data point x to a latent z = f(x) of the same size, whose
density p_Z is simple (a standard Gaussian). The change-of-variables formula gives the exact
likelihood of x:

    log p_X(x) = log p_Z(f(x)) + log |det ∂f/∂x|

f is a stack of layers, so the log-determinant is the sum of the layers' log-determinants. For it
to be cheap (not an O(D³) determinant), RealNVP uses **affine coupling layers**: split x into a
part x_a that passes unchanged and a part x_b that is scaled and shifted by functions of x_a:

    y_a = x_a,   y_b = x_b · exp(s(x_a)) + t(x_a)

The Jacobian is triangular, so log |det J| = Σ s(x_a); s and t can be any networks, because the
inverse never inverts them:  x_b = (y_b − t(y_a)) · exp(−s(y_a)). Successive layers alternate
which half passes, so every coordinate is transformed. Between couplings, **ActNorm** (GLOW) scales
and shifts each channel, initialised from the first batch so the activations start standardised;
the image model can also mix channels with GLOW's **invertible 1×1 convolution**.

Two models:
* `RealNVP2D`, on the toy 2-D sets of core.data.toy2d, small enough to train live (`Flow2D`);
* `ImageFlow`, a multi-scale flow for Fashion-MNIST at 16×16 with K = 4 levels (the data of the
  PixelCNN and likelihood bench). Discrete levels k are **dequantised** to y = (k + u)/K with
  u ~ U[0, 1), so a density on [0, 1]^D bounds the discrete likelihood:
      log P(k) ≥ E_u[log p_Y((k + u)/K)] − D · log K.
  Sampling draws z ~ N(0, τ²) at a temperature τ, as GLOW does: τ < 1 trades variety for tidier images.

    python -m core.train flow --minutes 60 --threads 1
"""
from __future__ import annotations

import argparse
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from core.data.toy2d import EXTENT, check, plane, sample as sample_toy
from core.runtime import make_generator, seeded_init, set_learning_rate

LOG_2PI = math.log(2 * math.pi)
MAX_SCALE = 2.0  # s = MAX_SCALE · tanh(·): a coupling scales by at most e² per layer, so training cannot blow up


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over all but the batch dimension:  −½ Σ (z² + log 2π)."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


# --- the layers: each maps x -> (y, log|det ∂y/∂x|) and has an exact inverse ----------------------

class ActNorm(nn.Module):
    """y = (x − μ) · exp(−log σ) per channel; log|det J| = −Σ log σ · (pixels per channel).
    μ, σ start as the first batch's statistics (`initialize`), then train like any parameter."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _shape(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        self.shift.copy_(x.mean(dims))
        self.log_scale.copy_(x.std(dims).clamp_min(1e-3).log())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (x - self._shape(x, self.shift)) * self._shape(x, (-self.log_scale).exp())
        pixels = x[0, 0].numel()
        return y, (-self.log_scale.sum() * pixels).expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._shape(y, self.log_scale.exp()) + self._shape(y, self.shift)


class InvertibleConv1x1(nn.Module):
    """GLOW's channel mixing: y = W x at every pixel; log|det J| = H · W · log|det W|.
    W starts as a random rotation (det = ±1), a learned generalisation of swapping the halves."""

    def __init__(self, channels: int, generator: torch.Generator):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        self.weight = nn.Parameter(q)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.conv2d(x, self.weight[:, :, None, None])
        return y, (torch.linalg.slogdet(self.weight)[1] * x[0, 0].numel()).expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class ReverseChannels(nn.Module):
    """RealNVP's fixed alternative to the 1×1 convolution: reverse the channel order (|det| = 1)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), x.new_zeros(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


class AffineCoupling(nn.Module):
    """x_a passes; x_b' = x_b · exp(s(x_a)) + t(x_a) with s bounded by MAX_SCALE · tanh.

    `mask` (1 where x_a is) is a [D] vector for points or None for images, where x_a is the first
    half of the channels. The network's last layer starts at zero: s = t = 0, the identity."""

    def __init__(self, net: nn.Module, mask: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        if mask is not None:
            self.register_buffer("mask", mask.float())
        else:
            self.mask = None

    def _split(self, x: torch.Tensor):
        if self.mask is None:
            half = x.shape[1] // 2
            return x[:, :half], x[:, half:]
        return x * self.mask, x * (1 - self.mask)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], 1) if self.mask is None else a + b * (1 - self.mask)

    def scale_and_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(x_a).chunk(2, dim=1)
        s = MAX_SCALE * torch.tanh(raw_s / MAX_SCALE)  # ≈ raw_s near 0, never beyond ±MAX_SCALE
        if self.mask is not None:  # points: only the transformed coordinates move
            s, t = s * (1 - self.mask), t * (1 - self.mask)
        return s, t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = self._split(x)
        s, t = self.scale_and_shift(x_a)
        y_b = x_b * s.exp() + t                          # x_b' = x_b · exp(s(x_a)) + t(x_a)
        return self._join(x_a, y_b), s.flatten(1).sum(1)  # log|det J| = Σ s(x_a)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_a, y_b = self._split(y)
        s, t = self.scale_and_shift(y_a)
        return self._join(y_a, (y_b - t) * (-s).exp())   # x_b = (x_b' − t) · exp(−s)


def zero_last(net: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def run_steps(steps: nn.ModuleList, x: torch.Tensor, log_det: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Through every layer of every step, adding up the log-determinants (the chain rule)."""
    for step in steps:
        for layer in step:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
    return x, log_det


def undo_steps(steps: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The inverse: the same layers, last first, each undone."""
    for step in reversed(steps):
        for layer in reversed(step):
            x = layer.inverse(x)
    return x


def initialize_act_norms(steps: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Pass x through `steps`, setting each ActNorm from the activations that reach it; returns the output."""
    for step in steps:
        for layer in step:
            if isinstance(layer, ActNorm):
                layer.initialize(x)
            x, _ = layer(x)
    return x


# --- RealNVP on 2-D points ------------------------------------------------------------------------

class RealNVP2D(nn.Module):
    """`couplings` × (ActNorm, affine coupling); the coupling masks alternate [1, 0], [0, 1], so
    x and y take turns being transformed. x [N, 2] -> z [N, 2]."""

    def __init__(self, couplings: int = 8, hidden: int = 64, act_norm: bool = True, seed: int = 0):
        super().__init__()
        if not 1 <= couplings <= 64:
            raise ValueError(f"A flow needs between 1 and 64 coupling layers, not {couplings}.")
        self.steps = nn.ModuleList()
        for i in range(couplings):
            mask = torch.tensor([1.0, 0.0]) if i % 2 == 0 else torch.tensor([0.0, 1.0])
            net = zero_last(nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, 4)))
            layers = [ActNorm(2)] if act_norm else []
            self.steps.append(nn.ModuleList(layers + [AffineCoupling(net, mask)]))
        seeded_init(self, make_generator(seed))

    def initialize(self, x: torch.Tensor) -> None:
        """ActNorm's data-dependent start: each ActNorm standardises what reaches it from `x`."""
        with torch.no_grad():
            initialize_act_norms(self.steps, x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (z = f(x), log|det ∂f/∂x|) per point."""
        return run_steps(self.steps, x, x.new_zeros(len(x)))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.inverse_path(z)[-1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(f(x); 0, I) + log|det ∂f/∂x|  (the change of variables, exact)."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def forward_path(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, after coupling step 1, ..., z]: the data pushed towards the Gaussian one step at a time."""
        path = [x]
        for step in self.steps:
            for layer in step:
                x, _ = layer(x)
            path.append(x)
        return path

    def inverse_path(self, z: torch.Tensor) -> list[torch.Tensor]:
        """[z, after undoing the last step, ..., x]: Gaussian points pulled back to the data."""
        path = [z]
        for step in reversed(self.steps):
            path.append(undo_steps([step], path[-1]))
        return path


class Flow2D:
    """One user's live flow on a toy data set: the model, its optimiser and the NLL so far.

        flow = Flow2D("moons", couplings=8, seed=0)
        flow.train(100)     # 100 Adam steps on fresh batches, about 1 ms each on one CPU thread
        flow.density_map(), flow.latent_points(), flow.sample_points(), flow.history
    """

    def __init__(self, distribution: str = "moons", couplings: int = 8, seed: int = 0, lr: float = 3e-3,
                 hidden: int = 64, batch_size: int = 256, shown: int = 600):
        self.distribution, self.batch_size = check(distribution), batch_size
        self.rng = make_generator(seed)
        self.model = RealNVP2D(couplings, hidden, seed=seed)
        self.model.initialize(sample_toy(distribution, 1024, self.rng))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr)
        self.set_learning_rate(lr)
        # The same data and the same Gaussian draws are plotted every frame, so motion on screen is learning.
        self.shown_data = sample_toy(distribution, shown, self.rng)
        self.shown_z = torch.randn(shown, 2, generator=self.rng)
        self.held_out = sample_toy(distribution, 2000, self.rng)
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, training NLL in nats per point)
        self.diverged: str | None = None

    @property
    def couplings(self) -> int:
        return len(self.model.steps)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_learning_rate(self, lr: float) -> None:
        set_learning_rate(self.optimizer, lr)

    def train(self, steps: int) -> None:
        """`steps` Adam steps on −mean log p(x); stops (and says why) if the loss turns NaN or huge."""
        self.model.train()
        for _ in range(max(0, int(steps))):
            if self.diverged:
                return
            loss = -self.model.log_prob(sample_toy(self.distribution, self.batch_size, self.rng)).mean()
            if not math.isfinite(loss.item()) or loss.item() > 1e4:
                self.diverged = f"the negative log-likelihood became {loss.item():.3g} at step {self.step + 1}"
                return
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.history.append((self.step, loss.item()))
        if not self.diverged and not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.diverged = f"the weights became NaN by step {self.step}"

    @torch.no_grad()
    def held_out_nll(self) -> float:
        """−mean log p(x) on 2000 points the flow never trained on, in nats."""
        return -self.model.log_prob(self.held_out).mean().item()

    @torch.no_grad()
    def latent_points(self, layers: int | None = None) -> torch.Tensor:
        """The plotted data after the first `layers` coupling steps (all of them: z = f(x))."""
        return self.model.forward_path(self.shown_data)[self.couplings if layers is None else layers]

    @torch.no_grad()
    def sample_points(self, temperature: float = 1.0) -> torch.Tensor:
        """The plotted Gaussian draws pulled back: x = f⁻¹(τ · z)."""
        return self.model.inverse(temperature * self.shown_z)

    @torch.no_grad()
    def density_map(self, resolution: int = 80) -> torch.Tensor:
        """exp(log p(x)) on a resolution² grid over the plotted square (row 0 at the top, y = +EXTENT)."""
        return self.model.log_prob(plane(resolution)).exp().reshape(resolution, resolution)

    @torch.no_grad()
    def grid_lines(self, layers: int | None = None, lines: int = 13, points: int = 60) -> torch.Tensor:
        """A square grid of lines over the data square, pushed through the first `layers` steps:
        [2 · lines, points, 2] (horizontal lines, then vertical ones). How the flow bends space."""
        ticks = torch.linspace(-EXTENT, EXTENT, lines)
        along = torch.linspace(-EXTENT, EXTENT, points)
        horizontal = torch.stack([along.expand(lines, points), ticks[:, None].expand(lines, points)], -1)
        vertical = horizontal.flip(-1)
        grid = torch.cat([horizontal, vertical]).reshape(-1, 2)
        moved = self.model.forward_path(grid)[self.couplings if layers is None else layers]
        return moved.reshape(2 * lines, points, 2)

    @torch.no_grad()
    def to_latent(self, point) -> list[torch.Tensor]:
        """One data point's path x -> z, a [2] tensor per step (clicking the data plane)."""
        return [p[0] for p in self.model.forward_path(torch.tensor([point], dtype=torch.float32))]

    @torch.no_grad()
    def to_data(self, point) -> list[torch.Tensor]:
        """One latent point's path z -> x, a [2] tensor per step (clicking the latent plane)."""
        return [p[0] for p in self.model.inverse_path(torch.tensor([point], dtype=torch.float32))]


# --- a multi-scale flow for images ------------------------------------------------------------------

@dataclass
class ImageFlowConfig:
    image_size: int = 16      # square, divisible by 4 (two squeezes)
    levels: int = 4           # K: the data's intensity levels, dequantised to [0, 1]
    hidden: int = 96          # channels inside each coupling network
    steps_per_scale: int = 8  # (ActNorm, channel mixing, coupling) steps at each of the two scales
    mixing: str = "invconv"   # "invconv" (GLOW's 1×1 convolution) or "reverse" (RealNVP's fixed swap)
    alpha: float = 0.05       # the logit transform squeezes [0, 1] into [α, 1 − α] first


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 4C, H/2, W/2]: each 2×2 patch becomes four channels (a permutation, |det| = 1)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class ImageFlow(nn.Module):
    """Multi-scale RealNVP/GLOW-lite for 1×S×S images:

        logit(y) -> squeeze (4 × S/2 × S/2) -> steps -> split off half the channels as z₁
                 -> squeeze (8 × S/4 × S/4) -> steps -> z₂

    z₁ and z₂ together have as many numbers as the image, both standard normal. Splitting early is
    the multi-scale idea: the fine detail leaves first; the later, cheaper steps shape the rest."""

    def __init__(self, config: ImageFlowConfig, seed: int = 0):
        super().__init__()
        if config.image_size % 4:
            raise ValueError(f"The image flow squeezes twice: the image size must be divisible by 4, "
                             f"not {config.image_size}.")
        if config.mixing not in ("invconv", "reverse"):
            raise ValueError(f"Unknown channel mixing {config.mixing!r}: use invconv or reverse.")
        self.config = config
        gen = make_generator(seed)
        self.scale1 = nn.ModuleList([self._step(4, gen) for _ in range(config.steps_per_scale)])
        self.scale2 = nn.ModuleList([self._step(8, gen) for _ in range(config.steps_per_scale)])
        seeded_init(self, gen)

    def _step(self, channels: int, gen: torch.Generator) -> nn.ModuleList:
        h = self.config.hidden
        net = zero_last(nn.Sequential(nn.Conv2d(channels // 2, h, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(h, h, 1), nn.ReLU(), nn.Conv2d(h, channels, 3, padding=1)))
        mixing = InvertibleConv1x1(channels, gen) if self.config.mixing == "invconv" else ReverseChannels()
        return nn.ModuleList([ActNorm(channels), mixing, AffineCoupling(net)])

    # the logit transform: y in [0, 1] -> x = logit(α + (1 − 2α) y), so the flow works on the whole real line
    def _to_logit(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.config.alpha
        p = a + (1 - 2 * a) * y
        log_det = (math.log(1 - 2 * a) - p.log() - (1 - p).log()).flatten(1).sum(1)  # d logit(p)/dy
        return p.log() - (1 - p).log(), log_det

    def _from_logit(self, x: torch.Tensor) -> torch.Tensor:
        a = self.config.alpha
        return ((torch.sigmoid(x) - a) / (1 - 2 * a)).clamp(0, 1)

    def initialize(self, y: torch.Tensor) -> None:
        """ActNorm's data-dependent start, from one batch of dequantised images."""
        with torch.no_grad():
            x, _ = self._to_logit(y)
            x = initialize_act_norms(self.scale1, squeeze(x))
            initialize_act_norms(self.scale2, squeeze(x[:, 2:]))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised images y [N, 1, S, S] in [0, 1] -> (z [N, S·S], log|det ∂z/∂y|)."""
        x, log_det = self._to_logit(y)
        x, log_det = run_steps(self.scale1, squeeze(x), log_det)
        z1, rest = x[:, :2], x[:, 2:]
        z2, log_det = run_steps(self.scale2, squeeze(rest), log_det)
        return torch.cat([z1.flatten(1), z2.flatten(1)], 1), log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, S·S] -> images y [N, 1, S, S] in [0, 1]."""
        s = self.config.image_size
        half = z.shape[1] // 2
        z1 = z[:, :half].reshape(-1, 2, s // 2, s // 2)
        z2 = z[:, half:].reshape(-1, 8, s // 4, s // 4)
        rest = unsqueeze(undo_steps(self.scale2, z2))
        x = unsqueeze(undo_steps(self.scale1, torch.cat([z1, rest], 1)))
        return self._from_logit(x)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p_Y(y) on [0, 1]^D, in nats per image: log N(z; 0, I) + log|det ∂z/∂y|."""
        z, log_det = self(y)
        return standard_normal_log_prob(z) + log_det


def dequantize(levels: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Levels 0..K−1 -> y = (level + u)/K, u ~ U[0, 1) (u = ½, the bin's centre, without a generator)."""
    u = torch.rand(levels.shape, generator=generator) if generator is not None else torch.full(levels.shape, 0.5)
    return (levels.float() + u.to(levels.device)) / k


def bits_per_dim(model: ImageFlow, levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An upper bound on −log₂ P(levels) / D for each image, with one uniform dequantisation:
        −[log p_Y((k + u)/K) − D · log K] / (D · ln 2)."""
    dims = levels[0].numel()
    log_p = model.log_prob(dequantize(levels, model.config.levels, generator))
    return -(log_p - dims * math.log(model.config.levels)) / (dims * math.log(2))


@torch.no_grad()
def test_bits_per_dim(model: ImageFlow, levels: torch.Tensor, seed: int = 0, batch: int = 500) -> float:
    """Mean bits/dim over a test set (one dequantisation per image, a fixed seed: a repeatable figure)."""
    gen = make_generator(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = sum(bits_per_dim(model, chunk.to(device), gen).sum().item() for chunk in levels.split(batch))
    model.train(was_training)
    return total / len(levels)


@torch.no_grad()
def sample(model: ImageFlow, n: int, generator: torch.Generator, temperature: float = 1.0,
           z: torch.Tensor | None = None) -> torch.Tensor:
    """n images in [0, 1] [n, 1, S, S]: x = f⁻¹(τ · z), z ~ N(0, I) drawn on the CPU."""
    if not 0 < temperature <= 2:
        raise ValueError(f"The temperature must be above 0 and at most 2, not {temperature}.")
    device = next(model.parameters()).device
    if z is None:
        z = torch.randn(n, model.config.image_size ** 2, generator=generator)
    return model.inverse(temperature * z.to(device)).cpu()


@torch.no_grad()
def encode(model: ImageFlow, levels: torch.Tensor) -> torch.Tensor:
    """Images (levels) -> their latents z = f(y), each level at its bin's centre (no random jitter)."""
    device = next(model.parameters()).device
    return model(dequantize(levels, model.config.levels).to(device))[0].cpu()


@torch.no_grad()
def interpolate(model: ImageFlow, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Images along the straight line from image a's latent to image b's: [steps, 1, S, S] in [0, 1]."""
    za, zb = encode(model, torch.stack([a, b]))
    weights = torch.linspace(0, 1, steps)[:, None]
    device = next(model.parameters()).device
    return model.inverse(((1 - weights) * za + weights * zb).to(device)).cpu()


# --- loading the shipped model ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_model(name: str = "fashion16_k4") -> ImageFlow:
    """The shipped image flow, built once, moved to the app's device, shared read-only."""
    from core.checkpoints import load_shipped
    from core.runtime import app_device

    ckpt = load_shipped("flow", name)
    model = ImageFlow(ImageFlowConfig(**ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    return model.float().eval().requires_grad_(False).to(app_device())


# --- training ------------------------------------------------------------------------------------

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=16, help="image size (16: the likelihood bench's data)")
    parser.add_argument("--levels", type=int, default=4, help="intensity levels per pixel")
    parser.add_argument("--hidden", type=int, default=96, help="channels inside each coupling network")
    parser.add_argument("--steps-per-scale", type=int, default=8)
    parser.add_argument("--mixing", choices=("invconv", "reverse"), default="invconv")
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, shared by all processes")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--name", default=None, help="checkpoint name (default: fashion<size>_k<levels>)")


def train(model: ImageFlow, levels: torch.Tensor, steps: int, batch_size: int, optimizer, generator,
          start_step: int = 0, network: nn.Module | None = None) -> Iterator[dict]:
    """Maximum likelihood: minimise the bits/dim bound of fresh dequantised batches; yields {"step", "loss"}."""
    network = network or model
    device = next(model.parameters()).device
    dims, k = levels[0].numel(), model.config.levels
    warmup = 200  # a few hundred steps of rising learning rate: a freshly initialised flow is touchy
    peak = [group["lr"] for group in optimizer.param_groups]
    model.train()
    for step in range(start_step + 1, steps + 1):
        for group, lr in zip(optimizer.param_groups, peak):
            group["lr"] = lr * min(1.0, step / warmup)
        batch = levels[torch.randint(len(levels), (batch_size,), generator=generator)]
        z, log_det = network(dequantize(batch, k, generator).to(device))
        log_p = standard_normal_log_prob(z) + log_det
        loss = (-(log_p - dims * math.log(k)) / (dims * math.log(2))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        optimizer.step()
        yield {"step": step, "loss": loss.item()}
    for group, lr in zip(optimizer.param_groups, peak):
        group["lr"] = lr


def train_main(args) -> Path:
    from core.data.fashion_mnist import provenance
    from core.engine import TrainingRun
    from core.pixelcnn import load_levels
    from core.registry import shipped_path

    if not 2 <= args.levels <= 256:
        raise ValueError(f"--levels must be between 2 and 256, not {args.levels}.")
    name = args.name or f"fashion{args.size}_k{args.levels}"
    out = Path(args.out) if args.out else shipped_path("flow", name)
    run = TrainingRun(args, out, global_batch=args.batch_size)
    train_levels = load_levels("train", args.size, args.levels, args.data_dir, args.limit)
    test_levels = load_levels("test", args.size, args.levels, args.data_dir)
    mine = train_levels[run.shard(len(train_levels), "images")]
    data_files = [provenance("train", args.data_dir), provenance("test", args.data_dir)]
    config = ImageFlowConfig(image_size=args.size, levels=args.levels, hidden=args.hidden,
                             steps_per_scale=args.steps_per_scale, mixing=args.mixing)
    model = ImageFlow(config, seed=args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = run.generator("batches")
    curve = []
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        for group in optimizer.param_groups:  # --lr on a resumed run: the rate from here on (a cool-down)
            group["lr"] = args.lr
        curve = run.resumed["curve"]
    else:  # the same first batch on every rank: ActNorm starts identical everywhere
        model.initialize(dequantize(train_levels[:512], args.levels, make_generator(args.seed)))
    network = run.wrap(model)
    steps = args.epochs * len(train_levels) // args.batch_size
    every = max(1, min(200, steps // 10))
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"flow {name}: {n_params / 1e3:.0f}k parameters, {len(train_levels)} training images at "
            f"{args.size}x{args.size}, {args.levels} levels; {steps} steps")
    running = []

    def write_checkpoint(test_bpd: float | None) -> None:
        card = run.card(data=f"Fashion-MNIST train ({len(train_levels)} images), resized to {args.size}x{args.size}"
                             f" and quantised to {args.levels} levels, uniformly dequantised; the test split "
                             f"({len(test_levels)}) for the metric",
                        data_files=data_files,
                        model=model, parameters=n_params, batch_size=args.batch_size,
                        optimizer="Adam at the --lr of the command, then of each resumed_with (200 warm-up "
                                  "steps at the start), gradient norm clipped at 50; fp32",
                        metrics={"test_bits_per_dim": test_bpd,
                                 "train_bits_per_dim_last": curve[-1][1] if curve else None},
                        training_curve={"step_and_train_bits_per_dim": curve})
        run.save_model(model, asdict(config), card)

    def save() -> None:  # every few minutes: resumable state and a checkpoint the tab can already use
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve})
        write_checkpoint(None)

    # No autocast: the log-determinants are sums of many small terms, which bf16 would round away.
    for event in run.loop(train(model, mine, steps, run.batch, optimizer, generator, run.step, network),
                          save, total=steps, desc=f"flow {name}"):
        running.append(event["loss"])
        if event["step"] % every == 0:
            curve.append([event["step"], round(run.mean(sum(running) / len(running)), 4)])
            running = []
    run.sync_buffers(model)
    write_checkpoint(round(test_bits_per_dim(model, test_levels), 4))  # the test bound, once
    run.finish()
    return out
