"""CelebA, for users who have it: aligned face crops with 40 binary attributes.

Reads torchvision's folder layout (what `torchvision.datasets.CelebA(root, download=True)` leaves):

    <data_dir>/[celeba/]img_align_celeba/000001.jpg ...
    <data_dir>/[celeba/]list_attr_celeba.txt       # count line, 40 names, then "file +1/-1 ..." rows
    <data_dir>/[celeba/]list_eval_partition.txt    # optional: "file 0|1|2" = train/valid/test

The lab cannot ship CelebA (its licence and size), so offline everything uses the synthetic faces of
`core.data.faces`; this loader lets the same VAE code train on the real thing, and `download=True`
fetches it first through torchvision (from Google Drive, which needs the gdown package).
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data.images import center_crop_square

SPLITS = {"train": 0, "validation": 1, "test": 2, "all": None}
TORCHVISION_SPLITS = {"train": "train", "validation": "valid", "test": "test", "all": "all"}
SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
# The md5 sums torchvision checks (torchvision.datasets.CelebA.file_list), for model cards.
MD5 = {"img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
       "list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
       "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668"}
# Seconds a download may wait for one network read; torchvision's downloaders set no timeout of their own.
NETWORK_TIMEOUT = 30


@contextmanager
def network_timeout(seconds: float = NETWORK_TIMEOUT):
    """Make a dead network fail a download within `seconds` instead of hanging it (a process-wide setting,
    which is why only command-line training downloads)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def error_phrase(error: Exception) -> str:
    """An error (from a download, say) as a short phrase to put in parentheses."""
    text = " ".join(str(error).split()).rstrip(".") or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def how_to_get_celeba(data_dir) -> str:
    return (f"download img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt from {SOURCE} "
            f"and put them in {Path(data_dir) / 'celeba'}, with the zip unpacked there into img_align_celeba/ "
            "(torchvision's layout)")


def celeba_folder(data_dir) -> Path | None:
    """The folder holding img_align_celeba/ and list_attr_celeba.txt (data_dir or data_dir/celeba), if any."""
    for folder in (Path(data_dir), Path(data_dir) / "celeba"):
        if (folder / "list_attr_celeba.txt").is_file() and (folder / "img_align_celeba").is_dir():
            return folder
    return None


def find_celeba(data_dir) -> Path:
    """celeba_folder(data_dir), or ValueError with a sentence saying what to download and where."""
    if not data_dir:
        raise ValueError("CelebA is not shipped with the lab: pass --data-dir with the folder that holds it (or "
                         "should receive it) in torchvision's layout, celeba/img_align_celeba/ and "
                         "celeba/list_attr_celeba.txt.")
    folder = celeba_folder(data_dir)
    if folder is None:
        raise ValueError(f"CelebA is not in {data_dir}: {how_to_get_celeba(data_dir)}.")
    return folder


def download_celeba(data_dir, split: str = "all") -> None:
    """Fetch CelebA into data_dir/celeba/ through torchvision; ValueError with a sentence if that fails."""
    try:
        import gdown  # noqa: F401  torchvision fetches CelebA from Google Drive with it
    except ImportError:
        raise ValueError("Downloading CelebA needs the gdown package (pip install gdown); otherwise "
                         f"{how_to_get_celeba(data_dir)}.") from None
    from torchvision.datasets import CelebA

    try:
        with network_timeout():
            CelebA(root=str(data_dir), split=TORCHVISION_SPLITS[split], target_type="attr", download=True)
    except Exception as error:  # urllib, gdown, zip and checksum errors alike mean "not downloaded"
        raise ValueError(f"CelebA could not be downloaded ({error_phrase(error)}): "
                         f"{how_to_get_celeba(data_dir)}.") from None


def read_attributes(path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse list_attr_celeba.txt: (attribute names, file names, bool array [N, 40])."""
    lines = Path(path).read_text().splitlines()
    names = lines[1].split()
    files, rows = [], []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}: the row for {parts[0]} has {len(parts) - 1} values, expected {len(names)}.")
        files.append(parts[0])
        rows.append([value == "1" for value in parts[1:]])
    return names, files, np.array(rows, dtype=bool).reshape(len(files), len(names))


def load_celeba(data_dir, split: str = "train", size: int = 64, limit: int | None = None,
                download: bool = False):
    """Return (images uint8 [N, 3, size, size], labels {attribute name (lower case): bool [N]}).

    The aligned 178x218 crops are centre-cropped to a square and resized; `limit` caps the count
    (the full training split is 160k images, 2 GB at 64 px). `download` fetches CelebA through
    torchvision first when it is not in data_dir.
    """
    if split not in SPLITS:
        raise ValueError(f"The CelebA split must be one of {', '.join(SPLITS)}, not {split!r}.")
    if download and data_dir and celeba_folder(data_dir) is None:
        download_celeba(data_dir, split)
    folder = find_celeba(data_dir)
    names, files, attributes = read_attributes(folder / "list_attr_celeba.txt")
    keep = np.ones(len(files), dtype=bool)
    partition = folder / "list_eval_partition.txt"
    if partition.is_file() and SPLITS[split] is not None:
        which = dict(line.split() for line in partition.read_text().splitlines() if line.strip())
        keep = np.array([int(which.get(f, -1)) == SPLITS[split] for f in files])
    index = np.flatnonzero(keep)[:limit]
    images = np.empty((len(index), 3, size, size), dtype=np.uint8)
    for row, i in enumerate(index):
        with Image.open(folder / "img_align_celeba" / files[i]) as image:
            images[row] = np.asarray(center_crop_square(image.convert("RGB"), size)).transpose(2, 0, 1)
    labels = {name.lower(): torch.from_numpy(attributes[index, j].copy()) for j, name in enumerate(names)}
    return torch.from_numpy(images), labels
