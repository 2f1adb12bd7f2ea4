import argparse
import struct

import numpy as np
import pytest
import torch

from core.checkpoints import load_checkpoint
from core.metrics import classifiers
from core.metrics.classifiers import fashion_features, fashion_input, load_fashion_classifier, to_unit_range
from core.metrics.fid import fid, frechet_distance, gaussian_stats, kid, mmd2_unbiased
from core.registry import shipped_path
from tests.conftest import real_fashion_test_split


def _gaussian(n, dim, seed, shift=0.0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale + shift


# --- FID ---------------------------------------------------------------------------

def test_fid_of_identical_sets_is_zero():
    a = _gaussian(300, 16, 0)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * (var_a * var_b).sqrt()).sum()
    got = frechet_distance(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b))
    assert got == pytest.approx(float(expected), rel=1e-9)  # 1 + 4 + 0 + 4 + 1 + 0 = 10


def test_fid_is_unchanged_by_rotating_the_feature_space():
    # Rotation makes the covariances non-diagonal: this exercises the matrix square root.
    a, b = _gaussian(400, 6, 1), _gaussian(400, 6, 2, shift=0.5, scale=torch.linspace(0.5, 2, 6).double())
    rotation, _ = torch.linalg.qr(_gaussian(6, 6, 3))
    assert fid(a @ rotation, b @ rotation) == pytest.approx(fid(a, b), rel=1e-7)
    assert fid(a, b) > 1.0


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    x = _gaussian(50, 3, 4)
    mu, cov = gaussian_stats(x)
    assert torch.allclose(mu, x.mean(0))
    assert torch.allclose(cov, (x - mu).T @ (x - mu) / 49)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(5), "matrix"), (torch.zeros(1, 4), "at least 2"), (torch.full((3, 4), float("nan")), "NaN")])
def test_fid_refuses_bad_feature_sets(bad, message):
    with pytest.raises(ValueError, match=message):
        fid(bad, _gaussian(3, 4, 0))


def test_fid_refuses_different_feature_sizes():
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid(_gaussian(5, 4, 0), _gaussian(5, 3, 0))


# --- KID ---------------------------------------------------------------------------

def test_mmd2_unbiased_matches_the_formula_written_out():
    x, y = _gaussian(5, 3, 5), _gaussian(4, 3, 6, shift=1.0)
    k = lambda p, q: (float(p @ q) / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    # Averaged over many small independent draws, the estimate centres on 0, whereas the biased
    # estimator (which keeps the diagonal terms k(x_i, x_i)) sits clearly above 0.
    def biased(x, y):
        k = lambda p, q: (p @ q.T / p.shape[1] + 1) ** 3  # noqa: E731
        return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())

    pairs = [(_gaussian(20, 8, 2 * i), _gaussian(20, 8, 2 * i + 1)) for i in range(300)]
    unbiased = torch.tensor([mmd2_unbiased(x, y) for x, y in pairs])
    standard_error = unbiased.std() / len(pairs) ** 0.5
    assert abs(unbiased.mean()) < 3 * standard_error
    assert (unbiased < 0).any()  # an unbiased estimate of 0 must sometimes be negative
    assert torch.tensor([biased(x, y) for x, y in pairs]).mean() > 10 * standard_error


def test_kid_separates_distributions_and_is_reproducible():
    a, b = _gaussian(400, 8, 7), _gaussian(400, 8, 8, shift=0.5)
    first = kid(a, b, subsets=20, subset_size=200, generator=torch.Generator().manual_seed(1))
    again = kid(a, b, subsets=20, subset_size=200, generator=torch.Generator().manual_seed(1))
    assert first == again
    assert first.mean > 3 * first.std > 0
    same = kid(a, _gaussian(400, 8, 9), subsets=20, subset_size=200)
    assert abs(same.mean) < first.mean / 10


def test_kid_gives_the_same_numbers_with_and_without_the_full_kernel_matrices(monkeypatch):
    from core.metrics import fid as fid_module

    a, b = _gaussian(60, 5, 10), _gaussian(50, 5, 11, shift=0.2)
    sliced = kid(a, b, subsets=5, subset_size=20, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(fid_module, "FULL_KERNEL_MAX", 10)
    direct = kid(a, b, subsets=5, subset_size=20, generator=torch.Generator().manual_seed(3))
    assert sliced.mean == pytest.approx(direct.mean, rel=1e-9) and sliced.std == pytest.approx(direct.std, rel=1e-9)


def test_kid_lowers_subset_size_to_half_the_smaller_set():
    result = kid(_gaussian(30, 4, 0), _gaussian(50, 4, 1), subsets=3, subset_size=1000)
    assert result.subset_size == 15 and result.subsets == 3 and result.std > 0


# --- classifier input ----------------------------------------------------------------

def test_value_range_is_explicit_and_checked():
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(fashion_input(x, (0, 1)), fashion_input(x * 2 - 1, (-1, 1)), atol=1e-6)
    assert torch.allclose(fashion_input(x * 255, (0, 255)), x, atol=1e-5)
    with pytest.raises(ValueError, match="outside the stated value_range"):
        fashion_input(x * 2 - 1, (0, 1))  # [-1, 1] images announced as [0, 1]
    with pytest.raises(ValueError, match="pair"):
        to_unit_range(x, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        to_unit_range(torch.full((1, 28, 28), float("nan")), (0, 1))


def test_28_pixel_images_are_zero_padded_to_32():
    x = fashion_input(torch.ones(2, 28, 28), (0, 1))
    assert x.shape == (2, 1, 32, 32)
    assert x[:, :, 2:30, 2:30].min() == 1 and x[:, :, :2].max() == 0 and x[:, :, :, 30:].max() == 0
    assert torch.equal(fashion_input(torch.ones(2, 1, 28, 28), (0, 1)), x)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 64, 64), (2, 1, 28, 32), (28, 28)])
def test_fashion_input_refuses_other_shapes(shape):
    with pytest.raises(ValueError, match="28x28 or 32x32"):
        fashion_input(torch.zeros(shape), (0, 1))


def test_face_input_resizes_square_colour_images():
    x = classifiers.face_input(torch.rand(2, 3, 32, 32) * 2 - 1, (-1, 1))
    assert x.shape == (2, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="square colour"):
        classifiers.face_input(torch.rand(2, 1, 64, 64), (0, 1))


# --- training entry point on tiny data the test writes ---------------------------------

def _write_idx(path, array):
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.tobytes())


def _tiny_fashion(folder, n_train=96, n_test=32):
    # Two easy classes: bright top half (class 0) or bright bottom half (class 1).
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 2, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 14 * label:14 * label + 14] += 200
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


def _train_args(tmp_path, **overrides):
    parser = argparse.ArgumentParser()
    from core.train import add_common_arguments

    add_common_arguments(parser)
    classifiers.add_train_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "fashion.pt"), "--data-dir", str(tmp_path),
                              "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--validation", "16"])
    vars(args).update(overrides)
    return args


def test_fashion_training_writes_a_checkpoint_that_extracts_features(tmp_path):
    _tiny_fashion(tmp_path)
    path = classifiers.train_main(_train_args(tmp_path, epochs=2))
    ckpt = load_checkpoint(path)
    assert ckpt.card["epochs"] == 2 and len(ckpt.card["curves"]) == 2
    assert ckpt.card["metrics"]["test_accuracy"] > 0.8  # the two classes are trivially separable
    model = load_fashion_classifier(str(path))
    feats = fashion_features(torch.rand(5, 28, 28), (0, 1), model=model)
    assert feats.shape == (5, 128) and (feats >= 0).all()


def test_fashion_training_resumes_where_it_stopped(tmp_path):
    _tiny_fashion(tmp_path)
    stopped = load_checkpoint(classifiers.train_main(_train_args(tmp_path, epochs=2, minutes=1e-9)))
    assert stopped.card["epochs"] == 0  # the time budget ran out after the first batch
    path = classifiers.train_main(_train_args(tmp_path, epochs=2, resume=True))
    curves = load_checkpoint(path).card["curves"]
    assert [c["epoch"] for c in curves] == [1, 2]


def test_fine_tuning_starts_from_a_checkpoint_and_keeps_its_card(tmp_path):
    _tiny_fashion(tmp_path)
    first = classifiers.train_main(_train_args(tmp_path, out=str(tmp_path / "first.pt")))
    first_card = load_checkpoint(first).card
    tuned = load_checkpoint(classifiers.train_main(_train_args(tmp_path, init_from=str(first), shift=0, lr=1e-4,
                                                               command_line="python -m core.train tune")))
    assert tuned.card["fine_tuned_from"]["checkpoint"] == first.name  # a path outside the repository: its name alone
    assert tuned.card["fine_tuned_from"]["epochs"] == 1 and tuned.card["shift"] == 0
    # The card's command is the run that started it all; the fine-tuning follows it.
    assert tuned.card["command"] == first_card["command"] and tuned.card["resumed_with"] == ["python -m core.train tune"]
    assert tuned.card["wall_time_s"] >= first_card["wall_time_s"]
    # Starting from trained weights, one gentle epoch keeps the accuracy the first run reached.
    assert tuned.card["metrics"]["test_accuracy"] >= 0.8


def test_face_training_gives_one_probability_per_attribute(tmp_path):
    from core.data.faces import FACE_ATTRIBUTES, face_split

    args = _train_args(tmp_path, dataset="faces", out=str(tmp_path / "faces.pt"), train_faces=64, test_faces=32)
    path = classifiers.train_main(args)
    card = load_checkpoint(path).card
    assert set(card["metrics"]["test_accuracy"]) == set(FACE_ATTRIBUTES)
    model = classifiers.load_face_classifier(str(path))
    images = face_split("test", 3, size=32).images * 2 - 1  # any square size, any stated range
    probs = classifiers.face_attributes(images, (-1, 1), model=model)
    assert list(probs) == list(FACE_ATTRIBUTES)
    assert all(p.shape == (3,) and 0 <= p.min() and p.max() <= 1 for p in probs.values())
    assert classifiers.face_features(images, (-1, 1), model=model).shape == (3, 128)


def test_training_on_two_processes_averages_the_gradients_and_resumes_on_one(tmp_path):
    from tests.distributed import check_ranks_agree, train

    _tiny_fashion(tmp_path)
    out = tmp_path / "fashion.pt"
    arguments = ["classifier", "--data-dir", str(tmp_path), "--epochs", "2", "--batch-size", "32", "--validation", "16"]
    done, card = train(arguments, out, processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks_agree(card, 2)  # the BatchNorm statistics too: every rank ships rank 0's
    assert card["global_batch"] == 32 and card["steps"] == 4 and [c["epoch"] for c in card["curves"]] == [1, 2]
    assert card["metrics"]["test_accuracy"] > 0.8
    model = load_fashion_classifier(str(out))  # as the app loads it
    assert fashion_features(torch.rand(3, 28, 28), (0, 1), model=model).shape == (3, 128)

    # Stopped after its first step on two processes, continued on one: the run still ends after two epochs.
    stopped = tmp_path / "stopped.pt"
    done, card = train([*arguments, "--minutes", "1e-9"], stopped, processes=2)
    assert done.returncode == 0 and card["epochs"] == 0 and card["steps"] == 1, done.stderr[-3000:]
    resumed = load_checkpoint(classifiers.train_main(_train_args(tmp_path, out=str(stopped), epochs=2, resume=True)))
    assert [c["epoch"] for c in resumed.card["curves"]] == [1, 2] and resumed.card["steps"] == 4
    assert resumed.card["world_size"] == 1 and resumed.card["metrics"]["test_accuracy"] > 0.8


# --- FID/KID on real images grow with the damage done to them --------------------------

@pytest.fixture(scope="module")
def real_test_set():
    """The first 800 real Fashion-MNIST test images (uint8) and their labels."""
    assert shipped_path("classifier", "fashion_mnist").is_file(), "the shipped Fashion-MNIST classifier is missing"
    images, labels = real_fashion_test_split()
    return images[:800], labels[:800]


def test_shipped_classifier_names_real_clothes(real_test_set):
    # Measured on the shipped weights, not read from the card: a feature network that cannot tell
    # clothes apart would make every FID here meaningless (random weights: about 10 %).
    images, labels = real_test_set
    predicted = classifiers.fashion_probabilities(images, (0, 255)).argmax(-1)
    assert float((predicted == labels).float().mean()) > 0.88


