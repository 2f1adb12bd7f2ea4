import gzip
import struct

import numpy as np
import pytest
import torch

from core.data import fashion_mnist
from core.data.fashion_mnist import load_fashion_mnist, read_idx, to_float


def _write_idx(path, array, compress):
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _write_split(folder, prefix, n, compress, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_reads_gzipped_and_raw_idx(tmp_path, compress):
    images, labels = _write_split(tmp_path, "t10k", 5, compress)
    x, y = load_fashion_mnist("test", data_dir=tmp_path, download=False)
    assert x.dtype == torch.uint8 and x.shape == (5, 28, 28)
    assert y.dtype == torch.int64
    assert np.array_equal(x.numpy(), images) and np.array_equal(y.numpy(), labels)


def test_the_cards_checksum_names_the_content_not_the_file(tmp_path):
    _write_split(tmp_path / "gz", "train", 6, True, seed=3)
    _write_split(tmp_path / "raw", "train", 6, False, seed=3)
    _write_split(tmp_path / "other", "train", 6, False, seed=4)
    gz, raw, other = (fashion_mnist.provenance("train", tmp_path / d) for d in ("gz", "raw", "other"))
    assert gz == raw and gz["sha256_of_images_and_labels"] != other["sha256_of_images_and_labels"]
    assert gz["name"] == "Fashion-MNIST train (6 images and labels)" and gz["source"].startswith("https://")
    assert str(tmp_path) not in str(gz)


def test_search_order_explicit_then_env(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    _write_split(explicit, "train", 3, True, seed=1)
    env_images, _ = _write_split(env / "fashion-mnist", "train", 4, False, seed=2)
    monkeypatch.setenv("GENLAB_DATA", str(env))
    assert len(load_fashion_mnist("train", data_dir=explicit, download=False)[0]) == 3
    x, _ = load_fashion_mnist("train", download=False)
    assert np.array_equal(x.numpy(), env_images)


def test_missing_files_list_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("test", data_dir=tmp_path / "empty", download=False)
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "no-debian" in message and "dataset-fashion-mnist" in message


def test_truncated_and_foreign_files_are_rejected(tmp_path):
    path = _write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "junk")


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", download=False)


def test_to_float_pads_to_32_in_unit_range():
    x = to_float(torch.full((2, 28, 28), 255, dtype=torch.uint8))
    assert x.shape == (2, 1, 32, 32)
    assert x[:, :, 2:30, 2:30].min() == 1.0 and x[:, :, :2].max() == 0.0


def test_the_installed_dataset_is_fashion_mnist():
    from tests.conftest import require

    try:
        train, test = load_fashion_mnist("train", download=False), load_fashion_mnist("test", download=False)
    except FileNotFoundError:
        train = test = None
    require(train is not None, "Fashion-MNIST is not installed: run `sh tests/install.sh` "
                               "(apt-get install dataset-fashion-mnist)")
    for (x, y), n in ((train, 60000), (test, 10000)):
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10  # balanced, ten classes
    # Trousers (class 1) are tall and narrow, bags (8) wide: the labels belong to these pictures.
    width = lambda images: (images > 0).any(dim=1).float().sum(-1).mean()
    assert width(test[0][test[1] == 1]) < 0.75 * width(test[0][test[1] == 8])
