import numpy as np
import pytest
import torch
from music21 import meter, note, stream

from core.data import chorales as data


def four_part_score(signature="4/4", parts=4):
    """Two bars of four voices, written by hand."""
    score = stream.Score()
    lines = [  # (MIDI pitch or None for a rest, quarter lengths)
        [(72, 2), (71, 1), (72, 1), (74, 4)],
        [(67, 1), (None, 1), (67, 2), (65, 0.5), (64, 0.5), (65, 3)],
        [(64, 4), (62, 4)],
        [(48, 4), (None, 4)],
    ]
    for line in lines[:parts]:
        part = stream.Part()
        part.append(meter.TimeSignature(signature))
        for pitch, length in line:
            part.append(note.Rest(quarterLength=length) if pitch is None else note.Note(pitch, quarterLength=length))
        score.insert(0, part.makeMeasures())
    return score


def test_score_becomes_four_tracks_on_the_16th_grid_with_rests():
    roll = data.score_to_roll(four_part_score())
    assert roll.shape == (32, 4)
    c = data.midi_to_class
    # Soprano: C5 half, B4 quarter, C5 quarter, D5 whole.
    assert list(roll[:16, 0]) == [c(72)] * 8 + [c(71)] * 4 + [c(72)] * 4
    assert (roll[16:, 0] == c(74)).all()
    # Alto: a quarter rest on the second beat, eighths on the 16th grid.
    assert list(roll[:16, 1]) == [c(67)] * 4 + [data.REST] * 4 + [c(67)] * 8
    assert list(roll[16:24, 1]) == [c(65)] * 2 + [c(64)] * 2 + [c(65)] * 4
    # Bass rests for the whole second bar.
    assert (roll[16:, 3] == data.REST).all() and (roll[:16, 3] == c(48)).all()
    assert data.class_to_midi(c(48)) == 48


def test_wrong_metre_or_part_count_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="only 4/4"):
        data.score_to_roll(four_part_score("3/4"))
    with pytest.raises(ValueError, match="exactly four"):
        data.score_to_roll(four_part_score(parts=3))


def test_more_than_four_parts_need_the_four_voices_named_and_the_count_is_told():
    score = four_part_score()
    for extra in range(2):  # two instrumental parts beside the four voices
        score.insert(0, stream.Part([note.Note(60, quarterLength=8)]))
    with pytest.raises(ValueError, match="has 6 parts, none of them named Soprano, Alto, Tenor or Bass"):
        data.score_to_roll(score)
    for part, voice in zip(score.parts, ("Soprano", "Alto", "Tenor", "Bass")):
        part.partName = voice
    assert data.score_to_roll(score).shape == (32, 4)
    score.parts[3].partName = "Continuo"
    with pytest.raises(ValueError, match="only Soprano, Alto and Tenor among them named as a voice"):
        data.score_to_roll(score)


def test_folder_loader_reads_musicxml_and_skips_unusable_files(tmp_path):
    four_part_score().write("musicxml", fp=str(tmp_path / "good.musicxml"))
    four_part_score(parts=3).write("musicxml", fp=str(tmp_path / "three_parts.musicxml"))
    skipped = []
    pieces = data.load_folder(tmp_path, log=skipped.append)
    assert pieces.names == ["good"]
    assert pieces.rolls[0].shape == (32, 4)
    assert len(skipped) == 1 and "part" in skipped[0]
    with pytest.raises(ValueError):
        data.load_folder(tmp_path / "missing")


def test_cache_round_trip_phrases_and_held_out_split(tmp_path):
    rng = np.random.default_rng(0)
    pieces = data.ChoraleSet([rng.integers(1, 60, size=(16 * n, 4)).astype(np.uint8) for n in (3, 5, 2)],
                             ["a", "b", "c"])
    back = data.read_set(data.save_set(pieces, tmp_path / "set.npz"))
    assert back.names == pieces.names and all((x == y).all() for x, y in zip(back.rolls, pieces.rolls))
    windows = data.phrases(pieces, n_bars=2)
    assert windows.shape == (2 + 4 + 1, 32, 4)
    names = [f"bwv{i}" for i in range(200)]
    train, held = data.ChoraleSet([np.zeros((16, 4), np.uint8)] * 200, names).split()
    assert 5 < len(held.names) < 40 and not set(train.names) & set(held.names)


def test_transposition_keeps_rests_and_range():
    rolls = torch.tensor([[[data.REST, 10, 20, 30]], [[data.REST, 1, 2, 3]]])
    moved = data.transpose(rolls, torch.tensor([2, -3]))
    assert moved[0].tolist() == [[data.REST, 12, 22, 32]]
    assert moved[1].tolist() == rolls[1].tolist()  # would fall below the lowest pitch: unchanged
