"""DeepDream tab (placeholder until issue #4 lands)."""
from tabs.common import not_built_yet


def build() -> None:
    not_built_yet("DeepDream", "Gradient ascent on the activations of an ImageNet convnet, over octaves.", 4)
