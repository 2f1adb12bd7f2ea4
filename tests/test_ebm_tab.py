"""The energy-based model tab's handlers, called directly with the shipped model and small settings:
sampling into the step viewer, the sampler comparison, the energy as a score, repair, and the live 2-D EBM."""
import inspect
import itertools
import math
import re

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import tabs.ebm as tab
from core import ebm
from core.runtime import make_generator
from tabs import live2d, stepviewer
from tabs.common import code_of
from tests.conftest import require

SIDE = 32  # the model's images
REPAIR_SCALE = 4  # tabs.ebm.repair shows its strip at 4×


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")).astype(int)


@pytest.fixture
def shipped():
    """The shipped energy model and the Fashion-MNIST test split, or a skip saying how to make them."""
    require(tab.shipped(), f"no shipped energy model: run `{tab.TRAIN_COMMAND}`")
    try:
        tab._test_images()
    except ValueError as exc:
        require(False, str(exc))
    return tab._model()


@pytest.fixture
def forward_calls(shipped):
    """Every forward pass of the shipped network, counted (the hook is removed afterwards)."""
    calls = []
    handle = shipped.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def run(seed=0, n=4, steps=12, step_size=10, noise=0.005, **kwargs):
    return list(tab.generate(seed, n, steps, step_size, noise, **kwargs))


def shown(images: torch.Tensor) -> list[np.ndarray]:
    """Images in [−1, 1] as the grids show them: grey levels 0-255."""
    return [((image[0].numpy() + 1) / 2 * 255).round() for image in images]


def tiles_of_grid(grid: Image.Image, n: int, columns: int, scale: int = tab.SHOW) -> list[np.ndarray]:
    """The n 32×32 images of a grid drawn with one pixel of padding, one value per shown pixel."""
    grey = pixels(grid)
    centres = np.arange(SIDE) * scale + scale // 2
    return [grey[(1 + (i // columns) * (SIDE + 1)) * scale + centres][:, (1 + (i % columns) * (SIDE + 1)) * scale
                                                                       + centres] for i in range(n)]


# --- sampling into the step viewer ---------------------------------------------------------------

def test_sampling_streams_to_a_final_grid_a_frame_per_step_and_an_energy_plot(shipped):
    updates = run(steps=12)
    assert updates[0][0] is None  # no final grid until the walk is done
    final, frames, slider, picture, caption, plot, note = updates[-1]
    assert len(frames) == 13 and slider["maximum"] == 12 and slider["value"] == 12
    for k, (frame, text) in enumerate(frames):
        assert isinstance(frame, Image.Image) and f"Step {k} of 12" in text, (k, text)
    assert "real clothes" in frames[0][1] and "real clothes" in caption
    assert picture is frames[-1][0] and caption == frames[-1][1]
    assert np.array_equal(pixels(final), pixels(frames[-1][0]))  # the final grid is the viewer's last frame
    assert not np.array_equal(pixels(frames[0][0]), pixels(frames[-1][0]))  # the walk moved the noise
    assert final.size == ((2 * (SIDE + 1) + 1) * tab.SHOW,) * 2  # 4 samples: a 2×2 grid at 2×
    assert isinstance(plot, Image.Image) and pixels(plot).std() > 10 and plot.width > 300
    assert note == "Done."


def test_a_long_walk_keeps_the_viewers_share_of_frames(shipped):
    steps = 150
    *_, (final, frames, slider, _, caption, _, note) = run(n=1, steps=steps)
    kept = stepviewer.kept_steps(steps)
    assert len(frames) == len(kept) == stepviewer.MAX_FRAMES and slider["maximum"] == len(frames) - 1
    shown = [int(re.search(r"Step (\d+) of 150", text).group(1)) for _, text in frames]
    assert shown == sorted(kept)
    assert f"keeps {len(kept)} of the {steps + 1} frames" in note and "Step 150 of 150" in caption


def test_the_same_seed_gives_the_same_samples_and_another_seed_others(shipped):
    first = pixels(run(seed=3, steps=6)[-1][0])
    assert np.array_equal(first, pixels(run(seed=3, steps=6)[-1][0]))
    assert not np.array_equal(first, pixels(run(seed=4, steps=6)[-1][0]))


def test_scrubbing_playing_and_saving_the_steps_run_no_network(forward_calls):
    *_, (_, frames, *_) = run(steps=6)
    assert forward_calls, "the hook counts nothing: the test would prove nothing"
    before = len(forward_calls)
    shown = [pixels(frame) for frame, _ in frames]
    for asked, expected in ((0, 0), (3, 3), (6, 6), (99, 6), (-5, 0), (None, 0), (math.nan, 0)):
        picture, text = stepviewer.show_frame(frames, asked)
        assert np.array_equal(pixels(picture), shown[expected]) and f"Step {expected} of 6" in text, asked
    assert [i for i, *_ in stepviewer.play(frames, 4, seconds_per_frame=0)] == [4, 5, 6]
    assert Image.open(stepviewer.frames_gif(frames, "ebm")).n_frames >= len(frames) - 1
    assert len(forward_calls) == before
    assert stepviewer.show_frame([], 3) == (None, stepviewer.NOT_RUN)


def test_out_of_range_settings_are_clamped_each_with_a_sentence(shipped):
    updates = tab.generate(0, 2, 10**9, -3, math.nan)
    note = next(updates)[-1]  # the first update, before any step: no need to walk 2000 steps
    updates.close()
    assert f"Steps is set to {tab.MAX_STEPS}" in note
    assert "step size is set to 0" in note and "With step size 0 the images never move downhill" in note
    assert "noise: nan is not a number, so 0.005 is used" in note
    updates = tab.generate(0, 10**6, 1, 10, 0.005)
    assert f"Samples is set to {tab.MAX_SAMPLES}" in next(updates)[-1]
    updates.close()
    updates = tab.generate(0, 2, 3, "ten", 0.005)
    assert "'ten' is not a number, so 10 is used" in next(updates)[-1]
    updates.close()
    updates = tab.generate(0, 2, None, 10, 0.005)  # an API call that leaves a setting out
    assert f"Steps was not given, so {tab.DEFAULT_STEPS} is used" in next(updates)[-1]
    updates.close()


def test_sampling_can_continue_the_training_chains(shipped, monkeypatch):
    chains = tab._test_images()[:10]
    monkeypatch.setattr(ebm, "load_chains", lambda name: chains)
    *_, (final, frames, *_) = run(n=3, steps=4, start_from="chains")
    start = tiles_of_grid(frames[0][0], 3, 2)
    assert len(start) == 3 and all(any(np.abs(tile - image).max() <= 1 for image in shown(chains)) for tile in start)
    monkeypatch.setattr(ebm, "load_chains", lambda name: torch.empty(0, 1, SIDE, SIDE))
    with pytest.raises(ValueError, match="keeps no training chains: start from uniform noise"):
        next(tab.generate(0, 2, 3, 10, 0.005, "chains"))
    with pytest.raises(ValueError, match="not 'somewhere'"):
        next(tab.generate(0, 2, 3, 10, 0.005, "somewhere"))


def test_step_size_zero_without_noise_leaves_the_noise_as_it_was(shipped):
    *_, (final, frames, *_, note) = run(n=2, steps=5, step_size=0, noise=0)
    assert "With step size 0" in note and "is set to" not in note  # 0 is in range: only the warning
    assert np.array_equal(pixels(final), pixels(frames[0][0]))


def test_energies_that_are_no_longer_numbers_are_refused_in_a_sentence():
    with pytest.raises(ValueError, match="at step 7: the model has diverged"):
        tab._checked(torch.tensor([0.5, math.nan]), 7)
    assert tab._checked(torch.tensor([0.5, -1.0]), 7) is not None


def test_without_the_shipped_model_the_handlers_name_the_train_command(monkeypatch):
    monkeypatch.setattr(tab, "shipped", lambda: False)
    for call in (lambda: next(tab.generate(0, 2, 3, 10, 0.005)), lambda: tab.compare_samplers(0),
                 lambda: tab.score(0, None)):
        with pytest.raises(ValueError, match=re.escape(tab.TRAIN_COMMAND)):
            call()


# --- what goes wrong: five samplers ----------------------------------------------------------------

def test_compare_draws_five_labelled_rows_from_the_same_start(shipped, monkeypatch):
    drawn = {}
    labelled = tab._labelled_rows

    def spy(rows, labels):
        drawn["rows"], drawn["labels"] = rows, labels
        return labelled(rows, labels)

    monkeypatch.setattr(tab, "_labelled_rows", spy)
    grid, note = tab.compare_samplers(5)
    labels, rows = drawn["labels"], drawn["rows"]
    assert len(labels) == len(rows) == 5
    for label, name in zip(labels, ("trained sampler", "no noise", "more noise", "too large a step",
                                    "too small a step")):
        assert label.startswith(name) and re.search(r"mean energy -?\d+\.\d{3}$", label), label
    row_height = rows[0].height + tab.LABEL_PX + 8
    assert grid.size == (rows[0].width, 5 * row_height)
    assert rows[0].size == ((tab.COMPARE_COLUMNS * (SIDE + 1) + 1) * tab.SHOW, (SIDE + 2) * tab.SHOW)
    assert re.search(r"Seed 5, 200 steps each; real test clothes have mean energy -?\d", note)
    moved = float(re.search(r"changes the trained sampler's images by (\d+\.\d+) per pixel", note).group(1))
    assert 0 <= moved < 1
    start = pixels(tab._grid(ebm.uniform_noise(tab.COMPARE_COLUMNS, SIDE, make_generator(5)), tab.COMPARE_COLUMNS))
    distance = [np.abs(pixels(row) - start).mean() for row in rows]
    assert distance[4] < distance[0]  # too small a step stays nearer the start noise than the trained sampler


# --- the energy as a score --------------------------------------------------------------------------

def auroc_of(note: str, name: str) -> float:
    return float(re.search(re.escape(name) + r" (\d\.\d{3})", note).group(1))


def test_score_separates_clothes_from_noise_and_faces(shipped):
    histogram, note = tab.score(0, None)
    assert isinstance(histogram, Image.Image) and pixels(histogram).std() > 10
    assert note.startswith("AUROC of the energy, real test clothes against:")
    assert auroc_of(note, "uniform noise") > 0.9 and auroc_of(note, "synthetic faces (grey)") > 0.6
    assert 0 <= auroc_of(note, "the model's samples") <= 1
    assert "Your picture" not in note


def test_score_places_an_upload_light_background_inverted(shipped, tmp_path):
    drawing = np.full((90, 60), 235, dtype=np.uint8)  # a dark shirt-like block on white paper
    drawing[15:80, 12:48] = 30
    path = tmp_path / "shirt.png"
    Image.fromarray(drawing).convert("RGB").save(path)
    histogram, note = tab.score(0, str(path))
    assert "AUROC" in note and "Your picture" in note and "inverted" in note
    share = int(re.search(r"higher than (\d+)% of the real test clothes", note).group(1))
    assert 0 <= share <= 100
    plain, _ = tab.score(0, None)
    assert not np.array_equal(pixels(histogram), pixels(plain))  # the upload's line is drawn


def test_score_refuses_a_file_that_is_not_an_image_in_a_sentence(shipped, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match="not an image"):
        tab.score(0, str(path))


# --- repair --------------------------------------------------------------------------------------

def tiles(strip: Image.Image) -> list[np.ndarray]:
    """The repair strip's three 32×32 images (original, damaged, walk), one value per shown pixel."""
    grey = pixels(strip)
    centres = np.arange(SIDE) * REPAIR_SCALE + REPAIR_SCALE // 2
    return [grey[REPAIR_SCALE + centres][:, (1 + i * (SIDE + 1)) * REPAIR_SCALE + centres] for i in range(3)]


def test_mask_repair_moves_only_the_hidden_rectangle(shipped):
    updates = list(tab.repair(3, "mask", 0.5, 4, 6, 12, 20, 15, 0))
    frames, slider, picture, caption, note = updates[-1]
    assert len(frames) == 16 and slider["maximum"] == 15 and "Step 15 of 15" in caption
    hidden = np.zeros((SIDE, SIDE), dtype=bool)
    hidden[4:16, 6:26] = True
    original = tiles(frames[0][0])[0]
    expected = ((tab._test_images()[3, 0].numpy() + 1) / 2 * 255).round()
    assert np.abs(original - expected).max() <= 1  # the first tile is the test image itself
    for k, (strip, _) in enumerate(frames):
        shown_original, damaged, walk = tiles(strip)
        assert np.array_equal(shown_original, original)
        assert np.array_equal(walk[~hidden], original[~hidden]), f"a known pixel moved at step {k}"
        assert np.array_equal(damaged[~hidden], original[~hidden]) and np.ptp(damaged[hidden]) == 0
    last_walk = tiles(frames[-1][0])[2]
    assert not np.array_equal(last_walk[hidden], tiles(frames[0][0])[1][hidden])  # the hole was filled in
    assert re.search(r"The walk left \d+% of the damage", note)


def test_core_repair_holds_every_known_pixel_exactly(shipped):
    original = tab._test_images()[:2]
    generator = make_generator(1)
    damaged, known = ebm.corrupt(original, "mask", 0.0, generator, box=(10, 0, 8, 32))
    assert known.sum() == 2 * (SIDE * SIDE - 8 * SIDE)
    steps = list(ebm.repair(shipped, damaged, known, generator, 10))
    assert len(steps) == 10
    for x, energy in steps:
        assert torch.equal(x[known], original[known]) and energy.shape == (2,)
    assert not torch.equal(steps[-1][0][~known], damaged[~known])


def test_noise_repair_removes_part_of_the_damage(shipped):
    *_, (frames, _, _, _, note) = tab.repair(0, "noise", 0.5, 8, 8, 16, 16, 20, 0)
    left = int(re.search(r"The walk left (\d+)% of the damage", note).group(1))
    assert left < 100, note
    original, damaged, walk = tiles(frames[-1][0])
    assert np.abs(walk - original).mean() < np.abs(damaged - original).mean()


def test_noise_level_zero_says_there_was_nothing_to_repair(shipped):
    *_, (_, _, _, _, note) = tab.repair(0, "noise", 0, 8, 8, 16, 16, 5, 0)
    assert "nothing to repair" in note and "%" not in note, note  # not a ratio to no damage at all


def test_repair_clamps_the_rectangle_and_refuses_an_unknown_damage(shipped):
    *_, (frames, *_, note) = tab.repair(10**9, "mask", 0.5, 40, -3, 99, 5, 2, 0)
    assert "The test image is set to 9999" in note and "The top row is set to 31" in note
    assert "The left column is set to 0" in note and "The height is set to 1" in note
    with pytest.raises(ValueError, match="Choose a damage: noise or mask, not 'blur'"):
        next(tab.repair(0, "blur", 0.5, 8, 8, 16, 16, 2, 0))


# --- the live 2-D EBM ------------------------------------------------------------------------------

def test_live_reset_step_and_play_draw_a_picture_and_a_status():
    live, picture, status = tab.live_reset("eight_gaussians", 0, -2.5)
    assert isinstance(picture, Image.Image) and pixels(picture).std() > 10
    assert status.startswith("Step 0: an untrained energy") and "3.2e-03" in status
    live, picture, status = tab.live_step(live, 5, -2.5)
    assert live.step == 5 and status.startswith("Step 5: mean energy of the data")
    frames = list(itertools.islice(tab.live_play(live, 3, -3), 2))
    assert live.step == 11 and frames[-1][2].startswith("Step 11:") and "1.0e-03" in frames[-1][2]
    assert all(isinstance(frame[1], Image.Image) for frame in frames)
    assert tab.live_start(live, "moons", 5, -2.5)[0] is live  # opening the panel keeps a running game
    assert tab.live_start(None, "moons", 5, -2.5)[0].distribution == "moons"
    assert tab.live_set_learning_rate(live, -4).lr == pytest.approx(1e-4)
    assert tab.live_set_learning_rate(None, -4) is None


def test_live_learning_rates_outside_the_slider_are_clamped():
    for asked, used in ((10**9, 1.0), (-50, 1e-4), (math.nan, 10 ** tab.LR_LOG_DEFAULT), (None, 10 ** tab.LR_LOG_DEFAULT)):
        live = tab.live_reset("ring", 0, asked)[0]
        assert live.lr == pytest.approx(used), asked


def test_live_actions_before_reset_say_press_reset_first():
    with pytest.raises(ValueError, match="Press Reset first"):
        tab.live_step(None, 1, -2.5)
    with pytest.raises(ValueError, match="Press Reset first"):
        next(tab.live_play(None, 1, -2.5))


def test_an_unknown_distribution_is_refused_in_a_sentence():
    with pytest.raises(ValueError, match="Unknown distribution 'cube'"):
        tab.live_reset("cube", 0, -2.5)


def test_play_stops_by_itself_when_the_ebm_diverges(monkeypatch):
    live = tab.live_reset("eight_gaussians", 0, -2.5)[0]
    calls = {"n": 0}
    honest = ebm.contrastive_divergence

    def breaks_at_step_4(*args):  # a stand-in for a blow-up (the slider's learning rates do not diverge)
        calls["n"] += 1
        loss = honest(*args)
        return loss * math.nan if calls["n"] >= 4 else loss

    monkeypatch.setattr(ebm, "contrastive_divergence", breaks_at_step_4)
    frames = list(tab.live_play(live, 2, -2.5))
    assert len(frames) == 2 < live2d.FRAMES and live.diverged and live.step == 3
    assert "The EBM diverged" in frames[-1][2] and "lower the learning rate" in frames[-1][2]
    assert isinstance(frames[-1][1], Image.Image) and pixels(frames[-1][1]).std() > 0
    tab.live_step(live, 5, -2.5)  # a diverged EBM stays stopped
    assert live.step == 3


def test_the_top_learning_rate_makes_training_fail_visibly():
    """The panel says a learning rate of 1 makes training fail: the two mean energies stay far apart."""
    gaps = {}
    for lr_log in (0, tab.LR_LOG_DEFAULT):
        live = tab.live_reset("eight_gaussians", 0, lr_log)[0]
        live.train(100)
        gaps[lr_log] = np.mean([abs(real - fake) for _, real, fake in live.history[-20:]])
        status = tab.live_status(live)
        assert ("Training is failing" in status) == (lr_log == 0), status  # and the status says which it is
    assert gaps[0] > 1 and gaps[tab.LR_LOG_DEFAULT] < 0.2, gaps


# --- the page -----------------------------------------------------------------------------------

def test_the_code_shown_is_langevins_own_source():
    assert code_of("core/ebm.py", "langevin") == inspect.getsource(ebm.langevin).rstrip("\n")


def test_the_tab_builds_with_its_buttons_and_shows_the_sampler_code(shipped):
    from tabs.classroom import explanations

    with gr.Blocks() as demo:
        page = tab.build()
        explanations(page.lesson)  # app.py adds the lesson's explanations after build(): the code beside the picture
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"ebm-sample", "ebm-final", "ebm-energy-plot", "ebm-compare", "ebm-compare-grid", "ebm-score",
            "ebm-histogram", "ebm-repair", "ebm-live-picture", tab.LESSON.main, tab.LESSON.result} <= ids
    codes = [block.value for block in demo.blocks.values() if isinstance(block, gr.Code)]
    assert inspect.getsource(ebm.langevin).rstrip("\n") in codes
    assert inspect.getsource(ebm.contrastive_divergence).rstrip("\n") in codes
    assert len(codes) == len(tab.LESSON.code)  # one place for the code: the lesson's, not a second accordion
    assert set(page.settings) == {"seed", "samples", "steps", "step", "noise", "start"}
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"ebm_sample", "ebm_compare", "ebm_score", "ebm_repair", "ebm_live_reset", "ebm_live_play"} <= names


def test_the_tab_builds_without_a_model_and_keeps_the_live_ebm(monkeypatch):
    monkeypatch.setattr(tab, "shipped", lambda: False)
    with gr.Blocks() as demo:
        assert tab.build().lesson is tab.LESSON
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert any("No energy model is shipped yet" in text and tab.TRAIN_COMMAND in text for text in texts if text)
    names = {fn.api_name for fn in demo.fns.values()}
    assert "ebm_live_reset" in names and not names & {"ebm_sample", "ebm_compare", "ebm_score", "ebm_repair"}


def test_the_card_reports_the_benchmarks_auroc_only_when_measured(monkeypatch):
    card = {"parameters": 12345, "steps": 100, "wall_time_s": 600, "hardware": "a CPU", "command": "python -m x",
            "resumed_with": ["python -m y"]}
    monkeypatch.setattr(tab, "read_card", lambda technique, name: card)
    record = {"quick": True, "figures": {"ood": {"auroc": {"noise": 0.99876, "faces": 0.912}}}}
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([("ebm_quality.json", {"figures": {}}),
                                                                 ("quick", record)]))
    text = tab.model_card()
    assert "12,345 parameters" in text and "100 steps" in text and "`python -m x` then `python -m y`" in text
    assert "AUROC 0.999 against noise, 0.912 against faces (quick run)." in text
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([]))
    assert "AUROC" not in tab.model_card()
