import pytest
import torch

from core.metrics.precision_recall import knn_radii, precision_recall
from core.runtime import make_generator


def cloud(n, dim=8, seed=0):
    return torch.randn(n, dim, generator=make_generator(seed))


def test_identical_sets_have_full_precision_and_recall():
    real = cloud(300)
    result = precision_recall(real, real.clone(), k=3, batch=64)
    assert (result.precision, result.recall, result.k) == (1.0, 1.0, 3)


def test_duplicated_vectors_still_count_as_inside():
    # Each vector four times: every k = 3 radius is 0, and only exact duplicates are inside a ball.
    real = cloud(50).repeat(4, 1)
    assert precision_recall(real, real.flip(0), k=3).precision == 1.0
    assert precision_recall(real, real + 1e-3, k=3).precision == 0.0


def test_a_set_collapsed_onto_one_real_point_is_precise_but_covers_nothing():
    real = cloud(400)
    collapsed = real[7].repeat(400, 1)
    result = precision_recall(real, collapsed, k=3)
    assert result.precision == 1.0
    assert result.recall == pytest.approx(1 / 400)  # only the point it collapsed onto


def test_a_set_far_away_is_neither_precise_nor_covering():
    real = cloud(300)
    result = precision_recall(real, cloud(300, seed=1) + 100.0, k=3)
    assert result.precision == 0.0 and result.recall == 0.0


def test_a_narrower_set_trades_recall_for_precision():
    real = cloud(1000, dim=4)
    narrow = precision_recall(real, 0.3 * cloud(1000, dim=4, seed=1), k=3)
    wide = precision_recall(real, 3.0 * cloud(1000, dim=4, seed=2), k=3)
    assert narrow.precision > 0.9 and narrow.recall < 0.5
    assert wide.recall > 0.9 and wide.precision < 0.5


def test_a_small_example_worked_by_hand():
    # 1-D, k = 1. Real 0, 1, 3: nearest-neighbour radii 1, 1, 2. Generated 0.5, 2.5, 10: radii 2, 2, 7.5.
    real = torch.tensor([[0.0], [1.0], [3.0]])
    generated = torch.tensor([[0.5], [2.5], [10.0]])
    assert knn_radii(real, 1).tolist() == [1.0, 1.0, 4.0]  # squared
    result = precision_recall(real, generated, k=1, batch=2)
    # 0.5 is in 0's ball, 2.5 in 3's, 10 in none: 2/3. The outlier's wide ball covers all of the real set.
    assert result.precision == pytest.approx(2 / 3) and result.recall == 1.0
    swapped = precision_recall(generated, real, k=1)
    assert swapped.precision == 1.0 and swapped.recall == pytest.approx(2 / 3)
    # Real 0, 1, 2, 10, 11: radii all 1. Generated 0.2, 1.3, 5: radii 1.1, 1.1, 3.7.
    # Precision: 0.2 and 1.3 are inside, 5 is 3 from the nearest real point: 2/3.
    # Recall: 0, 1 and 2 are within 1.1 of a generated point; 10 and 11 are beyond 5's 3.7: 3/5.
    result = precision_recall(torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]]),
                              torch.tensor([[0.2], [1.3], [5.0]]), k=1)
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(3 / 5)


def test_the_answer_does_not_depend_on_the_block_size():
    real, generated = cloud(230), 1.2 * cloud(170, seed=3)
    assert precision_recall(real, generated, batch=1000) == precision_recall(real, generated, batch=17)


def test_bad_input_is_a_sentence():
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(cloud(3), cloud(10))
    with pytest.raises(ValueError, match="at least 1"):
        precision_recall(cloud(10), cloud(10), k=0)
    with pytest.raises(ValueError, match="feature sizes differ"):
        precision_recall(cloud(10, dim=4), cloud(10, dim=5))
