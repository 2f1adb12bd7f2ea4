"""Denoising diffusion: add noise step by step, train a U-Net to predict it, then remove it.

The pieces, in the order of Generative Deep Learning's diffusion chapter:

* **Schedules** map a diffusion time t in [0, 1] to a *signal rate* and a *noise rate* with
  signal² + noise² = 1. t = 0 is the data itself; t = 1 is (almost) pure noise.
* **Forward process** q(x_t | x_0): x_t = signal(t) · x_0 + noise(t) · ε, in one jump for any t.
* **U-Net** ε_θ(x_t, noise variance): residual blocks, skip connections, and a sinusoidal
  embedding of the noise level. It sees the noise *level*, not a step index, so it can be sampled
  with any schedule and any number of steps whose noise levels it was trained on.
* **Training**: pick a random t, noise a clean image, regress the noise (MSE or MAE). Sampling uses
  an exponential moving average (EMA) of the weights, which gives visibly cleaner images.
* **Samplers** (kept apart from the network, like a diffusers scheduler): DDPM (ancestral), DDIM
  with η from 0 (deterministic) to 1, and DPM-Solver++ (2M) (Lu et al. 2022), a second-order
  solver that reuses the previous step's guess of x_0 and so needs fewer network calls for the same
  picture. Each step returns the next, less noisy x and the network's current guess of the clean
  image x_0, so a viewer can show both.

Time runs *backwards* while sampling: from t = 1 (noise) down to t = 0 (image).
Images live in [-1, 1] inside this module; `sample()` returns them in [0, 1].

    python -m core.train diffusion --data fashion --minutes 60 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SCHEDULES = ("cosine", "offset-cosine", "linear")
SAMPLERS = ("DDIM", "DDPM", "DPM++2M")  # DPM++2M: DPM-Solver++ (2M), Lu et al. 2022
MAX_STEPS = 1000  # the finest time grid a sampler may use (the DDPM paper's T)
MIN_SIGNAL_RATE = 0.01  # cosine stops here: at signal 0 the clean image could not be recovered


# --- schedules and the forward process ----------------------------------------------

def schedule_rates(schedule: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal rate, noise rate) at diffusion times t in [0, 1]; signal² + noise² = 1.

    linear:        the DDPM paper's betas rising linearly from 1e-4 to 0.02 over 1000 steps
                   (in continuous time, so any t works).
    cosine:        signal = cos(angle) with the angle growing linearly in t: noise is added
                   evenly instead of destroying the image early, as the linear schedule does.
    offset-cosine: the book's version, angles between acos(0.95) and acos(0.02), so training
                   never sees noise-free or signal-free images; t = 0 is still the data itself.
    """
    t = torch.as_tensor(t, dtype=torch.float32).clamp(0.0, 1.0)
    if schedule == "linear":
        beta_start, beta_end, steps = 1e-4, 0.02, 1000
        # log of prod(1 - beta) ~ -integral of beta over the steps, with beta linear in t
        log_alpha_bar = -steps * (beta_start * t + 0.5 * (beta_end - beta_start) * t ** 2)
        signal = torch.exp(0.5 * log_alpha_bar)
        return signal, torch.sqrt((1.0 - signal ** 2).clamp_min(0.0))
    if schedule == "cosine":
        angle = t * math.acos(MIN_SIGNAL_RATE)
    elif schedule == "offset-cosine":
        start, end = math.acos(0.95), math.acos(0.02)
        angle = torch.where(t > 0, start + t * (end - start), torch.zeros_like(t))
    else:
        raise ValueError(f"Unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    return torch.cos(angle), torch.sin(angle)


def _per_image(rate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return rate.reshape(-1, *([1] * (x.dim() - 1))) if rate.dim() else rate


def add_noise(x0: torch.Tensor, t, noise: torch.Tensor, schedule: str) -> torch.Tensor:
    """The forward process q(x_t | x_0): jump straight to time t (a number or one per image)."""
    signal, noise_rate = schedule_rates(schedule, torch.as_tensor(t, dtype=torch.float32))
    return _per_image(signal, x0) * x0 + _per_image(noise_rate, x0) * noise


# --- the network ---------------------------------------------------------------------

@dataclass
class DiffusionConfig:
    channels: int = 1            # 1 for Fashion-MNIST, 3 for colour
    image_size: int = 32
    widths: tuple = (32, 64, 128)  # channels per resolution level; each level halves the size
    patch: int = 1                # >1 folds patch x patch pixels into channels first (4x cheaper at 2)
    blocks_per_level: int = 1
    attention: bool = True        # self-attention at the lowest resolution only (cheap there)
    embedding_dim: int = 32
    schedule: str = "cosine"      # the schedule the network was trained with
    loss: str = "mse"             # "mse" or "mae" on the predicted noise
    condition_dim: int = 0        # >0: also conditioned on a vector (a caption's embedding, a class one-hot)

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")


def sinusoidal_embedding(noise_variance: torch.Tensor, dim: int) -> torch.Tensor:
    """Sines and cosines of the noise variance at frequencies from 1 to 1000 (log-spaced), so the
    network can tell nearby noise levels apart at every scale, as positional encodings do."""
    frequencies = torch.exp(torch.linspace(math.log(1.0), math.log(1000.0), dim // 2,
                                           device=noise_variance.device))
    angles = 2 * math.pi * noise_variance.reshape(-1, 1) * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with the noise embedding added in between, plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, out_channels)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, embedding):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embedding(embedding)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.shortcut(x)


class SelfAttention(nn.Module):
    """Every pixel looks at every other one: lets the lowest level coordinate the whole image."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = _norm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class UNet(nn.Module):
    """Predicts the noise in x_t given the noise variance.

    Down path: residual blocks then 2x average pooling per level, keeping each block's output.
    Up path: 2x upsampling, concatenate the kept output of the same level (the skip connection,
    which carries fine detail the bottleneck cannot), residual blocks.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        widths, emb = config.widths, config.embedding_dim * 4
        self.embed = nn.Sequential(nn.Linear(config.embedding_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        if config.condition_dim:
            # The condition joins the noise-level embedding that every residual block adds to its
            # channels (a FiLM shift, as Imagen adds its pooled text embedding). Its last layer starts
            # at zero, so a model fine-tuned from an unconditional one starts exactly where that one was.
            self.condition = nn.Sequential(nn.Linear(config.condition_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
            nn.init.zeros_(self.condition[-1].weight)
            nn.init.zeros_(self.condition[-1].bias)
        folded = config.channels * config.patch ** 2
        self.stem = nn.Conv2d(folded, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skip_widths, width = [], widths[0]
        for level, level_width in enumerate(widths):
            for _ in range(config.blocks_per_level):
                self.down.append(ResidualBlock(width, level_width, emb))
                width = level_width
                skip_widths.append(width)
        self.middle1 = ResidualBlock(width, width, emb)
        self.attention = SelfAttention(width) if config.attention else nn.Identity()
        self.middle2 = ResidualBlock(width, width, emb)
        self.up = nn.ModuleList()
        for level_width in reversed(widths):
            for _ in range(config.blocks_per_level):
                self.up.append(ResidualBlock(width + skip_widths.pop(), level_width, emb))
                width = level_width
        self.head = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, folded, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # start by predicting "no noise": a calm first step
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x_t: torch.Tensor, noise_variance: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        n_levels, per_level = len(self.config.widths), self.config.blocks_per_level
        emb = self.embed(sinusoidal_embedding(noise_variance.expand(x_t.shape[0]), self.config.embedding_dim))
        if self.config.condition_dim:
            if condition is None:
                raise ValueError("This model is conditional: pass a condition (the empty prompt's for none).")
            emb = emb + self.condition(condition.to(emb.dtype).expand(x_t.shape[0], -1))
        # Folding 2x2 pixels into channels (pixel unshuffle) quarters the cost of every layer;
        # the network still sees every pixel, only at a coarser grid.
        h = self.stem(F.pixel_unshuffle(x_t, self.config.patch))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if (i + 1) % per_level == 0 and (i + 1) // per_level < n_levels:
                h = F.avg_pool2d(h, 2)
        h = self.middle2(self.attention(self.middle1(h, emb)), emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if (i + 1) % per_level == 0 and (i + 1) // per_level < n_levels:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return F.pixel_shuffle(self.head(h), self.config.patch)


def predict_noise(model: UNet, x_t: torch.Tensor, t: float, schedule: str,
                  condition: torch.Tensor | None = None) -> torch.Tensor:
    """ε_θ(x_t, noise(t)² [, condition]), in bf16 on CUDA (core.runtime.autocast) and returned as float32."""
    from core.runtime import autocast

    _, noise_rate = schedule_rates(schedule, torch.tensor([float(t)]))
    with autocast(x_t.device):
        return model(x_t, (noise_rate ** 2).to(x_t.device), condition).float()


# --- samplers ------------------------------------------------------------------------

class StepOutput(NamedTuple):
    prev_sample: torch.Tensor   # x at the next (earlier, less noisy) time
    pred_original: torch.Tensor  # the network's current guess of the clean image x_0


class Guess(NamedTuple):
    """An earlier step's guess of the clean image and the time it was made at. A multistep solver
    (DPM-Solver++ (2M)) is handed the previous step's Guess explicitly, so a Sampler keeps no state
    between calls and one Sampler can serve many users at once."""
    t: float           # the (noisier) time the guess was made at
    x0: torch.Tensor   # the guess x̂₀ made there (clipped when the sampler clips)


def half_log_snr(schedule: str, t: float) -> float:
    """λ_t = log(signal / noise), half the log signal-to-noise ratio: DPM-Solver's time variable.
    It rises as t falls, from about log 0.01 ≈ −4.6 at t = 1 (cosine) to +∞ at t = 0 (no noise)."""
    signal, noise = (float(rate) for rate in schedule_rates(schedule, torch.tensor(float(t))))
    return math.inf if noise == 0.0 else math.log(signal / noise)


def dpm_solver_step(x_t: torch.Tensor, x0: torch.Tensor, t: float, t_prev: float, schedule: str,
                    previous: Guess | None = None) -> torch.Tensor:
    """One DPM-Solver++ step from t to the earlier t_prev (Lu et al. 2022, the data-prediction form).

    In λ the sampling ODE has the exact solution
    x_prev = (σ_prev/σ_t) x_t + α_prev ∫ e^{−(λ_prev − λ)} x̂₀(λ) dλ  (signal rate α, noise rate σ).
    First order holds x̂₀ fixed over the step: that is DDIM with η = 0. 2M also uses the previous
    step's guess to make x̂₀ linear in λ: one order more accurate, for no extra network call.
    """
    signal_prev, noise_prev = (float(rate) for rate in schedule_rates(schedule, torch.tensor(float(t_prev))))
    if noise_prev == 0.0:
        return x0  # t_prev = 0: λ_prev = +∞, e^{−h} = 0, so x_prev = x̂₀ (the last step is first order)
    _, noise = (float(rate) for rate in schedule_rates(schedule, torch.tensor(float(t))))
    lam = half_log_snr(schedule, t)
    h = half_log_snr(schedule, t_prev) - lam                # h = λ_prev − λ_t > 0: the step, in λ
    if previous is None:
        d = x0                                              # D = x̂₀: first order (the first step)
    else:
        r = (lam - half_log_snr(schedule, previous.t)) / h  # r = h_before / h
        if not r > 0:
            raise ValueError(f"The earlier guess must come from a noisier time than t = {t}; got t = {previous.t}.")
        d = x0 + (x0 - previous.x0) / (2 * r)               # D = x̂₀ + (x̂₀ − x̂₀_before) / 2r
    x_prev = (noise_prev / noise) * x_t - (signal_prev * math.expm1(-h)) * d  # (σ_prev/σ_t) x_t − α_prev (e^{−h} − 1) D
    return x_prev


class Sampler:
    """Walks diffusion time from 1 down to 0 in `steps` equal steps; the network is not part of it.

    DDIM (eta = 0) moves deterministically along the line between the predicted x_0 and the
    predicted noise; eta = 1 adds fresh noise each step (then DDIM equals DDPM); DDPM is the
    original ancestral step, the mean of q(x_prev | x_t, x_0) plus noise of the posterior's width.
    DPM++2M (DPM-Solver++ (2M)) is deterministic (eta does not apply): its first and last steps
    are DDIM's, the others also use the previous step's x_0 guess, passed in as `previous`.
    """

    def __init__(self, kind: str = "DDIM", steps: int = 50, eta: float = 0.0, schedule: str = "cosine",
                 clip_x0: bool = True):
        if kind not in SAMPLERS:
            raise ValueError(f"Unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}.")
        steps = int(steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"Steps must be between 1 and {MAX_STEPS}; {steps} was asked for.")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"η (eta) must be between 0 (deterministic) and 1 (fully random); got {eta}.")
        schedule_rates(schedule, torch.zeros(1))  # fails early on an unknown schedule name
        self.kind, self.steps, self.eta, self.schedule, self.clip_x0 = kind, steps, float(eta), schedule, clip_x0
        # times[0] = 1 (pure noise) ... times[steps] = 0 (the image): time runs backwards
        self.times = torch.linspace(1.0, 0.0, steps + 1)

    def rates(self, i: int) -> tuple[float, float]:
        signal, noise = schedule_rates(self.schedule, self.times[i])
        return float(signal), float(noise)

    def step(self, noise_pred: torch.Tensor, t: float, x_t: torch.Tensor, t_prev: float,
             generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None,
             previous: Guess | None = None) -> StepOutput:
        """One step from time t to the earlier time t_prev, given the network's noise prediction.
        `previous`: the last step's Guess (its t and pred_original), used by DPM++2M only; None on the first step."""
        signal, noise = schedule_rates(self.schedule, torch.tensor(float(t)))
        signal_prev, noise_prev = schedule_rates(self.schedule, torch.tensor(float(t_prev)))
        # Undo the forward process with the predicted noise: x_t = signal·x_0 + noise·ε.
        x0 = (x_t - noise * noise_pred) / signal
        if self.clip_x0:
            # The data lives in [-1, 1]; at high noise the guess overshoots. Keep ε consistent with it.
            x0 = x0.clamp(-1.0, 1.0)
            noise_pred = (x_t - signal * x0) / noise.clamp_min(1e-8)
        if self.kind == "DPM++2M":
            return StepOutput(dpm_solver_step(x_t, x0, t, t_prev, self.schedule, previous), x0)
        alpha, alpha_prev = signal ** 2, signal_prev ** 2
        # Width of the posterior q(x_prev | x_t, x_0) (DDPM's beta-tilde); DDIM scales it by eta.
        posterior_var = (noise_prev ** 2 / noise.clamp_min(1e-8) ** 2) * (1 - alpha / alpha_prev)
        if self.kind == "DDPM":
            beta = 1 - alpha / alpha_prev  # the noise added between t_prev and t
            mean = (signal_prev * beta / noise ** 2) * x0 + ((alpha / alpha_prev).sqrt() * noise_prev ** 2 / noise ** 2) * x_t
            std = posterior_var.sqrt()
        else:
            std = self.eta * posterior_var.sqrt()
            # Re-noise the x_0 guess to the earlier time using the *predicted* noise direction.
            mean = signal_prev * x0 + (noise_prev ** 2 - std ** 2).clamp_min(0).sqrt() * noise_pred
        if float(std) > 0:
            if variance_noise is None:
                # drawn on the CPU and moved: the same seed gives the same picture on every device
                variance_noise = torch.randn(x_t.shape, generator=generator).to(x_t.device)
            mean = mean + std * variance_noise
        return StepOutput(mean, x0)


class Frame(NamedTuple):
    step: int          # 1 .. steps
    t: float           # the time this step arrived at (runs from 1 towards 0)
    signal_rate: float
    noise_rate: float
    x_t: torch.Tensor  # in [-1, 1], on the CPU
    x0: torch.Tensor   # the network's guess of the clean image, in [-1, 1], on the CPU


@torch.no_grad()
def denoise(model: UNet, sampler: Sampler, start_noise: torch.Tensor,
            generator: torch.Generator | None = None) -> Iterator[Frame]:
    """Run the reverse process from `start_noise` (on the model's device), yielding a Frame after every step."""
    x = start_noise.to(next(model.parameters()).device)
    previous = None  # the last step's guess of x_0, for a multistep sampler (a local: nothing outlives the call)
    for i in range(sampler.steps):
        t, t_prev = float(sampler.times[i]), float(sampler.times[i + 1])
        noise_pred = predict_noise(model, x, t, sampler.schedule)
        x, x0 = sampler.step(noise_pred, t, x, t_prev, generator=generator, previous=previous)
        previous = Guess(t, x0)
        signal, noise = sampler.rates(i + 1)
        yield Frame(i + 1, t_prev, signal, noise, x.cpu(), x0.cpu())


def start_noise(n: int, config: DiffusionConfig, generator: torch.Generator) -> torch.Tensor:
    """x_1 ~ N(0, I), drawn on the CPU from the call's generator (denoise moves it to the model)."""
    return torch.randn(n, config.channels, config.image_size, config.image_size, generator=generator)


def sample(model: UNet, n: int, generator: torch.Generator, steps: int = 50, kind: str = "DDIM",
           eta: float = 0.0, schedule: str | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """n images in [0, 1] (pure given the generator). `noise` overrides the start noise."""
    sampler = Sampler(kind, steps, eta, schedule or model.config.schedule)
    x = start_noise(n, model.config, generator) if noise is None else noise
    for frame in denoise(model, sampler, x, generator):
        x = frame.x_t
    return to_unit(x)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


# --- loading shipped models ----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_model(name: str) -> UNet:
    """A shipped diffusion model (EMA weights), built once, moved to the app's device and shared read-only."""
    from core.checkpoints import build_model, load_shipped
    from core.runtime import app_device

    model = build_model(load_shipped("diffusion", name), UNet, DiffusionConfig).to(app_device())
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- training ------------------------------------------------------------------------

def diffusion_loss(network: nn.Module, config: DiffusionConfig, x0: torch.Tensor,
                   generator: torch.Generator | None = None, condition: torch.Tensor | None = None) -> torch.Tensor:
    """Noise a batch at random times and score the network's noise prediction:
    x_t = signal(t)·x_0 + noise(t)·ε,  loss = ‖ε_θ(x_t, noise(t)²) − ε‖² (or |·| for "mae").
    The random draws come from `generator` on the CPU, so a run is the same on every device."""
    t = torch.rand(x0.shape[0], generator=generator).clamp_min(1e-4).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    signal, noise_rate = schedule_rates(config.schedule, t)
    x_t = _per_image(signal, x0) * x0 + _per_image(noise_rate, x0) * noise
    pred = network(x_t, noise_rate ** 2, condition).float()
    return F.l1_loss(pred, noise) if config.loss == "mae" else F.mse_loss(pred, noise)


def pick_conditions(conditions: torch.Tensor, null_condition: torch.Tensor, index: torch.Tensor,
                    drop_probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The conditions of a batch: one of each image's K (one of its captions, say), and for a share
    `drop_probability` of the batch the empty condition ∅ instead. Training on both is what lets one
    network give ε(x_t | c) and ε(x_t | ∅), the two predictions classifier-free guidance mixes."""
    choice = torch.randint(conditions.shape[1], (len(index),), generator=generator)
    picked = conditions[index, choice]
    dropped = torch.rand(len(index), generator=generator) < drop_probability
    return torch.where(dropped[:, None], null_condition.to(picked.dtype).expand_as(picked), picked)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def load_training_images(data: str, size: int, data_dir=None, limit: int | None = None,
                         download: bool = False) -> tuple[torch.Tensor, str]:
    """Training images in [-1, 1] and a one-line description for the model card."""
    if data == "fashion":
        from core.data.fashion_mnist import load_fashion_mnist, to_float

        images, _ = load_fashion_mnist("train", data_dir=data_dir)
        x = to_float(images[:limit], size)
        description = f"Fashion-MNIST train ({len(x)} images), zero-padded 28->32"
        if size != 32:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            description += f", resized to {size}"
    elif data == "faces":
        from core.data.faces import face_split

        n = limit or 20000
        x = face_split("train", n, size=size).images  # drawn at `size`, the split the metrics compare with
        description = f"synthetic faces, core.data.faces.face_split('train', {n}, size={size})"
    elif data in ("flowers", "celeba"):  # real photos, for users who have them or are online
        from core.data import celeba, flowers

        if data == "flowers":  # as in the book: all 8189 images (train, validation and test) for training
            images, description = flowers.load_flowers(data_dir, "all", size, limit, download=download)
        else:
            images, _ = celeba.load_celeba(data_dir, "train", size, limit, download=download)
            description = f"CelebA train ({len(images)} images), centre-cropped to {size}x{size}; {celeba.SOURCE}"
        x = images.float() / 255
    else:
        raise ValueError(f"Unknown data {data!r}; choose fashion, faces, flowers or celeba.")
    return x * 2 - 1, description


def training_data_files(args, images: torch.Tensor, description: str) -> list[dict]:
    """Name, source and SHA-256 of the training data, for the model card: the datasets' own records where
    there is one, else a digest of the images as 8-bit pixels."""
    if args.data == "fashion":
        from core.data.fashion_mnist import provenance

        return [provenance("train", args.data_dir)]
    if args.data == "faces":
        from core.data.faces import provenance

        held_out = "the faces with a held-out combination (core.captions.HELD_OUT)" if args.condition == "captions" else ""
        return [provenance("train", args.limit or 20000, args.size, leaving_out=held_out)]
    from core.data import celeba, data_record, flowers

    pixels = ((images + 1) * 127.5).round().to(torch.uint8)
    return [data_record(description, {"celeba": celeba.SOURCE, "flowers": flowers.SOURCE}[args.data], pixels,
                        key="sha256_of_images")]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("fashion", "faces", "flowers", "celeba"), default="fashion",
                        help="flowers: Oxford 102 Flowers (the book's data), celeba: CelebA, both in torchvision's layout")
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files, flowers-102/ or celeba/")
    parser.add_argument("--download", action="store_true", help="flowers/celeba: fetch them into --data-dir first")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--widths", default="32,64,128", help="channels per level, comma separated")
    parser.add_argument("--blocks", type=int, default=1, help="residual blocks per level")
    parser.add_argument("--patch", type=int, default=2, help="fold patch x patch pixels into channels first")
    parser.add_argument("--no-attention", action="store_true")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    parser.add_argument("--loss", choices=("mse", "mae"), default="mse")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-decay", choices=("none", "cosine"), default="none",
                        help="cosine: the learning rate falls from --lr to 0 at --steps (set --steps to the run's length)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the sampling weights")
    parser.add_argument("--steps", type=int, default=100_000, help="optimizer steps (--minutes may stop earlier)")
    parser.add_argument("--save-every", type=float, default=180, help="seconds between resumable saves")
    parser.add_argument("--condition", choices=("none", "captions", "classes"), default="none",
                        help="captions: faces with the tiny CLIP's caption embeddings (core.text_to_image); "
                             "classes: Fashion-MNIST with a class one-hot")
    parser.add_argument("--caption-dropout", type=float, default=0.15,
                        help="share of the examples trained with the empty condition (for classifier-free guidance)")
    parser.add_argument("--captions-per-image", type=int, default=8, help="captions drawn per face and embedded once")
    parser.add_argument("--clip", default="faces32", help="shipped CLIP whose text encoder embeds the captions")
    parser.add_argument("--init-from", default=None,
                        help="start from an unconditional checkpoint of the same U-Net (new conditioning layers start at zero)")


def train(model: UNet, images: torch.Tensor, steps: int, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 1e-4, ema_decay: float = 0.999, generator: torch.Generator | None = None,
          ema: UNet | None = None, optimizer=None, start_step: int = 0, network: nn.Module | None = None,
          autocast=contextlib.nullcontext, conditions: torch.Tensor | None = None,
          null_condition: torch.Tensor | None = None, drop_probability: float = 0.0,
          lr_decay: str = "none") -> Iterator[dict]:
    """The training loop as a generator: yields {"step", "loss"} after every optimizer step.

    `network` is what the step calls (the model itself, or its DistributedDataParallel wrapper, which
    averages the gradients over the processes); `batch_size` is this process's share of the batch.
    The EMA copy's decay ramps up from 0 so that early samples are not an average of noise.
    A conditional model gets `conditions` [N, K, D] (K choices per image, e.g. K captions) and the
    empty condition `null_condition` [D] (see `pick_conditions`).
    lr_decay "cosine" lowers the learning rate along half a cosine to 0 at `steps`: the last steps
    average out the gradient noise that a constant rate keeps in the weights.
    """
    network = network or model
    ema = ema if ema is not None else copy.deepcopy(model).requires_grad_(False)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    device = next(model.parameters()).device
    for step in range(start_step + 1, steps + 1):
        # A short warm-up keeps AdamW's first, badly estimated steps small.
        decay = 0.5 * (1 + math.cos(math.pi * step / steps)) if lr_decay == "cosine" else 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / 200) * decay
        index = torch.randint(len(images), (batch_size,), generator=generator)
        batch = images[index].to(device)
        condition = None if conditions is None else \
            pick_conditions(conditions, null_condition, index, drop_probability, generator).to(device)
        with autocast():
            loss = diffusion_loss(network, model.config, batch, generator, condition)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        yield {"step": step, "loss": loss.item()}


def train_main(args) -> Path:
    from core.engine import TrainingRun
    from core.registry import shipped_path

    name = ("fashion32" if args.data == "fashion" else f"{args.data}{args.size}") + \
        {"none": "", "captions": "_captions", "classes": "_classes"}[args.condition]
    out = Path(args.out) if args.out else shipped_path("diffusion", name)
    run = TrainingRun(args, out, global_batch=args.batch_size)
    run.refuse_download_in_many(args.download)
    conditions = null_condition = None
    extras = {}  # what a conditional model needs at use time: which text encoder made its conditions
    if args.condition == "none":
        images, data_description = load_training_images(args.data, args.size, args.data_dir, args.limit, args.download)
    else:
        from core.text_to_image import conditional_training_set

        images, conditions, null_condition, data_description, extras = conditional_training_set(args)
    data_files = training_data_files(args, images, data_description)
    mine = run.shard(len(images), "images")  # this process's share, kept on the CPU
    images = images[mine]
    conditions = None if conditions is None else conditions[mine]
    config = DiffusionConfig(channels=images.shape[1], image_size=args.size,
                             widths=tuple(int(w) for w in args.widths.split(",")), blocks_per_level=args.blocks,
                             patch=args.patch, attention=not args.no_attention, schedule=args.schedule, loss=args.loss,
                             condition_dim=0 if conditions is None else conditions.shape[-1])
    model = UNet(config)
    state, curve, init = run.resumed, [], None  # init: what the --init-from checkpoint's card says of it
    if state:
        model.load_state_dict(state["model"])
        curve, init = state["curve"], state.get("init")
    elif args.init_from:
        from core.checkpoints import command_history, start_from

        weights, init = start_from(args.init_from, {**asdict(config), "condition_dim": 0}, "unconditional diffusion U-Net",
                                   ("steps", "metrics"), defaults={"condition_dim": 0})
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or any(not key.startswith("condition.") for key in missing):
            raise ValueError(f"{args.init_from} does not fit this U-Net: missing {missing}, unexpected {unexpected}.")
        run.commands = command_history(args, init)  # the checkpoint's commands head this run's
    network = run.wrap(model)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = run.generator("noise and batches")
    if state:
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"{data_description}; {n_params / 1e6:.2f}M parameters; from step {run.step}; "
            f"{run.world_size} process(es) on {run.device}")
    running, every = [], max(1, min(100, args.steps // 10))  # curve points: every 100 steps, 10 in a short run

    def save() -> None:
        run.save_state({"model": model.state_dict(), "ema": ema.state_dict(),
                        "optimizer": optimizer.state_dict(), "curve": curve, "init": init})
        card = run.card(data=data_description, data_files=data_files, model=model, batch_size=args.batch_size, parameters=n_params,
                        optimizer=f"AdamW lr {args.lr} wd {args.weight_decay}, 200-step warm-up, grad clip 1"
                                  + (f", cosine decay to 0 at step {args.steps}" if args.lr_decay == "cosine" else ""),
                        ema_decay=args.ema, weights="EMA, float16", bf16_autocast=run.bf16, init=init,
                        **({"caption_dropout": args.caption_dropout} if conditions is not None else {}),
                        metrics={"final_loss": curve[-1][1] if curve else None},
                        training_curve={"step_and_mean_loss": curve})
        run.save_model(ema, config, card, extras, half=True)

    events = train(model, images, args.steps, run.batch, args.lr, args.weight_decay, args.ema,
                   generator, ema, optimizer, run.step, network=network, autocast=run.autocast,
                   conditions=conditions, null_condition=null_condition, drop_probability=args.caption_dropout,
                   lr_decay=args.lr_decay)
    for event in run.loop(events, save, total=args.steps, desc=f"diffusion {name}"):
        running.append(event["loss"])
        if event["step"] % every == 0:
            curve.append([event["step"], round(run.mean(sum(running) / len(running)), 5)])
            running, every = [], max(1, min(100, args.steps // 10))  # curve points: every 100 steps, 10 in a short run
    run.finish()
    return out
