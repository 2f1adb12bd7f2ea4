"""The PixelCNN tab's handlers, called directly: tiny untrained models stand in for the shipped ones
(fast), and one test runs the shipped models once they exist."""
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import tabs.pixelcnn as tab
from core import pixelcnn
from core.data.fashion_mnist import CLASS_NAMES
from core.registry import shipped_path
from tabs.common import user_errors
from tests.conftest import require

SIZE, K = 16, 4
CLASS = "(" + "|".join(re.escape(name) for name in CLASS_NAMES) + r") \(\d+%\)"


def tiny(kind: str):
    torch.manual_seed(0)
    config = pixelcnn.PixelCNNConfig(kind=kind, levels=K, image_size=SIZE, channels=8, blocks=2)
    return pixelcnn.build(config).eval().requires_grad_(False)


@pytest.fixture
def models(monkeypatch):
    """Tiny plain and gated models in place of the shipped ones, and a small fake test split."""
    models = {tab.PLAIN: tiny("plain"), tab.GATED: tiny("gated")}
    monkeypatch.setattr(tab, "_model", lambda name: models[name])
    monkeypatch.setattr(tab, "model_choices", lambda: [(tab.MODEL_LABELS[n], n) for n in models])
    images = torch.randint(0, K, (3, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(tab, "_test_set", lambda size, levels: (images, torch.tensor([0, 1, 9])))
    return models


def levels_of(tile: Image.Image, scale: int) -> torch.Tensor:
    """A shown image back to its levels (each pixel is a scale×scale block of one grey)."""
    grey = np.asarray(tile.convert("L"))[scale // 2::scale, scale // 2::scale].astype(float)
    return torch.from_numpy(np.rint(grey / 255 * (K - 1))).long()


def is_pending(tile: Image.Image) -> np.ndarray:
    rgb = np.asarray(tile.convert("RGB")).astype(int)
    return np.logical_or.reduce([(np.abs(rgb - np.array(colour) * 255) < 2).all(axis=-1) for colour in tab.PENDING])


def grid_tiles(grid: Image.Image, n: int, columns: int) -> list[Image.Image]:
    side, s = SIZE + 1, tab.GRID_SCALE
    return [grid.crop(((1 + (i % columns) * side) * s, (1 + (i // columns) * side) * s,
                       (1 + (i % columns) * side + SIZE) * s, (1 + (i // columns) * side + SIZE) * s))
            for i in range(n)]


def test_generation_streams_rows_and_the_same_seed_gives_the_same_grid(models):
    frames = list(tab.generate(tab.PLAIN, 4, 1.0, 7))
    assert len(frames) == SIZE + 1  # the blank start, then every finished row
    assert "Row 1 of 16" in frames[1][1] and frames[-1][1].startswith("Done: 4 samples")
    first = grid_tiles(frames[1][0], 4, 2)[0]
    assert is_pending(first)[tab.GRID_SCALE:].all() and not is_pending(first)[:tab.GRID_SCALE].any()
    assert not is_pending(frames[-1][0]).any()
    again = list(tab.generate(tab.PLAIN, 4, 1.0, 7))[-1][0]
    other = list(tab.generate(tab.PLAIN, 4, 1.0, 8))[-1][0]
    assert np.array_equal(np.asarray(again), np.asarray(frames[-1][0]))
    assert not np.array_equal(np.asarray(other), np.asarray(frames[-1][0]))


def test_temperature_is_clamped_and_zero_is_greedy(models):
    grid, status = list(tab.generate(tab.GATED, 4, 0, 3))[-1]
    tiles = [levels_of(t, tab.GRID_SCALE) for t in grid_tiles(grid, 4, 2)]
    assert all(torch.equal(tiles[0], t) for t in tiles[1:]) and "greedy" in status
    _, status = list(tab.generate(tab.GATED, 99, 50, 3))[-1]
    assert "Temperature set to 2" in status and "Limited to 16 samples" in status


def test_completion_keeps_the_known_pixels_and_labels_each_completion(models):
    frames = list(tab.complete_image(tab.GATED, 1, None, 8, 16, 0, 16, 3, 1.0, 5))
    assert len(frames) == SIZE
    gallery, status = frames[-1]
    assert len(gallery) == 2 + 3 and status.startswith("Done: 3 completions of 128 hidden pixels")
    original = levels_of(gallery[0][0], tab.TILE_SCALE)
    assert torch.equal(original, tab._test_set(SIZE, K)[0][1, 0])
    assert gallery[0][1].startswith("test image 1, labelled Trouser")
    completions = [levels_of(image, tab.TILE_SCALE) for image, _ in gallery[2:]]
    for completion in completions:
        assert torch.equal(completion[:8], original[:8])  # the known upper half, unchanged
    assert any(not torch.equal(c[8:], original[8:]) for c in completions)
    for _, caption in gallery[2:]:
        assert re.fullmatch(r"completion \d: " + CLASS, caption), caption
    assert is_pending(frames[3][0][2][0])[8 * tab.TILE_SCALE:].any()  # still drawing the hidden rows


def test_the_hidden_region_may_cover_everything_but_not_nothing(models):
    with pytest.raises(ValueError, match="nothing to complete"):
        list(tab.complete_image(tab.PLAIN, 0, None, 5, 5, 0, 16, 2, 1.0, 0))
    _, status = list(tab.complete_image(tab.PLAIN, 0, None, 0, 16, 0, 16, 2, 1.0, 0))[-1]
    assert "plain sampling" in status
    _, status = list(tab.complete_image(tab.PLAIN, 0, None, 12, 4, 3, 9, 2, 1.0, 0))[-1]  # ends swapped
    assert "Done: 2 completions of 48 hidden pixels" in status and "not looked at" in status


@pytest.mark.parametrize("mode, size", [("RGBA", (8, 9)), ("P", (300, 40)), ("I;16", (20, 50)), ("L", (64, 64))])
def test_an_upload_of_any_size_and_mode_is_completed(models, tmp_path, mode, size):
    drawing = np.full(size[::-1], 230, dtype=np.uint8)  # a dark shape on light paper
    if min(size) >= 3:
        drawing[size[1] // 3:2 * size[1] // 3 + 1, size[0] // 3:2 * size[0] // 3 + 1] = 20
    image = Image.fromarray(drawing.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(drawing)
    path = tmp_path / "upload.png"
    image.convert(mode).save(path) if mode != "I;16" else image.save(path)
    gallery, status = list(tab.complete_image(tab.PLAIN, 0, str(path), 8, 16, 0, 16, 2, 1.0, 0))[-1]
    assert status.count("Done:") == 1 and len(gallery) == 4
    assert f"cropped from {size[0]}×{size[1]} to 16×16" in status
    assert "inverted" in status  # a light border: made light-on-black like Fashion-MNIST
    assert levels_of(gallery[0][0], tab.TILE_SCALE)[0, 0] == 0


def test_a_picture_too_small_to_complete_gets_one_sentence(models, tmp_path):
    import gradio as gr

    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 200).save(path)
    with pytest.raises(gr.Error, match="at least 8 pixels"):
        list(user_errors(tab.complete_image)(tab.PLAIN, 0, str(path), 8, 16, 0, 16, 2, 1.0, 0))


def test_a_file_that_is_not_an_image_gets_one_sentence(models, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="not an image that can be read"):
        list(tab.complete_image(tab.PLAIN, 0, str(path), 8, 16, 0, 16, 2, 1.0, 0))


def test_a_pixel_outside_the_image_is_refused_and_a_click_is_clamped(models):
    for row, col in ((16, 0), (0, -1), ("x", 3)):
        with pytest.raises(ValueError, match="outside|numbers from 0"):
            tab.inspect_pixel(tab.PLAIN, 0, None, row, col)
    row, col, marked, *_ = tab.click_pixel(tab.PLAIN, 0, None, SimpleNamespace(index=[10_000, -5]))
    assert (row, col) == (0, SIZE - 1) and marked.size == (SIZE * tab.CLICK_SCALE,) * 2
    row, col, *_ = tab.click_pixel(tab.PLAIN, 0, None, SimpleNamespace(index=[3 * 16 + 5, 7 * 16 + 15]))
    assert (row, col) == (7, 3)
    with pytest.raises(ValueError, match="Click on the image"):
        tab.click_pixel(tab.PLAIN, 0, None, SimpleNamespace(index=None))


def test_the_plain_model_has_a_blind_spot_and_the_gated_one_does_not(models):
    plain = pixelcnn.receptive_field(models[tab.PLAIN], 8, 8)
    gated = pixelcnn.receptive_field(models[tab.GATED], 8, 8)
    assert tab.blind_in_reach(plain, 8, 8)[0] > 0
    assert tab.blind_in_reach(gated, 8, 8) == (0, tab.blind_in_reach(gated, 8, 8)[1])
    codes = tab.field_categories(plain, 8, 8)
    assert codes[8, 8] == 3 and (codes.flatten()[8 * SIZE + 9:] == 0).all()  # nothing after the pixel is reached
    assert codes[7, 12] == 2  # up and to the right: the classic blind spot
    marked, distribution, fields, sentence = tab.inspect_pixel(tab.PLAIN, 0, None, 8, 8)
    picture = np.asarray(fields)
    blind_colour = np.array(tab.BLIND) * 255
    top = picture[:int(picture.shape[0] * 0.8)]  # above the legend
    share = [(np.abs(half.astype(int) - blind_colour) < 3).all(-1).mean()
             for half in (top[:, :top.shape[1] // 2], top[:, top.shape[1] // 2:])]
    assert share[0] > 0.005 and share[1] == 0  # orange (the blind spot) only in the plain model's panel
    assert "blind spot" in sentence and distribution.size[0] > 100


def test_the_first_pixel_has_no_past_and_its_distribution_sums_to_one(models):
    *_, sentence = tab.inspect_pixel(tab.GATED, 2, None, 0, 0)
    assert "first pixel" in sentence
    probs = pixelcnn.pixel_distribution(models[tab.GATED], tab._test_set(SIZE, K)[0][:1], 0, 0)
    assert probs.shape == (1, K) and abs(float(probs.sum()) - 1) < 1e-5


def test_masks_and_explanation_are_drawn():
    picture = tab.masks_picture()
    assert picture.size[0] > 500
    text = tab.why_text()
    assert "p(x) = ∏" in text and "Mask A" in text and "gated" in text


def test_missing_models_say_in_one_sentence_how_to_make_them(monkeypatch):
    monkeypatch.setattr(tab, "model_choices", lambda: [])
    sentences = tab.missing_models()
    assert len(sentences) == 2 and all("python -m core.train pixelcnn --model" in s for s in sentences)
    with pytest.raises(ValueError, match="No PixelCNN is trained yet"):
        list(tab.generate(tab.PLAIN, 2, 1.0, 0))


def test_the_shipped_models_generate_complete_and_show_the_blind_spot():
    for name in (tab.PLAIN, tab.GATED):
        path = shipped_path("pixelcnn", name)
        require(path.is_file() and path.with_suffix(".json").is_file(),
                f"{path.name} is not trained yet: {tab.MAKE[name]}")
    grid, status = list(tab.generate(tab.GATED, 2, 1.0, 0))[-1]
    assert status.startswith("Done: 2 samples") and np.asarray(grid.convert("L")).std() > 10
    gallery, status = list(tab.complete_image(tab.PLAIN, 0, None, 8, 16, 0, 16, 2, 1.0, 0))[-1]
    assert len(gallery) == 4 and re.search("completion 2: " + CLASS, gallery[-1][1])
    plain = pixelcnn.receptive_field(pixelcnn.load_model(tab.PLAIN), 8, 8)
    gated = pixelcnn.receptive_field(pixelcnn.load_model(tab.GATED), 8, 8)
    assert tab.blind_in_reach(plain, 8, 8)[0] > 0 and tab.blind_in_reach(gated, 8, 8)[0] == 0


def test_the_preview_shows_the_hidden_region_and_the_clickable_image(models):
    shown, clickable, note = tab.preview(tab.PLAIN, 2, None, 8, 16, 4, 12)
    assert note == "Test image 2: 64 of 256 pixels hidden."
    hidden = is_pending(shown)[::tab.TILE_SCALE, ::tab.TILE_SCALE]
    assert hidden[8:, 4:12].all() and hidden.sum() == 64
    assert clickable.size == (SIZE * tab.CLICK_SCALE,) * 2 and not is_pending(clickable).any()


def test_the_tab_builds_without_models_and_says_how_to_make_them(monkeypatch):
    import gradio as gr

    monkeypatch.setattr(tab, "model_choices", lambda: [])
    with gr.Blocks() as demo:
        tab.build()
    texts = [block.value or "" for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert sum("is not shipped yet" in text for text in texts) == 2
    assert not [fn for fn in demo.fns.values()]  # nothing to click that could only fail


def test_the_lesson_links_only_real_settings_and_shows_the_masked_convolution_and_the_sampling_loop():
    import gradio as gr

    from tabs.common import code_of

    with gr.Blocks():
        page = tab.build()
    assert page.lesson is tab.LESSON and set(page.settings) == {"model", "temperature", "samples", "seed"}
    for example in tab.LESSON.try_this:
        for name, value in example.settings.items():
            widget = page.settings[name]
            if isinstance(widget, gr.Slider):
                assert widget.minimum <= value <= widget.maximum, (example.label, name, value)
            elif isinstance(widget, gr.Dropdown):
                assert value in [v for _, v in widget.choices], (example.label, name, value)
    shown = "\n".join(code_of(code.module, *code.names) for code in tab.LESSON.code)
    assert 'mask[centre, :centre + (kind == "B")] = 1' in shown and "self.weight * self.mask" in shown
    assert "torch.multinomial(probs, 1, generator=generator)" in shown
