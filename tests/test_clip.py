"""The tiny CLIP: its symmetric contrastive loss, the learned temperature, and that training on a
handful of captioned faces makes matching pairs the most similar."""
import math

import numpy as np
import pytest
import torch

import core.clip
from core.captions import FAMILIES, HAIR_COLOURS, write_caption
from core.clip import ClipConfig, TinyCLIP, contrastive_loss, retrieval_accuracy, training_faces
from core.runtime import make_generator
from tests.conftest import require

TINY = dict(image_size=16, widths=(8, 16), text_width=32, text_layers=1, heads=2, embedding_dim=16)
N_FACES, STEPS = 64, 100


def tiny_clip(seed=0) -> TinyCLIP:
    torch.manual_seed(seed)  # weights only; training draws from an explicit generator
    return TinyCLIP(ClipConfig(**TINY))


def full_caption(fact, seed=0) -> str:
    return write_caption(fact, np.random.default_rng(seed), list(FAMILIES))


def opposite(fact: dict) -> dict:
    """A face that differs in every family: each yes/no flipped, another hair colour and skin."""
    other = {"yes": "no", "no": "yes"}
    out = {family: other.get(value, value) for family, value in fact.items()}
    out["hair"] = HAIR_COLOURS[(HAIR_COLOURS.index(fact["hair"]) + 2) % len(HAIR_COLOURS)]
    out["skin"] = {"pale": "dark", "medium": "pale", "dark": "pale"}[fact["skin"]]
    assert all(out[f] != fact[f] for f in FAMILIES)
    return out


@pytest.fixture(scope="module")
def trained():
    """A tiny CLIP trained (core.clip.train, as called from Python) on 64 faces for 100 steps."""
    images, fact, _ = training_faces(80, 16)
    images, fact = images[:N_FACES], fact[:N_FACES]
    model = tiny_clip()
    start = model.log_inverse_temperature.item()
    events = list(core.clip.train(model, images, fact, STEPS, N_FACES, 0.03, 0.0, make_generator(0)))
    model.eval()
    return model, images, fact, events, start


# --- the loss ------------------------------------------------------------------------------

def test_contrastive_loss_is_symmetric_and_log_n_for_a_constant_matrix():
    for n in (1, 2, 7, 64):
        assert contrastive_loss(torch.full((n, n), 3.7)).item() == pytest.approx(math.log(n), abs=1e-5)
    s = torch.randn(6, 6, generator=make_generator(0)) * 3
    assert contrastive_loss(s).item() == pytest.approx(contrastive_loss(s.T).item(), abs=1e-6)
    # ... the mean of the two cross-entropies, by hand: rows pick captions, columns pick images
    rows = -s.log_softmax(dim=1).diagonal().mean()
    columns = -s.log_softmax(dim=0).diagonal().mean()
    assert rows.item() != pytest.approx(columns.item(), abs=1e-3)  # a matrix where the two directions differ
    assert contrastive_loss(s).item() == pytest.approx(((rows + columns) / 2).item(), abs=1e-5)


def test_contrastive_loss_rewards_the_diagonal():
    n = 8
    right = torch.eye(n) * 20            # every image most similar to its own caption
    wrong = torch.eye(n).roll(1, dims=1) * 20  # ... to the next one's
    assert contrastive_loss(right).item() < 1e-6
    assert contrastive_loss(wrong).item() > 19
    # one column's image picks the wrong caption: only half of that pair's two terms suffer
    half = torch.eye(n) * 20
    half[0, 1] = 40  # image 0 prefers caption 1; caption 1 prefers image 0
    row_loss = torch.nn.functional.cross_entropy(half, torch.arange(n))
    col_loss = torch.nn.functional.cross_entropy(half.T, torch.arange(n))
    assert contrastive_loss(half).item() == pytest.approx(((row_loss + col_loss) / 2).item(), abs=1e-5)


def test_similarity_caps_the_inverse_temperature_at_100():
    model = tiny_clip()
    u = torch.nn.functional.normalize(torch.randn(3, 16, generator=make_generator(1)), dim=-1)
    with torch.no_grad():
        assert torch.allclose(model.similarity(u, u).diagonal(), torch.full((3,), 1 / 0.07), atol=1e-4)
        model.log_inverse_temperature.fill_(math.log(1000))
        assert torch.allclose(model.similarity(u, u).diagonal(), torch.full((3,), 100.0), atol=1e-3)
        model.log_inverse_temperature.fill_(math.log(10))
        assert torch.allclose(model.similarity(u, u), 10 * u @ u.T, atol=1e-5)


def test_encoders_give_unit_vectors():
    model = tiny_clip().eval()
    images = torch.rand(5, 3, 16, 16, generator=make_generator(2))
    u = model.encode_images(images)
    v = model.encode_texts(["", "red hair", "a smiling person with glasses", "zebra"])
    assert u.shape == (5, 16) and v.shape == (4, 16)
    assert torch.allclose(u.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(v.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(v[0], v[3])  # a caption of unknown words is the empty caption
    assert not torch.allclose(v[0], v[1])
    # batch-independent: one caption alone embeds as it does among others
    assert torch.allclose(model.encode_texts(["red hair"])[0], v[1], atol=1e-5)
    empty = core.clip.embed_texts(model, [])
    assert empty.shape == (0, 16)


def test_retrieval_accuracy_on_crafted_embeddings(monkeypatch):
    model = tiny_clip()
    # Perfect: image i and caption i share a direction no other pair has.
    monkeypatch.setattr(core.clip, "embed_images", lambda m, images: torch.eye(6))
    monkeypatch.setattr(core.clip, "embed_texts", lambda m, texts: torch.eye(6))
    perfect = retrieval_accuracy(model, torch.zeros(6, 3, 16, 16), ["x"] * 6)
    assert perfect == {"text_to_image_top1": 1.0, "image_to_text_top1": 1.0,
                       "text_to_image_top5": 1.0, "image_to_text_top5": 1.0}
    # Similarity [image, caption] where the two directions disagree: image 1's best caption is caption 1,
    # but caption 1's best image is image 0 (0.9 > 0.5). Ties are avoided by small distinct offsets.
    s = torch.eye(4) + torch.arange(16.0).reshape(4, 4) * 1e-3
    s[0, 1], s[1, 1] = 0.9, 0.5
    monkeypatch.setattr(core.clip, "embed_images", lambda m, images: s)
    monkeypatch.setattr(core.clip, "embed_texts", lambda m, texts: torch.eye(4))
    mixed = retrieval_accuracy(model, torch.zeros(4, 3, 16, 16), ["x"] * 4, ks=(1, 2))
    assert mixed["image_to_text_top1"] == 1.0
    assert mixed["text_to_image_top1"] == 0.75
    assert mixed["text_to_image_top2"] == 1.0 and mixed["image_to_text_top2"] == 1.0
    # Everything shifted by one: nothing is found first.
    monkeypatch.setattr(core.clip, "embed_images", lambda m, images: torch.eye(5) * 2 + torch.eye(5).roll(1, 1))
    monkeypatch.setattr(core.clip, "embed_texts", lambda m, texts: torch.eye(5).roll(1, 0))
    shifted = retrieval_accuracy(model, torch.zeros(5, 3, 16, 16), ["x"] * 5, ks=(1,))
    assert shifted == {"text_to_image_top1": 0.0, "image_to_text_top1": 0.0}


def test_retrieval_accuracy_with_fewer_items_than_k(monkeypatch):
    # "Is image i among the k most similar?" is always true when k >= N. (The trainer measures top-5 at
    # every save: `--test-faces 3` must not crash at the end of training and lose the run.)
    monkeypatch.setattr(core.clip, "embed_images", lambda m, images: torch.eye(3).roll(1, 1))
    monkeypatch.setattr(core.clip, "embed_texts", lambda m, texts: torch.eye(3))
    few = retrieval_accuracy(tiny_clip(), torch.zeros(3, 3, 16, 16), ["x"] * 3)
    assert few["text_to_image_top1"] == 0.0 and few["image_to_text_top1"] == 0.0
    assert few["text_to_image_top5"] == 1.0 and few["image_to_text_top5"] == 1.0


# --- training ----------------------------------------------------------------------------

def test_the_contrastive_loss_falls_on_a_tiny_set(trained):
    model, images, fact, events, start = trained
    assert [e["step"] for e in events] == list(range(1, STEPS + 1))
    losses = [e["loss"] for e in events]
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    # Uniform guessing among 64 pairs is log 64 = 4.16; the untrained model is worse than that (about 5).
    assert last < 0.75 * first, (first, last)
    assert last < math.log(N_FACES) - 0.8, (first, last)
    assert all(np.isfinite(losses))


def test_the_temperature_is_learned(trained):
    model, images, fact, events, start = trained
    assert start == pytest.approx(math.log(1 / 0.07))
    assert abs(model.log_inverse_temperature.item() - start) > 1e-3
    assert model.log_inverse_temperature.requires_grad
    assert events[-1]["temperature"] == pytest.approx(1 / model.log_inverse_temperature.exp().item(), rel=1e-5)


def test_after_training_a_matching_pair_ranks_first(trained):
    model, images, fact, events, start = trained
    own = [full_caption(f, seed=i) for i, f in enumerate(fact)]
    other = [full_caption(opposite(f), seed=i) for i, f in enumerate(fact)]
    with torch.no_grad():
        u = model.encode_images(images)
        s_own = (u * model.encode_texts(own)).sum(1)
        s_other = (u * model.encode_texts(other)).sum(1)
    # Each face is more similar to its own full caption than to one of a face unlike it in every way.
    assert (s_own > s_other).float().mean() >= 0.9, (s_own > s_other).float().mean()
    # Retrieval among the 64 training faces (chance: top-1 1/64, top-5 5/64)
    accuracy = retrieval_accuracy(model, images, own)
    assert accuracy["text_to_image_top1"] > 0.1 and accuracy["image_to_text_top1"] > 0.1, accuracy
    assert accuracy["text_to_image_top5"] > 0.5 and accuracy["image_to_text_top5"] > 0.5, accuracy
    # An untrained CLIP does not: the test can fail.
    untrained = retrieval_accuracy(tiny_clip().eval(), images, own)
    assert untrained["text_to_image_top5"] < 0.3, untrained


def test_training_is_reproducible_given_the_generator():
    images, fact, _ = training_faces(40, 16)
    runs = []
    for _ in range(2):
        model = tiny_clip(seed=3)
        runs.append([e["loss"] for e in core.clip.train(model, images, fact, 3, 16, 1e-3, 0.0, make_generator(7))])
    assert runs[0] == runs[1]


# --- the trainer's command line --------------------------------------------------------------

def test_clip_trainer_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    from core.checkpoints import build_model, load_checkpoint
    from core.train import main

    out = tmp_path / "clip.pt"
    common = ["clip", "--faces", "200", "--test-faces", "50", "--batch-size", "32", "--out", str(out),
              "--threads", "1"]
    main([*common, "--steps", "5"])
    ckpt = load_checkpoint(out)
    card = ckpt.card
    assert card["command"] == "python -m core.train clip --faces 200 --test-faces 50 --batch-size 32 " \
                              "--out clip.pt --threads 1 --steps 5"
    assert "resumed_with" not in card and card["steps"] == 5
    metrics = card["metrics"]
    for key in ("text_to_image_top1", "image_to_text_top1", "text_to_image_top5", "image_to_text_top5"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "50 test-split faces" in metrics["retrieval_on"]
    assert "held-out combination" in card["data"]
    model = build_model(ckpt, TinyCLIP, ClipConfig)
    assert model.config.embedding_dim == ClipConfig().embedding_dim
    # The card's metrics are the checkpoint's: measured again from the file, they agree.
    test_images, test_captions = core.clip.test_set(50, 32)
    again = retrieval_accuracy(model, test_images, test_captions)
    for key, value in again.items():
        assert metrics[key] == pytest.approx(value, abs=1e-3), key
    first_weights = {k: v.clone() for k, v in ckpt.state_dict.items()}

    main([*common, "--steps", "8", "--resume"])
    card = load_checkpoint(out).card
    assert card["steps"] == 8 and card["command"].endswith("--steps 5")
    assert card["resumed_with"] == ["python -m core.train clip --faces 200 --test-faces 50 --batch-size 32 "
                                    "--out clip.pt --threads 1 --steps 8 --resume"]
    resumed = load_checkpoint(out).state_dict
    assert any(not torch.equal(resumed[k], first_weights[k]) for k in first_weights)  # it trained on


def test_shipped_clip_matches_its_card():
    from core.checkpoints import build_model, load_checkpoint
    from core.registry import shipped_path

    path = shipped_path("clip", "faces32")
    require(path.is_file(), f"{path} is missing: `python -m core.train clip` makes it")
    ckpt = load_checkpoint(path)
    model = build_model(ckpt, TinyCLIP, ClipConfig)
    metrics = ckpt.card["metrics"]
    n = int(metrics["retrieval_on"].split()[0])
    images, texts = core.clip.test_set(n, model.config.image_size)
    again = retrieval_accuracy(model, images, texts)
    assert again["text_to_image_top1"] == pytest.approx(metrics["text_to_image_top1"], abs=0.01)
    assert again["text_to_image_top5"] > 20 * 5 / n  # far above chance
