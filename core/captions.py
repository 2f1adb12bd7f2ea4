"""Captions for the synthetic faces, written from their exact labels, and the words the lab understands.

Text-to-image needs (image, caption) pairs. Scraped captions are noisy and unmeasurable; ours come
from the faces' exact attributes (core.data.faces), so "does the picture have red hair?" has a true
answer for every prompt. The wording and order vary ("a smiling person with red hair and glasses",
"red-haired, glasses, not smiling"), and each caption mentions only some attributes, as people do.

A few attribute *combinations* are held out: no face that has one of them is used to train the CLIP
or the text-conditional diffusion model, so prompting for one tests composition, not memory.

    captions_for(labels, rng)      # one caption per face (numpy Generator: reproducible)
    parse_prompt("red hair, glasses")  # -> Prompt(claims, unknown words, contradictions)
    tokenize(["a smiling person"])     # -> LongTensor [N, CONTEXT] of word ids

Fashion-MNIST's prompts are simpler: a class name ("a sneaker"), parsed by `fashion_classes_in`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from core.data.faces import HAIR_COLOURS

# (family, value) -> phrasings. A family is one thing a caption can say about a face; "hair" is the
# colour (one of five), "skin" is pale, medium or dark (the faces' two skin labels and neither).
#   with: said after "a person with ..."     tag: said alone in a list     adjective: before "person"
PHRASES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("smiling", "yes"): {"with": ["a smile"], "tag": ["smiling"], "adjective": ["smiling"]},
    ("smiling", "no"): {"with": ["a straight face"], "tag": ["not smiling", "serious"], "adjective": ["serious"]},
    ("mouth_open", "yes"): {"with": ["an open mouth"], "tag": ["mouth open", "open mouth"], "adjective": []},
    ("mouth_open", "no"): {"with": ["a closed mouth"], "tag": ["mouth closed", "closed mouth"], "adjective": []},
    ("eyeglasses", "yes"): {"with": ["glasses", "eyeglasses"], "tag": ["glasses", "wearing glasses"], "adjective": []},
    ("eyeglasses", "no"): {"with": ["no glasses"], "tag": ["no glasses"], "adjective": []},
    ("hair", "black"): {"with": ["black hair"], "tag": ["black hair", "black-haired"], "adjective": ["black-haired"]},
    ("hair", "brown"): {"with": ["brown hair"], "tag": ["brown hair", "brown-haired"], "adjective": ["brown-haired"]},
    ("hair", "blond"): {"with": ["blond hair", "blonde hair"], "tag": ["blond hair", "blond"], "adjective": ["blond"]},
    ("hair", "red"): {"with": ["red hair", "ginger hair"], "tag": ["red hair", "red-haired"], "adjective": ["red-haired"]},
    ("hair", "gray"): {"with": ["gray hair", "grey hair"], "tag": ["gray hair", "grey-haired"], "adjective": ["grey-haired"]},
    ("long_hair", "yes"): {"with": ["long hair"], "tag": ["long hair", "long-haired"], "adjective": ["long-haired"]},
    ("long_hair", "no"): {"with": ["short hair"], "tag": ["short hair", "short-haired"], "adjective": ["short-haired"]},
    ("bangs", "yes"): {"with": ["bangs", "a fringe"], "tag": ["bangs"], "adjective": []},
    ("bangs", "no"): {"with": ["no bangs"], "tag": ["no bangs"], "adjective": []},
    ("skin", "pale"): {"with": ["pale skin", "fair skin"], "tag": ["pale skin", "pale"], "adjective": ["pale"]},
    ("skin", "medium"): {"with": ["medium skin"], "tag": ["medium skin"], "adjective": []},
    ("skin", "dark"): {"with": ["dark skin"], "tag": ["dark skin", "dark-skinned"], "adjective": ["dark-skinned"]},
    ("wide_face", "yes"): {"with": ["a wide face", "a round face"], "tag": ["wide face"], "adjective": []},
    ("wide_face", "no"): {"with": ["a narrow face"], "tag": ["narrow face"], "adjective": []},
    ("big_eyes", "yes"): {"with": ["big eyes", "large eyes"], "tag": ["big eyes"], "adjective": ["big-eyed"]},
    ("big_eyes", "no"): {"with": ["small eyes"], "tag": ["small eyes"], "adjective": []},
}
FAMILIES = list(dict.fromkeys(family for family, _ in PHRASES))
SUBJECTS = ["person", "face", "portrait"]

# Attribute pairs no training face has (so no training caption says): prompting for one tests composition.
HELD_OUT = [(("hair", "red"), ("eyeglasses", "yes")),
            (("hair", "blond"), ("skin", "dark")),
            (("hair", "gray"), ("smiling", "yes"))]
# The same hair colours and second attributes in pairs that training does see, for the comparison.
SEEN = [(("hair", "red"), ("smiling", "yes")),
        (("hair", "blond"), ("eyeglasses", "yes")),
        (("hair", "gray"), ("skin", "dark"))]


def facts(labels: dict[str, torch.Tensor], i: int) -> dict[str, str]:
    """What is true of face i, family by family (labels as core.data.faces makes them)."""
    yes = lambda name: "yes" if bool(labels[name][i]) else "no"
    hair = next(c for c in HAIR_COLOURS if bool(labels[f"{c}_hair"][i]))
    skin = "pale" if bool(labels["pale_skin"][i]) else "dark" if bool(labels["dark_skin"][i]) else "medium"
    return {"smiling": yes("smiling"), "mouth_open": yes("mouth_open"), "eyeglasses": yes("eyeglasses"),
            "hair": hair, "long_hair": yes("long_hair"), "bangs": yes("bangs"), "skin": skin,
            "wide_face": yes("wide_face"), "big_eyes": yes("big_eyes")}


def holds_out(fact: dict[str, str]) -> bool:
    """True when a face has one of the held-out combinations (it is then never trained on)."""
    return any(all(fact[family] == value for family, value in pair) for pair in HELD_OUT)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def write_caption(fact: dict[str, str], rng: np.random.Generator, families: list[str] | None = None) -> str:
    """One caption of a face: a random subset of its facts (or `families`), in a random order and style."""
    if families is None:
        # Hair colour is the most visible family: mentioned more often than the others.
        weights = np.array([3.0 if f == "hair" else 1.0 for f in FAMILIES])
        k = int(rng.integers(1, len(FAMILIES) + 1))
        families = list(rng.choice(FAMILIES, size=k, replace=False, p=weights / weights.sum()))
    said = [(f, fact[f]) for f in families]
    pick = lambda options: options[int(rng.integers(len(options)))]
    if rng.random() < 0.4:  # a list of tags: "red-haired, glasses, not smiling"
        return ", ".join(pick(PHRASES[s]["tag"]) for s in said)
    adjectives = [s for s in said if PHRASES[s]["adjective"] and rng.random() < 0.5][:2]
    rest = [s for s in said if s not in adjectives]
    subject = " ".join([pick(PHRASES[s]["adjective"]) for s in adjectives] + [pick(SUBJECTS)])
    caption = ("a photo of a " if rng.random() < 0.3 else "a ") + subject
    if rest:
        caption += " with " + _join([pick(PHRASES[s]["with"]) for s in rest])
    return caption


def captions_for(labels: dict[str, torch.Tensor], rng: np.random.Generator, full: bool = False) -> list[str]:
    """One caption per face; `full` mentions every family (an unambiguous description, for retrieval)."""
    n = len(next(iter(labels.values())))
    return [write_caption(facts(labels, i), rng, list(FAMILIES) if full else None) for i in range(n)]


def caption_of_pair(pair) -> str:
    """A plain caption of an attribute pair, as the benchmark and the tab's examples prompt with it."""
    (f1, v1), (f2, v2) = pair
    return f"a person with {PHRASES[(f1, v1)]['with'][0]} and {PHRASES[(f2, v2)]['with'][0]}"


# --- words ---------------------------------------------------------------------------------

CONTEXT = 32            # words a caption may have (after the start and end marks); longer ones are cut
PAD, START, END = 0, 1, 2
_FILLERS = ["a", "an", "photo", "of", "with", "and", "no", "not", "wearing", *SUBJECTS]


def words_of(text: str) -> list[str]:
    """Lower-case words, hyphens and punctuation as separators: 'Red-haired,' -> ['red', 'haired']."""
    return re.findall(r"[a-z]+", str(text).lower())


VOCABULARY = sorted({w for phrasing in PHRASES.values() for options in phrasing.values()
                     for option in options for w in words_of(option)} | set(_FILLERS))
WORD_IDS = {word: i + 3 for i, word in enumerate(VOCABULARY)}  # 0, 1, 2: padding, start, end
VOCABULARY_SIZE = len(VOCABULARY) + 3


def tokenize(texts: list[str]) -> torch.Tensor:
    """Word ids [N, CONTEXT + 2]: start, the known words (unknown ones left out, more than CONTEXT cut),
    end, padding. The empty caption is just start and end: the text encoder's embedding of ∅."""
    out = torch.full((len(texts), CONTEXT + 2), PAD, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [WORD_IDS[w] for w in words_of(text) if w in WORD_IDS][:CONTEXT]
        out[row, :len(ids) + 2] = torch.tensor([START, *ids, END])
    return out


@dataclass
class Prompt:
    claims: list[tuple[str, str]]      # (family, value) pairs the prompt asks for, in order
    unknown: list[str]                 # words outside the vocabulary (the encoder never sees them)
    contradictions: list[str]          # families asked for twice with different values
    cut: bool                          # longer than CONTEXT known words: the end was cut off


# Every phrasing's word sequence -> what it claims, longest first so "no glasses" wins over "glasses".
_CLAIMS = sorted({tuple(words_of(option)): key for key, phrasing in PHRASES.items()
                  for options in phrasing.values() for option in options}.items(), key=lambda kv: -len(kv[0]))


def parse_prompt(text: str) -> Prompt:
    """What a face prompt asks for, read with the captions' own phrasings (not by the model: this is
    how the lab checks a prompt and scores a picture against it)."""
    words = words_of(text)
    claims, i = [], 0
    while i < len(words):
        match = next(((seq, key) for seq, key in _CLAIMS if tuple(words[i:i + len(seq)]) == seq), None)
        if match:
            claims.append(match[1])
            i += len(match[0])
        else:
            i += 1
    values: dict[str, set[str]] = {}
    for family, value in claims:
        values.setdefault(family, set()).add(value)
    contradictions = [f"{family.replace('_', ' ')}: {' and '.join(sorted(v))}" for family, v in values.items() if len(v) > 1]
    known = [w for w in words if w in WORD_IDS]
    return Prompt(list(dict.fromkeys(claims)), list(dict.fromkeys(w for w in words if w not in WORD_IDS)),
                  contradictions, len(known) > CONTEXT)


def labels_of(claim: tuple[str, str]) -> list[tuple[str, bool]]:
    """The face labels (core.data.faces.FACE_ATTRIBUTES) that tell whether a claim holds, each with the
    value it must have: ("hair", "red") -> [("red_hair", True)]; medium skin is neither pale nor dark."""
    family, value = claim
    if family == "hair":
        return [(f"{value}_hair", True)]
    if family == "skin":
        return [("pale_skin", value == "pale"), ("dark_skin", value == "dark")]
    return [(family, value == "yes")]


# --- Fashion-MNIST: class names --------------------------------------------------------------

FASHION_NAMES = {  # class index -> the words that name it
    0: ["t-shirt", "tshirt", "top", "tee"], 1: ["trousers", "trouser", "pants"], 2: ["pullover", "sweater", "jumper"],
    3: ["dress"], 4: ["coat", "jacket"], 5: ["sandal", "sandals"], 6: ["shirt"], 7: ["sneaker", "sneakers", "trainer"],
    8: ["bag", "handbag"], 9: ["ankle boot", "boot", "boots"],
}
FASHION_VOCABULARY = sorted({w for names in FASHION_NAMES.values() for name in names for w in words_of(name)})


def fashion_classes_in(text: str) -> tuple[list[int], list[str]]:
    """The Fashion-MNIST classes a prompt names (in order, each once) and the words it does not know."""
    words = words_of(text)
    names = sorted(((tuple(words_of(n)), c) for c, ns in FASHION_NAMES.items() for n in ns), key=lambda kv: -len(kv[0]))
    classes, used, i = [], set(), 0
    while i < len(words):
        # "t-shirt" reads as the words t, shirt: the longer name wins over "shirt"
        match = next(((seq, c) for seq, c in names if tuple(words[i:i + len(seq)]) == seq), None)
        if match:
            classes.append(match[1])
            used.update(range(i, i + len(match[0])))
            i += len(match[0])
        else:
            i += 1
    unknown = [w for j, w in enumerate(words) if j not in used and w not in ("a", "an", "the", "of", "photo", "and")]
    return list(dict.fromkeys(classes)), list(dict.fromkeys(unknown))
