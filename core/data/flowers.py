"""Oxford 102 Flowers at 64x64, for the diffusion model (Generative Deep Learning, chapter 8, trains on it).

Reads torchvision's folder layout (what `torchvision.datasets.Flowers102(root, download=True)` leaves),
through torchvision's own class, which also checks the .mat files' md5 sums:

    <data_dir>/flowers-102/jpg/image_00001.jpg ... image_08189.jpg
    <data_dir>/flowers-102/imagelabels.mat   # the class of every image
    <data_dir>/flowers-102/setid.mat         # which images form the train, validation and test splits

The book trains the diffusion model on all 8189 images (split="all"): the splits only matter to classifiers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.celeba import error_phrase, network_timeout
from core.data.images import center_crop_square

SPLITS = {"train": ("train",), "validation": ("val",), "test": ("test",), "all": ("train", "val", "test")}
SOURCE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
# The md5 sums torchvision checks (torchvision.datasets.Flowers102._file_dict), for model cards:
# the .mat files on every load, the archive when it downloads it.
MD5 = {"102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
       "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
       "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c"}


def how_to_get_flowers(root) -> str:
    return (f"download 102flowers.tgz, imagelabels.mat and setid.mat from {SOURCE} and put them in "
            f"{Path(root) / 'flowers-102'}, with the archive unpacked there into jpg/ (torchvision's layout)")


def flowers_root(data_dir) -> Path | None:
    """The folder holding flowers-102/ with jpg/ and both .mat files (data_dir, or its parent when
    data_dir is flowers-102/ itself), if any."""
    for root in (Path(data_dir), Path(data_dir).parent):
        folder = root / "flowers-102"
        if (folder / "jpg").is_dir() and all((folder / name).is_file() for name in ("imagelabels.mat", "setid.mat")):
            return root
    return None


def download_flowers(data_dir) -> None:
    """Fetch Oxford 102 Flowers into data_dir/flowers-102/ through torchvision; ValueError with a sentence if
    that fails."""
    from torchvision.datasets import Flowers102

    try:
        with network_timeout():
            Flowers102(root=str(data_dir), download=True)
    except Exception as error:  # urllib, tar and checksum errors alike mean "not downloaded"
        raise ValueError(f"Oxford 102 Flowers could not be downloaded ({error_phrase(error)}): "
                         f"{how_to_get_flowers(data_dir)}.") from None


def load_flowers(data_dir, split: str = "train", size: int = 64, limit: int | None = None,
                 download: bool = False) -> tuple[torch.Tensor, str]:
    """Return (images uint8 [N, 3, size, size], a one-line description of the data for a model card).

    Every photo is centre-cropped to a square and resized; `limit` caps the count (split="all" is 8189
    images, 100 MB at 64 px). `download` fetches the data through torchvision first when it is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"The Oxford 102 Flowers split must be one of {', '.join(SPLITS)}, not {split!r}.")
    if not data_dir:
        raise ValueError("Oxford 102 Flowers is not shipped with the lab: pass --data-dir with the folder that "
                         "holds it (or should receive it) in torchvision's layout, flowers-102/jpg/, "
                         "flowers-102/imagelabels.mat and flowers-102/setid.mat.")
    root = flowers_root(data_dir)
    if root is None and download:
        download_flowers(data_dir)
        root = flowers_root(data_dir)
    if root is None:
        raise ValueError(f"Oxford 102 Flowers is not in {data_dir}: {how_to_get_flowers(data_dir)}.")
    try:
        import scipy.io  # noqa: F401  torchvision reads the .mat files with it
    except ImportError:
        raise ValueError("Reading Oxford 102 Flowers needs scipy (pip install scipy).") from None
    from torchvision.datasets import Flowers102

    try:
        parts = [Flowers102(root=str(root), split=part) for part in SPLITS[split]]
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        raise ValueError(f"Oxford 102 Flowers in {root / 'flowers-102'} fails torchvision's md5 check of "
                         f"imagelabels.mat and setid.mat: {how_to_get_flowers(root)}.") from None
    index = [(part, i) for part in parts for i in range(len(part))][:limit]
    images = np.empty((len(index), 3, size, size), dtype=np.uint8)
    for row, (part, i) in enumerate(index):
        try:
            image, _ = part[i]  # an RGB PIL image and its class
        except OSError as error:  # missing, cut short or not a JPEG
            raise ValueError(f"Oxford 102 Flowers in {root / 'flowers-102'} has an image that cannot be read "
                             f"({error_phrase(error)}): {how_to_get_flowers(root)}.") from None
        images[row] = np.asarray(center_crop_square(image, size)).transpose(2, 0, 1)
    description = (f"Oxford 102 Flowers ({split}, {len(index)} images) from {root / 'flowers-102'}, centre-cropped "
                   f"to {size}x{size}; source {SOURCE}, md5 " + ", ".join(f"{n} {m}" for n, m in MD5.items()))
    return torch.from_numpy(images), description
