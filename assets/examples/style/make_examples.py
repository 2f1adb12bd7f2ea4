"""Make the style tab's example images (run from the repository root):

    python assets/examples/style/make_examples.py

Content: Grace Hopper's portrait (US Navy photo, public domain), which ships with matplotlib.
Styles: two textures drawn here from a fixed seed, so the project owns every example it shows:
  brush_strokes.png  short thick strokes that follow a swirling flow field (a post-impressionist sky)
  mosaic.png         Voronoi tiles in a warm/cool palette with dark grout (stained glass)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE = 384


def brush_strokes(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    palette = np.array([(23, 42, 110), (40, 80, 160), (80, 130, 200), (235, 200, 70), (250, 230, 140),
                        (20, 30, 60), (120, 170, 210)])
    image = Image.new("RGB", (SIZE, SIZE), (30, 50, 110))
    draw = ImageDraw.Draw(image)
    for _ in range(5000):
        x, y = rng.uniform(0, SIZE, 2)
        # Flow field: the stroke direction turns with position, so strokes form eddies.
        angle = np.sin(x / 45) * 2.0 + np.cos(y / 38) * 2.0
        length, width = rng.uniform(8, 20), int(rng.integers(3, 7))
        colour = palette[rng.choice(len(palette), p=[0.22, 0.22, 0.16, 0.1, 0.08, 0.12, 0.1])]
        colour = tuple(int(c) for c in np.clip(colour + rng.normal(0, 12, 3), 0, 255))
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=width)
    return image.filter(ImageFilter.SMOOTH)


def mosaic(seed: int = 1, tiles: int = 160) -> Image.Image:
    rng = np.random.default_rng(seed)
    palette = np.array([(200, 60, 40), (230, 150, 40), (240, 210, 90), (40, 110, 90), (30, 70, 140),
                        (120, 50, 110), (220, 220, 200)])
    centres = rng.uniform(0, SIZE, (tiles, 2))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    distances = (xx[..., None] - centres[:, 0]) ** 2 + (yy[..., None] - centres[:, 1]) ** 2
    nearest = np.sort(distances, axis=-1)[..., :2]
    owner = distances.argmin(axis=-1)
    colours = palette[rng.integers(0, len(palette), tiles)] + rng.normal(0, 15, (tiles, 3))
    array = colours[owner]
    # Grout where the two nearest centres are almost equally far: the tile borders.
    border = np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0]) < 3.0
    array[border] = (25, 20, 20)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def main() -> None:
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", HERE / "grace_hopper.jpg")
    brush_strokes().save(HERE / "brush_strokes.png", optimize=True)
    mosaic().save(HERE / "mosaic.png", optimize=True)


if __name__ == "__main__":
    main()
