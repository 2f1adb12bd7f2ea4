"""AUROC from ranks equals the share of (inlier, outlier) pairs the outlier wins, ties counted half."""
import pytest
import torch

from core.metrics.ood import auroc


def pairwise(inliers, outliers) -> float:
    wins = (outliers[None, :] > inliers[:, None]).double() + 0.5 * (outliers[None, :] == inliers[:, None]).double()
    return wins.mean().item()


@pytest.mark.parametrize("seed", range(3))
def test_auroc_counts_the_pairs_the_outliers_win(seed):
    gen = torch.Generator().manual_seed(seed)
    inliers = torch.randint(0, 20, (300,), generator=gen).float()  # many ties
    outliers = torch.randint(5, 30, (200,), generator=gen).float()
    assert auroc(inliers, outliers) == pytest.approx(pairwise(inliers, outliers), abs=1e-12)


def test_auroc_ends_and_middle():
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0 and auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    shifted = auroc(torch.randn(4000, generator=torch.Generator().manual_seed(0)),
                    torch.randn(4000, generator=torch.Generator().manual_seed(1)) + 1)
    assert shifted == pytest.approx(0.760, abs=0.02)  # Φ(1/√2) for unit Gaussians one apart


def test_auroc_refuses_empty_and_non_finite_scores():
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        auroc([float("nan")], [1.0])
