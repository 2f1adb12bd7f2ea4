"""Out-of-distribution detection scored by AUROC.

A model that gives every input a score (an EBM's energy, a flow's −log p(x)) can flag inputs unlike its
training data: a high score says "not what I was trained on". The area under the ROC curve measures how
well one threshold separates the two sets, without choosing the threshold:

    AUROC = P(score(outlier) > score(inlier)) + ½ · P(tie)

1 separates them perfectly, 0.5 is a coin toss, and below 0.5 the model likes the outliers better than
its own data (a known failure of likelihood models: Nalisnick et al., 2019). This is the Mann–Whitney U
statistic divided by the number of pairs, computed from ranks, so 10,000 × 10,000 sets cost a sort.
"""
from __future__ import annotations

import torch


def auroc(inliers: torch.Tensor, outliers: torch.Tensor) -> float:
    """P(outlier scores higher than inlier), ties counted half, for two 1-D score sets."""
    inliers, outliers = torch.as_tensor(inliers, dtype=torch.float64).flatten(), \
        torch.as_tensor(outliers, dtype=torch.float64).flatten()
    if not len(inliers) or not len(outliers):
        raise ValueError("AUROC needs at least one in-distribution and one out-of-distribution score.")
    if not (torch.isfinite(inliers).all() and torch.isfinite(outliers).all()):
        raise ValueError("AUROC needs finite scores: some energies are NaN or infinite (a diverged model?).")
    scores = torch.cat([inliers, outliers])
    ranks = _average_ranks(scores)
    n_in, n_out = len(inliers), len(outliers)
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2  # pairs (inlier, outlier) the outlier wins, ties half
    return float(u / (n_in * n_out))


def _average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks 1 … N, tied values sharing the mean of their ranks."""
    order = scores.argsort()
    sorted_scores = scores[order]
    # the first and last position of each run of equal values
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = counts.cumsum(0)
    mean_rank = (ends - counts + 1 + ends).double() / 2
    ranks = torch.empty_like(scores)
    ranks[order] = mean_rank.repeat_interleave(counts)
    return ranks
