"""Improved precision and recall (Kynkäänniemi et al., 2019) between real and generated feature sets.

FID and KID fold two failures into one number: samples that look wrong (low fidelity) and a model
that covers only part of the data (low variety). Precision and recall separate them. Each set's
*manifold* is the union of balls around its feature vectors, each ball reaching that vector's k-th
nearest neighbour within its own set:

    precision = share of generated vectors inside the real manifold      (are the samples realistic?)
    recall    = share of real vectors inside the generated manifold      (is the data covered?)

A model collapsed onto a few good images has high precision and low recall; a blurry model that
spreads everywhere has the reverse. Both are biased by n and k like FID is by n: report the
real-vs-real figure at the same n next to them. The distance matrices are computed in row blocks,
so 5000 × 5000 sets stay within a few hundred MB.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from core.metrics.fid import check_pair

NOISE = 1e-10  # squared distances below NOISE · (|a|² + |b|²) are rounding, not distance: snapped to 0


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int

    def as_dict(self) -> dict:
        return asdict(self)


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_norms: torch.Tensor) -> torch.Tensor:
    """|a_i − b_j|² by |a|² + |b|² − 2 a·b (one matrix product), with the rounding of identical
    vectors snapped to exactly 0, so a duplicate always lies inside a zero-radius ball."""
    a_norms = a.pow(2).sum(1, keepdim=True)
    scale = a_norms + b_norms
    d2 = (scale - 2 * a @ b.T).clamp_min(0)
    return torch.where(d2 <= NOISE * scale, torch.zeros_like(d2), d2)


def knn_radii(feats: torch.Tensor, k: int, batch: int = 1000) -> torch.Tensor:
    """Squared distance from each vector to its k-th nearest neighbour in the same set (itself not counted)."""
    norms = feats.pow(2).sum(1)[None]
    # The k+1 smallest of a row include the vector itself at distance 0.
    return torch.cat([_squared_distances(chunk, feats, norms).topk(k + 1, dim=1, largest=False).values[:, k]
                      for chunk in feats.split(batch)])


def _inside(queries: torch.Tensor, refs: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    """For each query: does it lie in at least one ref's ball (|q − r|² ≤ radius²)?"""
    norms = refs.pow(2).sum(1)[None]
    return torch.cat([(_squared_distances(chunk, refs, norms) <= radii[None]).any(1) for chunk in queries.split(batch)])


def precision_recall(real_feats, generated_feats, k: int = 3, batch: int = 1000) -> PrecisionRecall:
    """Improved precision and recall of `generated_feats` against `real_feats` ([n, dim] each, any n)."""
    real, generated = check_pair(real_feats, generated_feats)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of neighbours, at least 1, not {k!r}.")
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"With k = {k} neighbours each set needs more than {k} feature vectors, "
                         f"got {len(real)} real and {len(generated)} generated.")
    precision = _inside(generated, real, knn_radii(real, k, batch), batch).double().mean()
    recall = _inside(real, generated, knn_radii(generated, k, batch), batch).double().mean()
    return PrecisionRecall(precision=float(precision), recall=float(recall), k=k)
