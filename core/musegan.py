"""MuseGAN (Dong et al. 2018; Foster, Generative Deep Learning ch. 11) on Bach chorales.

The generator writes four voices (soprano, alto, tenor, bass), bar by bar, each bar 16
sixteenth-note steps x 84 pitch classes (class 0 = rest). It takes four kinds of noise, so a
student can change one and hear what it controls:

    chords  (B, z)       one vector for the whole piece   -> a temporal network -> one per bar
    style   (B, z)       one vector for the whole piece, used as is in every bar and voice
    melody  (B, 4, z)    one vector per voice             -> a temporal network per voice -> one per bar
    groove  (B, 4, z)    one vector per voice, used as is in every bar

For bar b and voice v the bar generator of v sees [chords_b, style, melody_b,v, groove_v].
The temporal networks are small GRUs rolled out for as many bars as asked, so the number of
bars is chosen at generation time (the model was trained on 2-, 4- and 8-bar phrases).

The critic is a 3-D convolution over (bars, steps, pitches) with the voices as channels,
pooled over bars so it accepts any phrase length. Training is WGAN-GP: 5 critic steps per
generator step, gradient-penalty weight 10.

After the networks come the plain-music helpers: argmax to a piano roll, roll <-> pretty_midi
MIDI, roll -> music21 score (MusicXML). MIDI -> audio is core.audio (FluidSynth with a General MIDI
SoundFont, so each voice sounds as its instrument; pretty_midi's additive synthesis, one tone for all,
where FluidSynth is missing).

    python -m core.train musegan --minutes 80 --threads 1       # writes assets/checkpoints/musegan/chorales.pt
    python -m core.train musegan --init-from assets/checkpoints/musegan/chorales.pt --fragment-weight 20 \
        --lr 5e-4 --minutes 45 --threads 1 --out runs/tuned.pt  # fine-tune: that generator, a fresh critic
    torchrun --nproc_per_node=2 -m core.train musegan --out runs/two.pt   # each batch split between 2 processes

The generator runs on any device; noise is drawn on the CPU and piano rolls come back to the CPU.
"""
from __future__ import annotations

import copy
import functools
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data import chorales as data

INPUT_KINDS = ("chords", "style", "melody", "groove")
MAX_BARS = 16
TRAIN_LENGTHS = ((2, 16), (4, 8), (8, 4))  # (bars, batch size): every batch holds 32 bars
BARS_PER_BATCH = 32
VOICE_ORDER_WEIGHT = 20.0  # see train()


@dataclass
class MuseGANConfig:
    n_tracks: int = data.N_TRACKS
    n_steps: int = data.STEPS_PER_BAR
    n_pitches: int = data.N_PITCHES
    z_dim: int = 32
    temporal_hidden: int = 128
    bar_channels: int = 64        # width of each bar generator
    critic_channels: int = 32


# --- generator ---------------------------------------------------------------------------

class TemporalNetwork(nn.Module):
    """One vector for a whole piece -> one vector per bar, so bars evolve but stay related."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.start = nn.Linear(z_dim, hidden)
        self.cell = nn.GRUCell(z_dim, hidden)
        self.out = nn.Linear(hidden, z_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, n_bars, z): the piece's vector at every bar (the same one, except in an interpolation)."""
        h = torch.tanh(self.start(z[:, 0]))
        bars = []
        for bar in range(z.shape[1]):
            h = self.cell(z[:, bar], h)
            bars.append(self.out(h))
        return torch.stack(bars, dim=1)  # (B, n_bars, z)


class Upsample(nn.Module):
    """A transposed convolution whose kernel equals its stride, along one axis: each position's
    features become `factor` new positions. That is one linear map per position, written as
    nn.Linear because it runs several times faster on a CPU than ConvTranspose2d."""

    def __init__(self, c_in: int, c_out: int, factor: int, last: bool = False):
        super().__init__()
        self.factor, self.c_out = factor, c_out
        self.linear = nn.Linear(c_in, factor * c_out)
        self.norm = None if last else nn.Sequential(nn.BatchNorm1d(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (N, positions, c_in)
        x = self.linear(x).view(x.shape[0], -1, self.c_out)
        if self.norm is not None:
            x = self.norm(x.reshape(-1, self.c_out)).view(x.shape)
        return x                                           # (N, positions * factor, c_out)


class BarGenerator(nn.Module):
    """The four inputs of one bar of one voice -> pitch logits (16 steps, 84 pitches).

    As in the book: time grows 1 -> 2 -> 4 -> 8 -> 16 steps, then each step's features grow
    into 7 octaves and each octave into 12 semitones, so the last layer learns one pattern
    per octave."""

    def __init__(self, cfg: MuseGANConfig):
        super().__init__()
        c = cfg.bar_channels
        self.time = nn.Sequential(Upsample(4 * cfg.z_dim, c, 2), Upsample(c, c, 2),
                                  Upsample(c, c // 2, 2), Upsample(c // 2, c // 2, 2))
        self.octaves = Upsample(c // 2, c // 4, 7)
        self.semitones = Upsample(c // 4, 1, 12, last=True)
        self.n_steps = cfg.n_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (N, 4 z)
        steps = self.time(x[:, None])                      # (N, 16, c/2)
        n = steps.shape[0]
        pitches = self.semitones(self.octaves(steps.reshape(n * self.n_steps, 1, -1)))
        return pitches.view(n, self.n_steps, -1)           # (N, 16, 84)


def by_bar(x: torch.Tensor, n_bars: int, per_piece_dims: int) -> torch.Tensor:
    """An input given per piece (..., z) or per bar (..., n_bars, z) -> per bar."""
    if x.dim() == per_piece_dims:
        return x.unsqueeze(-2).expand(*x.shape[:-1], n_bars, x.shape[-1])
    if x.dim() != per_piece_dims + 1 or x.shape[-2] != n_bars:
        raise ValueError(f"An input of shape {tuple(x.shape)} fits neither one piece nor {n_bars} bars.")
    return x


class Generator(nn.Module):
    def __init__(self, cfg: MuseGANConfig):
        super().__init__()
        self.cfg = cfg
        self.chords_net = TemporalNetwork(cfg.z_dim, cfg.temporal_hidden)
        self.melody_nets = nn.ModuleList(TemporalNetwork(cfg.z_dim, cfg.temporal_hidden) for _ in range(cfg.n_tracks))
        self.bar_generators = nn.ModuleList(BarGenerator(cfg) for _ in range(cfg.n_tracks))

    def forward(self, chords, style, melody, groove, n_bars: int) -> torch.Tensor:
        """Pitch logits (B, tracks, bars, steps, pitches).

        Each input is given per piece (chords, style (B, z); melody, groove (B, tracks, z)) or, to walk
        it while the music plays on, per bar (one more dimension, n_bars, before z)."""
        chords, style = (by_bar(x, n_bars, 2) for x in (chords, style))            # (B, bars, z)
        melody, groove = (by_bar(x, n_bars, 3) for x in (melody, groove))          # (B, tracks, bars, z)
        batch, z = style.shape[0], style.shape[-1]
        chords_by_bar = self.chords_net(chords)                                    # (B, bars, z)
        voices = []
        for v, (melody_net, bar_generator) in enumerate(zip(self.melody_nets, self.bar_generators)):
            melody_by_bar = melody_net(melody[:, v])
            bar_inputs = torch.cat([chords_by_bar, style, melody_by_bar, groove[:, v]], dim=-1)
            logits = bar_generator(bar_inputs.reshape(batch * n_bars, 4 * z))
            voices.append(logits.view(batch, n_bars, self.cfg.n_steps, self.cfg.n_pitches))
        return torch.stack(voices, dim=1)


def pitch_classes_used(x: torch.Tensor) -> torch.Tensor:
    """(B, tracks, bars, steps, pitches) -> (B, tracks, bars, 12): how surely each voice sounds each
    pitch class (C, C#, ...) somewhere in each bar; for one-hot rolls 1 or 0. Octaves are folded,
    steps maxed over, rests ignored."""
    b, t, bars, steps, pitches = x.shape
    sounding = F.pad(x[..., 1:], (0, 1))  # class k is MIDI 23 + k: 83 pitches from C1, padded to 7 whole octaves
    return sounding.reshape(b, t, bars, steps, pitches // 12, 12).sum(4).amax(3)


class Critic(nn.Module):
    """Scores a phrase (B, tracks, bars, steps, pitches); the voices are the input channels.

    The book's critic is a stack of Conv3D layers over (bars, steps, pitches) whose kernels
    equal their strides, so each is a linear map on non-overlapping blocks. We apply those maps
    directly to reshaped blocks (same function, much faster on a CPU): 12 semitones x 4 voices
    -> features per octave; 7 octaves -> features per step; steps in blocks of 2, 2 and 4 ->
    one feature vector per bar. Beside them, each bar gets features of which pitch classes each
    voice used (pitch_classes_used), so the critic can compare a bar's pitch content with Bach's
    without assembling it from 16 separate steps. A 1-D convolution across neighbouring bars then
    sees how bars follow each other. Averaging over bars lets one critic judge phrases of any
    length >= 2."""

    def __init__(self, cfg: MuseGANConfig):
        super().__init__()
        c = cfg.critic_channels
        self.cfg = cfg
        act = lambda: nn.LeakyReLU(0.2)
        self.semitones = nn.Sequential(nn.Linear(12 * 2 * cfg.n_tracks, c), act())
        self.octaves = nn.Sequential(nn.Linear(7 * c, c), act())
        self.steps = nn.ModuleList([nn.Sequential(nn.Linear(2 * c, c), act()), nn.Sequential(nn.Linear(2 * c, c), act()),
                                    nn.Sequential(nn.Linear(4 * c, 2 * c), act())])
        self.pitch_classes = nn.Sequential(nn.Linear(12 * cfg.n_tracks, c), act())
        self.across_bars = nn.Sequential(nn.Conv1d(3 * c, 2 * c, 2), act())
        self.score = nn.Linear(5 * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, bars, steps, pitches = x.shape
        used = self.pitch_classes(pitch_classes_used(x).permute(0, 2, 1, 3).reshape(b, bars, t * 12))  # (B, bars, c)
        # Note onsets as extra channels: a pitch sounding now that did not sound one step before.
        # A piano roll hides them, and once pitch is summarised a held note and a string of
        # different short notes look alike; with onsets the critic can count fragments.
        flat = x.reshape(b, t, bars * steps, pitches)
        before = torch.cat([torch.zeros_like(flat[:, :, :1]), flat[:, :, :-1]], dim=2)
        x = torch.cat([x, (flat * (1 - before)).view_as(x)], dim=1)     # (B, 2 tracks, ...)
        t = 2 * t
        x = x.permute(0, 2, 3, 1, 4).reshape(b, bars, steps, t, pitches // 12, 12)
        x = self.semitones(x.transpose(3, 4).reshape(b, bars, steps, pitches // 12, 12 * t))
        x = self.octaves(x.flatten(3))                           # (B, bars, 16, c)
        for layer, block in zip(self.steps, (2, 2, 4)):
            x = layer(x.reshape(b, bars, x.shape[2] // block, block * x.shape[3]))
        per_bar = torch.cat([x.view(b, bars, -1), used], dim=2).transpose(1, 2)   # (B, 3c, bars)
        pairs = self.across_bars(per_bar)                        # (B, 2c, bars - 1)
        return self.score(torch.cat([per_bar.mean(-1), pairs.mean(-1)], dim=1)).squeeze(1)


class MuseGAN(nn.Module):
    """Generator + critic in one module so one checkpoint holds both (the critic is needed to resume)."""

    def __init__(self, cfg: MuseGANConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.critic = Critic(cfg)


# --- sampling (pure: every random number comes from the caller's generator) ---------------

def sample_inputs(cfg: MuseGANConfig, batch: int, generator: torch.Generator) -> dict:
    """Fresh chords, style, melody and groove noise."""
    z, t = cfg.z_dim, cfg.n_tracks
    shapes = {"chords": (batch, z), "style": (batch, z), "melody": (batch, t, z), "groove": (batch, t, z)}
    return {kind: torch.randn(shape, generator=generator) for kind, shape in shapes.items()}


def reroll(inputs: dict, kind: str, generator: torch.Generator, voice: int | None = None) -> dict:
    """New noise for one input (for melody and groove: of one voice); everything else is copied."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"Input must be one of {', '.join(INPUT_KINDS)}, not {kind!r}.")
    new = {k: v.clone() for k, v in inputs.items()}
    if kind in ("melody", "groove") and voice is not None:
        if not 0 <= voice < new[kind].shape[1]:
            raise ValueError(f"Voice must be 0..{new[kind].shape[1] - 1}, not {voice}.")
        new[kind][:, voice] = torch.randn(new[kind][:, voice].shape, generator=generator)
    else:
        new[kind] = torch.randn(new[kind].shape, generator=generator)
    return new


def check_bars(n_bars) -> int:
    try:
        n_bars = int(n_bars)
    except (TypeError, ValueError, OverflowError):  # OverflowError: infinity
        raise ValueError("The number of bars must be a whole number.") from None
    if not 1 <= n_bars <= MAX_BARS:
        raise ValueError(f"The number of bars must be between 1 and {MAX_BARS}, not {n_bars}.")
    return n_bars


def _on_device_of(generator: Generator, inputs: dict) -> dict:
    device = next(generator.parameters()).device
    return {kind: x.to(device) for kind, x in inputs.items()}


@torch.no_grad()
def generate(generator: Generator, chords, style, melody, groove, n_bars: int = 4) -> torch.Tensor:
    """The four inputs (on the CPU) -> piano roll (B, n_bars*16, 4) of pitch classes on the CPU, by argmax
    per step. No bf16 here: an argmax between two nearly tied pitches would differ from the CPU's."""
    inputs = _on_device_of(generator, {"chords": chords, "style": style, "melody": melody, "groove": groove})
    return _to_roll(generator(**inputs, n_bars=check_bars(n_bars))).cpu()


def _to_roll(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, tracks, bars, steps, pitches) -> roll (B, bars*steps, tracks)."""
    b, t = logits.shape[:2]
    return logits.argmax(-1).reshape(b, t, -1).transpose(1, 2)


@torch.no_grad()
def interpolate_piece(generator: Generator, start: dict, end: dict, kind: str, segments: int,
                      bars_per_segment: int) -> torch.Tensor:
    """One continuous piece (1, segments * bars * 16, 4) in which `kind` walks from `start`'s value to
    `end`'s along the great circle (slerp): segment i holds it i/(segments-1) of the way. All other
    inputs are `start`'s, and the chords and melody networks run on through every bar, so the music
    moves on as the walk goes: with `end` = `start` this is simply the longer piece. (Generating each
    segment as a piece of its own restarted those networks at every segment, so a walk over an input
    with a quiet effect played its first bars over and over.) `start` and `end` hold one piece each."""
    from core.latent import interpolate

    if kind not in INPUT_KINDS:
        raise ValueError(f"Input must be one of {', '.join(INPUT_KINDS)}, not {kind!r}.")
    if not 2 <= int(segments) <= MAX_BARS:
        raise ValueError(f"Use 2 to {MAX_BARS} segments, not {segments}.")
    segments = int(segments)
    total = segments * check_bars(bars_per_segment)
    if total > 4 * MAX_BARS:
        raise ValueError(f"At most {4 * MAX_BARS} bars in all: use fewer segments or bars per segment.")
    inputs = start
    if not torch.equal(start[kind], end[kind]):  # (a walk to where it is holds still: slerp would round)
        path = interpolate(start[kind][0], end[kind][0], segments).repeat_interleave(bars_per_segment, dim=0)
        inputs = {**start, kind: path.movedim(0, -2)[None]}  # per bar: (1, [tracks,] bars, z)
    return _to_roll(generator(**_on_device_of(generator, inputs), n_bars=total)).cpu()


def roll_to_onehot(roll: torch.Tensor, cfg: MuseGANConfig) -> torch.Tensor:
    """(B, steps, tracks) classes -> (B, tracks, bars, 16, pitches) one-hot, the critic's input."""
    b, steps, t = roll.shape
    onehot = F.one_hot(roll, cfg.n_pitches).float()                      # (B, steps, tracks, P)
    return onehot.permute(0, 2, 1, 3).reshape(b, t, steps // cfg.n_steps, cfg.n_steps, cfg.n_pitches)


# --- training ----------------------------------------------------------------------------

def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator):
    """WGAN-GP: push the critic's gradient norm to 1 on points between real and fake phrases."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1, generator=generator).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def crossing_probability(probs: torch.Tensor) -> torch.Tensor:
    """Expected share of steps where a voice sounds below the voice under it (soprano under alto,
    alto under tenor, tenor under bass), from pitch distributions (B, tracks, bars, steps, pitches).
    P(upper below lower) = sum over p of P(upper = p) * P(lower above p); a rest crosses nothing.
    The differentiable counterpart of core.metrics.music.voice_order_violations, which counts argmax notes."""
    sounding = probs[..., 1:]
    upper, lower = sounding[:, :-1], sounding[:, 1:]
    lower_above = lower.flip(-1).cumsum(-1).flip(-1) - lower
    return (upper * lower_above).sum(-1).mean()


def fragment_probability(probs: torch.Tensor) -> torch.Tensor:
    """Expected share of steps that are a one-step note (a 16th whose pitch differs from the step
    before and the step after), from pitch distributions (B, tracks, bars, steps, pitches); a rest
    is no note, and outside the phrase nothing sounds. P = sum over p of P_t(p) (1 - P_t-1(p)) (1 - P_t+1(p)).
    The differentiable counterpart of the fragments that core.metrics.music.qualified_note_rate counts."""
    b, t, bars, steps, pitches = probs.shape
    sounding = probs[..., 1:].reshape(b, t, bars * steps, pitches - 1)
    silence = torch.zeros_like(sounding[:, :, :1])
    before = torch.cat([silence, sounding[:, :, :-1]], dim=2)
    after = torch.cat([sounding[:, :, 1:], silence], dim=2)
    return (sounding * (1 - before) * (1 - after)).sum(-1).mean()


def train(model: MuseGAN, pieces: data.ChoraleSet, *, steps: int, generator: torch.Generator,
          state: dict | None = None, lr: float = 1e-3, critic_steps: int = 5, gp_weight: float = 10.0,
          voice_order_weight: float = VOICE_ORDER_WEIGHT, fragment_weight: float = 0.0,
          transpose: int = 6, networks: tuple[nn.Module, nn.Module] | None = None, processes: int = 1):
    """WGAN-GP training; yields one event per generator step with the losses.

    `state` (from a resumable save) continues a run. `networks` are the (generator, critic) the steps
    call: the model's own, or their DistributedDataParallel wrappers, which average the gradients over
    `processes` processes; each takes its share of every batch's phrases, from its own `generator`.
    Each batch is a random phrase length from TRAIN_LENGTHS, random windows of random pieces, each
    transposed by up to +-`transpose` semitones. The generator's exponential moving average (`ema`) is what gets shipped: it is
    a smoother, better-sounding average of the last few hundred generator steps.

    `voice_order_weight` adds crossing_probability to the generator's loss. Each voice has its own
    bar generator, coupled to the others only through the shared chords and style, so nothing in
    the architecture keeps the alto under the soprano, and the critic, which sees pitch through
    octave blocks, let ten times Bach's rate of crossings through (he crossed voices on 0.5% of
    steps). The penalty is the SATB rule stated directly; the critic still judges everything else.

    `fragment_weight` adds fragment_probability the same way. Each step's pitch is an independent
    argmax, so where two pitches are nearly tied the voice flickers between them; with the
    critic's onset channels the model still wrote 20% of its notes as lone 16ths (Bach: 2%), and
    those fragments made half a pitch class per bar (merged into a neighbour: 4.09 -> 3.57). The
    penalty asks each step to agree with a neighbour, which is what a note longer than a 16th is.
    It is for fine-tuning a trained generator against a fresh critic (train_main's --init-from):
    with the old critic it removed fragments but the voices kept their extra pitch class per bar,
    and from scratch it pays the young generator to write rests, which have no fragments."""
    cfg = model.cfg
    windows = {bars: data.phrases(pieces, bars) for bars, _ in TRAIN_LENGTHS}
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.9))
    c_opt = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=(0.5, 0.9))
    ema = copy.deepcopy(model.generator).eval().requires_grad_(False)
    generator_net, critic_net = networks or (model.generator, model.critic)
    device = next(model.parameters()).device
    step = 0
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        g_opt.load_state_dict(state["g_opt"])
        c_opt.load_state_dict(state["c_opt"])
        for group in g_opt.param_groups + c_opt.param_groups:
            group["lr"] = lr  # a resumed run may continue with a different (lower) rate
        step = state["step"]
    model.train()

    def real_batch(bars, size):  # drawn on the CPU, from this process's pieces, then moved
        pool = windows[bars]
        rolls = pool[torch.randint(len(pool), (size,), generator=generator)]
        rolls = data.transpose(rolls, torch.randint(-transpose, transpose + 1, (size,), generator=generator))
        return roll_to_onehot(rolls, cfg).to(device)

    def fake_probs(bars, size):
        inputs = {kind: x.to(device) for kind, x in sample_inputs(cfg, size, generator).items()}
        return generator_net(**inputs, n_bars=bars).softmax(-1)

    def straight_through(probs):
        # As in binary MuseGAN: the critic sees the one-hot argmax, the music the tab will play,
        # while gradients flow through the softmax. A soft output instead lets the generator hide
        # behind blurry distributions whose argmax flickers from step to step.
        hard = F.one_hot(probs.argmax(-1), cfg.n_pitches).to(probs.dtype)
        return hard + probs - probs.detach()

    while step < steps:
        bars, size = TRAIN_LENGTHS[int(torch.randint(len(TRAIN_LENGTHS), (1,), generator=generator))]
        size //= processes
        with torch.no_grad():  # fakes for all critic steps in one pass: same maths, far fewer small ops
            fakes = straight_through(fake_probs(bars, size * critic_steps)).split(size)
        for fake in fakes:
            real = real_batch(bars, size)
            wasserstein = critic_net(real).mean() - critic_net(fake).mean()
            gp = gradient_penalty(critic_net, real, fake, generator)
            c_opt.zero_grad(set_to_none=True)
            (-wasserstein + gp_weight * gp).backward()
            c_opt.step()
        probs = fake_probs(bars, size)
        # The critic itself (not its DDP wrapper): its gradients from this step are thrown away unaveraged.
        g_loss = -model.critic(straight_through(probs)).mean()
        crossing, fragments = crossing_probability(probs), fragment_probability(probs)
        g_opt.zero_grad(set_to_none=True)
        (g_loss + voice_order_weight * crossing + fragment_weight * fragments).backward()
        g_opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.generator.parameters()):
                e.lerp_(p, 1 - decay)
            for e, b in zip(ema.buffers(), model.generator.buffers()):
                e.copy_(b)  # BatchNorm statistics: the live ones
        step += 1
        yield {"step": step, "wasserstein": wasserstein.item(), "gp": gp.item(), "g_loss": g_loss.item(),
               "crossing": crossing.item(), "fragments": fragments.item(), "bars": bars,
               "state": lambda: {"model": model.state_dict(), "ema": ema.state_dict(), "g_opt": g_opt.state_dict(),
                                 "c_opt": c_opt.state_dict()},
               "ema": ema}


def add_train_arguments(parser) -> None:
    parser.add_argument("--data", default=None, help="folder of four-part MIDI/MusicXML files (default: the Bach chorales)")
    parser.add_argument("--steps", type=int, default=20000, help="generator steps (the --minutes budget may stop earlier)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--voice-order-weight", type=float, default=VOICE_ORDER_WEIGHT,
                        help="weight of the expected voice-crossing rate in the generator's loss (0: the book's GAN)")
    parser.add_argument("--fragment-weight", type=float, default=0.0,
                        help="weight of the expected rate of lone 16th notes in the generator's loss; for fine-tuning "
                             "a trained generator (the shipped one used 20): from scratch it drives the GAN to rests")
    parser.add_argument("--z-dim", type=int, default=MuseGANConfig.z_dim)
    parser.add_argument("--bar-channels", type=int, default=MuseGANConfig.bar_channels)
    parser.add_argument("--critic-channels", type=int, default=MuseGANConfig.critic_channels)
    parser.add_argument("--eval-phrases", type=int, default=1000, help="generated phrases for the card's metric table")
    parser.add_argument("--init-from", default=None,
                        help="start the generator from this MuseGAN checkpoint (the critic starts afresh); "
                             "its card's commands head the new card's")
    parser.add_argument("--select-every", type=int, default=250,
                        help="generator steps between checks of the EMA's music metrics (the best is shipped)")


def generated_metrics(generator: Generator, n_phrases: int, seed: int = 0, n_bars: int = 4) -> dict:
    """Music metrics of `n_phrases` generated phrases."""
    from core.metrics.music import all_metrics

    rng = torch.Generator().manual_seed(seed)
    rolls = torch.cat([generate(generator, **sample_inputs(generator.cfg, 250, rng), n_bars=n_bars)
                       for _ in range(math.ceil(n_phrases / 250))])[:n_phrases]
    return all_metrics(rolls)


def train_main(args) -> Path:
    """Train, and ship the generator EMA that came closest to the chorales' music metrics.

    A GAN's losses say little about how its music sounds, and the last step is not the best
    one: quality wanders as generator and critic chase each other. So every --select-every
    steps the EMA writes 500 phrases, their metrics are compared with the *training* chorales'
    (target_gaps: distance in units of the issue's tolerance), and the closest EMA so far is
    kept. The held-out chorales are not used for this choice; they judge it in the card.
    Under torchrun every process makes the same choice: the EMAs are equal (rank 0's BatchNorm
    statistics) and the phrases come from a fixed seed, so no process waits for another.

    --init-from starts the generator (and its EMA) from a checkpoint and the critic afresh: a
    critic trained alongside a generator has stopped objecting to what that generator gets away
    with, and a new one looks again (see --fragment-weight). The card keeps the earlier commands."""
    from core.checkpoints import command_history, start_from
    from core.engine import TrainingRun, world
    from core.metrics.music import all_metrics, target_gaps
    from core.registry import shipped_path

    processes = world()[1]
    if any(size % processes for _, size in TRAIN_LENGTHS):
        raise ValueError(f"MuseGAN's batches of {', '.join(str(size) for _, size in TRAIN_LENGTHS)} phrases split "
                         f"evenly among 1, 2 or 4 processes, not {processes}.")
    out = Path(args.out or shipped_path("musegan", "chorales"))
    run = TrainingRun(args, out)  # seeds the weight initialisation; sampling uses the run's generators
    pieces = data.load_folder(args.data) if args.data else data.load_bach()
    train_set, held_out = pieces.split()
    mine = run.shard(len(train_set.rolls), "pieces")
    my_pieces = data.ChoraleSet([train_set.rolls[i] for i in mine], [train_set.names[i] for i in mine])
    cfg = MuseGANConfig(z_dim=args.z_dim, bar_channels=args.bar_channels, critic_channels=args.critic_channels)
    model = MuseGAN(cfg)
    state = run.resumed
    init = state.get("init") if state else None  # what the --init-from checkpoint's card says about it
    if args.init_from and not state:
        weights, init = start_from(args.init_from, asdict(cfg), "MuseGAN", ("steps", "selected_step", "metrics"))
        model.generator.load_state_dict(weights)
        run.commands = command_history(args, init)  # the checkpoint's commands head this run's
    networks = run.wrap(model.generator), run.wrap(model.critic)
    curves = state["curves"] if state else {"step": [], "wasserstein": [], "gp": [], "g_loss": []}
    best = state.get("best") if state else None  # {"step", "gap", "ema"}
    reference = all_metrics(data.phrases(train_set, 4))
    run.log(f"{len(train_set.rolls)} training pieces; from step {run.step}; "
            f"{run.world_size} process(es) on {run.device}")
    latest, running = {}, {}

    def save() -> None:
        if latest:  # (a resumed run that had no step left to take has nothing new to save)
            run.save_state({**latest["state"](), "curves": curves, "init": init, "best": best})

    events = train(model, my_pieces, steps=args.steps, generator=run.generator("phrases and noise"), state=state,
                   lr=args.lr, voice_order_weight=args.voice_order_weight, fragment_weight=args.fragment_weight,
                   networks=networks, processes=run.world_size)
    for event in run.loop(events, save, total=args.steps, desc="musegan"):
        latest = event
        for key in ("wasserstein", "gp", "g_loss"):
            running[key] = 0.9 * running.get(key, event[key]) + 0.1 * event[key]
        if event["step"] % 25 == 0:
            curves["step"].append(event["step"])
            for key in ("wasserstein", "gp", "g_loss"):
                curves[key].append(round(run.mean(running[key]), 4))
        if event["step"] % args.select_every == 0:
            run.sync_buffers(event["ema"])
            gaps = target_gaps(generated_metrics(event["ema"], 500), reference)
            gap = max(gaps.values())
            if best is None or gap < best["gap"]:
                best = {"step": event["step"], "gap": gap,
                        "ema": {k: v.detach().cpu().clone() for k, v in event["ema"].state_dict().items()}}
            run.log(f"step {event['step']}: worst metric at {gap:.2f} x its tolerance "
                    f"({max(gaps, key=gaps.get)}); best so far step {best['step']} ({best['gap']:.2f})")
    shipped = Generator(cfg).to(run.device).eval()
    if best is not None:
        shipped.load_state_dict(best["ema"])
    elif latest:
        run.sync_buffers(latest["ema"])
        shipped.load_state_dict(latest["ema"].state_dict())
    else:  # --steps already reached by the resumed run: ship from its saved state
        shipped.load_state_dict(state["ema"])
    metrics = {"generated": generated_metrics(shipped, args.eval_phrases),
               "held_out_chorales": all_metrics(data.phrases(held_out, 4))}
    card = run.card(
        model=shipped,
        data=(f"{Path(args.data).name} (a folder of four-part files)" if args.data
              else "music21 corpus: Bach chorales in 4/4 with four voices (SATB)")
        + f"; {len(train_set.rolls)} pieces for training, {len(held_out.rolls)} held out (by piece); "
          "16th-note grid, 2/4/8-bar windows, transposed by up to +-6 semitones",
        corpus=data.provenance(args.data), metrics=metrics, init=init, global_batch=BARS_PER_BATCH,
        selected_step=best["step"] if best else run.step,
        selection=("EMA closest to the training chorales' metrics, checked every "
                   f"{args.select_every} steps on 500 phrases" if best else "last EMA"),
        training="WGAN-GP, 5 critic steps per generator step, gradient penalty 10, Adam lr "
                 f"{args.lr} betas (0.5, 0.9), 32 bars per batch (16 two-bar, 8 four-bar or 4 eight-bar phrases, "
                 f"split among the processes), voice-crossing penalty weight {args.voice_order_weight}, "
                 f"fragment penalty weight {args.fragment_weight}; shipped weights are the generator's EMA",
        curves=curves)
    # Only the generator is needed to make music; the critic stays in the resume file.
    path = run.save_model(shipped, cfg, card, half=True)
    run.finish()
    return path


# --- loading the shipped model -----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_generator(name: str = "chorales") -> Generator:
    """The shipped generator, built once per process, moved to the app's device and shared read-only."""
    from core.checkpoints import build_model, load_shipped
    from core.runtime import app_device

    return build_model(load_shipped("musegan", name), Generator, MuseGANConfig).to(app_device())


# --- piano roll <-> MIDI, score, audio ------------------------------------------------------

def check_tempo(bpm) -> float:
    try:
        bpm = float(bpm)
    except (TypeError, ValueError):
        raise ValueError("The tempo must be a number of beats per minute.") from None
    if not math.isfinite(bpm) or not data.MIN_TEMPO <= bpm <= data.MAX_TEMPO:
        raise ValueError(f"The tempo must be between {data.MIN_TEMPO} and {data.MAX_TEMPO} beats per minute, not {bpm:g}.")
    return bpm


def notes_of(voice: np.ndarray) -> list[tuple[int, int, int]]:
    """One voice's steps -> (start step, end step, class) notes: a run of one pitch is one note."""
    notes, start = [], 0
    for i in range(1, len(voice) + 1):
        if i == len(voice) or voice[i] != voice[start]:
            if voice[start] != data.REST:
                notes.append((start, i, int(voice[start])))
            start = i
    return notes


def roll_to_midi(roll, tempo: float = 90, instruments=data.DEFAULT_INSTRUMENTS):
    """(steps, 4) roll -> pretty_midi.PrettyMIDI, one instrument per voice."""
    import pretty_midi

    tempo = check_tempo(tempo)
    roll = np.asarray(roll)
    step_s = 60.0 / tempo / data.STEPS_PER_QUARTER
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for v, (voice_name, instrument) in enumerate(zip(data.VOICES, instruments)):
        if instrument not in data.PROGRAMS:
            raise ValueError(f"Unknown instrument {instrument!r}; choose one of {', '.join(data.PROGRAMS)}.")
        track = pretty_midi.Instrument(program=data.PROGRAMS[instrument], name=voice_name)
        for start, end, cls in notes_of(roll[:, v]):
            track.notes.append(pretty_midi.Note(velocity=80, pitch=data.class_to_midi(cls),
                                                start=start * step_s, end=end * step_s))
        pm.instruments.append(track)
    return pm


def midi_to_roll(pm, n_tracks: int = data.N_TRACKS) -> np.ndarray:
    """pretty_midi.PrettyMIDI with (at least) four instruments -> (steps, 4) roll on the 16th grid.
    Each step takes the highest note sounding at its start; the tempo is the file's first."""
    instruments = [i for i in pm.instruments if not i.is_drum and i.notes]
    if len(instruments) < n_tracks:
        raise ValueError(f"This MIDI file has {len(instruments)} voice(s) with notes; four are needed "
                         "(soprano, alto, tenor, bass).")
    tempo = pm.get_tempo_changes()[1][0] if len(pm.get_tempo_changes()[1]) else 120.0
    step_s = 60.0 / tempo / data.STEPS_PER_QUARTER
    steps = int(round(max(i.get_end_time() for i in instruments[:n_tracks]) / step_s))
    roll = np.full((steps, n_tracks), data.REST, dtype=np.int64)
    for v, instrument in enumerate(instruments[:n_tracks]):
        for note in sorted(instrument.notes, key=lambda n: n.pitch):  # higher pitches overwrite lower
            roll[int(round(note.start / step_s)):int(round(note.end / step_s)), v] = data.midi_to_class(note.pitch)
    return roll


def roll_to_score(roll, tempo: float = 90, instruments=data.DEFAULT_INSTRUMENTS):
    """(steps, 4) roll -> music21 Score with bars, for MusicXML export and notation programs."""
    from music21 import instrument as m21_instrument, meter, note, stream, tempo as m21_tempo

    roll = np.asarray(roll)
    score = stream.Score()
    for v, voice_name in enumerate(data.VOICES):
        part = stream.Part(id=voice_name)
        part.partName = voice_name.capitalize()
        part.insert(0, m21_instrument.instrumentFromMidiProgram(data.PROGRAMS.get(instruments[v], 0)))
        part.insert(0, meter.TimeSignature("4/4"))
        if v == 0:
            part.insert(0, m21_tempo.MetronomeMark(number=check_tempo(tempo)))
        position = 0
        for start, end, cls in notes_of(roll[:, v]):
            if start > position:
                part.insert(position / data.STEPS_PER_QUARTER, note.Rest(quarterLength=(start - position) / 4))
            part.insert(start / data.STEPS_PER_QUARTER,
                        note.Note(data.class_to_midi(cls), quarterLength=(end - start) / data.STEPS_PER_QUARTER))
            position = end
        if position < len(roll):
            part.insert(position / data.STEPS_PER_QUARTER, note.Rest(quarterLength=(len(roll) - position) / 4))
        score.insert(0, part.makeMeasures())
    return score


def write_musicxml(roll, path, tempo: float = 90, instruments=data.DEFAULT_INSTRUMENTS) -> Path:
    score = roll_to_score(roll, tempo, instruments)
    return Path(score.write("musicxml", fp=str(path)))


def midi_bytes(pm) -> bytes:
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()
