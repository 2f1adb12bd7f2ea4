"""The VAE tab's first section (tabs/latent_spaces.py): PCA, a plain autoencoder and the 2-D VAE side by side.

The handlers are called directly with tiny models (a PCA fitted to a few synthetic images, untrained
autoencoders and VAE) standing in for the shipped ones, so each test takes a fraction of a second; the
last two use the shipped figure's numbers and the real shipped PCA, plain_2d and fashion_2d.
"""
import json
import re

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import tabs.latent_spaces as tab
from core import autoencoder, vae
from core.autoencoder import PCA, Autoencoder, PCAConfig, add_noise, encode_mean
from core.checkpoints import Checkpoint
from core.data.fashion_mnist import CLASS_NAMES
from core.data.images import tensor_to_pil
from core.runtime import make_generator
from core.vae import VAE, VAEConfig, normal_grid
from tests.conftest import require

CLASSES = [f"class {i}" for i in range(10)]
AE_MEAN = torch.tensor([3.0, -2.0])
AE_COVARIANCE = torch.tensor([[4.0, 1.9], [1.9, 1.0]])  # correlation 0.95: the samples must follow it


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")).astype(int)


def click(x, y):
    return gr.SelectData(None, {"index": [x, y], "value": None})


def synthetic_clothes(n: int, generator: torch.Generator) -> torch.Tensor:
    """n 32x32 images in [0, 1]: a bright blob, a stripe and a ramp in random amounts, plus a little noise,
    so the PCA has a non-uniform mean and unequal variances."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    patterns = torch.stack([torch.exp(-(x ** 2 + y ** 2) * 4), (x.abs() < 0.3).float(), (y + 1) / 2])
    weights = torch.rand(n, 3, generator=generator) * torch.tensor([0.6, 0.3, 0.2])
    images = torch.einsum("nk,khw->nhw", weights, patterns) + 0.05 * torch.rand(n, 32, 32, generator=generator)
    return images.clamp(0, 1)[:, None]


@pytest.fixture
def tiny(monkeypatch):
    """The section's handlers wired to tiny models instead of the shipped checkpoints: returns them by name."""
    torch.manual_seed(0)
    generator = make_generator(0)
    images = synthetic_clothes(64, generator)
    pca = PCA(PCAConfig(image_size=32, channels=1, components=20)).fit(images).eval()
    labels = torch.arange(64) % 10
    pca_ckpt = Checkpoint(config={}, state_dict={}, extras={
        "map_codes": pca.encode(images, 2).half(), "map_labels": labels.to(torch.uint8), "class_names": CLASSES,
        "examples": (images[:12] * 255).round().to(torch.uint8),
        "example_labels": (torch.arange(12) * 3 % 10).to(torch.uint8),  # example i: class 3i mod 10
        "example_test_index": torch.arange(12) * 7})

    def plain(latent):
        return Autoencoder(VAEConfig(image_size=32, channels=1, latent_dim=latent, widths=[4, 4, 4])).eval()

    lower = torch.linalg.cholesky(AE_COVARIANCE)
    ae_codes = AE_MEAN + torch.randn(300, 2, generator=generator) @ lower.T
    ae_ckpt = Checkpoint(config={}, state_dict={}, extras={
        "map_codes": ae_codes.half(), "map_labels": torch.arange(300) % 10, "class_names": CLASSES,
        "code_mean": AE_MEAN, "code_covariance": AE_COVARIANCE})
    code32 = Checkpoint(config={}, state_dict={}, extras={"code_mean": torch.zeros(32),
                                                          "code_covariance": torch.eye(32)})
    fashion = VAE(VAEConfig(image_size=32, channels=1, latent_dim=2, widths=[4, 4, 4])).eval()
    fashion_ckpt = Checkpoint(config={}, state_dict={}, extras={
        "map_codes": torch.randn(300, 2, generator=generator), "map_labels": torch.arange(300) % 10,
        "class_names": CLASSES})
    models = {tab.SPACES["PCA"]: (pca, pca_ckpt), tab.SPACES["autoencoder"]: (plain(2), ae_ckpt),
              "plain_32d": (plain(32), code32), "denoising_32d": (plain(32), code32)}
    monkeypatch.setattr(autoencoder, "load_model", lambda name: models[name])
    monkeypatch.setattr(vae, "load_vae", lambda name: {tab.SPACES["VAE"]: (fashion, fashion_ckpt)}[name])
    return {**{name: model for name, (model, _) in models.items()}, "VAE": fashion, "PCA": pca,
            "autoencoder": models[tab.SPACES["autoencoder"]][0], "pca_ckpt": pca_ckpt}


def tiles(grid: Image.Image, n: int, columns: int, side: int = 32) -> list[np.ndarray]:
    """The n images of a grid drawn with one pixel of padding."""
    grey = pixels(grid)
    return [grey[1 + (i // columns) * (side + 1):][:side, 1 + (i % columns) * (side + 1):][:, :side] for i in range(n)]


def as_grey(images: torch.Tensor) -> list[np.ndarray]:
    return [pixels(tensor_to_pil(image)) for image in images]


# --- the maps and the decoded grids --------------------------------------------------------------

def test_show_spaces_gives_three_maps_three_grids_and_the_legend(tiny):
    outputs = tab.show_spaces(4)
    assert len(outputs) == 7
    maps, grids, legend = outputs[:3], outputs[3:6], outputs[6]
    for picture in maps:
        assert picture.size == (tab.MAP_PX, tab.MAP_PX) and pixels(picture).std() > 0
    assert len({pixels(m).tobytes() for m in maps}) == 3  # three different spaces
    for grid in grids:
        assert grid.size == (4 * 33 + 1, 4 * 33 + 1)
    for name in CLASSES:
        assert name in legend
    # Each grid decodes mean + std * (the inverse-normal-CDF grid) of its own space's Gaussian.
    pca = tiny["PCA"]
    expected = {"PCA": (pca, pca.variances[:2].sqrt() * normal_grid(4)),
                "autoencoder": (tiny["autoencoder"], AE_MEAN + AE_COVARIANCE.diagonal().sqrt() * normal_grid(4)),
                "VAE": (tiny["VAE"], normal_grid(4))}
    for grid, (name, (model, codes)) in zip(grids, expected.items()):
        shown, wanted = tiles(grid, 16, 4), as_grey(autoencoder.decode(model, codes))
        assert all(np.abs(a - b).max() <= 1 for a, b in zip(shown, wanted)), name


@pytest.mark.parametrize("n, side", [(1, 3), (3, 3), (15, 15), (99, 15), (-4, 3), (None, 8), ("ten", 8),
                                     (float("nan"), 8), (7.6, 7)])
def test_grid_size_is_clamped_to_3_to_15(tiny, n, side):
    for grid in tab.space_grids(n):
        assert grid.size == (side * 33 + 1, side * 33 + 1)


def test_window_to_pixel_and_to_code_are_inverses():
    generator = make_generator(1)
    for centre, half, size in (((0.0, 0.0), 1.0, 300), ((3.0, -2.0), 7.5, 301), ((-0.5, 12.0), 0.01, 50)):
        window = tab.Window(centre, half)
        for x, y in torch.rand(20, 2, generator=generator).mul(size - 1).tolist():
            assert window.to_pixel(window.to_code(x, y, size), size) == pytest.approx((x, y), abs=1e-6)
        # The corners of the picture are the corners of the window; up is +z2.
        assert window.to_code(0, 0, size) == pytest.approx((centre[0] - half, centre[1] + half))
        assert window.to_code(size - 1, size - 1, size) == pytest.approx((centre[0] + half, centre[1] - half))
        assert window.to_pixel(centre, size) == pytest.approx(((size - 1) / 2, (size - 1) / 2))


def test_window_around_holds_995_per_mille_of_the_codes_about_the_centre():
    codes = torch.cat([torch.randn(1000, 2, generator=make_generator(2)) + torch.tensor([5.0, 1.0]),
                       torch.tensor([[500.0, 1.0]])])  # one far outlier must not shrink the picture
    window = tab.Window.around(codes, (5.0, 1.0))
    assert window.centre == (5.0, 1.0)
    spread = (codes - torch.tensor([5.0, 1.0])).abs()
    assert window.half == pytest.approx(spread.quantile(0.995).item() * 1.05, rel=1e-5) and window.half < 10
    assert tab.Window.around(torch.zeros(5, 2)).half > 0  # all codes at the centre: still a window


def test_draw_codes_leaves_out_codes_outside_the_window_and_marks_the_marker_and_points():
    window = tab.Window((1.0, 1.0), 1.0)
    codes = torch.tensor([[1.5, 1.5], [2.5, 1.0], [1.0, -3.0], [0.2, 0.4]])
    labels = torch.tensor([1, 2, 3, 4])
    image = np.asarray(tab.draw_codes(codes, labels, window, 60)).astype(int)
    assert image.shape == (60, 60, 3)

    def painted(label):
        return np.argwhere((image == tab.CLASS_COLOURS[label]).all(-1))

    for label, code in ((1, (1.5, 1.5)), (4, (0.2, 0.4))):  # inside: a 2x2 dot where to_pixel puts it
        col, row = (round(v) for v in window.to_pixel(code, 60))
        assert sorted(map(tuple, painted(label))) == [(row, col), (row, col + 1), (row + 1, col), (row + 1, col + 1)]
    assert len(painted(2)) == 0 and len(painted(3)) == 0  # outside the window: not drawn at all, not on the edge
    plain = pixels(tab.draw_codes(codes, labels, window, 60))
    ringed = pixels(tab.draw_codes(codes, labels, window, 60, marker=(0.5, 1.5)))
    changed = np.argwhere(ringed != plain)
    x, y = window.to_pixel((0.5, 1.5), 60)
    assert len(changed) > 20 and np.abs(changed - [y, x]).max() <= 8  # a ring around the marker, nothing else
    crossed = pixels(tab.draw_codes(codes, labels, window, 60, points=torch.tensor([[1.0, 1.0]])))
    assert crossed[30, 30] == 0 and crossed[26, 26] < 100  # a black cross at the centre
    legend = tab.draw_codes(codes, labels, window, 60, legend=CLASSES[:3], legend_px=80)
    assert legend.size == (140, 60) and (np.asarray(legend)[:, 60:] == tab.CLASS_COLOURS[2]).all(-1).any()


# --- clicking a map ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(tab.SPACES))
def test_a_click_decodes_exactly_the_code_under_the_pointer(tiny, name):
    x, y = 200, 75
    window = tab.space(name).window
    z = window.to_code(x, y, tab.MAP_PX)
    ringed, decoded, text = tab._clicker(name)(click(x, y))
    assert text == f"z = ({z[0]:+.2f}, {z[1]:+.2f})"
    assert decoded.size == (tab.DECODED_PX, tab.DECODED_PX)
    direct = autoencoder.decode(tiny[name], torch.tensor([z]))
    assert np.array_equal(pixels(decoded), pixels(tab._picture(direct)))
    elsewhere = autoencoder.decode(tiny[name], torch.tensor([window.to_code(20, 280, tab.MAP_PX)]))
    assert not np.array_equal(pixels(decoded), pixels(tab._picture(elsewhere)))  # the click position matters
    changed = np.argwhere(pixels(ringed) != pixels(tab.space(name).draw()))
    assert len(changed) > 20 and np.abs(changed - [y, x]).max() <= 8  # the ring is drawn where the click was
    assert tab._clicker(name).__name__ == f"decode_click_{name.lower()}"


def test_clicks_outside_the_map_clamp_to_its_edge_and_bad_events_are_refused(tiny):
    assert tab.decode_click("VAE", click(-50, 10_000))[2] == tab.decode_click("VAE", click(0, tab.MAP_PX - 1))[2]
    # a coordinate that is not a number counts as the middle of the map
    assert tab.decode_click("VAE", click(1e12, float("nan")))[2] == \
        tab.decode_click("VAE", click(tab.MAP_PX - 1, tab.MAP_PX // 2))[2]
    assert tab.decode_click("PCA", click("left", None))[2] == \
        tab.decode_click("PCA", click(tab.MAP_PX // 2, tab.MAP_PX // 2))[2]
    for event in (None, gr.SelectData(None, {"index": None, "value": None})):
        with pytest.raises(ValueError, match="Click on a map"):
            tab.decode_click("PCA", event)
    with pytest.raises(ValueError, match=r"Unknown latent space 't-SNE': choose one of PCA, autoencoder, VAE\."):
        tab.decode_click("t-SNE", click(10, 10))


@pytest.mark.parametrize("index", [5, [1]])
def test_a_malformed_click_index_is_refused_with_a_sentence(tiny, index):
    with pytest.raises(ValueError, match="Click on a map"):
        tab.decode_click("PCA", gr.SelectData(None, {"index": index, "value": None}))


# --- random codes ------------------------------------------------------------------------------

@pytest.fixture
def judged(monkeypatch):
    """A stub Fashion-MNIST classifier: for the k-th space it is sure of SURE[k] of the images it sees."""
    from core.metrics import classifiers

    sure, seen = [5, 0, 16], []
    sentinel = object()

    def probabilities(images, value_range, model=None):
        assert model is sentinel and value_range == (0, 1)
        seen.append(images.clone())
        p = torch.full((len(images), 10), 0.05)
        k = sure[(len(seen) - 1) % 3]
        p[:k, 3] = 0.5  # exactly p = 0.5 counts as sure
        p[k:, 3] = 0.4999
        return p

    monkeypatch.setattr(classifiers, "load_fashion_classifier", lambda: sentinel)
    monkeypatch.setattr(classifiers, "fashion_probabilities", probabilities)
    return sure, seen


def test_sample_spaces_draws_from_each_spaces_gaussian_and_counts_the_sure_verdicts(tiny, judged, monkeypatch):
    sure, seen = judged
    codes = []
    original = autoencoder.decode
    monkeypatch.setattr(autoencoder, "decode", lambda model, z: codes.append(z.clone()) or original(model, z))
    outputs = tab.sample_spaces(5)
    assert len(outputs) == 7 and len(codes) == 3 and len(seen) == 3
    maps, grids, verdict = outputs[:3], outputs[3:6], outputs[6]
    for name, k, z, images, grid in zip(tab.SPACES, sure, codes, seen, grids):
        assert z.shape == (tab.SAMPLES, 2)
        assert f"**{name}**: {tab.SAMPLES} codes" in verdict and f"**{k} of {tab.SAMPLES}**" in verdict.split(
            f"**{name}**")[1].split("\n")[0]
        assert torch.equal(images, original(tiny[name], z))  # the classifier judged the decoded codes
        assert all(np.abs(a - b).max() <= 1 for a, b in zip(tiles(grid, tab.SAMPLES, 4), as_grey(images)))
    assert "the prior N(0, I)" in verdict.split("**VAE**")[1]
    # The right Gaussian: the PCA's variances along its two directions, the autoencoder's fitted
    # (correlated) one, the VAE's N(0, I). The same seed gives the same standard normals in each.
    pca_z, ae_z, vae_z = codes
    assert torch.allclose(pca_z, vae_z * tiny["PCA"].variances[:2].sqrt(), atol=1e-5)
    assert torch.allclose(ae_z, AE_MEAN + vae_z @ torch.linalg.cholesky(AE_COVARIANCE).T, atol=1e-4)
    assert np.corrcoef(ae_z.T.numpy())[0, 1] > 0.8 and abs(ae_z[:, 0].mean() - 3) < 1.5
    # The random codes are marked on the maps (crosses), so the maps differ from the plain ones.
    for name, marked in zip(tab.SPACES, maps):
        assert not np.array_equal(pixels(marked), pixels(tab.space(name).draw()))


def test_sample_spaces_is_seeded(tiny, judged):
    def digest(outputs):
        return [pixels(picture).tobytes() for picture in outputs[:6]]

    first, again, other = digest(tab.sample_spaces(5)), digest(tab.sample_spaces(5)), digest(tab.sample_spaces(6))
    assert first == again
    assert all(a != b for a, b in zip(first, other))
    assert digest(tab.sample_spaces("five")) == digest(tab.sample_spaces(0))  # any value is a seed


# --- eigen-clothes -------------------------------------------------------------------------------

def test_eigen_clothes_shows_the_first_directions_and_their_shares(tiny):
    pca = tiny["PCA"]
    grid, note = tab.eigen_clothes()
    assert tab.EIGEN_SHOWN == 16 and grid.size == (8 * 33 + 1, 2 * 33 + 1)  # 16 tiles, eight to a row
    shown = tiles(grid, tab.EIGEN_SHOWN, 8)
    for i in (0, 5, 15):
        d = pca.directions[i]
        expected = pixels(tensor_to_pil((0.5 + 0.5 * d / d.abs().max()).view(1, 32, 32)))
        assert np.abs(shown[i] - expected).max() <= 1
        assert shown[i].min() == 0 or shown[i].max() == 255  # each direction scaled to fill the range
    ratio = pca.explained_variance_ratio()
    shares = [float(v) for v in re.findall(r"\d+: ([\d.]+) %", note)]
    assert shares == pytest.approx((100 * ratio[:tab.EIGEN_SLIDERS]).tolist(), abs=0.051)
    assert f"The first {tab.EIGEN_SLIDERS} together: {100 * ratio[:tab.EIGEN_SLIDERS].sum():.0f} %" in note
    assert f"all 20 shipped: {100 * ratio.sum():.0f} %" in note


def test_pca_sliders_move_the_mean_image_along_each_direction(tiny):
    pca = tiny["PCA"]

    def expected(weights):
        x = pca.mean + (torch.tensor(weights) * pca.variances[:len(weights)].sqrt()) @ pca.directions[:len(weights)]
        return pixels(tensor_to_pil(x.clamp(0, 1).view(1, 32, 32)).resize((192, 192), Image.NEAREST))

    zeros = [0.0] * tab.EIGEN_SLIDERS
    mean = pixels(tab.pca_slider_image(*zeros))
    assert mean.shape == (192, 192) and mean.std() > 5  # the mean image: not a blank
    assert np.abs(mean - expected([0.0])).max() <= 1
    assert np.array_equal(mean, pixels(tab.pca_slider_image()))  # no sliders: the mean image too
    for i, value in ((0, 1.5), (2, -2.0), (7, 3.0)):
        weights = list(zeros)
        weights[i] = value
        moved = pixels(tab.pca_slider_image(*weights))
        assert np.abs(moved - expected(weights)).max() <= 1
        assert np.abs(moved - mean).max() > 3  # it really moved
    both = [1.0, -1.0] + [0.0] * 6
    assert np.abs(pixels(tab.pca_slider_image(*both)) - expected(both)).max() <= 1
    # Values are clamped to +-3 standard deviations; non-numbers count as 0; extra values are ignored.
    assert np.array_equal(pixels(tab.pca_slider_image(99, *zeros[1:])), pixels(tab.pca_slider_image(3, *zeros[1:])))
    assert np.array_equal(pixels(tab.pca_slider_image(-1e12, *zeros[1:])),
                          pixels(tab.pca_slider_image(-3, *zeros[1:])))
    for odd in (None, float("nan"), "three", float("inf") * 0):
        assert np.array_equal(pixels(tab.pca_slider_image(odd, *zeros[1:])), mean)
    assert np.array_equal(pixels(tab.pca_slider_image(*zeros, 3.0, 3.0)), mean)


# --- the denoising autoencoder --------------------------------------------------------------------

def _errors(note: str) -> list[float]:
    return [float(v) for v in re.findall(r"\*\*([\d.]+)\*\*", note)]


def test_denoise_corrupts_reconstructs_and_reports_the_errors(tiny):
    examples = tiny["pca_ckpt"].extras["examples"]
    clean_shown, noisy_shown, plain_shown, denoised_shown, note = tab.denoise(3, 0.3, 7)
    clean = examples[3:4].float() / 255
    noisy = add_noise(clean, 0.3, make_generator(7))
    recon = [autoencoder.decode(m, encode_mean(m, noisy)) for m in (tiny["plain_32d"], tiny["denoising_32d"])]
    for picture, x in zip((clean_shown, noisy_shown, *(plain_shown, denoised_shown)), (clean, noisy, *recon)):
        assert picture.size == (tab.DECODED_PX, tab.DECODED_PX)
        assert np.array_equal(pixels(picture), pixels(tab._picture(x)))
    expected = [(x - clean).pow(2).mean().item() for x in (noisy, *recon)]
    assert _errors(note) == pytest.approx(expected, abs=5e-5) and len(_errors(note)) == 3
    assert f"Test image 21 ({CLASS_NAMES[9]}), noise std 0.30." in note  # example 3: test image 3 * 7, class 3 * 3
    assert "beyond" not in note
    assert np.array_equal(pixels(tab.denoise(3, 0.3, 7)[1]), pixels(noisy_shown))  # seeded
    assert not np.array_equal(pixels(tab.denoise(3, 0.3, 8)[1]), pixels(noisy_shown))


def test_denoise_clamps_sigma_and_the_example_and_says_when_sigma_is_beyond_training(tiny):
    loud = tab.denoise(0, 5.0, 0)[4]
    assert "noise std 1.00 (beyond the 0.5 the denoiser trained on)" in loud
    assert "beyond" in tab.denoise(0, 0.55, 0)[4] and "beyond" not in tab.denoise(0, 0.5, 0)[4]
    silent = tab.denoise(0, -1.0, 0)
    assert "noise std 0.00." in silent[4] and _errors(silent[4])[0] == 0.0
    assert np.array_equal(pixels(silent[0]), pixels(silent[1]))  # no noise: the input is the clean image
    assert "noise std 0.30" in tab.denoise(0, None, 0)[4] and "noise std 0.30" in tab.denoise(0, "loud", 0)[4]
    assert "Test image 77 (" in tab.denoise(10 ** 9, 0.3, 0)[4]  # the last of the 12 examples: 11 * 7
    assert "Test image 0 (" in tab.denoise(-3, 0.3, 0)[4] and "Test image 0 (" in tab.denoise(float("nan"), 0.3, 0)[4]


# --- the shipped figure ----------------------------------------------------------------------------

def test_figure_table_renders_the_numbers_or_says_they_are_missing(tmp_path, monkeypatch):
    record = {"command": "python -m core.autoencoder figures", "date": "2026-12-06", "dims": [1, 2, 4],
              "pca": [{"mse": 0.0469}, {"mse": 0.03495}, {"mse": 0.02751}],
              "autoencoder": [{"mse": 0.041}, {"mse": 0.02612}, {"mse": 0.0181}], "vae_2d": {"mse": 0.03}}
    (tmp_path / "recon_vs_dims.json").write_text(json.dumps(record))
    monkeypatch.setattr(tab, "RECON_VS_DIMS", tmp_path / "recon_vs_dims")
    table = tab.figure_table()
    lines = table.splitlines()
    assert "| latent dims | 1 | 2 | 4 |" in lines and "|---|---|---|---|" in lines
    assert "| PCA | 0.0469 | 0.0350 | 0.0275 |" in lines  # 0.03495 rounds to 0.0350 at four places
    assert "| autoencoder | 0.0410 | 0.0261 | 0.0181 |" in lines
    assert "mean code: 0.0300" in table and "`python -m core.autoencoder figures` on 2026-12-06" in table
    (tmp_path / "recon_vs_dims.json").write_text("{not json")
    assert "not computed yet" in tab.figure_table()
    monkeypatch.setattr(tab, "RECON_VS_DIMS", tmp_path / "missing" / "recon_vs_dims")
    assert tab.figure_table() == "The figure is not computed yet: run `python -m core.autoencoder figures`."


def test_figure_table_shows_the_shipped_numbers():
    path = tab.RECON_VS_DIMS.with_suffix(".json")
    require(path.is_file(), f"{path.name} is not shipped: run `python -m core.autoencoder figures`")
    record = json.loads(path.read_text())
    lines = tab.figure_table().splitlines()
    assert "| latent dims | " + " | ".join(map(str, record["dims"])) + " |" in lines
    for kind, label in (("pca", "PCA"), ("autoencoder", "autoencoder")):
        assert f"| {label} | " + " | ".join(f"{e['mse']:.4f}" for e in record[kind]) + " |" in lines
    assert f"mean code: {record['vae_2d']['mse']:.4f}" in lines[0]


# --- the real shipped models -----------------------------------------------------------------------

def test_the_shipped_pca_map_decodes_its_centre_to_the_mean_image():
    from core.registry import list_shipped

    pca_name, plain_name, vae_name = tab.SPACES.values()
    require({pca_name, plain_name} <= set(list_shipped("autoencoder")) and vae_name in list_shipped("vae"),
            f"the shipped {pca_name}, {plain_name} or {vae_name} is missing: see core/autoencoder.py for the commands")
    pca, _ = autoencoder.load_model(pca_name)
    window = tab.space("PCA").window
    assert window.centre == (0.0, 0.0)  # PCA's codes are centred: the map's middle is the mean image
    centre = (tab.MAP_PX - 1) // 2
    _, decoded, text = tab.decode_click("PCA", click(centre, centre))
    z = [float(v) for v in re.findall(r"[-+][\d.]+", text)]
    assert max(map(abs, z)) <= window.half / 100  # half a pixel from the centre
    mean = pixels(tab._picture(pca.mean.clamp(0, 1).view(1, 1, 32, 32)))
    assert np.abs(pixels(decoded) - mean).max() <= 2 and mean.std() > 20  # the mean garment, not a blank
    # All three shipped maps: different pictures, each holding the codes' bulk inside its window.
    maps = tab.show_spaces(3)[:3]
    assert len({pixels(m).tobytes() for m in maps}) == 3
    for name in tab.SPACES:
        s = tab.space(name)
        inside = ((s.codes - torch.tensor(s.window.centre)).abs() < s.window.half).all(1).float().mean().item()
        assert 0.99 <= inside <= 1.0, (name, inside)
