"""CelebA, for users who have it: aligned face crops with 40 binary attributes.

Reads torchvision's folder layout (what `torchvision.datasets.CelebA(root, download=True)` leaves):

    <data_dir>/[celeba/]img_align_celeba/000001.jpg ...
    <data_dir>/[celeba/]list_attr_celeba.txt       # count line, 40 names, then "file +1/-1 ..." rows
    <data_dir>/[celeba/]list_eval_partition.txt    # optional: "file 0|1|2" = train/valid/test

The lab cannot ship CelebA (its licence and size), so offline everything uses the synthetic faces of
`core.data.faces`; this loader lets the same VAE code train on the real thing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data.images import center_crop_square

SPLITS = {"train": 0, "validation": 1, "test": 2}


def find_celeba(data_dir) -> Path:
    """The folder holding img_align_celeba/ and list_attr_celeba.txt (data_dir or data_dir/celeba)."""
    if not data_dir:
        raise ValueError("CelebA is not shipped with the lab: pass --data-dir pointing at your CelebA folder.")
    for folder in (Path(data_dir), Path(data_dir) / "celeba"):
        if (folder / "list_attr_celeba.txt").is_file() and (folder / "img_align_celeba").is_dir():
            return folder
    raise ValueError(f"{data_dir} does not look like CelebA: expected img_align_celeba/ and list_attr_celeba.txt "
                     "(torchvision's layout), directly inside it or in a celeba/ subfolder.")


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


def load_celeba(data_dir, split: str = "train", size: int = 64, limit: int | None = None):
    """Return (images uint8 [N, 3, size, size], labels {attribute name (lower case): bool [N]}).

    The aligned 178x218 crops are centre-cropped to a square and resized; `limit` caps the count
    (the full training split is 160k images, 2 GB at 64 px).
    """
    if split not in SPLITS:
        raise ValueError(f"The CelebA split must be one of {', '.join(SPLITS)}, not {split!r}.")
    folder = find_celeba(data_dir)
    names, files, attributes = read_attributes(folder / "list_attr_celeba.txt")
    keep = np.ones(len(files), dtype=bool)
    partition = folder / "list_eval_partition.txt"
    if partition.is_file():
        which = dict(line.split() for line in partition.read_text().splitlines() if line.strip())
        keep = np.array([int(which.get(f, -1)) == SPLITS[split] for f in files])
    index = np.flatnonzero(keep)[:limit]
    images = np.empty((len(index), 3, size, size), dtype=np.uint8)
    for row, i in enumerate(index):
        with Image.open(folder / "img_align_celeba" / files[i]) as image:
            images[row] = np.asarray(center_crop_square(image.convert("RGB"), size)).transpose(2, 0, 1)
    labels = {name.lower(): torch.from_numpy(attributes[index, j].copy()) for j, name in enumerate(names)}
    return torch.from_numpy(images), labels
