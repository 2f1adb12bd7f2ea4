"""PixelCNN: an image as a sequence of pixels, each predicted from the ones before it.

The chain rule writes any image distribution as a product of one-pixel conditionals, in raster
order (row by row, left to right):

    p(x) = ∏_i p(x_i | x_1, ..., x_{i-1})

A PixelCNN computes all of them at once with convolutions whose kernels are *masked* so that the
output at pixel i never sees pixel i or anything after it:

* **mask A** (first layer): the centre is hidden too; the network must predict x_i without x_i.
* **mask B** (later layers): the centre is visible, because there it holds features computed from
  pixels strictly before i (mask A already removed x_i itself).

Each pixel takes one of K intensity levels (K = 4, as in Generative Deep Learning), and the network
ends in a softmax over the K levels per pixel. Training is plain cross-entropy, and the test loss
in bits per dimension (−log₂ p(x) / pixels) is an exact likelihood, unlike a VAE's bound.

Stacking k×k masked kernels leaves a **blind spot**: pixels above and to the right of i that no
path reaches. The **gated PixelCNN** (van den Oord et al., 2016) splits the network into a
vertical stack (everything above the current row) and a horizontal stack (the current row, to the
left), so the receptive field is the full "before i" region, and uses gated units
tanh(W_f * x) ⊙ σ(W_g * x) in place of ReLUs.

Sampling is the slow part: one network call per pixel (`sample` yields each finished row).

    python -m core.train pixelcnn --model gated --levels 4 --minutes 30 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("plain", "gated")


@dataclass
class PixelCNNConfig:
    kind: str = "plain"        # "plain" (the book's) or "gated" (van den Oord et al., 2016)
    levels: int = 4            # K: intensity levels per pixel (a softmax over K per pixel)
    image_size: int = 16
    channels: int = 64         # feature maps per layer
    blocks: int = 5            # residual (plain) or gated layers
    first_kernel: int = 7      # the mask-A layer's kernel: how far the first layer looks


# --- masks -----------------------------------------------------------------------------------

def raster_mask(kernel: int, kind: str) -> torch.Tensor:
    """The k×k mask of a PixelCNN layer: 1 on the rows above the centre, and on the centre row left
    of the centre; the centre itself is 1 for mask "B" and 0 for mask "A"."""
    mask = torch.zeros(kernel, kernel)
    centre = kernel // 2
    mask[:centre] = 1
    mask[centre, :centre + (kind == "B")] = 1
    return mask


def vertical_mask(kernel: int) -> torch.Tensor:
    """The gated PixelCNN's vertical stack: every row up to and including the centre row. The row
    itself is allowed because the stack reaches the horizontal one only shifted one row down."""
    mask = torch.zeros(kernel, kernel)
    mask[:kernel // 2 + 1] = 1
    return mask


def horizontal_mask(kernel: int, kind: str) -> torch.Tensor:
    """The horizontal stack's 1×k mask: the pixels to the left, and the centre for mask "B"."""
    mask = torch.zeros(1, kernel)
    mask[0, :kernel // 2 + (kind == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 mask at every call (so the masked
    weights stay exactly zero in effect, whatever the optimiser does to them)."""

    def __init__(self, in_channels: int, out_channels: int, mask: torch.Tensor):
        kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask[None, None].clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


# --- the plain PixelCNN (the book's) ------------------------------------------------------------

class ResidualBlock(nn.Module):
    """1×1 conv (halve the channels) → 3×3 mask-B conv → 1×1 conv (restore), added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 2, 1)
        self.masked = MaskedConv2d(channels // 2, channels // 2, raster_mask(3, "B"))
        self.expand = nn.Conv2d(channels // 2, channels, 1)

    def forward(self, x):
        h = F.relu(self.reduce(F.relu(x)))
        h = F.relu(self.masked(h))
        return x + self.expand(h)


class PlainPixelCNN(nn.Module):
    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.first = MaskedConv2d(1, c, raster_mask(config.first_kernel, "A"))
        self.blocks = nn.ModuleList(ResidualBlock(c) for _ in range(config.blocks))
        # 1×1 convolutions: a mask-B 1×1 kernel is all centre, i.e. an ordinary 1×1 convolution
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.levels, 1))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels [N, 1, H, W] (integers 0..K-1) -> logits [N, K, H, W]."""
        return self.logits(scale_input(levels, self.config.levels))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The same from the scaled input in [-1, 1] (differentiable, for receptive fields)."""
        h = self.first(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


# --- the gated PixelCNN -----------------------------------------------------------------------

def gate(h: torch.Tensor) -> torch.Tensor:
    """tanh(filter) ⊙ σ(gate): the two halves of the channels (the gated unit of the paper)."""
    filt, gate_ = h.chunk(2, dim=1)
    return torch.tanh(filt) * torch.sigmoid(gate_)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row r gets row r-1 (zeros on top): what the vertical stack may tell the horizontal one."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class GatedLayer(nn.Module):
    """One layer of both stacks. v: rows above (and this row, within the vertical stack only);
    h: this row up to the current pixel; the shifted vertical features flow into h."""

    def __init__(self, channels: int, kernel: int, kind: str):
        super().__init__()
        self.vertical = MaskedConv2d(channels, 2 * channels, vertical_mask(kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = MaskedConv2d(channels, 2 * channels, horizontal_mask(kernel, kind))
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.residual = kind == "B"  # the first layer's input is the image, not features to add to

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_features = self.vertical(v)
        h_features = self.horizontal(h) + self.v_to_h(shift_down(v_features))
        h_new = self.h_out(gate(h_features))
        return gate(v_features), h + h_new if self.residual else h_new


class GatedPixelCNN(nn.Module):
    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.lift = nn.Conv2d(1, c, 1)  # a 1×1 conv sees only its own pixel: the masks below hide it
        self.layers = nn.ModuleList([GatedLayer(c, config.first_kernel, "A")] +
                                    [GatedLayer(c, 3, "B") for _ in range(config.blocks)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.levels, 1))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels [N, 1, H, W] -> logits [N, K, H, W]."""
        return self.logits(scale_input(levels, self.config.levels))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The same from the scaled input in [-1, 1] (differentiable, for receptive fields)."""
        v = h = self.lift(x)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)


def scale_input(levels: torch.Tensor, k: int) -> torch.Tensor:
    """Integer levels 0..K-1 as network input in [-1, 1]."""
    return levels.float() / (k - 1) * 2 - 1


def build(config: PixelCNNConfig) -> nn.Module:
    if config.kind not in MODELS:
        raise ValueError(f"Unknown PixelCNN {config.kind!r}; choose plain or gated.")
    return (PlainPixelCNN if config.kind == "plain" else GatedPixelCNN)(config)


# --- likelihood -----------------------------------------------------------------------------

def quantise(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Images in [0, 1] -> integer levels 0..K-1 (equal-width bins)."""
    return (images * levels).floor().clamp(0, levels - 1).long()


def nll_bits_per_dim(model: nn.Module, levels: torch.Tensor) -> torch.Tensor:
    """−log₂ p(x) / (H·W) for each image: the cross-entropy of every pixel's softmax, in bits."""
    logits = model(levels)
    nats = F.cross_entropy(logits, levels[:, 0], reduction="none").mean(dim=(1, 2))
    return nats / math.log(2)


@torch.no_grad()
def test_bits_per_dim(model: nn.Module, levels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    device = next(model.parameters()).device
    total = sum(nll_bits_per_dim(model, levels[i:i + batch_size].to(device)).sum().item()
                for i in range(0, len(levels), batch_size))
    return total / len(levels)


# --- sampling and completion -----------------------------------------------------------------

@torch.no_grad()
def pixel_distribution(model: nn.Module, canvas: torch.Tensor, row: int, col: int,
                       temperature: float = 1.0) -> torch.Tensor:
    """p(x_{row,col} | the pixels before it) for every image of `canvas` [N, 1, H, W]: [N, K] on the CPU.
    Only rows 0..row go through the network: the masks make the rows below irrelevant to this pixel."""
    device = next(model.parameters()).device
    logits = model(canvas[:, :, :row + 1].to(device))[:, :, row, col].float().cpu()
    if temperature == 0:
        return F.one_hot(logits.argmax(1), logits.shape[1]).float()  # greedy: the likeliest level
    return torch.softmax(logits / temperature, dim=1)


@torch.no_grad()
def complete(model: nn.Module, canvas: torch.Tensor, known: torch.Tensor, generator: torch.Generator,
             temperature: float = 1.0) -> Iterator[tuple[int, torch.Tensor]]:
    """Fill the unknown pixels of `canvas` (levels [N, 1, H, W]; `known` a bool [H, W] or [N, 1, H, W]
    mask) in raster order, sampling each from p(x_i | pixels before i); known pixels are kept as they
    are. Yields (row, canvas so far) after every finished row. Pure given the generator: the draws
    are made on the CPU, so a seed gives the same images on every device."""
    canvas = canvas.clone().cpu()
    known = known.expand_as(canvas).cpu()
    model.eval()
    size = canvas.shape[-1]
    for row in range(canvas.shape[-2]):
        for col in range(size):
            todo = ~known[:, 0, row, col]
            if todo.any():
                probs = pixel_distribution(model, canvas, row, col, temperature)
                drawn = torch.multinomial(probs, 1, generator=generator)[:, 0]
                canvas[:, 0, row, col] = torch.where(todo, drawn, canvas[:, 0, row, col])
        yield row, canvas.clone()


def sample(model: nn.Module, n: int, generator: torch.Generator, temperature: float = 1.0
           ) -> Iterator[tuple[int, torch.Tensor]]:
    """n new images, pixel by pixel: complete() with nothing known. Yields (row, levels so far)."""
    size = model.config.image_size
    blank = torch.zeros(n, 1, size, size, dtype=torch.long)
    yield from complete(model, blank, torch.zeros(size, size, dtype=torch.bool), generator, temperature)


def to_unit(levels: torch.Tensor, k: int) -> torch.Tensor:
    """Levels -> grey values in [0, 1] for display (level 0 black, level K-1 white)."""
    return levels.float() / (k - 1)


# --- why it works: receptive fields ---------------------------------------------------------

def receptive_field(model: nn.Module, row: int, col: int) -> torch.Tensor:
    """Which input pixels can change the prediction at (row, col): |∂ logits(row, col) / ∂ input| > 0,
    a bool [H, W], from one backward pass on a random input (so that no activation happens to be 0)."""
    size = model.config.image_size
    device = next(model.parameters()).device
    x = (torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    x.requires_grad_()
    with torch.enable_grad():
        model.logits(x)[0, :, row, col].sum().backward()
    return (x.grad[0, 0].abs() > 0).cpu()


# --- loading shipped models ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_model(name: str) -> nn.Module:
    """A shipped PixelCNN, built once, moved to the app's device, shared read-only."""
    from core.checkpoints import load_shipped
    from core.runtime import app_device

    ckpt = load_shipped("pixelcnn", name)
    model = build(PixelCNNConfig(**ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    return model.eval().requires_grad_(False).to(app_device())


# --- training ------------------------------------------------------------------------------

def load_levels(split: str, size: int, levels: int, data_dir=None, limit: int | None = None) -> torch.Tensor:
    """Fashion-MNIST `split` resized to size×size and quantised to K levels: long [N, 1, size, size]."""
    from core.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist(split, data_dir)
    x = images[:limit].float()[:, None] / 255
    if size != 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return quantise(x, levels)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="plain")
    parser.add_argument("--levels", type=int, default=4, help="intensity levels per pixel (the book: 4)")
    parser.add_argument("--size", type=int, default=16, help="image size (the book: 16)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, shared by all processes")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--name", default=None, help="checkpoint name (default: <model>_fashion<size>_k<levels>)")


def train(model: nn.Module, levels: torch.Tensor, steps: int, batch_size: int, optimizer, generator,
          start_step: int = 0, network: nn.Module | None = None, autocast=None) -> Iterator[dict]:
    """Cross-entropy of every pixel's softmax; yields {"step", "loss" (bits per dimension)}."""
    network = network or model
    autocast = autocast or contextlib.nullcontext
    device = next(model.parameters()).device
    model.train()
    for step in range(start_step + 1, steps + 1):
        batch = levels[torch.randint(len(levels), (batch_size,), generator=generator)].to(device)
        with autocast():
            logits = network(batch).float()
        loss = F.cross_entropy(logits, batch[:, 0]) / math.log(2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield {"step": step, "loss": loss.item()}


def train_main(args) -> Path:
    from core.data.fashion_mnist import provenance
    from core.engine import TrainingRun
    from core.registry import shipped_path

    if not 2 <= args.levels <= 256:
        raise ValueError(f"--levels must be between 2 and 256, not {args.levels}.")
    name = args.name or f"{args.model}_fashion{args.size}_k{args.levels}"
    out = Path(args.out) if args.out else shipped_path("pixelcnn", name)
    run = TrainingRun(args, out, global_batch=args.batch_size)
    train_levels = load_levels("train", args.size, args.levels, args.data_dir, args.limit)
    test_levels = load_levels("test", args.size, args.levels, args.data_dir)
    mine = train_levels[run.shard(len(train_levels), "images")]
    config = PixelCNNConfig(kind=args.model, levels=args.levels, image_size=args.size, channels=args.channels,
                            blocks=args.blocks)
    model = build(config)
    network = run.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = run.generator("batches")
    curve = []
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        curve = run.resumed["curve"]
    steps = args.epochs * len(train_levels) // args.batch_size
    every = max(1, min(200, steps // 10))
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"{name}: {n_params / 1e3:.0f}k parameters, {len(train_levels)} training images at "
            f"{args.size}x{args.size}, {args.levels} levels; {steps} steps")
    running = []

    def write_checkpoint(test_bpd: float | None) -> None:
        card = run.card(data=f"Fashion-MNIST train ({len(train_levels)} images), resized to {args.size}x{args.size}"
                             f" and quantised to {args.levels} levels; the test split ({len(test_levels)}) for the metric",
                        data_files=[provenance("train", args.data_dir), provenance("test", args.data_dir)],
                        model=model, parameters=n_params, batch_size=args.batch_size, optimizer=f"Adam lr {args.lr}",
                        metrics={"test_bits_per_dim": test_bpd,
                                 "train_bits_per_dim_last": curve[-1][1] if curve else None},
                        training_curve={"step_and_train_bits_per_dim": curve})
        run.save_model(model, asdict(config), card)

    def save() -> None:  # every few minutes: resumable state and a checkpoint the tab can already use
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve})
        write_checkpoint(None)

    for event in run.loop(train(model, mine, steps, run.batch, optimizer, generator, run.step, network,
                                run.autocast), save, total=steps, desc=f"pixelcnn {name}"):
        running.append(event["loss"])
        if event["step"] % every == 0:
            curve.append([event["step"], round(run.mean(sum(running) / len(running)), 4)])
            running = []
    write_checkpoint(round(test_bits_per_dim(model, test_levels), 4))  # the exact test likelihood, once
    run.finish()
    return out
