"""bench.world_models end to end on tiny World Models made here by the trainer itself (two rollouts of 60 steps,
V after one epoch, M after a few steps, two controllers after a generation or two), in the real CarRacing."""
import json
import math

import numpy as np
import pytest
import torch

import bench.common
from bench.report import MISSING, fill, table
from tests.conftest import require_module

EPISODES, STEPS, SPEED_STEPS = 2, 25, 10
ROLLOUT_STEPS = 60  # M keeps each rollout's frame 50 (core.world_models.DREAM_START) to dream from
NEEDS = "World Models need `pip install \"gymnasium[box2d]\" cma` (CarRacing and CMA-ES)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Rollouts and the four checkpoints, each made by `python -m core.train world_models` (called in-process)."""
    for module in ("gymnasium", "Box2D", "cma"):
        require_module(module, NEEDS)
    from core.train import main as train

    folder = tmp_path_factory.mktemp("world_models")
    data, vae, rnn = str(folder / "rollouts"), str(folder / "vae.pt"), str(folder / "rnn.pt")
    common = ["--threads", "1"]
    train(["world_models", "--stage", "rollouts", "--episodes", "2", "--episode-steps", str(ROLLOUT_STEPS),
           "--data", data, *common])
    train(["world_models", "--stage", "vae", "--data", data, "--epochs", "1", "--batch-size", "16", "--out", vae,
           *common])
    train(["world_models", "--stage", "rnn", "--data", data, "--steps", "5", "--sequence", "16", "--batch-size", "4",
           "--hidden", "32", "--mixtures", "3", "--vae", vae, "--out", rnn, *common])
    paths = {"vae": vae, "rnn": rnn, "data": data}
    for where, extra in (("dream", ["--generations", "2"]), ("real", ["--generations", "1", "--workers", "1"])):
        paths[f"controller_{where}"] = out = str(folder / f"controller_{where}.pt")
        train(["world_models", "--stage", "controller", "--where", where, *extra, "--population", "4", "--trials", "2",
               "--episode-steps", "10", "--card-tracks", "1", "--card-steps", "10", "--vae", vae, "--rnn", rnn,
               "--out", out, *common])
    return paths


@pytest.fixture
def results(monkeypatch, tmp_path):
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    return tmp_path


def _arguments(tiny, **overrides):
    options = {"episodes": EPISODES, "episode-steps": STEPS, "speed-steps": SPEED_STEPS, "threads": 1,
               **{name.replace("_", "-"): tiny[name] for name in ("vae", "rnn", "controller_real", "controller_dream",
                                                                  "data")}, **overrides}
    return ["--quick", *[x for name, value in options.items() for x in (f"--{name}", str(value))]]


def test_the_bench_measures_real_returns_v_m_and_speed_and_each_figure_is_recomputable(tiny, results):
    import bench.world_models as wm_bench
    from core import world_models as wm
    from core.checkpoints import build_model, load_checkpoint
    from core.vae import VAE, VAEConfig

    torch.set_num_threads(2)
    figures = wm_bench.main(_arguments(tiny))
    assert torch.get_num_threads() == 1 == figures["threads"]  # --threads 1; the speed figures gave it back
    saved = json.loads((results / "world_models.quick.json").read_text())
    assert saved["quick"] is True and saved["figures"] == json.loads(json.dumps(figures))

    # Which checkpoints were measured: each card's command, steps and time.
    records = figures["checkpoints"]
    assert set(records) == {"vae", "rnn", "controller_real", "controller_dream"} and "missing" not in figures
    for name, stage in (("vae", "--stage vae"), ("rnn", "--stage rnn"), ("controller_real", "--where real"),
                        ("controller_dream", "--where dream")):
        command = records[name]["command"]
        assert command.startswith("python -m core.train world_models") and stage in command
        assert records[name]["steps"] >= 1 and records[name]["wall_time_s"] >= 0 and len(records[name]["sha256"]) == 64
    assert records["controller_dream"]["steps"] == 2 and records["controller_real"]["steps"] == 1

    # Real returns: every policy, the same EPISODES tracks, whole episodes of STEPS steps.
    returns = figures["returns"]
    seeds = [wm_bench.FIRST_TRACK + i for i in range(EPISODES)]
    assert returns["episodes"] == EPISODES and returns["episode_steps"] == STEPS
    assert returns["tracks"].startswith(f"seeds {seeds[0]}..{seeds[-1]}")
    for policy in (*wm_bench.CONTROLLERS, *wm_bench.BASELINES):
        stats = returns[policy]
        assert stats["episodes"] == len(stats["returns"]) == EPISODES
        assert all(math.isfinite(r) for r in stats["returns"])
        assert stats["mean"] == round(float(np.mean(stats["returns"])), 1)
        assert stats["std"] == round(float(np.std(stats["returns"])), 1)
        assert stats["min"] == min(stats["returns"]) <= stats["mean"] <= stats["max"] == max(stats["returns"])
        assert all(-0.1 * STEPS - 100 <= r < 1000 for r in stats["returns"])  # -0.1 a step; at most 1000 of tiles
    vae = build_model(load_checkpoint(tiny["vae"]), VAE, VAEConfig)
    rnn = build_model(load_checkpoint(tiny["rnn"]), wm.MDNRNN, wm.RNNConfig)
    real = build_model(load_checkpoint(tiny["controller_real"]), wm.Controller, wm.ControllerConfig)
    dream = build_model(load_checkpoint(tiny["controller_dream"]), wm.Controller, wm.ControllerConfig)
    assert returns["controller_real"]["returns"] == wm.real_returns(vae, rnn, real, seeds, STEPS)
    env = wm.make_env(STEPS)  # the random policy, by hand: the action space seeded with the track
    by_hand = []
    for seed in seeds:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        total = 0.0
        for _ in range(STEPS):
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            if terminated or truncated:
                break
        by_hand.append(round(total, 1))
    env.close()
    assert returns["random_policy"]["returns"] == by_hand
    first = np.load(wm.episode_files(tiny["data"])[0])  # the noisy policy is the one that recorded the data
    noisy = wm_bench.baseline_return("noisy_policy", 0, ROLLOUT_STEPS)
    assert noisy == pytest.approx(float(first["rewards"].sum()), abs=0.06)
    assert figures["paper"]["mean"] == 906 and figures["paper"]["std"] == 21

    # Each controller inside M's dream: every kept start, at the dream controller's training temperature.
    dreamed = figures["dream_returns"]
    starts = load_checkpoint(tiny["rnn"]).extras["dream_starts"]
    assert dreamed["dreams"] == len(starts) and dreamed["temperature"] == wm_bench.TRAINING_TEMPERATURE
    params = torch.tensor(np.stack([wm.flat_parameters(real), wm.flat_parameters(dream)]),
                          dtype=torch.float32)
    by_hand = wm.dream_returns(rnn, params, starts, dreamed["steps"], dreamed["temperature"],
                               torch.Generator().manual_seed(0))
    for name, row in zip(wm_bench.CONTROLLERS, by_hand):
        assert dreamed[name]["mean"] == round(float(row.mean()), 1), name

    # V and M on the rollouts' validation episode (the second of two).
    valid = figures["validation"]
    assert valid["source"] == "rollouts" and valid["files"] == ["episode_00001.npz"]
    assert valid["episodes"] == 1 and valid["frames"] == figures["vae"]["frames"] == ROLLOUT_STEPS
    episode = dict(np.load(wm.episode_files(tiny["data"])[1]))
    frames = wm.frames_to_tensor(episode["frames"])
    assert figures["vae"]["mse_per_pixel"] == pytest.approx(wm.reconstruction_mse(vae, frames), rel=1e-3)
    assert 0 < figures["vae"]["mean_frame_mse_per_pixel"] < 1 and figures["vae"]["negative_elbo_per_frame"] > 0
    assert figures["vae"]["negative_elbo_per_frame"] == pytest.approx(
        figures["vae"]["recon_nats_per_frame"] + figures["vae"]["kl_nats_per_frame"], abs=0.02)
    m = figures["rnn"]
    encoded = wm.encoded_episodes(vae, [episode])
    assert m["steps"] == ROLLOUT_STEPS - 1 and m["nll_per_dim"] == wm.rnn_validation(rnn, encoded)["nll_per_dim"]
    z = encoded[0]["mu"].double()
    gaussian = torch.distributions.Normal(z[1:].mean(0), z[1:].std(0, unbiased=False))
    assert m["gaussian_nll_per_dim"] == pytest.approx(-gaussian.log_prob(z[1:]).mean().item(), abs=1e-3)
    assert m["same_z_mse"] == pytest.approx(((z[1:] - z[:-1]) ** 2).mean().item(), rel=1e-3)
    assert m["mean_z_mse"] == pytest.approx(z[1:].var(0, unbiased=False).mean().item(), rel=1e-3)
    rewards = encoded[0]["rewards"][:-1]
    assert m["reward_variance"] == pytest.approx(rewards.var(unbiased=False).item(), abs=1e-4)
    with torch.no_grad():
        mixture = rnn(encoded[0]["mu"][None, :-1], encoded[0]["actions"][None, :-1])[0]
        expected = (torch.softmax(mixture.logit_pi, -2) * mixture.mu).sum(-2)[0].double()
    assert m["prediction_mse"] == pytest.approx(((expected - z[1:]) ** 2).mean().item(), rel=1e-3)

    # Speed: positive, on one thread, SPEED_STEPS timed steps each.
    speed = figures["speed"]
    assert speed["threads"] == 1 and speed["target_ms"] == 20 and speed["temperature"] == 1.0
    for part in ("dream", "real", "environment"):
        assert speed[part]["runs"] == SPEED_STEPS
        assert 0 < speed[part]["min_ms"] <= speed[part]["median_ms"] <= speed[part]["max_ms"]
    assert speed["dream"]["fps"] == pytest.approx(1000 / speed["dream"]["median_ms"], rel=1e-3)
    assert speed["meets_target"] == (speed["dream"]["median_ms"] <= 20)
    assert "controller_dream" in speed["dream"]["what"] and "controller_real" in speed["real"]["what"]

    for row in wm_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    for sentence in wm_bench.README_PROSE:
        fill(sentence, figures)
    rows = table(results, ["world_models"])
    assert MISSING not in rows and rows.count("`bench/world_models.py`") == len(wm_bench.README_ROWS)
    assert f"{returns['random_policy']['mean']:.0f} ± {returns['random_policy']['std']:.0f} (quick)" in rows


def test_without_rollouts_or_a_dream_controller_the_bench_records_frames_and_says_what_is_missing(tiny, results,
                                                                                                 tmp_path):
    import bench.world_models as wm_bench

    figures = wm_bench.main(_arguments(tiny, **{"episodes": 1, "episode-steps": 20, "speed-steps": 3,
                                                "data": tmp_path / "none", "record-episodes": 1, "record-steps": 20,
                                                "controller-dream": tmp_path / "controller_dream.pt"}))
    assert figures["missing"][0].startswith("controller_dream") and "--where dream" in figures["missing"][0]
    assert "controller_dream" not in figures["returns"] and "controller_dream" not in figures["checkpoints"]
    assert figures["returns"]["random_policy"]["episodes"] == 1
    valid = figures["validation"]
    assert valid["source"] == "recorded" and "no rollouts" in valid["what"] and "30500..30500" in valid["what"]
    assert valid["frames"] == figures["vae"]["frames"] == 20 and figures["rnn"]["steps"] == 19
    assert "controller_real" in figures["speed"]["dream"]["what"]
    rows = table(results, ["world_models"])
    assert rows.count(MISSING) == 3  # the dream controller: its real return, its dreamed one and that real one again
