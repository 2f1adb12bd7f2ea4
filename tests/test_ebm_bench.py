"""bench.ebm_quality end to end on tiny Fashion-MNIST files, a hand-made energy and a tiny untrained DCGAN."""
import json

import pytest
import torch
from torch import nn

import bench.common
import bench.ebm_quality as ebm_bench
from bench.report import MISSING, fill, table
from core.ebm import EBMConfig, last, sample
from core.gan import GANConfig, Generator
from core.runtime import make_generator, seeded_init


class Roughness(nn.Module):
    """E(x) = mean |difference of neighbouring pixels|: smooth images have low energy, uniform noise
    (mean |u − v| = 2/3) high; the tiny clothes below (dim speckle, one bright half) lie well under it."""

    def __init__(self, steps: int = 3):
        super().__init__()
        self.config = EBMConfig(steps=steps)
        self.scale = nn.Parameter(torch.ones(()))  # sample() and energies() find the device through it

    def forward(self, x):
        return self.scale * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
                             + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3)))


def tiny_dcgan():
    G = Generator(GANConfig(image_size=32, channels=1, z_dim=8, width=4))
    seeded_init(G, make_generator(3))
    return G.eval()


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
    """Tiny Fashion-MNIST IDX files found through GENLAB_DATA; results go to tmp_path."""
    from core.metrics import quality
    from tests.test_metrics import _tiny_fashion

    data = tmp_path / "data"
    data.mkdir()
    _tiny_fashion(data, n_train=64, n_test=32)
    monkeypatch.setenv("GENLAB_DATA", str(data))
    monkeypatch.setattr(ebm_bench, "shipped_ebm", lambda: Roughness())
    monkeypatch.setattr(ebm_bench, "shipped_dcgan", tiny_dcgan)
    monkeypatch.setattr(ebm_bench, "ebm_card", lambda: {"name": "tiny", "steps": 0})
    monkeypatch.setattr(ebm_bench, "shipped_chains", lambda: torch.rand(20, 1, 32, 32, generator=make_generator(4)) * 2 - 1)
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    quality.fashion_real_features.cache_clear()
    yield tmp_path
    quality.fashion_real_features.cache_clear()  # nothing else may see the tiny images' features


def test_the_bench_writes_every_figure_its_rows_show(tiny_world):
    figures = ebm_bench.main(["--quick", "--n", "24", "--steps", "3,2", "--ood", "20", "--threads", "1"])
    saved = json.loads((tiny_world / "ebm_quality.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    assert figures["n"] == 24 and figures["threads"] == 1 and figures["missing"] == []
    assert figures["sampler"]["steps"] == [2, 3] and figures["sampler"]["step_size"] == 10.0
    sets = figures["sets"]
    assert sets["ebm_short"]["steps"] == 2 and sets["ebm_long"]["steps"] == 3
    assert 0 < sets["ebm_short"]["draw_s"] <= sets["ebm_long"]["draw_s"] and sets["dcgan"]["draw_s"] > 0
    # Langevin walks downhill: the longer chains end lower than they were, below uniform noise's 4/3.
    assert sets["ebm_long"]["mean_energy"] < sets["ebm_short"]["mean_energy"] < 4 / 3

    for net in ebm_bench.FEATURE_NETS:
        scores = figures[net]
        assert set(scores) == {"ebm_short", "ebm_long", "dcgan", "real"}
        for entry in scores.values():
            assert entry["fid"] >= 0 and 0 <= entry["precision"] <= 1 and 0 <= entry["recall"] <= 1
        # Two real sets of the same tiny clothes are far closer than noise-like samples or an untrained GAN.
        assert scores["real"]["fid"] < min(scores[key]["fid"] for key in ("ebm_short", "ebm_long", "dcgan")), net
    ranking = figures["ranking"]
    for key in ("ebm_short", "ebm_long"):
        pair = ranking["ebm_vs_dcgan"][key]
        for net in ebm_bench.FEATURE_NETS:
            assert pair[net] == ("ebm" if figures[net][key]["fid"] < figures[net]["dcgan"]["fid"] else "dcgan")
        assert pair["agrees"] == (pair["classifier"] == pair["efficientnet_lite0"])
        assert ("not a result" in ranking["verdict"]) == (not ranking["ebm_vs_dcgan_agrees"])
    order = ranking["order_by_fid"]
    assert ranking["orders_agree"] == (order["classifier"] == order["efficientnet_lite0"])

    confidence = figures["confidence"]
    assert set(confidence) == {"ebm_short", "ebm_long", "dcgan", "real_test"}
    for entry in confidence.values():
        assert 0.1 <= entry["mean_top_probability"] <= 1 and sum(entry["class_shares"]) == pytest.approx(1, abs=1e-3)

    chains = figures["training_chains"]
    assert chains["n"] == 20 and set(chains["confidence"]) == {"chains", "dcgan", "real_test"}
    for net in ebm_bench.FEATURE_NETS:
        assert set(chains[net]) == {"chains", "dcgan", "real"}
        assert chains[net]["real"]["fid"] < chains[net]["chains"]["fid"], net  # uniform noise is no garment

    ood = figures["ood"]
    assert ood["images"] == {"test": 20, "noise": 20, "faces": 20, "samples": 24}
    assert all(0 <= value <= 1 for value in ood["auroc"].values())
    # The energy is the outlier score: rough noise scores above the clothes, so their AUROC is near 1 (not 0).
    assert ood["auroc"]["noise"] > 0.95 and ood["mean_energy"]["test"] < ood["mean_energy"]["noise"]

    speed = figures["speed"]
    assert speed["images"] == 16 and speed["steps"] == 60 and speed["threads"] == 1 and speed["median_s"] > 0
    assert speed["meets_target"] == (speed["median_s"] <= speed["target_s"] == ebm_bench.SPEED_TARGET_S)
    assert torch.get_num_threads() == 1  # the speed figure's one thread is given back

    for row in ebm_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    rows = table(tiny_world, ["ebm_quality"])
    assert MISSING not in rows and rows.count("`bench/ebm_quality.py`") == len(ebm_bench.README_ROWS)
    assert "(quick)" in rows


def test_the_shorter_chains_are_the_longer_ones_seen_earlier():
    model = Roughness()
    chains, seconds = ebm_bench.draw_chains(model, 5, [2, 4], seed=7)
    assert chains[2].shape == chains[4].shape == (5, 1, 32, 32) and seconds[2] <= seconds[4]
    assert torch.equal(chains[2], last(sample(model, 5, make_generator(7), steps=2))[0])
    assert torch.equal(chains[4], last(sample(model, 5, make_generator(7), steps=4))[0])
    assert not torch.equal(chains[2], chains[4])


def test_chain_keys_and_bad_step_lists():
    assert [ebm_bench.set_key(k, [60, 200, 1000]) for k in (60, 200, 1000)] == ["ebm_short", "ebm_200", "ebm_long"]
    assert ebm_bench.set_key(60, [60]) == "ebm_long"
    assert ebm_bench.parse_steps("1000, 60,60") == [60, 1000]
    for bad in ("", "0,60", "sixty"):
        with pytest.raises(SystemExit):
            ebm_bench.parse_steps(bad)
