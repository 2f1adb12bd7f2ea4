import io

import numpy as np
import pytest
from PIL import Image

from core.data.images import center_crop_square, image_grid, pil_to_tensor, prepare_image, tensor_to_pil


def _gradient(mode_size=(64, 48)):
    w, h = mode_size
    array = np.zeros((h, w, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)
    array[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return Image.fromarray(array)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "1", "I", "F"])
def test_odd_modes_become_rgb(mode):
    image, notes = prepare_image(_gradient().convert(mode))
    assert image.mode == "RGB" and image.size == (64, 48)
    assert any(mode in note for note in notes)


def test_sixteen_bit_is_stretched_not_clipped():
    array = (np.linspace(0, 4000, 64 * 48).reshape(48, 64)).astype(np.uint16)
    image, _ = prepare_image(Image.fromarray(array, mode="I;16"))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255  # a plain convert would make it almost all white


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    image, _ = prepare_image(rgba)
    assert image.getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    _gradient((80, 40)).save(buffer, format="JPEG", exif=exif)
    buffer.seek(0)
    image, notes = prepare_image(buffer)
    assert image.size == (40, 80)
    assert any("EXIF" in note for note in notes)


def test_huge_is_resized_tiny_is_refused():
    image, notes = prepare_image(Image.new("RGB", (5000, 2500)), max_side=1024)
    assert image.size == (1024, 512) and "resized" in notes[0]
    with pytest.raises(ValueError, match="at least 32"):
        prepare_image(Image.new("RGB", (20, 300)))


def test_non_image_and_none_give_sentences(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just words")
    with pytest.raises(ValueError, match="not an image"):
        prepare_image(str(path))
    with pytest.raises(ValueError, match="No image"):
        prepare_image(None)


def test_numpy_float_arrays_are_accepted():
    image, _ = prepare_image(np.full((40, 40, 3), 0.5, dtype=np.float32))
    assert np.asarray(image)[0, 0, 0] == 128


def test_tensor_round_trip_and_helpers():
    image = _gradient()
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(image))), np.asarray(image))
    assert center_crop_square(image, 32).size == (32, 32)
    grid = image_grid(pil_to_tensor(image).repeat(5, 1, 1, 1), nrow=2, padding=2)
    assert grid.size == (2 * 64 + 3 * 2, 3 * 48 + 4 * 2)
