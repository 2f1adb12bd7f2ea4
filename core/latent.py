"""Walking between two points of a latent space (VAE codes, GAN noise, diffusion start noise).

Linear interpolation cuts through the middle of a Gaussian's shell, where a high-dimensional
sample almost never lies, so mid-way points come out washed out. Spherical interpolation follows
the great circle and keeps the norm between the endpoints' norms.
"""
from __future__ import annotations

import torch


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation; for batched input [N, ...] each sample is one vector."""
    shape = a.shape
    a2 = a.reshape(shape[0], -1) if a.dim() > 1 else a.reshape(1, -1)
    b2 = b.reshape(a2.shape)
    a_norm, b_norm = a2.norm(dim=-1, keepdim=True), b2.norm(dim=-1, keepdim=True)
    cos = ((a2 / a_norm.clamp_min(eps)) * (b2 / b_norm.clamp_min(eps))).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    # Nearly parallel vectors: the great circle degenerates, and lerp is the exact limit.
    safe = sin.abs() > 1e-5
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, sin, 1.0), torch.full_like(sin, 1 - t))
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, sin, 1.0), torch.full_like(sin, t))
    return (wa * a2 + wb * b2).reshape(shape)


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """`steps` points from z0 to z1 inclusive, stacked on a new first dimension."""
    if mode not in ("lerp", "slerp"):
        raise ValueError(f"Interpolation mode must be 'lerp' or 'slerp', not {mode!r}.")
    steps = max(2, int(steps))
    step = slerp if mode == "slerp" else lerp
    return torch.stack([step(z0, z1, i / (steps - 1)) for i in range(steps)])
