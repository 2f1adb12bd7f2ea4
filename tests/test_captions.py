"""Captions of the synthetic faces: written from the exact labels, read back exactly by parse_prompt."""
import numpy as np
import pytest
import torch

from core import captions
from core.captions import (CONTEXT, END, FAMILIES, HELD_OUT, PAD, SEEN, START, WORD_IDS, captions_for, facts,
                           fashion_classes_in, holds_out, labels_of, parse_prompt, tokenize, write_caption)
from core.data.faces import FACE_ATTRIBUTES, face_split


@pytest.fixture(scope="module")
def faces():
    return face_split("train", 300, size=16)


def claim_holds(labels, i, claim) -> bool:
    """Whether face i has what the claim says, read off the face labels themselves (not `facts`)."""
    return all(bool(labels[name][i]) == wanted for name, wanted in labels_of(claim))


def test_facts_are_the_face_labels(faces):
    labels = faces.labels
    for i in range(len(faces.images)):
        fact = facts(labels, i)
        assert list(fact) == FAMILIES
        for family, value in fact.items():
            assert claim_holds(labels, i, (family, value)), (i, family, value)
        # exactly one hair colour, at most one skin label: the families' values are one of a kind
        assert sum(bool(labels[f"{c}_hair"][i]) for c in captions.HAIR_COLOURS) == 1
        assert not (bool(labels["pale_skin"][i]) and bool(labels["dark_skin"][i]))


def test_every_claim_a_caption_makes_is_true_of_its_face(faces):
    labels = faces.labels
    rng = np.random.default_rng(0)
    said = set()
    for round_ in range(4):  # 1200 captions: every style and phrasing turns up many times
        texts = captions_for(labels, rng)
        for i, text in enumerate(texts):
            prompt = parse_prompt(text)
            assert prompt.claims, text  # every caption says something
            assert not prompt.unknown and not prompt.contradictions and not prompt.cut, (text, prompt)
            for claim in prompt.claims:
                assert claim_holds(labels, i, claim), (i, text, claim)
            families = [family for family, _ in prompt.claims]
            assert len(families) == len(set(families)), text  # each family said once
            said.update(prompt.claims)
    # the random captions between them use every (family, value) phrase family
    assert said == set(captions.PHRASES)


def test_full_captions_state_every_family_exactly(faces):
    labels = faces.labels
    texts = captions_for(labels, np.random.default_rng(1), full=True)
    assert len(texts) == len(faces.images)
    for i, text in enumerate(texts):
        prompt = parse_prompt(text)
        assert not prompt.unknown and not prompt.contradictions, text
        assert dict(prompt.claims) == facts(labels, i), text


def test_captions_are_reproducible_and_varied(faces):
    a = captions_for(faces.labels, np.random.default_rng(5))
    b = captions_for(faces.labels, np.random.default_rng(5))
    c = captions_for(faces.labels, np.random.default_rng(6))
    assert a == b and a != c
    assert len(set(a)) > len(a) // 2  # many wordings, not one template
    fact = facts(faces.labels, 0)
    chosen = write_caption(fact, np.random.default_rng(0), ["hair", "eyeglasses"])
    assert [family for family, _ in parse_prompt(chosen).claims] in (["hair", "eyeglasses"], ["eyeglasses", "hair"])


def test_held_out_combinations_never_reach_training(faces):
    from core.clip import training_faces

    n = 400
    images, kept, description = training_faces(n, 16)
    batch = face_split("train", n, size=16)
    every = [facts(batch.labels, i) for i in range(n)]
    held = [i for i in range(n) if holds_out(every[i])]
    assert held, "400 faces should include some with a held-out combination"
    keep = [i for i in range(n) if i not in held]
    assert len(images) == len(kept) == len(keep) == n - len(held)
    assert torch.equal(images, batch.images[keep]) and kept == [every[i] for i in keep]
    assert f"less the {len(held)} with a held-out combination" in description
    for fact in kept:
        for pair in HELD_OUT:
            assert not all(fact[family] == value for family, value in pair), (fact, pair)
    # ... checked on the labels too, and the comparison pairs are still there
    for i in keep:
        for pair in HELD_OUT:
            assert not all(claim_holds(batch.labels, i, claim) for claim in pair), (i, pair)
    for pair in SEEN:
        assert any(all(fact[family] == value for family, value in pair) for fact in kept), pair
    # and every held-out pair really occurs among the faces left out (so leaving them out did something)
    for pair in HELD_OUT:
        assert any(all(every[i][family] == value for family, value in pair) for i in held), pair


def test_a_prompt_for_a_held_out_pair_parses_to_that_pair():
    for pair in HELD_OUT + SEEN:
        prompt = parse_prompt(captions.caption_of_pair(pair))
        assert prompt.claims == list(pair), pair
        assert not prompt.unknown and not prompt.contradictions


def test_parse_prompt_reports_unknown_words_contradictions_and_cut():
    prompt = parse_prompt("A zebra-striped person with red hair, wearing sunglasses")
    assert prompt.claims == [("hair", "red")]
    assert prompt.unknown == ["zebra", "striped", "sunglasses"]
    assert not prompt.contradictions and not prompt.cut

    prompt = parse_prompt("red hair, black hair")
    assert prompt.claims == [("hair", "red"), ("hair", "black")]
    assert prompt.contradictions == ["hair: black and red"]
    assert parse_prompt("smiling, not smiling").contradictions == ["smiling: no and yes"]
    assert parse_prompt("mouth open, closed mouth").contradictions == ["mouth open: no and yes"]
    assert parse_prompt("red hair, red-haired").contradictions == []  # the same fact twice is no contradiction
    assert parse_prompt("red hair, red-haired").claims == [("hair", "red")]

    # "no glasses" is one claim (eyeglasses no), not "glasses" preceded by a filler
    assert parse_prompt("a person with no glasses").claims == [("eyeglasses", "no")]
    assert parse_prompt("not smiling").claims == [("smiling", "no")]

    assert not parse_prompt(" ".join(["glasses"] * CONTEXT)).cut
    assert parse_prompt(" ".join(["glasses"] * (CONTEXT + 1))).cut
    # unknown words do not count towards the cut
    assert not parse_prompt(" ".join(["glasses"] * CONTEXT + ["zebra"] * 10)).cut
    empty = parse_prompt("")
    assert empty.claims == [] and empty.unknown == [] and empty.contradictions == [] and not empty.cut


def test_tokenize_marks_start_and_end_leaves_out_unknown_words_and_cuts():
    tokens = tokenize(["", "a person with glasses", "a zebra person with purple glasses"])
    assert tokens.dtype == torch.long and tokens.shape == (3, CONTEXT + 2)
    assert tokens[0].tolist() == [START, END] + [PAD] * CONTEXT  # the empty caption: ∅
    ids = [WORD_IDS[w] for w in ("a", "person", "with", "glasses")]
    assert tokens[1].tolist() == [START, *ids, END] + [PAD] * (CONTEXT - 4)
    assert torch.equal(tokens[2], tokens[1])  # unknown words left out
    assert torch.equal(tokenize(["zebra quantum"]), tokenize([""]))  # only unknown words: ∅
    assert torch.equal(tokenize(["Red-Haired, GLASSES!"]), tokenize(["red haired glasses"]))

    long = tokenize([" ".join(["glasses", "smiling"] * 30)])  # 60 known words
    assert long.shape == (1, CONTEXT + 2)
    assert long[0, 0] == START and long[0, -1] == END and (long[0] == PAD).sum() == 0
    assert long[0, 1:-1].tolist() == [WORD_IDS["glasses"], WORD_IDS["smiling"]] * (CONTEXT // 2)
    exact = tokenize([" ".join(["glasses"] * CONTEXT)])
    assert exact[0, -1] == END and (exact[0] == WORD_IDS["glasses"]).sum() == CONTEXT
    assert all(0 < i < captions.VOCABULARY_SIZE for i in WORD_IDS.values())
    assert len(set(WORD_IDS.values())) == len(WORD_IDS) and min(WORD_IDS.values()) == 3


def test_labels_of_names_face_attributes_and_reads_skin_three_ways():
    assert labels_of(("skin", "pale")) == [("pale_skin", True), ("dark_skin", False)]
    assert labels_of(("skin", "medium")) == [("pale_skin", False), ("dark_skin", False)]
    assert labels_of(("skin", "dark")) == [("pale_skin", False), ("dark_skin", True)]
    assert labels_of(("hair", "red")) == [("red_hair", True)]
    assert labels_of(("eyeglasses", "no")) == [("eyeglasses", False)]
    assert labels_of(("smiling", "yes")) == [("smiling", True)]
    for claim in captions.PHRASES:
        for name, _ in labels_of(claim):
            assert name in FACE_ATTRIBUTES, claim


def test_fashion_classes_in_prompts():
    assert fashion_classes_in("a t-shirt") == ([0], [])      # t, shirt: the longer name, not shirt (6)
    assert fashion_classes_in("a shirt") == ([6], [])
    assert fashion_classes_in("an ankle boot") == ([9], [])  # not an unknown "ankle" and a boot
    assert fashion_classes_in("boots") == ([9], [])
    assert fashion_classes_in("A Sneaker and a bag") == ([7, 8], [])
    assert fashion_classes_in("a sneaker, a sneaker") == ([7], [])  # each class once
    assert fashion_classes_in("a shiny red sneaker") == ([7], ["shiny", "red"])
    assert fashion_classes_in("a zebra") == ([], ["zebra"])
    assert fashion_classes_in("") == ([], [])
    for c, names in captions.FASHION_NAMES.items():
        for name in names:
            assert fashion_classes_in(f"a photo of a {name}") == ([c], []), name
