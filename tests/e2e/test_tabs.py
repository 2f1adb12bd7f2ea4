"""Every tab, in a real browser: open it, run its main action with the default settings, and check that
a real result reached the page (a picture that is not blank, sound that is not silence, text, a plot).

    python -m pytest tests/e2e                                        # screenshots to a temporary folder
    GENLAB_SCREENSHOTS=docs/screenshots python -m pytest tests/e2e   # refresh the README's screenshots
"""
from __future__ import annotations

import io
import time
import wave
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DREAM_PHOTO = ROOT / "assets" / "examples" / "dream" / "grace_hopper.jpg"
STYLE_PHOTO = ROOT / "assets" / "examples" / "style" / "grace_hopper.jpg"
STYLE_PAINTING = ROOT / "assets" / "examples" / "style" / "mosaic.png"
JOB_TIMEOUT_MS = 120_000  # a hang guard for the slowest default job (style transfer: ~10 s alone here)
SCREENSHOT_HEIGHT = 1400  # px of the page kept in a screenshot: the controls and the first results

# Standard deviation of an <img>'s decoded pixels (grey levels 0-255), drawn by the browser itself.
PIXEL_STD_JS = """img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0, sum = 0, squares = 0;
    for (let i = 0; i < data.length; i += 4) {
        const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
        n += 1; sum += v; squares += v * v;
    }
    const mean = sum / n;
    return {width: img.naturalWidth, height: img.naturalHeight, std: Math.sqrt(squares / n - mean * mean)};
}"""


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title, exact=True).click()


def shown_image(page, selector: str) -> dict:
    """Wait until the <img> inside `selector` is loaded; return its size and pixel spread."""
    image = page.locator(f"{selector} img").first
    image.wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=JOB_TIMEOUT_MS)
    return image.evaluate(PIXEL_STD_JS)


def assert_picture(page, selector: str, min_side: int = 32) -> None:
    stats = shown_image(page, selector)
    assert min(stats["width"], stats["height"]) >= min_side, stats
    assert stats["std"] > 8, f"{selector} shows a blank picture: {stats}"


def assert_no_error(page) -> None:
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def upload(page, selector: str, path: Path) -> None:
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    page.locator(f"{selector} img").first.wait_for()  # the preview: the upload reached the server


def save_screenshot(page, folder: Path, name: str) -> None:
    """A 1280-px-wide PNG of the top of the page, reduced to 256 colours to stay small."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for close in page.locator(".toast-close").all():  # "resized from ..." notes would cover the header
        try:
            close.click(timeout=2000)
        except PlaywrightTimeoutError:  # the note closed itself meanwhile (Gradio's toasts time out)
            pass
    page.evaluate("window.scrollTo(0, 0)")
    picture = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    picture = picture.crop((0, 0, picture.width, min(picture.height, SCREENSHOT_HEIGHT)))
    picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(folder / f"{name}.png", optimize=True)


def test_text_streams_characters_and_plots_the_distribution(page, screenshot_dir):
    prompt = page.locator("#text-output textarea")
    page.locator("#text-generate").click()
    page.locator("#text-notes").get_by_text("characters at T").wait_for(timeout=JOB_TIMEOUT_MS)
    text = prompt.input_value()
    assert text.startswith("ROMEO:") and len(text) >= len("ROMEO:\n") + 300  # the slider's default length
    assert len(set(text)) > 10  # real text, not one character repeated
    assert_picture(page, "#text-distribution", min_side=200)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "text")


def test_deepdream_dreams_on_an_uploaded_photo(page, screenshot_dir):
    open_tab(page, "DeepDream")
    upload(page, "#dream-image", DREAM_PHOTO)
    page.locator("#dream-run").click()
    page.locator("#dream-status").get_by_text("Done in").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#dream-result", min_side=256)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "dream")


def test_style_transfer_paints_the_example(page, screenshot_dir):
    open_tab(page, "Style transfer")
    upload(page, "#style-content", STYLE_PHOTO)
    upload(page, "#style-style", STYLE_PAINTING)
    page.locator("#style-run").click()
    page.locator("#style-status").get_by_text("Done:").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#style-result", min_side=128)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "style")


def test_vae_draws_the_latent_map_and_decodes_a_random_face(page, screenshot_dir):
    open_tab(page, "VAE")
    page.locator("#vae-draw-map").click()
    assert_picture(page, "#vae-map", min_side=400)
    assert_picture(page, "#vae-grid", min_side=400)
    page.locator("#vae-random").click()
    assert_picture(page, "#vae-face", min_side=64)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "vae")


def test_gan_generates_a_grid(page, screenshot_dir):
    open_tab(page, "GAN")
    page.locator("#gan-generate").click()
    assert_picture(page, "#gan-samples", min_side=200)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "gan")


def test_diffusion_samples_to_the_end(page, screenshot_dir):
    open_tab(page, "Diffusion")
    page.locator("#diffusion-sample").click()
    assert_picture(page, "#diffusion-final", min_side=128)  # only filled when the last step is done
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "diffusion")


def test_musegan_plays_a_new_piece(page, screenshot_dir):
    open_tab(page, "MuseGAN")
    page.locator("#musegan-new").click()
    link = page.locator("#musegan-audio a[download]")
    link.wait_for(timeout=JOB_TIMEOUT_MS)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    with wave.open(io.BytesIO(response.body())) as sound:
        frames = sound.readframes(sound.getnframes())
        assert sound.getnframes() / sound.getframerate() > 2  # four bars at 90 beats per minute: ~10 s
    samples = np.frombuffer(frames, dtype=np.int16)
    assert np.count_nonzero(samples) > len(samples) // 4, "the audio is (mostly) silence"
    assert_picture(page, "#musegan-plot", min_side=200)  # the piano roll
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "musegan")


def test_stop_button_stops_a_long_dream_and_frees_the_tab(page):
    open_tab(page, "DeepDream")
    upload(page, "#dream-image", DREAM_PHOTO)
    iterations = page.locator("#dream-iterations input[type=number]")
    iterations.fill("100")  # 300 steps: about a minute here
    iterations.press("Enter")
    page.locator("#dream-run").click()
    status = page.locator("#dream-status")
    status.get_by_text("iteration").wait_for(timeout=JOB_TIMEOUT_MS)  # the dream is streaming
    page.locator("#dream-stop").click()
    # A stopped dream's status stops changing (a running one updates every 0.4 s) and never says Done.
    deadline, shown, since = time.monotonic() + 60, status.inner_text(), time.monotonic()
    while time.monotonic() - since < 3:
        assert time.monotonic() < deadline, "the dream kept streaming after Stop"
        time.sleep(0.2)
        if status.inner_text() != shown:
            shown, since = status.inner_text(), time.monotonic()
    assert "Done" not in shown and "Octave 1/" in shown, shown
    # The tab's one slot is free again: a short dream runs to the end.
    iterations.fill("1")
    iterations.press("Enter")
    page.locator("#dream-run").click()
    status.get_by_text("Done in").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_no_error(page)


def test_a_handler_error_reaches_the_page_as_a_sentence(page):
    open_tab(page, "DeepDream")
    page.locator("#dream-run").click()  # no photo uploaded
    error = page.locator(".toast-body.error")
    error.wait_for(timeout=JOB_TIMEOUT_MS)
    assert "No image was given" in error.inner_text()
    assert "Traceback" not in error.inner_text()
