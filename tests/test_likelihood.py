"""bench.likelihood and bench.pixelcnn_speed end to end on tiny untrained models and a few images."""
import json
import math

import pytest
import torch

import bench.common
import bench.likelihood as lik
from bench.report import fill
from core.flow import ImageFlow, ImageFlowConfig, dequantize
from core.pixelcnn import PixelCNNConfig, build
from core.runtime import make_generator
from core.vae import VAE, VAEConfig


def tiny_pixelcnns():
    torch.manual_seed(0)
    return {kind: build(PixelCNNConfig(kind=kind, levels=4, image_size=16, channels=8, blocks=1)).eval()
            for kind in ("plain", "gated")}


def tiny_flow(images):
    flow = ImageFlow(ImageFlowConfig(image_size=16, levels=4, hidden=8, steps_per_scale=1), seed=0)
    flow.initialize(dequantize(images, 4, make_generator(5)))
    return flow.eval().requires_grad_(False)


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
    """Random 4-level images with labels, tiny PixelCNNs, a tiny categorical VAE and a tiny untrained flow;
    results go to tmp_path."""
    images = torch.randint(0, 4, (60, 1, 16, 16), generator=make_generator(0))
    flow = tiny_flow(images)
    labels = torch.arange(60) % 10
    torch.manual_seed(1)
    vae = VAE(VAEConfig(image_size=16, channels=1, latent_dim=3, widths=[4, 8], levels=4)).eval()
    monkeypatch.setattr(lik, "load_test", lambda limit=None: (images[:40], labels[:40]))
    monkeypatch.setattr(lik, "load_train", lambda limit=None: images[40:])
    monkeypatch.setattr(lik, "shipped_pixelcnns", tiny_pixelcnns)
    monkeypatch.setattr(lik, "shipped_vae", lambda: vae)
    monkeypatch.setattr(lik, "shipped_flow", lambda: flow)
    monkeypatch.setattr(lik, "flow_card", lambda: {"name": "tiny", "steps": 0})
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return tmp_path


def check_flow_figures(figures, n):
    """The flow's part of the JSON: its bound, both temperatures on both networks, speed, invertibility."""
    bound = figures["bits_per_dim"]["flow"]
    # An untrained flow on uniformly random levels: about the uniform guess, log2(4) = 2 bits, and a bound
    assert 1.5 < bound < 4 and "upper bound" in figures["bits_per_dim"]["flow_bound"]
    flow = figures["flow"]
    samples = flow["samples"]
    assert samples["n"] == n and samples["temperatures"] == [0.7, 1.0]
    for net in ("classifier", "efficientnet_lite0"):
        assert set(samples[net]) == {"tau_0_7", "tau_1_0", "real"}
        for entry in samples[net].values():
            assert entry["fid"] >= 0 and 0 <= entry["precision"] <= 1 and 0 <= entry["recall"] <= 1
        assert samples["better_tau_by_fid"][net] == min(("tau_0_7", "tau_1_0"), key=lambda k: samples[net][k]["fid"])
    assert samples["tau_ranking_agrees"] == (samples["better_tau_by_fid"]["classifier"]
                                             == samples["better_tau_by_fid"]["efficientnet_lite0"])
    assert flow["sample64"]["median_s"] > 0
    assert flow["sample64"]["meets_target"] == (flow["sample64"]["median_s"] <= lik.SAMPLE64_TARGET_S)
    inverse = flow["invertibility"]
    assert inverse["max_abs_error"] < 1e-3 and inverse["meets_target"] == (inverse["max_abs_error"] <= 1e-4)


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
    assert bpd["vae_iwae_k"] == 8 and bpd["vae_images"] == 10
    check_flow_figures(figures, 20)
    completions = figures["completions"]
    assert completions["images"] == 6 and completions["plain_kept_upper_half"] and completions["gated_kept_upper_half"]
    assert all(0 <= completions[k] <= 1 for k in ("original_share", "plain_share", "gated_share"))
    samples = figures["samples"]
    assert samples["n"] == 20
    for net in ("classifier", "efficientnet_lite0"):
        assert {"plain", "gated", "real"} <= set(samples[net])
        assert all(samples[net][key]["fid"] >= 0 for key in ("plain", "gated", "real"))
        assert all(0 <= samples[net][key]["recall"] <= 1 for key in ("plain", "gated", "real"))
    assert isinstance(samples["ranking_agrees"], bool)
    assert samples["ranking_agrees"] == (samples["better_by_fid"]["classifier"]
                                         == samples["better_by_fid"]["efficientnet_lite0"])
    for row in lik.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)


def test_without_shipped_models_the_bench_says_what_is_missing(tiny_world, monkeypatch):
    monkeypatch.setattr(lik, "shipped_pixelcnns", lambda: {})
    monkeypatch.setattr(lik, "shipped_vae", lambda: None)
    monkeypatch.setattr(lik, "shipped_flow", lambda: None)
    figures = lik.main(["--quick", "--completions", "4"])
    assert figures["missing"] == ["plain", "gated", "flow", "vae"] and "samples" not in figures and "flow" not in figures
    assert figures["completions"]["images"] == 4


def test_flow_only_merges_into_the_saved_results_and_keeps_the_rest(tiny_world):
    saved = {"name": "likelihood", "date": "2026-01-02T03:04:05", "quick": False, "machine": {},
             "figures": {"bits_per_dim": {"pixelcnn_gated": 0.41, "vae_iwae": 0.45, "flow": "not measured"}, "missing": ["flow"],
                         "samples": {"n": 5000, "classifier": {"gated": {"fid": 39.0}}}, "wall_s": {"sampling_s": 1135.2}}}
    (tiny_world / "likelihood.json").write_text(json.dumps(saved))
    figures = lik.main(["--flow-only", "--n", "20"])
    assert json.loads((tiny_world / "likelihood.json").read_text())["figures"] == json.loads(json.dumps(figures))
    assert figures["bits_per_dim"]["pixelcnn_gated"] == 0.41 and figures["samples"]["classifier"]["gated"]["fid"] == 39.0
    assert figures["missing"] == [] and figures["merged"]["rest_measured"] == "2026-01-02T03:04:05"
    assert "flow_sampling_s" in figures["wall_s"] and figures["wall_s"]["sampling_s"] == 1135.2
    assert "next full run" in figures["precision_recall"]  # the old PixelCNN entries have no precision/recall
    check_flow_figures(figures, 20)
    for row in lik.README_ROWS:  # the flow's rows are filled, their references from the figures kept
        if "flow" in row["measured"]:
            fill(row["figure"] + row["measured"] + row["reference"], figures)


def test_flow_only_needs_results_to_merge_into(tiny_world):
    with pytest.raises(SystemExit, match="does not exist"):
        lik.main(["--flow-only", "--n", "20"])


def test_the_round_trip_error_sees_a_broken_inverse(monkeypatch):
    images = torch.randint(0, 4, (6, 1, 16, 16), generator=make_generator(3))
    flow = tiny_flow(images)
    assert lik.round_trip_error(flow, images, batch=4) < 1e-5
    monkeypatch.setattr(flow, "inverse", lambda z: torch.zeros(len(z), 1, 16, 16))
    assert lik.round_trip_error(flow, images, batch=4) > 0.5


def test_flow_samples_are_levels_and_the_same_latents_at_each_temperature():
    flow = tiny_flow(torch.randint(0, 4, (8, 1, 16, 16), generator=make_generator(4)))
    cold, warm = (lik.draw_flow_samples(flow, 7, seed=9, temperature=t) for t in (0.5, 1.0))
    assert cold.dtype == torch.long and cold.shape == (7, 1, 16, 16) and 0 <= cold.min() and cold.max() <= 3
    assert torch.equal(warm, lik.draw_flow_samples(flow, 7, seed=9, temperature=1.0))
    assert not torch.equal(cold, warm)
    # A cooler temperature pulls every latent towards 0: the images vary less from one another.
    assert cold.float().std(0).mean() < warm.float().std(0).mean()


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
