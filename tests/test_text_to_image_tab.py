"""The Text to image tab's handlers, called directly: generation into the step viewer (on tiny hand-made
conditional models: behaviour, not quality), the guidance strip, the notes and clamping of bad input, and the
CLIP views on the shipped CLIP."""
import math
import re

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import tabs.text_to_image as tab
from core import captions, text_to_image
from core.clip import ClipConfig, TinyCLIP
from core.diffusion import DiffusionConfig, UNet
from core.registry import shipped_path
from core.runtime import make_generator
from tabs import stepviewer
from tabs.common import user_errors
from tests.conftest import require

PANEL = 32 * tab.SHOW
LOAD_PIPELINE = text_to_image.load_pipeline  # before any test replaces it


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def _tiny_unet(channels: int, condition_dim: int, seed: int) -> UNet:
    torch.manual_seed(seed)
    model = UNet(DiffusionConfig(channels=channels, widths=(8, 16), attention=False, condition_dim=condition_dim))
    for layer in (model.condition[-1], model.head[-1]):  # zero-initialised: give the condition and output a say
        torch.nn.init.normal_(layer.weight, std=0.2)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def pipelines():
    torch.manual_seed(0)
    clip = TinyCLIP(ClipConfig(widths=(8, 16, 32), text_width=16, text_layers=1)).eval().requires_grad_(False)
    return {"faces32_captions": text_to_image.Pipeline("faces32_captions", _tiny_unet(3, 64, 1), "captions", clip),
            "fashion32_classes": text_to_image.Pipeline("fashion32_classes", _tiny_unet(1, 10, 2), "classes")}


@pytest.fixture
def tiny(monkeypatch, pipelines):
    """Both models as tiny untrained pipelines (the tab's model list and core's loader see them)."""
    monkeypatch.setattr(tab, "model_choices", lambda: [(tab.MODEL_LABELS[n], n) for n in pipelines])
    monkeypatch.setattr(text_to_image, "load_pipeline", lambda name: pipelines[name])
    return pipelines


def run(name="faces32_captions", prompt="a person with red hair", negative="", weight=3.0, steps=10, seed=0, n=2):
    return list(tab.generate(name, prompt, negative, weight, steps, seed, n))


def notes_of(call) -> list[str]:
    with pytest.warns(UserWarning) as caught:
        call()
    return [str(w.message) for w in caught]


# --- build-time constants --------------------------------------------------------------------------

def test_the_constants_repeated_for_build_time_equal_cores():
    assert tab.VOCABULARY == captions.VOCABULARY
    assert tab.FASHION_VOCABULARY == captions.FASHION_VOCABULARY
    assert tab.CONTEXT == captions.CONTEXT
    assert tab.MODELS == text_to_image.MODELS
    assert tab.GUIDANCE_RANGE == text_to_image.GUIDANCE_RANGE
    assert tab.STRIP_WEIGHTS == text_to_image.STRIP_WEIGHTS
    assert tab.SEEN_PROMPTS == [captions.caption_of_pair(pair) for pair in captions.SEEN]
    assert tab.HELD_OUT_PROMPTS == [captions.caption_of_pair(pair) for pair in captions.HELD_OUT]
    for prompt in tab.FASHION_PROMPTS:  # every example names a class and no unknown word
        named, unknown = captions.fashion_classes_in(prompt)
        assert named and not unknown, prompt
    assert set(tab.TRAIN_COMMANDS) == set(tab.MODELS) == set(tab.MODEL_LABELS)


# --- generation and the step viewer ------------------------------------------------------------------

def test_generation_streams_a_frame_per_step_of_five_panels_and_a_final_grid(tiny):
    updates = run(steps=10, n=3)
    assert updates[0][0] is None  # no final grid until the last step
    final, frames, slider, picture, caption, note = updates[-1]
    assert len(frames) == 11 and slider["maximum"] == 10 and slider["value"] == 10
    for k, (frame, text) in enumerate(frames):
        assert frame.size == (5 * PANEL + 4 * 14, PANEL + 30), frame.size
        assert f"Step {k} of 10" in text
    assert "w = 3" in caption and "ε̃ = ε(x_t | ∅) + 3 · (ε(x_t | c) − ε(x_t | ∅))" in caption
    assert picture is frames[-1][0] and caption == frames[-1][1] and "Done: 3 image(s)" in note
    assert final.size == ((2 * 34 + 2) * tab.SHOW,) * 2  # 3 images: a 2×2 grid, 2 px padding
    # The viewer's x_t panel at the last step is the first image of the final grid.
    assert np.array_equal(pixels(frames[-1][0])[30:30 + PANEL, :PANEL], pixels(final)[6:6 + PANEL, 6:6 + PANEL])
    pull = pixels(frames[-1][0])[30:, 4 * (PANEL + 14):]
    # Both signs on the colour-blind safe diverging map: orange (red well above blue) where negative, purple
    # (blue above green and red) where positive.
    assert (pull[..., 0] > pull[..., 2] + 50).any()
    assert ((pull[..., 2] > pull[..., 1] + 30) & (pull[..., 2] > pull[..., 0] + 20)).any()
    for i, shown in ((0, 0), (4, 4), (99, 10)):  # the shared step viewer scrubs the kept frames
        image, text = stepviewer.show_frame(frames, i)
        assert image is frames[shown][0] and f"Step {shown} of 10" in text


def test_the_same_seed_gives_the_same_picture_and_matches_core(tiny):
    first, again, other = (run(seed=seed)[-1][0] for seed in (7, 7, 8))
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))
    images = text_to_image.generate(tiny["faces32_captions"], "a person with red hair", 2, make_generator(7), 3.0, 10)
    assert np.array_equal(pixels(first), pixels(tab._grid(images)))


def test_weight_zero_ignores_the_prompt_and_an_empty_prompt_ignores_the_weight(tiny):
    red = run(prompt="red hair", weight=0)[-1][0]
    glasses = run(prompt="glasses, a smile", weight=0)[-1][0]
    assert np.array_equal(pixels(red), pixels(glasses))  # ε̃ = ε(x|∅) whatever c is
    assert not np.array_equal(pixels(red), pixels(run(prompt="red hair", weight=3)[-1][0]))
    with pytest.warns(UserWarning, match="Empty prompt"):
        at_1, at_7 = run(prompt="", weight=1), run(prompt="", weight=7)
    assert np.array_equal(pixels(at_1[-1][0]), pixels(at_7[-1][0]))
    assert "is 0.000 per pixel" in at_7[-1][4] and "Empty prompt" in at_7[-1][5]
    with pytest.warns(UserWarning, match="pushed away from the negative prompt"):
        away = run(prompt="", negative="red hair", weight=7)[-1]
    assert not np.array_equal(pixels(away[0]), pixels(at_7[-1][0])) and "ε(x_t | n)" in away[4]


@pytest.mark.parametrize("name, prompt, negative, said", [
    ("faces32_captions", "zebra unicorn", "", "No word the model knows"),
    ("faces32_captions", "red hair, black hair", "", "contradicts itself (hair: black and red)"),
    ("faces32_captions", "a photo of a", "", "names none of the facts"),
    ("faces32_captions", "glasses", "spaceship", "Negative prompt: Unknown words"),
    ("fashion32_classes", "a zebra", "", "Not a Fashion-MNIST class name"),
    ("fashion32_classes", "a shirt and a sandal", "", "Several classes at once"),
])
def test_prompts_it_cannot_fully_read_give_a_note_and_still_a_picture(tiny, name, prompt, negative, said):
    updates = []
    notes = notes_of(lambda: updates.extend(run(name, prompt, negative)))
    assert any(said in note for note in notes), notes
    assert said in updates[-1][5] and updates[-1][0] is not None


def test_a_10000_character_prompt_is_cut_quickly(tiny):
    import time

    start = time.monotonic()
    notes = notes_of(lambda: run(prompt="a person with red hair and glasses " * 300))
    assert time.monotonic() - start < 10
    assert any("10,500 characters long; only its first 1,000" in note for note in notes), notes
    assert any(f"first {captions.CONTEXT} known words" in note for note in notes), notes


@pytest.mark.parametrize("field, value, shown, said", [
    ("weight", -5, "w = 0", "The guidance weight w is set to 0 (the range is 0 … 10)."),
    ("weight", 1e9, "w = 10", "The guidance weight w is set to 10 (the range is 0 … 10)."),
    ("weight", math.nan, "w = 3", "The guidance weight w: nan is not a number, so 3 is used."),
    ("weight", None, "w = 3", "The guidance weight w was not given, so 3 is used."),
    ("weight", "lots", "w = 3", "The guidance weight w: 'lots' is not a number, so 3 is used."),
    ("steps", 1, "of 10", "DDIM steps is set to 10 (the range is 10 … 100)."),
    ("steps", 10_000, "of 100", "DDIM steps is set to 100 (the range is 10 … 100)."),
    ("steps", math.inf, "of 100", "DDIM steps is set to 100 (the range is 10 … 100)."),
    ("n", 0, "1 image(s)", "The number of images is set to 1 (the range is 1 … 8)."),
    ("n", 99, "8 image(s)", "The number of images is set to 8 (the range is 1 … 8)."),
])
def test_numbers_out_of_range_are_clamped_with_a_warning(tiny, field, value, shown, said):
    updates = []
    notes = notes_of(lambda: updates.extend(run(**{field: value})))
    assert said in notes, notes  # the same sentences as every other tab's settings (tabs.ebm._clamped)
    assert shown in updates[-1][4] + updates[-1][5]


@pytest.mark.parametrize("seed", [-1, 2**80, math.nan, 3.7, None, "seven"])
def test_any_seed_works(tiny, seed):
    assert run(seed=seed)[-1][0] is not None


def test_unknown_models_and_missing_checkpoints_are_sentences(tiny, monkeypatch, tmp_path):
    with pytest.raises(gr.Error, match="Pick one of the shipped text-to-image models"):
        next(user_errors(tab.generate)("stable_diffusion_xl", "a cat", "", 3, 10, 0, 1))
    monkeypatch.setattr(tab, "model_choices", lambda: [])
    with pytest.raises(gr.Error, match="No text-to-image model is trained yet: `python -m core.train diffusion"):
        next(user_errors(tab.generate)("faces32_captions", "a cat", "", 3, 10, 0, 1))
    # Listed (its card was there) but its weights are gone: load_pipeline's CheckpointError is the sentence.
    import core.checkpoints
    import core.diffusion
    import core.registry

    monkeypatch.setattr(tab, "model_choices", lambda: [("faces", "faces32_captions")])
    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.setattr(text_to_image, "load_pipeline", LOAD_PIPELINE.__wrapped__)  # around the process-wide caches
    for module, name in ((core.diffusion, "load_model"), (core.checkpoints, "load_shipped")):
        monkeypatch.setattr(module, name, getattr(module, name).__wrapped__)
    with pytest.raises(gr.Error, match=r"faces32_captions\.pt is missing\. Create it with"):
        next(user_errors(tab.generate)("faces32_captions", "a cat", "", 3, 10, 0, 1))


def test_the_tab_builds_with_its_lesson_and_shows_the_guidance_code_once():
    import inspect

    from tabs.classroom import explanations

    with gr.Blocks() as demo:
        page = tab.build()
        explanations(page.lesson)  # as app.py does after build()
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {tab.LESSON.main, tab.LESSON.result, "t2i-strip-go", "t2i-clip-matrix-image"} <= ids
    assert set(page.settings) == {"model", "prompt", "negative", "w", "steps", "seed", "images"}
    codes = [block.value for block in demo.blocks.values() if isinstance(block, gr.Code)]
    shown = [code for code in codes if "def guided_noise(" in code]
    assert len(shown) == 1, "the guidance code is shown once, by the lesson"  # not also in the tab's own layout
    source = inspect.getsource(text_to_image.guided_noise)  # as it runs (the decorator line aside)
    assert source[source.index("def guided_noise("):].rstrip("\n") in shown[0]
    for example in tab.LESSON.try_this:  # every "Try this" sets widgets to values they can hold
        for name, value in example.settings.items():
            widget = page.settings[name]
            if isinstance(widget, gr.Slider):
                assert widget.minimum <= value <= widget.maximum, (example.label, name, value)
            if isinstance(widget, gr.Dropdown):
                assert value in [v for _, v in widget.choices], (example.label, name, value)


def test_stop_cancels_the_run_and_the_viewer_is_the_shared_one():
    import app

    demo = app.build_app()
    config = demo.get_config_file()["dependencies"]
    dependencies = {d["api_name"]: d for d in config}
    generating = dependencies["text_to_image_generate"]
    assert "text_to_image_stop" in dependencies
    assert any(d.get("cancels") == [generating["id"]] for d in config), "no Stop button cancels the generation"
    fn = next(fn for fn in demo.fns.values() if fn.api_name == "text_to_image_generate")
    assert fn.concurrency_id == tab.TAB and fn.concurrency_limit == 1  # one generation at a time in this tab
    for action in ("show_frame", "play", "pause", "steps_gif"):
        assert f"text_to_image_{action}" in dependencies


# --- the same seed at four weights -------------------------------------------------------------------

def test_the_strip_has_four_images_labelled_with_weight_and_readings(tiny, monkeypatch):
    read = []

    def adherence(images, prompt, classifier=None):
        read.append(len(images))
        return {"hair red": 1.0, "eyeglasses yes": 0.0}

    monkeypatch.setattr(text_to_image, "adherence", adherence)
    gallery, note = tab.guidance_strip("faces32_captions", "a person with red hair and glasses", "", 10, 4)
    assert [label for _, label in gallery] == [f"w = {w} · red hair ✓, glasses ✗" for w in ("0", "1", "3", "7.5")]
    assert read == [1, 1, 1, 1]  # the classifier reads each picture on its own
    assert all(picture.size == (32 * tab.STRIP_SHOW,) * 2 for picture, _ in gallery)
    assert "Seed 4, 10 DDIM steps" in note
    strip = [pixels(picture) for picture, _ in gallery]
    assert not np.array_equal(strip[0], strip[3])
    # w = 3 in the strip is the generator's picture for the same seed (one image, same start noise).
    alone = run(prompt="a person with red hair and glasses", seed=4, n=1, steps=10)[-1][0]
    alone = pixels(alone)[6:6 + 96:tab.SHOW, 6:6 + 96:tab.SHOW]
    assert np.abs(alone - strip[2][::tab.STRIP_SHOW, ::tab.STRIP_SHOW]).max() <= 2


def test_the_strip_of_fashion_reads_the_class_and_goes_on_without_a_classifier(tiny, monkeypatch):
    import core.metrics.classifiers as classifiers

    monkeypatch.setattr(classifiers, "fashion_probabilities",
                        lambda images, value_range: torch.eye(10)[[7] * len(images)])
    gallery, _ = tab.guidance_strip("fashion32_classes", "a sneaker", "", 10, 0)
    assert [label for _, label in gallery][1] == "w = 1 · reads as Sneaker (100%) ✓"

    def missing(*args, **kwargs):
        raise ValueError("Checkpoint face_attributes.pt is missing.")

    monkeypatch.setattr(text_to_image, "adherence", missing)
    gallery, note = tab.guidance_strip("faces32_captions", "red hair", "", 10, 0)
    assert len(gallery) == 4 and [label for _, label in gallery][0] == "w = 0"
    assert "No classifier reading: Checkpoint face_attributes.pt is missing." in note


# --- the model picker, the card and the vocabulary -----------------------------------------------------

def test_changing_the_model_shows_its_vocabulary_and_swaps_only_example_prompts():
    card, details, words, prompt = tab.describe_model("fashion32_classes", tab.HELD_OUT_PROMPTS[0])
    assert "sneaker" in words and "glasses" not in words and prompt == tab.FASHION_PROMPTS[0]
    card, details, words, prompt = tab.describe_model("faces32_captions", tab.FASHION_PROMPTS[2])
    assert "glasses" in words and "sneaker" not in words and prompt == tab.HELD_OUT_PROMPTS[0]
    for typed in ("my own words", ""):
        assert tab.describe_model("faces32_captions", typed)[3] == gr.update()


def test_the_card_names_the_fine_tuning_and_survives_a_card_being_rewritten(monkeypatch):
    card = {"config": {"widths": [32, 64, 128], "condition_dim": 10}, "command": "python -m core.train diffusion",
            "resumed_with": ["python -m core.train diffusion --condition classes --init-from x.pt"],
            "steps": 6000, "wall_time_s": 600, "hardware": "cpu", "data": "Fashion-MNIST", "caption_dropout": 0.15,
            "fine_tuned_from": {"steps": 28952}}
    monkeypatch.setattr(tab, "read_card", lambda technique, name: card)
    text = tab.model_card("fashion32_classes")
    assert "fine-tuned for 6,000 steps from the unconditional model (28,952 steps)" in text
    assert "dropped to ∅ for 15%" in text and "10 min in all" in text
    details = tab.model_details("fashion32_classes")
    assert "Made with `python -m core.train diffusion --condition classes --init-from x.pt` (the card lists all 2" in details
    assert "Text encoder" not in details and "Text encoder" in tab.model_details("faces32_captions")

    def rewritten(technique, name):
        raise ValueError("Expecting value: line 1 column 1 (char 0)")

    monkeypatch.setattr(tab, "read_card", rewritten)
    assert "cannot be read right now" in tab.model_card("fashion32_classes")


def test_the_diffusion_tab_lists_only_unconditional_models_and_this_tab_only_its_own(monkeypatch, tmp_path):
    import json

    import core.registry
    from tabs import diffusion

    folder = tmp_path / "diffusion"
    folder.mkdir()
    for name, condition_dim in (("fashion32", 0), ("faces32", None), ("fashion32_classes", 10),
                                ("faces32_captions", 64), ("flowers64_captions", 64)):
        (folder / f"{name}.pt").write_bytes(b"")
        config = {"widths": [8]} | ({} if condition_dim is None else {"condition_dim": condition_dim})
        (folder / f"{name}.json").write_text(json.dumps({"config": config}))
    (folder / "half_written.pt").write_bytes(b"")
    (folder / "half_written.json").write_text('{"config": {"condition_')
    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)
    assert [name for _, name in diffusion.model_choices()] == ["fashion32", "faces32"]
    assert [name for _, name in tab.model_choices()] == ["faces32_captions", "fashion32_classes"]


# --- CLIP (the shipped one) ----------------------------------------------------------------------------

@pytest.fixture
def shipped_clip():
    require(tab.clip_shipped(), f"no shipped CLIP: run `{tab.CLIP_COMMAND}`")


def test_a_caption_finds_eight_faces_that_have_what_it_says(shipped_clip):
    gallery, note = tab.search_faces("a person with red hair and glasses")
    assert len(gallery) == tab.TOP_FACES
    scores = [float(re.search(r"cos (-?\d\.\d\d)", label)[1]) for _, label in gallery]
    assert scores == sorted(scores, reverse=True)
    facts = tab.clip_index()[2]
    found = [facts[int(re.search(r"#(\d+)", label)[1])] for _, label in gallery]
    assert sum(f["hair"] == "red" for f in found) >= 6, found  # a held-out pair: composed, not remembered
    assert sum(f["eyeglasses"] == "yes" for f in found) >= 6, found
    assert "red hair: " in note and "glasses: " in note


@pytest.mark.parametrize("caption, said", [("", "Type a caption"), (None, "Type a caption"),
                                           ("zebra unicorn", "nothing to search for")])
def test_a_search_with_nothing_to_search_for_is_a_sentence(shipped_clip, caption, said):
    with pytest.raises(gr.Error, match=said):
        user_errors(tab.search_faces)(caption)


def test_a_face_ranks_its_own_caption_and_its_true_tags_high(shipped_clip):
    ranks, hair_first = [], 0
    tags, keys, _ = tab.tag_index()
    assert len(tags) == len(captions.PHRASES) == 22
    for index in range(20):
        face, chart, note = tab.describe_face(None, index)
        ranks.append(int(re.search(r"ranks \*\*(\d+) of", note)[1]))
        assert face.size == (192, 192) and chart.width > 300
        truth = tab.clip_index()[2][index]
        u = tab.embed_face(tab.clip_index()[0][index:index + 1])
        similarity = {key: float(s) for key, s in zip(keys, tab.tag_index()[2] @ u)}
        hair = {value: s for (family, value), s in similarity.items() if family == "hair"}
        hair_first += max(hair, key=hair.get) == truth["hair"]
    assert np.median(ranks) <= 3 and sum(r <= 10 for r in ranks) >= 15, ranks
    assert hair_first >= 15, hair_first


def test_an_uploaded_face_is_described_like_the_same_test_face(shipped_clip, tmp_path):
    from core.data.images import tensor_to_pil

    images, texts = tab.clip_index()[:2]
    path = tmp_path / "face.png"
    tensor_to_pil(images[5]).resize((128, 128), Image.LANCZOS).save(path)
    with pytest.warns(UserWarning, match="resized from 128×128 to 32×32"):
        face, chart, note = tab.describe_face(str(path), 0)
    assert texts[5] in note  # among the closest captions
    assert "ranks" not in note  # an upload has no caption of its own to rank
    with pytest.raises(gr.Error, match="not an image"):
        (tmp_path / "notes.png").write_text("not a picture")
        user_errors(tab.describe_face)(str(tmp_path / "notes.png"), 0)


def test_the_similarity_matrix_has_a_bright_diagonal(shipped_clip):
    image, note = tab.similarity_matrix(0)
    assert image.width > 400 and pixels(image).std() > 20
    diagonal, off = (float(v) for v in re.search(r"diagonal .*?\*\*(-?\d\.\d\d)\*\*, off it \*\*(-?\d\.\d\d)", note).groups())
    assert diagonal > off + 0.3, note
    assert note.count("\n") >= tab.MATRIX_SIZE and "#0, #1" in note
    assert "#0, #1" not in tab.similarity_matrix(3)[1]  # another batch


def test_without_a_clip_the_clip_views_say_how_to_train_one(monkeypatch):
    monkeypatch.setattr(tab, "clip_shipped", lambda: False)
    tab.clip_index.cache_clear()
    tab.tag_index.cache_clear()
    try:
        for call in (lambda: tab.search_faces("red hair"), lambda: tab.describe_face(None, 0),
                     lambda: tab.similarity_matrix(0)):
            with pytest.raises(gr.Error, match="No CLIP model is shipped yet: train one with `python -m core.train clip"):
                user_errors(call)()
    finally:
        tab.clip_index.cache_clear()
        tab.tag_index.cache_clear()


# --- the shipped text-to-image models ------------------------------------------------------------------

@pytest.mark.parametrize("name, prompt, channels", [("faces32_captions", tab.HELD_OUT_PROMPTS[0], 3),
                                                     ("fashion32_classes", "a sneaker", 1)])
def test_the_shipped_models_generate(name, prompt, channels):
    require(shipped_path("diffusion", name).is_file() and shipped_path("diffusion", name).with_suffix(".json").is_file(),
            f"{name} is not shipped yet: `{tab.TRAIN_COMMANDS[name]}`")
    if channels == 3:
        require(tab.clip_shipped(), f"no shipped CLIP: run `{tab.CLIP_COMMAND}`")
    final, frames, *_, note = run(name, prompt, steps=10, n=2)[-1]
    assert final.size == ((2 * 34 + 2) * tab.SHOW, 36 * tab.SHOW) and len(frames) == 11 and "Done" in note
    assert pixels(final).std() > 10
