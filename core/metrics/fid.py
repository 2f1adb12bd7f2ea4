"""Fréchet and kernel distances between two sets of feature vectors (FID and KID).

Both compare *sets*: a feature network (core.metrics.classifiers) turns each image into a
vector, and the two sets of vectors are compared as distributions.

FID (Heusel et al., 2017) fits a Gaussian to each set and measures the Fréchet distance
between the two Gaussians:
    FID = |mu_a - mu_b|^2 + trace(S_a + S_b - 2 (S_a S_b)^(1/2)).
It is biased: with a finite n the estimate sits *above* the true value, and the excess
shrinks with n. So a FID is only comparable with another FID at the same n, which is why
every GenLab benchmark prints the real-vs-real baseline at its own n next to its figure.

KID (Binkowski et al., 2018) is the squared maximum mean discrepancy with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3. Its estimator here is unbiased (the diagonal
terms k(x_i, x_i) are left out), so two samples of one distribution average to 0 and a
single estimate may come out slightly negative. It is computed on many random subsets and
reported as mean and standard deviation over them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KID:
    mean: float
    std: float  # spread of the per-subset estimates
    subsets: int
    subset_size: int


def _as_features(feats, name: str) -> torch.Tensor:
    feats = torch.as_tensor(feats).double()
    if feats.dim() != 2:
        raise ValueError(f"{name} must be a [n, dim] matrix of feature vectors, got shape {tuple(feats.shape)}.")
    if len(feats) < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors, got {len(feats)}.")
    if not torch.isfinite(feats).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return feats


def check_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_features(a, "feats_a"), _as_features(b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]} (same feature network for both?).")
    return a, b


def gaussian_stats(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean vector and covariance matrix (float64) of a [n, dim] feature set."""
    feats = _as_features(feats, "feats")
    return feats.mean(0), torch.cov(feats.T)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(t).double() for t in (mu_a, mu_b, cov_a, cov_b))
    # trace((S_a S_b)^(1/2)) equals trace((R S_b R)^(1/2)) with R = S_a^(1/2); R S_b R is symmetric
    # positive semi-definite, so its eigenvalues are real and >= 0 up to rounding: no complex sqrtm.
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)  # rounding can leave -1e-12 for identical sets


def fid(feats_a, feats_b) -> float:
    """FID between two feature sets ([n, dim] each). Compare only with FIDs at the same n."""
    a, b = check_pair(feats_a, feats_b)
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2_from_kernels(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (one KID estimate)."""
    return _mmd2_from_kernels(_polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y))


FULL_KERNEL_MAX = 4000  # up to this many vectors per set, kid() computes each kernel matrix once


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> KID:
    """KID: unbiased MMD^2 averaged over `subsets` random subsets of `subset_size` from each set.

    subset_size is lowered to half the smaller set's size when needed. Pass a seeded `generator`
    for a reproducible figure (core.runtime.make_generator).
    """
    a, b = check_pair(feats_a, feats_b)
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}.")
    # At most half of the smaller set: subsets that each hold a whole set are all the same
    # subset, and their spread would say nothing.
    size = min(int(subset_size), max(2, min(len(a), len(b)) // 2))
    if size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}.")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    picks = [(torch.randperm(len(a), generator=generator)[:size], torch.randperm(len(b), generator=generator)[:size])
             for _ in range(subsets)]
    if max(len(a), len(b)) <= FULL_KERNEL_MAX:
        # Small sets: the subsets overlap a lot, so one kernel matrix per pair of sets, sliced
        # per subset, costs far less than recomputing 3 * subsets blocks (same numbers either way).
        k_aa, k_bb, k_ab = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
        estimates = [_mmd2_from_kernels(k_aa[i][:, i], k_bb[j][:, j], k_ab[i][:, j]) for i, j in picks]
    else:
        estimates = [mmd2_unbiased(a[i], b[j]) for i, j in picks]
    estimates = torch.tensor(estimates, dtype=torch.float64)
    std = float(estimates.std()) if subsets > 1 else 0.0
    return KID(mean=float(estimates.mean()), std=std, subsets=subsets, subset_size=size)
