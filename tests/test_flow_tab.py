"""The normalizing-flow tab's handlers, called directly: the live 2-D flow with two couplings (fast),
the click explorer's pixel mapping and paths, and the image views of the shipped flow once it exists."""
import inspect
import itertools
import re
import textwrap

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import tabs.flow as tab
from core.data.toy2d import EXTENT
from core.flow import AffineCoupling
from core.registry import shipped_path
from tabs import live2d
from tests.conftest import require

COUPLINGS = 2


def fresh(seed=0, lr_log=-2.5, couplings=COUPLINGS, distribution="moons"):
    return tab.live_reset(distribution, seed, lr_log, couplings, couplings)


def click(px, py) -> gr.SelectData:
    return gr.SelectData(None, {"index": [px, py], "value": None})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def quadrants(image: Image.Image) -> dict[str, np.ndarray]:
    a = pixels(image)
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return {"data": a[:h, :w], "latent": a[:h, w:], "density": a[h:, :w], "nll": a[h:, w:]}


def test_reset_step_and_play_draw_a_picture_and_a_status():
    live, picture, layer, status = fresh()
    assert isinstance(picture, Image.Image) and pixels(picture).std() > 0
    assert layer.maximum == COUPLINGS and layer.value == COUPLINGS
    assert status.startswith("Step 0:") and "best Gaussian" in status
    live, picture, _, status = tab.live_step(live, 5, -2.5, COUPLINGS, COUPLINGS)
    assert live.step == 5 and status.startswith("Step 5:") and "held out" in status
    frames = list(itertools.islice(tab.live_play(live, 3, -2.5, COUPLINGS, COUPLINGS), 2))
    assert live.step == 11 and all(isinstance(frame[1], Image.Image) for frame in frames)
    assert frames[-1][3].startswith("Step 11:")
    assert [step for step, _ in live.held_out] == [0, 5, 8, 11]  # one held-out NLL per frame
    with pytest.raises(ValueError, match="Reset"):
        tab.live_step(None, 1, -2.5, COUPLINGS, COUPLINGS)


def test_the_flow_beats_the_best_gaussian_on_two_moons():
    live = fresh(couplings=4)[0]
    live.train(300)
    assert live.held_out[-1][1] < live.gaussian_nll - 0.3
    assert "so the flow is better by" in tab.live_status(live)


def test_two_users_flows_are_independent():
    mine, theirs = fresh()[0], fresh()[0]
    before = [p.clone() for p in theirs.flow.model.parameters()]
    tab.live_step(mine, 10, -2.5, COUPLINGS, COUPLINGS)
    assert mine.step == 10 and theirs.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, theirs.flow.model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, mine.flow.model.parameters()))


def test_couplings_are_clamped_with_a_sentence():
    for asked, used in ((0, 1), (10**9, tab.MAX_COUPLINGS)):
        live, _, layer, status = fresh(couplings=asked)
        assert live.flow.couplings == used and layer.maximum == used
        assert f"Couplings set to {used}" in status


def test_a_diverging_run_ends_in_a_sentence():
    live = fresh(lr_log=0)[0]  # the slider's top: a learning rate of 1
    frames = list(tab.live_play(live, 20, 0, COUPLINGS, COUPLINGS))
    assert len(frames) < live2d.FRAMES and live.diverged
    assert "The flow diverged" in frames[-1][3] and "lower the learning rate" in frames[-1][3]
    assert isinstance(frames[-1][1], Image.Image)
    step = live.step
    tab.live_step(live, 5, -2.5, COUPLINGS, COUPLINGS)  # a diverged flow stays stopped
    assert live.step == step
    with pytest.raises(ValueError, match="diverged"):  # and its map is not followed
        tab.to_latent(live, 0, 0)


def test_the_layer_slider_changes_only_the_latent_panel():
    live = fresh()[0]
    live.train(30)
    at = {k: quadrants(tab.live_layer(live, k)) for k in (0, COUPLINGS)}
    assert live.step == 30  # no training
    assert not np.array_equal(at[0]["latent"], at[COUPLINGS]["latent"])
    for panel in ("data", "density", "nll"):
        assert np.array_equal(at[0][panel], at[COUPLINGS][panel]), panel
    tab.live_layer(live, 99)
    assert live.layer == COUPLINGS


@pytest.mark.parametrize("pixel", [(0, 0), (tab.PLANE_PX - 1, tab.PLANE_PX - 1), (160, 17), (3, 300)])
def test_pixel_to_point_to_pixel_round_trips(pixel):
    x, y = tab.pixel_to_point(*pixel)
    assert -EXTENT < x < EXTENT and -EXTENT < y < EXTENT
    assert tuple(round(v) for v in tab.point_to_pixel(x, y)) == pixel


def test_the_plane_corners_and_centre_are_where_they_should_be():
    half_cell = EXTENT / tab.PLANE_PX
    assert tab.pixel_to_point(0, 0) == pytest.approx((-EXTENT + half_cell, EXTENT - half_cell))  # top left
    assert tab.point_to_pixel(0, 0) == pytest.approx(((tab.PLANE_PX - 1) / 2,) * 2)


def test_a_click_gives_the_coupling_path_and_draws_its_end_where_it_is():
    live = fresh()[0]
    live.train(50)
    clicked = (100, 140)
    x, y, data_plane, latent_plane, sentence = tab.click_data(live, click(*clicked))
    assert (x, y) == pytest.approx(tab.pixel_to_point(*clicked), abs=1e-3)
    path = tab.point_path(live, x, y, "latent")
    z, _ = live.flow.model(torch.tensor([[x, y]], dtype=torch.float32))
    assert len(path) == COUPLINGS + 1
    assert path[0] == pytest.approx((x, y), abs=1e-6)
    assert path[-1] == pytest.approx(z[0].detach().numpy(), abs=1e-5)
    assert f"z = f(x) = ({path[-1][0]:+.2f}, {path[-1][1]:+.2f})" in sentence
    assert data_plane.size == latent_plane.size == (tab.PLANE_PX, tab.PLANE_PX)
    column, row = (round(v) for v in tab.point_to_pixel(*path[-1]))
    red = np.array([int(tab.PATH[i:i + 2], 16) for i in (1, 3, 5)])
    assert np.abs(pixels(latent_plane)[row, column] - red).max() < 40  # the star sits on f(x)


def test_to_latent_then_to_data_comes_back():
    live = fresh()[0]
    live.train(50)
    start = (-0.8, 1.2)
    z = tab.point_path(live, *start, "latent")[-1]
    assert tab.point_path(live, *z, "data")[-1] == pytest.approx(start, abs=1e-4)
    _, _, there = tab.to_latent(live, *start)
    _, _, back = tab.to_data(live, *z)
    assert re.search(r"x = f⁻¹\(z\) = \(-0\.80, \+1\.20\)", back), back
    assert "log p(x)" in there and "moved into" not in there
    assert "moved into the plotted square" in tab.to_latent(live, 9, 0)[2]


def test_bad_clicks_are_sentences():
    live = fresh()[0]
    for event in (None, gr.SelectData(None, {"index": None, "value": None})):
        with pytest.raises(ValueError, match="Click on the plane"):
            tab.click_latent(live, event)
    x, y, *_ = tab.click_data(live, click(-50, 10_000))  # the nearest edge pixel
    assert (x, y) == pytest.approx(tab.pixel_to_point(0, tab.PLANE_PX - 1), abs=1e-3)


def test_the_code_shown_is_the_coupling_layers_own_and_the_change_of_variables():
    from core.flow import RealNVP2D, run_steps
    from tabs.common import code_of

    coupling, change = ({code.names: code_of(code.module, *code.names) for code in tab.LESSON.code}[names]
                        for names in (("AffineCoupling.scale_and_shift", "AffineCoupling.forward",
                                       "AffineCoupling.inverse"),
                                      ("RealNVP2D.log_prob", "run_steps", "standard_normal_log_prob")))
    for method in (AffineCoupling.scale_and_shift, AffineCoupling.forward, AffineCoupling.inverse):
        assert textwrap.dedent(inspect.getsource(method)).strip() in coupling
    assert "# log|det J| = Σ s(x_a)" in coupling  # comments at a line's end are kept
    for function in (RealNVP2D.log_prob, run_steps):
        assert textwrap.dedent(inspect.getsource(function)).strip() in change
    assert r"\log p(x) = \log p(z) + \log" in next(c.equation for c in tab.LESSON.code if c.module == "core/flow.py")


def test_a_link_starts_a_fresh_flow_with_its_settings_and_plays(monkeypatch):
    monkeypatch.setattr(tab, "LINK_FRAMES", 3)
    old = fresh()[0]
    frames = list(tab.live_run(old, "rings", 1, 5, -2.5, 3, 1))
    live = frames[0][0]
    assert live is not old and live.flow.distribution == "rings" and live.flow.couplings == 3 and live.layer == 1
    assert live.step == 15 and old.step == 0
    assert frames[-1][3].startswith("Step 15:") and "press ▶ Play to go on" in frames[-1][3]
    diverged = list(tab.live_run(None, "moons", 0, 20, 0, COUPLINGS, COUPLINGS))  # learning rate 1
    assert "The flow diverged" in diverged[-1][3]


def test_the_lesson_links_only_real_settings_within_their_ranges():
    with gr.Blocks():
        page = tab.build()
    assert page.lesson is tab.LESSON
    assert set(page.settings) == {"data", "seed", "steps", "lr", "couplings", "layer"}
    for example in tab.LESSON.try_this:
        for name, value in example.settings.items():
            widget = page.settings[name]
            if isinstance(widget, gr.Slider):
                assert widget.minimum <= value <= widget.maximum, (example.label, name, value)
            else:
                assert value in [v for _, v in widget.choices], (example.label, name, value)


def test_gaussian_nll_is_the_fitted_gaussians():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(20_000, 2, generator=gen) * torch.tensor([2.0, 0.5])
    expected = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * np.diag([4.0, 0.25])))
    assert tab.gaussian_nll(points) == pytest.approx(expected, abs=0.02)


def test_without_the_shipped_flow_the_images_name_the_train_command(monkeypatch):
    monkeypatch.setattr(tab, "shipped", lambda: False)
    with pytest.raises(ValueError, match=re.escape(tab.TRAIN_COMMAND)):
        tab.samples(0, 2, 0.7)


def test_the_card_renders_only_figures_that_exist(monkeypatch):
    full = {"figures": {"bits_per_dim": {"pixelcnn_gated": 0.4136, "vae_elbo": "not measured", "flow": "no flow yet"}}}
    quick = {"quick": True, "figures": {"bits_per_dim": {"flow": 1.2346, "pixelcnn_gated": 0.5}}}
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([("likelihood.json", full), ("quick", quick)]))
    monkeypatch.setattr(tab, "read_card", lambda technique, name: {})
    card = tab.image_card()
    assert "this flow (upper bound) 1.235 (quick run)" in card  # the quick run fills in what the full one lacks
    assert "gated PixelCNN 0.414" in card
    assert "0.500" not in card and "VAE" not in card and "Shipped flow" not in card
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([]))
    assert tab.image_card() == ""


@pytest.fixture
def shipped_flow(monkeypatch):
    require(shipped_path("flow", tab.SHIPPED).is_file(), f"no shipped image flow: run `{tab.TRAIN_COMMAND}`")
    levels = torch.randint(0, 4, (3, 1, 16, 16), generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(tab, "_test_images", lambda: levels)
    return levels


def test_samples_same_seed_same_grid_other_temperature_other_grid(shipped_flow):
    first, note = tab.samples(3, 2, 0.7)
    assert "4 samples" in note and "τ = 0.7" in note
    assert np.array_equal(pixels(first), pixels(tab.samples(3, 2, 0.7)[0]))
    assert not np.array_equal(pixels(first), pixels(tab.samples(3, 2, 1.2)[0]))
    side = (2 * 17 + 1) * tab.SCALE
    assert first.size == (side, side)
    levels = set(np.unique(pixels(first)[..., 0]))
    assert levels <= {0, 85, 170, 255}  # four grey levels (the white padding is level 3's grey)
    _, note = tab.samples(3, 1, 0)
    assert "Temperature set to τ = 0.05" in note


def test_temperature_grid_has_one_row_per_latent_and_a_column_per_temperature(shipped_flow):
    grid = tab.temperature_grid(0, 3)
    tile = 17 * tab.SCALE
    assert grid.size == (len(tab.TEMPERATURES) * tile + tab.SCALE, 3 * tile + tab.SCALE + tab.LABEL_PX + 10)


def test_interpolation_strip_runs_from_image_a_to_image_b(shipped_flow):
    strip, note = tab.interpolation(0, 2, 5)
    tile = 17 * tab.SCALE
    assert strip.size == ((5 + 2) * tile + tab.SCALE, tile + tab.SCALE)
    grey = pixels(strip)[..., 0]
    centres = np.arange(16) * tab.SCALE + tab.SCALE // 2

    def tile_levels(i):
        left = tab.SCALE + i * tile
        return grey[tab.SCALE + centres][:, left + centres] // 85

    assert np.array_equal(tile_levels(0), shipped_flow[0, 0].numpy())
    assert np.array_equal(tile_levels(6), shipped_flow[2, 0].numpy())
    assert "Test image 0" in note and "test image 2" in note
    with pytest.raises(ValueError, match="two different images"):
        tab.interpolation(1, 1, 5)
