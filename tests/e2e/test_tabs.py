"""Every tab, in a real browser: open it, run its main action with the default settings, and check that
a real result reached the page (a picture that is not blank, sound that is not silence, text, a plot).

    python -m pytest tests/e2e                                        # screenshots to a temporary folder
    GENLAB_SCREENSHOTS=docs/screenshots python -m pytest tests/e2e   # refresh the README's screenshots
"""
from __future__ import annotations

import io
import re
import time
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from tabs import GROUPS

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
    """Click a tab as a user does: its book part's tab, then its own."""
    group = next(group for group, _, tabs in GROUPS if title in [name for name, _ in tabs])
    page.get_by_role("tab", name=group, exact=True).click()
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


def test_adversarial_attack_fools_lite0_on_an_example_photo(page, screenshot_dir):
    open_tab(page, "Adversarial examples")
    page.locator("#adversarial-examples button").filter(has=page.locator("img[src*='grace_hopper']")).click()
    page.locator("#adversarial-image img").first.wait_for()  # the example reached the photo box
    page.locator("#adversarial-run").click()  # the defaults: PGD, 10 steps, ε = 4/255, untargeted
    page.locator("#adversarial-status").get_by_text("Fooled").wait_for(timeout=JOB_TIMEOUT_MS)
    assert "military uniform" in page.locator("#adversarial-status").inner_text()  # its answer before the attack
    for picture in ("#adversarial-original", "#adversarial-perturbation", "#adversarial-result"):
        assert_picture(page, picture, min_side=200)
    assert_picture(page, "#adversarial-bars", min_side=200)
    assert "magnified ×31.9" in page.locator("#adversarial-scale").inner_text()
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "adversarial")


def test_vae_draws_the_latent_map_and_decodes_a_random_face(page, screenshot_dir):
    open_tab(page, "VAE")
    page.locator("#vae-draw-map").click()
    assert_picture(page, "#vae-map", min_side=400)
    assert_picture(page, "#vae-grid", min_side=400)
    page.locator("#vae-random").click()
    assert_picture(page, "#vae-face", min_side=64)
    page.locator("#spaces-draw").click()  # the tab's first section, what a screenshot of its top shows
    for space in ("pca", "autoencoder", "vae"):
        assert_picture(page, f"#spaces-map-{space}", min_side=200)
    assert_no_error(page)
    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page, screenshot_dir, "vae")


def test_vae_latent_spaces_draw_decode_a_click_sample_and_denoise(page):
    from tabs.latent_spaces import MAP_PX, SAMPLES, space

    open_tab(page, "VAE")
    page.locator("#spaces-draw").click()
    for name in ("pca", "autoencoder", "vae"):
        assert_picture(page, f"#spaces-map-{name}", min_side=250)
    # A click on the autoencoder's map decodes the code under the pointer (the map is shown at about its
    # natural size; Gradio reports the click in the picture's own pixels).
    image = page.locator("#spaces-map-autoencoder img").first
    plain_map = image.get_attribute("src")
    box = image.bounding_box()
    image.click(position={"x": 200, "y": 75})
    column = page.locator("#spaces-map-autoencoder").locator("xpath=..")  # the map, its decoded point and code
    code = column.get_by_label("code")
    page.wait_for_function("box => box.value.startsWith('z = (')", arg=code.element_handle(),
                           timeout=JOB_TIMEOUT_MS)
    z = [float(v) for v in re.findall(r"[-+]\d+\.\d+", code.input_value())]
    window = space("autoencoder").window
    expected = window.to_code(200 * MAP_PX / box["width"], 75 * MAP_PX / box["height"], MAP_PX)
    pixel = 2 * window.half / (MAP_PX - 1)  # one pixel of the map, in code units
    assert len(z) == 2 and all(abs(a - b) <= 1.5 * pixel for a, b in zip(z, expected)), (z, expected)
    decoded = column.locator("img").nth(1)  # the decoded point, beside its code
    decoded.wait_for(timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=decoded.element_handle(),
                           timeout=JOB_TIMEOUT_MS)
    stats = decoded.evaluate(PIXEL_STD_JS)
    assert stats["width"] >= 100 and stats["std"] > 8, stats
    assert image.get_attribute("src") != plain_map  # the map now rings the clicked point
    page.locator("#spaces-sample").click()
    page.locator("#spaces-verdict").get_by_text(f"of {SAMPLES}").first.wait_for(timeout=JOB_TIMEOUT_MS)
    assert page.locator("#spaces-verdict").inner_text().count(f"of {SAMPLES}") == 3  # one verdict per space
    page.locator("#spaces-eigen").click()
    direction = page.get_by_label("number input for direction 1")
    direction.fill("2")
    direction.press("Enter")
    assert_picture(page, "#spaces-eigen-image", min_side=150)  # the mean image moved along direction 1
    page.locator("#spaces-denoise").click()
    page.locator("#spaces-denoise-note").get_by_text("Mean squared error").wait_for(timeout=JOB_TIMEOUT_MS)
    assert len(re.findall(r"\d\.\d{4}", page.locator("#spaces-denoise-note").inner_text())) == 3
    assert_no_error(page)


def test_gan_generates_a_grid(page, screenshot_dir):
    open_tab(page, "GAN")
    page.locator("#gan-generate").click()
    assert_picture(page, "#gan-samples", min_side=200)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "gan")


def test_gan_mixes_two_faces_styles(page):
    open_tab(page, "GAN")
    page.get_by_text("StyleGAN: style mixing, truncation in w, noise").click()
    page.locator("#gan-style-mix").click()
    assert_picture(page, "#gan-style-trio", min_side=90)
    assert_no_error(page)


def test_pixelcnn_generates_a_grid_pixel_by_pixel(page, screenshot_dir):
    open_tab(page, "PixelCNN")
    page.locator("#pixelcnn-generate").click()
    page.locator("#pixelcnn-status").get_by_text("Done:").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#pixelcnn-samples", min_side=200)  # 16 samples at 96 px each
    dark = page.locator("#pixelcnn-samples img").first.evaluate("""img => {
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        canvas.getContext("2d").drawImage(img, 0, 0);
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) n += data[i] + data[i + 1] + data[i + 2] < 120;
        return n / (data.length / 4);
    }""")
    assert dark > 0.1, f"hardly any drawn black background: {dark:.1%}"  # pale blue = not drawn yet
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "pixelcnn")


def test_flow_learns_live_and_follows_a_clicked_point(page, screenshot_dir):
    open_tab(page, "Normalizing flow")
    assert_picture(page, "#flow-live-picture", min_side=400)  # a flow is started when the tab opens
    assert_picture(page, "#flow-latent-plane", min_side=300)
    live = page.locator("#flow-live-box")
    live.get_by_role("button", name="Step", exact=True).click()
    live.get_by_text("Step 10: NLL").wait_for(timeout=JOB_TIMEOUT_MS)
    live.get_by_role("button", name="▶ Play").click()
    live.get_by_text(re.compile(r"Step [3-9]\d\d: NLL")).wait_for(timeout=JOB_TIMEOUT_MS)  # a flow that has learned
    live.get_by_role("button", name="Pause").click()
    page.locator("#flow-latent-plane img").first.click(position={"x": 200, "y": 120})
    page.locator("#flow-path-note").get_by_text("x = f⁻¹(z)").wait_for(timeout=JOB_TIMEOUT_MS)
    assert "z = (+0.7" in page.locator("#flow-path-note").inner_text()  # pixel (200, 120) is (0.76, 0.74)
    page.locator("#flow-generate").click()
    assert_picture(page, "#flow-samples", min_side=200)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "flow")


def test_ebm_samples_compares_the_samplers_and_scores(page, screenshot_dir):
    open_tab(page, "Energy-based model")
    page.locator("#ebm-sample").click()
    assert_picture(page, "#ebm-final", min_side=128)  # only filled when the last Langevin step is done
    assert_picture(page, "#ebm-energy-plot", min_side=200)
    page.get_by_text("Step 200 of 200").first.wait_for(timeout=JOB_TIMEOUT_MS)  # the viewer at the last step
    assert_picture(page, "#ebm-viewer", min_side=128)
    page.locator("#ebm-compare").click()
    assert_picture(page, "#ebm-compare-grid", min_side=400)  # five labelled rows of eight samples
    page.locator("#ebm-score").click()
    assert_picture(page, "#ebm-histogram", min_side=200)
    page.locator("#ebm-score-note").get_by_text("AUROC").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "ebm")


def test_diffusion_samples_to_the_end(page, screenshot_dir):
    open_tab(page, "Diffusion")
    page.locator("#diffusion-sample").click()
    assert_picture(page, "#diffusion-final", min_side=128)  # only filled when the last step is done
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "diffusion")


def test_text_to_image_generates_a_prompt_and_compares_the_guidance_weights(page, screenshot_dir):
    open_tab(page, "Text to image")
    page.locator("#t2i-generate").click()  # the defaults: a held-out pair, w = 3, 50 steps, 4 images
    assert_picture(page, "#t2i-final", min_side=128)  # only filled when the last step is done
    page.locator("#t2i-note").get_by_text("Done:").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#text_to_image-viewer", min_side=96)  # the viewer at the last step: five panels
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "text_to_image")
    page.get_by_role("tab", name="Same seed, four weights", exact=True).click()
    page.locator("#t2i-strip-go").click()
    page.locator("#t2i-strip img").nth(3).wait_for(timeout=JOB_TIMEOUT_MS)
    assert page.locator("#t2i-strip img").count() == 4
    assert_no_error(page)


def test_musegan_plays_a_new_piece(page, screenshot_dir):
    open_tab(page, "Music")  # its first part is MuseGAN
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


def _open_music_transformer(page) -> None:
    open_tab(page, "Music")
    page.get_by_role("tab", name="Transformer", exact=True).click()


def _expected_measure_columns() -> list[str]:
    """The reference columns of the measures, from the shipped cards (the Transformer's when it has measures)."""
    from core.registry import read_card

    columns = ["Bach (held-out chorales)", "MuseGAN (1,000 phrases)"]
    if read_card("music_transformer", "chorales")["metrics"].get("music"):
        columns.append("Transformer (continued held-out openings)")
    return columns


def test_music_transformer_continues_a_prompt_and_shows_what_it_attended_to(page, screenshot_dir):
    _open_music_transformer(page)
    page.locator("#music-continue").click()  # the defaults: the first held-out opening, 4 bars
    assert_picture(page, "#music-plot", min_side=200)  # the piano roll, the prompt in grey
    page.locator("#music-note").get_by_text("continued by 4 bar(s) with temperature").wait_for(timeout=JOB_TIMEOUT_MS)
    metrics = page.locator("#music-metrics")
    metrics.get_by_text("this sample (new bars)").wait_for(timeout=JOB_TIMEOUT_MS)
    header = [cell.strip() for cell in metrics.locator("th").all_inner_texts()]
    assert header == ["measure", "this sample (new bars)", *_expected_measure_columns()], header
    assert metrics.locator("tbody tr").count() == 6  # one row per measure
    page.locator("#music-audio a[download]").wait_for(timeout=JOB_TIMEOUT_MS)
    # The attention view follows the continuation: the first new token, then the one the slider moves to.
    # (Gradio's <img> loads lazily: below the fold it stays 0 px until scrolled to, as a reader would.)
    page.locator("#music-attention").scroll_into_view_if_needed()
    assert_picture(page, "#music-attention", min_side=100)
    note = page.locator("#music-attention-note")
    note.get_by_text("New token 1 of 256").wait_for(timeout=JOB_TIMEOUT_MS)  # 4 bars of 64 tokens
    assert page.locator("#music-position input[type=range]").get_attribute("max") == "256"
    first_note, first_picture = note.inner_text(), page.locator("#music-attention img").first.get_attribute("src")
    position = page.locator("#music-position input[type=number]")
    position.fill("200")
    position.press("Enter")
    note.get_by_text("New token 200 of 256").wait_for(timeout=JOB_TIMEOUT_MS)
    assert note.inner_text() != first_note and "read" in note.inner_text()
    page.wait_for_function("([img, before]) => img.getAttribute('src') !== before",
                           arg=[page.locator("#music-attention img").first.element_handle(), first_picture],
                           timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#music-attention", min_side=100)
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "music_transformer")


def test_world_models_drives_a_track_and_dreams_on_a_button(page, screenshot_dir):
    open_tab(page, "World Models")
    steps = page.get_by_label("number input for steps (CarRacing ends at 1,000)", exact=True)
    steps.fill("50")  # the slider's least: half a second of driving
    steps.press("Enter")
    page.locator("#wm-drive").click()  # the default driver: a trained controller when one is shipped
    status = page.locator("#wm-status")
    status.get_by_text("Finished.").wait_for(timeout=JOB_TIMEOUT_MS)
    assert re.search(r"step 50 of 50, return -?\d+\.\d", status.inner_text()), status.inner_text()
    assert_picture(page, "#wm-seen", min_side=288)  # 96 px, whole pixels x 3
    assert_picture(page, "#wm-remade", min_side=256)  # V's 64 px x 4
    assert_picture(page, "#wm-z", min_side=96)
    page.locator("#wm-dream-start").scroll_into_view_if_needed()
    page.locator("#wm-dream-start").click()
    page.locator("#wm-dream-status").get_by_text("started from a real frame").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#wm-dream", min_side=256)
    started = page.locator("#wm-dream img").first.get_attribute("src")
    page.locator("#wm-gas").click()
    page.locator("#wm-dream-status").get_by_text("step 8: “▲ gas”").wait_for(timeout=JOB_TIMEOUT_MS)
    assert page.locator("#wm-dream img").first.get_attribute("src") != started  # the dream moved on
    page.locator("#wm-mixture").scroll_into_view_if_needed()
    assert_picture(page, "#wm-mixture", min_side=150)  # M's mixture for the next z, drawn after the last frame
    assert_no_error(page)
    save_screenshot(page, screenshot_dir, "world_models")


def test_music_transformer_refusal_is_one_message(page):
    _open_music_transformer(page)
    page.locator("#music-prompt input").click()
    page.get_by_role("option", name="my file (upload below)", exact=True).click()
    page.locator("#music-continue").click()  # no file uploaded
    error = page.locator(".toast-body.error")
    error.first.wait_for(timeout=JOB_TIMEOUT_MS)
    time.sleep(2)  # a second message for the same click (the attention view's) arrives meanwhile
    assert error.count() == 1 and "Upload a MIDI or MusicXML file" in error.first.inner_text(), error.all_inner_texts()


def test_text_attention_shows_each_head_for_the_inspected_character(page):
    page.locator("#text-generate").click()  # the default model is the GPT
    page.locator("#text-notes").get_by_text("characters at T").wait_for(timeout=JOB_TIMEOUT_MS)
    page.get_by_text("Attention (GPT): which earlier characters").click()
    attention = page.locator("#text-attention")
    attention.get_by_text("Layer 1, choosing character 300 (outlined)").wait_for(timeout=JOB_TIMEOUT_MS)
    assert attention.get_by_text(re.compile(r"^head \d$")).count() == 4  # gpt_shakespeare's heads
    assert attention.locator("span[title]").count() >= 4 * 100  # each head over (up to) 128 characters
    inspect = page.get_by_label("number input for inspect step (after generating)")
    inspect.fill("12")
    inspect.press("Enter")
    attention.get_by_text("choosing character 12 (outlined)").wait_for(timeout=JOB_TIMEOUT_MS)
    assert "over the 18 characters it could see" in attention.inner_text()  # "ROMEO:\n" and 11 generated
    assert_no_error(page)


def test_text_refusal_is_one_message(page):
    page.locator("#text-model input").click()
    page.get_by_role("option", name="your own model (train it below)").click()
    page.locator("#text-generate").click()
    error = page.locator(".toast-body.error")
    error.first.wait_for(timeout=JOB_TIMEOUT_MS)
    time.sleep(2)  # a second message for the same click (the attention view's) arrives meanwhile
    assert error.count() == 1 and "not trained your own model" in error.first.inner_text(), error.all_inner_texts()


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
    assert shown.startswith("Stopped at: Octave 1/"), shown  # says it stopped, not "iteration 12 · 20% done"
    # The tab's one slot is free again: a short dream runs to the end.
    iterations.fill("1")
    iterations.press("Enter")
    page.locator("#dream-run").click()
    status.get_by_text("Done in").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_no_error(page)


def test_a_handler_error_reaches_the_page_as_a_sentence(page):
    open_tab(page, "DeepDream")
    page.locator("#dream-image button[aria-label='Remove Image']").click()  # the tab opens with an example photo
    page.locator("#dream-run").click()  # no photo now
    error = page.locator(".toast-body.error")
    error.wait_for(timeout=JOB_TIMEOUT_MS)
    assert "No image was given" in error.inner_text()
    assert "Traceback" not in error.inner_text()


def test_a_file_that_is_not_an_image_gets_one_sentence(page, tmp_path, screenshot_dir):
    # Gradio used to open every upload itself and fail before the handler, with bare "Error" badges.
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n" * 100)
    open_tab(page, "VAE")
    page.locator("#vae-upload input[type=file]").set_input_files(str(fake))
    page.locator("#vae-encode").click()
    error = page.locator(".toast-body.error")
    error.first.wait_for(timeout=JOB_TIMEOUT_MS)
    time.sleep(1)  # any further toasts and badges of the same failure arrive together
    assert error.count() == 1 and "not an image that can be read" in error.inner_text(), error.all_inner_texts()
    badges = page.locator("[data-testid=status-tracker] .error:visible")  # Gradio's per-output "Error" badge
    assert badges.count() <= 1, f"{badges.count()} outputs say Error"  # the face only, not its 22 sliders


def test_vae_typing_a_grid_size_redraws_the_grid(page):
    open_tab(page, "VAE")
    page.locator("#vae-draw-map").click()
    assert shown_image(page, "#vae-grid")["width"] == 15 * 33 + 1  # the default n = 15: 32-px images, 1-px gaps
    page.locator("#vae-grid-size input[type=number]").fill("5")  # typed, not dragged, and never left
    page.wait_for_function("() => document.querySelector('#vae-grid img').naturalWidth === 5 * 33 + 1",
                           timeout=JOB_TIMEOUT_MS)
    assert_no_error(page)


TEXT_FITS_JS = """input => {
    const style = getComputedStyle(input);
    const context = document.createElement("canvas").getContext("2d");
    context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const box = input.getBoundingClientRect(), parent = input.closest(".block").getBoundingClientRect();
    return {text: context.measureText(input.value).width, room: room,
            inside: box.left >= parent.left - 1 && box.right <= parent.right + 1};
}"""


def test_gan_model_boxes_show_the_whole_model_name(page):
    open_tab(page, "GAN")
    for model, classes in (("#gan-walk-model", "#gan-walk-class"), ("#gan-model", "#gan-class")):
        for title in ("Conditional GAN · Fashion-MNIST", "StyleGAN · synthetic faces", "WGAN-GP · synthetic faces",
                      "DCGAN · Fashion-MNIST"):
            box = page.locator(f"{model} input")
            box.click()
            page.locator(model).get_by_role("option", name=title, exact=True).click()  # this box's list only
            page.wait_for_function("([e, v]) => e.value === v", arg=[box.element_handle(), title])
            fits = box.evaluate(TEXT_FITS_JS)
            assert fits["text"] <= fits["room"] and fits["inside"], (model, title, fits)
            # The class box follows the model: usable for the conditional GAN only, and reset otherwise.
            page.wait_for_function("([e, on]) => e.disabled === !on",
                                   arg=[page.locator(f"{classes} input").element_handle(), title.startswith("Cond")])
            assert page.locator(f"{classes} input").input_value() == "one row per class"
    assert_no_error(page)


def test_diffusion_forward_process_is_drawn_on_open_and_follows_a_typed_t(page):
    open_tab(page, "Diffusion")
    page.get_by_role("tab", name="Forward process", exact=True).click()  # no control touched
    assert_picture(page, "#diffusion-noised", min_side=64)
    assert_picture(page, "#diffusion-strip", min_side=64)
    page.get_by_text("t = 0.30: x_t =").wait_for(timeout=JOB_TIMEOUT_MS)
    page.locator("#diffusion-forward-tab input[type=number]").first.fill("0.7")
    page.get_by_text("t = 0.70: x_t =").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_no_error(page)


# How much of an <img> the label Gradio floats over its block covers (0 when the label is hidden).
LABEL_OVER_IMAGE_JS = """img => {
    const label = img.closest(".block").querySelector('[data-testid="block-label"]');
    if (!label) return 0;
    const a = label.getBoundingClientRect(), b = img.getBoundingClientRect();
    if (a.width < 4 || a.height < 4 || getComputedStyle(label).visibility === "hidden") return 0;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    return Math.max(0, w) * Math.max(0, h);
}"""


def test_diffusion_image_labels_leave_the_pictures_uncovered(page):
    open_tab(page, "Diffusion")
    page.locator("#diffusion-sample").click()
    for sub_tab, selectors in ((None, ("#diffusion-final", "#diffusion-viewer")),
                               ("Forward process", ("#diffusion-noised", "#diffusion-strip"))):
        if sub_tab:
            page.get_by_role("tab", name=sub_tab, exact=True).click()
        for selector in selectors:
            shown_image(page, selector)
            image = page.locator(f"{selector} img").first
            covered = image.evaluate(LABEL_OVER_IMAGE_JS)
            assert covered == 0, f"the label covers {covered:.0f} px² of {selector}"
            assert image.bounding_box()["height"] > 32  # really on screen, so the check above means something
    assert_no_error(page)


def _midi_with_tracks(path: Path, tracks: int) -> Path:
    """Four bars at 100 beats per minute, one line of quarter notes per track."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    for track in range(tracks):
        instrument = pretty_midi.Instrument(program=0, name=f"Track {track + 1}")
        instrument.notes = [pretty_midi.Note(80, 72 - 7 * track % 40 + beat % 3, 0.6 * beat, 0.6 * beat + 0.6)
                            for beat in range(16)]
        pm.instruments.append(instrument)
    pm.write(str(path))
    return path


def _measure_upload(page, path: Path) -> None:
    clear = page.locator("#musegan-upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#musegan-upload input[type=file]").set_input_files(str(path))
    page.locator(f"#musegan-upload td.filename[aria-label='{path.name}']").wait_for(timeout=JOB_TIMEOUT_MS)
    page.locator("#musegan-measure").click()


def test_musegan_upload_error_clears_the_previous_result(page, tmp_path):
    open_tab(page, "Music")  # its first part is MuseGAN
    page.get_by_text("Measure your own four-part MIDI or MusicXML").click()
    _measure_upload(page, _midi_with_tracks(tmp_path / "quartet.mid", 4))
    page.locator("#musegan-note").get_by_text("quartet.mid: first 4 bars").wait_for(timeout=JOB_TIMEOUT_MS)
    assert_picture(page, "#musegan-plot", min_side=200)
    _measure_upload(page, _midi_with_tracks(tmp_path / "band.mid", 16))
    error = page.locator(".toast-body.error")
    error.wait_for(timeout=JOB_TIMEOUT_MS)
    assert "has 16 parts" in error.inner_text() and "exactly four parts" in error.inner_text()
    assert page.locator("#musegan-plot img").count() == 0  # quartet.mid's piano roll is gone...
    assert "quartet.mid" not in page.locator("#musegan-note").inner_text()  # ...and so are its note
    assert "Bach" not in page.locator("#musegan-metrics").inner_text()  # and its metrics table


def _audio_bytes(page, previous: bytes | None = None, wait_s: float = 30) -> bytes:
    """The WAV the player offers, waiting up to `wait_s` for one different from `previous` (a replay
    takes about a second; the same sound stays the same file, so nothing else says it is done)."""
    link = page.locator("#musegan-audio a[download]")
    deadline = time.monotonic() + wait_s
    while True:
        link.wait_for(timeout=JOB_TIMEOUT_MS)
        body = page.request.get(link.get_attribute("href")).body()
        if body != previous or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_musegan_instruments_are_heard_or_the_page_says_they_are_not(page):
    open_tab(page, "Music")  # its first part is MuseGAN
    page.locator("#musegan-new").click()
    flute = _audio_bytes(page)
    notes_before = page.locator("#musegan-note").inner_text()
    page.locator("#musegan-soprano input").click()
    page.get_by_role("option", name="Trumpet", exact=True).click()  # the soprano's flute becomes a trumpet
    trumpets = _audio_bytes(page, flute)
    silent_instruments = "not audible" in page.locator("#musegan-note").inner_text()
    assert silent_instruments == ("not audible" in notes_before)
    # Either the instruments sound different, or the page said plainly that they cannot be heard here.
    assert (trumpets != flute) != silent_instruments
    assert_no_error(page)


def test_text_prompt_the_model_cannot_read_says_so_and_lists_hebrew_in_order(page):
    page.locator("#text-model input").click()
    page.get_by_role("option", name="LSTM · nietzsche", exact=False).click()
    page.locator("#text-prompt textarea").fill("שלום עולם")
    page.locator("#text-generate").click()
    notes = page.locator("#text-notes")
    notes.get_by_text("Nothing of the prompt was kept").wait_for(timeout=JOB_TIMEOUT_MS)
    shown = notes.inner_text()
    assert "\u2068ש\u2069 (U+05E9 HEBREW LETTER SHIN); \u2068ל\u2069 (U+05DC HEBREW LETTER LAMED)" in shown, shown
    text = page.locator("#text-output textarea").input_value()
    assert text.startswith("\n") and len(text.split()) > 10, repr(text[:80])


def test_deepdream_guided_result_keeps_its_height(page):
    # With the guide accordion open the page scrolls down to the Dream button; the result's <img> used
    # to collapse to a 2-px strip then (its block had no height of its own).
    open_tab(page, "DeepDream")
    upload(page, "#dream-image", DREAM_PHOTO)
    iterations = page.locator("#dream-iterations input[type=number]")
    iterations.fill("2")
    iterations.press("Enter")
    page.get_by_text("Guide image (optional)").click()
    upload(page, "#dream-guide", ROOT / "assets" / "examples" / "dream" / "lion.jpg")
    page.locator("#dream-run").click()
    page.locator("#dream-status").get_by_text("Done in").wait_for(timeout=JOB_TIMEOUT_MS)
    picture = page.locator("#dream-result img").first
    assert picture.bounding_box()["height"] > 300, picture.bounding_box()
    picture.scroll_into_view_if_needed()
    assert_picture(page, "#dream-result", min_side=256)
    assert picture.bounding_box()["height"] > 300, picture.bounding_box()
    assert_no_error(page)


def test_style_noise_start_sets_its_defaults_and_stop_says_stopped(page):
    open_tab(page, "Style transfer")
    page.locator("#style-init").get_by_label("noise", exact=True).check()
    # Choosing noise moves the content weight and the iterations to what a noise start needs.
    page.wait_for_function("() => document.querySelector('#style-iterations input[type=number]').value === '200'",
                           timeout=JOB_TIMEOUT_MS)
    assert page.locator("#style-content-weight input[type=number]").input_value() == "1.5"
    upload(page, "#style-content", STYLE_PHOTO)
    upload(page, "#style-style", STYLE_PAINTING)
    iterations = page.locator("#style-iterations input[type=number]")
    iterations.fill("1000")  # a minute or more: Stop must end it
    iterations.press("Enter")
    page.locator("#style-run").click()
    status = page.locator("#style-status")
    status.get_by_text("Working: ").wait_for(timeout=JOB_TIMEOUT_MS)
    page.locator("#style-stop").click()
    status.get_by_text("Stopped: ").wait_for(timeout=JOB_TIMEOUT_MS)
    assert "/1000 iterations" in status.inner_text() and "Done" not in status.inner_text()
    # The plot explains which curves fall for which start (not "all three should fall").
    caption = page.locator("#style-curves").get_by_text("From the photo, style falls while content")
    assert caption.count() == 1
    assert_no_error(page)


def test_deepdream_vgg19_offline_falls_back_in_one_sentence(offline_page):
    page = offline_page
    open_tab(page, "DeepDream")
    page.locator("#dream-network input").click()
    page.get_by_role("option", name="VGG19 (torchvision download)").click()
    page.wait_for_function("() => document.querySelector('#dream-layer-1 input').value === 'relu4_2'",
                           timeout=JOB_TIMEOUT_MS)
    page.get_by_label("start from noise instead of the photo").check()
    iterations = page.locator("#dream-iterations input[type=number]")
    iterations.fill("1")
    iterations.press("Enter")
    page.locator("#dream-run").click()
    warning = page.locator(".toast-body.warning")
    warning.first.wait_for(timeout=JOB_TIMEOUT_MS)
    assert warning.first.inner_text().strip().endswith(
        "The VGG19 weights could not be downloaded, so the offline EfficientNet-Lite0 was used instead."), \
        warning.first.inner_text()
    page.locator("#dream-status").get_by_text("Done in").wait_for(timeout=JOB_TIMEOUT_MS)
    # The boxes show the network and the layer that were actually used.
    page.wait_for_function("() => document.querySelector('#dream-layer-1 input').value === 'block10'",
                           timeout=JOB_TIMEOUT_MS)
    assert page.locator("#dream-network input").input_value().startswith("EfficientNet-Lite0")
    assert_no_error(page)
