"""MuseGAN tab (placeholder until issue #9 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("MuseGAN", "Four-voice chorales with chords, style, melody and groove controls.", 9)
