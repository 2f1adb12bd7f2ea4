"""VAE tab (placeholder until issue #6 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("VAE", "Variational autoencoders: a 2-D latent map, latent sliders, attribute vectors, morphing.", 6)
