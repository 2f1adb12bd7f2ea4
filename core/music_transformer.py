"""Music Transformer on Bach chorales (Foster, Generative Deep Learning 2nd ed., ch. 11; attention: ch. 9).

The same chorales as the MuseGAN tab (core.data.chorales: four voices, soprano alto tenor bass, on a
16th-note grid, held-out pieces kept out), written as one stream of tokens, and a small decoder-only
Transformer (core.text.GPT itself: token + learned position embeddings, causal self-attention)
that predicts the next token. Generating music is continuing a prompt one token at a time.

Tokens: the book's grid tokenisation for polyphonic music. For every 16th-note step, the four
voices' values in the order S, A, T, B, each one of data.N_PITCHES symbols (0 = rest, k = MIDI
pitch 23 + k); a bar is 16 steps x 4 voices = 64 tokens, so the 512-token context holds 8 bars.

    roll (steps, 4)   [[S0 A0 T0 B0], [S1 A1 T1 B1], ...]   ->   tokens  S0 A0 T0 B0 S1 A1 T1 B1 ...

Why the grid: every token's place in the sequence tells what it is. Token i belongs to voice
i % 4, sounds at step i // 4, and at 16th (i // 4) % 16 of its bar; since every sequence the model
reads starts on a bar line (training windows and prompts alike, and generation slides its window
by whole bars), the learned position embeddings carry the voice and the meter, and the model does
not have to count. Every token is also a legal value wherever it falls, so a sampled sequence is
always a valid four-voice roll (an event vocabulary of note-on/time-shift tokens can write
nonsense such as a note-off for a note that never started). The price: a held note repeats its
pitch at every step, so most tokens are "same as 4 tokens ago", and the sequence is long (a bar
is 64 tokens whatever happens in it).

What the tokens cannot hold is what the roll cannot hold: a repeated note of the same pitch in one
voice merges into one longer note (no onset marks), a voice sings one pitch at a time (a chord in
one part keeps its top note), and time is quantised to 16ths in 4/4. Within that, tokens_of and
roll_of are exact inverses, so MIDI and MusicXML go through core.musegan.roll_to_midi /
roll_to_score unchanged, and a piece -> tokens -> piece round trip gives back the same notes.

Sampling is pure (an explicit CPU torch.Generator): temperature (0 = the argmax, greedy, as in
core.text), top-k (0 = off; larger than the vocabulary = off), and a seed. Attention: `attention`
gives every layer's and head's weights (layers, heads, T, T) from one pass (GPT.attention_maps), and
`attention_to_earlier` the weights with which the model chose one generated token.

    python -m core.train music_transformer --minutes 35 --threads 1   # writes assets/checkpoints/music_transformer/chorales.pt
"""
from __future__ import annotations

import contextlib
import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from core.data import chorales as data
from core.text import GPT, GPTConfig, MAX_TEMPERATURE, sampling_distribution

VOCAB = data.N_PITCHES                                   # rest + 83 pitches
TOKENS_PER_STEP = data.N_TRACKS                          # S, A, T, B
TOKENS_PER_BAR = TOKENS_PER_STEP * data.STEPS_PER_BAR    # 64
CONTEXT_BARS = 8
BLOCK_SIZE = CONTEXT_BARS * TOKENS_PER_BAR               # 512 tokens = 8 bars
MAX_BARS = 16              # bars of a prompt, and bars of one continuation
MAX_UPLOAD_BYTES = 5_000_000
TRANSPOSE = (-5, 6)        # training transposes each window by a uniform whole number of semitones in this range
IGNORE = -100              # a target that is not there (the token after a piece's last bar)
# Dropout on the residual stream and the MLPs, none on the attention weights: with it a CPU cannot use
# the fused attention kernel, and a training step took twice as long.
DEFAULT_SIZES = dict(n_layer=4, n_head=4, n_embd=128, dropout=0.1, attn_dropout=0.0)


def model_config(**sizes) -> GPTConfig:
    """The GPT a chorale model is: the chorale vocabulary and an 8-bar context; `sizes` override the rest."""
    return GPTConfig(**{"vocab_size": VOCAB, "block_size": BLOCK_SIZE, **DEFAULT_SIZES, **sizes})


# --- tokens <-> rolls ------------------------------------------------------------------------

def tokens_of(roll) -> torch.Tensor:
    """Roll(s) (..., steps, 4) of pitch classes -> long tokens (..., steps * 4): S, A, T, B per step.

    Refuses (ValueError) anything that is not four voices of values 0..VOCAB-1."""
    roll = roll if isinstance(roll, torch.Tensor) else torch.from_numpy(np.array(roll))  # (a copy: rolls may be read-only)
    if roll.dim() < 2 or roll.shape[-1] != TOKENS_PER_STEP:
        raise ValueError(f"A piano roll has one column per voice, four in all (S, A, T, B); this one has shape "
                         f"{tuple(roll.shape)}.")
    if roll.is_floating_point() or roll.is_complex() or roll.dtype == torch.bool:
        raise ValueError("A piano roll holds whole numbers (0 = rest, 1..83 = pitches), not "
                         f"{str(roll.dtype).replace('torch.', '')} values.")
    roll = roll.long()
    if roll.numel() and (int(roll.min()) < 0 or int(roll.max()) >= VOCAB):
        raise ValueError(f"A piano roll holds 0 (rest) to {VOCAB - 1} (MIDI {data.class_to_midi(VOCAB - 1)}); "
                         f"this one has values from {int(roll.min())} to {int(roll.max())}.")
    return roll.reshape(*roll.shape[:-2], -1)


def roll_of(tokens) -> np.ndarray:
    """Tokens (n,) -> roll (n // 4, 4), int64; an incomplete last step is dropped."""
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    whole = len(tokens) - len(tokens) % TOKENS_PER_STEP
    return tokens[:whole].reshape(-1, TOKENS_PER_STEP).cpu().numpy()


def position_of(index: int) -> tuple[int, int, int]:
    """Where token `index` of a sequence that starts on a bar line sits: (bar, 16th within the bar, voice),
    all counted from 0 (voice 0 = soprano)."""
    step, voice = divmod(int(index), TOKENS_PER_STEP)
    bar, sixteenth = divmod(step, data.STEPS_PER_BAR)
    return bar, sixteenth, voice


def describe_token(index: int, token: int) -> str:
    """'bar 2 beat 3.2 alto: G4' (beats and 16ths from 1, as musicians count) or '... alto: rest'."""
    from music21 import pitch

    bar, sixteenth, voice = position_of(index)
    beat, part = divmod(sixteenth, data.STEPS_PER_QUARTER)
    what = "rest" if int(token) == data.REST else pitch.Pitch(midi=data.class_to_midi(int(token))).nameWithOctave
    return f"bar {bar + 1} beat {beat + 1}.{part + 1} {data.VOICES[voice]}: {what}"


# --- training windows ---------------------------------------------------------------------

def training_windows(chorales: data.ChoraleSet, bars: int = CONTEXT_BARS) -> tuple[torch.Tensor, torch.Tensor]:
    """Every bar-aligned window of `bars` bars (hop: one bar) of every piece, with the step after it:
    rolls (N, bars * 16 + 1, 4) and `continues` (N,), False where the piece ends with the window (its
    extra step is then rests, and the last target is ignored). The extra step gives the last position
    of the context a token to predict, so all block_size positions are trained.

    As in data.phrases, windows with a bar in which all four voices rest are left out."""
    steps = bars * data.STEPS_PER_BAR
    rolls, continues = [], []
    for roll in chorales.rolls:
        for start in range(0, len(roll) - steps + 1, data.STEPS_PER_BAR):
            window = roll[start:start + steps + 1]
            if (window[:steps].reshape(bars, -1) == data.REST).all(axis=1).any():
                continue
            more = len(window) > steps
            if not more:
                window = np.concatenate([window, np.full((1, TOKENS_PER_STEP), data.REST, window.dtype)])
            rolls.append(window)
            continues.append(more)
    if not rolls:
        raise ValueError(f"No piece is {bars} bars long.")
    return torch.from_numpy(np.stack(rolls)).long(), torch.tensor(continues)


def window_batch(rolls: torch.Tensor, continues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows from training_windows -> (inputs, targets), each (N, bars * 64): targets are the inputs
    moved on by one token."""
    tokens = tokens_of(rolls)
    length = tokens.shape[1] - TOKENS_PER_STEP
    x, y = tokens[:, :length], tokens[:, 1:length + 1].clone()
    y[~continues, -1] = IGNORE
    return x, y


def random_transpose(rolls: torch.Tensor, generator: torch.Generator, low_high=TRANSPOSE) -> torch.Tensor:
    """Each window moved by its own uniform number of semitones in [low, high] (one that would leave the
    pitch range is left where it is): the model hears every chorale in many keys."""
    low, high = low_high
    return data.transpose(rolls, torch.randint(low, high + 1, (len(rolls),), generator=generator))


@torch.no_grad()
def loss_per_token(model: GPT, rolls: torch.Tensor, continues: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per token) over windows, untransposed, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for chunk in range(0, len(rolls), batch_size):
        x, y = window_batch(rolls[chunk:chunk + batch_size], continues[chunk:chunk + batch_size])
        logits, _ = model(x.to(device))
        y = y.to(device)
        total += float(F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE,
                                       reduction="sum"))
        count += int((y != IGNORE).sum())
    model.train(was_training)
    return total / count


# --- training -------------------------------------------------------------------------------

def learning_rate(step: int, progress: float, lr: float, warmup: int, min_fraction: float = 0.1) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to lr * min_fraction as `progress` goes 0 -> 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return lr * (min_fraction + (1 - min_fraction) * cosine)


def train(model: GPT, rolls: torch.Tensor, continues: torch.Tensor, *, steps: int, batch_size: int,
          generator: torch.Generator, lr: float = 1e-3, warmup: int = 100, weight_decay: float = 0.1,
          grad_clip: float = 1.0, transpose=TRANSPOSE, progress: Callable[[int], float] | None = None,
          state: dict | None = None, network: torch.nn.Module | None = None,
          autocast=contextlib.nullcontext) -> Iterator[dict]:
    """Next-token training on windows from training_windows; yields one event per step.

    Each step draws `batch_size` windows (with replacement) from `generator`, transposes each by a
    random number of semitones (`transpose`, inclusive range), and takes one AdamW step (betas 0.9,
    0.99; weight decay on matrices only; gradients clipped to norm `grad_clip`). The learning rate
    warms up, then follows a cosine to a tenth of `lr` as `progress(step)` (default step / steps)
    goes from 0 to 1. `network` is what the step calls (the model or its DDP wrapper); `state`
    (from event["state"]()) continues a run."""
    from core.runtime import set_learning_rate

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    network = network or model
    progress = progress or (lambda done: done / steps)
    device = next(model.parameters()).device
    step = 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    model.train()
    while step < steps and (done := progress(step)) < 1.0:
        rate = learning_rate(step, done, lr, warmup)
        set_learning_rate(optimizer, rate)
        pick = torch.randint(len(rolls), (batch_size,), generator=generator)
        x, y = window_batch(random_transpose(rolls[pick], generator, transpose), continues[pick])
        with autocast():
            logits, _ = network(x.to(device))
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), y.to(device).reshape(-1), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        step += 1
        yield {"step": step, "loss": loss.item(), "lr": rate,
               "state": lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict()}}


# --- generation (pure: every random number comes from the caller's generator) ------------------

def check_sampling(temperature, top_k) -> tuple[float, int]:
    """(temperature, top_k) as numbers the sampler uses, or a ValueError saying what is allowed.
    Temperature 0 is the argmax (greedy, no randomness); top-k 0 or anything from the vocabulary's
    size up keeps every token."""
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise ValueError("The temperature must be a number (0 = always the most likely token).") from None
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise ValueError(f"The temperature must be between 0 (always the most likely token) and {MAX_TEMPERATURE:g}, "
                         f"not {temperature:g}.")
    try:
        if float(top_k) != int(top_k):
            raise ValueError
        top_k = int(top_k)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"top-k must be a whole number of tokens (0 = off), not {top_k!r}.") from None
    if top_k < 0:
        raise ValueError(f"top-k must be 0 (off) or a positive number of tokens, not {top_k}.")
    return temperature, (0 if top_k >= VOCAB else top_k)


def check_bars(bars, what: str = "bars to generate") -> int:
    try:
        if float(bars) != int(bars):
            raise ValueError
        bars = int(bars)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"The number of {what} must be a whole number.") from None
    if not 1 <= bars <= MAX_BARS:
        raise ValueError(f"The number of {what} must be between 1 and {MAX_BARS}, not {bars}.")
    return bars


def window_start(length: int, block_size: int) -> int:
    """Where the model's window begins when it has read `length` tokens: the first bar line that leaves
    at most block_size tokens (0 while they all fit). Windows always start on a bar line, as in
    training, so every token keeps its voice and its place in the bar."""
    excess = length - block_size
    return 0 if excess <= 0 else -(-excess // TOKENS_PER_BAR) * TOKENS_PER_BAR


def _check_model(model: GPT) -> None:
    if model.config.vocab_size != VOCAB or model.config.block_size < TOKENS_PER_BAR:
        raise ValueError(f"This is not a chorale model: it needs a vocabulary of {VOCAB} and a context of at "
                         f"least one bar ({TOKENS_PER_BAR} tokens).")


def _prompt_list(prompt_tokens) -> list[int]:
    tokens = torch.as_tensor(prompt_tokens).reshape(-1).long()
    if len(tokens) == 0:
        raise ValueError("The prompt is empty: the model continues music, so give it at least one 16th-note step.")
    if len(tokens) % TOKENS_PER_STEP:
        raise ValueError(f"A prompt is whole 16th-note steps of four tokens (S, A, T, B); this one has "
                         f"{len(tokens)} tokens.")
    if int(tokens.min()) < 0 or int(tokens.max()) >= VOCAB:
        raise ValueError(f"Tokens run from 0 (rest) to {VOCAB - 1}; this prompt has {int(tokens.min())}..{int(tokens.max())}.")
    return tokens.tolist()


def _pick(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """The next token from the logits, on the CPU: argmax at temperature 0, else a draw."""
    logits = logits.float().cpu()                                 # l: one score per token
    if temperature == 0:
        return int(logits.argmax())                               # T = 0: i = argmax l, no draw
    # p = softmax(l / T), all but the k likeliest set to 0 and renormalised (core.text.sampling_distribution)
    p = sampling_distribution(logits, temperature, top_k)
    return int(torch.multinomial(p, 1, generator=generator))      # i ~ p


@torch.no_grad()
def sample_tokens(model: GPT, prompt_tokens, n_new: int, temperature: float = 1.0, top_k: int = 0,
                  generator: torch.Generator | None = None) -> Iterator[int]:
    """Continue the prompt by `n_new` tokens, yielding each as soon as it is chosen.

    The prompt starts on a bar line and is whole steps (a multiple of 4 tokens). The model reads the
    longest bar-aligned stretch that fits its context (window_start): a prompt longer than the
    context is read from its last whole bars, and when the context fills up the window moves on by
    one bar and is read afresh; between moves each new token costs one query against the key/value
    cache. The network runs on its device (in the mode the caller left it: eval for music); the
    draw is made on the CPU from `generator` (default: seed 0), so a seed gives the same music on
    every device."""
    _check_model(model)
    temperature, top_k = check_sampling(temperature, top_k)
    tokens, n_new = _prompt_list(prompt_tokens), int(n_new)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    block = model.config.block_size
    start = window_start(len(tokens), block)
    logits, cache = model(torch.tensor([tokens[start:]], device=device))
    for i in range(n_new):
        token = _pick(logits[0, -1], temperature, top_k, generator)
        tokens.append(token)
        yield token
        if i == n_new - 1:
            break
        if window_start(len(tokens), block) != start:  # the context is full: move on by a bar
            start = window_start(len(tokens), block)
            logits, cache = model(torch.tensor([tokens[start:]], device=device))
        else:
            logits, cache = model(torch.tensor([[token]], device=device), cache)


def generate(model: GPT, prompt_tokens, n_new: int, temperature: float = 1.0, top_k: int = 0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The `n_new` tokens (long, (n_new,)) that continue the prompt (see sample_tokens)."""
    return torch.tensor(list(sample_tokens(model, prompt_tokens, n_new, temperature, top_k, generator)),
                        dtype=torch.long)


@dataclass
class Continuation:
    roll: np.ndarray   # (steps, 4): the whole prompt, then the new music
    start: int         # the step where the new music begins (= the prompt's length in steps)
    note: str          # '' or a sentence about what the model could not read


def continue_roll(model: GPT, prompt_roll, bars: int, temperature: float = 1.0, top_k: int = 0,
                  seed: int = 0) -> Continuation:
    """`bars` new bars after a prompt roll (steps, 4) that starts on a bar line (a held-out opening, an
    upload): the full roll, where the new music starts, and a note when the prompt was longer than
    the model's context (it then continued from the prompt's last whole bars that fit)."""
    from core.runtime import make_generator

    bars = check_bars(bars)
    prompt = tokens_of(prompt_roll)
    if prompt.dim() != 1:
        raise ValueError(f"Give one prompt roll (steps, 4), not a batch of shape {tuple(np.shape(prompt_roll))}.")
    if len(prompt) == 0:
        raise ValueError("The prompt is empty: the model continues music, so give it at least one bar.")
    new = generate(model, prompt, bars * TOKENS_PER_BAR, temperature, top_k, make_generator(seed))
    note = ""
    skipped = window_start(len(prompt), model.config.block_size)
    if skipped:
        prompt_bars = len(prompt) / TOKENS_PER_BAR
        unread = skipped // TOKENS_PER_BAR
        note = (f"The prompt is {prompt_bars:g} bars long and the model reads at most "
                f"{model.config.block_size // TOKENS_PER_BAR}: it continued from the last "
                f"{(len(prompt) - skipped) / TOKENS_PER_BAR:g}; the first {unread} bar{'s' if unread != 1 else ''} "
                "of the prompt stay in the piece but were not read.")
    return Continuation(roll_of(torch.cat([prompt, new])), len(prompt) // TOKENS_PER_STEP, note)


# --- attention ------------------------------------------------------------------------------

def attention(model: GPT, tokens) -> torch.Tensor:
    """Every layer's and head's attention weights over `tokens` (at most block_size, starting on a bar
    line), from one forward pass: (layers, heads, T, T) on the CPU, where [l, h, i, j] is how much
    position i's query in head h of layer l took from position j. Exactly 0 for j > i (the causal
    mask); each row sums to 1."""
    _check_model(model)
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    if not 1 <= len(tokens) <= model.config.block_size:
        raise ValueError(f"Attention is read over 1 to {model.config.block_size} tokens "
                         f"({model.config.block_size // TOKENS_PER_BAR} bars), not {len(tokens)}.")
    device = next(model.parameters()).device
    _, weights = model.attention_maps(tokens[None].to(device))
    return weights[:, 0].float().cpu()


def attention_to_earlier(model: GPT, tokens, position: int) -> tuple[int, torch.Tensor]:
    """How the model chose token `position` of a piece's tokens (its first token starts a bar): the
    query at position - 1 looked at the tokens of its window (window_start, as when it was generated).
    Returns (first, weights): weights (layers, heads, position - first) over tokens first .. position-1.
    Position len(tokens) gives the query that would choose the next token."""
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    if not 1 <= int(position) < len(tokens) + 1:
        raise ValueError(f"Position must be between 1 and {len(tokens)}: the first token has nothing before it.")
    position = int(position)
    first = window_start(position, model.config.block_size)
    return first, attention(model, tokens[first:position])[:, :, -1]


# --- prompts ---------------------------------------------------------------------------------

def prompt_from_upload(upload, bars: int = 2, name: str | None = None) -> np.ndarray:
    """The first `bars` bars (fewer if the piece is shorter) of an uploaded four-part 4/4 MIDI or
    MusicXML file, given as a path or as bytes (then `name` gives its file name and type), as a roll
    (steps, 4). Files that cannot be a prompt are refused with a sentence (ValueError): nothing
    uploaded, an empty or oversized file, not MIDI/MusicXML, a MIDI file that is broken or cut short,
    not exactly four voices, not 4/4 (core.data.chorales.parse_file says which)."""
    bars = check_bars(bars, "prompt bars")
    if not isinstance(upload, (str, Path, bytes, bytearray)) and hasattr(upload, "name"):
        upload = upload.name  # a file object (an older Gradio's upload): its path
    if upload is None or (isinstance(upload, str) and not upload.strip()):
        raise ValueError("Upload a MIDI or MusicXML file with four voices (soprano, alto, tenor, bass) first.")
    with tempfile.TemporaryDirectory(prefix="genlab-prompt-") as folder:
        if isinstance(upload, (bytes, bytearray)):
            name = Path(name or "upload.mid").name
            path = Path(folder) / name
            path.write_bytes(bytes(upload))
        else:
            path = Path(upload)
            name = name or path.name
            if not path.is_file():
                raise ValueError(f"{name}: there is no such file.")
        if path.suffix.lower() not in data.MUSIC_SUFFIXES:
            raise ValueError(f"{name}: use a MIDI or MusicXML file ({', '.join(data.MUSIC_SUFFIXES)}).")
        size = path.stat().st_size
        if size == 0:
            raise ValueError(f"{name} is empty: upload a MIDI or MusicXML file with four voices.")
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{name} is {size / 1e6:.1f} MB; a prompt file may be at most {MAX_UPLOAD_BYTES / 1e6:g} MB.")
        if path.suffix.lower() in (".mid", ".midi"):
            with open(path, "rb") as file:
                if file.read(4) != b"MThd":
                    raise ValueError(f"{name} is not a MIDI file (it does not begin with a MIDI header); "
                                     "upload a .mid or a MusicXML file with four voices.")
        try:
            roll = data.parse_file(path)
        except ValueError as exc:
            message = str(exc).replace(path.name, name, 1)
            if "could not be read" in message and path.suffix.lower() in (".mid", ".midi"):
                message += " The MIDI file may be cut short or damaged."
            raise ValueError(message) from None
    return roll[:bars * data.STEPS_PER_BAR].astype(np.int64)


# --- loading the shipped model ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_shipped(name: str = "chorales") -> GPT:
    """The shipped chorale Transformer (weights_only checkpoint), built once per process, in eval mode on
    the app's device, shared read-only by every session."""
    from core.checkpoints import build_model, load_shipped as load_checkpoint
    from core.runtime import app_device

    return build_model(load_checkpoint("music_transformer", name), GPT, GPTConfig).to(app_device())


# --- python -m core.train music_transformer --------------------------------------------------------

def add_train_arguments(parser) -> None:
    parser.add_argument("--data", default=None, help="folder of four-part MIDI/MusicXML files (default: the Bach chorales)")
    parser.add_argument("--steps", type=int, default=100_000, help="optimizer steps (the --minutes budget may stop "
                        "earlier; the learning rate's cosine runs to whichever ends first)")
    parser.add_argument("--batch-size", type=int, default=8, help="8-bar windows (512 tokens) per step over all processes")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--layers", type=int, default=DEFAULT_SIZES["n_layer"])
    parser.add_argument("--heads", type=int, default=DEFAULT_SIZES["n_head"])
    parser.add_argument("--width", type=int, default=DEFAULT_SIZES["n_embd"], help="n_embd")
    parser.add_argument("--dropout", type=float, default=DEFAULT_SIZES["dropout"], help="on the residual stream and MLPs")
    parser.add_argument("--attn-dropout", type=float, default=DEFAULT_SIZES["attn_dropout"],
                        help="on the attention weights (above 0 the CPU's fused attention kernel cannot be used)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between held-out validation losses")
    parser.add_argument("--eval-bars", type=int, default=4, help="bars each held-out opening is continued by for the "
                        "card's music metrics (0: none)")


def generated_metrics(model: GPT, pieces: data.ChoraleSet, bars: int, seed: int = 0) -> dict:
    """Music metrics (core.metrics.music) of the new bars when the 2-bar opening of each piece is
    continued by `bars` bars (temperature 1, no top-k, seeds seed, seed + 1, ...)."""
    from core.metrics.music import all_metrics

    rolls = [continue_roll(model, roll, bars, 1.0, 0, seed + i).roll[2 * data.STEPS_PER_BAR:]
             for i, (_, roll) in enumerate(data.openings(pieces, 2))]
    return all_metrics(np.stack(rolls))


def train_main(args) -> Path:
    """Train on the training chorales' 8-bar windows; ship the last weights, with the held-out loss on the card.

    The shipped weights are the last ones, not the best by held-out loss: the held-out chorales
    judge the model (and give the tab its prompts), so they choose nothing. The cosine schedule
    ends the run at a low learning rate, and the curve on the card shows whether it overfitted."""
    from core.engine import TrainingRun
    from core.metrics.music import all_metrics
    from core.registry import shipped_path

    out = Path(args.out or shipped_path("music_transformer", "chorales"))
    run = TrainingRun(args, out, global_batch=args.batch_size)  # seeds the weight initialisation
    pieces = data.load_folder(args.data) if args.data else data.load_bach()
    train_set, held_out = pieces.split()
    rolls, continues = training_windows(train_set)
    valid = training_windows(held_out)
    mine = run.shard(len(rolls), "training windows")
    rolls, continues = rolls[mine], continues[mine]
    config = model_config(n_layer=args.layers, n_head=args.heads, n_embd=args.width, dropout=args.dropout,
                          attn_dropout=args.attn_dropout)
    model = GPT(config)
    network = run.wrap(model)
    state = run.resumed
    curve = state["curve"] if state else []  # {"step", "elapsed_s", "train_loss", "valid_loss"}
    earlier_s = state["elapsed_s"] if state else 0.0
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"music transformer: {n_params / 1e6:.2f}M parameters; {len(train_set.rolls)} training pieces "
            f"({len(rolls)} windows of {CONTEXT_BARS} bars), {len(held_out.rolls)} held out ({len(valid[0])} windows); "
            f"from step {run.step}; {run.world_size} process(es) on {run.device}")

    def progress(step: int) -> float:
        done = step / args.steps
        if args.minutes:  # the cosine ends with the time budget: this run's minutes after what came before
            done = max(done, run.mean(run.elapsed_s / (earlier_s + 60 * args.minutes)))
        return done

    latest, recent = {}, []

    def evaluate() -> None:
        valid_loss = loss_per_token(model, *valid)
        curve.append({"step": latest["step"], "elapsed_s": round(run.elapsed_s, 1),
                      "train_loss": round(run.mean(sum(recent) / len(recent)), 4) if recent else None,
                      "valid_loss": round(valid_loss, 4)})
        recent.clear()
        run.log(f"step {latest['step']}: train {curve[-1]['train_loss']} valid {valid_loss:.4f} nats/token "
                f"({valid_loss / math.log(2):.3f} bits; {run.elapsed_s / 60:.1f} min)")

    def save() -> None:
        if latest:
            run.save_state({**latest["state"](), "step": latest["step"], "curve": curve})

    events = train(model, rolls, continues, steps=args.steps, batch_size=run.batch,
                   generator=run.generator("windows and transpositions"), lr=args.lr, warmup=args.warmup,
                   weight_decay=args.weight_decay, progress=progress, state=state, network=network,
                   autocast=run.autocast)
    for event in run.loop(events, save, total=args.steps, desc="music transformer"):
        latest = event
        recent.append(event["loss"])
        if event["step"] % args.eval_every == 0:
            evaluate()
    if latest and (not curve or curve[-1]["step"] != latest["step"]):
        evaluate()  # the last weights, which are the ones shipped
        save()
    model.eval()
    valid_loss = loss_per_token(model, *valid)
    metrics = {"valid_loss_nats_per_token": round(valid_loss, 4),
               "valid_loss_bits_per_token": round(valid_loss / math.log(2), 4),
               "uniform_bits_per_token": round(math.log2(VOCAB), 4),
               "parameters": n_params}
    if args.eval_bars and run.is_main:
        metrics["music"] = {"generated": generated_metrics(model, held_out, args.eval_bars),
                            "held_out_chorales": all_metrics(data.phrases(held_out, args.eval_bars))}
    data_name = (f"{Path(args.data).name} (a folder of four-part files)" if args.data
                 else "music21 corpus: Bach chorales in 4/4 with four voices (SATB)")
    card = run.card(
        model=model,
        data=f"{data_name}; {len(train_set.rolls)} pieces for training, {len(held_out.rolls)} held out (by piece); "
             f"grid tokens (S, A, T, B per 16th note), {CONTEXT_BARS}-bar windows from every bar line, each "
             f"training window transposed by a uniform {TRANSPOSE[0]}..+{TRANSPOSE[1]} semitones",
        corpus=data.provenance(args.data), metrics=metrics,
        training=f"next-token cross-entropy; AdamW lr {args.lr} betas (0.9, 0.99), weight decay {args.weight_decay} "
                 f"on matrices, {args.warmup} warmup steps then cosine to lr/10 over the --steps/--minutes budget, "
                 f"gradients clipped to norm 1, dropout {args.dropout} (attention weights: {args.attn_dropout}), "
                 f"{args.batch_size} windows of "
                 f"{BLOCK_SIZE} tokens per step; shipped weights: the last",
        validation=f"loss per token on every {CONTEXT_BARS}-bar window of the held-out chorales, untransposed",
        curve=curve)
    extras = {"tokens": "grid: the four voices' pitch classes (0 = rest, k = MIDI 23 + k) per 16th-note step, "
                        "in the order soprano, alto, tenor, bass; sequences start on a bar line",
              "tokens_per_step": TOKENS_PER_STEP, "steps_per_bar": data.STEPS_PER_BAR, "context_bars": CONTEXT_BARS,
              "voices": list(data.VOICES), "held_out": list(held_out.names)}
    path = run.save_model(model, config, card, extras=extras, half=True)
    run.finish()
    return path
