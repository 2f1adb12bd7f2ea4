"""Diffusion tab (placeholder until issue #8 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("Diffusion", "DDPM/DDIM denoising diffusion with a step-by-step viewer.", 8)
