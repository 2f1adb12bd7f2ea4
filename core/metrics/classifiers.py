"""Feature networks for sample quality, trained by this project (no Inception download).

FID/KID need a network that maps an image to a vector in which "looks alike" means "lies
close". The usual choice, Inception v3 on ImageNet, cannot be downloaded here and knows
nothing about 32-px clothes, so GenLab trains two small classifiers and uses the vector
just before their output layer (the penultimate features):

- FashionClassifier: 10 Fashion-MNIST classes, 32x32 grey images -> 128-d features.
- FashionResNet: a second, independent judge of the same clothes: residual blocks and global
  average pooling (no max-pool stages, no dense bottleneck) -> 256-d features, trained with
  another seed and another augmentation (shifts of 2 px, flips, random erasing). A ranking of
  generators that holds on both networks (and on ImageNet EfficientNet-Lite0) is not an
  artefact of one network (core.metrics.quality.JUDGES).
- FaceAttributeClassifier: one yes/no head per attribute of the synthetic faces
  (core.data.faces.FACE_ATTRIBUTES), 64x64 colour images -> 128-d features. It also scores
  attributes, e.g. "how much did adding the smile vector make the face smile?".

Value range: generators output [-1, 1] (tanh), VAEs [0, 1] (sigmoid), so every function
that takes images also takes `value_range=(low, high)` saying which. It is an explicit
argument, not a guess from the pixel values, because a dark [0, 1] image and a [-1, 1]
image can look the same to a heuristic. Values well outside the stated range raise a
ValueError, which catches the common mistake of stating (0, 1) for [-1, 1] images.

Training (the shipped checkpoints' cards hold the exact commands):
    python -m core.train classifier --dataset fashion --epochs 8 --shift 1 --label-smoothing 0 --threads 1
    python -m core.train classifier --dataset fashion --arch resnet --seed 7 --epochs 5 --shift 2 --erase 0.5 --threads 1
        # the second judge: writes fashion_mnist_resnet
    python -m core.train classifier --dataset faces --train-faces 16000 --epochs 5 --threads 1
    python -m core.train classifier --dataset fashion --init-from assets/checkpoints/classifier/fashion_mnist.pt \
        --adversarial-epsilon 8/255 --pgd-steps 7 --epochs 3 --lr 1e-3 --shift 1 --label-smoothing 0 --threads 1
        # adversarial fine-tuning (core.adversarial): writes fashion_mnist_robust, never the FID network
    torchrun --nproc_per_node=2 -m core.train classifier --dataset fashion   # each step's batch split in two
Fashion-MNIST: 5,000 training images are held out (--validation) and watched each epoch; every choice
(such as the number of epochs) is made on them, and the test set is measured once, at the end.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoints import build_model, command_history, load_checkpoint, load_shipped, start_from
from core.registry import shipped_path
from core.runtime import make_generator

TECHNIQUE = "classifier"
FASHION_NAME = "fashion_mnist"
ROBUST_NAME = "fashion_mnist_robust"  # adversarially trained (core.adversarial); FID/KID keep FASHION_NAME
RESNET_NAME = "fashion_mnist_resnet"  # the second Fashion-MNIST judge (another architecture, seed, augmentation)
FACES_NAME = "face_attributes"
FEATURE_BATCH = 500  # images per forward pass when extracting features
VALIDATION_SEED = 28  # which Fashion-MNIST train images are held out for validation


# --- networks ----------------------------------------------------------------------

def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """conv 3x3 -> batch norm -> ReLU -> halve the resolution."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class ConvTrunk(nn.Module):
    """Convolution stages, then one fully connected layer whose ReLU output is the feature vector."""

    def __init__(self, in_channels: int, channels: list[int], image_size: int, feature_dim: int):
        super().__init__()
        widths = [in_channels, *channels]
        self.stages = nn.Sequential(*[_stage(a, b) for a, b in zip(widths, widths[1:])])
        side = image_size // 2 ** len(channels)
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * side * side, feature_dim),
                                     nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(x))


@dataclass
class FashionClassifierConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3
    image_size: int = 32


class FashionClassifier(nn.Module):
    """Input [N, 1, 32, 32] in [0, 1] (Fashion-MNIST zero-padded from 28). Output: class logits."""

    def __init__(self, cfg: FashionClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = ConvTrunk(1, cfg.channels, cfg.image_size, cfg.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@dataclass
class FashionResNetConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # stem, then one block per stride-2 stage
    feature_dim: int = 256
    num_classes: int = 10
    dropout: float = 0.2
    image_size: int = 32


class _Residual(nn.Module):
    """Basic residual block (He et al. 2016): two 3x3 convolutions, the first with stride 2, beside a
    strided 1x1 shortcut; the resolution halves by stride, not by max-pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class FashionResNet(nn.Module):
    """The second Fashion-MNIST judge. Input [N, 1, 32, 32] in [0, 1], as FashionClassifier's.

    A stride-1 stem, residual blocks that halve the resolution (32 -> 16 -> 8 -> 4), a 1x1 convolution
    to feature_dim channels and global average pooling: the feature vector is the per-channel mean
    over positions (after ReLU), not the output of a dense layer on the flattened map."""

    def __init__(self, cfg: FashionResNetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_Residual(a, b) for a, b in zip(w, w[1:])])
        self.expand = nn.Sequential(nn.Conv2d(w[-1], cfg.feature_dim, 1, bias=False), nn.BatchNorm2d(cfg.feature_dim),
                                    nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.stem(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


# Fashion-MNIST judges by --arch: (shipped name, network, config)
FASHION_ARCHS = {"convnet": (FASHION_NAME, FashionClassifier, FashionClassifierConfig),
                 "resnet": (RESNET_NAME, FashionResNet, FashionResNetConfig)}


@dataclass
class FaceClassifierConfig:
    attributes: list[str] = field(default_factory=list)
    # Narrow at full resolution, where convolutions cost the most: trains on a laptop CPU.
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    feature_dim: int = 128
    dropout: float = 0.3
    image_size: int = 64


class FaceAttributeClassifier(nn.Module):
    """Input [N, 3, 64, 64] in [0, 1]. Output: logits [N, len(attributes)], one head per attribute."""

    def __init__(self, cfg: FaceClassifierConfig):
        super().__init__()
        if not cfg.attributes:
            raise ValueError("FaceClassifierConfig needs the list of attribute names.")
        self.cfg = cfg
        self.trunk = ConvTrunk(3, cfg.channels, cfg.image_size, cfg.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.feature_dim, 1) for name in cfg.attributes})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.features(x))
        return torch.cat([self.heads[name](h) for name in self.cfg.attributes], dim=1)


# --- turning caller images into network input -------------------------------------

def to_unit_range(images: torch.Tensor, value_range) -> torch.Tensor:
    """Map images whose pixels lie in `value_range` = (low, high) to float [0, 1]."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a pair (low, high) such as (0, 1) or (-1, 1), "
                         f"not {value_range!r}.") from None
    if not high > low:
        raise ValueError(f"value_range {value_range!r}: high must be above low.")
    x = torch.as_tensor(images).float()
    if x.numel() == 0:
        raise ValueError("No images were given.")
    if not torch.isfinite(x).all():
        raise ValueError("The images contain NaN or infinite values.")
    slack = 0.05 * (high - low)  # samplers overshoot a little; a wrong stated range overshoots a lot
    seen_low, seen_high = float(x.min()), float(x.max())
    if seen_low < low - slack or seen_high > high + slack:
        raise ValueError(f"The images have values in [{seen_low:.3g}, {seen_high:.3g}], outside the stated "
                         f"value_range ({low:g}, {high:g}). Pass the range the images are really in.")
    return ((x - low) / (high - low)).clamp(0, 1)


def fashion_input(images: torch.Tensor, value_range) -> torch.Tensor:
    """[N, 28, 28], [N, 1, 28, 28], [N, 32, 32] or [N, 1, 32, 32] -> [N, 1, 32, 32] in [0, 1]."""
    x = to_unit_range(images, value_range)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2] or x.shape[-1] not in (28, 32):
        raise ValueError(f"Fashion-MNIST features need grey 28x28 or 32x32 images ([N, 1, H, W] or "
                         f"[N, H, W]), got shape {tuple(images.shape)}.")
    if x.shape[-1] == 28:  # zero-pad like core.data.fashion_mnist.to_float: the background is black
        x = F.pad(x, (2, 2, 2, 2))
    return x


def face_input(images: torch.Tensor, value_range, size: int = 64) -> torch.Tensor:
    """[N, 3, H, H] colour images -> [N, 3, 64, 64] in [0, 1] (other sizes are resized)."""
    x = to_unit_range(images, value_range)
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Face features need square colour images [N, 3, H, H], got shape {tuple(images.shape)}.")
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x


@torch.inference_mode()
def _batched(fn, x: torch.Tensor, device) -> torch.Tensor:
    return torch.cat([fn(chunk.to(device)).float().cpu() for chunk in x.split(FEATURE_BATCH)])


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- shipped models ---------------------------------------------------------------

# Features are computed in float32 on every device: FID/KID compare numbers across machines, and bf16
# would move them by more than the differences they are used to tell apart.

@functools.lru_cache(maxsize=None)
def load_fashion_classifier(path=None) -> FashionClassifier:
    """The shipped Fashion-MNIST classifier (or the checkpoint at `path`), in eval mode, on the app's
    device, cached (the feature functions move images there and the results back)."""
    from core.runtime import app_device

    ckpt = load_checkpoint(path) if path else load_shipped(TECHNIQUE, FASHION_NAME)
    return build_model(ckpt, FashionClassifier, FashionClassifierConfig).to(app_device())


@functools.lru_cache(maxsize=None)
def load_fashion_resnet(path=None) -> FashionResNet:
    """The shipped second Fashion-MNIST judge (or the checkpoint at `path`), in eval mode, on the app's
    device, cached. fashion_features(images, value_range, model=load_fashion_resnet()) gives its features."""
    from core.runtime import app_device

    ckpt = load_checkpoint(path) if path else load_shipped(TECHNIQUE, RESNET_NAME)
    return build_model(ckpt, FashionResNet, FashionResNetConfig).to(app_device())


@functools.lru_cache(maxsize=None)
def load_face_classifier(path=None, size: int = 64) -> FaceAttributeClassifier:
    """The shipped face-attribute classifier (or the checkpoint at `path`), in eval mode, on the app's
    device, cached. `size` 32 is the one trained on faces drawn at 32x32: it judges 32-pixel models,
    whose glasses and mouths the 64-pixel one cannot see once upsampled."""
    from core.runtime import app_device

    ckpt = load_checkpoint(path) if path else load_shipped(TECHNIQUE, _faces_name(size))
    return build_model(ckpt, FaceAttributeClassifier, FaceClassifierConfig).to(app_device())


def fashion_features(images: torch.Tensor, value_range, model: nn.Module | None = None) -> torch.Tensor:
    """Penultimate features of clothes images, for FID/KID: [N, 128] with the shipped classifier (the
    default), [N, 256] with load_fashion_resnet() (any network with a .features method)."""
    model = model or load_fashion_classifier()
    return _batched(model.features, fashion_input(images, value_range), _device_of(model))


def fashion_probabilities(images: torch.Tensor, value_range, model: nn.Module | None = None) -> torch.Tensor:
    """Class probabilities [N, 10] (order: core.data.fashion_mnist.CLASS_NAMES)."""
    model = model or load_fashion_classifier()
    return _batched(lambda x: model(x).softmax(-1), fashion_input(images, value_range), _device_of(model))


def face_features(images: torch.Tensor, value_range=(0, 1), model: FaceAttributeClassifier | None = None) -> torch.Tensor:
    """Penultimate features [N, 128] of face images, for FID/KID. Faces are [0, 1] unless stated."""
    model = model or load_face_classifier()
    return _batched(model.features, face_input(images, value_range, model.cfg.image_size), _device_of(model))


def face_attributes(images: torch.Tensor, value_range=(0, 1),
                    model: FaceAttributeClassifier | None = None) -> dict[str, torch.Tensor]:
    """Probability [N] that each attribute is present, keyed by attribute name."""
    model = model or load_face_classifier()
    probs = _batched(lambda x: model(x).sigmoid(), face_input(images, value_range, model.cfg.image_size),
                     _device_of(model))
    return {name: probs[:, i] for i, name in enumerate(model.cfg.attributes)}


# --- training ------------------------------------------------------------------------

def _faces_name(size: int) -> str:
    return FACES_NAME if size == 64 else f"{FACES_NAME}{size}"


def add_train_arguments(parser) -> None:
    parser.add_argument("--dataset", choices=["fashion", "faces"], default="fashion",
                        help="fashion: Fashion-MNIST classes; faces: synthetic face attributes")
    parser.add_argument("--epochs", type=int, default=None, help="default: 5 (fashion), 5 (faces)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--shift", type=int, default=2, help="fashion: random shifts of up to this many pixels")
    parser.add_argument("--label-smoothing", type=float, default=0.05, help="fashion: cross-entropy label smoothing")
    parser.add_argument("--arch", choices=sorted(FASHION_ARCHS), default="convnet",
                        help=f"fashion: convnet (the first judge, writes {FASHION_NAME}) or resnet (residual blocks "
                             f"and global average pooling, the second judge, writes {RESNET_NAME})")
    parser.add_argument("--erase", type=_fraction, default=0.0,
                        help="fashion: random erasing (Zhong et al. 2020): the share of training images in which a "
                             "random rectangle (2-20%% of the image) is filled with one random grey (default 0: off)")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (fine-tuning); its card is kept in the new card")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: search the usual places)")
    parser.add_argument("--validation", type=int, default=5000,
                        help="fashion: train images held out to watch each epoch (the test set is measured once, at the end)")
    parser.add_argument("--adversarial-epsilon", type=_fraction, default=0.0,
                        help="fashion: adversarial training (Madry et al. 2018): train on PGD images within this "
                             "L-infinity distance, e.g. 8/255 (default 0: off); writes fashion_mnist_robust")
    parser.add_argument("--pgd-steps", type=int, default=7, help="fashion: PGD steps per adversarial batch")
    parser.add_argument("--adversarial-fraction", type=_fraction, default=1.0,
                        help="fashion: share of each batch replaced by its PGD images (1: all, as Madry et al.)")
    parser.add_argument("--train-faces", type=int, default=16000, help="synthetic faces to train on (train split)")
    parser.add_argument("--test-faces", type=int, default=2000, help="faces to measure on (validation split)")
    parser.add_argument("--size", type=int, default=64, help="faces: drawn at this size (32 writes face_attributes32, "
                                                               "the judge of 32-pixel face models)")


def _fraction(text: str) -> float:
    """A number as a person writes ε: 0.0314 or 8/255."""
    import argparse

    numerator, _, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as 8/255") from None


def _augment_clothes(x: torch.Tensor, generator: torch.Generator, shift: int) -> torch.Tensor:
    """Random left-right flips (a mirrored shirt is still a shirt) and shifts of up to `shift` px."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift == 0:
        return x
    padded = F.pad(x, (shift, shift, shift, shift))
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(x)), generator=generator)
    side = x.shape[-1]
    return torch.stack([padded[i, :, dy[i]:dy[i] + side, dx[i]:dx[i] + side] for i in range(len(x))])


def _erase(x: torch.Tensor, generator: torch.Generator, share: float) -> torch.Tensor:
    """Random erasing: in about `share` of the images one rectangle of 2-20 % of the image area, with an
    aspect ratio between 1/3 and 3, is filled with a single random grey level in [0, 1]."""
    n, side = len(x), x.shape[-1]
    apply, area, log_aspect, top, left, grey = torch.rand(6, n, generator=generator)
    area = (0.02 + 0.18 * area) * side * side
    aspect = torch.exp((2 * log_aspect - 1) * math.log(3))
    h = (area * aspect).sqrt().round().clamp(1, side)
    w = (area / aspect).sqrt().round().clamp(1, side)
    top, left = (top * (side - h + 1)).floor(), (left * (side - w + 1)).floor()
    rows = torch.arange(side).view(1, side, 1)
    cols = torch.arange(side).view(1, 1, side)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)) & (apply < share).view(-1, 1, 1))
    return torch.where(inside[:, None], grey.view(-1, 1, 1, 1).to(x.dtype), x)


@torch.inference_mode()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> torch.Tensor:
    """Fashion: fraction of correct classes (scalar). Faces: per-attribute fraction correct [A]."""
    model.eval()
    logits = _batched(model, x, device)
    model.train()
    if y.dim() == 1:
        return (logits.argmax(-1) == y).float().mean()
    return ((logits > 0) == y.bool()).float().mean(0)


def _fit(run, model, args, *, train_x, train_y, val_x, val_y, loss_fn, augment, init=None,
         perturb=None) -> list[dict]:
    """Shared loop: AdamW with a one-cycle schedule, per-epoch validation accuracy, resumable state.
    Returns the history, one entry per finished epoch.

    Each epoch's order depends only on (seed, epoch), so a resumed run sees the same batches, on any
    number of processes: process r of N takes every N-th image of that order (torch's
    DistributedSampler), so the N processes' shares of a step make up the one-process batch.
    `init` (from --init-from) is kept in the resume state for the card. `perturb(images, labels)`, if
    given, changes each augmented batch before the step (adversarial training).
    """

    network = run.wrap(model)
    model.train()
    steps_per_epoch = max(1, len(train_x) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                   total_steps=args.epochs * steps_per_epoch)
    progress = {"epoch": 0, "batch": 0, "history": [], "loss_sum": 0.0}
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        schedule.load_state_dict(run.resumed["schedule"])
        progress.update(run.resumed["progress"])
    mine = run.shard(len(train_x), "images")  # positions in each epoch's order
    augment_generator = run.generator("augmentation")

    def steps():
        while progress["epoch"] < args.epochs:
            order = torch.randperm(len(train_x), generator=make_generator(args.seed * 1000 + progress["epoch"]))[mine]
            for batch in range(progress["batch"], steps_per_epoch):
                idx = order[batch * run.batch:(batch + 1) * run.batch]
                x = augment(train_x[idx].float() / 255, augment_generator).to(run.device)
                y = train_y[idx].to(run.device)
                if perturb is not None:
                    x = perturb(x, y)
                with run.autocast():
                    loss = loss_fn(network(x).float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                progress["batch"], progress["loss_sum"] = batch + 1, progress["loss_sum"] + loss.item()
                yield {"step": progress["epoch"] * steps_per_epoch + batch + 1, "loss": loss.item()}
            # Every process measures the same model (rank 0's BatchNorm statistics) on the same images.
            run.sync_buffers(model)
            accuracy = _accuracy(model, val_x.float() / 255, val_y, run.device)
            progress["history"].append({"epoch": progress["epoch"] + 1,
                                        "train_loss": round(run.mean(progress["loss_sum"] / steps_per_epoch), 4),
                                        "validation_accuracy": [round(a, 4) for a in accuracy.tolist()]
                                        if accuracy.dim() else round(float(accuracy), 4)})
            run.log(f"epoch {progress['epoch'] + 1}: {progress['history'][-1]}")
            progress.update(epoch=progress["epoch"] + 1, batch=0, loss_sum=0.0)

    def save():
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "progress": progress, "init": init})

    for _ in run.loop(steps(), save, total=args.epochs * steps_per_epoch, desc=f"{args.dataset} classifier"):
        pass
    run.sync_buffers(model)
    return progress["history"]


def train_main(args):
    args.epochs = args.epochs or 5
    if args.dataset == "faces" and getattr(args, "adversarial_epsilon", 0):
        raise ValueError("Adversarial training (--adversarial-epsilon) is for the Fashion-MNIST classifier only.")
    if args.dataset == "faces" and (getattr(args, "arch", "convnet") != "convnet" or getattr(args, "erase", 0)):
        raise ValueError("--arch and --erase are for the Fashion-MNIST judges only (--dataset fashion).")
    return train_fashion(args) if args.dataset == "fashion" else train_faces(args)


@torch.no_grad()
def _as_shipped(model: nn.Module) -> nn.Module:
    """Round the weights to float16 as save_checkpoint(half=True) stores them, so the figures on
    the card are those of the model that is shipped."""
    for value in model.state_dict().values():
        if value.is_floating_point():
            value.copy_(value.half().float())
    return model


def _start_from(run, args, model_cls, cfg):
    """A fresh model, or with --init-from one holding that checkpoint's weights (to fine-tune it)
    and the record make_card keeps of it (a resumed run keeps the record it saved)."""
    model = model_cls(cfg)
    if run.resumed:
        return model, run.resumed.get("init")
    if not args.init_from:
        return model, None
    weights, init = start_from(args.init_from, asdict(cfg), "classifier", ("epochs", "metrics"))
    model.load_state_dict(weights)
    run.commands = command_history(args, init)  # the checkpoint's commands head this run's
    return model, init


def validation_split(n_train: int, n_validation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a training set of n_train images.

    The held-out images are drawn with a fixed seed, not --seed, so every run is watched on the
    same images and none of them is ever trained on."""
    if not 0 < n_validation < n_train:
        raise ValueError(f"--validation must hold out between 1 and {n_train - 1} of the {n_train} "
                         f"training images, not {n_validation}.")
    order = torch.randperm(n_train, generator=make_generator(VALIDATION_SEED))
    return order[n_validation:].sort().values, order[:n_validation].sort().values


def train_fashion(args):
    from core.data.fashion_mnist import load_fashion_mnist, provenance, to_float
    from core.engine import TrainingRun

    adversarial = _check_adversarial(args)
    arch = getattr(args, "arch", "convnet")
    name, model_cls, config_cls = FASHION_ARCHS[arch]
    if adversarial and arch != "convnet":
        raise ValueError("Adversarial training (--adversarial-epsilon) fine-tunes the convnet classifier; "
                         "leave --arch out.")
    if not 0 <= getattr(args, "erase", 0.0) <= 1:
        raise ValueError(f"--erase is the share of images erased: between 0 and 1, not {args.erase}.")
    out = Path(args.out) if args.out else shipped_path(TECHNIQUE, ROBUST_NAME if adversarial else name)
    judges = [shipped_path(TECHNIQUE, judge).resolve() for judge, _, _ in FASHION_ARCHS.values()]
    if adversarial and out.resolve() in judges:
        raise ValueError(f"Adversarial training must not overwrite {out.name}: FID/KID measure with it. "
                         f"Leave --out out (it writes {ROBUST_NAME}.pt) or choose another path.")
    run = TrainingRun(args, out, global_batch=args.batch_size)  # seeds the weight initialisation
    all_u8, all_y = load_fashion_mnist("train", args.data_dir)
    test_u8, test_y = load_fashion_mnist("test", args.data_dir)
    keep, held_out = validation_split(len(all_u8), args.validation)
    # Keep the padded images as uint8 (a quarter of the memory); _fit divides by 255 per batch.
    all_x, test_x = (to_float(x).mul(255).round().to(torch.uint8) for x in (all_u8, test_u8))
    train_x, train_y, val_x, val_y = all_x[keep], all_y[keep], all_x[held_out], all_y[held_out]
    model, init = _start_from(run, args, model_cls, config_cls())
    cfg = model.cfg
    perturb = _pgd_batches(run, model, args) if adversarial else None
    erase = getattr(args, "erase", 0.0)

    def augment(x, generator):
        x = _augment_clothes(x, generator, args.shift)
        return _erase(x, generator, erase) if erase else x  # without --erase the stream is the convnet's as before

    history = _fit(run, model, args, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
                   loss_fn=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=args.label_smoothing),
                   augment=augment, init=init, perturb=perturb)
    _as_shipped(model)
    # Every process measures (the same numbers); rank 0 writes.
    validation = float(_accuracy(model, val_x.float() / 255, val_y, run.device))
    # The test set is measured here once, after training: nothing was chosen by looking at it.
    accuracy = float(_accuracy(model, test_x.float() / 255, test_y, run.device))
    metrics = {"validation_accuracy": round(validation, 4), "test_accuracy": round(accuracy, 4)}
    robustness = {}
    if adversarial:
        metrics["pgd_test_accuracy"], robustness = _pgd_accuracy(model, args, test_x, test_y, run.device)
    card = run.card(model=model,
                    data=f"Fashion-MNIST train: {len(train_x)} images trained on, {len(val_x)} held out for "
                         f"validation (fixed seed {VALIDATION_SEED}); test ({len(test_x)}) measured once at the end",
                    data_files=[provenance("train", args.data_dir), provenance("test", args.data_dir)],
                    metrics=metrics, **robustness,
                    epochs=len(history), batch_size=args.batch_size, lr=args.lr, bf16_autocast=run.bf16,
                    train_images=len(train_x), validation_images=len(val_x), test_images=len(test_x),
                    features=f"{cfg.feature_dim}-d penultimate layer (after ReLU), used for FID/KID"
                    if arch == "convnet" else f"{cfg.feature_dim}-d global average of the last feature map (after "
                                              f"ReLU), the second Fashion-MNIST judge of FID/KID",
                    shift=args.shift, label_smoothing=args.label_smoothing,
                    **({"arch": arch, "architecture": _ARCHITECTURE} if arch != "convnet" else {}),
                    **({"erase": erase} if erase else {}),
                    input="[N, 1, 32, 32] in [0, 1]; 28x28 images are zero-padded to 32",
                    curves=history, init=init)
    path = run.save_model(model, cfg, card, half=True)
    run.finish()
    return path


_ARCHITECTURE = ("FashionResNet: 3x3 stem, one residual block per stride-2 stage (32 -> 16 -> 8 -> 4 px), 1x1 "
                 "convolution, global average pooling; no max-pool stages, no dense bottleneck")


def _check_adversarial(args) -> bool:
    """Is this an adversarial training run? Its settings are checked before any data is read."""
    from core.adversarial import check_settings

    if not args.adversarial_epsilon:
        return False
    check_settings("pgd", args.adversarial_epsilon, None, args.pgd_steps)
    if not 0 < args.adversarial_fraction <= 1:
        raise ValueError(f"--adversarial-fraction must be above 0 and at most 1, not {args.adversarial_fraction}.")
    return True


def _pgd_batches(run, model, args):
    """Madry et al.'s training batches: each batch's first images (--adversarial-fraction of them,
    all by default) replaced by PGD images made against the model as it is at this step, from a
    random start drawn from this rank's own (resumable) stream."""
    from core.adversarial import adversarial_examples

    generator = run.generator("adversarial")

    def perturb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = math.ceil(args.adversarial_fraction * len(x))
        attacked = adversarial_examples(model, x[:n], y[:n], epsilon=args.adversarial_epsilon,
                                        steps=args.pgd_steps, generator=generator)
        return torch.cat([attacked, x[n:]])
    return perturb


def _pgd_accuracy(model, args, test_x, test_y, device) -> tuple[float, dict]:
    """Accuracy on the test set under a PGD attack at the training ε, with more steps than training
    used and a fixed random start (so every rank and every rerun measures the same)."""
    from core.adversarial import EVALUATION_STEPS, fashion_classifier, success_rate

    fooled = success_rate(fashion_classifier(model), test_x.float() / 255, test_y, "pgd", args.adversarial_epsilon,
                          steps=EVALUATION_STEPS, random_start=True, generator=make_generator(0))
    record = {"adversarial_training": {
        "method": "PGD adversarial training (Madry et al. 2018), core.adversarial.adversarial_examples",
        "epsilon": args.adversarial_epsilon, "pgd_steps": args.pgd_steps, "step_size": "2.5*epsilon/steps",
        "random_start": True, "fraction_of_each_batch": args.adversarial_fraction,
        "pgd_test_accuracy_attack": f"untargeted PGD, L-infinity epsilon {args.adversarial_epsilon:.4g}, "
                                    f"{EVALUATION_STEPS} steps, random start (seed 0), true labels"}}
    return round(1 - fooled, 4), record


def train_faces(args):
    from core.data.faces import FACE_ATTRIBUTES, face_split, provenance
    from core.engine import TrainingRun

    out = Path(args.out) if args.out else shipped_path(TECHNIQUE, _faces_name(args.size))
    run = TrainingRun(args, out, global_batch=args.batch_size)  # seeds the weight initialisation
    attributes = list(FACE_ATTRIBUTES)

    def as_arrays(batch):
        images = batch.images.mul(255).round().to(torch.uint8)
        labels = torch.stack([batch.labels[name].float() for name in attributes], dim=1)
        return images, labels

    # The standard splits every technique shares: train on "train", measure on "validation",
    # and leave "test" untouched for the FID/KID references (core.metrics.quality).
    train_x, train_y = as_arrays(face_split("train", args.train_faces, size=args.size))
    test_x, test_y = as_arrays(face_split("validation", args.test_faces, size=args.size))
    model, init = _start_from(run, args, FaceAttributeClassifier,
                              FaceClassifierConfig(attributes=attributes, image_size=args.size))
    cfg = model.cfg
    history = _fit(run, model, args, train_x=train_x, train_y=train_y, val_x=test_x, val_y=test_y,
                   loss_fn=F.binary_cross_entropy_with_logits, augment=lambda x, generator: x, init=init)
    per_attribute = _accuracy(_as_shipped(model), test_x.float() / 255, test_y, run.device)
    accuracy = {name: round(float(a), 4) for name, a in zip(attributes, per_attribute)}
    card = run.card(model=model,
                    data=f"synthetic faces (core.data.faces) drawn at {args.size}x{args.size}: {len(train_x)} of the "
                         f"train split, measured on {len(test_x)} of the validation split",
                    data_files=[provenance("train", args.train_faces, args.size),
                                provenance("validation", args.test_faces, args.size)],
                    metrics={"test_accuracy": accuracy, "mean_test_accuracy": round(float(per_attribute.mean()), 4),
                             "positive_rate": {name: round(float(r), 3) for name, r in zip(attributes, test_y.mean(0))}},
                    epochs=len(history), batch_size=args.batch_size, lr=args.lr, bf16_autocast=run.bf16,
                    features=f"{cfg.feature_dim}-d penultimate layer (after ReLU), used for FID/KID on faces",
                    input=f"[N, 3, {args.size}, {args.size}] in [0, 1]; other square sizes are resized",
                    curves=history, init=init)
    path = run.save_model(model, cfg, card, half=True)
    run.finish()
    return path
