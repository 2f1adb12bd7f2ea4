"""How close generated images are to real ones: FID and KID with their real-vs-real baseline.

FID is biased upwards at small n, so a bare "FID = 23" means little. Every function here
also measures two *real* sets against each other at the same n: the score a perfect
generator would get with this many samples. A benchmark reports both, e.g.
    FID 23.4 at n = 2,000 (real vs real at n = 2,000: 1.9)

Fashion-MNIST: samples are compared with n random test images; the baseline compares n
random training images with the same test images (a generator learnt from the training set).
Faces: the same with the synthetic faces' standard splits (core.data.faces.face_split):
samples against n "test" faces, baseline n "train" faces against the same "test" faces.

A figure measured on one feature network alone can be an artefact of that network, so benchmarks
also measure on ImageNet EfficientNet-Lite0 (lite0_features) and compare_sets scores any sets of
images, with any feature function, against real test images and the real-vs-real baseline.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from core.metrics.classifiers import face_features, fashion_features, to_unit_range
from core.metrics.fid import fid, kid
from core.runtime import make_generator

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def compare(sample_feats: torch.Tensor, real_feats: torch.Tensor, seed: int = 0) -> dict:
    """FID and KID (mean and std over subsets) of two feature sets, as plain floats."""
    k = kid(sample_feats, real_feats, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
            generator=make_generator(seed))
    return {"fid": round(fid(sample_feats, real_feats), 4), "kid_mean": round(k.mean, 6),
            "kid_std": round(k.std, 6), "kid_subset_size": k.subset_size}


def _random_rows(n_total: int, n: int, seed: int) -> torch.Tensor:
    if not 2 <= n <= n_total:
        raise ValueError(f"n must be between 2 and {n_total}, got {n}.")
    return torch.randperm(n_total, generator=make_generator(seed))[:n]


def fashion_real_images(split: str, n: int, seed: int = 0) -> torch.Tensor:
    """n random real Fashion-MNIST images of a split (uint8 [n, 28, 28]); the same for the same seed."""
    from core.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist(split)
    return images[_random_rows(len(images), n, seed)]


@functools.lru_cache(maxsize=8)
def fashion_real_features(split: str, n: int, seed: int = 0) -> torch.Tensor:
    """Features of fashion_real_images(split, n, seed) (cached: several benchmarks use them)."""
    return fashion_features(fashion_real_images(split, n, seed), value_range=(0, 255))


def fashion_baseline(n: int, seed: int = 0) -> dict:
    """Real vs real: n training images against n test images (the floor a generator is compared with)."""
    return compare(fashion_real_features("train", n, seed), fashion_real_features("test", n, seed), seed)


def fashion_quality(samples: torch.Tensor, value_range, seed: int = 0) -> dict:
    """FID/KID of generated clothes against as many real test images, plus the real baseline.

    samples: [N, 1, 32, 32] / [N, 1, 28, 28] (or without the channel axis) in `value_range`.
    Returns {"n", "fid", "kid_mean", "kid_std", "real_fid", "real_kid_mean", "real_kid_std", ...}.
    """
    n = len(samples)
    scores = compare(fashion_features(samples, value_range), fashion_real_features("test", n, seed), seed)
    baseline = fashion_baseline(n, seed)
    return {"n": n, **scores, **{f"real_{k}": v for k, v in baseline.items() if k != "kid_subset_size"}}


@functools.lru_cache(maxsize=8)
def face_real_features(split: str, n: int, size: int = 64) -> torch.Tensor:
    """Features of the first n synthetic faces of a split, rendered at `size` pixels."""
    from core.data.faces import face_split

    return face_features(face_split(split, n, size=size).images, value_range=(0, 1))


def face_baseline(n: int, size: int = 64, seed: int = 0) -> dict:
    """Real vs real for faces: n train-split faces against n test-split faces at `size` pixels."""
    return compare(face_real_features("train", n, size), face_real_features("test", n, size), seed)


def face_quality(samples: torch.Tensor, value_range=(0, 1), seed: int = 0) -> dict:
    """FID/KID of generated faces [N, 3, H, H] against N real test faces at the same H, plus baseline.

    The real faces are drawn at the samples' resolution, so a 32-px model is not penalised
    for blur that only comes from its resolution.
    """
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"Face samples must be [N, 3, H, H], got shape {tuple(samples.shape)}.")
    n, size = len(samples), samples.shape[-1]
    scores = compare(face_features(samples, value_range), face_real_features("test", n, size), seed)
    baseline = face_baseline(n, size, seed)
    return {"n": n, "size": size, **scores,
            **{f"real_{k}": v for k, v in baseline.items() if k != "kid_subset_size"}}


def lite0_features(images: torch.Tensor, value_range, size: int = 64, batch: int = 250) -> torch.Tensor:
    """ImageNet EfficientNet-Lite0's head activations [N, 1280], averaged over positions (the analogue of
    Inception's pool3 features in the original FID): a feature network that never saw the data, beside
    the project's own classifiers. Grey [N, 1, H, W] or colour [N, 3, H, W] images in `value_range`,
    enlarged bilinearly to size x size (64: the head map is then 2x2); grey is copied to the three colours."""
    from core.backbones import load_backbone

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"EfficientNet-Lite0 features need [N, 1, H, W] or [N, 3, H, W] images, "
                         f"got shape {tuple(images.shape)}.")
    # Loaded outside no_grad/inference mode: the backbone is cached and shared with code that
    # differentiates through it (core.vae.feature_loss).
    backbone = load_backbone("efficientnet_lite0")
    device = backbone.mean.device
    out = []
    with torch.no_grad():
        for chunk in images.split(batch):
            x = F.interpolate(to_unit_range(chunk, value_range), size=(size, size), mode="bilinear",
                              align_corners=False).clamp(0, 1)
            out.append(backbone(x.expand(-1, 3, -1, -1).to(device), ["head"])["head"].float().mean(dim=(2, 3)).cpu())
    return torch.cat(out)


def compare_sets(feature_fn, sets: dict[str, torch.Tensor], real_test: torch.Tensor, real_train: torch.Tensor) -> dict:
    """FID/KID and improved precision/recall (k = 3) of each set's features against the real test
    images', and "real": the real training images against the same test images, at the same n (what
    a perfect model scores). `feature_fn` maps a set of images to [N, dim] features."""
    from core.metrics.precision_recall import precision_recall

    test_feats = feature_fn(real_test)

    def scores(images: torch.Tensor) -> dict:
        feats = feature_fn(images)
        pr = precision_recall(test_feats, feats)
        return {**compare(feats, test_feats), "precision": round(pr.precision, 4), "recall": round(pr.recall, 4)}

    result = {key: scores(images) for key, images in sets.items()}
    result["real"] = scores(real_train)
    return result


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] images, edges reflected: a calibrated way to damage
    real images and see how far FID/KID move (bench.fid_baseline, tests)."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).to(images.dtype)
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
