"""Fashion-MNIST from IDX files, gzipped or raw.

Looks in this order and uses the first folder that has the files:
  1. an explicit `data_dir`,
  2. the folder named by the GENLAB_DATA environment variable (and its `fashion-mnist/` subfolder),
  3. /usr/share/datasets/fashion-mnist (Debian: apt-get install dataset-fashion-mnist),
  4. torchvision's layout under ~/.cache/genlab, downloading there if allowed.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path.home() / ".cache" / "genlab"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse one IDX file (the MNIST container format); `.gz` files are decompressed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(data_dir=None) -> list[Path]:
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get("GENLAB_DATA"):
        root = Path(os.environ["GENLAB_DATA"])
        dirs += [root, root / "fashion-mnist"]
    dirs += [DEBIAN_DIR, CACHE_DIR / "FashionMNIST" / "raw"]
    return dirs


def _download(root: Path) -> None:
    import torchvision  # only needed for the online path

    for train in (True, False):
        torchvision.datasets.FashionMNIST(str(root), train=train, download=True)


def _load_from(dirs: list[Path], split: str):
    image_stem, label_stem = _FILES[split]
    for folder in dirs:
        images, labels = _find(folder, image_stem), _find(folder, label_stem)
        if images and labels:
            x, y = read_idx(images), read_idx(labels)
            if len(x) != len(y):
                raise ValueError(f"{folder}: {len(x)} images but {len(y)} labels")
            return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))
    return None


def load_fashion_mnist(split: str = "train", data_dir=None, download: bool = True):
    """Return (images uint8 [N, 28, 28], labels int64 [N]) for split "train" or "test"."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    dirs = candidate_dirs(data_dir)
    found = _load_from(dirs, split)
    note = "download not allowed"
    if found is None and download:
        try:
            _download(CACHE_DIR)
            found = _load_from(dirs, split)
            note = "download finished but the files are still missing"
        except Exception as exc:  # offline, or torchvision missing
            note = f"download failed ({exc.__class__.__name__}: {exc})"
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files not found in: {looked}; {note}. Offline: "
        "apt-get install dataset-fashion-mnist, or set GENLAB_DATA to a folder with the IDX files.")


def to_float(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, size, size] in [0, 1], zero-padded as in the books (28 -> 32)."""
    x = images.float().div(255.0).unsqueeze(1)
    pad = (size - x.shape[-1]) // 2
    return torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad > 0 else x


SOURCE = "https://github.com/zalandoresearch/fashion-mnist"


def provenance(split: str = "train", data_dir=None) -> dict:
    """What a model card records about the data: its name, where it comes from, and one SHA-256 of the
    decoded arrays (the uint8 images, then the int64 labels), the same for gzipped and raw IDX files."""
    from core.data import data_record

    images, labels = load_fashion_mnist(split, data_dir)
    return data_record(f"Fashion-MNIST {split} ({len(images)} images and labels)", SOURCE, images, labels,
                       key="sha256_of_images_and_labels")
