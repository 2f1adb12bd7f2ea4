"""Toy 2-D distributions for the models small enough to train live in the browser (the GAN, the
normalizing flow, the energy-based model): each is a cloud of points with a shape a Gaussian cannot fit.

    points = sample("moons", 1000, make_generator(0))   # float [1000, 2], inside [-EXTENT, EXTENT]^2

The names are importable without torch (the app lists them while it starts); torch loads on first sample.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EXTENT = 3.0  # the plotted square is [-EXTENT, EXTENT]^2; every distribution fits inside
DISTRIBUTIONS = ("moons", "ring", "rings", "grid", "eight_gaussians", "spiral", "checkerboard")
LABELS = {"moons": "two moons", "ring": "ring", "rings": "three rings", "grid": "5x5 grid",
          "eight_gaussians": "eight Gaussians", "spiral": "spiral", "checkerboard": "checkerboard"}


def _mixture(centres: torch.Tensor, n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    import torch

    pick = torch.randint(len(centres), (n,), generator=generator)
    return centres[pick] + spread * torch.randn(n, 2, generator=generator)


def check(name: str) -> str:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"Unknown distribution {name!r}: choose one of {', '.join(DISTRIBUTIONS)}.")
    return name


def sample(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n points [n, 2] from one of the toy distributions."""
    import torch

    check(name)
    if name == "moons":  # two interleaved half circles (the normalizing-flow chapter's data)
        t = torch.rand(n, generator=generator) * math.pi
        upper = torch.rand(n, generator=generator) < 0.5
        x = torch.where(upper, t.cos(), 1 - t.cos())
        y = torch.where(upper, t.sin(), 0.5 - t.sin())
        points = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.6
        return points + 0.05 * torch.randn(n, 2, generator=generator)
    if name == "ring":  # a thin circle of radius 2
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        radius = 2 + 0.05 * torch.randn(n, generator=generator)
        return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    if name == "rings":  # three concentric circles, the outer ones holding more points
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        radius = torch.tensor([0.6, 1.4, 2.2])[torch.multinomial(torch.tensor([1.0, 2.0, 3.0]), n, True,
                                                                  generator=generator)]
        radius = radius + 0.06 * torch.randn(n, generator=generator)
        return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    if name == "grid":  # a 5x5 grid of small Gaussians: the classic test of mode collapse
        ticks = torch.arange(-2.0, 2.1)
        centres = torch.stack(torch.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
        return _mixture(centres, n, 0.05, generator)
    if name == "eight_gaussians":  # eight small Gaussians on a circle of radius 2
        angles = torch.arange(8) * (2 * math.pi / 8)
        return _mixture(2 * torch.stack([angles.cos(), angles.sin()], 1), n, 0.1, generator)
    if name == "spiral":  # one arm winding out from the centre
        t = torch.rand(n, generator=generator).sqrt() * 3 * math.pi
        r = 0.25 + 2.5 * t / (3 * math.pi)
        points = torch.stack([r * t.cos(), r * t.sin()], dim=1)
        return points + 0.05 * torch.randn(n, 2, generator=generator)
    # checkerboard: uniform on the black squares of a 4x4 board of side 1 (a density with sharp edges)
    column = torch.randint(4, (n,), generator=generator)
    row = 2 * torch.randint(2, (n,), generator=generator) + (column % 2)  # black squares only
    corner = torch.stack([column, row], 1).float() - 2
    return corner + torch.rand(n, 2, generator=generator)


def plane(resolution: int) -> torch.Tensor:
    """A resolution × resolution grid of points over the plotted square, [resolution², 2], stored as an
    image is: row by row from the top (y = +EXTENT), each row left to right. What the 2-D tabs colour
    as a map: reshape a value per point to [resolution, resolution]."""
    import torch

    ticks = torch.linspace(-EXTENT, EXTENT, resolution)
    ys, xs = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2)
