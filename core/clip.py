"""A tiny CLIP: one embedding space for pictures and captions, learned by telling pairs apart.

CLIP (Radford et al., 2021) trains two encoders side by side. In a batch of N (image, caption)
pairs, the image embeddings u_i and caption embeddings v_j (both unit length) give an N x N matrix
of similarities s_ij = u_i · v_j / τ. The right caption of image i is j = i, so the loss is the
cross-entropy of each row (pick the caption for this image) and of each column (pick the image for
this caption), averaged: the symmetric contrastive loss. τ, the temperature, is learned too.

Here the images are the 32x32 synthetic faces and the captions come from their exact labels
(core.captions), so retrieval can be scored exactly. The text encoder is what the text-to-image
diffusion model (core.text_to_image) is conditioned on, as Stable Diffusion uses CLIP's.

    python -m core.train clip --steps 3000 --minutes 16 --threads 1
"""
from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.captions import CONTEXT, END, PAD, VOCABULARY_SIZE, tokenize
from core.data import faces


@dataclass
class ClipConfig:
    image_size: int = 32
    widths: tuple = (32, 64, 128)   # image encoder: channels per stage, each stage halves the size
    text_width: int = 64            # text encoder: width of the Transformer
    text_layers: int = 2
    heads: int = 4
    embedding_dim: int = 64         # the shared space
    vocabulary_size: int = VOCABULARY_SIZE
    context: int = CONTEXT + 2      # words plus the start and end marks

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)


class ImageEncoder(nn.Module):
    """Strided convolutions down to a small grid, flattened (where a thing is matters: glasses sit
    at the eyes), then a linear map into the shared space."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        layers, width = [], 3
        for w in config.widths:
            layers += [nn.Conv2d(width, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU()]
            width = w
        self.features = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.widths)
        self.project = nn.Linear(width * side * side, config.embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # images in [0, 1]
        return self.project(self.features(images * 2 - 1).flatten(1))


class TextEncoder(nn.Module):
    """Word and position embeddings, a small Transformer (every word sees every other, so "no" can
    change what "glasses" means), and the output at the end mark as the caption's embedding."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.words = nn.Embedding(config.vocabulary_size, config.text_width)
        self.positions = nn.Parameter(torch.randn(config.context, config.text_width) * 0.02)
        layer = nn.TransformerEncoderLayer(config.text_width, config.heads, 2 * config.text_width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.text_width)
        self.project = nn.Linear(config.text_width, config.embedding_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.words(tokens) + self.positions[:tokens.shape[1]]
        h = self.transformer(h, src_key_padding_mask=tokens == PAD)
        at_end = h[torch.arange(len(tokens)), (tokens == END).int().argmax(dim=1)]
        return self.project(self.norm(at_end))


class TinyCLIP(nn.Module):
    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.text_encoder = TextEncoder(config)
        self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's start: τ = 0.07

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings [N, D] of images [N, 3, H, W] in [0, 1]."""
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-length embeddings [N, D] of captions (the empty caption "" is a caption too: ∅)."""
        return self.encode_tokens(tokenize(texts).to(self.log_inverse_temperature.device))

    def similarity(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """s_ij = u_i · v_j / τ, with 1/τ capped at 100 as in CLIP (a sharper softmax only overfits)."""
        return self.log_inverse_temperature.clamp(max=math.log(100)).exp() * image_embeddings @ text_embeddings.T


def contrastive_loss(similarity: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss: row i should pick caption i, column j should pick image j.
    L = ½ [CE(S, diag) + CE(Sᵀ, diag)]."""
    targets = torch.arange(len(similarity), device=similarity.device)
    return (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.T, targets)) / 2


@torch.no_grad()
def retrieval_accuracy(model: TinyCLIP, images: torch.Tensor, captions: list[str], ks=(1, 5)) -> dict:
    """Caption -> image retrieval: for caption i, is image i among the k most similar images? Also
    image -> caption. Returns {"text_to_image_top1": ..., "image_to_text_top1": ..., ...}."""
    similarity = embed_images(model, images) @ embed_texts(model, captions).T  # [images, captions]
    target = torch.arange(len(images))
    out = {}
    for k in ks:
        k_here = min(k, len(images))  # with fewer items than k, every item is in the top k
        top_images = similarity.T.topk(k_here, dim=1).indices   # for each caption
        top_captions = similarity.topk(k_here, dim=1).indices   # for each image
        out[f"text_to_image_top{k}"] = (top_images == target[:, None]).any(1).float().mean().item()
        out[f"image_to_text_top{k}"] = (top_captions == target[:, None]).any(1).float().mean().item()
    return out


@torch.no_grad()
def embed_images(model: TinyCLIP, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    device = model.log_inverse_temperature.device
    return torch.cat([model.encode_images(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)])


@torch.no_grad()
def embed_texts(model: TinyCLIP, texts: list[str], batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.encode_texts(texts[i:i + batch]).cpu() for i in range(0, len(texts), batch)]) \
        if texts else torch.zeros(0, model.config.embedding_dim)


@functools.lru_cache(maxsize=None)
def load_model(name: str = "faces32") -> TinyCLIP:
    """A shipped CLIP, built once, on the app's device, shared read-only."""
    from core.checkpoints import build_model, load_shipped
    from core.runtime import app_device

    return build_model(load_shipped("clip", name), TinyCLIP, ClipConfig).to(app_device()).requires_grad_(False)


# --- training ----------------------------------------------------------------------------

def training_faces(n: int, size: int):
    """The first `n` faces of the train split without the held-out combinations (core.captions.HELD_OUT):
    (images [M, 3, size, size] in [0, 1], the facts of each face, a line for the card)."""
    from core.captions import facts, holds_out
    from core.data.faces import face_split

    batch = face_split("train", n, size=size)
    fact = [facts(batch.labels, i) for i in range(n)]
    keep = [i for i in range(n) if not holds_out(fact[i])]
    description = (f"synthetic faces, core.data.faces.face_split('train', {n}, size={size}) less the {n - len(keep)} "
                   f"with a held-out combination (core.captions.HELD_OUT): {len(keep)} faces, captions from "
                   f"their exact labels (core.captions.write_caption)")
    return batch.images[keep], [fact[i] for i in keep], description


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faces", type=int, default=20000, help="faces of the train split (held-out combinations removed)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per batch: each caption has batch-1 wrong images")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--test-faces", type=int, default=1000, help="faces of the test split to measure retrieval on")
    parser.add_argument("--save-every", type=float, default=180, help="seconds between resumable saves")


class _PairScores(nn.Module):
    """The training step's forward pass as one module (so DistributedDataParallel can wrap it)."""

    def __init__(self, model: TinyCLIP):
        super().__init__()
        self.model = model

    def forward(self, images, tokens):
        return self.model.similarity(self.model.encode_images(images), self.model.encode_tokens(tokens))


def train(model: TinyCLIP, images: torch.Tensor, fact: list[dict], steps: int, batch_size: int, lr: float,
          weight_decay: float, generator: torch.Generator, optimizer=None, start_step: int = 0,
          network: nn.Module | None = None) -> Iterator[dict]:
    """Yields {"step", "loss", "temperature"} per step. Every step writes fresh captions for its faces, so
    the model sees each face described many ways."""
    from core.captions import write_caption

    network = network or _PairScores(model)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    device = model.log_inverse_temperature.device
    model.train()
    for step in range(start_step + 1, steps + 1):
        for group in optimizer.param_groups:  # warm-up, then a cosine decay to a tenth
            group["lr"] = lr * min(1.0, step / 200) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        index = torch.randperm(len(images), generator=generator)[:batch_size]
        rng = np.random.default_rng(int(torch.randint(2 ** 31, (1,), generator=generator)))
        tokens = tokenize([write_caption(fact[i], rng) for i in index.tolist()]).to(device)
        similarity = network(images[index].to(device), tokens)
        loss = contrastive_loss(similarity)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield {"step": step, "loss": loss.item(),
               "temperature": 1 / model.log_inverse_temperature.clamp(max=math.log(100)).exp().item()}


def test_set(n: int, size: int, seed: int = 0):
    """Faces of the test split with one full caption each (every family said: an exact description)."""
    from core.captions import captions_for
    from core.data.faces import face_split

    batch = face_split("test", n, size=size)
    return batch.images, captions_for(batch.labels, np.random.default_rng(seed), full=True)


def train_main(args) -> Path:
    from core.engine import TrainingRun
    from core.registry import shipped_path

    out = Path(args.out) if args.out else shipped_path("clip", f"faces{args.size}")
    run = TrainingRun(args, out, global_batch=args.batch_size)
    images, fact, description = training_faces(args.faces, args.size)
    data_files = [faces.provenance("train", args.faces, args.size,
                                   leaving_out="the faces with a held-out combination (core.captions.HELD_OUT)")]
    mine = run.shard(len(images), "faces")
    images, fact = images[mine], [fact[i] for i in mine.tolist()]
    config = ClipConfig(image_size=args.size)
    model = TinyCLIP(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    curve = []
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        curve = run.resumed["curve"]
    network = run.wrap(_PairScores(model))
    generator = run.generator("batches and captions")
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"{description}; {n_params / 1e3:.0f}k parameters; from step {run.step}")
    test_images, test_captions = test_set(args.test_faces, args.size)
    running, every = [], max(1, min(100, args.steps // 10))

    def save() -> None:
        model.eval()
        metrics = {k: round(v, 4) for k, v in retrieval_accuracy(model, test_images, test_captions).items()}
        model.train()
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve})
        card = run.card(data=description, data_files=data_files, model=model, batch_size=args.batch_size, parameters=n_params,
                        optimizer=f"AdamW lr {args.lr} wd {args.weight_decay}, 200-step warm-up, cosine to 0.1",
                        metrics={"retrieval_on": f"{len(test_images)} test-split faces, one full caption each "
                                                 f"(core.clip.test_set)", **metrics,
                                 "temperature": round(curve[-1][2], 4) if curve else None},
                        training_curve={"step_mean_loss_temperature": curve})
        run.save_model(model, config, card)

    events = train(model, images, fact, args.steps, run.batch, args.lr, args.weight_decay, generator, optimizer,
                   run.step, network)
    for event in run.loop(events, save, total=args.steps, desc="clip"):
        running.append(event["loss"])
        if event["step"] % every == 0:
            curve.append([event["step"], round(run.mean(sum(running) / len(running)), 4), round(event["temperature"], 4)])
            running = []
    run.finish()
    return out
