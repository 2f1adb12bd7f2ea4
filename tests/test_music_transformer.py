"""Music Transformer: grid tokens, attention you can see, generation, training, bad input."""
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from core import music_transformer as mt
from core import musegan
from core.data import chorales as data
from core.text import GPT, GPTConfig

BAR = mt.TOKENS_PER_BAR


def tiny(block_bars=2, lively=False, seed=0, **sizes):
    """A small chorale GPT. `lively` redraws its weights large, so that its argmax and its samples
    change from token to token (an untrained GPT's outputs are nearly uniform)."""
    torch.manual_seed(seed)
    model = GPT(mt.model_config(**{"block_size": block_bars * BAR, "n_layer": 2, "n_head": 2, "n_embd": 16,
                                   "dropout": 0.0, **sizes})).eval()
    if lively:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + p.numel()))
    return model


@pytest.fixture(scope="module")
def bach():
    return data.load_bach().split()


# --- tokens ---------------------------------------------------------------------------------------

def test_grid_tokens_round_trip_every_corpus_chorale(bach):
    train, held_out = bach
    for roll in train.rolls + held_out.rolls:
        tokens = mt.tokens_of(roll)
        assert tokens.dtype == torch.long and tokens.shape == (len(roll) * 4,)
        assert np.array_equal(mt.roll_of(tokens), roll)
    roll = held_out.rolls[0]
    tokens = mt.tokens_of(roll)
    # S, A, T, B of step 0, then of step 1: a token's index tells its voice and its step
    assert tokens[:8].tolist() == [int(v) for v in roll[0]] + [int(v) for v in roll[1]]
    assert mt.position_of(BAR + 4 * 5 + 3) == (1, 5, 3)
    assert mt.describe_token(BAR + 4 * 5 + 3, data.midi_to_class(67)) == "bar 2 beat 2.2 bass: G4"
    assert mt.describe_token(1, data.REST) == "bar 1 beat 1.1 alto: rest"
    assert mt.roll_of(tokens[:-3]).shape == (len(roll) - 1, 4)  # an incomplete last step is dropped
    # a batch of rolls becomes a batch of token rows
    assert torch.equal(mt.tokens_of(torch.stack([torch.from_numpy(roll[:16])] * 2).long())[1], tokens[:BAR])


def test_tokens_go_to_midi_and_musicxml_and_back_exactly(bach, tmp_path):
    roll = mt.roll_of(mt.tokens_of(bach[1].rolls[3][:4 * 16]))
    back = musegan.midi_to_roll(musegan.roll_to_midi(roll, tempo=100))
    assert np.array_equal(back, roll[:len(back)]) and (roll[len(back):] == data.REST).all()
    path = musegan.write_musicxml(roll, tmp_path / "piece.musicxml")
    assert np.array_equal(data.parse_file(path), roll)


@pytest.mark.parametrize("roll, message", [
    (np.zeros((16, 3), int), "four"), (np.zeros(16, int), "four"), (np.full((16, 4), 0.5), "whole numbers"),
    (np.full((16, 4), mt.VOCAB), "0 \\(rest\\) to 83"), (np.full((16, 4), -1), "0 \\(rest\\) to 83")])
def test_rolls_that_are_not_four_voices_of_pitch_classes_are_refused(roll, message):
    with pytest.raises(ValueError, match=message):
        mt.tokens_of(roll)


# --- attention ------------------------------------------------------------------------------------

def test_attention_is_causal_and_rows_sum_to_one():
    model = tiny(lively=True)
    tokens = torch.randint(mt.VOCAB, (100,), generator=torch.Generator().manual_seed(1))
    weights = mt.attention(model, tokens)
    assert weights.shape == (2, 2, 100, 100)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # exactly 0 on every later token
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 100), atol=1e-5)
    earlier = torch.ones(100, 100, dtype=torch.bool).tril()
    assert (mt.attention(tiny(), tokens)[:, :, earlier] > 0).all()  # a fresh model attends to every earlier token
    # A later token changes nothing before it: neither the logits nor the attention
    changed = tokens.clone()
    changed[60] = (changed[60] + 1) % mt.VOCAB
    with torch.no_grad():
        before, after = model(tokens[None])[0][0], model(changed[None])[0][0]
    assert torch.equal(before[:60], after[:60]) and not torch.allclose(before[60:], after[60:])
    assert torch.equal(mt.attention(model, changed)[:, :, :60], weights[:, :, :60])


def test_explicit_attention_gives_the_fused_kernels_outputs():
    model = tiny(lively=True)
    ids = torch.randint(mt.VOCAB, (3, 90), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fused, _ = model(ids)
    logits, weights = model.attention_maps(ids)
    assert weights.shape == (2, 3, 2, 90, 90)
    assert torch.allclose(logits, fused, atol=1e-4, rtol=1e-4)
    # ... and with the key/value cache: one new query over every earlier key
    with torch.no_grad():
        _, cache = model(ids[:, :89])
        step, _ = model(ids[:, 89:], cache)
        seen = []
        explicit, _ = model(ids[:, 89:], cache, weights=seen)
    assert torch.allclose(explicit, step, atol=1e-4) and torch.allclose(explicit[:, 0], fused[:, -1], atol=1e-4)
    assert seen[0].shape == (3, 2, 1, 90) and torch.allclose(seen[0][:, :, 0], weights[0, :, :, -1], atol=1e-5)
    # attention dropout defaults to the model's dropout; a chorale model has none on its weights
    assert GPT(GPTConfig(dropout=0.1)).blocks[0].attn.dropout == 0.1
    assert GPT(mt.model_config()).blocks[0].attn.dropout == 0.0


def test_attention_to_a_generated_token_is_read_over_the_window_that_chose_it():
    model = tiny(lively=True)
    tokens = torch.randint(mt.VOCAB, (5 * BAR,), generator=torch.Generator().manual_seed(3))
    first, weights = mt.attention_to_earlier(model, tokens, 3 * BAR + 10)
    assert first == 2 * BAR and weights.shape == (2, 2, BAR + 10)  # the model reads at most 2 bars, from a bar line
    assert torch.allclose(weights, mt.attention(model, tokens[first:3 * BAR + 10])[:, :, -1])
    assert mt.attention_to_earlier(model, tokens, 7)[0] == 0
    for bad in (0, len(tokens) + 1):
        with pytest.raises(ValueError, match="Position"):
            mt.attention_to_earlier(model, tokens, bad)
    with pytest.raises(ValueError, match="1 to 128 tokens"):
        mt.attention(model, tokens)


# --- generation -----------------------------------------------------------------------------------

def test_same_seed_same_music_and_the_prompt_is_kept(bach):
    model = tiny(lively=True)
    prompt = bach[1].rolls[0][:32]
    first, again, other = (mt.continue_roll(model, prompt, 2, 1.0, 0, seed) for seed in (3, 3, 4))
    assert first.roll.shape == (32 + 32, 4) and first.start == 32 and first.note == ""
    assert np.array_equal(first.roll[:32], prompt)
    assert np.array_equal(first.roll, again.roll) and not np.array_equal(first.roll[32:], other.roll[32:])
    # temperature 0 is the argmax: no randomness left; top-k 1 is the same thing
    greedy = [mt.continue_roll(model, prompt, 2, 0, 0, seed).roll for seed in (1, 2)]
    assert np.array_equal(*greedy)
    assert np.array_equal(mt.continue_roll(model, prompt, 2, 1.5, 1, 9).roll, greedy[0])
    # top-k from the vocabulary's size up keeps every token: the same draw as no top-k
    assert np.array_equal(mt.continue_roll(model, prompt, 2, 1.0, 10_000, 3).roll, first.roll)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generating_with_the_cache_equals_rereading_the_window_every_time(temperature):
    """Greedy, and sampled with the same seed: the key/value cache and the window that moves on by
    whole bars give what reading the longest bar-aligned window afresh for every token gives."""
    from core.text import sampling_distribution

    model = tiny(lively=True)  # context: 2 bars, so the window moves on several times
    prompt = torch.randint(mt.VOCAB, (BAR + 8,), generator=torch.Generator().manual_seed(5))
    n_new = 3 * BAR + 20
    new = mt.generate(model, prompt, n_new, temperature, top_k=20, generator=torch.Generator().manual_seed(6))
    tokens, draws = prompt.tolist(), torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _ in range(n_new):
            start = mt.window_start(len(tokens), 2 * BAR)
            assert start % BAR == 0 and len(tokens) - start <= 2 * BAR
            logits = model(torch.tensor([tokens[start:]]))[0][0, -1]
            tokens.append(int(logits.argmax()) if temperature == 0 else
                          int(torch.multinomial(sampling_distribution(logits, temperature, 20), 1, generator=draws)))
    assert new.tolist() == tokens[len(prompt):]
    assert len(new) == n_new and len(set(new.tolist())) >= (2 if temperature == 0 else 20)


def test_a_prompt_longer_than_the_context_is_read_from_its_last_whole_bars(bach):
    model = tiny(lively=True)
    prompt = bach[1].rolls[1][:3 * 16]
    result = mt.continue_roll(model, prompt, 1, 0.0, 0, 0)
    assert "3 bars long" in result.note and "last 2" in result.note and "first 1 bar of" in result.note
    assert np.array_equal(result.roll[:48], prompt) and result.start == 48 and len(result.roll) == 64
    # what it continued from is the last two bars alone
    alone = mt.continue_roll(model, prompt[16:], 1, 0.0, 0, 0)
    assert np.array_equal(alone.roll[32:], result.roll[48:]) and alone.note == ""


@pytest.mark.parametrize("options, message", [
    (dict(temperature=-0.5), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=1e6), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(top_k=-1), "top-k"), (dict(top_k=2.5), "top-k"), (dict(bars=0), "between 1 and 16"),
    (dict(bars=17), "between 1 and 16"), (dict(bars="many"), "whole number"), (dict(bars=float("inf")), "whole number")])
def test_bad_sampling_options_are_refused_with_a_sentence(options, message):
    kwargs = dict(bars=1, temperature=1.0, top_k=0, seed=0) | options
    with pytest.raises(ValueError, match=message):
        mt.continue_roll(tiny(), np.ones((16, 4), int), **kwargs)


def test_bad_prompts_are_refused_with_a_sentence():
    model = tiny()
    with pytest.raises(ValueError, match="empty"):
        mt.continue_roll(model, np.zeros((0, 4), int), 1)
    with pytest.raises(ValueError, match="whole 16th-note steps"):
        mt.generate(model, torch.ones(6, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="one prompt"):
        mt.continue_roll(model, np.ones((2, 16, 4), int), 1)
    with pytest.raises(ValueError, match="not a chorale model"):
        mt.generate(GPT(GPTConfig(vocab_size=65, block_size=128, n_layer=1, n_head=1, n_embd=8)), torch.ones(4), 4)


def test_held_out_prompts_are_openings_of_held_out_chorales_only(bach):
    train, held_out = bach
    prompts = data.held_out_openings(2)
    assert len(prompts) >= 30 and not {name for name, _ in prompts} & set(train.names)
    pieces = dict(zip(held_out.names, held_out.rolls))
    for name, roll in prompts:
        assert roll.shape == (32, 4) and np.array_equal(roll, pieces[name][:32]) and not roll.flags.writeable
    assert data.held_out_openings(2) is prompts  # read once


# --- uploads ----------------------------------------------------------------------------------------

def write_midi(path, voices):
    """voices: one list of (MIDI pitch, start beat, end beat) per track, at 120 bpm."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    for v, notes in enumerate(voices):
        track = pretty_midi.Instrument(program=0, name=f"Track {v + 1}")
        track.notes = [pretty_midi.Note(80, pitch, start / 2, end / 2) for pitch, start, end in notes]
        pm.instruments.append(track)
    pm.write(str(path))
    return path


def bad_uploads(folder, opening):
    good = musegan.midi_bytes(musegan.roll_to_midi(opening))
    (folder / "empty.mid").write_bytes(b"")
    write_midi(folder / "one_note.mid", [[(60, 0, 1)]])
    write_midi(folder / "band.mid", [[(40 + 2 * t, b, b + 1) for b in range(8)] for t in range(16)])
    write_midi(folder / "trio.mid", [[(p, 0, 4)] for p in (72, 67, 60)])
    (folder / "cut.mid").write_bytes(good[:len(good) // 2])
    (folder / "letter.mid").write_text("Dear Bach, this is not music.\n")
    (folder / "evil.p").write_bytes(b"\x80\x04K\x01.")
    (folder / "song.musicxml").write_text("<score-partwise><part-list></part-list></score-partwise>")
    return {"empty.mid": "is empty", "one_note.mid": "1 part", "band.mid": "has 16 parts",
            "trio.mid": "3 part", "cut.mid": "could not be read as music.*cut short",
            "letter.mid": "not a MIDI file", "evil.p": "MIDI or MusicXML", "song.musicxml": "part|could not be read"}


def test_bad_uploads_are_refused_with_a_sentence(tmp_path, bach):
    for name, message in bad_uploads(tmp_path, bach[1].rolls[0][:32]).items():
        with pytest.raises(ValueError, match=message) as refused:
            mt.prompt_from_upload(str(tmp_path / name), 2)
        assert str(refused.value).endswith(".") and "Traceback" not in str(refused.value)
        with pytest.raises(ValueError, match=message):  # the same file given as bytes
            mt.prompt_from_upload((tmp_path / name).read_bytes(), 2, name=name)
    for nothing in (None, "", "   "):
        with pytest.raises(ValueError, match="Upload a MIDI or MusicXML file"):
            mt.prompt_from_upload(nothing)
    with pytest.raises(ValueError, match="no such file"):
        mt.prompt_from_upload(str(tmp_path / "gone.mid"))
    with pytest.raises(ValueError, match="between 1 and 16"):
        mt.prompt_from_upload(str(tmp_path / "trio.mid"), 0)


def test_a_four_part_upload_becomes_its_first_bars(tmp_path, bach):
    opening = bach[1].rolls[0][:48]
    path = tmp_path / "opening.mid"
    path.write_bytes(musegan.midi_bytes(musegan.roll_to_midi(opening)))
    assert np.array_equal(mt.prompt_from_upload(str(path), 2), opening[:32])
    assert np.array_equal(mt.prompt_from_upload(path.read_bytes(), 16, name="x.mid"), opening)  # shorter than asked
    xml = musegan.write_musicxml(opening, tmp_path / "opening.musicxml")
    assert np.array_equal(mt.prompt_from_upload(xml, 1), opening[:16])
    # four voices, each one short note: a sane (one-bar) prompt, not an error
    short = write_midi(tmp_path / "four_notes.mid", [[(p, 0, 1)] for p in (72, 67, 64, 48)])
    assert mt.prompt_from_upload(str(short), 2).shape == (16, 4)


# --- training --------------------------------------------------------------------------------------

def test_windows_start_on_bar_lines_and_carry_the_next_token(bach):
    pieces = data.ChoraleSet(bach[0].rolls[:5], bach[0].names[:5])
    rolls, continues = mt.training_windows(pieces, bars=2)
    assert rolls.shape[1:] == (33, 4) and len(rolls) == len(continues)
    assert len(rolls) == len(data.phrases(pieces, 2))  # the same windows as MuseGAN's phrases
    x, y = mt.window_batch(rolls, continues)
    assert x.shape == y.shape == (len(rolls), 128)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[continues, -1], rolls[continues, 32, 0])  # the next bar's soprano
    assert (y[~continues, -1] == mt.IGNORE).all() and (~continues).sum() == 5  # one last window per piece
    assert np.array_equal(mt.roll_of(x[0]), pieces.rolls[0][:32])


def test_a_tiny_model_learns_from_a_few_chorale_windows(bach):
    pieces = data.ChoraleSet(bach[0].rolls[:8], bach[0].names[:8])
    rolls, continues = mt.training_windows(pieces, bars=2)
    model = tiny(n_layer=1, n_embd=32)
    before = mt.loss_per_token(model, rolls, continues)
    assert before == pytest.approx(math.log(mt.VOCAB), abs=0.2)  # an untrained model: near uniform
    events = list(mt.train(model, rolls, continues, steps=40, batch_size=8, generator=torch.Generator().manual_seed(0),
                           lr=1e-2, warmup=5))
    assert [e["step"] for e in events] == list(range(1, 41))
    assert events[0]["lr"] < events[5]["lr"] and events[-1]["lr"] < events[5]["lr"]  # warmup, then cosine
    after = mt.loss_per_token(model, rolls, continues)
    assert after < 0.6 * before


def test_transposition_moves_each_window_and_keeps_rests(bach):
    rolls, _ = mt.training_windows(data.ChoraleSet(bach[0].rolls[:3], bach[0].names[:3]), bars=2)
    moved = mt.random_transpose(rolls, torch.Generator().manual_seed(0))
    shifts = {int((m - r)[r > 0].unique().item()) for m, r in zip(moved, rolls)}
    assert (moved[rolls == data.REST] == data.REST).all() and shifts <= set(range(-5, 7)) and len(shifts) > 1


def test_the_training_command_writes_a_card_and_a_checkpoint_that_continues_music(tmp_path, monkeypatch, bach):
    import core.registry
    from core.checkpoints import load_checkpoint, load_shipped
    from core.train import main

    out = tmp_path / "music_transformer" / "chorales.pt"
    common = ["music_transformer", "--layers", "1", "--width", "16", "--heads", "2", "--batch-size", "2",
              "--eval-every", "2", "--eval-bars", "1", "--threads", "1", "--out", str(out)]
    main(common + ["--steps", "3"])
    main(common + ["--steps", "4", "--resume"])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["command"].startswith("python -m core.train music_transformer ") and "--steps 3" in card["command"]
    assert "--resume" in card["resumed_with"][0] and card["steps"] == 4
    assert [c["step"] for c in card["curve"]] == [2, 3, 4]
    assert card["config"]["block_size"] == 512 and card["config"]["vocab_size"] == 84
    metrics = card["metrics"]
    assert 0 < metrics["valid_loss_nats_per_token"] < math.log(84) + 0.5
    assert metrics["valid_loss_bits_per_token"] == pytest.approx(metrics["valid_loss_nats_per_token"] / math.log(2), abs=1e-3)
    assert set(metrics["music"]) == {"generated", "held_out_chorales"}
    assert card["corpus"]["sha256"] == hashlib.sha256(data.SHIPPED_CACHE.read_bytes()).hexdigest()
    ckpt = load_checkpoint(out)
    assert ckpt.extras["tokens_per_step"] == 4 and set(ckpt.extras["held_out"]) == set(bach[1].names)
    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)  # where the app looks for the shipped model
    for cached in (load_shipped, mt.load_shipped):
        cached.cache_clear()
    try:
        model = mt.load_shipped()
        assert not model.training
        result = mt.continue_roll(model, data.held_out_openings(2)[0][1], 2, 1.0, 8, 0)
        assert result.roll.shape == (64, 4)
    finally:
        for cached in (load_shipped, mt.load_shipped):
            cached.cache_clear()


def test_the_shipped_model_predicts_held_out_chorales_as_its_card_says(bach):
    from tests.conftest import require
    from core.registry import read_card, shipped_path

    require(shipped_path("music_transformer", "chorales").is_file(),
            "the Music Transformer is not trained yet: python -m core.train music_transformer --minutes 35 --threads 1")
    card = read_card("music_transformer", "chorales")
    model = mt.load_shipped()
    valid = mt.loss_per_token(model, *mt.training_windows(bach[1]))
    assert valid == pytest.approx(card["metrics"]["valid_loss_nats_per_token"], abs=0.01)  # (float16 weights)
    assert valid < 1.5  # far below a uniform guess, ln 84 = 4.43 nats per token
    result = mt.continue_roll(model, data.held_out_openings(2)[0][1], 2, 1.0, 0, 0)
    assert result.roll.shape == (64, 4)
