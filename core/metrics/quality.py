"""How close generated images are to real ones: FID and KID with their real-vs-real baseline.

FID is biased upwards at small n, so a bare "FID = 23" means little. Every function here
also measures two *real* sets against each other at the same n: the score a perfect
generator would get with this many samples. A benchmark reports both, e.g.
    FID 23.4 at n = 2,000 (real vs real at n = 2,000: 1.9)

Fashion-MNIST: samples are compared with n random test images; the baseline compares n
random training images with the same test images (a generator learnt from the training set).
Faces: samples are compared with n synthetic faces from a held-out seed; the baseline draws
another n faces from a different seed.
"""
from __future__ import annotations

import functools

import torch

from core.metrics.classifiers import face_features, fashion_features
from core.metrics.fid import fid, kid
from core.runtime import make_generator

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
FACE_REFERENCE_SEED = 9_000_001  # faces no model trains on (trainers use small seeds)
FACE_BASELINE_SEED = 9_000_002


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


@functools.lru_cache(maxsize=8)
def fashion_real_features(split: str, n: int, seed: int = 0) -> torch.Tensor:
    """Features of n random real Fashion-MNIST images of a split (cached: used by many benchmarks)."""
    from core.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist(split)
    rows = _random_rows(len(images), n, seed)
    return fashion_features(images[rows], value_range=(0, 255))


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
def face_real_features(n: int, seed: int, size: int = 64) -> torch.Tensor:
    """Features of n synthetic faces drawn with `seed`, rendered at `size` pixels."""
    from core.data.faces import make_faces

    images = make_faces(n, seed=seed, size=size).images
    return face_features(images, value_range=(0, 1))


def face_baseline(n: int, size: int = 64) -> dict:
    """Real vs real for faces: two independent draws of n synthetic faces at `size` pixels."""
    return compare(face_real_features(n, FACE_BASELINE_SEED, size), face_real_features(n, FACE_REFERENCE_SEED, size))


def face_quality(samples: torch.Tensor, value_range=(0, 1), seed: int = 0) -> dict:
    """FID/KID of generated faces [N, 3, H, H] against N real synthetic faces at the same H, plus baseline.

    The real faces are drawn at the samples' resolution, so a 32-px model is not penalised
    for blur that only comes from its resolution.
    """
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"Face samples must be [N, 3, H, H], got shape {tuple(samples.shape)}.")
    n, size = len(samples), samples.shape[-1]
    scores = compare(face_features(samples, value_range), face_real_features(n, FACE_REFERENCE_SEED, size), seed)
    baseline = face_baseline(n, size)
    return {"n": n, "size": size, **scores,
            **{f"real_{k}": v for k, v in baseline.items() if k != "kid_subset_size"}}
