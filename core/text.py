"""Character language models: a tokenizer, two networks (CharLSTM, GPT), training and sampling.

A character language model reads text one character at a time and predicts a probability for
every possible next character. Generating text is repeating that: pick a character from the
distribution, append it, predict again. *Temperature* reshapes the distribution before the pick:
p_i ** (1/T), renormalised. T < 1 sharpens it (safe, repetitive text), T > 1 flattens it
(surprising, eventually nonsense), T = 0 is the argmax (greedy) and T = 1 is the model itself.

    python -m core.train text --model gpt --corpus tinyshakespeare.txt --minutes 90
    python -m core.train text --model lstm --corpus nietzsche.txt --minutes 30

Layout of this module, top to bottom: the tokenizer and corpus reading; the two networks, each
with a config dataclass and the same call `logits, state = model(ids, state)`; the samplers
(temperature, top-k, top-p) and `sample()`, a generator yielding one character at a time with its
full next-character distribution; the Trainer (AdamW, warmup + cosine, gradient clipping,
periodic validation loss); and the `python -m core.train text` entry point.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_CORPUS_BYTES = 20_000_000  # larger files are refused rather than read (and held) whole
MAX_SAMPLE_LENGTH = 2000  # characters per sample() call
MAX_TEMPERATURE = 5.0
VALIDATION_FRACTION = 0.1  # the last 10% of a corpus, as in nanoGPT's shakespeare_char


# --- tokenizer and corpora ------------------------------------------------------------

class CharTokenizer:
    """Each distinct character of the training text is one token; the alphabet is saved with the model."""

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` this model has never seen, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; characters outside the alphabet are dropped (see `unknown`)."""
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def corpus_tokenizer(text: str, name: str = "The text") -> CharTokenizer:
    """The alphabet of a training text, refusing one with a single character: with nothing to choose
    between, there is nothing to learn (and the loss is 0 from the first step)."""
    tokenizer = CharTokenizer.from_text(text)
    if len(tokenizer) < 2:
        what = f"one character, U+{ord(text[0]):04X}, repeated" if text else "empty"
        raise ValueError(f"{name} is {what}; a character model learns which character comes next, so it needs "
                         "text with at least two different characters.")
    return tokenizer


def decode_corpus(raw: bytes, name: str = "the file") -> str:
    """Bytes of a user's text file -> str, refusing what is not usable text, with a reason."""
    if not raw.strip():
        raise ValueError(f"{name} is empty.")
    if len(raw) > MAX_CORPUS_BYTES:
        raise ValueError(f"{name} is {len(raw) / 1e6:.1f} MB; the limit is {MAX_CORPUS_BYTES / 1e6:.0f} MB.")
    if b"\x00" in raw[:65536]:
        raise ValueError(f"{name} looks binary (it contains NUL bytes); please give a plain .txt file.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text (bad byte at position {exc.start}); "
                         "save it as UTF-8 and try again.") from None
    return text.replace("\r\n", "\n")


def read_corpus(path, max_bytes: int = MAX_CORPUS_BYTES) -> str:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No text file at {path}.")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path.name} is {path.stat().st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")
    return decode_corpus(path.read_bytes(), path.name)


# Where the corpora the shipped models read come from (the card names its corpus by these).
CORPUS_SOURCES = {
    "tinyshakespeare.txt": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "nietzsche.txt": "https://s3.amazonaws.com/text-datasets/nietzsche.txt",
}


def corpus_record(path: Path) -> dict:
    """A corpus as a model card names it: file name, where it comes from, SHA-256 and size."""
    raw = path.read_bytes()
    return {"name": path.name, "source": CORPUS_SOURCES.get(path.name, "a text file of the trainer's own"),
            "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


def split_corpus(ids: torch.Tensor, fraction: float = VALIDATION_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the model is judged on text that follows, never interleaves, what it trained on."""
    cut = int(len(ids) * (1 - fraction))
    return ids[:cut], ids[cut:]


# --- CharLSTM -------------------------------------------------------------------------

@dataclass
class CharLSTMConfig:
    vocab_size: int = 65
    n_embd: int = 64
    hidden: int = 384
    n_layer: int = 2
    dropout: float = 0.2


class CharLSTM(nn.Module):
    """Embedding -> stacked LSTM -> linear head. The recurrent state is the model's memory of the past."""

    def __init__(self, config: CharLSTMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(config.n_embd, config.hidden, config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        """ids (B, T) -> logits (B, T, vocab) and the LSTM state (h, c) after the last character."""
        out, state = self.lstm(self.embed(ids), state)
        return self.head(self.drop(out)), state

    @torch.no_grad()
    def next_logits(self, new_ids: torch.Tensor, state=None):
        """Feed the new characters (1, T); return the next-character logits (vocab,) and the carried state."""
        if state is None or new_ids.shape[1] > 1:
            logits, state = self(new_ids, state)
            return logits[0, -1], state
        return self._step(int(new_ids[0, 0]), state)

    def _step(self, token: int, state):
        """One character through the stack with the LSTM equations written out. For a single step this
        is several times faster on a CPU than the fused kernel, which is built for long sequences."""
        h, c = state
        x = self.embed.weight[token]
        new_h, new_c = [], []
        for layer in range(self.config.n_layer):
            weights = [getattr(self.lstm, f"{name}_l{layer}") for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")]
            gates = F.linear(x, *weights[:2]) + F.linear(h[layer, 0], *weights[2:])
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4)  # PyTorch's gate order
            cell = torch.sigmoid(forget_gate) * c[layer, 0] + torch.sigmoid(input_gate) * torch.tanh(candidate)
            x = torch.sigmoid(output_gate) * torch.tanh(cell)
            new_h.append(x)
            new_c.append(cell)
        return self.head(x), (torch.stack(new_h)[:, None], torch.stack(new_c)[:, None])


# --- GPT ------------------------------------------------------------------------------

@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256  # the longest context the model attends over (learned positions)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    # Dropout on the attention weights; None: `dropout`. 0 lets a CPU train with the fused attention
    # kernel (with attention dropout it falls back to the plain one, about twice as slow overall).
    attn_dropout: float | None = None


class CausalSelfAttention(nn.Module):
    """Each position mixes the values of earlier positions, weighted by query-key similarity."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.dropout = config.dropout if config.attn_dropout is None else config.attn_dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, past=None, weights: list | None = None):
        """`past` is this layer's cached (keys, values) of earlier positions, used when sampling:
        a new character then costs one query against the cache instead of re-reading the context.

        `weights`, a list, asks for the attention weights: this layer appends them, (B, heads, T, S)
        for T queries over S = cached + T keys, and computes its output from them (see attention_weights).
        Without it the fused kernel runs, which never forms the weights."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(C, dim=2))
        if past is not None:
            assert T == 1, "with a cache, feed one character at a time"
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if weights is not None:
            att = attention_weights(q, k)
            weights.append(att)
            y = F.dropout(att, self.dropout, self.training) @ v
        else:
            # One new query may see the whole cache; a fresh sequence needs the causal mask.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and T > 1,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask), written out: (B, heads, T, S) for T queries that are the
    last T of S positions. Query i sits at position S - T + i and sees keys 0 .. S - T + i; the mask
    puts -inf on every later key, so its weight is exactly 0 and each row sums to 1. This is what
    F.scaled_dot_product_attention computes inside, without ever storing it."""
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    later = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
    return torch.softmax(scores.float().masked_fill(later, float("-inf")), dim=-1).to(q.dtype)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd), nn.Dropout(config.dropout))

    def forward(self, x, past=None, weights: list | None = None):
        attended, kv = self.attn(self.ln1(x), past, weights)
        x = x + attended
        return x + self.mlp(self.ln2(x)), kv


class GPT(nn.Module):
    """A small decoder-only transformer: token + learned position embeddings, pre-norm blocks, linear head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init_weights)
        # Residual projections start small so the stack begins close to the identity (GPT-2's trick).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, cache=None, weights: list | None = None):
        """ids (B, T) -> logits (B, T, vocab) and the per-layer key/value cache.

        With a `cache` (from the previous call), `ids` is the one next character. A `weights` list
        receives every layer's attention weights (B, heads, T, S), first layer first (attention_maps)."""
        start = 0 if cache is None else cache[0][0].shape[2]
        if start + ids.shape[1] > self.config.block_size:
            raise ValueError(f"context of {start + ids.shape[1]} exceeds block_size {self.config.block_size}")
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i], weights)
            new_cache.append(kv)
        return self.head(self.ln_f(x)), new_cache

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass over ids (B, T) that keeps what every head attended to: the logits
        (B, T, vocab) and the weights (layers, B, heads, T, T), where [l, b, h, i] is how head h of
        layer l spread position i's attention over positions 0..i (0 on every later one; each row
        sums to 1). The outputs equal forward()'s up to float rounding: the same softmax(QK^T/sqrt(d))V,
        formed explicitly instead of by the fused kernel."""
        weights: list[torch.Tensor] = []
        logits, _ = self(ids, weights=weights)
        return logits, torch.stack(weights)

    @torch.no_grad()
    def next_logits(self, new_ids: torch.Tensor, state=None):
        """Feed the new characters (1, T); return the next-character logits (vocab,) and the state.

        The state is (recent ids, key/value cache). Learned positions stop at block_size, so when the
        cache is full the last half-block is re-read from scratch: that happens once every
        block_size/2 characters, keeping the cost per character flat however long the text."""
        recent = new_ids if state is None else torch.cat([state[0], new_ids], dim=1)
        recent = recent[:, -self.config.block_size:]
        cache = None if state is None else state[1]
        if cache is None or new_ids.shape[1] > 1 or cache[0][0].shape[2] >= self.config.block_size:
            if cache is not None:  # window slides: keep the last half-block of context
                recent = recent[:, -(self.config.block_size // 2):]
            logits, cache = self(recent)
        else:
            logits, cache = self(new_ids, cache)
        return logits[0, -1], (recent, cache)


def context_read(prompt_length: int, step: int, block_size: int) -> int:
    """How many characters GPT.next_logits had read when `sample` chose its step-th character (1-based)
    after a prompt of prompt_length: the whole text up to the block at first, then a window that grows by
    one each step and, whenever the cache is full, falls back to the last half block (next_logits)."""
    read = min(prompt_length, block_size)
    for _ in range(step - 1):
        read = block_size // 2 if read >= block_size else read + 1
    return read


MODELS = {"gpt": (GPT, GPTConfig), "lstm": (CharLSTM, CharLSTMConfig)}


def model_kind(model: nn.Module) -> str:
    return "gpt" if isinstance(model, GPT) else "lstm"


# --- sampling -------------------------------------------------------------------------

def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T), which equals p ** (1/T) renormalised. T = 0 is the argmax, as a one-hot."""
    if temperature == 0:
        # T -> 0: all the probability on the likeliest character, i = argmax_j z_j
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    # p_T(i) = exp(z_i / T) / sum_j exp(z_j / T): T < 1 sharpens, T > 1 flattens, T = 1 is the model itself
    return torch.softmax(logits.float() / temperature, dim=-1)


def top_k_filter(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k most likely characters (k <= 0 keeps all) and renormalise."""
    if k <= 0 or k >= probs.shape[-1]:
        return probs
    kth = probs.topk(k, dim=-1).values[..., -1:]
    kept = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    return kept / kept.sum(-1, keepdim=True)


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of most likely characters whose mass reaches p.

    The most likely character is always kept, so p = 0 is greedy and p = 1 keeps everything."""
    if p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs   # the mass of the likelier characters
    keep_sorted = mass_before < p                          # kept while the set's mass is still below p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum(-1, keepdim=True)


def sampling_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                          top_p: float = 1.0) -> torch.Tensor:
    """The distribution a character is actually drawn from: temperature, then top-k, then top-p."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats: 0 when certain, log(vocab) when every character is equally likely."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def check_sampling_options(length: int, temperature: float, top_k: int, top_p: float) -> None:
    if not 1 <= length <= MAX_SAMPLE_LENGTH:
        raise ValueError(f"Length must be between 1 and {MAX_SAMPLE_LENGTH} characters (got {length}).")
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise ValueError(f"Temperature must be between 0 and {MAX_TEMPERATURE:g} (got {temperature}).")
    if top_k < 0:
        raise ValueError(f"top-k must be 0 (off) or a positive number of characters (got {top_k}).")
    if not (math.isfinite(top_p) and 0 <= top_p <= 1):
        raise ValueError(f"top-p must be between 0 and 1 (got {top_p}).")


@dataclass
class PreparedPrompt:
    text: str  # what the model actually reads
    ids: list[int]
    dropped: list[str]  # characters the model does not know, removed from the prompt
    started_from_newline: bool  # the prompt was empty, or nothing of it was kept
    nothing_kept: bool = False  # the prompt had characters, but the model knows none of them besides spaces


def prepare_prompt(tokenizer: CharTokenizer, prompt: str) -> PreparedPrompt:
    """Drop characters outside the alphabet; an empty prompt starts from a newline, like a new paragraph.

    So does a prompt of which only spaces are left (words in a script the model never saw, with the
    spaces between them): that is nothing of the prompt, and from a lone space an LSTM may write spaces only."""
    dropped = tokenizer.unknown(prompt)
    ids = tokenizer.encode(prompt)
    nothing_kept = bool(dropped) and not tokenizer.decode(ids).strip()
    started = not ids or nothing_kept
    if started:
        ids = tokenizer.encode("\n") or [0]
    return PreparedPrompt(tokenizer.decode(ids), ids, dropped, started, nothing_kept)


@dataclass
class SampleStep:
    """One sampled character and why it was chosen."""
    char: str
    prob: float  # its probability under the distribution it was drawn from
    model_prob: float  # its probability under the model itself (T = 1): low means surprising
    probs: torch.Tensor  # the sampling distribution (after temperature, top-k, top-p), (vocab,)
    model_probs: torch.Tensor  # the model's own distribution, (vocab,)


@torch.no_grad()
def sample(model: nn.Module, tokenizer: CharTokenizer, prompt_ids: list[int], length: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> Iterator[SampleStep]:
    """Generate `length` characters after the prompt, yielding each as soon as it is chosen.

    The network is read only: all memory of the text so far lives in the local `state`
    (LSTM hidden state or GPT key/value cache), so concurrent calls never interfere."""
    check_sampling_options(length, temperature, top_k, top_p)
    if not prompt_ids:
        raise ValueError("The prompt has no characters this model knows.")
    device = next(model.parameters()).device
    logits, state = model.next_logits(torch.tensor([prompt_ids], device=device))
    for _ in range(length):
        # The network runs on its device; the distribution and the draw are made on the CPU from the
        # call's CPU generator, so a seed gives the same text on every device. No autocast: these
        # models are small enough that a character costs kernel launches, not arithmetic, and bf16
        # logits would change the text.
        logits = logits.float().cpu()
        model_probs = torch.softmax(logits, dim=-1)                         # p(. | x_<=t), the model at T = 1
        probs = sampling_distribution(logits, temperature, top_k, top_p)  # p_T, what is drawn from
        if temperature == 0:
            token = int(logits.argmax())  # greedy, exactly: no random draw at all
        else:
            token = int(torch.multinomial(probs, 1, generator=generator))  # x_t+1 ~ p_T
        yield SampleStep(tokenizer.chars[token], float(probs[token]), float(model_probs[token]), probs, model_probs)
        logits, state = model.next_logits(torch.tensor([[token]], device=device), state)


@torch.no_grad()
def next_char_logits(model: nn.Module, prompt_ids: list[int]) -> torch.Tensor:
    """The model's logits for the character after the prompt (vocab,), on the CPU."""
    device = next(model.parameters()).device
    return model.next_logits(torch.tensor([prompt_ids], device=device))[0].float().cpu()


def entropy_by_temperature(logits: torch.Tensor, temperatures) -> list[float]:
    """Entropy (nats) of the next-character distribution at each temperature: it rises with T."""
    return [float(entropy(apply_temperature(logits, t))) for t in temperatures]


# --- training -------------------------------------------------------------------------

@dataclass
class TrainConfig:
    batch_size: int = 32  # windows per step on this process (a run on N processes: the global batch / N)
    context: int = 128  # characters per training window (the GPT's block_size)
    max_steps: int = 5000
    minutes: float | None = None  # time budget: the learning-rate schedule runs to whichever ends first
    lr: float = 1e-3
    min_lr_fraction: float = 0.1  # cosine decays to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # without clipping, LSTMs occasionally take a huge step and diverge
    eval_every: int = 250
    eval_windows: int = 128  # fixed validation windows, so successive evaluations are comparable


def loss_on_windows(model: nn.Module, ids: torch.Tensor, starts: torch.Tensor, context: int,
                    batch_size: int = 64) -> float:
    """Mean cross-entropy (nats/char) over windows ids[s : s+context] predicting the next character."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    offsets = torch.arange(context)
    with torch.no_grad():
        for chunk in starts.split(batch_size):
            device = next(model.parameters()).device
            x = ids[chunk[:, None] + offsets].to(device)
            y = ids[chunk[:, None] + offsets + 1].to(device)
            logits, _ = model(x)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
    model.train(was_training)
    return total / count


def split_loss(model: nn.Module, ids: torch.Tensor, context: int) -> float:
    """Loss over a whole split in non-overlapping windows (every character predicted once),
    the way nanoGPT's shakespeare_char reports validation loss."""
    starts = torch.arange(0, len(ids) - context - 1, context)
    return loss_on_windows(model, ids, starts, context)


class Trainer:
    """Next-character prediction with AdamW, warmup + cosine decay and gradient clipping.

    `run()` is a generator of events ({"step", "loss", "lr", and "val_loss" when evaluated}), so the
    CLI shows them with tqdm and the tab draws a live loss curve. The best weights by validation
    loss are kept and are what `best_model()` returns.

    Alone (the tab) it needs only the model and the text. One process of a many-process run
    (core.engine.TrainingRun) also passes: `network`, the DistributedDataParallel wrapper the step
    calls (state, evaluation and best weights use `model` itself); `config.batch_size`, this process's
    share of the batch; `generator`, its own random stream; `shard` (run.shard), which picks the
    training windows it draws from; and `mean` (run.mean), which averages a number over the
    processes: applied to the clock and to the validation loss, it makes every rank compute the same
    learning rate, stop at the same step under a time budget and keep the same best weights."""

    def __init__(self, model: nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor,
                 config: TrainConfig, seed: int = 0, *, network: nn.Module | None = None,
                 generator: torch.Generator | None = None, shard: Callable[[int, str], torch.Tensor] | None = None,
                 mean: Callable[[float], float] | None = None, autocast=contextlib.nullcontext):
        if len(train_ids) <= config.context + 1 or len(val_ids) <= config.context + 1:
            raise ValueError(f"The text is too short to train on: it needs more than "
                             f"{int((config.context + 2) / VALIDATION_FRACTION)} characters "
                             f"for windows of {config.context}.")
        self.model, self.config = model, config
        self.network = network or model
        self.train_ids, self.val_ids = train_ids, val_ids
        self.rng = generator or torch.Generator().manual_seed(seed)
        # A process's share of the data is a set of window *starts*, every N-th one (run.shard), not a
        # slice of the text: windows overlap, so slices would lose those across the cuts, and each
        # process would learn one part of the text (one play, one chapter) instead of the whole.
        # Interleaved starts cover every window once, and each batch is drawn from all of the text.
        windows = len(train_ids) - config.context - 1
        self.starts = shard(windows, "training windows") if shard else torch.arange(windows)
        self.mean = mean or (lambda value: value)
        self.autocast = autocast
        # Fixed validation windows, the same on every process: every evaluation scores the same text.
        fixed = torch.Generator().manual_seed(seed + 1)
        self.val_starts = torch.randint(len(val_ids) - config.context - 1, (config.eval_windows,), generator=fixed)
        decay = [p for p in model.parameters() if p.dim() >= 2]  # weights decay; biases and norms do not
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
                                           betas=(0.9, 0.99))
        self.step, self.elapsed_s = 0, 0.0
        self.curve: list[dict] = []  # {"step", "elapsed_s", "train_loss", "val_loss"}
        self.best_val, self.best_state = float("inf"), None
        self._recent: list[float] = []  # training losses since the last evaluation

    def progress(self) -> float:
        """Fraction of the run done: steps or time budget, whichever is further along."""
        done = self.step / self.config.max_steps
        if self.config.minutes:
            done = max(done, self.elapsed_s / (60 * self.config.minutes))
        return min(done, 1.0)

    def learning_rate(self) -> float:
        c = self.config
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return c.lr * (c.min_lr_fraction + (1 - c.min_lr_fraction) * cosine)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        starts = self.starts[torch.randint(len(self.starts), (c.batch_size,), generator=self.rng)]
        window = starts[:, None] + torch.arange(c.context)
        device = next(self.model.parameters()).device
        return self.train_ids[window].to(device), self.train_ids[window + 1].to(device)

    def evaluate(self) -> float:
        return loss_on_windows(self.model, self.val_ids, self.val_starts, self.config.context)

    def _tick(self, started: float) -> None:
        # Only a time budget needs every process to agree on the clock (one number averaged per step).
        seconds = time.monotonic() - started
        self.elapsed_s += self.mean(seconds) if self.config.minutes else seconds

    def run(self) -> Iterator[dict]:
        self.model.train()
        while self.progress() < 1.0:
            started = time.monotonic()
            lr = self.learning_rate()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = self.batch()
            with self.autocast():
                logits, _ = self.network(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.step += 1
            self._recent.append(loss.item())
            event = {"step": self.step, "loss": self._recent[-1], "lr": lr}
            self._tick(started)
            if self.step % self.config.eval_every == 0 or self.progress() >= 1.0:
                started = time.monotonic()
                event["val_loss"] = self._record()
                self._tick(started)
            yield event

    def evaluate_last_step(self) -> bool:
        """Score the last weights if training stopped between evaluations (a time budget kept by
        someone else ended it), so that they too can be the best. Returns whether it evaluated."""
        if not self._recent:
            return False
        self._record()
        return True

    def _record(self) -> float:
        val = self.mean(self.evaluate())
        train_loss = self.mean(sum(self._recent) / len(self._recent))
        self._recent = []
        self.curve.append({"step": self.step, "elapsed_s": round(self.elapsed_s, 1),
                           "train_loss": round(train_loss, 4), "val_loss": round(val, 4)})
        if val < self.best_val:
            self.best_val = val
            self.best_state = copy.deepcopy(self.model.state_dict())
        return val

    def best_model(self) -> nn.Module:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.model.eval()

    def state_dict(self) -> dict:
        """What resumes this trainer. The batch stream is not in it: its owner saves it (TrainingRun
        saves every process's own)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "trainer_elapsed_s": self.elapsed_s, "curve": self.curve, "best_val": self.best_val,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed_s, self.curve = state["step"], state["trainer_elapsed_s"], state["curve"]
        self.best_val, self.best_state = state["best_val"], state["best_state"]


def build_model(kind: str, vocab_size: int, **sizes) -> nn.Module:
    """A fresh model of `kind` ("gpt" or "lstm"); `sizes` are config fields (n_layer, n_embd, ...)."""
    model_cls, config_cls = MODELS[kind]
    return model_cls(config_cls(vocab_size=vocab_size, **sizes))


def model_from_checkpoint(ckpt) -> tuple[nn.Module, CharTokenizer]:
    """The model (in eval mode, on the CPU) and tokenizer a text checkpoint holds."""
    from core.checkpoints import build_model as rebuild

    model_cls, config_cls = MODELS[ckpt.extras["kind"]]
    return rebuild(ckpt, model_cls, config_cls), CharTokenizer(ckpt.extras["chars"])


@functools.lru_cache(maxsize=None)
def load_shipped_model(name: str) -> tuple[nn.Module, CharTokenizer, dict]:
    """A shipped model (built once and moved to the app's device once, shared read-only by every
    session), its tokenizer and its card."""
    from core.checkpoints import load_shipped
    from core.runtime import app_device

    ckpt = load_shipped("text", name)
    model, tokenizer = model_from_checkpoint(ckpt)
    return model.to(app_device()), tokenizer, ckpt.card


# --- python -m core.train text ----------------------------------------------------------

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=sorted(MODELS), default="gpt")
    parser.add_argument("--corpus", required=True, help="any UTF-8 text file")
    parser.add_argument("--name", help="checkpoint name (default: <model>_<corpus file stem>)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256, help="GPT n_embd or LSTM hidden size")
    parser.add_argument("--heads", type=int, default=4, help="GPT attention heads")
    parser.add_argument("--embed", type=int, default=64, help="LSTM character embedding size")
    parser.add_argument("--context", type=int, default=128, help="characters per training window (GPT block_size)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="windows per step over all processes (each of N takes batch/N)")
    parser.add_argument("--steps", type=int, default=10_000, help="maximum optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on the CPU too (~1.3x faster "
                        "with AVX512-BF16; the shipped models were trained so); on CUDA it is on unless --fp32")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")


def train_main(args) -> Path:
    from core.engine import TrainingRun
    from core.registry import shipped_path

    if args.bf16 and args.fp32:
        raise ValueError("--bf16 and --fp32 ask for opposite things: give one of them.")
    corpus_path = Path(args.corpus)
    text = read_corpus(corpus_path)
    tokenizer = corpus_tokenizer(text, corpus_path.name)
    train_ids, val_ids = split_corpus(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    if args.model == "gpt":
        sizes = dict(n_layer=args.layers, n_head=args.heads, n_embd=args.width, block_size=args.context,
                     dropout=args.dropout)
    else:
        sizes = dict(n_layer=args.layers, hidden=args.width, n_embd=args.embed, dropout=args.dropout)
    out = Path(args.out) if args.out else shipped_path("text", args.name or f"{args.model}_{corpus_path.stem}")
    run = TrainingRun(args, out, global_batch=args.batch_size)  # it seeds the weight initialisation
    model = build_model(args.model, len(tokenizer), **sizes)
    network = run.wrap(model)
    # One autocast: the run's (bf16 on CUDA unless --fp32); --bf16 asks for it on a CPU as well.
    bf16 = run.bf16 or args.bf16
    autocast = run.autocast if run.bf16 or not args.bf16 else \
        functools.partial(torch.autocast, run.device.type, dtype=torch.bfloat16)
    config = TrainConfig(batch_size=run.batch, context=args.context, max_steps=args.steps,
                         minutes=args.minutes, lr=args.lr, warmup_steps=args.warmup,
                         weight_decay=args.weight_decay, eval_every=args.eval_every)
    trainer = Trainer(model, train_ids, val_ids, config, seed=args.seed, network=network,
                      generator=run.generator("batches"), shard=run.shard, mean=run.mean, autocast=autocast)
    if run.resumed:
        trainer.load_state_dict(run.resumed)
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"{args.model}: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
            f"{len(train_ids):,} train / {len(val_ids):,} validation characters; from step {run.step}; "
            f"{run.world_size} process(es) on {run.device}")

    def save() -> None:
        run.save_state(trainer.state_dict())

    for event in run.loop(trainer.run(), save, total=config.max_steps, desc=f"{args.model} {corpus_path.stem}"):
        if "val_loss" in event:
            run.log(f"step {event['step']}: train {trainer.curve[-1]['train_loss']:.4f} "
                    f"val {event['val_loss']:.4f} ({trainer.elapsed_s / 60:.1f} min)")
    if trainer.evaluate_last_step():  # the run's --minutes stopped it between evaluations
        save()
    model = trainer.best_model()
    metrics = {"val_loss_nats_per_char": round(trainer.best_val, 4), "parameters": n_params,
               # the whole split, once: only rank 0 writes the card (and no other rank waits for it)
               "val_loss_full_split": round(split_loss(model, val_ids, config.context), 4) if run.is_main else None}
    card = run.card(data=f"{corpus_path.name}: {len(text):,} characters, first 90% train, last 10% validation",
                    model=model, corpus=corpus_record(corpus_path), metrics=metrics, bf16_autocast=bf16,
                    train_config=asdict(config), curve=trainer.curve)
    path = run.save_model(model, model.config, card, half=args.half,
                          extras={"kind": args.model, "chars": tokenizer.chars})
    run.finish()
    return path
