"""The live 2-D normalizing flow (core.flow.Flow2D): how well it fits, how fast it trains.

    python -m bench.flow_2d [--quick] [--steps 3000] [--threads 1]

Fit: for every toy set of core.data.toy2d (two moons is the book's), a Flow2D with its default
couplings and learning rate trains a fixed number of steps (fresh batches each step, as in the tab),
the last quarter of them at a tenth of the learning rate (at a constant rate the NLL wanders by
±0.05 nats from one thousand steps to the next; the JSON keeps the figure before the cool-down too).
Its negative log-likelihood in nats per point is then measured on fresh test points drawn with
another seed, next to two baselines fitted on a fixed set of points:
  * a Gaussian by maximum likelihood (mean and full covariance);
  * a kernel density estimate (scipy.stats.gaussian_kde) whose bandwidth factor is the one with the
    lowest NLL on a separate validation set, and, for reference, Scott's rule.
The flow should beat both on two moons; the JSON says whether it does, never asserts it.

Speed, on one torch thread: one training step (Flow2D.train(1)), and one whole live frame of the tab
(tabs.flow.live_step: the frame's training steps and the redrawn picture) against the issue's
target of at least 10 updates a second.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from bench.common import save_results, time_calls

STEPS = 3000
COOLDOWN = 0.25  # the last quarter of the steps at a tenth of the learning rate, as a user would turn it down
SEEDS = {"flow": 0, "fit": 1, "validation": 2, "test": 3}
POINTS = {"fit": 10000, "validation": 2000, "test": 5000}
QUICK_POINTS = {"fit": 1000, "validation": 300, "test": 500}
BANDWIDTH_FACTORS = np.geomspace(0.01, 1.0, 41)  # multiples of the data's covariance, as gaussian_kde takes them
TARGET_UPDATES_PER_S = 10
STEPS_PER_FRAME = 10  # the live panels' default (tabs.live2d.settings_row)

README_ROWS = [
    {"figure": "Flow2D on two moons: held-out NLL, nats per point, after {steps} steps, the last quarter at a "
               "tenth of the learning rate (lower is better)",
     "measured": "{distributions.moons.flow_nll:.3f}",
     "reference": "Gaussian {distributions.moons.gaussian_nll:.3f}; KDE {distributions.moons.kde_nll:.3f} "
                  "(bandwidth chosen on validation points)"},
    {"figure": "Toy sets where the flow's held-out NLL beats both the Gaussian and the KDE",
     "measured": "{beats_both_count} of {distributions_measured} (not: {not_beating_both})",
     "reference": "two moons must be one"},
    {"figure": "One live training step of Flow2D (Flow2D.train(1), one CPU thread)",
     "measured": "{speed.step_median_ms:.2f} ms ({speed.steps_per_s:.0f} steps/s)", "reference": "—"},
    {"figure": "One live frame of the flow tab, one CPU thread ({frame.what})",
     "measured": "{frame.median_ms:.0f} ms: {frame.updates_per_s:.1f} pictures/s, showing "
                 "{frame.steps_per_frame} training steps each",
     "reference": f"≥ {TARGET_UPDATES_PER_S} updates/s"},
]


def toy_points(distribution: str, n: int, seed: int) -> torch.Tensor:
    from core.data.toy2d import sample
    from core.runtime import make_generator

    return sample(distribution, n, make_generator(seed))


def gaussian_nll(fit: torch.Tensor, test: torch.Tensor) -> float:
    """NLL (nats per point) of `test` under the maximum-likelihood Gaussian of `fit` (covariance divided by n)."""
    fit, test = fit.double(), test.double()
    mean = fit.mean(0)
    covariance = torch.cov(fit.T, correction=0)
    gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
    return -gaussian.log_prob(test).mean().item()


def kde_nll(fit: torch.Tensor, test: torch.Tensor, bandwidth) -> float:
    """NLL (nats per point) of `test` under a Gaussian KDE of `fit`; `bandwidth` is a factor or "scott"."""
    from scipy.stats import gaussian_kde

    return float(-gaussian_kde(fit.double().numpy().T, bw_method=bandwidth).logpdf(test.double().numpy().T).mean())


def choose_bandwidth(fit: torch.Tensor, validation: torch.Tensor, factors=None) -> tuple[float, dict]:
    """The bandwidth factor (default: BANDWIDTH_FACTORS) with the lowest validation NLL, and every factor's."""
    scores = {float(f): kde_nll(fit, validation, float(f)) for f in (BANDWIDTH_FACTORS if factors is None else factors)}
    return min(scores, key=scores.get), scores


def scott_factor(n: int, dims: int = 2) -> float:
    return n ** (-1.0 / (dims + 4))


def finite(value: float) -> float | None:
    """A figure for the JSON: None where a diverged flow gives NaN or infinity."""
    return round(value, 4) if math.isfinite(value) else None


def lower(nll: float | None, other: float | None) -> bool:
    """Is `nll` the better (lower) figure? A missing one (a diverged model) never is."""
    return nll is not None and (other is None or nll < other)


def measure_fit(distribution: str, steps: int, points: dict[str, int]) -> dict:
    """Train a default Flow2D, fit both baselines, and compare all three on the same test points."""
    from core.flow import Flow2D

    fit, validation, test = (toy_points(distribution, points[key], SEEDS[key]) for key in ("fit", "validation", "test"))
    start = time.perf_counter()
    flow = Flow2D(distribution, seed=SEEDS["flow"])
    cooldown = int(steps * COOLDOWN)
    flow.train(steps - cooldown)
    with torch.no_grad():
        nll_before_cooldown = -flow.model.log_prob(test).mean().item()
    flow.set_learning_rate(flow.lr / 10)
    flow.train(cooldown)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        flow_nll = -flow.model.log_prob(test).mean().item()
    bandwidth, _ = choose_bandwidth(fit, validation)
    result = {"flow_nll": finite(flow_nll), "flow_nll_before_cooldown": finite(nll_before_cooldown),
              "gaussian_nll": finite(gaussian_nll(fit, test)),
              "kde_nll": finite(kde_nll(fit, test, bandwidth)), "kde_bandwidth_factor": round(bandwidth, 4),
              "kde_scott_nll": finite(kde_nll(fit, test, "scott")),
              "kde_scott_factor": round(scott_factor(len(fit)), 4),
              "flow_couplings": flow.couplings, "flow_steps": flow.step, "flow_cooldown_steps": cooldown,
              "flow_diverged": flow.diverged,
              "flow_train_s": round(train_s, 1)}
    beats = {key: lower(result["flow_nll"], result[f"{key}_nll"]) for key in ("gaussian", "kde")}
    result.update(flow_beats_gaussian=beats["gaussian"], flow_beats_kde=beats["kde"],
                  flow_beats_both=beats["gaussian"] and beats["kde"])
    return result


def step_speed(repeats: int) -> dict:
    """One Adam step of a fresh default Flow2D on two moons, as the tab's Step button runs it."""
    from core.flow import Flow2D

    flow = Flow2D("moons", seed=SEEDS["flow"])
    timing = time_calls(lambda: flow.train(1), repeats=repeats, warmup=10)
    return {"step_median_ms": round(1000 * timing["median_s"], 3), "step_max_ms": round(1000 * timing["max_s"], 3),
            "steps_per_s": round(1 / timing["median_s"], 1), "runs": timing["runs"],
            "couplings": flow.couplings, "batch_size": flow.batch_size}


def core_frame(flow, steps_per_frame: int) -> None:
    """What a frame needs from core without the drawing: the steps, the density map, both point sets, the grid."""
    flow.train(steps_per_frame)
    flow.density_map(), flow.latent_points(), flow.sample_points(), flow.grid_lines()


def frame_speed(repeats: int) -> dict:
    """One whole live frame of the tab at its default settings (training steps + picture); without
    the tab, the core share of one."""
    steps_per_frame = STEPS_PER_FRAME
    try:
        from tabs import flow as tab

        settings = (tab.LR_LOG_DEFAULT, tab.DEFAULT_COUPLINGS, tab.DEFAULT_COUPLINGS)  # learning rate, couplings, layer
        live = tab.live_reset("moons", 0, *settings)[0]
        frame = lambda: tab.live_step(live, steps_per_frame, *settings)
        frame()
        what = f"tabs.flow.live_step: {steps_per_frame} training steps, the held-out NLL and the redrawn picture"
    except (ImportError, AttributeError, TypeError) as exc:
        from core.flow import Flow2D

        flow = Flow2D("moons", seed=SEEDS["flow"])
        frame = lambda: core_frame(flow, steps_per_frame)
        what = (f"core share only, {steps_per_frame} steps + density map, points and grid, no drawing: "
                f"tabs.flow.live_step did not run ({exc.__class__.__name__}: {exc})")
    timing = time_calls(frame, repeats=repeats, warmup=2)
    return {"what": what, "steps_per_frame": steps_per_frame, "median_ms": round(1000 * timing["median_s"], 1),
            "max_ms": round(1000 * timing["max_s"], 1), "updates_per_s": round(1 / timing["median_s"], 2),
            "target_updates_per_s": TARGET_UPDATES_PER_S,
            "meets_target": 1 / timing["median_s"] >= TARGET_UPDATES_PER_S}


def main(argv=None) -> dict:
    from core.data.toy2d import DISTRIBUTIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps per toy set (default {STEPS})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the issue's target is for one)")
    parser.add_argument("--distributions", nargs="*", default=None, help="default: all of core.data.toy2d")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = args.steps or (200 if args.quick else STEPS)
    points = QUICK_POINTS if args.quick else POINTS
    names = args.distributions or list(DISTRIBUTIONS)

    figures = {"steps": steps, "threads": torch.get_num_threads(), "points": points, "seeds": SEEDS,
               "nll": "nats per point on the test points; the flow trains on fresh batches (steps x batch points), "
                      f"the last {COOLDOWN:.0%} of the steps at a tenth of Flow2D's default learning rate; "
                      "the Gaussian and the KDE are fitted on the fit points, the KDE bandwidth chosen on the "
                      f"validation points among {len(BANDWIDTH_FACTORS)} factors from "
                      f"{BANDWIDTH_FACTORS[0]:g} to {BANDWIDTH_FACTORS[-1]:g}",
               "distributions": {name: measure_fit(name, steps, points) for name in names}}
    beaten = [name for name, result in figures["distributions"].items() if result["flow_beats_both"]]
    figures.update(beats_both_count=len(beaten), distributions_measured=len(names),
                   not_beating_both=", ".join(name for name in names if name not in beaten) or "none")
    figures["speed"] = step_speed(50 if args.quick else 300)
    figures["frame"] = frame_speed(5 if args.quick else 30)
    save_results("flow_2d", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
