"""bench.music_transformer end to end on a tiny untrained chorale GPT, a few Bach chorales and a stand-in
MuseGAN result; synthesis is a stub that records what it was given."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bench.common
import bench.music_transformer as mt_bench
from bench.report import MISSING, fill, table
from core import music_transformer as mt
from core.data import chorales as data
from core.metrics.music import METRICS, all_metrics, target_gaps
from core.text import GPT

N, BARS, SEED = 5, 4, 3
CARD_LOSS = 4.4


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(mt.model_config(n_layer=1, n_head=1, n_embd=16, dropout=0.0)).eval()


@pytest.fixture(scope="module")
def pieces():
    """Two training chorales and three held-out ones (whose openings are the prompts: N > 3 cycles them)."""
    train, held_out = data.load_bach().split()
    return (data.ChoraleSet(train.rolls[:2], train.names[:2]),
            data.ChoraleSet(held_out.rolls[:3], held_out.names[:3]))


@pytest.fixture
def world(monkeypatch, tmp_path, pieces):
    import core.audio
    import core.musegan

    model = tiny_gpt()
    _, held_out = pieces
    monkeypatch.setattr(mt_bench, "shipped_model", lambda: model)
    monkeypatch.setattr(mt_bench, "chorale_split", lambda: pieces)
    monkeypatch.setattr(mt_bench, "model_card", lambda: {"name": "tiny", "steps": 0, "valid_loss_nats_per_token": CARD_LOSS})
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    played, to_midi = [], core.musegan.roll_to_midi

    def roll_to_midi(roll, *args):
        played.append(np.array(roll))
        return to_midi(roll, *args)

    def synthesize(pm, sample_rate=core.audio.SAMPLE_RATE):  # a second of silence per call, not FluidSynth
        played.append(("synthesized", torch.get_num_threads()))
        return np.zeros(sample_rate, dtype=np.float32)

    monkeypatch.setattr(core.musegan, "roll_to_midi", roll_to_midi)
    monkeypatch.setattr(core.audio, "synthesize", synthesize)
    musegan = {"phrases": 1000, "bars": BARS, "generated": {name: 0.5 for name in METRICS},
               "held_out_chorales": all_metrics(data.phrases(held_out, BARS)),
               "checks": {**{name: name != "tonal_distance" for name in METRICS}, "no_silent_or_single_pitch_phrase": True}}
    (tmp_path / "musegan_quality.json").write_text(json.dumps({"name": "musegan_quality", "date": "2026-01-02",
                                                               "quick": False, "figures": musegan}))
    threads = torch.get_num_threads()
    yield {"model": model, "held_out": held_out, "dir": tmp_path, "played": played}
    torch.set_num_threads(threads)


def by_hand_loss(model, held_out):
    """Cross-entropy per predicted token, summed over every window's positions and divided by their count,
    computed from the logits directly (not through loss_per_token)."""
    rolls, continues = mt.training_windows(held_out)
    tokens = rolls.reshape(len(rolls), -1)            # S A T B per step, 8 bars + 1 step
    x, y = tokens[:, :mt.BLOCK_SIZE], tokens[:, 1:mt.BLOCK_SIZE + 1]
    with torch.no_grad():
        nll = -F.log_softmax(model(x)[0].double(), -1).gather(-1, y[..., None])[..., 0]
    counted = torch.ones_like(nll, dtype=torch.bool)
    counted[~continues, -1] = False                    # a piece's last window has nothing after it to predict
    return float(nll[counted].sum() / counted.sum()), int(counted.sum())


def test_the_bench_saves_every_figure_and_each_equals_a_recomputation(world):
    figures = mt_bench.main(["--quick", "--n", str(N), "--bars", str(BARS), "--seed", str(SEED),
                             "--speed-repeats", "3", "--threads", "1"])
    saved = json.loads((world["dir"] / "music_transformer.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    model, held_out = world["model"], world["held_out"]

    # The loss is per predicted token, over every 8-bar window of the held-out pieces.
    loss, count = by_hand_loss(model, held_out)
    valid = figures["validation"]
    assert valid["nats_per_token"] == pytest.approx(loss, abs=1e-4) and valid["tokens"] == count
    assert valid["windows"] == len(mt.training_windows(held_out)[0]) and valid["window_bars"] == 8
    assert valid["bits_per_token"] == pytest.approx(loss / math.log(2), abs=1e-4)
    assert valid["uniform_nats_per_token"] == pytest.approx(math.log(84), abs=1e-4)
    assert abs(valid["nats_per_token"] - math.log(84)) < 0.2  # untrained: about a uniform guess
    assert figures["checkpoint"]["valid_loss_nats_per_token"] == CARD_LOSS

    # The music: the new bars of continuations of the openings, cycled, seed SEED + i, temperature 1, no top-k.
    openings = data.openings(held_out, 2)
    assert len(openings) == 3 < N
    results = [mt.continue_roll(model, openings[i % 3][1], BARS, 1.0, 0, SEED + i) for i in range(N)]
    new = np.stack([r.roll[r.start:] for r in results])
    assert new.shape == (N, BARS * 16, 4)
    assert figures["generated"] == all_metrics(new)
    assert figures["generated"] != all_metrics(np.stack([r.roll for r in results]))  # the prompt would change them
    assert figures["generated"] != all_metrics(np.stack([r.roll[-32:] for r in results]))  # and so would fewer bars
    assert figures["sampling"]["temperature"] == 1.0 and figures["sampling"]["top_k"] == 0
    # The same continuations at the cooler temperature, measured the same way.
    cooler = np.stack([(r := mt.continue_roll(model, openings[i % 3][1], BARS, 0.8, 0, SEED + i)).roll[r.start:]
                       for i in range(N)])
    assert figures["cooler"]["temperature"] == 0.8 and figures["cooler"]["generated"] == all_metrics(cooler)
    assert figures["cooler"]["targets"] == len(figures["checks"])
    assert figures["sampling"]["distinct_prompts"] == 3 and figures["continuations"] == N and figures["bars"] == BARS
    assert figures["held_out_chorales"] == all_metrics(data.phrases(held_out, BARS))
    gaps = target_gaps(figures["generated"], figures["held_out_chorales"])
    assert figures["checks"] == {**{name: gap <= 1 for name, gap in gaps.items()},
                                 "no_silent_or_single_pitch_phrase": True}
    assert figures["silent_continuations"] == figures["single_pitch_continuations"] == 0
    assert figures["targets"] == 7 and figures["targets_met"] == sum(figures["checks"].values())
    assert figures["all_pass"] == all(figures["checks"].values())

    # MuseGAN's figures are the saved full run's, with its targets counted.
    musegan = figures["musegan"]
    assert musegan["generated"] == {name: 0.5 for name in METRICS} and musegan["phrases"] == 1000
    assert musegan["targets_met"] == 6 and musegan["targets"] == 7 and musegan["same_reference"] is True
    assert "read, not recomputed" in musegan["source"]

    # Speed: one thread, the tab's work (continue, MIDI of the whole roll, audio), then given back.
    speed = figures["speed"]
    assert figures["threads"] == speed["threads"] == 1 and speed["runs"] == 3
    assert 0 < speed["min_s"] <= speed["median_s"] <= speed["max_s"]
    assert speed["meets_target"] == (speed["median_s"] <= 1.0) and speed["target_s"] == 1.0
    assert speed["tokens"] == BARS * 64 and speed["prompt_bars"] == 2
    assert speed["tokens_per_s"] == pytest.approx(BARS * 64 / speed["generate_median_s"], rel=1e-2)
    played = world["played"]  # warm-up + 3 timed calls: the whole roll (the prompt, then the new bars) to MIDI, then audio
    assert played[1::2] == [("synthesized", 1)] * 4 and len(played) == 8
    for i, roll in enumerate(played[0::2]):
        assert roll.shape == ((2 + BARS) * 16, 4) and (roll[:32] == openings[i % 3][1]).all()
    assert speed["audio_seconds"] == 1.0
    assert speed["musicxml_median_s"] > 0

    for row in mt_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    for sentence in mt_bench.README_PROSE:
        fill(sentence, figures)
    rows = table(world["dir"], ["music_transformer"])
    assert MISSING not in rows and rows.count("`bench/music_transformer.py`") == len(mt_bench.README_ROWS)
    assert "(quick)" in rows and f"{figures['generated']['in_key_ratio']:.3f} (n = {N}); MuseGAN 0.500" in rows


def test_without_musegan_results_the_bench_says_so_and_its_rows_say_not_run(world):
    (world["dir"] / "musegan_quality.json").unlink()
    figures = mt_bench.main(["--quick", "--n", "2", "--bars", "1", "--speed-repeats", "1", "--threads", "1"])
    assert "musegan" not in figures and figures["missing"][0].startswith("musegan")
    assert figures["generated"] == all_metrics(np.stack([
        (r := mt.continue_roll(world["model"], opening, 1, 1.0, 0, i)).roll[r.start:]
        for i, (_, opening) in enumerate(data.openings(world["held_out"], 2)[:2])]))
    rows = table(world["dir"], ["music_transformer"])
    assert rows.count(MISSING) == len(METRICS) + 1  # the MuseGAN-beside rows, nothing else


def test_the_speed_is_timed_on_one_thread_and_the_thread_count_is_given_back(world):
    torch.set_num_threads(2)
    openings = data.openings(world["held_out"], 2)
    speed = mt_bench.speed(world["model"], openings, bars=1, repeats=1, xml_repeats=1, seed=0)
    assert speed["threads"] == 1 and world["played"][1::2] == [("synthesized", 1)] * 2
    assert torch.get_num_threads() == 2
    assert speed["tokens"] == 64 and speed["runs"] == 1 and speed["musicxml_runs"] == 1


def test_silent_and_single_pitch_continuations_are_counted():
    rolls = np.zeros((4, 16, 4), dtype=np.int64)
    rolls[1, :, 0] = 40                        # one pitch, held
    rolls[2, :8, 1] = rolls[2, 8:, 3] = 52     # one pitch in two voices
    rolls[3, :, 0], rolls[3, :, 3] = 40, 28    # two pitches
    assert mt_bench.silent_and_single_pitch(rolls) == (1, 3)

