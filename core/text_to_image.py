"""Text to image: a diffusion model told what to draw, and classifier-free guidance.

A miniature Stable Diffusion, in the three parts Generative Deep Learning's multimodal chapter names:
  1. a text encoder: the tiny CLIP's (core.clip), trained on captions of the synthetic faces;
  2. a U-Net that predicts the noise in x_t given the caption's embedding c (core.diffusion's own
     U-Net with `condition_dim`; the embedding joins the noise-level embedding of every block);
  3. a sampler (core.diffusion.Sampler, unchanged) that walks from noise to image.

The U-Net is trained with the caption dropped (replaced by the empty caption's embedding ∅) for a
share of the examples, so one network predicts both ε(x_t | c) and ε(x_t | ∅). Classifier-free
guidance (Ho & Salimans, 2022) then steps past the conditional prediction, away from the unconditional:

    ε̃ = ε(x_t | ∅) + w · (ε(x_t | c) − ε(x_t | ∅))

w = 0 ignores the prompt, w = 1 is the plain conditional model, w > 1 exaggerates what the prompt
changes: more faithful, less varied. A negative prompt n takes the place of ∅: ε(x_t | n) + w·(ε(x_t | c) − ε(x_t | n)),
a step towards c and away from n. The same machinery with a class one-hot for c gives class-conditional
Fashion-MNIST ("a sneaker").

    python -m core.train clip --steps 3000 --minutes 16 --threads 1
    python -m core.train diffusion --data faces --size 32 --condition captions --batch-size 32 --minutes 50 --threads 1
    python -m core.train diffusion --data fashion --condition classes --batch-size 32 --minutes 30 --threads 1
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch

from core import captions
from core.diffusion import Guess, Sampler, UNet, predict_noise, start_noise, to_unit

MODELS = {"faces32_captions": "captions", "fashion32_classes": "classes"}  # shipped name -> what conditions it
GUIDANCE_RANGE = (0.0, 10.0)
STRIP_WEIGHTS = (0.0, 1.0, 3.0, 7.5)  # the side-by-side: no prompt, the plain model, guided, strongly guided


# --- what the U-Net is conditioned on --------------------------------------------------------

def caption_conditions(clip, texts: list[str]) -> torch.Tensor:
    """Caption embeddings as the U-Net takes them: CLIP's unit vectors scaled by √D, so each entry is about ±1."""
    from core.clip import embed_texts

    return embed_texts(clip, texts) * math.sqrt(clip.config.embedding_dim)


def class_conditions(classes: list[list[int]]) -> torch.Tensor:
    """One-hots of the Fashion-MNIST classes [N, 10]; several classes share the weight; none is ∅ = 0."""
    out = torch.zeros(len(classes), 10)
    for row, named in enumerate(classes):
        if named:
            out[row, named] = 1.0 / len(named)
    return out


def conditional_training_set(args):
    """For core.diffusion's trainer: (images in [-1, 1], conditions [N, K, D], the empty condition ∅ [D],
    a line for the card, the checkpoint's extras). Faces get K captions each, embedded once by the CLIP
    `args.clip`, whose SHA-256 the extras keep: the U-Net understands that text encoder and no other."""
    if args.condition == "classes":
        if args.data != "fashion":
            raise ValueError("--condition classes is for --data fashion (faces have captions: --condition captions).")
        from core.data.fashion_mnist import load_fashion_mnist, to_float

        images, labels = load_fashion_mnist("train", data_dir=args.data_dir)
        images, labels = images[:args.limit], labels[:args.limit]
        conditions = class_conditions([[int(c)] for c in labels])[:, None]
        return (to_float(images, args.size) * 2 - 1, conditions, torch.zeros(10),
                f"Fashion-MNIST train ({len(images)} images) with their class as a one-hot, zero-padded 28->32", {})
    if args.data != "faces":
        raise ValueError("--condition captions is for --data faces (Fashion-MNIST has classes: --condition classes).")
    from core.checkpoints import file_sha256, load_shipped
    from core.clip import load_model, training_faces
    from core.registry import shipped_path

    images, fact, description = training_faces(args.limit or 20000, args.size)
    clip = load_model(args.clip)
    rng = np.random.default_rng(args.seed)
    texts = [captions.write_caption(f, rng) for f in fact for _ in range(args.captions_per_image)]
    conditions = caption_conditions(clip, texts).reshape(len(images), args.captions_per_image, -1)
    null = caption_conditions(clip, [""])[0]
    digest = file_sha256(shipped_path("clip", args.clip))
    return (images * 2 - 1, conditions, null,
            f"{description}; {args.captions_per_image} captions per face, embedded by the shipped CLIP "
            f"{args.clip} (sha256 {digest}, {load_shipped('clip', args.clip).card['command']})",
            {"clip": args.clip, "clip_sha256": digest})


# --- prompts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pipeline:
    """A shipped conditional U-Net and how its prompts become conditions."""
    name: str
    model: UNet
    kind: str            # "captions" or "classes"
    clip: object = None  # the TinyCLIP whose text encoder embeds captions (kind "captions")


def read_prompt(pipeline: Pipeline, text: str) -> tuple[torch.Tensor, list[str]]:
    """The condition [1, D] of a prompt and sentences about what in it was not understood. The empty
    prompt, or one of unknown words only, is ∅: the picture is then unconditional."""
    text = str(text or "")
    notes = []
    if pipeline.kind == "classes":
        named, unknown = captions.fashion_classes_in(text)
        if unknown:
            notes.append(f"Not a Fashion-MNIST class name, left out: {', '.join(unknown[:10])}.")
        if len(named) > 1:
            notes.append("Several classes at once: the model never saw a mix; it gets each at equal weight.")
        if text.strip() and not named:
            notes.append("No class name the model knows: the picture is unconditional (∅).")
        return class_conditions([named]), notes
    prompt = captions.parse_prompt(text)
    if prompt.unknown:
        notes.append(f"Unknown words, left out (the text encoder never saw them): {', '.join(prompt.unknown[:10])}"
                     + (" …" if len(prompt.unknown) > 10 else "") + ".")
    if prompt.contradictions:
        notes.append(f"The prompt contradicts itself ({'; '.join(prompt.contradictions)}): expect a mix or either one.")
    if prompt.cut:
        notes.append(f"Only the first {captions.CONTEXT} known words are read; the rest were cut.")
    if text.strip() and not any(w in captions.WORD_IDS for w in captions.words_of(text)):
        notes.append("No word the model knows: the text encoder reads the empty caption, the picture is unconditional (∅).")
    elif text.strip() and not prompt.claims:
        notes.append("The prompt names none of the facts the captions describe (hair colour, glasses, smile, …): "
                     "expect a face like any other.")
    return caption_conditions(pipeline.clip, [text]), notes


def empty_condition(pipeline: Pipeline) -> torch.Tensor:
    """∅, the condition the caption was replaced by in training: [1, D]."""
    return read_prompt(pipeline, "")[0]


# --- classifier-free guidance ---------------------------------------------------------------------

class GuidedNoise(NamedTuple):
    guided: torch.Tensor       # ε̃ = ε(x_t | ∅) + w · (ε(x_t | c) − ε(x_t | ∅))
    conditional: torch.Tensor  # ε(x_t | c)
    unconditional: torch.Tensor  # ε(x_t | ∅) (or | negative prompt)


@torch.no_grad()
def guided_noise(model: UNet, x_t: torch.Tensor, t: float, schedule: str, condition: torch.Tensor,
                 empty: torch.Tensor, weight) -> GuidedNoise:
    """Both predictions in one batched network call (x_t twice: with c, then with ∅), then mixed.
    `weight` is a number or one per image."""
    n = len(x_t)
    # one batch of 2n: [x_t with c; x_t with ∅]
    both = predict_noise(model, torch.cat([x_t, x_t]), t, schedule,
                         torch.cat([condition.expand(n, -1), empty.expand(n, -1)]).to(x_t.device))
    eps_c, eps_empty = both.chunk(2)  # ε(x_t | c), ε(x_t | ∅)
    w = torch.as_tensor(weight, dtype=eps_c.dtype, device=eps_c.device).reshape(-1, *[1] * (x_t.dim() - 1))
    # ε̃ = ε(x_t | ∅) + w · (ε(x_t | c) − ε(x_t | ∅))
    return GuidedNoise(eps_empty + w * (eps_c - eps_empty), eps_c, eps_empty)


class GuidedFrame(NamedTuple):
    step: int
    t: float
    signal_rate: float
    noise_rate: float
    x_t: torch.Tensor           # after this step, in [-1, 1], on the CPU
    x0: torch.Tensor            # the guided guess of the clean image
    x0_conditional: torch.Tensor  # what the network alone would guess with the prompt ...
    x0_unconditional: torch.Tensor  # ... and without it (both from the x_t this step started at)
    pull: torch.Tensor          # ε(x_t | c) − ε(x_t | ∅): where the prompt pushes this image


def check_weight(weight) -> torch.Tensor:
    """The guidance weight(s) as a tensor; a weight that is not a finite number is refused."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if not torch.isfinite(weight).all():
        raise ValueError(f"The guidance weight must be a finite number; got {weight.tolist()}.")
    return weight


@torch.no_grad()
def guided_denoise(model: UNet, sampler: Sampler, x: torch.Tensor, condition: torch.Tensor, empty: torch.Tensor,
                   weight, generator: torch.Generator | None = None) -> Iterator[GuidedFrame]:
    """The reverse process with guidance, a GuidedFrame per step (the sampler is core.diffusion's)."""
    device = next(model.parameters()).device
    x = x.to(device)
    previous = None  # the last step's x_0 guess (DPM-Solver++ (2M) uses it), local to this call
    for i in range(sampler.steps):
        t, t_prev = float(sampler.times[i]), float(sampler.times[i + 1])
        eps = guided_noise(model, x, t, sampler.schedule, condition, empty, weight)
        signal, noise = sampler.rates(i)
        guess = lambda e: ((x - noise * e) / signal).clamp(-1, 1)  # x_0 = (x_t − σ_t ε) / α_t
        x0_c, x0_u = guess(eps.conditional), guess(eps.unconditional)
        x, x0 = sampler.step(eps.guided, t, x, t_prev, generator=generator, previous=previous)
        previous = Guess(t, x0)
        signal_prev, noise_prev = sampler.rates(i + 1)
        yield GuidedFrame(i + 1, t_prev, signal_prev, noise_prev, x.cpu(), x0.cpu(), x0_c.cpu(), x0_u.cpu(),
                          (eps.conditional - eps.unconditional).cpu())


def generate(pipeline: Pipeline, prompt: str, n: int, generator: torch.Generator, weight=3.0,
             steps: int = 50, negative: str = "", noise: torch.Tensor | None = None) -> torch.Tensor:
    """n images in [0, 1] for a prompt (pure given the generator): DDIM with η = 0, so a seed is a picture.
    `weight` is the guidance weight w, or one per image."""
    model = pipeline.model
    condition = read_prompt(pipeline, prompt)[0]
    empty = read_prompt(pipeline, negative)[0]
    x = start_noise(n, model.config, generator) if noise is None else noise
    for frame in guided_denoise(model, Sampler("DDIM", steps, 0.0, model.config.schedule), x, condition, empty,
                                check_weight(weight), generator):
        x = frame.x_t
    return to_unit(x)


def guidance_strip(pipeline: Pipeline, prompt: str, seed: int, weights=STRIP_WEIGHTS, steps: int = 50,
                   negative: str = "") -> torch.Tensor:
    """The same start noise at each guidance weight, in one batch: [len(weights), C, H, W] in [0, 1]."""
    from core.runtime import make_generator

    one = start_noise(1, pipeline.model.config, make_generator(seed))
    weights = check_weight(list(weights))
    return generate(pipeline, prompt, len(weights), make_generator(seed), weights, steps, negative,
                    noise=one.expand(len(weights), -1, -1, -1).clone())


@functools.lru_cache(maxsize=None)
def load_pipeline(name: str) -> Pipeline:
    """A shipped text- or class-conditional model with its encoder, built once, shared read-only."""
    from core.clip import load_model as load_clip
    from core.diffusion import load_model

    if name not in MODELS:
        raise ValueError(f"Unknown text-to-image model {name!r}; choose one of {', '.join(MODELS)}.")
    kind = MODELS[name]
    if kind == "classes":
        return Pipeline(name, load_model(name), kind)
    from core.checkpoints import CheckpointError, file_sha256, load_shipped
    from core.registry import shipped_path

    wanted = load_shipped("diffusion", name).extras
    if "clip_sha256" not in wanted:
        raise CheckpointError(f"The text-to-image model {name} does not say which CLIP embedded its captions: "
                              f"train it again (its card has the command).")
    if file_sha256(shipped_path("clip", wanted["clip"])) != wanted["clip_sha256"]:
        raise CheckpointError(f"The text-to-image model {name} was trained on the captions of another CLIP than the "
                              f"shipped {wanted['clip']}: train it again (its card has the command).")
    return Pipeline(name, load_model(name), kind, load_clip(wanted["clip"]))


# --- scoring prompts -------------------------------------------------------------------------------

def attribute_readings(images: torch.Tensor, classifier=None) -> dict[str, torch.Tensor]:
    """Which face labels the face-attribute classifier trained at the images' size reads as present
    (bool [N] per label). core.metrics.classifiers ships face_attributes32 for 32x32 faces: once
    upsampled, their glasses and mouths are invisible to the 64-pixel classifier."""
    from core.metrics.classifiers import face_attributes, load_face_classifier

    probabilities = face_attributes(images, model=classifier or load_face_classifier(size=images.shape[-1]))
    return {label: p > 0.5 for label, p in probabilities.items()}


def claim_holds(readings: dict[str, torch.Tensor], claim: tuple[str, str]) -> torch.Tensor:
    """Per image, whether the readings satisfy a claim such as ("hair", "red") (bool [N])."""
    held = torch.ones_like(next(iter(readings.values())))
    for label, wanted in captions.labels_of(claim):
        held &= readings[label] == wanted
    return held


def adherence(images: torch.Tensor, prompt: str, classifier=None) -> dict[str, float]:
    """For each attribute a face prompt asks for, the share of `images` ([0, 1]) read as having it."""
    readings = attribute_readings(images, classifier)
    return {" ".join(claim): claim_holds(readings, claim).float().mean().item()
            for claim in captions.parse_prompt(prompt).claims}
