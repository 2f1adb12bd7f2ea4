"""The tappable layer names of each backbone, without importing torch.

The UI lists layers when the app starts, long before any network is loaded (the start-up budget
forbids importing torch there). `core.backbones` builds the networks; a test checks that the
names here are exactly the ones the built networks expose.
"""
from __future__ import annotations

BACKBONE_NAMES = ["efficientnet_lite0", "vgg19", "googlenet", "inception_v3"]
OFFLINE_DEFAULT = "efficientnet_lite0"

BACKBONE_LABELS = {
    "efficientnet_lite0": "EfficientNet-Lite0 (offline, packaged weights)",
    "vgg19": "VGG19 (torchvision download)",
    "googlenet": "GoogLeNet (torchvision download)",
    "inception_v3": "Inception v3, the book's network (torchvision download)",
}


def _lite0() -> list[str]:
    names = ["stem", "block1"]
    for block in range(2, 17):  # block 1 has no expansion conv
        names += [f"block{block}.expand", f"block{block}"]
    return names + ["head"]


def _vgg19() -> list[str]:
    names = []
    for block, convs in enumerate([2, 2, 4, 4, 4], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


LAYER_NAMES = {
    "efficientnet_lite0": _lite0(),
    "vgg19": _vgg19(),
    "googlenet": ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                  "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                  "inception5a", "inception5b"],
    "inception_v3": ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"],
}

# Layers that dream well by default. Lite0's block 10 (stride 16, 112 channels) grows eyes and
# dog-like faces; its blocks 2-7 give swirls and op-art; deeper blocks mostly add noise.
# Inception v3's are the book's mixed4-mixed7 with its weights (Keras counts Mixed_5b as mixed0).
DREAM_LAYERS = {
    "efficientnet_lite0": {"block10": 1.0},
    "vgg19": {"relu4_2": 1.0},
    "googlenet": {"inception4c": 1.0},
    "inception_v3": {"Mixed_6b": 1.0, "Mixed_6c": 1.5, "Mixed_6d": 2.0, "Mixed_6e": 2.5},
}
