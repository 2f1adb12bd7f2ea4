"""Text to image tab: a miniature Stable Diffusion. A prompt becomes a condition (the tiny CLIP's caption
embedding for the synthetic faces, a class one-hot for Fashion-MNIST), the conditional U-Net denoises with
classifier-free guidance, and the step viewer shows, at every step, what the prompt pulls towards. Below:
the same seed at four guidance weights, and the CLIP that links captions and faces.

Widgets and events only; the pipeline, guidance and the CLIP live in core.text_to_image and core.clip.
Nothing heavy is imported until a handler runs. Models and the CLIP's embeddings of the test faces are
loaded once per process and only read; each run's frames live in the user's gr.State.
"""
from __future__ import annotations

import functools
import math
import time

import gradio as gr

from core.registry import read_card, shipped_path
from tabs import stepviewer
from tabs.classroom import Code, Lesson, Try, lesson_bar
from tabs.common import (DIVERGING, PALETTE, SEQUENTIAL, caption, clamped, figure_to_image, image_upload, number,
                         on_gpu, picture, pyplot, queue, shipped_choices, user_errors)

TAB = "text_to_image"
VIEW = "text_to_image-view"  # scrubbing, playing, the card and the CLIP views are cheap: their own, wider slot
MODEL_LABELS = {"faces32_captions": "synthetic faces with captions · 32×32 (colour)",
                "fashion32_classes": "Fashion-MNIST with class names · 32×32 (grayscale)"}
# core's own values, repeated so that building the page imports no torch (tests/test_text_to_image_tab.py
# checks that they agree): core.text_to_image.MODELS, GUIDANCE_RANGE and STRIP_WEIGHTS; core.captions'
# VOCABULARY, FASHION_VOCABULARY and CONTEXT; caption_of_pair of its SEEN and HELD_OUT pairs.
MODELS = {"faces32_captions": "captions", "fashion32_classes": "classes"}
GUIDANCE_RANGE = (0.0, 10.0)
STRIP_WEIGHTS = (0.0, 1.0, 3.0, 7.5)
VOCABULARY = ["a", "an", "and", "bangs", "big", "black", "blond", "blonde", "brown", "closed", "dark", "eyed",
              "eyeglasses", "eyes", "face", "fair", "fringe", "ginger", "glasses", "gray", "grey", "hair", "haired",
              "large", "long", "medium", "mouth", "narrow", "no", "not", "of", "open", "pale", "person", "photo",
              "portrait", "red", "round", "serious", "short", "skin", "skinned", "small", "smile", "smiling",
              "straight", "wearing", "wide", "with"]
FASHION_VOCABULARY = ["ankle", "bag", "boot", "boots", "coat", "dress", "handbag", "jacket", "jumper", "pants",
                      "pullover", "sandal", "sandals", "shirt", "sneaker", "sneakers", "sweater", "t", "tee", "top",
                      "trainer", "trouser", "trousers", "tshirt"]
CONTEXT = 32
SEEN_PROMPTS = ["a person with red hair and a smile", "a person with blond hair and glasses",
                "a person with gray hair and dark skin"]
HELD_OUT_PROMPTS = ["a person with red hair and glasses", "a person with blond hair and dark skin",
                    "a person with gray hair and a smile"]
FASHION_PROMPTS = ["a sneaker", "an ankle boot", "a dress", "a bag", "trousers", "a shirt and a sandal"]
CLIP_NAME = "faces32"
CLIP_COMMAND = "python -m core.train clip --steps 3000 --minutes 16 --threads 1"
TRAIN_COMMANDS = {
    "faces32_captions": "python -m core.train diffusion --data faces --size 32 --condition captions --batch-size 32 "
                        "--lr 1e-3 --steps 40000 --minutes 50 --threads 1",
    "fashion32_classes": "python -m core.train diffusion --data fashion --condition classes --batch-size 32 "
                         "--lr 1e-3 --steps 40000 --minutes 30 --threads 1"}
DEFAULT_WEIGHT, DEFAULT_STEPS, MIN_STEPS, MAX_STEPS = 3.0, 50, 10, 100
MAX_IMAGES = 8
MAX_PROMPT_CHARS = 1000    # far more than the CONTEXT words the text encoder reads; longer prompts are cut
TEST_FACES = 1000          # the CLIP views search these test-split faces (core.clip.test_set)
TOP_FACES = 8
TOP_CAPTIONS = 3
MATRIX_SIZE = 8
SHOW = 3                   # each 32-px image is enlarged 3× in the viewer and the grid
STRIP_SHOW = 4
GPU_SECONDS = 60

INTRO = """**A miniature Stable Diffusion: a text encoder turns the prompt into a vector c, and the Diffusion tab's U-Net, told c at
every step, denoises with classifier-free guidance.** The viewer shows at each step what the prompt pulls towards."""

LESSON = Lesson(
    tab=TAB, main="t2i-generate", result="t2i-final",
    chapters="*Generative Deep Learning* ch. 13 (multimodal models: DALL.E 2, Imagen, Stable Diffusion, CLIP) and "
             "ch. 8 (diffusion) · Ho & Salimans 2022 (classifier-free guidance) · Radford et al. 2021 (CLIP)",
    equations=(r"Classifier-free guidance: $\tilde\varepsilon = \varepsilon_\theta(x_t \mid \varnothing) + "
               r"w\,\big(\varepsilon_\theta(x_t \mid c) - \varepsilon_\theta(x_t \mid \varnothing)\big)$ · "
               r"CLIP: similarity $\cos(u, v) = u \cdot v$ of unit embeddings, trained so each face's $u$ is "
               r"closest to its own caption's $v$"),
    try_this=(
        Try("w = 0: no prompt", {"model": "faces32_captions", "prompt": HELD_OUT_PROMPTS[0], "negative": "",
                                 "w": 0, "seed": 1},
            "w = 0 keeps only ε(x|∅): the unconditional model, so the prompt is ignored and the faces have any hair. "
            "The pull in the viewer is still computed, but multiplied by 0."),
        Try("w = 1: plain", {"model": "faces32_captions", "prompt": HELD_OUT_PROMPTS[0], "negative": "",
                             "w": 1, "seed": 1},
            "The same start noise with the plain conditional model, ε(x|c): red hair appears, glasses mostly not. "
            "No training face had red hair with glasses (a held-out pair)."),
        Try("w = 7.5: strong", {"model": "faces32_captions", "prompt": HELD_OUT_PROMPTS[0], "negative": "",
                                "w": 7.5, "seed": 1},
            "Guidance steps 7.5 times along the pull: red hair and, on most faces, glasses, a pair it never saw "
            "together (the bench finds both in 60 % of faces at w = 7.5, 3 % at w = 0). Colours saturate, and "
            "other seeds give faces that look alike."),
        Try("Fashion: sneaker", {"model": "fashion32_classes", "prompt": "a sneaker", "negative": "", "w": 3},
            "The same pipeline and guidance with c a class one-hot instead of a caption embedding: every image a "
            "sneaker (the classifier reads the asked class in 97 % of images at w = 3, 68 % at w = 1)."),
    ),
    misconceptions=(
        ("Guidance needs a separate classifier.",
         "Classifier-free guidance uses one U-Net, trained with the caption dropped to the empty caption ∅ for a "
         "share of the examples, so it predicts the noise both with and without the prompt; their difference plays "
         "the classifier's part."),
        ("A larger w is always better.",
         "w trades variety for faithfulness: past w ≈ 3 the faces and clothes look alike and over-saturate, and FID "
         "is worse at 7.5 than at 3 on both models (the bench)."),
        ("A model can only draw combinations it was trained on.",
         "The faces model never saw red hair with glasses in one caption, yet draws both together on a third to "
         "more than half of its faces at w = 3 to 7.5: it composes facts it learned separately."),
        ("CLIP draws the picture.",
         "CLIP only encodes: its text half turns the prompt into the vector c. The picture comes from the U-Net "
         "and the DDIM sampler, exactly as in the Diffusion tab."),
    ),
    code=(Code("classifier-free guidance: both predictions in one call, then mixed", "core/text_to_image.py",
               ("guided_noise",),
               r"$\tilde\varepsilon = \varepsilon(x_t \mid \varnothing) + w\,\big(\varepsilon(x_t \mid c) - "
               r"\varepsilon(x_t \mid \varnothing)\big)$ (a negative prompt n takes the place of ∅)"),
          Code("training: the caption dropped to ∅ for a share of each batch", "core/diffusion.py",
               ("pick_conditions",),
               r"$c' = \varnothing$ with probability $p$ (the card's `caption_dropout`), else $c' = c$; then the usual "
               r"$\lVert \varepsilon - \varepsilon_\theta(x_t, t, c') \rVert^2$")),
)

HOW = """Three parts, as in Stable Diffusion: a **text encoder** (the text half of a tiny CLIP, below, trained on captions of
the synthetic faces) turns the prompt into a vector c; a **U-Net** predicts the noise in x_t given the noise level
*and* c (the Diffusion tab's U-Net, with c added to every block's noise-level embedding); a **sampler** (DDIM) walks
from noise to image. Fashion-MNIST's model takes a class one-hot for c instead (“a sneaker”). A few attribute
*combinations* were never in the training captions (red hair with glasses, blond hair with dark skin, gray hair with
a smile): prompting for one tests whether the model composes what it learned separately."""

GUIDANCE = """**Classifier-free guidance.**
The U-Net was trained with the caption replaced by the empty caption ∅ for a share of the examples (the card's
`caption_dropout`), so the one network predicts the noise both ways, **ε(x_t | c)** and **ε(x_t | ∅)**.
Guidance steps *past* the conditional prediction, away from the unconditional one:

  **ε̃ = ε(x_t | ∅) + w · (ε(x_t | c) − ε(x_t | ∅))**

w = 0 ignores the prompt, w = 1 is the plain conditional model, w > 1 exaggerates whatever the prompt changes:
more faithful, less varied, and at large w over-saturated. The difference ε(x_t | c) − ε(x_t | ∅) is the
**pull** the viewer shows as a heat map. A **negative prompt** n takes the place of ∅: a step towards c and away
from n. Each step is one network call on a batch of 2n images (x_t with c, x_t with ∅)."""

CLIP_INTRO = """**CLIP: one space for faces and captions.**
Two encoders, one for 32×32 faces and one for captions, map both into the same 64-number space, trained on
batches of (face, caption) pairs so that each face's embedding is closest to its own caption's (the symmetric
contrastive loss; Radford et al., 2021). Its text encoder is what the faces model above is conditioned on.
Similarity is the cosine u · v of the unit-length embeddings (1: the same direction). The search runs over the first
1,000 faces of the test split (never trained on), each with a full caption written from its exact labels."""


# --- shipped models ---------------------------------------------------------------------------

def model_choices() -> list[tuple[str, str]]:
    """(label, name) of the shipped text- and class-conditional models, the faces first."""
    return [(label, name) for label, name in shipped_choices("diffusion", MODEL_LABELS) if name in MODELS]


def clip_shipped() -> bool:
    path = shipped_path("clip", CLIP_NAME)
    return path.is_file() and path.with_suffix(".json").is_file()


def _card(technique: str, name: str) -> dict:
    """A model card, or {} while it is missing or being rewritten by a training in progress."""
    try:
        return read_card(technique, name)
    except (OSError, ValueError):
        return {}


def _minutes(card: dict) -> str:
    return f"{card.get('wall_time_s', 0) / 60:.0f} min"


def model_card(name) -> str:
    """One paragraph: what the model is and how long it trained (the details: model_details)."""
    if name not in MODELS:
        return ""
    card = _card("diffusion", name)
    if not card:
        return f"**{MODEL_LABELS[name]}**: its card cannot be read right now (a training may be rewriting it)."
    config = card.get("config", {})
    conditioned = "the tiny CLIP's caption embedding" if MODELS[name] == "captions" else "the class as a one-hot"
    dropout = card.get("caption_dropout")
    start = card.get("fine_tuned_from") or {}
    return (f"**{MODEL_LABELS[name]}**: U-Net widths {config.get('widths')}, conditioned on a "
            f"{config.get('condition_dim')}-number vector ({conditioned}); "
            + (f"fine-tuned for {card.get('steps', 0):,} steps from the unconditional model ({start['steps']:,} steps)"
               if start.get("steps") else f"trained for {card.get('steps', 0):,} steps")
            + (f", the condition dropped to ∅ for {dropout:.0%} of the examples" if dropout is not None else "")
            + f"; {_minutes(card)} in all. EMA weights.")


def model_details(name) -> str:
    """The data, the command and the hardware of the chosen model, and for the faces its text encoder."""
    if name not in MODELS:
        return ""
    card = _card("diffusion", name)
    commands = [c for c in [card.get("command"), *card.get("resumed_with", [])] if c]
    made = next((c for c in reversed(commands) if "--condition" in c), commands[-1] if commands else "?")
    text = (f"Data: {card.get('data', '?')}. Hardware: {card.get('hardware', '?')}. Made with `{made}`"
            + (f" (the card lists all {len(commands)} commands, the unconditional model's first)." if len(commands) > 1
               else "."))
    if MODELS[name] == "captions":
        text += "\n\n" + clip_card()
    return text


def clip_card() -> str:
    card = _card("clip", CLIP_NAME) if clip_shipped() else {}
    if not card:
        return f"**Text encoder**: no CLIP is shipped yet (`{CLIP_COMMAND}`)."
    metrics = card.get("metrics", {})
    retrieval = ""
    if "text_to_image_top1" in metrics:
        retrieval = (f"; on {metrics.get('retrieval_on', 'the test faces')}, a caption finds its own face first "
                     f"{metrics['text_to_image_top1']:.0%} of the time (top 5: {metrics.get('text_to_image_top5', 0):.0%})")
    return (f"**Text encoder**: the tiny CLIP, {card.get('parameters', 0) / 1e3:.0f}k parameters, trained for "
            f"{card.get('steps', 0):,} steps ({_minutes(card)}) with `{card.get('command')}`{retrieval}.")


def vocabulary(name) -> str:
    """What the chosen model can read."""
    if MODELS.get(name) == "classes":
        return ("**Words it knows**: the class names " + ", ".join(FASHION_VOCABULARY) +
                " (t-shirt, top, tee · trousers, pants · pullover, sweater, jumper · dress · coat, jacket · sandal · "
                "shirt · sneaker, trainer · bag, handbag · ankle boot, boot). Other words are left out; it learned one "
                "class per picture. An empty prompt is ∅: any piece of clothing.")
    return (f"**Words it knows** ({len(VOCABULARY)}; others are left out, and only the first {CONTEXT} known words "
            "are read): " + ", ".join(VOCABULARY) + ".\n\nThey make up the captions' facts: hair "
            "colour (black, brown, blond, red, gray), smiling or serious, mouth open or closed, glasses or none, long "
            "or short hair, bangs, skin (pale, medium, dark), a wide or narrow face, big or small eyes. Any order, "
            "as a sentence (“a smiling person with red hair”) or a list (“red hair, glasses”). An empty prompt is "
            "∅: any face.")


def describe_model(name, prompt=None):
    """The card and the vocabulary of the chosen model, and the prompt: an example prompt of the other model
    becomes one of this model's; anything else (what you typed, an empty prompt) is kept."""
    faces = HELD_OUT_PROMPTS + SEEN_PROMPTS
    examples, others = (FASHION_PROMPTS, faces) if MODELS.get(name) == "classes" else (faces, FASHION_PROMPTS)
    swap = name in MODELS and prompt is not None and str(prompt) in others
    return model_card(name), model_details(name), vocabulary(name), examples[0] if swap else gr.update()


def _pipeline(name):
    from core import text_to_image

    names = [n for _, n in model_choices()]
    if name not in names:
        if not names:
            raise ValueError("No text-to-image model is trained yet: "
                             + " or ".join(f"`{c}`" for c in TRAIN_COMMANDS.values()) + ".")
        raise ValueError(f"Pick one of the shipped text-to-image models: {', '.join(names)}.")
    return text_to_image.load_pipeline(name)


# --- argument checks: clamp with a note, refuse only what cannot be used ---------------------------

def _text(text, what: str, notes: list[str]) -> str:
    text = "" if text is None else str(text)
    if len(text) > MAX_PROMPT_CHARS:
        notes.append(f"The {what} is {len(text):,} characters long; only its first {MAX_PROMPT_CHARS:,} are read "
                     f"(the text encoder reads at most {CONTEXT} known words anyway).")
        text = text[:MAX_PROMPT_CHARS]
    return text


def _warn(notes: list[str]) -> None:
    for note in notes:
        gr.Warning(note)


def read_prompts(pipeline, prompt: str, negative: str, notes: list[str]):
    """The conditions of the prompt and of the negative prompt (∅ when empty), adding notes on what was
    not understood."""
    from core import text_to_image

    condition, said = text_to_image.read_prompt(pipeline, prompt)
    notes += said
    if not prompt.strip():
        notes.append("Empty prompt: the picture is unconditional (c = ∅)"
                     + (", pushed away from the negative prompt." if negative.strip() else
                        ", so the pull is zero and every guidance weight gives the same picture."))
    empty, said = text_to_image.read_prompt(pipeline, negative)
    notes += [f"Negative prompt: {note}" for note in said]
    return condition, empty


# --- pictures ------------------------------------------------------------------------------------

def _enlarge(image, factor: int = SHOW):
    """One [C, H, W] image in [0, 1] -> a PIL image `factor` times larger, pixels kept square."""
    from PIL import Image

    from core.data.images import tensor_to_pil

    picture = tensor_to_pil(image).convert("RGB")
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)


def _grid(images, factor: int = SHOW):
    from PIL import Image

    from core.data.images import image_grid

    grid = image_grid(images, nrow=max(1, math.ceil(math.sqrt(len(images)))))
    return grid.convert("RGB").resize((grid.width * factor, grid.height * factor), Image.NEAREST)


def heat_map(pull, factor: int = SHOW):
    """A signed [C, H, W] map, averaged over channels, as a picture on the DIVERGING colour map scaled to its
    largest magnitude: purple where positive, orange where negative, white at zero -> (PIL image, that magnitude)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    m = pull.float().mean(0).numpy()
    scale = float(np.abs(m).max())
    v = m / scale if scale > 0 else m
    rgb = colormaps[DIVERGING]((v + 1) / 2)[..., :3]  # −1 → the orange end, 0 → white, +1 → the purple end
    picture = Image.fromarray((rgb * 255).round().astype(np.uint8))
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST), scale


def _panels(pictures: list, titles: list[tuple[str, str]]):
    """Pictures side by side, each with a two-line title above it."""
    from PIL import Image, ImageDraw

    gap, top = 14, 30
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures) + top), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for panel, (line_1, line_2) in zip(pictures, titles):
        canvas.paste(panel, (left, top))
        draw.text((left + 2, 2), line_1, fill="black")
        draw.text((left + 2, 15), line_2, fill=(90, 90, 90))
        left += panel.width + gap
    return canvas


def _framepicture(x_t, x0, x0_c, x0_u, pull, t: float, weight: float, negative: bool):
    from core.diffusion import to_unit

    heat, scale = heat_map(pull)
    pictures = [_enlarge(to_unit(x)) for x in (x_t, x0, x0_c, x0_u)] + [heat]
    titles = [("x_t", f"t = {t:.3f}"), ("guided x0", f"w = {weight:g}"), ("x0 with the prompt", "from eps(x|c)"),
              ("x0 with the negative" if negative else "x0 without", "from eps(x|n)" if negative else "from eps(x|0)"),
              ("pull", f"eps(x|c) - eps(x|{'n' if negative else '0'})")]
    return _panels(pictures, titles), scale


def _caption(step: int, steps: int, t: float, weight: float, pull_rms: float = 0.0, scale: float = 0.0,
             negative: bool = False) -> str:
    empty = "n" if negative else "∅"
    if step == 0:
        return (f"**Step 0 of {steps}** · t = 1.000: pure noise x₁, the start of every run. Each step will predict the "
                f"noise twice, ε(x_t | c) and ε(x_t | {empty}), and mix them with w = {weight:g}.")
    where = "t = 0: the finished image" if step == steps else "t ↓ towards 0"
    return (f"**Step {step} of {steps}** · t = {t:.3f} ({where}) · w = {weight:g}: "
            f"ε̃ = ε(x_t | {empty}) + {weight:g} · (ε(x_t | c) − ε(x_t | {empty})). This step the pull "
            f"ε(x_t | c) − ε(x_t | {empty}) is {pull_rms:.3f} per pixel (rms; ε itself is about 1), so guidance moved "
            f"the noise estimate {weight:g} × {pull_rms:.3f} = {weight * pull_rms:.3f} from ε(x_t | {empty}). "
            f"Panels, first image: x_t after the step; three guesses of the clean image x̂₀ from the x_t the step "
            f"started at (guided, from ε(x_t | c) alone, from ε(x_t | {empty}) alone); the pull averaged over colour "
            f"channels: purple where the prompt predicts more noise (that spot gets darker), orange less (lighter), "
            f"full colour = ±{scale:.3f}.")


# --- generating with the step viewer ---------------------------------------------------------------

def generate(name, prompt, negative, weight, steps, seed, n):
    """n images for a prompt with classifier-free guidance, keeping a viewer frame per step for the first.
    Streams (final grid, frames state, viewer slider, viewer image, caption, note)."""
    import torch

    from core import diffusion, text_to_image
    from core.runtime import clamp_seed, make_generator

    pipeline = _pipeline(name)
    notes: list[str] = []
    prompt, negative = _text(prompt, "prompt", notes), _text(negative, "negative prompt", notes)
    weight, a = clamped(weight, DEFAULT_WEIGHT, *GUIDANCE_RANGE, "the guidance weight w")
    steps, b = clamped(steps, DEFAULT_STEPS, MIN_STEPS, MAX_STEPS, "DDIM steps", whole=True)
    n, c = clamped(n, 4, 1, MAX_IMAGES, "the number of images", whole=True)
    notes += [said.strip() for said in (a, b, c) if said]
    seed = clamp_seed(seed)
    condition, empty = read_prompts(pipeline, prompt, negative, notes)
    _warn(notes)
    model = pipeline.model
    sampler = diffusion.Sampler("DDIM", steps, 0.0, model.config.schedule)
    x = diffusion.start_noise(n, model.config, make_generator(seed))
    has_negative = bool(negative.strip())
    grey = torch.zeros_like(x[0])
    picture, _ = _framepicture(x[0], grey, grey, grey, grey, 1.0, weight, has_negative)
    frames = [(picture, _caption(0, steps, 1.0, weight, negative=has_negative))]
    status = lambda text: " ".join([*notes, text])  # noqa: E731
    yield None, frames, stepviewer.at_last(frames), frames[0][0], frames[0][1], status("Sampling…")
    last_yield = time.monotonic()
    weights = text_to_image.check_weight(weight)
    for frame in text_to_image.guided_denoise(model, sampler, x, condition, empty, weights, make_generator(seed)):
        pull = frame.pull[0]
        picture, scale = _framepicture(frame.x_t[0], frame.x0[0], frame.x0_conditional[0],
                                        frame.x0_unconditional[0], pull, frame.t, weight, has_negative)
        frames.append((picture, _caption(frame.step, steps, frame.t, weight, float(pull.pow(2).mean().sqrt()), scale,
                                         has_negative)))
        done = frame.step == steps
        if done or time.monotonic() - last_yield > 0.5:
            last_yield = time.monotonic()
            yield (_grid(diffusion.to_unit(frame.x_t)) if done else None, frames, stepviewer.at_last(frames),
                   frames[-1][0], frames[-1][1],
                   status(f"Done: {n} image(s) for seed {seed} at w = {weight:g}, {steps} DDIM steps." if done
                          else f"Step {frame.step} of {steps}…"))


# --- the same seed at several guidance weights -----------------------------------------------------

def _readings(pipeline, images, prompt: str) -> list[str]:
    """For each image, what a classifier reads of what the prompt asked: face attributes ✓/✗
    (core.text_to_image.adherence on that one image) or the Fashion-MNIST class."""
    from core import captions, text_to_image

    if pipeline.kind == "captions":
        claims = captions.parse_prompt(prompt).claims
        if not claims:
            return [""] * len(images)
        out = []
        for image in images:
            held = text_to_image.adherence(image[None], prompt)
            out.append(", ".join(f"{captions.PHRASES[claim]['tag'][0]} {'✓' if held[' '.join(claim)] >= 0.5 else '✗'}"
                                 for claim in claims))
        return out
    from core.data.fashion_mnist import CLASS_NAMES
    from core.metrics.classifiers import fashion_probabilities

    asked, _ = captions.fashion_classes_in(prompt)
    probabilities = fashion_probabilities(images, (0, 1))
    out = []
    for p in probabilities:
        top = int(p.argmax())
        mark = (" ✓" if top in asked else " ✗") if asked else ""
        out.append(f"reads as {CLASS_NAMES[top]} ({float(p[top]):.0%}){mark}")
    return out


def guidance_strip(name, prompt, negative, steps, seed):
    """The same start noise at w = 0, 1, 3 and 7.5 -> (gallery of labelled images, note)."""
    from core import text_to_image
    from core.runtime import clamp_seed

    pipeline = _pipeline(name)
    notes: list[str] = []
    prompt, negative = _text(prompt, "prompt", notes), _text(negative, "negative prompt", notes)
    steps, said = clamped(steps, DEFAULT_STEPS, MIN_STEPS, MAX_STEPS, "DDIM steps", whole=True)
    notes += [said.strip()] if said else []
    seed = clamp_seed(seed)
    read_prompts(pipeline, prompt, negative, notes)
    _warn(notes)
    images = text_to_image.guidance_strip(pipeline, prompt, seed, STRIP_WEIGHTS, steps, negative)
    try:
        readings = _readings(pipeline, images, prompt)
        checked = ""
    except ValueError as exc:  # the classifier is not shipped: the pictures still tell the story
        readings, checked = [""] * len(images), f" (No classifier reading: {exc})"
    gallery = [(_enlarge(image, STRIP_SHOW), f"w = {w:g}" + (f" · {r}" if r else ""))
               for image, w, r in zip(images, STRIP_WEIGHTS, readings)]
    what = ("the face-attribute classifier's reading of each asked attribute" if pipeline.kind == "captions"
            else "the Fashion-MNIST classifier's reading")
    note = (f"Seed {seed}, {steps} DDIM steps, the same start noise in every picture; only w changes. Labels: {what}"
            f"{checked}. w = 0 ignores the prompt; as w grows the picture commits to the prompt (more ✓) and loses "
            f"variety: try other seeds at w = 7.5 and they look alike.")
    return gallery, " ".join([*notes, note])


# --- CLIP ------------------------------------------------------------------------------------------

def _clip():
    from core.clip import load_model

    if not clip_shipped():
        raise ValueError(f"No CLIP model is shipped yet: train one with `{CLIP_COMMAND}`.")
    return load_model(CLIP_NAME)


@functools.lru_cache(maxsize=1)
def clip_index():
    """The test faces, their full captions, the facts each caption states, and the CLIP's unit embeddings of
    both: computed once per process, then only read."""
    from core import captions
    from core.clip import embed_images, embed_texts, test_set

    clip = _clip()
    images, texts = test_set(TEST_FACES, clip.config.image_size)
    facts = [dict(captions.parse_prompt(text).claims) for text in texts]  # a full caption states every family
    return images, tuple(texts), tuple(facts), embed_images(clip, images), embed_texts(clip, list(texts))


@functools.lru_cache(maxsize=1)
def tag_index():
    """Every single fact as a tag ("red hair", "no glasses"), with its (family, value) and embedding."""
    from core import captions
    from core.clip import embed_texts

    keys = list(captions.PHRASES)
    tags = [captions.PHRASES[key]["tag"][0] for key in keys]
    return tuple(tags), tuple(keys), embed_texts(_clip(), tags)


def search_faces(caption):
    """The test faces closest to a caption -> (gallery of (face, score), note)."""
    from core import captions
    from core.clip import embed_texts

    notes: list[str] = []
    text = _text(caption, "caption", notes)
    if not text.strip():
        raise ValueError("Type a caption to search for, for example “a person with red hair and glasses”.")
    prompt = captions.parse_prompt(text)
    if not any(w in captions.WORD_IDS for w in captions.words_of(text)):
        raise ValueError("None of these words is one the CLIP knows (it reads the faces' captions: hair colours, "
                         "glasses, smiling, long or short hair, bangs, skin, face and eye size): there is nothing to "
                         "search for.")
    if prompt.unknown:
        notes.append(f"Unknown words, left out: {', '.join(prompt.unknown[:10])}.")
    if prompt.contradictions:
        notes.append(f"The caption contradicts itself ({'; '.join(prompt.contradictions)}).")
    _warn(notes)
    images, _, facts, image_embeddings, _ = clip_index()
    similarity = image_embeddings @ embed_texts(_clip(), [text])[0]
    top = similarity.topk(TOP_FACES)
    gallery = [(_enlarge(images[i], STRIP_SHOW), f"face #{i} · cos {float(s):.2f}")
               for s, i in zip(top.values, top.indices.tolist())]
    found = [facts[i] for i in top.indices.tolist()]
    counts = [f"{captions.PHRASES[(f, v)]['tag'][0]}: {sum(fact.get(f) == v for fact in found)} of {TOP_FACES}"
              for f, v in prompt.claims]
    note = (f"The {TOP_FACES} of {len(images):,} test faces whose embeddings are closest to the caption's (cosine "
            f"similarity, highest first).")
    if counts:
        note += " Their true labels: " + "; ".join(counts) + "."
    return gallery, " ".join([*notes, note])


def _face(upload, index):
    """(the face as [1, 3, 32, 32] in [0, 1], its index in the test faces or None, notes)."""
    from core.data.images import center_crop_square, pil_to_tensor, prepare_image

    if upload is not None:
        image, notes = prepare_image(upload)
        size = image.size
        if size != (32, 32):
            notes.append(f"cropped to its centre square and resized from {size[0]}×{size[1]} to 32×32")
        return pil_to_tensor(center_crop_square(image, 32)), None, notes
    images = clip_index()[0]
    index = number(index, 0, 0, len(images) - 1, whole=True)
    return images[index:index + 1], index, []


def embed_face(x):
    """The CLIP's unit embedding [D] of one face [1, 3, 32, 32] in [0, 1]."""
    from core.clip import embed_images

    return embed_images(_clip(), x)[0]


def describe_face(upload, index):
    """A face (an upload, or test face #index) -> (the face enlarged, the tags ranked as a chart, note with
    the best full captions)."""
    x, index, notes = _face(upload, index)
    if notes:
        gr.Warning("The image was " + "; ".join(notes) + ".")
    _, texts, facts, _, caption_embeddings = clip_index()
    tags, keys, tag_embeddings = tag_index()
    u = embed_face(x)
    tag_similarity = tag_embeddings @ u
    order = tag_similarity.argsort(descending=True).tolist()
    truth = facts[index] if index is not None else None
    chart = _tag_chart([tags[i] for i in order], tag_similarity[order].tolist(),
                       None if truth is None else [truth.get(keys[i][0]) == keys[i][1] for i in order])
    caption_similarity = caption_embeddings @ u
    top = caption_similarity.topk(TOP_CAPTIONS)
    lines = [f"{k + 1}. {texts[i]} (cos {float(s):.2f})" + (" ← its own caption" if i == index else "")
             for k, (s, i) in enumerate(zip(top.values, top.indices.tolist()))]
    note = (f"**The {TOP_CAPTIONS} closest of the {len(texts):,} test captions:**\n\n" + "\n".join(lines))
    if index is not None:
        rank = int((caption_similarity > caption_similarity[index]).sum()) + 1
        note = (f"Test face #{index}. Its own caption ranks **{rank} of {len(texts):,}**: “{texts[index]}”. "
                "In the chart, green tags are true of this face.\n\n" + note)
    return _enlarge(x[0], 6), chart, note


def _tag_chart(tags: list[str], similarities: list[float], true: list[bool] | None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.6), dpi=90)
    colours = ["#999999"] * len(tags) if true is None else [PALETTE[2] if t else "#BBBBBB" for t in true]
    ax.barh(range(len(tags)), similarities, color=colours)
    ax.set_yticks(range(len(tags)), tags, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("cosine similarity of the face and the tag")
    ax.set_title("every single fact, ranked" + ("" if true is None else " (green: true of this face)"), fontsize=9)
    fig.tight_layout()
    return figure_to_image(fig)


def similarity_matrix(seed):
    """8 test faces × their 8 captions: the CLIP's cosine similarities as a heat map -> (image, note)."""
    import numpy as np

    from core.runtime import clamp_seed

    images, texts, _, image_embeddings, caption_embeddings = clip_index()
    seed = clamp_seed(seed)
    picks = np.arange(MATRIX_SIZE) if seed == 0 else \
        np.random.default_rng(seed).choice(len(images), MATRIX_SIZE, replace=False)
    picks = picks.tolist()
    matrix = (image_embeddings[picks] @ caption_embeddings[picks].T).numpy()
    plt = pyplot()
    fig = plt.figure(figsize=(6.6, 5.6), dpi=90)
    grid = fig.add_gridspec(MATRIX_SIZE, 3, width_ratios=[1, MATRIX_SIZE, 0.3], wspace=0.05, hspace=0.08,
                            left=0.02, right=0.92, top=0.94, bottom=0.13)
    heat = fig.add_subplot(grid[:, 1])
    shown = heat.imshow(matrix, cmap=SEQUENTIAL, aspect="auto", vmin=min(0.0, float(matrix.min())),
                        vmax=float(matrix.max()))
    for row in range(MATRIX_SIZE):
        for column in range(MATRIX_SIZE):
            heat.text(column, row, f"{matrix[row, column]:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if matrix[row, column] > 0.6 * matrix.max() else "white")
        face = fig.add_subplot(grid[row, 0])
        face.imshow(images[picks[row]].permute(1, 2, 0).numpy())
        face.set_axis_off()
    heat.set_xticks(range(MATRIX_SIZE), [f"caption {k + 1}" for k in range(MATRIX_SIZE)], rotation=45, fontsize=8)
    heat.set_yticks([])
    heat.set_title("faces (rows) × their captions (columns): cosine similarity", fontsize=9)
    fig.colorbar(shown, cax=fig.add_subplot(grid[:, 2]))
    image = figure_to_image(fig)
    diagonal = float(np.diag(matrix).mean())
    off = float((matrix.sum() - np.trace(matrix)) / (MATRIX_SIZE * (MATRIX_SIZE - 1)))
    own = int((matrix.argmax(1) == np.arange(MATRIX_SIZE)).sum())
    note = (f"Test faces {', '.join(f'#{i}' for i in picks)}. Mean similarity on the diagonal (a face and its own "
            f"caption) **{diagonal:.2f}**, off it **{off:.2f}**; {own} of {MATRIX_SIZE} faces are closest to their own "
            "caption. Training pushes exactly this: the diagonal up, the rest down.\n\n"
            + "\n".join(f"{k + 1}. {texts[i]}" for k, i in enumerate(picks)))
    return image, note


# --- layout ----------------------------------------------------------------------------------------

def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    choices = model_choices()
    if not choices:
        gr.Markdown("**No text-to-image model is shipped yet.** Train them with "
                    + " and ".join(f"`{c}`" for c in TRAIN_COMMANDS.values()) + " (see the README); "
                    "the CLIP part works on its own.")
    default = choices[0][1] if choices else None

    with gr.Tab("Generate and watch the guidance"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                    stop = gr.Button("Stop")
                note = gr.Markdown(elem_id="t2i-note")
                prompt = gr.Textbox(value=FASHION_PROMPTS[0] if MODELS.get(default) == "classes" else HELD_OUT_PROMPTS[0],
                                    lines=2, label="prompt (empty: any picture)", elem_id="t2i-prompt")
                weight = gr.Slider(*GUIDANCE_RANGE, value=DEFAULT_WEIGHT, step=0.5, label="guidance weight w")
                with gr.Row():
                    seed = gr.Number(0, label="seed", precision=0, minimum=0, min_width=80)
                    model = gr.Dropdown(choices, value=default, label="model", interactive=bool(choices),
                                        elem_id="t2i-model", min_width=160)
                with gr.Accordion("example prompts", open=False):
                    gr.Examples([[p] for p in HELD_OUT_PROMPTS], inputs=[prompt], api_visibility="private",
                                label="faces: combinations never seen in training (held out)")
                    gr.Examples([[p] for p in SEEN_PROMPTS], inputs=[prompt], api_visibility="private",
                                label="faces: the same colours in pairs seen in training")
                    gr.Examples([[p] for p in FASHION_PROMPTS], inputs=[prompt], api_visibility="private",
                                label="Fashion-MNIST: class names")
                with gr.Accordion("negative prompt, steps, images", open=False):
                    negative = gr.Textbox(value="", lines=1, label="negative prompt (replaces ∅; empty: none)")
                    steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="DDIM steps")
                    n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images")
                with gr.Accordion("words it knows", open=False):
                    words = gr.Markdown(vocabulary(default), elem_id="t2i-vocabulary")
                with gr.Accordion("model card: how it was trained", open=False):
                    card = gr.Markdown(model_card(default))
                    details = gr.Markdown(model_details(default))
            with gr.Column(scale=1):
                final = picture("images (t = 0)", "one per start noise of the seed; the viewer follows the first",
                                 elem_id="t2i-final")
            with gr.Column(scale=3):
                viewer = stepviewer.build(TAB, "step viewer, first image: x_t · guided x̂₀ · x̂₀ with the prompt · "
                                               "x̂₀ without · the pull ε(x|c) − ε(x|∅)",
                                          "step (0 = pure noise at t = 1 → last = image at t = 0)")
                caption("**The pull** (the last panel): ε(x|c) − ε(x|∅) averaged over the colour channels, on a "
                        "purple-white-orange scale set by its largest value this step: purple where the prompt "
                        "predicts more noise (that spot turns darker), orange less (lighter), white no difference.")
        with gr.Accordion("How it works: the text encoder, the U-Net, classifier-free guidance", open=False):
            with gr.Row():
                gr.Markdown(HOW)
                gr.Markdown(GUIDANCE)
        run = gr.on([go.click, page.ran.change], user_errors(on_gpu(GPU_SECONDS)(generate)),
                    [model, prompt, negative, weight, steps, seed, n],
                    [final, viewer.frames, viewer.position, viewer.picture, viewer.caption, note],
                    api_name="text_to_image_generate", **queue(TAB, 1))
        stop.click(None, None, None, cancels=[run], api_name="text_to_image_stop", api_visibility="private")
        stepviewer.wire(viewer, TAB, VIEW)
        page.link({"model": model, "prompt": prompt, "negative": negative, "w": weight, "steps": steps, "seed": seed,
                   "images": n})

    with gr.Tab("Same seed, four weights"):
        gr.Markdown(f"The prompt, negative prompt and model of the first panel, the same seed and the same start "
                    f"noise, at w = "
                    f"{', '.join(f'{w:g}' for w in STRIP_WEIGHTS)}: no prompt, the plain conditional model, guided, "
                    "strongly guided. On the faces, each picture is labelled with what the face-attribute classifier "
                    "(a separate network, trained on the faces' exact labels) reads of each attribute you asked for.")
        with gr.Row():
            strip_steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="DDIM steps")
            strip_seed = gr.Number(0, label="seed", precision=0, minimum=0)
            strip_go = gr.Button("Compare the weights", variant="primary", elem_id="t2i-strip-go")
        caption("**w = 0, 1, 3, 7.5, left to right**: one picture per guidance weight from the same start noise; "
                "under each, w and the classifier's reading of what the prompt asked (✓ it sees it, ✗ it does not).")
        strip = gr.Gallery(label="w = 0, 1, 3, 7.5", columns=len(STRIP_WEIGHTS), height=340, object_fit="contain",
                           format="png", elem_id="t2i-strip")
        strip_note = gr.Markdown()
        strip_go.click(user_errors(on_gpu(GPU_SECONDS)(guidance_strip)),
                       [model, prompt, negative, strip_steps, strip_seed], [strip, strip_note],
                       api_name="text_to_image_guidance_strip", **queue(TAB, 1))

    with gr.Tab("CLIP: faces and captions"):
        gr.Markdown(CLIP_INTRO)
        if not clip_shipped():
            gr.Markdown(f"**No CLIP model is shipped yet.** Train one with `{CLIP_COMMAND}`.")
        gr.Markdown(clip_card())
        gr.Markdown("#### A caption finds faces")
        with gr.Row():
            query = gr.Textbox(value="a person with red hair and glasses", label="caption", scale=3)
            search_go = gr.Button("Search the test faces", variant="primary", elem_id="t2i-clip-search", scale=1)
        caption(f"**The {TOP_FACES} closest test faces**, most similar first; under each, its number in the test "
                "faces and the cosine similarity of its embedding and the caption's (1: the same direction).")
        found = gr.Gallery(label=f"the {TOP_FACES} closest test faces", columns=TOP_FACES, height=200,
                           object_fit="contain", format="png", elem_id="t2i-clip-found")
        found_note = gr.Markdown()
        search_go.click(user_errors(on_gpu(GPU_SECONDS)(search_faces)), query, [found, found_note],
                        api_name="text_to_image_clip_search", **queue(VIEW, 4))
        gr.Markdown("#### A face finds captions")
        with gr.Row():
            with gr.Column(scale=1):
                upload = image_upload("upload a face (cropped to 32×32)…", sources=["upload"])
                index = gr.Number(0, label=f"…or test face # (0–{TEST_FACES - 1})", precision=0, minimum=0,
                                  maximum=TEST_FACES - 1)
                describe_go = gr.Button("Rank the captions", variant="primary", elem_id="t2i-clip-describe")
                face = picture("the face", "the 32×32 face the CLIP reads, enlarged six times")
            with gr.Column(scale=2):
                tags = picture("tags ranked", "one bar per single fact (“red hair”, “no glasses”), longest first: "
                                "across, the cosine similarity of the face's embedding and the tag's; for a test face, "
                                "green bars are true of it and grey ones are not", elem_id="t2i-clip-tags")
            with gr.Column(scale=2):
                described = gr.Markdown()
        describe_go.click(user_errors(on_gpu(GPU_SECONDS)(describe_face)), [upload, index], [face, tags, described],
                          api_name="text_to_image_clip_describe", **queue(VIEW, 4))
        gr.Markdown("#### The similarity matrix of one batch")
        with gr.Row():
            batch_seed = gr.Number(0, label="batch (0: the first 8 test faces; other numbers: 8 at random)",
                                   precision=0, minimum=0)
            matrix_go = gr.Button("Draw the matrix", variant="primary", elem_id="t2i-clip-matrix")
        with gr.Row():
            with gr.Column(scale=3):
                matrix = picture("similarity matrix", "rows: eight test faces (drawn at the left); columns: their "
                                  "eight captions, in the same order (listed beside); each cell the cosine "
                                  "similarity, on the viridis scale, dark purple low to yellow high: a bright "
                                  "diagonal means each face is closest to its own caption",
                                  elem_id="t2i-clip-matrix-image")
            matrix_note = gr.Markdown()
        matrix_go.click(user_errors(on_gpu(GPU_SECONDS)(similarity_matrix)), batch_seed, [matrix, matrix_note],
                        api_name="text_to_image_clip_matrix", **queue(VIEW, 4))

    model.change(describe_model, [model, prompt], [card, details, words, prompt], api_name="text_to_image_model_card",
                 api_visibility="private", **queue(VIEW, 8))
    return page
