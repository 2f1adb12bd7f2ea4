"""Style transfer tab (placeholder until issue #5 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("Style transfer", "Gatys style transfer: content, Gram-matrix style and total-variation losses.", 5)
