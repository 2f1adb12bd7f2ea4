"""bench.autoencoder end to end on a tiny world: 16 hand-made test images, a PCA fitted to them, tiny untrained
autoencoders and VAEs (a 4-D one standing in for the 32-D VAE), a stand-in classifier that calls an image's mean
brightness its top class probability and whose features are each quadrant's mean and std, and a stand-in
latent-spaces tab."""
import json
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import bench.autoencoder as ae_bench
import bench.common
from bench.report import MISSING, fill, table
from core.autoencoder import PCA, Autoencoder, PCAConfig, encode_all, fitted_gaussian, gaussian_codes, \
    reconstruction_error
from core.checkpoints import CheckpointError
from core.metrics.precision_recall import precision_recall
from core.runtime import make_generator
from core.vae import VAE, VAEConfig

N = 16
PCA_FILE = ae_bench.SHIPPED["pca"]  # the shipped PCA's file name (pca_32d)


def tiny_images() -> torch.Tensor:
    """Every fourth image bright (0.8 plus speckle of mean 0), the rest dim (0.2): the stand-in classifier
    recognises exactly a quarter of them, with mean top probability 0.25 * 0.8 + 0.75 * 0.2 = 0.35."""
    base = torch.tensor([0.8 if i % 4 == 0 else 0.2 for i in range(N)]).view(N, 1, 1, 1).expand(N, 1, 32, 32)
    speckle = torch.rand(N, 1, 32, 32, generator=make_generator(5)) - 0.5
    speckle = speckle - speckle.mean((1, 2, 3), keepdim=True)  # moves pixels, not an image's mean
    return (base + 0.1 * speckle).clamp(0, 1)


def brightness_probabilities(images: torch.Tensor) -> torch.Tensor:
    """Class 0 with probability p = the image's mean pixel, the other nine (1 - p) / 9 each: the top
    probability is p whenever p >= 0.1, so "recognised" (top >= 0.5) means "mean pixel >= 0.5"."""
    p = images.flatten(1).mean(1, keepdim=True).clamp(0, 1)
    return torch.cat([p, ((1 - p) / 9).expand(-1, 9)], 1)


def quadrant_features(images: torch.Tensor) -> torch.Tensor:
    """[N, 8]: the mean and std of each 16x16 quadrant, cheap and deterministic."""
    quadrants = images.unfold(2, 16, 16).unfold(3, 16, 16).flatten(4).flatten(1, 3)  # [N, 4, 256]
    return torch.cat([quadrants.mean(-1), quadrants.std(-1)], 1)


def _ckpt(**extras):
    return SimpleNamespace(card={"steps": 7, "date": "2026-01-02", "command": "tiny"}, extras=extras, path=None)


def tiny_models(images: torch.Tensor) -> dict:
    def autoencoder(latent: int, seed: int):
        with torch.random.fork_rng():  # seeded weights, the global stream left as it was
            torch.manual_seed(seed)
            model = Autoencoder(VAEConfig(latent_dim=latent, widths=[4, 8]))
        mean, covariance = fitted_gaussian(encode_all(model.eval(), images))
        return model.requires_grad_(False), _ckpt(code_mean=mean, code_covariance=covariance)

    def vae(latent: int, seed: int):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return VAE(VAEConfig(latent_dim=latent, widths=[4, 8])).requires_grad_(False).eval(), _ckpt()

    return {PCA_FILE: (PCA(PCAConfig(components=4)).fit(images), _ckpt()), "plain_2d": autoencoder(2, 1),
            "fashion_2d": vae(2, 3), "plain_32d": autoencoder(4, 2), "denoising_32d": autoencoder(4, 4),
            "fashion_32d": vae(4, 6)}


class FakeTab:
    """tabs.latent_spaces as the bench uses it: MAP_PX and decode_click(space, evt), which records the click
    and takes at least a millisecond."""
    MAP_PX = 120

    def __init__(self):
        self.clicks = []

    def decode_click(self, name, evt):
        self.clicks.append((name, tuple(evt.index)))
        time.sleep(0.001)
        return None, None, "z"


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
    images = tiny_images()
    models = tiny_models(images)

    def load(name):
        if name not in models:  # as core.checkpoints does for a model not trained yet
            raise CheckpointError(f"Checkpoint {name}.pt is missing.")
        return models[name]

    tab = FakeTab()
    coded = []  # (key, the test images' indices, the codes' size) of every codes_of call

    def codes_of(key, model, batch):
        codes = real_codes_of(key, model, batch)
        index = [next(i for i in range(N) if torch.equal(image, images[i])) for image in batch]
        coded.append((key, index, codes.shape[1]))
        return codes

    real_codes_of = ae_bench.codes_of
    monkeypatch.setattr(ae_bench, "load", load)
    monkeypatch.setattr(ae_bench, "codes_of", codes_of)
    monkeypatch.setattr(ae_bench, "features", quadrant_features)
    monkeypatch.setattr(ae_bench, "test_images", lambda n: images[:n])
    monkeypatch.setattr(ae_bench, "probabilities", brightness_probabilities)
    monkeypatch.setattr(ae_bench, "click_handler", lambda: tab)
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return SimpleNamespace(folder=tmp_path, images=images, models=models, tab=tab, coded=coded)


FILES = {"pca": PCA_FILE, "autoencoder": "plain_2d", "vae": "fashion_2d", "autoencoder_32d": "plain_32d",
         "vae_32d": "fashion_32d"}


def _reconstruct(key: str, model, images: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) by hand: PCA through 2 directions, a VAE through its mean."""
    code = model.encode(images, 2) if key == "pca" else model.encode(images)
    return model.decode(code[0] if isinstance(code, tuple) else code)


def _expected(images: torch.Tensor) -> dict:
    p = images.flatten(1).mean(1)
    top = torch.maximum(p, (1 - p) / 9)
    return {"share": round((p >= 0.5).double().mean().item(), 4), "mean_top_probability": round(top.mean().item(), 4)}


def test_the_bench_writes_every_figure_its_rows_show(tiny_world):
    figures = ae_bench.main(["--quick", "--codes", str(N), "--repeats", "4", "--threads", "1"])
    saved = json.loads((tiny_world.folder / "autoencoder.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    assert figures["n_test"] == N and figures["threads"] == 1 and figures["missing"] == []
    assert set(figures["checkpoints"]) == {PCA_FILE, "plain_2d", "fashion_2d", "plain_32d", "denoising_32d",
                                           "fashion_32d"}
    assert figures["checkpoints"][PCA_FILE]["steps"] == 7
    images, models = tiny_world.images, tiny_world.models

    # Reconstruction: PCA through its first 2 of 4 directions, the others through their codes.
    recon = figures["reconstruction"]
    pca = models[PCA_FILE][0]
    assert recon["pca"]["mse"] == pytest.approx(reconstruction_error(pca, images, dims=2)["mse"], abs=1e-5)
    assert recon["pca"]["mse"] > reconstruction_error(pca, images)["mse"] + 1e-4  # 2 directions, not all 4
    for key, name in (("autoencoder", "plain_2d"), ("vae", "fashion_2d")):
        error = reconstruction_error(models[name][0], images)
        assert recon[key]["mse"] == pytest.approx(error["mse"], abs=1e-5)
        assert recon[key]["bce_nats"] == pytest.approx(error["bce_nats"], abs=1e-2)

    # Recognised: the real images' share is known by construction; each prior's, from its own decoded codes.
    seen = figures["recognised"]
    assert seen["n"] == N and seen["threshold"] == 0.5
    real = seen["real_test"]
    assert real["share"] == 0.25 and real["mean_top_probability"] == pytest.approx(0.35, abs=2e-4)
    assert real["class_shares"][0] == 1  # brightness always names class 0
    priors = {"pca": (torch.zeros(2), torch.diag(pca.variances[:2].float())),
              "autoencoder": (models["plain_2d"][1].extras["code_mean"],
                              models["plain_2d"][1].extras["code_covariance"]),
              "vae": (torch.zeros(2), torch.eye(2)),
              ae_bench.UNSCALED: (torch.zeros(2), torch.eye(2)),
              "autoencoder_32d": (models["plain_32d"][1].extras["code_mean"],
                                  models["plain_32d"][1].extras["code_covariance"]),
              "vae_32d": (torch.zeros(4), torch.eye(4))}
    for key, (mean, covariance) in priors.items():
        model = models[FILES.get(key, "plain_2d")][0]
        codes = gaussian_codes(mean, covariance, N, make_generator(ae_bench.CODE_SEED))
        decoded = model.eval().decode(codes)
        assert {k: seen[key][k] for k in ("share", "mean_top_probability")} == pytest.approx(_expected(decoded)), key
    assert torch.tensor(seen["pca"]["prior_covariance"]).flatten().tolist() == pytest.approx(
        torch.diag(pca.variances[:2]).flatten().tolist(), abs=1e-4)
    assert seen["vae"]["prior_covariance"] == [[1, 0], [0, 1]] and "never scaled" in seen[ae_bench.UNSCALED]["prior"]
    assert seen["vae_32d"]["dims"] == 4 and seen["vae_32d"]["prior_variances"] == [1] * 4
    assert seen["autoencoder_32d"]["prior"] == "the Gaussian fitted to its codes"

    # On the decoder's own manifold: an independent recomputation on the stand-in features.
    shape = figures["manifold"]
    assert (shape["k"], shape["codes"], shape["set"], shape["held_out"]) == (3, N, N // 2, N // 2)
    assert shape["set_images"] == [0, N // 2] and shape["held_out_images"] == [N // 2, N]
    for key, (mean, covariance) in priors.items():
        if key == ae_bench.UNSCALED:
            continue
        model = models[FILES.get(key, "plain_2d")][0]
        test_set, held_out = images[:N // 2], images[N // 2:]
        reconstructions = quadrant_features(_reconstruct(key, model, test_set))
        codes = gaussian_codes(mean, covariance, N, make_generator(ae_bench.CODE_SEED))
        expected = precision_recall(reconstructions, quadrant_features(model.decode(codes)), k=3)
        reference = precision_recall(reconstructions, quadrant_features(_reconstruct(key, model, held_out)), k=3)
        assert shape[key]["precision"] == pytest.approx(expected.precision, abs=1e-4), key
        assert shape[key]["recall"] == pytest.approx(expected.recall, abs=1e-4), key
        assert shape[key]["reference"]["precision"] == pytest.approx(reference.precision, abs=1e-4), key
        assert shape[key]["reference"]["recall"] == pytest.approx(reference.recall, abs=1e-4), key
        assert shape[key]["reference"]["recognised"] == _expected(_reconstruct(key, model, held_out))["share"]
        assert shape[key]["dims"] == (4 if key.endswith("32d") else 2)
    # PCA's codes are its first 2 coordinates; each model's reference images are disjoint from its set.
    assert [key for key, _, _ in tiny_world.coded] == [k for k in FILES for _ in range(2)]
    assert {size for key, _, size in tiny_world.coded if key == "pca"} == {2}
    for key in FILES:
        set_index, held_index = [index for k, index, _ in tiny_world.coded if k == key]
        assert set_index == list(range(N // 2)) and held_index == list(range(N // 2, N))

    # Clicks: one decode per call and the stand-in tab's handler, for each of the three spaces.
    click = figures["click"]
    for key in ("pca", "autoencoder", "vae"):
        assert click[key]["runs"] == 4 and 0 < click[key]["median_ms"] <= click[key]["max_ms"]
        assert 1 <= click["handler"][key]["median_ms"] <= click["handler"][key]["max_ms"]
    assert click["meets_target"] == all(click[k]["median_ms"] <= 20 for k in ("pca", "autoencoder", "vae"))
    names = [name for name, _ in tiny_world.tab.clicks]
    assert names == [name for name in ("PCA", "autoencoder", "VAE") for _ in range(3 + click["handler"]["pca"]["runs"])]
    assert all(0 <= v < FakeTab.MAP_PX for _, pixel in tiny_world.tab.clicks for v in pixel)
    assert torch.get_num_threads() == 1

    # Denoising: more noise, more error in the noisy input; every model at every sigma.
    noisy = [figures["denoising"]["noisy_input"][f"sigma_{k}"]["mse"] for k in ("10", "30", "50")]
    assert 0 < noisy[0] < noisy[1] < noisy[2]
    for name in ("plain_32d", "denoising_32d"):
        assert set(figures["denoising"][name]) == {"clean", "sigma_10", "sigma_30", "sigma_50"}
        assert figures["denoising"][name]["clean"]["mse"] == pytest.approx(
            reconstruction_error(models[name][0], images)["mse"], abs=1e-5)
        assert figures["denoising"][name]["sigma_30"]["mse"] == pytest.approx(
            reconstruction_error(models[name][0], images, noise=0.3, seed=ae_bench.NOISE_SEED)["mse"], abs=1e-5)

    for row in ae_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    for sentence in ae_bench.README_PROSE:
        fill(sentence, figures)
    rows = table(tiny_world.folder, ["autoencoder"])
    assert MISSING not in rows and rows.count("`bench/autoencoder.py`") == len(ae_bench.README_ROWS)
    assert "(quick)" in rows and f"{seen['vae']['share']:.1%}" in rows


class Identity(nn.Module):
    """encode and decode are the identity: its "reconstruction" of a noisy image is that noisy image."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))  # device_of finds the device through it

    def encode(self, x):
        return x

    def decode(self, z):
        return z


def test_the_noisy_input_is_the_noise_the_models_see():
    # 2,500 images: more than one of reconstruction_error's batches, so the batches must line up too.
    images = torch.rand(2500, 1, 32, 32, generator=make_generator(9))
    for sigma in (0.1, 0.5):
        assert ae_bench.noisy_input_mse(images, sigma, seed=4) == pytest.approx(
            reconstruction_error(Identity(), images, batch_size=ae_bench.BATCH, noise=sigma, seed=4)["mse"], abs=1e-6)
    assert ae_bench.noisy_input_mse(images, 0.1, seed=4) != ae_bench.noisy_input_mse(images, 0.1, seed=5)


def test_the_recognised_share_counts_top_probabilities_of_at_least_one_half(monkeypatch):
    confidences = torch.tensor([[0.2, 0.1] + [0.7 / 8] * 8,   # top 0.2: not recognised
                                [0.5, 0.4] + [0.1 / 8] * 8,   # top exactly 0.5: recognised
                                [0.05, 0.9] + [0.05 / 8] * 8,  # class 1 at 0.9
                                [0.3, 0.49] + [0.21 / 8] * 8])  # top 0.49: not recognised
    monkeypatch.setattr(ae_bench, "probabilities", lambda images: confidences[:len(images)])
    result = ae_bench.recognition(torch.zeros(4, 1, 32, 32))
    assert result["n"] == 4 and result["share"] == 0.5
    assert result["mean_top_probability"] == pytest.approx((0.2 + 0.5 + 0.9 + 0.49) / 4, abs=1e-4)
    assert result["class_shares"] == [0.50, 0.50] + [0.0] * 8


def test_models_not_trained_yet_are_listed_and_their_rows_wait(tiny_world, monkeypatch):
    for name in ("plain_32d", "denoising_32d", "fashion_32d"):
        del tiny_world.models[name]
    monkeypatch.setattr(ae_bench, "click_handler", lambda: None)  # the tab is not there either
    figures = ae_bench.main(["--quick", "--codes", "8", "--repeats", "2", "--n-test", "8"])
    assert figures["n_test"] == 8 and figures["recognised"]["real_test"]["n"] == 8
    assert figures["missing"] == ["plain_32d", "denoising_32d", "fashion_32d", "tabs.latent_spaces"]
    assert "is missing" in figures["missing_notes"]["fashion_32d"] and "handler" not in figures["click"]
    assert set(figures["denoising"]) == {"sigmas", "seed", "n", "what", "noisy_input"}
    assert {"autoencoder_32d", "vae_32d"}.isdisjoint(set(figures["recognised"]) | set(figures["manifold"]))
    # All 16 test images feed the manifold, not the first --n-test: 8 codes, so 8 held out and 8 in the set.
    assert (figures["manifold"]["set"], figures["manifold"]["held_out"]) == (8, 8) and "pca" in figures["manifold"]
    waiting = [line for line in table(tiny_world.folder, ["autoencoder"]).splitlines() if MISSING in line]
    assert len(waiting) == 5  # the two denoising rows, the handler's and the two 32-D rows
    assert sum("Denoising" in line for line in waiting) == 2 and sum("32-D:" in line for line in waiting) == 2
    for bad in ("--codes", "--n-test", "--repeats", "--manifold-set"):
        with pytest.raises(SystemExit):
            ae_bench.main([bad, "0"])
    with pytest.raises(SystemExit):  # k = 3 neighbours need at least 4 codes
        ae_bench.main(["--codes", "3"])


def test_without_the_32d_vae_its_rows_wait_and_the_autoencoders_are_measured(tiny_world):
    del tiny_world.models["fashion_32d"]
    figures = ae_bench.main(["--quick", "--codes", "8", "--repeats", "1", "--n-test", "4"])
    assert figures["missing"] == ["fashion_32d"] and "fashion_32d" not in figures["checkpoints"]
    assert "vae_32d" not in figures["manifold"] and 0 <= figures["manifold"]["autoencoder_32d"]["precision"] <= 1
    assert "vae_32d" not in figures["recognised"] and "autoencoder_32d" in figures["recognised"]
    lines = [line for line in table(tiny_world.folder, ["autoencoder"]).splitlines() if MISSING in line]
    assert len(lines) == 2 and all("32-D" in line for line in lines)


@pytest.mark.parametrize("total, set_size, n, split", [
    (10000, 3000, 1000, (3000, 1000)),  # the full run: test images 0..2999, then 3000..3999
    (10000, 300, 200, (300, 200)),      # quick
    (16, 300, 16, (8, 8)),              # too few: halves
    (16, 300, 4, (12, 4)),              # a few codes: their held-out images, the rest the set
    (16, 4, 16, (4, 12)),               # a small set: the rest held out
])
def test_the_manifold_set_and_its_held_out_images_split_the_test_images(total, set_size, n, split):
    assert ae_bench.manifold_split(total, set_size, n) == split
    assert sum(split) <= total
