"""PCA by SVD and the plain and denoising autoencoders (core/autoencoder.py): the linear algebra, the
losses, the trainer on tiny data, and the shipped models on the real test set."""
import argparse
import functools
import math

import pytest
import torch
from torch import nn

from core.autoencoder import (PCA, PCA_NAME, SWEEP_DIMS, Autoencoder, PCAConfig, add_noise, autoencoder_loss,
                              encode_all, fitted_gaussian, gaussian_codes, load_model, prior, reconstruction_error,
                              shipped_name)
from core.registry import shipped_path
from core.runtime import make_generator
from core.vae import VAEConfig, as_float, train_epochs
from tests.conftest import real_fashion_test_split, require


def low_rank_images(n=300, size=8, seed=0) -> torch.Tensor:
    """n grey images [n, 1, size, size] near a 5-D subspace, in mid-range (well inside [0, 1], so no
    reconstruction here is clipped): PCA has a best subspace to find, and a random one is worse."""
    g = make_generator(seed)
    pixels = size * size
    basis = torch.randn(5, pixels, generator=g)
    coefficients = torch.randn(n, 5, generator=g) * torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5])
    x = 0.5 + 0.015 * coefficients @ basis + 0.01 * torch.randn(n, pixels, generator=g)
    assert 0 < x.min() and x.max() < 1
    return x.view(n, 1, size, size)


def rectangles(n, size=16, seed=0) -> torch.Tensor:
    """n binary images [n, 1, size, size], each one bright axis-aligned rectangle on black."""
    g = make_generator(seed)
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, bottom = sorted(torch.randint(0, size, (2,), generator=g).tolist())
        left, right = sorted(torch.randint(0, size, (2,), generator=g).tolist())
        x[i, 0, top:bottom + 2, left:right + 2] = 1.0
    return x


def tiny_autoencoder(latent=8, seed=0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(VAEConfig(image_size=16, channels=1, latent_dim=latent, widths=[8, 16]))


def train(model, images, epochs, noise=0.0, batch_size=32, lr=3e-3, seed=0) -> list[dict]:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return list(train_epochs(model, images, functools.partial(autoencoder_loss, noise=noise), epochs=epochs,
                             batch_size=batch_size, optimizer=optimizer, generator=make_generator(seed),
                             progress={"epoch": 0, "batch": 0, "sums": {}}))


# --- PCA ------------------------------------------------------------------------------------------

def test_pca_with_every_component_reconstructs_exactly():
    x = low_rank_images()  # 300 images of 64 pixels
    pca = PCA(PCAConfig(image_size=8, channels=1, components=64)).fit(x)
    codes = pca.encode(x)
    assert codes.shape == (300, 64)
    assert torch.allclose(pca.decode(codes), x, atol=1e-5)
    assert pca.decode(codes).shape == x.shape
    # ... and with fewer it is not: the residual is what the last directions carry.
    assert (pca.decode(pca.encode(x, 4)) - x).abs().max() > 1e-3
    # uint8 images are fitted as their value / 255
    as_bytes = (x * 255).round().to(torch.uint8)
    from_bytes = PCA(PCAConfig(image_size=8, components=64)).fit(as_bytes)
    assert torch.allclose(from_bytes.mean, as_bytes.float().div(255).flatten(1).mean(0), atol=1e-6)


def test_pca_directions_are_orthonormal_and_variances_are_those_of_the_codes():
    x = low_rank_images()
    flat = x.flatten(1).double()
    pca = PCA(PCAConfig(image_size=8, components=64)).fit(x)
    v = pca.directions.double()
    assert torch.allclose(v @ v.T, torch.eye(64, dtype=torch.float64), atol=1e-5)
    assert (pca.variances[:-1] >= pca.variances[1:]).all() and pca.variances[0] > 10 * pca.variances[5]
    codes = pca.encode(x).double()
    assert codes.mean(0).abs().max() < 1e-5  # centred
    covariance = torch.cov(codes.T)  # uncorrelated, with the variances on the diagonal
    assert torch.allclose(covariance.diagonal(), pca.variances.double(), rtol=1e-4, atol=1e-9)
    assert (covariance - covariance.diagonal().diag()).abs().max() < 1e-4 * pca.variances[0]
    # the eigenvalues of the pixels' covariance matrix, largest first; their sum is the total variance
    eigenvalues = torch.linalg.eigvalsh(torch.cov(flat.T)).flip(0)
    assert torch.allclose(pca.variances.double(), eigenvalues, rtol=1e-4, atol=1e-8)
    assert pca.total_variance.item() == pytest.approx(flat.var(0).sum().item(), rel=1e-5)
    ratio = pca.explained_variance_ratio()
    assert ratio.sum().item() == pytest.approx(1.0, abs=1e-5)
    # Fewer components: the same leading directions (up to sign) and variances, a share below 1.
    few = PCA(PCAConfig(image_size=8, components=10)).fit(x)
    assert few.directions.shape == (10, 64)
    assert torch.allclose((few.directions @ pca.directions[:10].T).abs(), torch.eye(10), atol=1e-4)
    assert torch.allclose(few.variances, pca.variances[:10], rtol=1e-5)
    assert 0.9 < few.explained_variance_ratio().sum() < 1  # five strong directions and some noise
    assert torch.allclose(few.explained_variance_ratio(), ratio[:10], rtol=1e-5)


def test_pca_error_falls_with_each_component_and_beats_any_other_projection():
    """Eckart-Young: PCA's first k directions reconstruct better than any other k-dimensional subspace."""
    x = low_rank_images()
    n, pixels = len(x), 64
    pca = PCA(PCAConfig(image_size=8, components=pixels)).fit(x)
    errors = [reconstruction_error(pca, x, dims=k)["mse"] for k in range(1, pixels + 1)]
    assert all(later <= earlier + 1e-9 for earlier, later in zip(errors, errors[1:]))
    assert errors[0] > 10 * errors[4] and errors[-1] < 1e-10
    # The mean squared residual is exactly the variance left in the discarded directions.
    for k in (1, 3, 5, 20):
        left = pca.variances[k:].double().sum().item() * (n - 1) / (n * pixels)
        assert errors[k - 1] == pytest.approx(left, rel=1e-3, abs=1e-9)
    centred = x.flatten(1) - pca.mean
    g = make_generator(1)
    for k in (1, 2, 5, 10):
        candidates = [torch.randn(pixels, k, generator=g) for _ in range(10)]  # random subspaces
        candidates.append(pca.directions[:k].T + 0.05 * torch.randn(pixels, k, generator=g))  # a nudged best one
        for basis in candidates:
            q, _ = torch.linalg.qr(basis)  # orthonormal columns
            residual = (centred - centred @ q @ q.T).pow(2).mean().item()
            assert errors[k - 1] < residual


def test_pca_refuses_impossible_component_counts():
    for components in (0, -1, 65):
        with pytest.raises(ValueError, match="between 1 and 64"):
            PCA(PCAConfig(image_size=8, components=components))
    images = low_rank_images(n=10)
    with pytest.raises(ValueError, match="at most 10"):
        PCA(PCAConfig(image_size=8, components=20)).fit(images)
    with pytest.raises(ValueError, match="at least two"):
        PCA(PCAConfig(image_size=8, components=1)).fit(images[:1])


# --- the autoencoder and its loss -------------------------------------------------------------------

def test_autoencoder_shapes_and_it_refuses_a_categorical_decoder():
    model = tiny_autoencoder(latent=3).eval()
    x = rectangles(5)
    with torch.no_grad():
        z = model.encode(x)
        images = model.decode(z)
        logits = model(x)
    assert z.shape == (5, 3) and images.shape == logits.shape == x.shape
    assert 0 <= images.min() and images.max() <= 1
    assert torch.allclose(images, torch.sigmoid(logits))  # forward gives logits, decode pixels
    assert torch.allclose(encode_all(model, x, batch_size=2), z, atol=1e-6)  # in batches, the same codes
    with pytest.raises(ValueError, match="levels"):
        Autoencoder(VAEConfig(image_size=16, channels=1, latent_dim=2, widths=[8, 16], levels=4))


def test_add_noise_stays_in_range_and_repeats_with_its_seed():
    x = torch.rand(8, 1, 16, 16, generator=make_generator(0))
    noisy = add_noise(x, 0.5, make_generator(1))
    assert noisy.min() >= 0 and noisy.max() <= 1 and (noisy == 0).any() and (noisy == 1).any()  # clipped
    assert torch.equal(noisy, add_noise(x, 0.5, make_generator(1)))
    assert not torch.equal(noisy, add_noise(x, 0.5, make_generator(2)))
    assert torch.equal(add_noise(x, 0.0, make_generator(1)), x)
    grey = torch.full((4, 1, 32, 32), 0.5)
    spread = add_noise(grey, 0.05, make_generator(3)) - grey  # far from the clipping: plain Gaussian noise
    assert spread.std().item() == pytest.approx(0.05, rel=0.05) and abs(spread.mean().item()) < 0.005
    per_image = add_noise(grey, torch.tensor([0.0, 0.05, 0.0, 0.1]).view(4, 1, 1, 1), make_generator(3))
    assert torch.equal(per_image[0], grey[0]) and torch.equal(per_image[2], grey[2])
    assert (per_image[3] - 0.5).std() > 1.5 * (per_image[1] - 0.5).std()


class Copier(nn.Module):
    """A "model" whose reconstruction is its input (as logits), for the loss's sake."""
    config = VAEConfig(image_size=8, channels=1, latent_dim=2, widths=[4])

    def forward(self, x):
        return torch.logit(x, eps=1e-4)


def test_the_denoising_loss_scores_against_the_clean_image():
    # Grey 0.5 everywhere: the binary cross-entropy against 0.5 is smallest (log 2 a pixel) for the
    # prediction 0.5 itself, so copying a noisy input must cost more. Scored against the noisy input
    # it would cost less (a noisy pixel's entropy is below log 2).
    x = torch.full((16, 1, 8, 8), 0.5)
    clean = autoencoder_loss(Copier(), x, make_generator(0))
    assert clean["loss"].item() == pytest.approx(64 * math.log(2), rel=1e-5)
    assert torch.equal(clean["loss"], clean["recon"])
    noisy = autoencoder_loss(Copier(), x, make_generator(0), noise=0.5)
    assert noisy["loss"].item() > clean["loss"].item() + 1.0
    assert torch.equal(noisy["loss"], autoencoder_loss(Copier(), x, make_generator(0), noise=0.5)["loss"])
    assert not torch.equal(noisy["loss"], autoencoder_loss(Copier(), x, make_generator(1), noise=0.5)["loss"])


def test_autoencoder_loss_falls_on_a_tiny_set():
    model = tiny_autoencoder(latent=4)
    events = train(model, rectangles(64), epochs=10, batch_size=16)
    first, last = [e["train"]["loss"] for e in events if "epoch_done" in e][::9]
    assert events[-1]["epoch_done"] == 10 and events[-1]["step"] == 40
    assert last < 0.7 * first


def test_a_denoising_autoencoder_removes_noise_a_plain_one_keeps():
    train_images, test_images = rectangles(256, seed=0), rectangles(64, seed=100)  # unseen rectangles
    sigma = 0.3
    noisy = add_noise(test_images, sigma, make_generator(0))
    noisy_mse = (noisy - test_images).pow(2).flatten(1).mean(1).mean().item()
    denoiser = tiny_autoencoder()
    assert reconstruction_error(denoiser, test_images, noise=sigma)["mse"] > 2 * noisy_mse  # untrained: worse
    train(denoiser, train_images, epochs=40, noise=0.5)
    denoised = reconstruction_error(denoiser, test_images, noise=sigma)
    assert denoised["mse"] < 0.75 * noisy_mse
    # reconstruction_error's noise is add_noise with its seed (0 by default): the very same noisy inputs
    with torch.no_grad():
        by_hand = denoiser.decode(denoiser.encode(noisy)).clamp(1e-6, 1 - 1e-6)
    assert denoised["mse"] == pytest.approx((by_hand - test_images).pow(2).flatten(1).mean(1).mean().item(), rel=1e-5)
    # The same network trained without noise removes less of it.
    plain = tiny_autoencoder()
    train(plain, train_images, epochs=40, noise=0.0)
    assert denoised["mse"] < 0.9 * reconstruction_error(plain, test_images, noise=sigma)["mse"]


# --- the Gaussian fitted to the codes --------------------------------------------------------------

def test_gaussian_codes_have_the_requested_mean_and_covariance():
    mean = torch.tensor([1.0, -2.0, 0.5])
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.4]])
    covariance = a @ a.T  # correlated
    codes = gaussian_codes(mean, covariance, 40000, make_generator(0))
    assert codes.shape == (40000, 3)
    fitted_mean, fitted_covariance = fitted_gaussian(codes)
    assert torch.allclose(fitted_mean, mean, atol=0.03)
    assert torch.allclose(fitted_covariance, covariance, atol=0.03)
    assert torch.equal(codes, gaussian_codes(mean, covariance, 40000, make_generator(0)))
    # Codes on a line (a singular covariance) still factorise, and the samples stay on the line.
    line = gaussian_codes(torch.zeros(2), torch.ones(2, 2), 1000, make_generator(1))
    assert (line[:, 0] - line[:, 1]).abs().max() < 0.01 and line[:, 0].std() > 0.9


def test_fitted_gaussian_is_the_sample_mean_and_unbiased_covariance():
    codes = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mean, covariance = fitted_gaussian(codes)
    assert torch.allclose(mean, torch.tensor([2.0, 2.0]))
    assert torch.allclose(covariance, torch.cov(codes.T))


def test_shipped_names():
    assert shipped_name("pca", 32) == "pca_32d" == PCA_NAME
    assert shipped_name("autoencoder", 2) == "plain_2d"
    assert shipped_name("autoencoder", 32, 0.5) == "denoising_32d"


# --- the trainer, end to end on tiny data -------------------------------------------------------------

def test_pca_trainer_writes_a_checkpoint_with_examples_and_a_map(tmp_path):
    from core.checkpoints import build_model, load_checkpoint
    from core.train import main
    from tests.test_metrics import _tiny_fashion

    _tiny_fashion(tmp_path, n_train=64, n_test=16)  # two classes; 28x28, padded to 32x32
    out = tmp_path / "pca.pt"
    main(["autoencoder", "--kind", "pca", "--data-dir", str(tmp_path), "--threads", "1", "--out", str(out)])
    ckpt = load_checkpoint(out)
    assert ckpt.card["command"].startswith("python -m core.train autoencoder --kind pca")
    assert ckpt.config == {"image_size": 32, "channels": 1, "components": 32}  # --latent's default for PCA
    pca = build_model(ckpt, PCA, PCAConfig)
    assert pca.directions.shape == (32, 1024)
    metrics = ckpt.card["metrics"]
    errors = [metrics[f"valid_mse_{d}d"] for d in SWEEP_DIMS]
    shares = [metrics[f"explained_variance_{d}d"] for d in SWEEP_DIMS]
    assert errors[0] > errors[-1] and all(b <= a + 1e-4 for a, b in zip(errors, errors[1:]))
    assert all(0 < a <= b <= 1 for a, b in zip(shares, shares[1:]))
    assert shares[-1] == pytest.approx(pca.explained_variance_ratio().sum().item(), abs=1e-4)
    extras = ckpt.extras
    assert extras["map_codes"].shape == (16, 2) and extras["map_labels"].shape == (16,)
    assert len(extras["class_names"]) == 10
    examples, labels = extras["examples"], extras["example_labels"]
    assert examples.dtype == torch.uint8 and examples.shape[1:] == (1, 32, 32)
    assert len(examples) == len(labels) == len(extras["example_test_index"]) <= 16  # up to 10 per class
    assert torch.equal(labels, extras["map_labels"][extras["example_test_index"]])
    # The map's codes are the test images' first two coordinates.
    codes = pca.encode(as_float(examples), 2)
    assert torch.allclose(codes, extras["map_codes"][extras["example_test_index"]].float(), atol=0.02)
    mean, covariance = prior(pca, ckpt)
    assert torch.equal(mean, torch.zeros(32)) and torch.allclose(covariance.diagonal(), pca.variances)


def test_autoencoder_trainer_writes_a_loadable_checkpoint_with_codes_and_resumes(tmp_path, capsys):
    from core.checkpoints import build_model, load_checkpoint
    from core.train import main
    from core.vae import load_dataset
    from tests.test_metrics import _tiny_fashion

    _tiny_fashion(tmp_path, n_train=64, n_test=16)
    common = ["autoencoder", "--data-dir", str(tmp_path), "--threads", "1", "--widths", "4,8,8", "--batch-size", "32"]
    out = tmp_path / "plain_2d.pt"
    main([*common, "--latent", "2", "--epochs", "1", "--out", str(out)])
    ckpt = load_checkpoint(out)
    card = ckpt.card
    assert card["command"].startswith("python -m core.train autoencoder") and "--latent 2" in card["command"]
    assert card["steps"] == 2 and [p["epoch"] for p in card["curves"]] == [1]  # 64 images, 32 a step
    assert {"valid_recon", "valid_mse"} <= set(card["metrics"]) and card["noise"] == 0.0
    model = build_model(ckpt, Autoencoder, VAEConfig)
    assert model.config.latent_dim == 2 and model.config.widths == [4, 8, 8]
    extras = ckpt.extras
    assert extras["map_codes"].shape == (16, 2) and extras["map_labels"].shape == (16,)
    assert extras["code_mean"].shape == (2,) and extras["code_covariance"].shape == (2, 2)
    covariance = extras["code_covariance"]
    assert torch.allclose(covariance, covariance.T) and (torch.linalg.eigvalsh(covariance) > 0).all()
    # The extras describe the saved (half-precision) model's codes: the test map, and the Gaussian of the
    # training codes that prior() hands out.
    data = load_dataset(argparse.Namespace(dataset="fashion", data_dir=str(tmp_path)))
    test_codes, train_codes = encode_all(model, data["valid"]), encode_all(model, data["train"])
    scale = train_codes.abs().max().item()
    assert torch.allclose(extras["map_codes"].float(), test_codes, atol=0.02 * scale)
    mean, covariance = prior(model, ckpt)
    assert torch.allclose(mean, train_codes.mean(0), atol=0.02 * scale)
    assert torch.allclose(covariance, torch.cov(train_codes.T), atol=0.05 * scale ** 2)
    assert reconstruction_error(model, data["valid"])["mse"] == pytest.approx(card["metrics"]["valid_mse"], abs=2e-3)

    # A denoising one records how much noise it removes; only a 2-D model ships a map.
    denoising = tmp_path / "denoising_3d.pt"
    main([*common, "--latent", "3", "--noise", "0.5", "--epochs", "1", "--out", str(denoising)])
    ckpt = load_checkpoint(denoising)
    assert ckpt.card["noise"] == 0.5 and "map_codes" not in ckpt.extras and ckpt.extras["code_mean"].shape == (3,)
    assert {"valid_mse_from_noise_0.25", "valid_mse_from_noise_0.5"} <= set(ckpt.card["metrics"])

    # Stopped after its first step, then resumed, it finishes both epochs.
    resumed = tmp_path / "resumed.pt"
    main([*common, "--epochs", "2", "--out", str(resumed), "--minutes", "1e-9"])
    assert load_checkpoint(resumed).card["steps"] == 1
    main([*common, "--epochs", "2", "--out", str(resumed), "--resume"])
    card = load_checkpoint(resumed).card
    assert card["steps"] == 4 and [p["epoch"] for p in card["curves"]] == [1, 2] and len(card["resumed_with"]) == 1

    with pytest.raises(SystemExit):  # a sentence on stderr, not a traceback
        main([*common, "--latent", "-1", "--out", str(tmp_path / "bad.pt")])
    assert "at least 1" in capsys.readouterr().err


# --- the shipped models, on the real test set --------------------------------------------------------

def shipped(name):
    path = shipped_path("autoencoder", name)
    require(path.is_file(), f"{path} is missing: `python -m core.train autoencoder` makes it (commands in "
                            "core/autoencoder.py's docstring)")
    return load_model(name)


@functools.lru_cache(maxsize=1)
def real_test_images(n=500) -> torch.Tensor:
    from core.data.fashion_mnist import to_float

    images, _ = real_fashion_test_split()
    return to_float(images[:n])  # [n, 1, 32, 32], zero-padded as the models were trained


def test_shipped_pca_error_falls_as_dimensions_grow():
    pca, ckpt = shipped(PCA_NAME)
    assert isinstance(pca, PCA) and ckpt.card["command"].startswith("python -m core.train autoencoder --kind pca")
    v = pca.directions.double()
    assert torch.allclose(v @ v.T, torch.eye(len(v), dtype=torch.float64), atol=1e-4)
    images = real_test_images()
    errors = [reconstruction_error(pca, images, dims=d)["mse"] for d in SWEEP_DIMS]
    assert all(later < 0.95 * earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 0.5 * errors[0]
    assert "examples" in ckpt.extras and ckpt.extras["map_codes"].shape[1] == 2


def test_shipped_2d_autoencoder_reconstructs_better_than_2d_pca():
    pca, _ = shipped(PCA_NAME)
    autoencoder, ckpt = shipped("plain_2d")
    assert isinstance(autoencoder, Autoencoder) and autoencoder.config.latent_dim == 2
    images = real_test_images()
    ae_error = reconstruction_error(autoencoder, images)
    pca_error = reconstruction_error(pca, images, dims=2)
    assert ae_error["mse"] < pca_error["mse"] and ae_error["bce_nats"] < pca_error["bce_nats"]
    assert ckpt.extras["code_covariance"].shape == (2, 2) and ckpt.extras["map_codes"].shape[1] == 2


def test_shipped_denoiser_removes_noise_from_real_test_images():
    denoiser, ckpt = shipped("denoising_32d")
    assert ckpt.card["noise"] > 0
    images, sigma = real_test_images(), 0.25
    noisy_mse = (add_noise(images, sigma, make_generator(0)) - images).pow(2).flatten(1).mean(1).mean().item()
    denoised = reconstruction_error(denoiser, images, noise=sigma)["mse"]
    assert denoised < 0.6 * noisy_mse
    # The plain autoencoder of the same size, trained on clean images only, does worse on noisy ones.
    plain, _ = shipped("plain_32d")
    assert denoised < reconstruction_error(plain, images, noise=sigma)["mse"]
