"""World Models on CarRacing, measured (issue "World Models"): how well the controllers drive the real car,
how well V reconstructs and M predicts, and how fast the dream plays.

    python -m bench.world_models [--quick] [--episodes 20] [--episode-steps 1000] [--first-track 20500]
                                 [--vae PATH] [--rnn PATH] [--controller-real PATH] [--controller-dream PATH]
                                 [--data FOLDER] [--speed-steps 200] [--threads N]

The models are the shipped ones (assets/checkpoints/world_models/{vae,rnn,controller_real,controller_dream}.pt,
or the files given); "checkpoints" records each one measured (its SHA-256, and its card's command, steps, wall
time and own figures). A controller not trained yet is listed under "missing" and its figures are left out;
V and M are needed for everything.

- Real returns: --episodes whole episodes (default 20; --quick 3) of --episode-steps steps (default 1,000, the
  environment's own limit; --quick 200), no early end, on tracks first-track, first-track + 1, ... (default
  20,500..20,519): core.world_models.real_returns for the controller trained in CarRacing and the one trained
  in M's dream; the same tracks for two baselines driven straight through make_env: the rollouts' own
  NoisyPolicy (seeded with the track, as when the data was recorded) and uniformly random actions
  (env.action_space.sample, the action space seeded with the track). Mean, std (over episodes, ddof 0), min,
  max, and every return; beside the paper's 906 +- 21 (100 episodes, the full 1,000 steps). The tracks are
  neither the rollouts' (seed 0, 1, ...), nor the cards' (10,000, ...), nor any that `--stage controller
  --where real` drives (core.world_models.training_tracks: from 1,000,000 up); --first-track below that is
  checked.
- V: on the rollouts' validation episodes (core.world_models.split_episodes: the last tenth, whole episodes,
  other tracks; --valid-episodes keeps the first few of them, --quick 2): reconstruction mean squared error
  per pixel on the 0..1 scale (reconstruction_mse: decode(mu)), beside the error of the frames' own mean
  frame (in-sample, a "V learned nothing about this frame" floor); and core.vae.evaluate's negative ELBO per
  frame in nats (Bernoulli pixels + KL, one posterior sample). The rollouts are not shipped; without them
  (a fresh clone) the bench records --record-episodes episodes (default 5, --quick 2) of --record-steps
  steps (default 300, --quick 100) of the NoisyPolicy on tracks 30,500, 30,501, ... and measures those;
  "validation" says which frames were measured.
- M: on the same episodes encoded by V (z = V's mean), core.world_models.rnn_validation's negative
  log-likelihood of each z_t+1 (nats per dimension; per step = x 32), beside one Gaussian per dimension
  fitted (maximum likelihood, in-sample: it is fitted to the very z_t+1 it scores) to those z_t+1: what M
  would score knowing nothing of dynamics, actions or the past. And M's one-step prediction: the squared
  error (mean over steps and dimensions) of the mixture's mean sum_k softmax(logit_pi)_k mu_k against V's
  actual z_t+1, beside "z stays the same" (z_t+1 = z_t) and "the mean z" (the Gaussian's mean).
- Speed on one CPU thread (models loaded beforehand): one dream step as the tab makes a frame, Dream.step
  (M, a sample at the tab's temperature 1.0) + decode of the new z, from M's first dream start (a rollout's
  frame at step DREAM_START), the action from the dream-trained controller (the real-trained one if it is
  missing; untimed); median and max ms over --speed-steps steps (default 200; --quick 50) against the 20 ms target
  (then the dream plays at 30 frames a second with room to spare). One real step for comparison:
  core.world_models.drive's work per step (frame, encode, controller, environment step, M update; no
  reconstruction), and the environment's step alone (random actions).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import checkpoint_record, portable, save_results

FIRST_TRACK = 20_000         # bench tracks: no rollout's, no card's, no real CMA-ES generation's (see above)
RECORD_TRACK = 30_500        # fallback frames when the rollouts are absent
DREAM_TEMPERATURE = 1.0      # the tab's default (a sample costs the same at any tau > 0)
SPEED_TARGET_MS = 20.0
TRAINING_TEMPERATURE = 1.15  # the dream controller's (the paper's) tau: its fitness was measured at this one
DREAM_STEPS = 300            # the dream controller's episodes
CONTROLLERS = ("controller_real", "controller_dream")
BASELINES = ("noisy_policy", "random_policy")

_RETURN = "{returns.%s.mean:.0f} ± {returns.%s.std:.0f} (min {returns.%s.min:.0f}, max {returns.%s.max:.0f})"
README_ROWS = [
    {"figure": "World Models, controller trained in CarRacing: mean return ± std over {returns.episodes} tracks "
               "of {returns.episode_steps} steps",
     "measured": _RETURN % (("controller_real",) * 4),
     "reference": "paper {paper.mean} ± {paper.std} ({paper.episodes} episodes)"},
    {"figure": "World Models, controller trained in M's dream: its real return, same tracks",
     "measured": _RETURN % (("controller_dream",) * 4),
     "reference": "trained in CarRacing {returns.controller_real.mean:.0f}"},
    {"figure": "World Models: each controller's return inside M's dream (τ = {dream_returns.temperature}, "
               "{dream_returns.dreams} dreams of {dream_returns.steps} steps): trained in CarRacing; in the dream",
     "measured": "{dream_returns.controller_real.mean:.0f} ± {dream_returns.controller_real.std:.0f}; "
                 "{dream_returns.controller_dream.mean:.0f} ± {dream_returns.controller_dream.std:.0f}",
     "reference": "real returns: {returns.controller_real.mean:.0f}; {returns.controller_dream.mean:.0f}"},
    {"figure": "World Models baselines, same tracks: the rollouts' noisy policy; uniformly random actions",
     "measured": "{returns.noisy_policy.mean:.0f} ± {returns.noisy_policy.std:.0f}; "
                 "{returns.random_policy.mean:.0f} ± {returns.random_policy.std:.0f}",
     "reference": "solved: 900"},
    {"figure": "World Models V: reconstruction error per pixel (0–1) and negative ELBO per frame, "
               "{vae.frames:,} validation frames",
     "measured": "{vae.mse_per_pixel:.3g}; {vae.negative_elbo_per_frame:,.0f} nats",
     "reference": "the mean frame {vae.mean_frame_mse_per_pixel:.3g}"},
    {"figure": "World Models M: negative log-likelihood of z_t+1 (nats per dimension), {rnn.steps:,} validation steps",
     "measured": "{rnn.nll_per_dim:.3f}",
     "reference": "one Gaussian per dimension {rnn.gaussian_nll_per_dim:.3f}"},
    {"figure": "World Models M: squared error of its expected z_t+1 (per dimension)",
     "measured": "{rnn.prediction_mse:.3g}",
     "reference": "z stays the same {rnn.same_z_mse:.3g}; the mean z {rnn.mean_z_mse:.3g}"},
    {"figure": "World Models M: squared error of the reward it expects, same steps",
     "measured": "{rnn.reward_mse:.3f}",
     "reference": "the reward's variance {rnn.reward_variance:.3f}"},
    {"figure": "World Models dream step (M + decode), one CPU thread: median / max ms (frames per second)",
     "measured": "{speed.dream.median_ms:.1f} / {speed.dream.max_ms:.1f} ({speed.dream.fps:.0f} frames/s)",
     "reference": f"≤ {SPEED_TARGET_MS:g} ms"},
    {"figure": "World Models real step (environment + V + C + M), one CPU thread: median ms",
     "measured": "{speed.real.median_ms:.1f} (the environment alone {speed.environment.median_ms:.1f})",
     "reference": "—"},
]

README_PROSE = ["trained in CarRacing itself, the World Models controller drives {returns.episodes} new tracks to a "
                "mean return of {returns.controller_real.mean:.0f} ± {returns.controller_real.std:.0f} (the paper: "
                "{paper.mean} ± {paper.std}; random actions: {returns.random_policy.mean:.0f}); trained only in M's "
                "dream, it scores {returns.controller_dream.mean:.0f} on the same tracks",
                "one dream step, M's next z and its decoded frame, takes {speed.dream.median_ms:.1f} ms on one CPU "
                "thread (median; target {speed.target_ms:g} ms)"]


# --- what the bench measures (module functions, so tests can call them alone) ------------------------

def _sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits (squared errors of a few codes can be tiny)."""
    return float(f"{x:.{digits}g}")


def load_models(paths: dict) -> tuple[dict, dict, list[str]]:
    """The models at `paths` (vae, rnn, controller_real, controller_dream), their records, and which
    controllers are missing (V and M must exist)."""
    from core import world_models as wm
    from core.checkpoints import build_model, load_checkpoint
    from core.vae import VAE, VAEConfig

    models, records, missing = {}, {}, []
    for name, (cls, config) in {"vae": (VAE, VAEConfig), "rnn": (wm.MDNRNN, wm.RNNConfig),
                                **{c: (wm.Controller, wm.ControllerConfig) for c in CONTROLLERS}}.items():
        path = Path(paths[name])
        if name in CONTROLLERS and not path.is_file():
            missing.append(f"{name} ({portable(path)}: python -m core.train world_models --stage controller "
                           f"--where {name.split('_')[1]})")
            continue
        checkpoint = load_checkpoint(path)  # a missing V or M stops the bench with the command that makes it
        models[name] = build_model(checkpoint, cls, config)
        records[name] = checkpoint_record(path, checkpoint.card)
        if name == "rnn":
            models["dream_starts"] = checkpoint.extras["dream_starts"]
    return models, records, missing


def return_stats(returns) -> dict:
    returns = [float(r) for r in returns]
    return {"episodes": len(returns), "mean": round(float(np.mean(returns)), 1),
            "std": round(float(np.std(returns)), 1), "min": min(returns), "max": max(returns), "returns": returns}


def baseline_return(policy: str, seed: int, steps: int) -> float:
    """One whole episode of a baseline on track `seed`, straight through the environment (no V, no M):
    "noisy_policy" (the rollouts' policy, seeded with the track) or "random_policy" (action_space.sample,
    the action space seeded with the track). Ends only when the environment ends it."""
    from core.world_models import NoisyPolicy, make_env

    env = make_env(steps)
    try:
        env.reset(seed=int(seed))
        if policy == "noisy_policy":
            act = NoisyPolicy(seed)
        else:
            env.action_space.seed(int(seed))
            act = env.action_space.sample
        total = 0.0
        for _ in range(steps):
            _, reward, terminated, truncated, _ = env.step(act())
            total += float(reward)
            if terminated or truncated:
                break
    finally:
        env.close()
    return round(total, 1)


def real_figures(models: dict, seeds: list[int], steps: int) -> dict:
    """Every policy's real returns on the same tracks."""
    from core.world_models import real_returns

    out = {}
    for name in CONTROLLERS:
        if name in models:
            out[name] = return_stats(real_returns(models["vae"], models["rnn"], models[name], seeds, steps))
    for name in BASELINES:
        out[name] = return_stats([baseline_return(name, s, steps) for s in seeds])
    return out


def dream_figures(models: dict, starts, steps: int, tau: float, seed: int) -> dict:
    """Each controller's return inside M's dream: from every dream start M keeps (`starts`: the rollouts'
    frames at step DREAM_START), `steps` steps at temperature tau, all in one batch. Set beside the real returns, it
    shows whether M's dream ranks the controllers as reality does (a controller that exploits M's errors
    scores in the dream and not on the road)."""
    import torch

    from core import world_models as wm

    names = [name for name in CONTROLLERS if name in models]
    if not names:
        return {}
    params = torch.tensor(np.stack([wm.flat_parameters(models[name]) for name in names]), dtype=torch.float32)
    returns = wm.dream_returns(models["rnn"], params, starts, steps, tau, torch.Generator().manual_seed(seed))
    return {"temperature": tau, "steps": steps, "dreams": len(starts),
            **{name: {"mean": round(float(r.mean()), 1), "std": round(float(r.std()), 1)}
               for name, r in zip(names, returns)}}


def validation_episodes(data, keep: int | None, record_episodes: int, record_steps: int) -> tuple[list, dict]:
    """The rollouts' validation episodes (only those files are read), or, without rollouts, freshly recorded
    NoisyPolicy episodes; and a record saying which."""
    from core import world_models as wm

    files = wm.episode_files(data)
    _, valid_files = wm.split_episodes(files)
    if valid_files:
        valid_files = valid_files[:keep] if keep else valid_files
        episodes = [dict(np.load(path)) for path in valid_files]
        record = {"source": "rollouts", "folder": portable(Path(data)),
                  "what": f"the rollouts' validation episodes (the last tenth of {len(files)}), "
                          f"{len(valid_files)} of them", "files": [p.name for p in valid_files]}
        if (Path(data) / "card.json").is_file():
            record["rollouts"] = wm.rollouts_record(data)
    else:
        seeds = list(range(RECORD_TRACK, RECORD_TRACK + record_episodes))
        episodes = [wm.record_episode(s, record_steps) for s in seeds]
        why = "no rollouts" if not files else f"{len(files)} rollout episode(s), none left to validate on"
        record = {"source": "recorded", "folder": portable(Path(data)),
                  "what": f"{why} in the folder: {record_episodes} episodes of the noisy policy recorded now, "
                          f"up to {record_steps} steps, tracks {seeds[0]}..{seeds[-1]}"}
    record.update(episodes=len(episodes), frames=int(sum(len(e["actions"]) for e in episodes)))
    return episodes, record


def vae_figures(vae, episodes) -> dict:
    import torch.nn.functional as F

    from core.vae import as_float, evaluate
    from core.world_models import frames_to_tensor, reconstruction_mse

    frames = frames_to_tensor(np.concatenate([e["frames"] for e in episodes]))
    elbo = evaluate(vae, frames)
    x = as_float(frames)
    mean_frame = F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x).item()
    del x
    mse = reconstruction_mse(vae, frames)
    return {"frames": len(frames), "mse_per_pixel": _sig(mse), "mean_frame_mse_per_pixel": _sig(mean_frame),
            "negative_elbo_per_frame": round(-elbo["elbo"], 2), "recon_nats_per_frame": round(elbo["recon"], 2),
            "kl_nats_per_frame": round(elbo["kl"], 2)}


def rnn_figures(rnn, encoded) -> dict:
    """M's validation NLL and one-step prediction error, each beside what knowing nothing of dynamics scores."""
    import math

    import torch

    from core.world_models import mixture_mean, rnn_validation

    encoded = [e for e in encoded if len(e["actions"]) > 1]
    nll = rnn_validation(rnn, encoded)
    targets = torch.cat([e["mu"][1:] for e in encoded]).double()          # every z_t+1 M is judged on
    mean, var = targets.mean(0), targets.var(0, unbiased=False).clamp_min(1e-12)
    gaussian = (0.5 * math.log(2 * math.pi) + 0.5 * var.log() + 0.5 * (targets - mean) ** 2 / var).mean().item()
    expected, previous = [], []
    with torch.no_grad():
        for e in encoded:
            mixture, _, _, _ = rnn(e["mu"][None, :-1], e["actions"][None, :-1])
            expected.append(mixture_mean(mixture)[0])                        # sum_k pi_k mu_k
            previous.append(e["mu"][:-1])
    expected, previous = torch.cat(expected).double(), torch.cat(previous).double()
    return {"episodes": len(encoded), "steps": len(targets), **nll,
            "gaussian_nll_per_dim": round(gaussian, 4), "gaussian_nll_per_step": round(gaussian * targets.shape[1], 2),
            "prediction_mse": _sig(((expected - targets) ** 2).mean().item()),
            "same_z_mse": _sig(((previous - targets) ** 2).mean().item()),
            "mean_z_mse": _sig(((mean - targets) ** 2).mean().item()),
            # the reward's own variance: the squared error of always predicting its mean
            "reward_variance": round(torch.cat([e["rewards"][:-1] for e in encoded]).var(unbiased=False).item(), 4)}


def _ms(times: list[float]) -> dict:
    return {"runs": len(times), "median_ms": round(1000 * statistics.median(times), 3),
            "min_ms": round(1000 * min(times), 3), "max_ms": round(1000 * max(times), 3)}


def speed(models: dict, steps: int, seed: int) -> dict:
    """One thread: a dream step (Dream.step + decode), a real step (drive's work) and the environment's step
    alone, each over `steps` steps after one untimed; torch's thread count is given back."""
    import torch

    from core import world_models as wm
    from core.runtime import set_threads

    vae, rnn = models["vae"], models["rnn"]
    acting = next((name for name in ("controller_dream", "controller_real") if name in models), None)
    controller = models.get(acting)
    threads = torch.get_num_threads()
    set_threads(1)
    try:
        dream = wm.Dream(rnn, models["dream_starts"][0], seed)
        dream_times = []
        with torch.no_grad():
            for i in range(steps + 1):
                action = controller(dream.z, dream.h)[0] if controller is not None else np.array([0.0, 0.5, 0.0])
                start = time.perf_counter()
                z, _, _ = dream.step(action, DREAM_TEMPERATURE)
                frame = wm.decode(vae, z[None])
                if i:
                    dream_times.append(time.perf_counter() - start)
        assert frame.shape == (1, wm.FRAME, wm.FRAME, 3)

        real_times, track = [], seed
        driving = next((name for name in ("controller_real", "controller_dream") if name in models), None)
        real_controller = models.get(driving)
        actions = None if driving else [np.array([0.0, 0.5, 0.0], dtype=np.float32)] * (steps + 1)
        while len(real_times) < steps and track < seed + 10 * steps:  # a car that leaves the playfield
            steps_left = steps - len(real_times)                         # ends its track: the next one
            drive = wm.drive(vae, rnn, real_controller, track, steps_left + 1, actions=actions, reconstruct=False)
            try:
                next(drive)  # untimed: the environment starts and resets
                for _ in range(steps_left):
                    start = time.perf_counter()
                    next(drive)
                    real_times.append(time.perf_counter() - start)
            except StopIteration:
                pass
            drive.close()
            track += 1

        env = wm.make_env(steps + 1)
        env_times = []
        try:
            env.reset(seed=int(seed))
            env.action_space.seed(int(seed))
            while len(env_times) < steps:
                action = env.action_space.sample()
                start = time.perf_counter()
                _, _, terminated, truncated, _ = env.step(action)
                env_times.append(time.perf_counter() - start)
                if terminated or truncated:
                    env.reset(seed=int(seed) + len(env_times))
        finally:
            env.close()
    finally:
        set_threads(threads)
    dream_figures = _ms(dream_times)
    dream_figures["fps"] = round(1000 / dream_figures["median_ms"], 1)
    return {"threads": 1, "temperature": DREAM_TEMPERATURE, "target_ms": SPEED_TARGET_MS,
            "meets_target": dream_figures["median_ms"] <= SPEED_TARGET_MS,
            "dream": {**dream_figures, "what": "Dream.step (M, one sample) + decode of the new z; the action "
                      f"({acting or 'fixed: half gas'}) untimed"},
            "real": {**_ms(real_times), "what": "core.world_models.drive, one step: frame, V's encoder, "
                     f"the action ({driving or 'fixed: half gas'}), the environment's step, M's update "
                     "(no reconstruction)"},
            "environment": {**_ms(env_times), "what": "CarRacing's step alone, random actions"}}


def main(argv=None) -> dict:
    from core import world_models as wm
    from core.registry import shipped_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--episodes", type=int, default=None, help="real episodes per policy (default 20; quick 3)")
    parser.add_argument("--episode-steps", type=int, default=None,
                        help=f"steps per real episode (default {wm.MAX_EPISODE_STEPS}; quick 200)")
    parser.add_argument("--first-track", type=int, default=FIRST_TRACK, help="episode i drives track first-track + i")
    for name in ("vae", "rnn", *CONTROLLERS):
        parser.add_argument(f"--{name.replace('_', '-')}", default=str(shipped_path("world_models", name)),
                            help=f"the {name} checkpoint (default: the shipped one)")
    parser.add_argument("--data", default=str(wm.ROLLOUTS), help="the rollouts folder (its validation episodes)")
    parser.add_argument("--valid-episodes", type=int, default=None,
                        help="keep the first few validation episodes (default all; quick 2)")
    parser.add_argument("--record-episodes", type=int, default=None,
                        help="without rollouts: episodes to record (default 5; quick 2)")
    parser.add_argument("--record-steps", type=int, default=None,
                        help="without rollouts: steps per recorded episode (default 300; quick 100)")
    parser.add_argument("--speed-steps", type=int, default=None, help="timed steps (default 200; quick 50)")
    parser.add_argument("--seed", type=int, default=0, help="the dream's random stream in the speed figures")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for everything but the speed "
                        "figures (default GENLAB_THREADS or all cores); the speed figures always use one")
    args = parser.parse_args(argv)
    from core.runtime import set_threads

    quick = args.quick
    episodes = args.episodes or (3 if quick else 20)
    steps = args.episode_steps or (200 if quick else wm.MAX_EPISODE_STEPS)
    threads = set_threads(args.threads)
    timings = {}
    models, records, missing = load_models({"vae": args.vae, "rnn": args.rnn, "controller_real": args.controller_real,
                                            "controller_dream": args.controller_dream})
    figures = {"threads": threads, "checkpoints": records,
               "paper": {"mean": wm.PAPER_RETURN[0], "std": wm.PAPER_RETURN[1], "episodes": 100,
                         "source": "Ha & Schmidhuber 2018, table 1 (CarRacing, 1,000-step episodes)"}}

    start = time.perf_counter()
    seeds = list(range(args.first_track, args.first_track + episodes))
    if seeds[-1] >= wm.FIRST_TRAINING_TRACK:
        raise SystemExit(f"--first-track: tracks from {wm.FIRST_TRAINING_TRACK:,} on are CMA-ES's training tracks.")
    figures["returns"] = {"episodes": episodes, "episode_steps": steps,
                          "tracks": f"seeds {seeds[0]}..{seeds[-1]}, whole episodes, no early end",
                          **real_figures(models, seeds, steps)}
    timings["returns_s"] = time.perf_counter() - start
    start = time.perf_counter()
    from core.checkpoints import load_checkpoint

    figures["dream_returns"] = dream_figures(models, load_checkpoint(args.rnn).extras["dream_starts"],
                                             100 if quick else DREAM_STEPS, TRAINING_TEMPERATURE, args.seed)
    timings["dream_returns_s"] = time.perf_counter() - start

    start = time.perf_counter()
    valid, figures["validation"] = validation_episodes(
        args.data, args.valid_episodes or (2 if quick else None),
        args.record_episodes or (2 if quick else 5), args.record_steps or (100 if quick else 300))
    figures["vae"] = vae_figures(models["vae"], valid)
    timings["vae_s"] = time.perf_counter() - start
    start = time.perf_counter()
    figures["rnn"] = rnn_figures(models["rnn"], wm.encoded_episodes(models["vae"], valid))
    timings["rnn_s"] = time.perf_counter() - start
    del valid

    start = time.perf_counter()
    figures["speed"] = speed(models, args.speed_steps or (50 if quick else 200), args.seed)
    timings["speed_s"] = time.perf_counter() - start
    if missing:
        figures["missing"] = missing
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("world_models", figures, quick=quick)
    return figures


if __name__ == "__main__":
    main()
