"""bench.likelihood and bench.pixelcnn_speed end to end on tiny untrained models and a few images."""
import json
import math

import pytest
import torch

import bench.common
import bench.likelihood as lik
from bench.report import fill
from core.pixelcnn import PixelCNNConfig, build
from core.runtime import make_generator
from core.vae import VAE, VAEConfig


def tiny_pixelcnns():
    torch.manual_seed(0)
    return {kind: build(PixelCNNConfig(kind=kind, levels=4, image_size=16, channels=8, blocks=1)).eval()
            for kind in ("plain", "gated")}


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
    """Random 4-level images with labels, tiny PixelCNNs and a tiny categorical VAE; results go to tmp_path."""
    images = torch.randint(0, 4, (60, 1, 16, 16), generator=make_generator(0))
    labels = torch.arange(60) % 10
    torch.manual_seed(1)
    vae = VAE(VAEConfig(image_size=16, channels=1, latent_dim=3, widths=[4, 8], levels=4)).eval()
    monkeypatch.setattr(lik, "load_test", lambda limit=None: (images[:40], labels[:40]))
    monkeypatch.setattr(lik, "load_train", lambda limit=None: images[40:])
    monkeypatch.setattr(lik, "shipped_pixelcnns", tiny_pixelcnns)
    monkeypatch.setattr(lik, "shipped_vae", lambda: vae)
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_the_likelihood_bench_writes_every_figure_its_rows_show(tiny_world):
    figures = lik.main(["--quick", "--n", "20", "--k", "8", "--completions", "6", "--vae-images", "10"])
    saved = json.loads((tiny_world / "likelihood.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    bpd = figures["bits_per_dim"]
    for key in ("pixelcnn_plain", "pixelcnn_gated", "vae_elbo", "vae_iwae"):
        assert math.isfinite(bpd[key]) and bpd[key] > 0, key
    # bits/dim of an untrained network on uniform random levels: about log2(4) = 2 bits, the uniform guess
    assert 1.5 < bpd["pixelcnn_plain"] < 3
    assert bpd["vae_iwae"] <= bpd["vae_elbo"] and bpd["vae_iwae_above_elbo_in_nats"]  # IWAE's bound on log p is higher
    assert bpd["vae_iwae_k"] == 8 and bpd["vae_images"] == 10 and "flow" in bpd
    completions = figures["completions"]
    assert completions["images"] == 6 and completions["plain_kept_upper_half"] and completions["gated_kept_upper_half"]
    assert all(0 <= completions[k] <= 1 for k in ("original_share", "plain_share", "gated_share"))
    samples = figures["samples"]
    assert samples["n"] == 20
    for net in ("classifier", "efficientnet_lite0"):
        assert {"plain", "gated", "real"} <= set(samples[net])
        assert all(samples[net][key]["fid"] >= 0 for key in ("plain", "gated", "real"))
    assert isinstance(samples["ranking_agrees"], bool)
    assert samples["ranking_agrees"] == (samples["better_by_fid"]["classifier"]
                                         == samples["better_by_fid"]["efficientnet_lite0"])
    for row in lik.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)


def test_without_shipped_models_the_bench_says_what_is_missing(tiny_world, monkeypatch):
    monkeypatch.setattr(lik, "shipped_pixelcnns", lambda: {})
    monkeypatch.setattr(lik, "shipped_vae", lambda: None)
    figures = lik.main(["--quick", "--completions", "4"])
    assert figures["missing"] == ["plain", "gated", "vae"] and "samples" not in figures
    assert figures["completions"]["images"] == 4


def test_lite0_features_are_pooled_per_image():
    images = torch.randint(0, 4, (3, 1, 16, 16), generator=make_generator(2))
    feats = lik.lite0_features(images, batch=2)
    assert feats.shape == (3, 1280) and torch.isfinite(feats).all()
    assert torch.allclose(lik.lite0_features(images[1:2]), feats[1:2], atol=1e-4)  # batching changes nothing
    assert not torch.allclose(feats[0], feats[1])


def test_the_speed_bench_times_every_shipped_model(monkeypatch, tmp_path):
    import bench.pixelcnn_speed as speed
    from core import pixelcnn, registry

    models = tiny_pixelcnns()
    monkeypatch.setattr(pixelcnn, "load_model", lambda name: models[name.split("_")[0]])
    monkeypatch.setattr(pixelcnn, "load_levels", lambda *a, **k: torch.zeros(1, 1, 16, 16, dtype=torch.long))
    present = tmp_path / "model.pt"
    present.write_bytes(b"")
    monkeypatch.setattr(registry, "shipped_path", lambda technique, name: present)  # every model "ships"
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    threads = torch.get_num_threads()
    try:
        figures = speed.main(["--quick"])
    finally:
        torch.set_num_threads(threads)
    assert figures["torch_threads"] == 1 and figures["missing"] == []
    for key in ("plain", "gated"):
        assert {"sample16_s", "first_row_s", "completion_s", "meets_targets"} <= set(figures[key])
        assert 0 < figures[key]["first_row_s"] <= figures[key]["sample16_s"]
    for row in speed.README_ROWS:
        fill(row["measured"], figures)
