"""bench.flow_2d on few points and few steps: the figures are there and the comparisons say the right thing."""
import json
import math

import pytest
import torch

import bench.common
import bench.flow_2d as flow_bench
from bench.report import fill
from core.runtime import make_generator


def gaussian_points(n, seed, scale=(1.0, 0.3)):
    mixing = torch.tensor([[scale[0], 0.0], [0.5, scale[1]]])
    return torch.randn(n, 2, generator=make_generator(seed)) @ mixing.T + torch.tensor([1.0, -2.0])


def test_the_fitted_gaussian_scores_gaussian_data_like_the_true_gaussian():
    mixing = torch.tensor([[1.0, 0.0], [0.5, 0.3]])
    truth = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0]).double(),
                                                   covariance_matrix=(mixing @ mixing.T).double())
    test = gaussian_points(4000, seed=1)
    fitted = flow_bench.gaussian_nll(gaussian_points(4000, seed=0), test)
    assert fitted == pytest.approx(-truth.log_prob(test.double()).mean().item(), abs=0.02)
    # ... and it is a full covariance: a diagonal fit would miss the correlation by far more
    diagonal = torch.distributions.Normal(test.mean(0).double(), test.std(0).double())
    assert fitted < -diagonal.log_prob(test.double()).sum(1).mean().item() - 0.1


def test_the_bandwidth_is_the_one_best_on_the_validation_points():
    fit, validation = gaussian_points(400, seed=0), gaussian_points(400, seed=1)
    best, scores = flow_bench.choose_bandwidth(fit, validation)
    assert scores[best] == min(scores.values()) and len(scores) == len(flow_bench.BANDWIDTH_FACTORS)
    assert flow_bench.BANDWIDTH_FACTORS[0] < best < flow_bench.BANDWIDTH_FACTORS[-1]  # a real optimum, not an edge
    # Validating on the fit points themselves rewards the narrowest kernel: the choice follows the validation set.
    assert flow_bench.choose_bandwidth(fit, fit)[0] == flow_bench.BANDWIDTH_FACTORS[0]
    # A clustered set wants a narrower kernel than one broad Gaussian does.
    grid = flow_bench.toy_points("grid", 1000, 0)
    assert flow_bench.choose_bandwidth(grid, flow_bench.toy_points("grid", 400, 1))[0] < best


def test_scotts_rule_is_the_factor_scipy_uses():
    fit, test = gaussian_points(500, seed=0), gaussian_points(200, seed=1)
    assert flow_bench.kde_nll(fit, test, "scott") == pytest.approx(
        flow_bench.kde_nll(fit, test, flow_bench.scott_factor(500)), rel=1e-9)


def test_the_frame_is_timed_at_the_live_panels_default_steps():
    import inspect

    from tabs import live2d

    assert flow_bench.STEPS_PER_FRAME == inspect.signature(live2d.settings_row).parameters["per_frame"].default


def test_a_missing_figure_never_wins():
    assert flow_bench.lower(0.5, 0.7) and not flow_bench.lower(0.7, 0.5)
    assert not flow_bench.lower(None, 0.7) and flow_bench.finite(math.nan) is None


def test_the_bench_writes_every_figure_its_rows_show(monkeypatch, tmp_path):
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(flow_bench, "QUICK_POINTS", {"fit": 200, "validation": 100, "test": 150})
    monkeypatch.setattr(flow_bench, "BANDWIDTH_FACTORS", flow_bench.BANDWIDTH_FACTORS[::8])
    figures = flow_bench.main(["--quick", "--steps", "40", "--distributions", "moons", "ring"])
    saved = json.loads((tmp_path / "flow_2d.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    assert figures["steps"] == 40 and figures["threads"] == 1
    assert list(figures["distributions"]) == ["moons", "ring"]
    for result in figures["distributions"].values():
        assert result["flow_steps"] == 40 and result["flow_cooldown_steps"] == 10
        assert result["kde_bandwidth_factor"] in [round(float(f), 4) for f in flow_bench.BANDWIDTH_FACTORS]
        # The verdicts are the comparisons of the saved figures.
        assert result["flow_beats_gaussian"] == (result["flow_nll"] < result["gaussian_nll"])
        assert result["flow_beats_kde"] == (result["flow_nll"] < result["kde_nll"])
        assert result["flow_beats_both"] == (result["flow_beats_gaussian"] and result["flow_beats_kde"])
    # A thin ring: any sensible density beats one broad Gaussian, and the validated KDE beats Scott's.
    ring = figures["distributions"]["ring"]
    assert ring["kde_nll"] < ring["gaussian_nll"] and ring["kde_nll"] <= ring["kde_scott_nll"] + 1e-9
    beaten = [name for name, r in figures["distributions"].items() if r["flow_beats_both"]]
    assert figures["beats_both_count"] == len(beaten) and figures["distributions_measured"] == 2
    assert figures["speed"]["step_median_ms"] > 0 and figures["speed"]["couplings"] == 8
    frame = figures["frame"]
    assert frame["updates_per_s"] == pytest.approx(1000 / frame["median_ms"], rel=0.01)
    assert frame["meets_target"] == (frame["updates_per_s"] >= flow_bench.TARGET_UPDATES_PER_S)
    for row in flow_bench.README_ROWS:
        fill(row["figure"] + row["measured"] + row["reference"], figures)
