"""Turn whatever a user uploads into a sane RGB image, and move images to and from tensors.

Uploads come in every PIL mode (RGBA, palette, 16-bit, float, CMYK, grayscale), with EXIF
rotation, and in sizes from icons to 40-megapixel photos. `prepare_image` normalises all of
that and returns notes a UI can show ("resized from 6000x4000 to 1024x683").

A file's header states its size before a single pixel is decoded, so an image over
MAX_MEGAPIXELS is refused from the header: a 1 MB PNG can declare 20000x20000 pixels and
would take 1.2 GB (RGB) to decode. Big JPEGs are decoded at a reduced scale (`draft`) when the
working size is much smaller, which cuts their decoding memory by up to 64x.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# The largest working size is 1024 px on the longer side (1 MP); 40 MP admits every ordinary camera
# photo (8000x5000) with room to spare, and decodes in at most 120 MB (RGB).
MAX_MEGAPIXELS = 40
# Pillow's own guard, for any other place an image is opened: it warns above this and refuses
# above twice this; prepare_image refuses above it, from the header.
Image.MAX_IMAGE_PIXELS = MAX_MEGAPIXELS * 1_000_000


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth: stretch the actual range to 8 bits instead of clipping to white.
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        array = np.nan_to_num((array - lo) / (hi - lo) if hi > lo else np.zeros_like(array))
        image = Image.fromarray((array * 255).round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white, the way a browser shows them on a page.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _open_file(source, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Open an image file, refusing an oversized one from its header; returns it and its stored size."""
    size = None
    try:
        with warnings.catch_warnings():  # Pillow warns between 1x and 2x its limit; the check below refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)  # reads the header only; Pillow itself refuses over 2 x MAX_IMAGE_PIXELS
        size = image.size
        if size[0] * size[1] > MAX_MEGAPIXELS * 1_000_000:
            raise Image.DecompressionBombError
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that suffices
        image.load()
    except Image.DecompressionBombError:
        stated = f"is {size[0]}x{size[1]} pixels" if size else f"has over {2 * MAX_MEGAPIXELS} megapixels"
        raise ValueError(f"That image {stated}; images over {MAX_MEGAPIXELS} megapixels are refused. "
                         "Make it smaller and upload it again.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, TypeError, ValueError):
        raise ValueError("That file is not an image that can be read: it may be empty, cut short, or another "
                         "kind of file.") from None
    return image, size


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:  # floats in [0, 1] or [0, 255], 16-bit ints, NaNs
        array = np.nan_to_num(array.astype(np.float64))
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    try:
        return Image.fromarray(array)
    except (TypeError, ValueError):
        raise ValueError(f"An array of shape {array.shape} is not an image.") from None


def prepare_image(source, max_side: int = 1024, min_side: int = 32) -> tuple[Image.Image, list[str]]:
    """Open/convert `source` (PIL image, NumPy array, file path or file object) to RGB within the size limits.

    Raises ValueError with a sentence for the user when the input cannot be used.
    """
    notes = []
    if source is None:
        raise ValueError("No image was given: upload one or pick an example.")
    if isinstance(source, Image.Image):
        image, size = source, source.size
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
        size = image.size
    else:
        image, size = _open_file(source, max_side)
    width, height = size  # as stored: a JPEG decoded at a reduced scale is smaller than this
    transposed = ImageOps.exif_transpose(image)
    if transposed is not image and transposed.size != image.size:
        notes.append("rotated upright using its EXIF orientation")
        width, height = height, width
    image = transposed
    if image.mode != "RGB":
        notes.append(f"converted from {image.mode} to RGB")
        image = _to_rgb(image)
    if min(width, height) < min_side:
        raise ValueError(f"The image is {width}x{height} pixels; it needs at least {min_side} pixels on each side.")
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        image = image.resize((max(min_side, round(width * scale)), max(min_side, round(height * scale))),
                             Image.LANCZOS)
        notes.append(f"resized from {width}x{height} to {image.size[0]}x{image.size[1]}")
    return image, notes


def center_crop_square(image: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square and resize it to size x size."""
    return ImageOps.fit(image, (size, size), Image.LANCZOS)


def as_clothes(source, size: int, min_side: int = 8) -> tuple[torch.Tensor, list[str]]:
    """Any image -> [1, 1, size, size] in [0, 1] the way Fashion-MNIST draws clothes, and notes saying what
    was done: grey, centre-cropped, and inverted when its border is light (the clothes are light on black)."""
    image, notes = prepare_image(source, min_side=min_side)
    width, height = image.size
    grey = center_crop_square(image.convert("L"), size)
    x = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255).view(1, 1, size, size)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    notes.append(f"made grey and cropped from {width}×{height} to {size}×{size}")
    if border.mean() > 0.5:
        x = 1 - x
        notes.append("inverted, because its border is light and Fashion-MNIST's background is black")
    return x, notes


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor [1, 3, H, W] in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor [C, H, W] or [1, C, H, W] in [0, 1] -> PIL image (C = 1 or 3)."""
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    array = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> Image.Image:
    """[N, C, H, W] in [0, 1] -> one PIL image with `nrow` images per row."""
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return tensor_to_pil(grid)


def save_gif(frames: list[Image.Image], path, seconds_per_frame: float = 0.1, loop: bool = True) -> str:
    """Write frames as an animated GIF (for zoom dreams, latent walks, diffusion steps)."""
    if not frames:
        raise ValueError("There are no frames to animate.")
    frames = [f.convert("RGB") for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(20, int(seconds_per_frame * 1000)),
                   loop=0 if loop else 1, optimize=False)
    return str(path)
