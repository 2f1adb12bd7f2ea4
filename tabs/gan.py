"""GAN tab (placeholder until issue #7 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("GAN", "DCGAN, WGAN-GP and conditional GAN samples, and a GAN learning live on 2-D data.", 7)
