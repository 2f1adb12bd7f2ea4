"""World Models on CarRacing: the real car and its frames, V, M (the MDN-RNN and its dream), C (the
controller), and the four training stages end to end on tiny rollouts the tests record themselves."""
import hashlib
import json
import math
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
import pytest
import torch

from core import world_models as wm
from tests.conftest import require_module

EPISODE_STEPS = wm.DREAM_START + 10  # the rnn stage keeps every rollout's frame at DREAM_START as a dream start
HIDDEN, MIXTURES = 16, 3
STEER, GAS, BRAKE = range(3)


def needs_car():
    for module in ("gymnasium", "Box2D", "pygame"):
        require_module(module, f"{module} is not installed: CarRacing needs `pip install \"gymnasium[box2d]\"`")


def needs_cma():
    require_module("cma", "cma is not installed: the controller's CMA-ES needs `pip install cma`")


def tiny_rnn(seed=0, latent=wm.LATENT, lively=False):
    """A small M. `lively` redraws its weights large, so its mixtures differ clearly from input to input
    (an untrained M predicts nearly the same mixture everywhere)."""
    torch.manual_seed(seed)
    rnn = wm.MDNRNN(wm.RNNConfig(latent=latent, hidden=HIDDEN, mixtures=MIXTURES)).eval()
    if lively:
        with torch.no_grad():
            for p in rnn.parameters():
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + p.numel()))
    return rnn


def tiny_controller(seed=0, scale=1.0):
    config = wm.ControllerConfig(hidden=HIDDEN)
    params = np.random.default_rng(seed).normal(0, scale, wm.parameter_count(config))
    return wm.controller_from(params, config)


def braking_controller():
    """Gas never, brake always, whatever it sees: the car stays on the start line."""
    config = wm.ControllerConfig(hidden=HIDDEN)
    params = np.zeros(wm.parameter_count(config))
    params[-3:] = [0.0, -50.0, 50.0]  # the bias: steer 0, gas (tanh(-50) + 1) / 2 = 0, brake tanh(50) = 1
    return wm.controller_from(params, config)


def noisy_actions(seed, n):
    policy = wm.NoisyPolicy(seed)
    return np.stack([policy() for _ in range(n)])


def assert_in_car_ranges(actions):
    actions = np.asarray(actions)
    assert actions.shape[-1] == 3 and np.isfinite(actions).all()
    assert (np.abs(actions[..., STEER]) <= 1).all()
    assert ((actions[..., GAS] >= 0) & (actions[..., GAS] <= 1)).all()
    assert ((actions[..., BRAKE] >= 0) & (actions[..., BRAKE] <= 1)).all()


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return wm.VAE(wm.VAE_CONFIG).eval()


# --- the real environment ----------------------------------------------------------------------------

def test_frame_of_drops_the_dashboard_and_resizes_to_64():
    observation = np.zeros((96, 96, 3), np.uint8)
    observation[:42] = 200         # the top half of the 84 rows V sees
    observation[42:84] = 50        # their bottom half
    observation[84:] = [0, 255, 0]  # the dashboard: must not reach the frame
    frame = wm.frame_of(observation)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert (frame[:28] == 200).all() and (frame[36:] == 50).all()  # 84 rows -> 64: the halves stay halves
    assert (frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all()  # no green
    assert 50 < frame[31, 0, 0] < 200 or 50 < frame[32, 0, 0] < 200  # blended where they meet
    # columns: all 96 are kept, squeezed to 64
    observation[:84] = 0
    observation[:84, 48:] = 255
    frame = wm.frame_of(observation)
    assert (frame[:, :30] == 0).all() and (frame[:, 34:] == 255).all()


def test_frames_to_tensor_moves_channels_first_and_keeps_bytes():
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = wm.frames_to_tensor(frames)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.uint8 and x.is_contiguous()
    assert x[1, 2, 5, 7] == frames[1, 5, 7, 2] and torch.equal(x.permute(0, 2, 3, 1), torch.from_numpy(frames))


def test_the_noisy_policy_drives_with_gas_a_wandering_wheel_and_now_and_then_the_brake():
    actions = noisy_actions(3, 3000)
    assert actions.dtype == np.float32 and np.array_equal(actions, noisy_actions(3, 3000))  # the seed decides all
    assert not np.array_equal(actions[:50], noisy_actions(4, 50))
    assert_in_car_ranges(actions)
    braking = actions[:, BRAKE] > 0
    assert np.unique(actions[:, BRAKE]).tolist() == pytest.approx([0.0, 0.8])
    assert 0.02 < braking.mean() < 0.09 and (actions[braking, GAS] == 0).all()
    assert (actions[~braking, GAS] >= 0.3).all()
    steer = actions[:, STEER]
    assert steer.std() > 0.3 and np.corrcoef(steer[:-1], steer[1:])[0, 1] > 0.6  # a walk, not white noise
    assert abs(steer.mean()) < 0.2  # ... around straight ahead


def test_a_recorded_episode_is_what_the_car_saw_and_did_and_replays_exactly(vae):
    needs_car()
    episode = wm.record_episode(5, 30)
    assert set(episode) == {"frames", "actions", "rewards"}
    assert episode["frames"].shape == (30, 64, 64, 3) and episode["frames"].dtype == np.uint8
    assert episode["actions"].shape == (30, 3) and episode["actions"].dtype == np.float32
    assert episode["rewards"].shape == (30,) and episode["rewards"].dtype == np.float32
    assert_in_car_ranges(episode["actions"])
    assert np.array_equal(episode["actions"], noisy_actions(5, 30))
    # every step costs 0.1; a step that reaches a new tile earns 1000/N more
    rewards = episode["rewards"]
    assert (np.isclose(rewards, -0.1) | (rewards > 0)).all() and (rewards > 0).any()
    env = wm.make_env(5)
    try:
        first, _ = env.reset(seed=5)
    finally:
        env.close()
    assert first.shape == (96, 96, 3) and np.array_equal(episode["frames"][0], wm.frame_of(first))
    assert len(np.unique(episode["frames"].reshape(30, -1), axis=0)) > 20  # the view moves
    # Same track, same actions: drive() replays the episode frame for frame and stops when the actions run out
    steps = list(wm.drive(vae, tiny_rnn(), None, 5, max_steps=100, actions=episode["actions"][:12]))
    assert [s.t for s in steps] == list(range(12)) and not any(s.done for s in steps)
    assert np.array_equal(np.stack([s.frame for s in steps]), episode["frames"][:12])
    assert np.array_equal(np.stack([s.action for s in steps]), episode["actions"][:12])
    assert np.array_equal(np.float32([s.reward for s in steps]), rewards[:12])


def observations(env, track: int, steps: int) -> list[np.ndarray]:
    """What the car sees on `track` under the noisy policy, step by step."""
    policy = wm.NoisyPolicy(track)
    try:
        seen = [env.reset(seed=track)[0]]
        seen += [env.step(np.asarray(policy(), dtype=np.float32))[0] for _ in range(steps)]
    finally:
        env.close()
    return seen


def test_drivers_on_many_server_threads_each_see_what_they_see_alone():
    # CarRacing fills its road with pygame.gfxdraw, whose polygon buffer all threads share: without
    # make_env's lock, two drivers at once saw each other's road in nearly every frame (the physics the same).
    needs_car()
    steps, tracks = 30, (3, 4)
    alone = {track: observations(wm.make_env(steps), track, steps) for track in tracks}
    drivers = [track for track in tracks for _ in range(3)]
    together = threading.Barrier(len(drivers))

    def drive(track):
        env = wm.make_env(steps)
        together.wait(timeout=60)
        return observations(env, track, steps)

    with ThreadPoolExecutor(len(drivers)) as pool:
        seen = list(pool.map(drive, drivers, timeout=300))
    for track, frames in zip(drivers, seen):
        differ = [t for t, (a, b) in enumerate(zip(frames, alone[track])) if not np.array_equal(a, b)]
        assert not differ, f"track {track}: beside other drivers, frames {differ} differ from the lone drive"


def test_without_gymnasium_the_environment_is_a_sentence(monkeypatch, tmp_path, capsys):
    from core.train import main

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` now raises ImportError
    with pytest.raises(wm.EnvironmentUnavailable, match=r"could not start .*pip install \"gymnasium\[box2d\]\"") as info:
        wm.make_env()
    assert isinstance(info.value, ValueError) and str(info.value).endswith(".")
    with pytest.raises(wm.EnvironmentUnavailable):
        wm.record_episode(0, 5)
    # ... and the rollouts command says it and exits, no traceback
    with pytest.raises(SystemExit) as exit_info:
        main(["world_models", "--stage", "rollouts", "--episodes", "1", "--episode-steps", "5",
              "--data", str(tmp_path / "rollouts"), "--threads", "1"])
    assert exit_info.value.code == 2
    assert "gymnasium[box2d]" in capsys.readouterr().err


# --- M: the mixture density network -------------------------------------------------------------------

def random_mixture(shape, k, z, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    return wm.Mixture(torch.randn(*shape, k, z, generator=g) * 2, torch.randn(*shape, k, z, generator=g) * spread,
                      torch.rand(*shape, k, z, generator=g) * 1.5 - 2)


def test_mixture_log_prob_is_the_gaussian_for_one_component_and_the_mixture_for_two():
    one = random_mixture((5,), 1, 7)
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)) * 3
    normal = torch.distributions.Normal(one.mu[:, 0], one.log_sigma[:, 0].exp())
    assert wm.mixture_log_prob(one, z).shape == (5, 7)
    assert torch.allclose(wm.mixture_log_prob(one, z), normal.log_prob(z), atol=1e-5)
    two = random_mixture((4, 6), 2, 3, seed=2)
    z = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(3))
    pi, mu, sigma = torch.softmax(two.logit_pi.double(), -2), two.mu.double(), two.log_sigma.double().exp()
    density = sum(pi[..., k, :] * torch.distributions.Normal(mu[..., k, :], sigma[..., k, :]).log_prob(z.double()).exp()
                  for k in range(2))
    assert torch.allclose(wm.mixture_log_prob(two, z).double(), density.log(), atol=1e-4)


def test_samples_are_likelier_under_their_own_mixture_than_shuffled_ones():
    generator = torch.Generator().manual_seed(0)
    mixture = random_mixture((500,), 5, 8)
    samples = wm.sample_mixture(mixture, 1.0, generator)
    assert samples.shape == (500, 8)
    own = wm.mixture_log_prob(mixture, samples).mean()
    shuffled = wm.mixture_log_prob(mixture, samples[torch.randperm(500, generator=generator)]).mean()
    assert own > shuffled + 2  # nats per dimension
    # ... and the same for M's own mixtures: a (lively) MDN-RNN's next-z predictions for 64 different histories
    rnn = tiny_rnn(lively=True)
    z = torch.randn(64, 5, wm.LATENT, generator=generator)
    actions = wm.squash(torch.randn(64, 5, 3, generator=generator))
    with torch.no_grad():
        predicted, _, _, _ = rnn(z, actions)
    samples = wm.sample_mixture(predicted, 1.0, generator)
    assert samples.shape == (64, 5, wm.LATENT)
    own = wm.mixture_log_prob(predicted, samples).mean()
    shuffled = wm.mixture_log_prob(predicted, samples.roll(1, 0)).mean()  # each row gets another history's sample
    assert own > shuffled + 0.3


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_samples_follow_the_tempered_mixture(tau):
    # one dimension, two far-apart components: pi = (1/4, 3/4) at tau = 1, sigma = (1, 2)
    n = 20_000
    mixture = wm.Mixture(*(torch.tensor(pair)[:, None].expand(n, 2, 1)
                           for pair in ([0.0, math.log(3)], [-10.0, 10.0], [0.0, math.log(2)])))
    z = wm.sample_mixture(mixture, tau, torch.Generator().manual_seed(1))[:, 0]
    second = z > 0
    expected = torch.softmax(torch.tensor([0.0, math.log(3)]) / tau, 0)[1].item()  # softmax(logit / tau)
    assert second.float().mean().item() == pytest.approx(expected, abs=0.015)
    assert z[second].mean().item() == pytest.approx(10, abs=0.1)
    assert z[~second].mean().item() == pytest.approx(-10, abs=0.1)
    assert z[second].std().item() == pytest.approx(2 * math.sqrt(tau), rel=0.05)  # sigma * sqrt(tau)
    assert z[~second].std().item() == pytest.approx(math.sqrt(tau), rel=0.05)


def test_at_temperature_zero_a_sample_is_the_likeliest_components_mean():
    mixture = random_mixture((10,), 4, 6)
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    z = wm.sample_mixture(mixture, 0, generator)
    assert torch.equal(generator.get_state(), before)  # no randomness drawn
    best = mixture.logit_pi.argmax(-2)  # per row and dimension
    assert torch.equal(z, mixture.mu.gather(-2, best[:, None]).squeeze(-2))
    assert torch.equal(z, wm.sample_mixture(mixture, 0.0, torch.Generator().manual_seed(9)))


def test_mixture_mean_weighs_the_components_means():
    mixture = wm.Mixture(torch.tensor([[0.0], [math.log(3)]]), torch.tensor([[-4.0], [8.0]]), torch.zeros(2, 1))
    assert wm.mixture_mean(mixture).tolist() == pytest.approx([0.25 * -4 + 0.75 * 8])
    one = random_mixture((3,), 1, 5)
    assert torch.allclose(wm.mixture_mean(one), one.mu[:, 0])


@pytest.mark.parametrize("bad", [-0.01, -5, float("nan"), float("inf"), "warm", None, [1.0], object()])
def test_temperatures_that_are_not_numbers_from_0_up_are_refused(bad):
    with pytest.raises(ValueError, match="temperature"):
        wm.check_temperature(bad)


def test_temperatures_are_floats_and_huge_ones_are_capped():
    assert wm.check_temperature(0) == 0.0 and isinstance(wm.check_temperature(1), float)
    assert wm.check_temperature(np.float32(1.15)) == pytest.approx(1.15)
    assert wm.check_temperature(wm.MAX_TEMPERATURE) == wm.MAX_TEMPERATURE
    assert wm.check_temperature(1e300) == wm.check_temperature(50) == wm.MAX_TEMPERATURE
    dream = wm.Dream(tiny_rnn(), torch.zeros(wm.LATENT), seed=0)
    with pytest.raises(ValueError, match="temperature"):
        dream.step([0, 1, 0], -1)
    assert dream.t == 0


def test_mdnrnn_shapes_and_its_dream_step_is_its_forward_one_step_at_a_time():
    rnn = tiny_rnn(lively=True)
    g = torch.Generator().manual_seed(0)
    z, actions = torch.randn(2, 7, wm.LATENT, generator=g), wm.squash(torch.randn(2, 7, 3, generator=g))
    with torch.no_grad():
        mixture, reward, h, (h_n, c_n) = rnn(z, actions)
    assert all(part.shape == (2, 7, MIXTURES, wm.LATENT) for part in mixture)
    assert reward.shape == (2, 7) and h.shape == (2, 7, HIDDEN) and h_n.shape == c_n.shape == (1, 2, HIDDEN)
    assert torch.equal(h[:, -1], h_n[0])
    state = wm.initial_state(rnn, 2)
    assert all(torch.equal(s, torch.zeros(1, 2, HIDDEN)) for s in state)
    with torch.no_grad():
        for t in range(7):
            _, r, m, h_t, state = wm.dream_step(rnn, z[:, t], actions[:, t], state, 0, g)
            assert torch.allclose(r, reward[:, t], atol=1e-5) and torch.allclose(h_t, h[:, t], atol=1e-5)
            assert all(torch.allclose(a, b[:, t], atol=1e-5) for a, b in zip(m, mixture))
    # log sigma is kept in [-7, 3] however large the weights grow
    with torch.no_grad():
        for p in rnn.mixture.parameters():
            p.mul_(100)
        log_sigma = rnn(z, actions)[0].log_sigma
    assert log_sigma.min() == -7 and log_sigma.max() == 3


def test_rnn_loss_is_the_next_z_nll_plus_the_rewards_squared_error():
    rnn = tiny_rnn(lively=True)
    g = torch.Generator().manual_seed(1)
    z, actions = torch.randn(3, 6, wm.LATENT, generator=g), torch.rand(3, 5, 3, generator=g)
    rewards = torch.randn(3, 5, generator=g)
    with torch.no_grad():
        terms = wm.rnn_loss(rnn, z, actions, rewards, reward_weight=0.5)
        mixture, predicted, _, _ = rnn(z[:, :-1], actions)
    nll = -wm.mixture_log_prob(mixture, z[:, 1:]).mean()
    assert torch.allclose(terms["nll"], nll) and torch.allclose(terms["reward_mse"], ((predicted - rewards) ** 2).mean())
    assert torch.allclose(terms["loss"], nll + 0.5 * terms["reward_mse"])


def synthetic_world(n, steps, generator, latent=4):
    """A deterministic world: z_t+1 = 0.9 z_t + a shift the action decides; the reward is gas - brake."""
    actions = torch.rand(n, steps, 3, generator=generator) * 2 - 1
    z = torch.zeros(n, steps + 1, latent)
    z[:, 0] = torch.randn(n, latent, generator=generator)
    shift = 0.5 * torch.stack([actions[..., 0], actions[..., 1], -actions[..., 0], actions[..., 2]], -1)
    for t in range(steps):
        z[:, t + 1] = 0.9 * z[:, t] + shift[:, t]
    return z, actions, actions[..., 1] - actions[..., 2]


def test_mdnrnn_learns_a_deterministic_world():
    rnn = wm.MDNRNN(wm.RNNConfig(latent=4, hidden=HIDDEN, mixtures=MIXTURES))
    valid = synthetic_world(64, 12, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = {k: v.item() for k, v in wm.rnn_loss(rnn, *valid).items()}
    optimizer = torch.optim.Adam(rnn.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        terms = wm.rnn_loss(rnn, *synthetic_world(32, 12, generator))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        after = {k: v.item() for k, v in wm.rnn_loss(rnn, *valid).items()}
        mixture, _, _, _ = rnn(valid[0][:, :-1], valid[1])
    assert after["nll"] < before["nll"] - 2 and after["nll"] < 0  # nats per dimension
    assert after["reward_mse"] < 0.2 * before["reward_mse"]
    # its expected next z is close to the truth (closer than "nothing changes")
    error = (wm.mixture_mean(mixture) - valid[0][:, 1:]).abs().mean()
    assert error < 0.5 * (valid[0][:, :-1] - valid[0][:, 1:]).abs().mean()


def test_reward_targets_and_validation_episodes():
    assert wm.reward_target(np.float32([-100, -0.1, 3.5])).tolist() == pytest.approx([-1, -0.1, 3.5])
    assert wm.split_episodes(list(range(10))) == (list(range(9)), [9])
    assert wm.split_episodes(list(range(30))) == (list(range(27)), [27, 28, 29])
    assert wm.split_episodes([0, 1]) == ([0], [1])
    assert wm.split_episodes([0]) == ([0], [])


def counting_episode(length, offset, logvar):
    t = torch.arange(length, dtype=torch.float32) + offset
    return {"mu": t[:, None].repeat(1, wm.LATENT), "logvar": torch.full((length, wm.LATENT), float(logvar)),
            "actions": t[:, None].repeat(1, 3), "rewards": t + 0.5}


def test_sequence_batches_are_windows_of_whole_episodes_with_z_drawn_from_q():
    episodes = [counting_episode(20, 0, -30), counting_episode(6, 1000, -30), counting_episode(30, 2000, -30)]
    z, actions, rewards = wm.sequence_batch(episodes, 6, 64, torch.Generator().manual_seed(0))
    assert z.shape == (64, 7, wm.LATENT) and actions.shape == (64, 6, 3) and rewards.shape == (64, 6)
    start = actions[:, 0, 0]
    assert torch.equal(actions, (start[:, None] + torch.arange(6))[..., None].expand(64, 6, 3))
    assert torch.equal(rewards, actions[..., 0] + 0.5)
    assert torch.allclose(z, (start[:, None] + torch.arange(7.0))[..., None].expand(64, 7, wm.LATENT), atol=1e-3)
    assert not ((start >= 1000) & (start < 2000)).any()  # 6 steps are too few for a window of 6 and its next z
    assert ((start < 20) & (start + 7 <= 20) | (start >= 2000) & (start + 7 <= 2030)).all()
    assert (start < 20).any() and (start >= 2000).any()
    again = wm.sequence_batch(episodes, 6, 64, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((z, actions, rewards), again))
    # with logvar 0, z is mu plus a fresh standard normal draw
    z, actions, _ = wm.sequence_batch([counting_episode(40, 0, 0.0)], 8, 256, torch.Generator().manual_seed(1))
    noise = z - (actions[:, :1, :1] + torch.arange(9.0)[:, None])
    assert noise.mean().abs() < 0.05 and noise.std().item() == pytest.approx(1, abs=0.05)


# --- C: the controller --------------------------------------------------------------------------------

def test_squash_keeps_every_action_in_the_cars_ranges():
    g = torch.Generator().manual_seed(0)
    raw = torch.cat([torch.randn(1000, 3, generator=g) * torch.tensor([1.0, 10.0, 1e6]),
                     torch.tensor([[1e30, -1e30, 1e30], [-1e30, 1e30, -1e30],
                                   [math.inf, -math.inf, math.inf], [-math.inf, math.inf, -math.inf]])])
    actions = wm.squash(raw)
    assert actions.shape == (1004, 3)
    assert_in_car_ranges(actions.numpy())
    assert wm.squash(torch.zeros(3)).tolist() == [0.0, 0.5, 0.0]
    assert (wm.squash(-torch.rand(50, 3) - 0.01)[:, BRAKE] == 0).all()  # a negative brake output leaves it alone
    assert wm.squash(torch.tensor([-1e9, -1e9, 1e9])).tolist() == [-1.0, 0.0, 1.0]


def test_random_controllers_even_huge_ones_act_in_range():
    g = torch.Generator().manual_seed(0)
    z, h = torch.randn(200, wm.LATENT, generator=g) * 5, torch.randn(200, HIDDEN, generator=g)
    for scale in (0.1, 1.0, 1e6):
        with torch.no_grad():
            actions = tiny_controller(seed=int(scale), scale=scale)(z, h)
        assert actions.shape == (200, 3)
        assert_in_car_ranges(actions.numpy())
        params = torch.randn(200, wm.parameter_count(wm.ControllerConfig(hidden=HIDDEN)), generator=g) * scale
        assert_in_car_ranges(wm.batched_actions(params, z, h).numpy())


def test_batched_actions_are_each_candidates_own_controller():
    config = wm.ControllerConfig(hidden=HIDDEN)
    g = torch.Generator().manual_seed(0)
    # float64, as CMA-ES proposes them
    params = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, (6, wm.parameter_count(config))))
    z, h = torch.randn(6, wm.LATENT, generator=g), torch.randn(6, HIDDEN, generator=g)
    batched = wm.batched_actions(params.float(), z, h)
    with torch.no_grad():
        alone = torch.cat([wm.controller_from(params[i].numpy(), config)(z[i:i + 1], h[i:i + 1]) for i in range(6)])
    assert torch.allclose(batched, alone, atol=1e-6)
    assert (batched.std(0) > 0.01).all()  # the candidates really act differently


def test_a_controllers_parameters_are_its_weights_then_its_bias_and_round_trip():
    assert wm.parameter_count(wm.ControllerConfig()) == (32 + 256 + 1) * 3 == 867
    assert sum(p.numel() for p in wm.Controller(wm.ControllerConfig()).parameters()) == 867
    config = wm.ControllerConfig(hidden=HIDDEN)
    n = wm.parameter_count(config)
    assert n == 147
    params = np.random.default_rng(1).normal(0, 1, n)
    controller = wm.controller_from(params, config)
    assert not controller.training
    back = wm.flat_parameters(controller)
    assert back.dtype == np.float64 and np.array_equal(back, params.astype(np.float32).astype(np.float64))
    assert np.array_equal(controller.linear.weight.detach().numpy(), params[:144].reshape(3, 48).astype(np.float32))
    assert np.array_equal(controller.linear.bias.detach().numpy(), params[144:].astype(np.float32))
    # a controller of bias alone acts the same whatever it sees
    only_bias = np.zeros(n)
    only_bias[-3:] = [0.3, -0.2, 1.0]
    z, h = torch.randn(4, wm.LATENT), torch.randn(4, HIDDEN)
    with torch.no_grad():
        actions = wm.controller_from(only_bias, config)(z, h)
    assert torch.allclose(actions, wm.squash(torch.tensor([0.3, -0.2, 1.0])).expand(4, 3))
    same_four = torch.tensor(only_bias, dtype=torch.float32)[None].expand(4, n)
    assert torch.allclose(wm.batched_actions(same_four, z, h), actions)


# --- the dream ------------------------------------------------------------------------------------------

def test_dream_returns_are_every_candidate_on_every_start_each_alone():
    rnn = tiny_rnn(lively=True)
    config = wm.ControllerConfig(hidden=HIDDEN)
    params = torch.randn(3, wm.parameter_count(config), generator=torch.Generator().manual_seed(0))
    z0 = torch.randn(2, wm.LATENT, generator=torch.Generator().manual_seed(1))
    returns = wm.dream_returns(rnn, params, z0, 6, 0.0, torch.Generator().manual_seed(2))
    assert returns.shape == (3, 2) and returns.std() > 1e-3
    for i in range(3):
        for j in range(2):
            alone = wm.dream_returns(rnn, params[i:i + 1], z0[j:j + 1], 6, 0.0, torch.Generator())
            assert alone.item() == pytest.approx(returns[i, j].item(), abs=1e-4)
            # ... which is the Dream the tab plays, driven by that controller
            controller, dream = wm.controller_from(params[i], config), wm.Dream(rnn, z0[j], seed=5)
            for _ in range(6):
                with torch.no_grad():
                    dream.step(controller(dream.z, dream.h)[0], 0.0)
            assert dream.total == pytest.approx(returns[i, j].item(), abs=1e-4) and dream.t == 6
    # at tau > 0 the same random stream gives the same returns, another one others
    noisy = [wm.dream_returns(rnn, params, z0, 6, 1.15, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert noisy[0].shape == (3, 2) and torch.equal(noisy[0], noisy[1]) and not torch.allclose(noisy[0], noisy[2])


def play(rnn, z0, seed, actions, tau):
    dream = wm.Dream(rnn, z0, seed)
    out = [dream.step(a, tau) for a in actions]
    return dream, torch.stack([z for z, _, _ in out]), [r for _, r, _ in out], out[-1][2]


def test_the_same_seed_gives_the_same_dream():
    rnn = tiny_rnn(lively=True)
    z0 = torch.randn(wm.LATENT, generator=torch.Generator().manual_seed(0))
    actions = wm.squash(torch.randn(12, 3, generator=torch.Generator().manual_seed(1))).tolist()
    dream, zs, rewards, mixture = play(rnn, z0, 7, actions, 1.15)
    _, zs_again, rewards_again, _ = play(rnn, z0, 7, actions, 1.15)
    assert zs.shape == (12, wm.LATENT) and all(m.shape == (MIXTURES, wm.LATENT) for m in mixture)
    assert torch.equal(zs, zs_again) and rewards == rewards_again
    assert dream.t == 12 and dream.total == pytest.approx(sum(rewards), abs=1e-5)
    assert not torch.equal(zs, play(rnn, z0, 8, actions, 1.15)[1])  # another seed, another dream
    assert not torch.equal(zs, play(rnn, z0, 7, actions[::-1], 1.15)[1])  # other actions, another dream
    calm = play(rnn, z0, 7, actions, 0)[1]
    assert torch.equal(calm, play(rnn, z0, 8, actions, 0)[1])  # tau = 0: no randomness at all
    # the first dreamed z at tau 0 is M's likeliest component mean for (z0, a0)
    with torch.no_grad():
        first, _, _, _ = rnn(z0[None, None], torch.tensor(actions[:1])[None])
    assert torch.equal(calm[0], wm.sample_mixture(wm.Mixture(*(m[0, 0] for m in first)), 0, None))


# --- driving the real car -----------------------------------------------------------------------------------

def test_drive_encodes_acts_on_z_and_h_and_adds_up_the_rewards(vae):
    needs_car()
    rnn, controller = tiny_rnn(lively=True), tiny_controller(seed=3)
    steps = list(wm.drive(vae, rnn, controller, 3, max_steps=8))
    assert [s.t for s in steps] == list(range(8)) and [s.done for s in steps] == [False] * 7 + [True]
    state, h = wm.initial_state(rnn), torch.zeros(1, HIDDEN)
    for s in steps:
        assert s.observation.shape == (96, 96, 3) and s.observation.dtype == np.uint8
        assert np.array_equal(s.frame, wm.frame_of(s.observation))
        mu, _ = wm.encode(vae, s.frame[None])
        assert s.z.shape == (wm.LATENT,) and s.z.dtype == np.float32 and np.allclose(s.z, mu[0].numpy(), atol=1e-5)
        assert s.reconstruction.shape == (64, 64, 3) and s.reconstruction.dtype == np.uint8
        assert np.array_equal(s.reconstruction, wm.decode(vae, torch.from_numpy(s.z)[None])[0])
        with torch.no_grad():  # the controller sees z and M's h, and M then reads (z, a)
            action = controller(torch.from_numpy(s.z)[None], h)
            _, state = rnn.lstm(torch.cat([torch.from_numpy(s.z)[None], action], -1)[:, None], state)
        h = state[0][0]
        assert s.action.shape == (3,) and np.allclose(s.action, action[0].numpy(), atol=1e-5)
        assert_in_car_ranges(s.action)
    assert np.allclose([s.total for s in steps], np.cumsum([s.reward for s in steps]), atol=1e-6)
    assert len({s.action.tobytes() for s in steps}) > 1  # h and z change, so do the actions
    assert all(s.reconstruction is None for s in wm.drive(vae, rnn, controller, 3, 2, reconstruct=False))


def test_a_car_that_never_moves_ends_after_patience_steps_without_a_tile(vae, monkeypatch):
    needs_car()
    seen = []
    real_drive = wm.drive

    def counted(*args, **kwargs):
        for step in real_drive(*args, **kwargs):
            seen.append(step)
            yield step

    monkeypatch.setattr(wm, "drive", counted)
    rnn, controller = tiny_rnn(), braking_controller()
    total = wm.episode_return(vae, rnn, controller, 3, max_steps=300, patience=10)
    assert all(s.action.tolist() == [0.0, 0.0, 1.0] for s in seen)
    tiles = [s.t for s in seen if s.reward > 0]
    assert len(seen) <= 12 and len(seen) - 1 - max(tiles, default=-1) == 10  # 10 steps after the last tile, no more
    assert total == seen[-1].total == pytest.approx(sum(s.reward for s in seen))
    seen.clear()
    assert wm.episode_return(vae, rnn, controller, 3, max_steps=25) == pytest.approx(sum(s.reward for s in seen))
    assert len(seen) == 25  # no patience: the whole episode
    assert wm.real_returns(vae, rnn, controller, [3], 25) == [round(seen[-1].total, 1)]


def test_check_dream_sets_the_dream_beside_the_real_drive(vae):
    needs_car()
    rnn, controller = tiny_rnn(lively=True), tiny_controller(seed=4)
    check = wm.check_dream(vae, rnn, controller, 3, 12, 0.0, seed=0, start=8)
    assert check.real_frames.shape == (12, 64, 64, 3) and check.real_z.shape == (12, wm.LATENT)
    assert check.actions.shape == (12, 3) and check.dream_z.shape == (12, wm.LATENT) and check.start == 8
    assert all(m.shape == (11, MIXTURES, wm.LATENT) for m in check.predicted)
    record = list(wm.drive(vae, rnn, controller, 3, 12, reconstruct=False))
    assert np.array_equal(check.real_z.numpy(), np.stack([s.z for s in record]))
    assert torch.equal(check.dream_z[:9], check.real_z[:9])  # the real history up to `start`
    # the first dreamed step is M's one-step prediction from the real history (teacher forced up to `start`)
    step = wm.Mixture(*(m[8] for m in check.predicted))
    assert torch.allclose(check.dream_z[9], wm.sample_mixture(step, 0, None), atol=1e-5)
    noisy = [wm.check_dream(vae, rnn, controller, 3, 12, 1.0, seed=s, start=8).dream_z for s in (1, 1, 2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0][9:], noisy[2][9:])
    with pytest.raises(ValueError, match="ended after 12 steps"):
        wm.check_dream(vae, rnn, controller, 3, 12, 0.0, seed=0, start=11)
    with pytest.raises(ValueError, match="temperature"):
        wm.check_dream(vae, rnn, controller, 3, 12, -1, seed=0, start=8)


# --- the four training stages on tiny rollouts -------------------------------------------------------------

def train(*arguments):
    from core.train import main

    main(["world_models", *map(str, arguments), "--threads", "1"])


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    needs_car()
    folder = tmp_path_factory.mktemp("world_models") / "rollouts"
    train("--stage", "rollouts", "--episodes", 2, "--episode-steps", EPISODE_STEPS, "--data", folder)
    return folder


@pytest.fixture(scope="module")
def vae_path(rollouts):
    out = rollouts.parent / "vae.pt"
    train("--stage", "vae", "--epochs", 1, "--batch-size", 8, "--data", rollouts, "--out", out)
    return out


@pytest.fixture(scope="module")
def rnn_path(rollouts, vae_path):
    out = rollouts.parent / "rnn.pt"
    train("--stage", "rnn", "--steps", 5, "--sequence", 8, "--batch-size", 4, "--hidden", HIDDEN,
          "--mixtures", MIXTURES, "--data", rollouts, "--vae", vae_path, "--out", out)
    return out


DREAM_STAGE = ("--stage", "controller", "--where", "dream", "--generations", 2, "--population", 4, "--trials", 2,
               "--episode-steps", 5)


@pytest.fixture(scope="module")
def controller_path(vae_path, rnn_path):
    needs_cma()
    out = rnn_path.parent / "controller_dream.pt"
    train(*DREAM_STAGE, "--card-tracks", 1, "--card-steps", 10, "--vae", vae_path, "--rnn", rnn_path, "--out", out)
    return out


def card_of(path):
    card = json.loads(path.with_suffix(".json").read_text())
    from core.checkpoints import load_checkpoint

    assert {k: v for k, v in card.items() if k != "config"} == json.loads(json.dumps(load_checkpoint(path).card))
    return card


def record_of(path):
    return {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "command": card_of(path)["command"], "wall_time_s": card_of(path)["wall_time_s"]}


def test_the_rollouts_stage_records_noisy_episodes_and_a_card(rollouts):
    files = wm.episode_files(rollouts)
    assert [f.name for f in files] == ["episode_00000.npz", "episode_00001.npz"]
    episodes = wm.load_rollouts(rollouts)
    for seed, episode in enumerate(episodes):
        assert episode["frames"].shape == (EPISODE_STEPS, 64, 64, 3) and episode["frames"].dtype == np.uint8
        assert episode["rewards"].shape == (EPISODE_STEPS,) and episode["rewards"].dtype == np.float32
        # episode i: track --seed + i, driven by the noisy policy of that seed
        assert np.array_equal(episode["actions"], noisy_actions(seed, EPISODE_STEPS))
    card = json.loads((rollouts / "card.json").read_text())
    assert card["command"] == (f"python -m core.train world_models --stage rollouts --episodes 2 --episode-steps "
                               f"{EPISODE_STEPS} --data rollouts --threads 1")  # a folder outside the repo: its name
    assert "resumed_with" not in card and card["environment"].startswith("gymnasium ")
    assert card["environment"].endswith("CarRacing-v3")
    assert card["episodes"] == 2 and card["steps"] == 2 * EPISODE_STEPS
    assert card["mean_return"] == round(float(np.mean([e["rewards"].sum() for e in episodes])), 1)
    assert card["wall_time_s"] > 0 and "64x64" in card["frame"]


def test_rollouts_resume_keeps_finished_episodes_and_world_hyphen_models_is_world_models(rollouts, tmp_path, capsys):
    from core.train import main

    folder = tmp_path / "more"
    shutil.copytree(rollouts, folder)
    before = {f.name: f.read_bytes() for f in wm.episode_files(folder)}
    earlier = json.loads((folder / "card.json").read_text())
    more = ["world-models", "--stage", "rollouts", "--episodes", "3", "--episode-steps", "12", "--data", str(folder),
            "--threads", "1"]
    with pytest.raises(SystemExit) as exit_info:  # a folder of rollouts is only ever continued, and says so
        main(more)
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err
    assert len(wm.episode_files(folder)) == 2 and json.loads((folder / "card.json").read_text()) == earlier
    main(more + ["--resume"])
    files = wm.episode_files(folder)
    assert [f.name for f in files] == ["episode_00000.npz", "episode_00001.npz", "episode_00002.npz"]
    assert all(files[i].read_bytes() == before[files[i].name] for i in range(2))  # not recorded again
    assert len(wm.load_rollouts(folder)[2]["actions"]) == 12
    # ... and nothing else: no partial files
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "episode_00002.npz", "card.json"])
    card = json.loads((folder / "card.json").read_text())
    assert card["command"] == earlier["command"]
    assert card["resumed_with"] == ["python -m core.train world_models --stage rollouts --episodes 3 --episode-steps 12 "
                                    "--data more --threads 1 --resume"]
    assert card["episodes"] == 3 and card["steps"] == 2 * EPISODE_STEPS + 12
    assert card["wall_time_s"] >= earlier["wall_time_s"]
    assert wm.rollouts_record(folder)["sha256"] != wm.rollouts_record(rollouts)["sha256"]


def test_world_hyphen_models_help_names_the_stages(capsys):
    from core.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["world-models", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "python -m core.train world_models" in out and "--stage" in out and "controller" in out


def test_the_rollouts_record_hashes_every_episode_file(rollouts, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(rollouts, folder)
    record = wm.rollouts_record(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.glob("episode_*.npz")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert record == {"name": "CarRacing-v3 noisy-policy rollouts (2 episodes)",
                      "source": json.loads((rollouts / "card.json").read_text())["command"],
                      "sha256": digest.hexdigest(), "episodes": 2,
                      "bytes": sum(p.stat().st_size for p in folder.glob("episode_*.npz"))}
    assert record == wm.rollouts_record(rollouts)  # where the folder is does not matter
    path = folder / "episode_00001.npz"
    original = path.read_bytes()
    episode = dict(np.load(path))
    episode["rewards"][0] += 1
    np.savez_compressed(path, **episode)
    assert wm.rollouts_record(folder)["sha256"] != record["sha256"]
    path.write_bytes(original)
    assert wm.rollouts_record(folder)["sha256"] == record["sha256"]
    path.rename(folder / "episode_00007.npz")  # the names count too
    assert wm.rollouts_record(folder)["sha256"] != record["sha256"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="--stage rollouts"):
        wm.load_rollouts(empty)


def test_the_vae_stage_on_a_single_episode_says_it_needs_two(rollouts, tmp_path, capsys):
    folder = tmp_path / "one"
    shutil.copytree(rollouts, folder)
    (folder / "episode_00001.npz").unlink()
    with pytest.raises(SystemExit) as exit_info:
        train("--stage", "vae", "--epochs", 1, "--batch-size", 8, "--data", folder, "--out", tmp_path / "vae.pt")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "episodes" in err


def test_the_vae_stage_writes_v_and_a_card_naming_the_rollouts(rollouts, vae_path):
    from core.checkpoints import build_model, load_checkpoint

    checkpoint = load_checkpoint(vae_path)
    assert checkpoint.config == asdict(wm.VAE_CONFIG)
    vae = build_model(checkpoint, wm.VAE, wm.VAEConfig)
    card = card_of(vae_path)
    assert card["command"].startswith("python -m core.train world_models --stage vae ")
    assert "--epochs 1" in card["command"]
    assert card["corpus"] == wm.rollouts_record(rollouts)
    assert card["steps"] == math.ceil(EPISODE_STEPS / 8)  # one epoch over the training episode's frames
    assert "1 training and 1 validation episodes" in card["data"]
    metrics = card["metrics"]
    assert {"elbo", "recon", "kl", "mse_per_pixel"} <= set(metrics)
    valid = wm.frames_to_tensor(wm.load_rollouts(rollouts)[1]["frames"])  # the last episode validates
    assert wm.reconstruction_mse(vae, valid) == pytest.approx(metrics["mse_per_pixel"], rel=0.05)  # (float16 weights)
    assert 0 < metrics["mse_per_pixel"] < 0.25
    mu, logvar = wm.encode(vae, wm.load_rollouts(rollouts)[0]["frames"][:5], batch_size=2)
    assert mu.shape == logvar.shape == (5, wm.LATENT)
    assert torch.allclose(mu, wm.encode(vae, wm.load_rollouts(rollouts)[0]["frames"][:5])[0], atol=1e-5)
    frames = wm.decode(vae, mu)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8


def test_the_rnn_stage_writes_m_its_dream_starts_and_a_card_naming_v(rollouts, vae_path, rnn_path):
    from core.checkpoints import build_model, load_checkpoint

    checkpoint = load_checkpoint(rnn_path)
    assert checkpoint.config == {"latent": wm.LATENT, "actions": 3, "hidden": HIDDEN, "mixtures": MIXTURES}
    rnn = build_model(checkpoint, wm.MDNRNN, wm.RNNConfig)
    vae = build_model(load_checkpoint(vae_path), wm.VAE, wm.VAEConfig)
    card = card_of(rnn_path)
    assert card["command"].startswith("python -m core.train world_models --stage rnn ") and card["steps"] == 5
    assert card["vae"] == record_of(vae_path) and card["corpus"] == wm.rollouts_record(rollouts)
    episodes = wm.load_rollouts(rollouts)
    valid = wm.encoded_episodes(vae, episodes[1:])
    assert valid[0]["rewards"].min() >= -1  # M learns the clipped reward
    metrics = card["metrics"]
    assert metrics["nll_per_dim"] == pytest.approx(wm.rnn_validation(rnn, valid)["nll_per_dim"], abs=0.02)
    assert not rnn.training  # validation leaves the model as it found it
    assert metrics["nll_per_step"] == pytest.approx(metrics["nll_per_dim"] * wm.LATENT, abs=0.05)
    assert metrics["parameters"] == sum(p.numel() for p in rnn.parameters())
    starts = checkpoint.extras["dream_starts"]  # every rollout's frame at DREAM_START, encoded
    expected, _ = wm.encode(vae, np.stack([e["frames"][wm.DREAM_START] for e in episodes]))
    assert starts.shape == (2, wm.LATENT) and torch.allclose(starts, expected, atol=1e-4)
    assert card["dream_starts"] == 2


def test_the_controller_stage_searches_the_dream_and_its_card_judges_real_tracks(vae_path, rnn_path, controller_path):
    from core.checkpoints import build_model, load_checkpoint

    checkpoint = load_checkpoint(controller_path)
    assert checkpoint.config == {"latent": wm.LATENT, "hidden": HIDDEN, "actions": 3}
    controller = build_model(checkpoint, wm.Controller, wm.ControllerConfig)
    params = wm.flat_parameters(controller)
    assert params.shape == (147,) and np.abs(params).max() > 0  # CMA-ES's mean moved from 0
    card = card_of(controller_path)
    assert card["command"].startswith("python -m core.train world_models --stage controller --where dream ")
    assert card["steps"] == 2 and [c["generation"] for c in card["curve"]] == [1, 2]
    assert all(c["candidates_best"] >= c["candidates_mean"] for c in card["curve"])
    assert card["vae"] == record_of(vae_path) and card["rnn"] == record_of(rnn_path)
    assert card["environment"].startswith("gymnasium ") and "cma" in card["training"]
    metrics = card["metrics"]
    assert metrics["parameters"] == 147 and len(metrics["real_returns"]) == 1
    assert metrics["real_mean_return"] == metrics["real_returns"][0]
    vae = build_model(load_checkpoint(vae_path), wm.VAE, wm.VAEConfig)
    rnn = build_model(load_checkpoint(rnn_path), wm.MDNRNN, wm.RNNConfig)
    # the card's number is the shipped controller's real return on track 10,000 (CarRacing is deterministic)
    assert wm.real_returns(vae, rnn, controller, [wm.CARD_TRACKS], 10) == metrics["real_returns"]


def test_the_controller_stage_repeats_itself(tmp_path, vae_path, rnn_path, controller_path):
    from core.checkpoints import load_checkpoint

    again = tmp_path / "again.pt"
    train(*DREAM_STAGE, "--card-tracks", 0, "--vae", vae_path, "--rnn", rnn_path, "--out", again)  # no real tracks
    assert all(torch.equal(a, b) for a, b in zip(load_checkpoint(again).state_dict.values(),
                                                 load_checkpoint(controller_path).state_dict.values()))
    metrics = card_of(again)["metrics"]
    assert metrics["real_returns"] == [] and metrics["real_mean_return"] is None


# The resume state is read with weights_only=True: CMA-ES's mean and step size must be plain tensors/floats.
def test_the_controller_stage_resumes(tmp_path, vae_path, rnn_path, controller_path):
    resumed = tmp_path / "resumed.pt"
    stage = [*DREAM_STAGE[:4], "--population", 4, "--trials", 2, "--episode-steps", 5, "--card-tracks", 0,
             "--vae", vae_path, "--rnn", rnn_path, "--out", resumed]
    train(*stage, "--generations", 1)
    train(*stage, "--generations", 3, "--resume")
    card = card_of(resumed)
    assert card["steps"] == 3 and [c["generation"] for c in card["curve"]] == [1, 2, 3]
    assert "--generations 1" in card["command"] and "--resume" in card["resumed_with"][0]


def test_the_rnn_stage_resumes(tmp_path, rollouts, vae_path):
    out = tmp_path / "rnn.pt"
    stage = ["--stage", "rnn", "--sequence", 8, "--batch-size", 4, "--hidden", 8, "--mixtures", 2,
             "--data", rollouts, "--vae", vae_path, "--out", out]
    train(*stage, "--steps", 3)
    train(*stage, "--steps", 5, "--resume")
    card = card_of(out)
    assert card["steps"] == 5 and "--steps 3" in card["command"] and "--resume" in card["resumed_with"][0]


@pytest.fixture(scope="module")
def short_rollouts(rollouts):
    folder = rollouts.parent / "short"
    train("--stage", "rollouts", "--episodes", 2, "--episode-steps", 12, "--data", folder)
    return folder


def test_the_rnn_stage_on_rollouts_too_short_for_a_dream_start_is_a_sentence(short_rollouts, vae_path, tmp_path,
                                                                              capsys):
    with pytest.raises(SystemExit) as exit_info:
        train("--stage", "rnn", "--steps", 2, "--sequence", 8, "--batch-size", 2, "--hidden", 8, "--mixtures", 2,
              "--data", short_rollouts, "--vae", vae_path, "--out", tmp_path / "rnn.pt")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("python -m core.train world_models: ")
    assert str(wm.DREAM_START) in err and "Traceback" not in err


def test_the_rnn_stage_with_windows_longer_than_every_episode_is_a_sentence(short_rollouts, vae_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train("--stage", "rnn", "--steps", 2, "--sequence", 64, "--batch-size", 2, "--hidden", 8, "--mixtures", 2,
              "--data", short_rollouts, "--vae", vae_path, "--out", tmp_path / "rnn.pt")
    assert exit_info.value.code == 2 and "--sequence" in capsys.readouterr().err


def test_cma_es_drives_fresh_tracks_each_generation_never_the_cards():
    tracks = [wm.training_tracks(0, generation, 3) for generation in range(5)]
    assert all(len(t) == 3 for t in tracks) and len({x for t in tracks for x in t}) == 15
    assert tracks == [wm.training_tracks(0, generation, 3) for generation in range(5)]
    other_seed = {x for generation in range(5) for x in wm.training_tracks(1, generation, 3)}
    assert not other_seed & {x for t in tracks for x in t}
    assert min(min(t) for t in tracks) > wm.CARD_TRACKS + 1000


def test_the_controller_stage_in_the_real_car(tmp_path, vae_path, rnn_path):
    needs_cma()
    out = tmp_path / "controller_real.pt"
    train("--stage", "controller", "--where", "real", "--generations", 1, "--population", 2, "--trials", 1,
          "--episode-steps", 10, "--patience", 5, "--card-tracks", 1, "--card-steps", 5,
          "--vae", vae_path, "--rnn", rnn_path, "--out", out)
    card = card_of(out)
    assert "--where real" in card["command"] and card["steps"] == 1 and len(card["curve"]) == 1
    assert "CarRacing" in card["data"] and "5 steps without a new tile" in card["data"]
    assert len(card["metrics"]["real_returns"]) == 1
    assert card["curve"][0]["candidates_best"] >= card["curve"][0]["candidates_mean"]
