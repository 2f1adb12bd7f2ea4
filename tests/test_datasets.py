"""The real-dataset loaders (CelebA, Oxford 102 Flowers) on tiny fake folders in torchvision's layout.

No test touches the network: downloads are replaced by stand-ins that either fail or write the fake folder.
"""
import os
import socket
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import celeba, flowers
from core.data.celeba import load_celeba
from core.data.flowers import load_flowers
from tests.conftest import require_module

ATTRIBUTES = ["Eyeglasses", "Male", "Smiling"]


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message and "Traceback" not in message


def write_fake_celeba(folder, n=7):
    """n 178x218 'photos', image i solid (30 i, 80, 200 - 20 i); splits 4 train, 2 validation, 1 test;
    image i wears glasses when i % 3 == 0, is male when i is even, smiles when i > 3."""
    (folder / "img_align_celeba").mkdir(parents=True)
    rows, parts = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (178, 218), (30 * i, 80, 200 - 20 * i)).save(folder / "img_align_celeba" / name)
        values = [i % 3 == 0, i % 2 == 0, i > 3]
        rows.append(f"{name} " + " ".join("1" if v else "-1" for v in values))  # the real file pads with spaces
        parts.append(f"{name} {0 if i < 4 else 1 if i < 6 else 2}")
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")


def red(images):
    """Each image's mean red value, rounded (JPEG moves solid colours by a unit or two)."""
    return [round(v / 10) * 10 for v in images[:, 0].float().mean(dim=(1, 2)).tolist()]


def test_celeba_reads_splits_limit_and_attributes(tmp_path):
    write_fake_celeba(tmp_path / "celeba")
    images, labels = load_celeba(tmp_path, "train", size=16)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert red(images) == [0, 30, 60, 90]
    assert sorted(labels) == ["eyeglasses", "male", "smiling"]
    assert labels["eyeglasses"].dtype == torch.bool and labels["eyeglasses"].tolist() == [True, False, False, True]
    assert labels["male"].tolist() == [True, False, True, False] and not labels["smiling"].any()
    valid, valid_labels = load_celeba(tmp_path / "celeba", "validation", size=8)  # the celeba/ folder itself
    assert valid.shape == (2, 3, 8, 8) and red(valid) == [120, 150] and valid_labels["smiling"].all()
    test, _ = load_celeba(tmp_path, "test", size=8)
    assert red(test) == [180]
    everything, all_labels = load_celeba(tmp_path, "all", size=8, limit=6)
    assert len(everything) == 6 and red(everything) == [0, 30, 60, 90, 120, 150]
    assert all_labels["male"].tolist() == [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="split must be one of"):
        load_celeba(tmp_path, "valid")


def test_celeba_missing_gives_one_sentence_naming_the_files_and_folder(tmp_path):
    for data_dir in (tmp_path / "nowhere", None):
        with pytest.raises(ValueError) as caught:
            load_celeba(data_dir, "train")
        message = str(caught.value)
        assert one_sentence(message) and "CelebA" in message and "img_align_celeba/" in message
    with pytest.raises(ValueError) as caught:
        load_celeba(tmp_path / "nowhere", "train")
    message = str(caught.value)
    assert "img_align_celeba.zip" in message and "list_attr_celeba.txt" in message
    assert str(tmp_path / "nowhere" / "celeba") in message


@pytest.fixture
def fake_gdown(monkeypatch):
    """torchvision fetches CelebA with gdown, which need not be installed for a download that never happens."""
    monkeypatch.setitem(sys.modules, "gdown", types.ModuleType("gdown"))


def test_celeba_failed_download_gives_one_sentence(tmp_path, monkeypatch, fake_gdown):
    import torchvision.datasets

    timeouts = []

    def dead_network(self):
        timeouts.append(socket.getdefaulttimeout())
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.datasets.CelebA, "download", dead_network)
    before = socket.getdefaulttimeout()
    with pytest.raises(ValueError) as caught:
        load_celeba(tmp_path, "train", download=True)
    message = str(caught.value)
    assert one_sentence(message) and "could not be downloaded (<urlopen error" in message
    assert "img_align_celeba.zip" in message and str(tmp_path / "celeba") in message
    assert timeouts == [celeba.NETWORK_TIMEOUT] and socket.getdefaulttimeout() == before
    # Data already there is read without downloading.
    write_fake_celeba(tmp_path / "celeba")
    assert len(load_celeba(tmp_path, "test", size=8, download=True)[0]) == 1


def test_celeba_download_goes_through_torchvision_then_reads_its_layout(tmp_path, monkeypatch, fake_gdown):
    import torchvision.datasets

    calls = []

    class FakeCelebA:
        def __init__(self, **kwargs):
            calls.append(kwargs)
            write_fake_celeba(tmp_path / "celeba")

    monkeypatch.setattr(torchvision.datasets, "CelebA", FakeCelebA)
    images, labels = load_celeba(tmp_path, "validation", size=8, download=True)
    assert calls == [{"root": str(tmp_path), "split": "valid", "target_type": "attr", "download": True}]
    assert images.shape == (2, 3, 8, 8) and labels["smiling"].tolist() == [True, True]


def test_celeba_download_without_gdown_says_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # makes `import gdown` fail
    with pytest.raises(ValueError) as caught:
        load_celeba(tmp_path, "train", download=True)
    message = str(caught.value)
    assert one_sentence(message) and "pip install gdown" in message and "list_attr_celeba.txt" in message


def write_fake_flowers(root, splits=None):
    """flowers-102/ with 60x40 photos: a 10 px red band left and right around a 40x40 square of
    colour (20 id, 100, 50); the ids of each split as in setid.mat (1-based, like the real file)."""
    savemat = require_module("scipy.io", "scipy reads and writes the .mat files (pip install scipy)").savemat
    splits = splits or {"trnid": [1, 4, 6], "valid": [2, 5], "tstid": [3, 7]}
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    ids = sorted(i for ids in splits.values() for i in ids)
    for i in ids:
        image = Image.new("RGB", (60, 40), (255, 0, 0))
        image.paste((20 * i, 100, 50), (10, 0, 50, 40))
        image.save(folder / "jpg" / f"image_{i:05d}.jpg", quality=95, subsampling=0)  # full-resolution colour: no red bleeds inward
    savemat(folder / "imagelabels.mat", {"labels": np.array([[1 + i % 102 for i in ids]])})
    savemat(folder / "setid.mat", {name: np.array([ids]) for name, ids in splits.items()})
    return folder


@pytest.fixture
def any_checksum(monkeypatch):
    """The fake .mat files cannot have the real files' md5 sums: accept any file that exists."""
    import torchvision.datasets.flowers102 as module

    monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_flowers_reads_splits_limit_and_crops_the_centre(tmp_path, any_checksum):
    write_fake_flowers(tmp_path)
    images, description = load_flowers(tmp_path, "train", size=16)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert red(images) == [20, 80, 120]  # ids 1, 4, 6: the red bands were cropped away
    assert "Oxford 102 Flowers (train, 3 images)" in description and "16x16" in description
    assert flowers.MD5["setid.mat"] in description and flowers.SOURCE in description
    valid, _ = load_flowers(tmp_path, "validation", size=8)
    assert red(valid) == [40, 100]
    everything, description = load_flowers(tmp_path / "flowers-102", "all", size=8)  # the folder itself
    assert red(everything) == [20, 80, 120, 40, 100, 60, 140] and "(all, 7 images)" in description
    assert len(load_flowers(tmp_path, "all", size=8, limit=4)[0]) == 4
    with pytest.raises(ValueError, match="split must be one of"):
        load_flowers(tmp_path, "val")


def test_flowers_checks_torchvisions_md5_sums(tmp_path):
    write_fake_flowers(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_flowers(tmp_path, "all", size=8)
    message = str(caught.value)
    assert one_sentence(message) and "md5" in message and "setid.mat" in message


def test_flowers_missing_image_gives_one_sentence(tmp_path, any_checksum):
    (write_fake_flowers(tmp_path) / "jpg" / "image_00004.jpg").unlink()
    with pytest.raises(ValueError) as caught:
        load_flowers(tmp_path, "train", size=8)
    message = str(caught.value)
    assert one_sentence(message) and "image_00004.jpg" in message and "102flowers.tgz" in message


def test_flowers_missing_gives_one_sentence_naming_the_files_and_folder(tmp_path):
    for data_dir in (tmp_path / "nowhere", None):
        with pytest.raises(ValueError) as caught:
            load_flowers(data_dir)
        message = str(caught.value)
        assert one_sentence(message) and "Oxford 102 Flowers" in message and "jpg/" in message
    with pytest.raises(ValueError) as caught:
        load_flowers(tmp_path / "nowhere")
    message = str(caught.value)
    assert "102flowers.tgz" in message and "imagelabels.mat" in message and flowers.SOURCE in message
    assert str(tmp_path / "nowhere" / "flowers-102") in message


def test_flowers_failed_download_gives_one_sentence(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def dead_network(self):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torchvision.datasets.Flowers102, "download", dead_network)
    with pytest.raises(ValueError) as caught:
        load_flowers(tmp_path, download=True)
    message = str(caught.value)
    assert one_sentence(message) and "could not be downloaded (<urlopen error" in message
    assert "102flowers.tgz" in message and str(tmp_path / "flowers-102") in message


def test_flowers_download_goes_through_torchvision_under_a_timeout(tmp_path, monkeypatch, any_checksum):
    import torchvision.datasets

    timeouts = []

    def download(self):
        timeouts.append(socket.getdefaulttimeout())
        write_fake_flowers(tmp_path)

    monkeypatch.setattr(torchvision.datasets.Flowers102, "download", download)
    images, _ = load_flowers(tmp_path, "test", size=8, download=True)
    assert red(images) == [60, 140] and timeouts == [celeba.NETWORK_TIMEOUT]
    load_flowers(tmp_path, "test", size=8, download=True)
    assert len(timeouts) == 1  # present data is not downloaded again


def test_flowers_without_scipy_says_to_install_it(tmp_path, monkeypatch, any_checksum):
    write_fake_flowers(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ValueError, match=r"needs scipy \(pip install scipy\)"):
        load_flowers(tmp_path)


def test_the_recorded_checksums_are_the_ones_torchvision_checks():
    import torchvision.datasets

    torchvision_flowers = {name: md5 for name, md5 in torchvision.datasets.Flowers102._file_dict.values()}
    torchvision_celeba = {name: md5 for _, md5, name in torchvision.datasets.CelebA.file_list}
    assert flowers.MD5 == torchvision_flowers
    assert celeba.MD5.items() <= torchvision_celeba.items()
