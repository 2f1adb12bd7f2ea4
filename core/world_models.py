"""World Models on CarRacing (Ha & Schmidhuber 2018; Foster, Generative Deep Learning 2nd ed., ch. 12).

An agent that learns a model of its world and then learns to act, even inside that model's dream:

    V  the VAE (core.vae.VAE itself): a 64x64 frame -> z, 32 numbers       (what the car sees, compressed)
    M  the MDN-RNN: an LSTM reads (z_t, a_t) and its hidden state h_t says  (what happens next, as a
       p(z_{t+1} | z_t, a_t, h_t) = prod_d sum_k pi_dk N(mu_dk, sigma_dk^2)    mixture of Gaussians per
       and the reward r_t it expects                                         dimension of z)
    C  the controller: a_t = squash(W [z_t, h_t] + b), 3 x (32 + hidden) + 3 numbers, found by CMA-ES
       (no gradients: the return of an episode is all it sees)

Four stages, each its own command with a card (python -m core.train world_models --help):

    --stage rollouts    a noisy policy drives CarRacing-v3; frames (64x64), actions, rewards -> runs/world_models/
    --stage vae         V on every frame
    --stage rnn         M on the encoded rollouts (z sampled from q(z|x) each epoch, as the paper)
    --stage controller  C by CMA-ES, --where dream (M plays the environment: batched, no physics,
                        no rendering) or --where real (CarRacing itself)

The dream: M alone can play the game. From an encoded first frame, sample z_{t+1} from the mixture,
feed it back with the controller's action, add up the rewards M predicts. The temperature tau
sharpens (tau < 1) or flattens (tau > 1) that mixture:

    pi_k ~ softmax(logit_pi / tau),   z = mu_k + sigma_k * sqrt(tau) * eps

A controller trained in a calm dream (tau small) can exploit M's mistakes; a harder dream (tau > 1)
is the paper's cure. tau = 0 is the deterministic dream: the most likely component's mean.

Scale: the paper used 10,000 rollouts, a 4-stage VAE (32-64-128-256 channels) trained 1 epoch, an
LSTM of 256 trained 20 epochs, and CMA-ES with 64 candidates x 16 episodes for 1,800 generations on
many CPUs (906 +- 21 over 100 episodes). The shipped models keep V's and M's architecture and shrink
the data and the search to what one CPU thread trains in about an hour; their cards say exactly how.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.registry import ROOT, shipped_path
from core.runtime import make_generator
from core.vae import VAE, VAEConfig, as_float

ENV_ID = "CarRacing-v3"
FRAME = 64                      # V's input: 64x64 RGB, as the paper
LATENT = 32                     # z
ACTIONS = ("steer", "gas", "brake")  # steer in [-1, 1], gas and brake in [0, 1]
MAX_EPISODE_STEPS = 1000        # CarRacing-v3's own time limit
ROLLOUTS = ROOT / "runs" / "world_models" / "rollouts"  # training data: large, never shipped
MAX_TEMPERATURE = 3.0           # above this the dream is noise: a calm-to-chaotic slider needs no more
DREAM_START = 50                # dreams start from real frames of this step: CarRacing's opening zoom is over
PAPER_RETURN = (906, 21)        # Ha & Schmidhuber 2018, table 1: mean +- std over 100 episodes
VAE_CONFIG = VAEConfig(image_size=FRAME, channels=3, latent_dim=LATENT, widths=[32, 64, 128, 256])


class EnvironmentUnavailable(ValueError):
    """CarRacing could not start (gymnasium or Box2D missing, or the simulator failed): a sentence for
    the user, like core's other ValueErrors, never a traceback."""


# --- the real environment ---------------------------------------------------------------------------

def make_env(max_steps: int = MAX_EPISODE_STEPS) -> "OneRendererAtATime":
    """CarRacing-v3, headless: observations are 96x96x3 arrays, no window is ever opened."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        import gymnasium as gym
        return OneRendererAtATime(gym.make(ENV_ID, max_episode_steps=max_steps))
    except Exception as exc:  # ImportError, Box2D's own errors, pygame's
        raise EnvironmentUnavailable(
            f"The CarRacing environment could not start ({type(exc).__name__}: {exc}). It needs "
            f"`pip install \"gymnasium[box2d]\"` (Box2D and pygame).") from None


class OneRendererAtATime:
    """A CarRacing whose reset() and step() (each draws the observation) run one at a time in this process.

    CarRacing fills its road polygons with pygame.gfxdraw, which releases the GIL and scan-converts every
    polygon in one C buffer shared by all threads (SDL_gfx's). Two users driving at once on two server
    threads then draw into each other's polygons: the physics stays the same, the pictures do not. Drawing
    takes a few milliseconds a step, so waiting for the other driver costs little. Everything else is the
    environment's own."""

    _drawing = threading.Lock()  # one per process: the buffer it guards is one per process

    def __init__(self, env):
        self.env = env

    def reset(self, **options):
        with self._drawing:
            return self.env.reset(**options)

    def step(self, action):
        with self._drawing:
            return self.env.step(action)

    def __getattr__(self, name):  # action_space, unwrapped, close, ...
        return getattr(self.env, name)


def frame_of(observation: np.ndarray) -> np.ndarray:
    """A 96x96 observation -> the 64x64 frame V sees: the top 84 rows (the dashboard below them goes,
    as in the paper), resized."""
    from PIL import Image

    return np.asarray(Image.fromarray(observation[:84]).resize((FRAME, FRAME), Image.BILINEAR))


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [N, 64, 64, 3] -> uint8 tensor [N, 3, 64, 64] (what core.vae's as_float takes)."""
    return torch.tensor(np.asarray(frames)).permute(0, 3, 1, 2).contiguous()


class NoisyPolicy:
    """The data-collecting policy: mostly gas, a steering wheel that wanders (an Ornstein-Uhlenbeck walk
    around straight ahead) and now and then the brake. Pure random actions (action_space.sample) brake
    half the time and the car hardly moves; this one drives onto and off the track, so V and M see
    both, and at many speeds."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.steer = 0.0

    def __call__(self) -> np.ndarray:
        self.steer += -0.15 * self.steer + 0.35 * self.rng.standard_normal()
        braking = self.rng.random() < 0.05
        gas = 0.0 if braking else float(self.rng.uniform(0.3, 1.0))
        return np.array([np.clip(self.steer, -1, 1), gas, 0.8 if braking else 0.0], dtype=np.float32)


def record_episode(seed: int, steps: int) -> dict[str, np.ndarray]:
    """One episode of the noisy policy on track `seed`: frames [T, 64, 64, 3] uint8 (frame t is what
    the car saw before action t), actions [T, 3], rewards [T] (after action t)."""
    env = make_env(steps)
    policy = NoisyPolicy(seed)
    observation, _ = env.reset(seed=seed)
    frames, actions, rewards = [], [], []
    for _ in range(steps):
        action = policy()
        frames.append(frame_of(observation))
        observation, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    env.close()
    return {"frames": np.stack(frames), "actions": np.stack(actions).astype(np.float32),
            "rewards": np.asarray(rewards, dtype=np.float32)}


def episode_files(folder=ROLLOUTS) -> list[Path]:
    return sorted(Path(folder).glob("episode_*.npz"))


def load_rollouts(folder=ROLLOUTS) -> list[dict[str, np.ndarray]]:
    files = episode_files(folder)
    if not files:
        raise ValueError(f"No rollouts in {folder}: make them with "
                         f"python -m core.train world_models --stage rollouts")
    return [dict(np.load(path)) for path in files]


def rollouts_record(folder=ROLLOUTS) -> dict:
    """The rollouts as a card names them: SHA-256 over every episode file's name and bytes, in order."""
    digest, size, files = hashlib.sha256(), 0, episode_files(folder)
    for path in files:
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        size += len(raw)
    card = Path(folder) / "card.json"
    made_by = json.loads(card.read_text())["command"] if card.is_file() else "unknown"
    return {"name": f"{ENV_ID} noisy-policy rollouts ({len(files)} episodes)", "source": made_by,
            "sha256": digest.hexdigest(), "bytes": size, "episodes": len(files)}


def split_episodes(episodes: list, valid_fraction: float = 0.1) -> tuple[list, list]:
    """The last tenth of the episodes (whole episodes: other tracks) validates V and M."""
    n_valid = max(1, round(len(episodes) * valid_fraction)) if len(episodes) > 1 else 0
    return episodes[:len(episodes) - n_valid], episodes[len(episodes) - n_valid:]


# --- V: the VAE ------------------------------------------------------------------------------------

@torch.no_grad()
def encode(vae: VAE, frames: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames [N, 64, 64, 3] -> (mu, logvar) [N, 32] each."""
    vae.eval()
    x = frames_to_tensor(frames)
    pieces = [vae.encode(as_float(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])


@torch.no_grad()
def decode(vae: VAE, z: torch.Tensor) -> np.ndarray:
    """Codes [N, 32] -> uint8 frames [N, 64, 64, 3]."""
    vae.eval()
    return (vae.decode(z).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


# --- M: the MDN-RNN --------------------------------------------------------------------------------

@dataclass
class RNNConfig:
    latent: int = LATENT
    actions: int = len(ACTIONS)
    hidden: int = 256    # the paper's LSTM
    mixtures: int = 5    # Gaussians per dimension of z


class Mixture(NamedTuple):
    """p(z_{t+1}) per dimension: mixture weights' logits, means, log standard deviations, each [..., K, Z]."""
    logit_pi: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor


class MDNRNN(nn.Module):
    """LSTM over [z_t, a_t]; from h_t a mixture density head predicts z_{t+1} and a linear one the reward."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.latent + config.actions, config.hidden, batch_first=True)
        self.mixture = nn.Linear(config.hidden, 3 * config.mixtures * config.latent)
        self.reward = nn.Linear(config.hidden, 1)

    def forward(self, z: torch.Tensor, actions: torch.Tensor, state=None):
        """z [B, T, Z], actions [B, T, 3] -> (Mixture over z_{t+1} [B, T, K, Z], reward [B, T], h [B, T, H],
        the LSTM state to continue from)."""
        h, state = self.lstm(torch.cat([z, actions], -1), state)
        return self.head(h) + (h, state)

    def head(self, h: torch.Tensor) -> tuple[Mixture, torch.Tensor]:
        c = self.config
        out = self.mixture(h).unflatten(-1, (3, c.mixtures, c.latent))
        mixture = Mixture(out[..., 0, :, :], out[..., 1, :, :], out[..., 2, :, :].clamp(-7, 3))
        return mixture, self.reward(h).squeeze(-1)


def initial_state(rnn: MDNRNN, batch: int = 1):
    """h_0 = c_0 = 0, as every episode of the training data starts."""
    zeros = torch.zeros(1, batch, rnn.config.hidden)
    return zeros, zeros.clone()


def component_log_probs(mixture: Mixture, z: torch.Tensor) -> torch.Tensor:
    """log pi_k + log N(z | mu_k, sigma_k^2) for every component, per dimension [..., K, Z]."""
    z = z.unsqueeze(-2)                                            # broadcast over the K components
    log_normal = (-0.5 * ((z - mixture.mu) * torch.exp(-mixture.log_sigma)) ** 2
                  - mixture.log_sigma - 0.5 * math.log(2 * math.pi))
    return F.log_softmax(mixture.logit_pi, -2) + log_normal


def mixture_log_prob(mixture: Mixture, z: torch.Tensor) -> torch.Tensor:
    """log p(z) per dimension [..., Z]:  log sum_k pi_k N(z | mu_k, sigma_k^2)."""
    return torch.logsumexp(component_log_probs(mixture, z), -2)


def check_temperature(tau) -> float:
    """tau as a float in [0, MAX_TEMPERATURE]; anything else is a sentence."""
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"The temperature must be a number, not {tau!r}.") from None
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f"The temperature must be between 0 and {MAX_TEMPERATURE}, not {tau}.")
    return min(tau, MAX_TEMPERATURE)


def sample_mixture(mixture: Mixture, tau: float, generator: torch.Generator) -> torch.Tensor:
    """One z per row from the mixture at temperature tau (per dimension: a component, then a Gaussian).

        k ~ softmax(logit_pi / tau),   z = mu_k + sigma_k * sqrt(tau) * eps
    tau = 0: the most likely component's mean, no randomness."""
    if tau == 0:
        k = mixture.logit_pi.argmax(-2, keepdim=True)
        return mixture.mu.gather(-2, k).squeeze(-2)
    gumbel = -torch.log(-torch.log(torch.rand(mixture.logit_pi.shape, generator=generator).clamp_min(1e-20)))
    k = (mixture.logit_pi / tau + gumbel).argmax(-2, keepdim=True)  # the Gumbel-max trick: k ~ softmax(logit/tau)
    eps = torch.randn(k.shape, generator=generator)
    return (mixture.mu.gather(-2, k) + mixture.log_sigma.gather(-2, k).exp() * math.sqrt(tau) * eps).squeeze(-2)


def dream_step(rnn: MDNRNN, z: torch.Tensor, action: torch.Tensor, state, tau: float,
               generator: torch.Generator):
    """One step of the dream, batched: (z_t [B, Z], a_t [B, 3], LSTM state) -> (z_{t+1} sampled [B, Z],
    the reward M expects [B], the mixture it sampled from, h_{t+1} [B, H], the new state)."""
    h, state = rnn.lstm(torch.cat([z, action], -1).unsqueeze(1), state)
    mixture, reward = rnn.head(h[:, 0])
    return sample_mixture(mixture, tau, generator), reward, mixture, h[:, 0], state


def rnn_loss(rnn: nn.Module, z: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
             reward_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Sequences z [B, T+1, Z], actions and rewards [B, T]: the negative log-likelihood of each next z
    (nats per dimension, averaged) plus the reward's squared error."""
    (mixture, reward_hat, _, _) = rnn(z[:, :-1], actions)
    nll = -mixture_log_prob(mixture, z[:, 1:]).mean()
    reward_mse = F.mse_loss(reward_hat, rewards)
    return {"loss": nll + reward_weight * reward_mse, "nll": nll, "reward_mse": reward_mse}


def reward_target(rewards: np.ndarray) -> np.ndarray:
    """What M learns to predict: CarRacing's reward with the -100 for leaving the playfield cut to -1
    (one such step would outweigh every tile in the data's squared error)."""
    return np.clip(rewards, -1.0, None)


# --- C: the controller -----------------------------------------------------------------------------

@dataclass
class ControllerConfig:
    latent: int = LATENT
    hidden: int = 256
    actions: int = len(ACTIONS)


class Controller(nn.Module):
    """a = squash(W [z, h] + b): the paper's linear controller."""

    def __init__(self, config: ControllerConfig):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.latent + config.hidden, config.actions)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return squash(self.linear(torch.cat([z, h], -1)))


def squash(raw: torch.Tensor) -> torch.Tensor:
    """Raw outputs -> CarRacing's ranges: steer = tanh in [-1, 1], gas = (tanh + 1)/2 in [0, 1],
    brake = tanh clipped to [0, 1] (so a controller can leave the brake alone)."""
    t = torch.tanh(raw)
    return torch.stack([t[..., 0], (t[..., 1] + 1) / 2, t[..., 2].clamp(0, 1)], -1)


def parameter_count(config: ControllerConfig) -> int:
    return (config.latent + config.hidden + 1) * config.actions


def batched_actions(params: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Many controllers at once, as CMA-ES proposes them: params [P, D] (each a flattened W then b),
    inputs [P, Z + H] -> actions [P, 3]."""
    n_in = z.shape[-1] + h.shape[-1]
    weight = params[:, :3 * n_in].view(-1, 3, n_in)
    bias = params[:, 3 * n_in:]
    return squash(torch.einsum("pai,pi->pa", weight, torch.cat([z, h], -1)) + bias)


def controller_from(params, config: ControllerConfig) -> Controller:
    controller = Controller(config)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(params, dtype=torch.float32), controller.parameters())
    return controller.eval()


def flat_parameters(controller: Controller) -> np.ndarray:
    return torch.nn.utils.parameters_to_vector(controller.parameters()).detach().double().numpy()


# --- driving: the real car and the dream car -------------------------------------------------------

class Step(NamedTuple):
    """One real step: what the car saw, what V made of it, the action, reward and return so far."""
    t: int
    observation: np.ndarray      # 96x96x3 as CarRacing renders it
    frame: np.ndarray            # 64x64x3, V's input
    reconstruction: np.ndarray   # 64x64x3, V's decoding of z
    z: np.ndarray                # [32]
    action: np.ndarray           # [3]
    reward: float
    total: float
    done: bool


@torch.no_grad()
def drive(vae: VAE, rnn: MDNRNN, controller: Controller | None, seed: int, max_steps: int = MAX_EPISODE_STEPS,
          actions=None, reconstruct: bool = True) -> Iterator[Step]:
    """Drive CarRacing track `seed` with the controller (or the given `actions`, one per step), step by
    step: encode the frame to z (V's mean), act on [z, h], step the environment, update h with M."""
    env = make_env(max_steps)
    try:
        observation, _ = env.reset(seed=int(seed))
        state = initial_state(rnn)
        h = torch.zeros(1, rnn.config.hidden)
        total = 0.0
        for t in range(max_steps):
            frame = frame_of(observation)
            z, _ = vae.encode(as_float(frames_to_tensor(frame[None])))
            if actions is not None:
                if t >= len(actions):
                    return
                action = torch.as_tensor(np.asarray(actions[t], dtype=np.float32))[None]
            else:
                action = controller(z, h)
            shown = observation
            observation, reward, terminated, truncated, _ = env.step(action[0].numpy())
            total += float(reward)
            _, state = rnn.lstm(torch.cat([z, action], -1).unsqueeze(1), state)
            h = state[0][0]
            yield Step(t, shown, frame, decode(vae, z)[0] if reconstruct else None, z[0].numpy(),
                       action[0].numpy(), float(reward), total, terminated or truncated)
            if terminated or truncated:
                return
    finally:
        env.close()


def episode_return(vae, rnn, controller, seed: int, max_steps: int = MAX_EPISODE_STEPS,
                   patience: int | None = None) -> float:
    """The return of one real episode. With `patience`, the episode ends early once that many steps
    pass without a new track tile (the car is off the track or stopped): CMA-ES then spends no time on
    a hopeless candidate. (A tile is worth +1000/N, every step -0.1, so a positive reward means a tile.)"""
    total, since_tile = 0.0, 0
    for step in drive(vae, rnn, controller, seed, max_steps, reconstruct=False):
        total = step.total
        since_tile = 0 if step.reward > 0 else since_tile + 1
        if patience and since_tile >= patience:
            break
    return total


@torch.no_grad()
def dream_returns(rnn: MDNRNN, params: torch.Tensor, z0: torch.Tensor, steps: int, tau: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Every candidate controller (params [P, D]) plays every dream start (z0 [S, Z]) for `steps` steps
    inside M, all P x S dreams in one batch; the return of each is the sum of the rewards M predicts.
    Returns [P, S]."""
    p, s = len(params), len(z0)
    params = params.repeat_interleave(s, 0)
    z = z0.repeat(p, 1)
    state = initial_state(rnn, p * s)
    h = torch.zeros(p * s, rnn.config.hidden)
    total = torch.zeros(p * s)
    for _ in range(steps):
        action = batched_actions(params, z, h)
        z, reward, _, h, state = dream_step(rnn, z, action, state, tau, generator)
        total += reward
    return total.view(p, s)


class Dream:
    """One dreamer's state (the tab keeps one per session in gr.State): z, the LSTM state and its own
    random stream. `step(action)` advances the dream one frame."""

    def __init__(self, rnn: MDNRNN, z0: torch.Tensor, seed: int, label: str = "dream"):
        self.rnn, self.label = rnn, label
        self.z = z0.reshape(1, -1).float()
        self.state = initial_state(rnn)
        self.h = torch.zeros(1, rnn.config.hidden)
        self.generator = make_generator(seed)
        self.total = 0.0
        self.t = 0

    @torch.no_grad()
    def step(self, action, tau: float) -> tuple[torch.Tensor, float, Mixture]:
        """-> (z_{t+1} [Z], the reward M expects, the mixture z_{t+1} was drawn from [K, Z])."""
        action = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        self.z, reward, mixture, self.h, self.state = dream_step(self.rnn, self.z, action, self.state,
                                                                 check_temperature(tau), self.generator)
        self.total += float(reward)
        self.t += 1
        return self.z[0], float(reward), Mixture(*(m[0] for m in mixture))


class DreamCheck(NamedTuple):
    """The dream against reality, same track, same actions (what the tab's "why it works" draws)."""
    real_frames: np.ndarray       # [T, 64, 64, 3] what the car saw
    real_z: torch.Tensor          # [T, Z] V's means of those frames
    actions: torch.Tensor         # [T, 3] what the controller did
    predicted: Mixture            # [T-1, K, Z]: M's p(z_t+1) from the real history up to t
    dream_z: torch.Tensor         # [T, Z]: from `start` on, M's own samples fed back (before it: the real z)
    start: int


def mixture_mean(mixture: Mixture) -> torch.Tensor:
    """E[z] under the mixture: sum_k pi_k mu_k, per dimension."""
    return (F.softmax(mixture.logit_pi, -2) * mixture.mu).sum(-2)


@torch.no_grad()
def check_dream(vae: VAE, rnn: MDNRNN, controller: Controller, track: int, steps: int, tau: float, seed: int,
                start: int = DREAM_START) -> DreamCheck:
    """Drive `steps` real steps of track `track`, then ask M two questions about the same actions:
    one step ahead (teacher forcing: M reads the real z's and predicts each next one), and open loop
    (from the real step `start`, with the LSTM state the real history gave it, M dreams on alone at
    temperature tau while being fed the actions the real car took)."""
    tau = check_temperature(tau)
    record = list(drive(vae, rnn, controller, track, steps, reconstruct=False))
    if len(record) <= start + 1:
        raise ValueError(f"The episode ended after {len(record)} steps: compare at least {start + 2}.")
    real_z = torch.as_tensor(np.stack([r.z for r in record]))
    actions = torch.as_tensor(np.stack([r.action for r in record]))
    predicted, _, _, _ = rnn(real_z[None, :-1], actions[None, :-1])
    _, _, _, state = rnn(real_z[None, :start], actions[None, :start])  # M's memory of the real history
    generator = make_generator(seed)
    z, dream = real_z[start][None], [real_z[:start + 1]]
    for t in range(start, len(record) - 1):
        z, _, _, _, state = dream_step(rnn, z, actions[t][None], state, tau, generator)
        dream.append(z)
    return DreamCheck(np.stack([r.frame for r in record]), real_z, actions, Mixture(*(m[0] for m in predicted)),
                      torch.cat(dream), start)


# --- the shipped models ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_vae() -> VAE:
    from core.checkpoints import build_model, load_shipped

    return build_model(load_shipped("world_models", "vae"), VAE, VAEConfig)


@functools.lru_cache(maxsize=None)
def load_rnn() -> MDNRNN:
    from core.checkpoints import build_model, load_shipped

    return build_model(load_shipped("world_models", "rnn"), MDNRNN, RNNConfig)


@functools.lru_cache(maxsize=None)
def load_controller(where: str = "real") -> Controller:
    from core.checkpoints import build_model, load_shipped

    return build_model(load_shipped("world_models", f"controller_{where}"), Controller, ControllerConfig)


def dream_starts(name: str = "rnn") -> torch.Tensor:
    """The z the shipped M keeps for dreams to start from: every rollout's frame at step DREAM_START (the
    opening zoom over, the car on the track). M starts from h = 0 there: it was trained on windows that
    start anywhere in an episode, each from h = 0."""
    from core.checkpoints import load_shipped

    return load_shipped("world_models", name).extras["dream_starts"]


# --- python -m core.train world_models --stage ... -------------------------------------------------

def add_train_arguments(parser) -> None:
    parser.add_argument("--stage", required=True, choices=("rollouts", "vae", "rnn", "controller"))
    parser.add_argument("--data", default=str(ROLLOUTS), help="the rollouts folder (written by --stage rollouts)")
    parser.add_argument("--episodes", type=int, default=120, help="rollouts: episodes (tracks --seed, --seed + 1, ...)")
    parser.add_argument("--steps", type=int, default=3000, help="rnn: optimizer steps")
    parser.add_argument("--epochs", type=int, default=4, help="vae: passes over every frame")
    parser.add_argument("--batch-size", type=int, default=64, help="vae: frames; rnn: sequences per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=1.0, help="vae: weight of the KL term")
    parser.add_argument("--hidden", type=int, default=RNNConfig.hidden, help="rnn: LSTM width")
    parser.add_argument("--mixtures", type=int, default=RNNConfig.mixtures, help="rnn: Gaussians per dimension")
    parser.add_argument("--sequence", type=int, default=64, help="rnn: steps per training sequence")
    parser.add_argument("--where", choices=("dream", "real"), default="dream", help="controller: where CMA-ES tries it")
    parser.add_argument("--init-from", default=None, help="controller: start CMA-ES from this controller checkpoint")
    parser.add_argument("--generations", type=int, default=100, help="controller: CMA-ES generations")
    parser.add_argument("--population", type=int, default=32, help="controller: candidates per generation")
    parser.add_argument("--trials", type=int, default=8,
                        help="controller: episodes (dream starts or tracks) per candidate")
    parser.add_argument("--sigma", type=float, default=0.1, help="controller: CMA-ES's first step size")
    parser.add_argument("--temperature", type=float, default=1.15,
                        help="controller in the dream: M's tau (the paper's 1.15)")
    parser.add_argument("--episode-steps", type=int, default=300,
                        help="rollouts: steps per episode; controller: steps per dream or real episode")
    parser.add_argument("--patience", type=int, default=60, help="controller, real: end an episode after this many "
                        "steps without a new tile (0: never)")
    parser.add_argument("--workers", type=int, default=1,
                        help="controller, real: processes that drive episodes at once")
    parser.add_argument("--card-tracks", type=int, default=5, help="controller: real tracks its card reports")
    parser.add_argument("--card-steps", type=int, default=MAX_EPISODE_STEPS, help="controller: steps of those episodes")
    parser.add_argument("--vae", default=str(shipped_path("world_models", "vae")), help="rnn, controller: V")
    parser.add_argument("--rnn", default=str(shipped_path("world_models", "rnn")), help="controller: M")


def train_main(args) -> Path:
    from core.engine import world

    if args.stage in ("rollouts", "controller") and world()[1] > 1:
        raise ValueError(f"--stage {args.stage} runs in one process (CarRacing episodes spread over --workers "
                         f"processes of their own); start it without torchrun.")
    return {"rollouts": train_rollouts, "vae": train_vae, "rnn": train_rnn,
            "controller": train_controller}[args.stage](args)


def _environment_record() -> str:
    import gymnasium

    return f"gymnasium {gymnasium.__version__} {ENV_ID}"


def train_rollouts(args) -> Path:
    """Episodes --seed ... --seed + episodes - 1, one .npz each (resumable: a finished episode is kept)."""
    from core.checkpoints import command_history, make_card

    folder = Path(args.data)
    if episode_files(folder) and not args.resume:
        raise ValueError(f"{folder} already holds rollouts: add --resume to finish them, or choose another --data.")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    card_path = folder / "card.json"
    earlier = json.loads(card_path.read_text()) if args.resume and card_path.is_file() else {}
    commands = command_history(args, {"commands": [earlier["command"], *earlier.get("resumed_with", [])]}
                               if earlier else None)
    for i in range(args.episodes):
        if args.minutes and time.monotonic() - started > 60 * args.minutes:
            break
        path = folder / f"episode_{args.seed + i:05d}.npz"
        if not path.is_file():
            episode = record_episode(args.seed + i, args.episode_steps)
            partial = path.with_name(path.name + ".tmp")  # renamed when whole: a killed run leaves no half episode
            with open(partial, "wb") as file:
                np.savez_compressed(file, **episode)
            os.replace(partial, path)
            print(f"episode {args.seed + i}: {len(episode['actions'])} steps, return {episode['rewards'].sum():.1f}",
                  flush=True)
    episodes = load_rollouts(folder)
    returns = [float(e["rewards"].sum()) for e in episodes]
    card = make_card(commands=commands, data=f"{ENV_ID} episodes of the noisy policy, tracks {args.seed} and up",
                     wall_time_s=earlier.get("wall_time_s", 0) + time.monotonic() - started,
                     environment=_environment_record(),
                     policy="core.world_models.NoisyPolicy: gas, a wandering wheel, now and then the brake",
                     episodes=len(episodes), steps=int(sum(len(e["actions"]) for e in episodes)),
                     mean_return=round(float(np.mean(returns)), 1),
                     frame=f"{FRAME}x{FRAME} RGB (top 84 rows of 96, resized)")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return folder


def _frames_of(episodes) -> torch.Tensor:
    return frames_to_tensor(np.concatenate([e["frames"] for e in episodes]))


def train_vae(args) -> Path:
    """V: core.vae's VAE and epoch loop on every frame of the rollouts (Bernoulli pixels, beta * KL)."""
    from core.engine import TrainingRun
    from core.vae import evaluate, fit_epochs, vae_loss

    out = Path(args.out or shipped_path("world_models", "vae"))
    run = TrainingRun(args, out, global_batch=args.batch_size)
    train_episodes, valid_episodes = split_episodes(load_rollouts(args.data))
    if not valid_episodes:
        raise ValueError("V needs at least two episodes of rollouts: the last tenth (at least one) validates it.")
    train_x, valid_x = _frames_of(train_episodes), _frames_of(valid_episodes)
    model = VAE(VAE_CONFIG).to(run.device)
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
    run.log(f"world models V: {len(train_x)} training frames, {len(valid_x)} validation frames")
    curves = fit_epochs(run, model, train_x, functools.partial(vae_loss, beta=args.beta), epochs=args.epochs,
                        lr=args.lr, desc="world models V",
                        validate=lambda: {k: round(v, 2) for k, v in evaluate(model, valid_x[:2000]).items()})
    model.eval()
    metrics = {**evaluate(model, valid_x), "mse_per_pixel": round(reconstruction_mse(model, valid_x), 5)}
    card = run.card(model=model, data=f"{len(train_episodes)} training and {len(valid_episodes)} validation "
                    f"episodes of the rollouts; every frame", corpus=rollouts_record(args.data), metrics=metrics,
                    training=f"negative ELBO (Bernoulli pixels + {args.beta} x KL), Adam lr {args.lr}, "
                             f"{args.batch_size} frames per step, {args.epochs} epochs", curve=curves)
    path = run.save_model(model, VAE_CONFIG, card, half=True)
    run.finish()
    return path


@torch.no_grad()
def reconstruction_mse(vae: VAE, frames: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared error per pixel (0..1 scale) of V's mean reconstruction of uint8 frames [N, 3, 64, 64]."""
    vae.eval()
    total = 0.0
    for i in range(0, len(frames), batch_size):
        x = as_float(frames[i:i + batch_size])
        total += F.mse_loss(vae.decode(vae.encode(x)[0]), x, reduction="sum").item()
    return total / frames.numel()


def encoded_episodes(vae: VAE, episodes) -> list[dict[str, torch.Tensor]]:
    """Each episode as M reads it: mu, logvar [T, Z], actions [T, 3], rewards [T] (reward_target)."""
    out = []
    for e in episodes:
        mu, logvar = encode(vae, e["frames"])
        out.append({"mu": mu, "logvar": logvar, "actions": torch.from_numpy(e["actions"]),
                    "rewards": torch.from_numpy(reward_target(e["rewards"]))})
    return out


def sequence_batch(episodes, length: int, batch_size: int, generator: torch.Generator):
    """Random windows of `length` steps: z [B, L+1, Z] sampled from q(z|x) (a fresh z every time, as
    the paper: M must not rely on details V itself is unsure of), actions and rewards [B, L]."""
    usable = [e for e in episodes if len(e["actions"]) > length]
    picks = torch.randint(len(usable), (batch_size,), generator=generator)
    zs, actions, rewards = [], [], []
    for i in picks.tolist():
        e = usable[i]
        start = int(torch.randint(len(e["actions"]) - length, (1,), generator=generator))
        window = slice(start, start + length + 1)
        mu, logvar = e["mu"][window], e["logvar"][window]
        zs.append(mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator))
        actions.append(e["actions"][start:start + length])
        rewards.append(e["rewards"][start:start + length])
    return torch.stack(zs), torch.stack(actions), torch.stack(rewards)


@torch.no_grad()
def rnn_validation(rnn: MDNRNN, episodes) -> dict[str, float]:
    """On whole validation episodes, z = V's mean: M's negative log-likelihood of each next z (nats per
    dimension and per step), and the reward's mean squared error."""
    was_training = rnn.training
    rnn.eval()
    nll, mse, n = 0.0, 0.0, 0
    for e in episodes:
        terms = rnn_loss(rnn, e["mu"][None], e["actions"][None, :-1], e["rewards"][None, :-1])
        steps = len(e["actions"]) - 1
        nll += terms["nll"].item() * steps
        mse += terms["reward_mse"].item() * steps
        n += steps
    rnn.train(was_training)
    return {"nll_per_dim": round(nll / n, 4), "nll_per_step": round(nll / n * rnn.config.latent, 2),
            "reward_mse": round(mse / n, 4)}


def _checkpoint_record(path) -> dict:
    from core.checkpoints import file_sha256, load_checkpoint

    path = Path(path)
    card = load_checkpoint(path).card
    return {"name": path.name, "sha256": file_sha256(path),
            "command": card.get("command"), "wall_time_s": card.get("wall_time_s")}


def train_rnn(args) -> Path:
    """M on the encoded rollouts: Adam, random windows of --sequence steps, gradients clipped."""
    from core.checkpoints import build_model, load_checkpoint
    from core.engine import TrainingRun

    out = Path(args.out or shipped_path("world_models", "rnn"))
    run = TrainingRun(args, out, global_batch=args.batch_size)
    vae = build_model(load_checkpoint(args.vae), VAE, VAEConfig)
    train_episodes, valid_episodes = split_episodes(load_rollouts(args.data))
    if not valid_episodes or not any(len(e["actions"]) > max(args.sequence, DREAM_START) for e in train_episodes):
        raise ValueError(f"M needs at least two episodes, and training episodes longer than --sequence "
                         f"({args.sequence}) and than {DREAM_START} steps (where dreams start): record longer ones.")
    train_set, valid_set = encoded_episodes(vae, train_episodes), encoded_episodes(vae, valid_episodes)
    config = RNNConfig(hidden=args.hidden, mixtures=args.mixtures)
    rnn = MDNRNN(config).to(run.device)
    network = run.wrap(rnn)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=args.lr)
    state = run.resumed
    if state:
        rnn.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    curve = state["curve"] if state else []
    generator = run.generator("windows and z")
    run.log(f"world models M: {sum(p.numel() for p in rnn.parameters()) / 1e6:.2f}M parameters, "
            f"{len(train_set)} training episodes, {len(valid_set)} validation")

    def events():
        for step in range(run.step + 1, args.steps + 1):
            batch = sequence_batch(train_set, args.sequence, run.batch, generator)
            z, actions, rewards = (t.to(run.device) for t in batch)
            terms = rnn_loss(network, z, actions, rewards)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(rnn.parameters(), 1.0)
            optimizer.step()
            yield {"step": step, **{k: v.item() for k, v in terms.items()}}

    def save() -> None:
        run.save_state({"model": rnn.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve})

    for event in run.loop(events(), save, total=args.steps, desc="world models M"):
        if event["step"] % 250 == 0:
            curve.append({"step": event["step"], "wall_s": round(run.elapsed_s, 1), "train_nll": round(event["nll"], 4),
                          **{f"valid_{k}": v for k, v in rnn_validation(rnn, valid_set).items()}})
            run.log(f"step {event['step']}: {curve[-1]}")
    rnn.eval()
    metrics = {**rnn_validation(rnn, valid_set), "parameters": sum(p.numel() for p in rnn.parameters())}
    starts = torch.stack([e["mu"][DREAM_START] for e in train_set + valid_set if len(e["mu"]) > DREAM_START])
    card = run.card(model=rnn, data=f"the rollouts encoded by V ({_checkpoint_record(args.vae)['name']}): "
                    f"{len(train_set)} training and {len(valid_set)} validation episodes",
                    corpus=rollouts_record(args.data), vae=_checkpoint_record(args.vae), metrics=metrics,
                    training=f"negative log-likelihood of z_t+1 (z sampled from q(z|x)) + reward squared error, "
                             f"Adam lr {args.lr}, {args.batch_size} windows of {args.sequence} steps, "
                             f"gradients clipped to norm 1", curve=curve, dream_starts=len(starts))
    path = run.save_model(rnn, config, card, extras={"dream_starts": starts}, half=True)
    run.finish()
    return path


# The real environment's workers: each process loads V and M once, then drives the episodes it is sent.
_worker_models: dict = {}


def _start_worker(vae_path: str, rnn_path: str) -> None:
    from core.checkpoints import build_model, load_checkpoint

    torch.set_num_threads(1)
    _worker_models.update(vae=build_model(load_checkpoint(vae_path), VAE, VAEConfig),
                          rnn=build_model(load_checkpoint(rnn_path), MDNRNN, RNNConfig))


def _worker_return(params: np.ndarray, config: dict, seed: int, max_steps: int, patience: int | None) -> float:
    controller = controller_from(params, ControllerConfig(**config))
    return episode_return(_worker_models["vae"], _worker_models["rnn"], controller, seed, max_steps, patience)


FIRST_TRAINING_TRACK = 1_000_000  # CMA-ES's tracks start here: no card's or bench's track is one of them


def training_tracks(seed: int, generation: int, trials: int) -> list[int]:
    """The tracks a real-environment CMA-ES generation drives (fresh ones each generation)."""
    first = FIRST_TRAINING_TRACK + 100_000 * seed + trials * generation
    return list(range(first, first + trials))


class RealJudge:
    """Fitness in CarRacing itself: the mean return of each candidate on the same `trials` tracks (the
    same tracks for every candidate of a generation, new ones each generation), over `workers` processes."""

    def __init__(self, args, config: ControllerConfig):
        import concurrent.futures
        import multiprocessing

        self.args, self.config = args, asdict(config)
        if args.workers > 1:
            self.pool = concurrent.futures.ProcessPoolExecutor(
                args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                initargs=(args.vae, args.rnn))
        else:
            self.pool = None
            _start_worker(args.vae, args.rnn)

    def __call__(self, candidates: np.ndarray, generation: int) -> np.ndarray:
        a = self.args
        seeds = training_tracks(a.seed, generation, a.trials)
        jobs = [(p, self.config, s, a.episode_steps, a.patience) for p in candidates for s in seeds]
        returns = (list(self.pool.map(_worker_return, *zip(*jobs))) if self.pool
                   else [_worker_return(*job) for job in jobs])
        return np.asarray(returns).reshape(len(candidates), a.trials).mean(1)

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


class DreamJudge:
    """Fitness inside M: every candidate plays `trials` dreams from real frames at step DREAM_START (the
    same starts for every candidate of a generation), all in one batch, at temperature tau."""

    def __init__(self, args, rnn: MDNRNN, starts: torch.Tensor, generator: torch.Generator):
        self.args, self.rnn, self.starts, self.generator = args, rnn, starts, generator
        self.tau = check_temperature(args.temperature)

    def __call__(self, candidates: np.ndarray, generation: int) -> np.ndarray:
        picks = torch.randint(len(self.starts), (self.args.trials,), generator=self.generator)
        returns = dream_returns(self.rnn, torch.as_tensor(candidates, dtype=torch.float32), self.starts[picks],
                                self.args.episode_steps, self.tau, self.generator)
        return returns.mean(1).numpy()

    def close(self) -> None:
        pass


def real_returns(vae, rnn, controller, seeds, max_steps: int = MAX_EPISODE_STEPS) -> list[float]:
    """Whole episodes (up to 1,000 steps, no early end) on the given tracks: how the bench and cards judge."""
    return [round(episode_return(vae, rnn, controller, s, max_steps), 1) for s in seeds]


CARD_TRACKS = 10_000   # the card's real tracks are seeds 10,000, 10,001, ... (the bench uses 20 others)


def train_controller(args) -> Path:
    """C by CMA-ES (the `cma` package): ask for a population, judge each candidate by its mean return
    (in the dream or the real car), tell CMA-ES the negated returns (it minimises), repeat. The shipped
    controller is CMA-ES's mean, not the luckiest candidate: with returns this noisy, the best single
    score of a generation flatters its owner. A resumed run restarts CMA-ES from the saved mean and
    step size (its covariance is not kept: the resume state holds tensors only)."""
    import cma
    from core.checkpoints import build_model, load_checkpoint
    from core.engine import TrainingRun

    out = Path(args.out or shipped_path("world_models", f"controller_{args.where}"))
    run = TrainingRun(args, out)
    vae = build_model(load_checkpoint(args.vae), VAE, VAEConfig)
    rnn_checkpoint = load_checkpoint(args.rnn)
    rnn = build_model(rnn_checkpoint, MDNRNN, RNNConfig)
    config = ControllerConfig(hidden=rnn.config.hidden)
    state = run.resumed
    init = None
    if state:
        x0, sigma, curve = state["mean"].numpy(), float(state["sigma"]), state["curve"]
        init = state.get("init")
    else:
        x0, sigma, curve = np.zeros(parameter_count(config)), args.sigma, []
        if args.init_from:
            init = _checkpoint_record(args.init_from)
            x0 = flat_parameters(build_model(load_checkpoint(args.init_from), Controller, ControllerConfig))
    es = cma.CMAEvolutionStrategy(x0, sigma, {"popsize": args.population, "seed": args.seed + 1 + run.step,
                                              "verbose": -9})
    judge = (DreamJudge(args, rnn, rnn_checkpoint.extras["dream_starts"], run.generator("dream starts and noise"))
             if args.where == "dream" else RealJudge(args, config))
    run.log(f"world models C: {parameter_count(config)} parameters, CMA-ES {args.population} candidates x "
            f"{args.trials} {'dreams' if args.where == 'dream' else 'tracks'} per generation, in the {args.where}")

    def events():
        for generation in range(run.step, args.generations):
            candidates = np.asarray(es.ask())
            returns = judge(candidates, generation)
            es.tell(list(candidates), list(-returns))
            yield {"step": generation + 1, "mean_return": float(returns.mean()), "best": float(returns.max())}

    def save() -> None:
        run.save_state({"mean": torch.as_tensor(es.mean), "sigma": float(es.sigma), "curve": curve,
                        **({"init": init} if init else {})})

    try:
        for event in run.loop(events(), save, total=args.generations, desc=f"world models C ({args.where})"):
            curve.append({"generation": event["step"], "wall_s": round(run.elapsed_s, 1),
                          "candidates_mean": round(event["mean_return"], 2), "candidates_best": round(event["best"], 2),
                          "sigma": round(float(es.sigma), 4)})
            if args.where == "dream" and event["step"] % 10 == 0:  # the mean itself, in fresh dreams (cheap)
                curve[-1]["mean_in_dream"] = round(float(judge(es.mean[None], event["step"])[0]), 2)
            run.log(f"generation {event['step']}: {curve[-1]}")
    finally:
        judge.close()
    controller = controller_from(es.mean, config)
    run.log("judging the mean controller on the card's real tracks")
    tracks = range(CARD_TRACKS, CARD_TRACKS + args.card_tracks)
    returns = real_returns(vae, rnn, controller, tracks, args.card_steps)
    metrics = {"real_returns": returns, "real_mean_return": round(float(np.mean(returns)), 1) if returns else None,
               "real_tracks": f"seeds {tracks.start}..{tracks.stop - 1}, whole episodes ({args.card_steps} steps)",
               "parameters": parameter_count(config)}
    where = (f"the dream: M at temperature {args.temperature}, {args.trials} dreams of {args.episode_steps} steps "
             f"from real frames of step {DREAM_START} per candidate" if args.where == "dream" else
             f"CarRacing: {args.trials} track(s) per candidate, the same for a generation, episodes of at most "
             f"{args.episode_steps} steps, ended after {args.patience} steps without a new tile")
    card = run.card(model=controller, data=f"no data: CMA-ES tries controllers in {where}",
                    vae=_checkpoint_record(args.vae), rnn=_checkpoint_record(args.rnn), metrics=metrics,
                    environment=_environment_record(),
                    training=f"CMA-ES (cma {cma.__version__}), {args.population} candidates, first step size "
                             f"{args.sigma}, {run.step} generations; shipped: CMA-ES's mean",
                    curve=curve, **({"init_from": init} if init else {}))
    path = run.save_model(controller, config, card)
    run.finish()
    return path
