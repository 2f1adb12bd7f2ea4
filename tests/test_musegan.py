import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core import musegan
from core.audio import SAMPLE_RATE, synthesize
from core.data import chorales as data
from core.metrics import music
from core.runtime import make_generator

TINY = musegan.MuseGANConfig(z_dim=8, temporal_hidden=16, bar_channels=16, critic_channels=8)




def tiny_generator(seed=0):
    torch.manual_seed(seed)
    return musegan.Generator(TINY).eval()


def test_generation_is_deterministic_for_a_seed_and_has_the_asked_shape():
    model = tiny_generator()
    rolls = [musegan.generate(model, **musegan.sample_inputs(TINY, 2, make_generator(7)), n_bars=3) for _ in range(2)]
    assert rolls[0].shape == (2, 3 * 16, 4)
    assert torch.equal(rolls[0], rolls[1])
    # An untrained net's argmax barely moves with the noise; its logits must.
    with torch.no_grad():
        logits = [model(**musegan.sample_inputs(TINY, 2, make_generator(s)), n_bars=3) for s in (7, 7, 8)]
    assert torch.equal(logits[0], logits[1]) and not torch.allclose(logits[0], logits[2])
    assert 0 <= int(rolls[0].min()) and int(rolls[0].max()) < TINY.n_pitches


def test_rerolling_one_voices_melody_changes_only_that_input():
    inputs = musegan.sample_inputs(TINY, 1, make_generator(1))
    new = musegan.reroll(inputs, "melody", make_generator(2), voice=2)
    for kind in ("chords", "style", "groove"):
        assert torch.equal(new[kind], inputs[kind])
    for voice in (0, 1, 3):
        assert torch.equal(new["melody"][:, voice], inputs["melody"][:, voice])
    assert not torch.equal(new["melody"][:, 2], inputs["melody"][:, 2])
    with pytest.raises(ValueError):
        musegan.reroll(inputs, "melody", make_generator(2), voice=4)
    with pytest.raises(ValueError):
        musegan.reroll(inputs, "tempo", make_generator(2))


def test_bad_bar_counts_and_tempi_are_refused():
    model = tiny_generator()
    inputs = musegan.sample_inputs(TINY, 1, make_generator(0))
    for bars in (0, musegan.MAX_BARS + 1, "many"):
        with pytest.raises(ValueError, match="bars"):
            musegan.generate(model, **inputs, n_bars=bars)
    for tempo in (0, 1000, float("nan")):
        with pytest.raises(ValueError, match="tempo"):
            musegan.roll_to_midi(np.ones((16, 4), int), tempo=tempo)


def hand_roll():
    """Two bars, made so each metric can be worked out by hand (classes: MIDI pitch - 23)."""
    c = data.midi_to_class
    roll = np.full((32, 4), data.REST)
    roll[:, 0] = [c(72)] * 8 + [c(74)] * 8 + [c(76)] * 16                 # S: C5 D5 | E5
    roll[:, 1] = [c(67)] * 16 + [c(61)] * 1 + [c(67)] * 15                # A: G4 | C#4(16th) G4
    roll[:, 2] = [c(64)] * 16 + [c(60)] * 16                              # T: E4 | C4
    roll[:16, 3] = [c(48)] * 4 + [c(69)] * 4 + [c(48)] * 8                # B: C3 A4(above tenor) C3 | rest
    return roll


def test_metrics_on_a_hand_made_roll():
    roll = hand_roll()
    m = music.all_metrics(roll)
    assert m["empty_bar_rate"] == pytest.approx(1 / 8)                 # bass's second bar
    # pitch classes per non-empty bar: S 2,1  A 1,2  T 1,1  B 2 -> 10 / 7
    assert m["used_pitch_classes"] == pytest.approx(10 / 7, abs=1e-4)
    # notes: S 3, A 3 (one a 16th), T 2, B 3 -> 10 of 11 qualify
    assert m["qualified_note_rate"] == pytest.approx(10 / 11, abs=1e-4)
    # C major (no scale holds both C and C#) has every sounding step but the C# 16th, of 112
    assert m["in_key_ratio"] == pytest.approx(111 / 112, abs=1e-4)
    # adjacent pairs sounding together: S/A 32, A/T 32, T/B 16 -> 80; the bass is above the tenor for 4
    assert m["voice_order_violations"] == pytest.approx(4 / 80, abs=1e-4)
    assert music.empty_bar_rate(np.full((16, 4), data.REST)) == 1.0


def test_target_gaps_measure_distance_in_tolerances():
    reference = {name: 1.0 for name in music.METRICS} | {"empty_bar_rate": 0.0, "voice_order_violations": 0.01}
    generated = dict(reference) | {"used_pitch_classes": 1.25, "tonal_distance": 0.5, "empty_bar_rate": 0.01,
                                   "voice_order_violations": 0.03}
    gaps = music.target_gaps(generated, reference)
    assert gaps["used_pitch_classes"] == pytest.approx(1.0)    # 25% off: just within
    assert gaps["tonal_distance"] == pytest.approx(2.0)        # 50% off
    assert gaps["empty_bar_rate"] == pytest.approx(0.5)        # 0.01 of the 0.02 absolute tolerance
    assert gaps["voice_order_violations"] == pytest.approx(2.0)  # three times the reference; twice is allowed
    assert gaps["in_key_ratio"] == 0.0
    assert music.target_gaps(reference | {"voice_order_violations": 0.0}, reference)["voice_order_violations"] == 0.0


def test_crossing_probability_counts_voices_below_the_voice_under_them():
    c = data.midi_to_class
    ordered = torch.tensor([[c(72), c(67), c(60), c(48)]] * 16)      # S > A > T > B
    crossed = torch.tensor([[c(60), c(67), c(60), c(48)]] * 16)      # soprano under alto
    onehot = lambda roll: musegan.roll_to_onehot(roll[None], TINY)  # (1, 4, 1, 16, 84)
    assert musegan.crossing_probability(onehot(ordered)).item() == 0.0
    assert musegan.crossing_probability(onehot(crossed)).item() == pytest.approx(1 / 3)  # one pair of three
    # Half the soprano's probability under the alto: half a crossing on that pair, and it has a gradient.
    probs = ((onehot(ordered) + onehot(crossed)) / 2).requires_grad_(True)
    risk = musegan.crossing_probability(probs)
    assert risk.item() == pytest.approx(1 / 6)
    risk.backward()
    assert probs.grad[0, 0, 0, 0, c(60)] > 0 and probs.grad[0, 0, 0, 0, c(72)] == 0


def test_fragment_probability_counts_lone_sixteenths():
    c = data.midi_to_class
    onehot = lambda voice: musegan.roll_to_onehot(torch.tensor(voice)[None, :, None], TINY)  # (1, 1, 1, 16, 84)
    held = [c(60)] * 16
    one_fragment = [c(60)] * 7 + [c(62)] + [c(60)] * 8          # a lone D among Cs: 1 step of 16
    rest_between = [c(60)] * 7 + [data.REST] + [c(60)] * 8       # a rest is no note
    assert musegan.fragment_probability(onehot(held)).item() == 0.0
    assert musegan.fragment_probability(onehot(rest_between)).item() == 0.0
    assert musegan.fragment_probability(onehot(one_fragment)).item() == pytest.approx(1 / 16)
    # Edges: nothing sounds outside the phrase, so a first step unlike the second is a fragment.
    assert musegan.fragment_probability(onehot([c(62)] + [c(60)] * 15)).item() == pytest.approx(1 / 16)
    # Half sure of the lone D: half a fragment, and the gradient asks for less D at that step.
    probs = ((onehot(held) + onehot(one_fragment)) / 2).requires_grad_(True)
    risk = musegan.fragment_probability(probs)
    assert risk.item() == pytest.approx(0.5 / 16)
    risk.backward()
    assert probs.grad[0, 0, 0, 7, c(62)] > 0 and probs.grad[0, 0, 0, 7, c(60)] == 0


def test_pitch_classes_used_folds_octaves_and_ignores_rests():
    c = data.midi_to_class
    bar = [c(60), c(62), c(64), c(72), c(48), data.REST] + [c(60)] * 10   # C D E, C an octave up and down, a rest
    used = musegan.pitch_classes_used(musegan.roll_to_onehot(torch.tensor(bar)[None, :, None], TINY))[0, 0, 0]
    assert used.tolist() == [1.0, 0, 1.0, 0, 1.0] + [0.0] * 7   # C, D, E
    critic = musegan.Critic(TINY)
    assert critic(musegan.roll_to_onehot(torch.tensor(bar * 2)[None, :, None].expand(1, 32, 4), TINY)).shape == (1,)


def test_training_ships_the_ema_closest_to_the_chorales(tmp_path, monkeypatch, capsys):
    from core.checkpoints import load_checkpoint
    from core.train import main

    rng = np.random.default_rng(0)
    pieces = data.ChoraleSet([rng.integers(30, 60, size=(16 * 9, 4)).astype(np.uint8) for _ in range(12)],
                             [f"p{i}" for i in range(12)])
    monkeypatch.setattr(data, "load_bach", lambda: pieces)
    gaps = iter([3.0, 1.5, 2.0])  # the second check is the closest
    monkeypatch.setattr(music, "target_gaps", lambda generated, reference: {"tonal_distance": next(gaps)})
    out = tmp_path / "musegan.pt"
    main(["musegan", "--out", str(out), "--steps", "3", "--select-every", "1", "--z-dim", "8", "--bar-channels", "16",
          "--critic-channels", "8", "--eval-phrases", "10", "--threads", "1"])
    first = load_checkpoint(out)
    assert first.card["selected_step"] == 2 and first.card["steps"] == 3
    assert set(first.card["metrics"]) == {"generated", "held_out_chorales"}

    # --init-from: the generator starts from the checkpoint (the critic afresh); the card keeps the chain.
    gaps = iter([1.0])
    tuned = tmp_path / "tuned.pt"
    started, real_train = {}, musegan.train

    def recording_train(model, *args, **kwargs):
        started.update({name: w.clone() for name, w in model.generator.state_dict().items()})
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(musegan, "train", recording_train)
    main(["musegan", "--out", str(tuned), "--steps", "1", "--select-every", "1", "--z-dim", "8", "--bar-channels", "16",
          "--critic-channels", "8", "--eval-phrases", "10", "--threads", "1", "--init-from", str(out)])
    assert all(torch.equal(started[name], w.float()) for name, w in first.state_dict.items())
    card = load_checkpoint(tuned).card
    assert card["command"] == first.card["command"] and "--init-from" in card["resumed_with"][0]
    assert card["fine_tuned_from"]["selected_step"] == 2
    with pytest.raises(SystemExit):  # core.train says the sentence on stderr, without a traceback
        main(["musegan", "--out", str(tuned), "--steps", "1", "--z-dim", "9", "--bar-channels", "16",
              "--critic-channels", "8", "--threads", "1", "--init-from", str(out)])
    assert "this run asks for" in capsys.readouterr().err


def test_training_on_two_processes_averages_the_gradients_and_the_app_loads_it(tmp_path):
    from core.checkpoints import build_model, load_checkpoint
    from tests.distributed import check_ranks_agree, train

    out = tmp_path / "musegan.pt"
    done, card = train(["musegan", "--steps", "3", "--select-every", "2", "--z-dim", "8", "--bar-channels", "16",
                        "--critic-channels", "8", "--eval-phrases", "10"], out, processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks_agree(card, 2)  # both chose the same EMA, with rank 0's BatchNorm statistics
    assert card["steps"] == 3 and card["selected_step"] == 2 and card["global_batch"] == 32
    generator = build_model(load_checkpoint(out), musegan.Generator, musegan.MuseGANConfig)  # as load_generator does
    roll = musegan.generate(generator, **musegan.sample_inputs(generator.cfg, 1, make_generator(0)), n_bars=2)
    assert roll.shape == (1, 32, 4)


def test_a_number_of_processes_that_cannot_share_the_batches_is_refused(monkeypatch, capsys):
    from core.train import main

    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node=3 would set it
    with pytest.raises(SystemExit):
        main(["musegan", "--steps", "1", "--threads", "1"])
    assert "split evenly among 1, 2 or 4 processes, not 3" in capsys.readouterr().err


def test_tonal_distance_is_zero_for_unisons_and_largest_for_a_tritone():
    c = data.midi_to_class
    unison = np.full((16, 4), c(60))
    assert music.tonal_distance(unison) == pytest.approx(0.0)
    # Two voices: octaves (distance 0); the other pairs a tritone apart, C vs F#.
    tritone = np.array([[c(72), c(60), c(66), c(54)]] * 16)
    phi = music._tonal_matrix()
    d = np.linalg.norm(phi[:, 0] - phi[:, 6])
    assert music.tonal_distance(tritone) == pytest.approx((2 * 0 + 4 * d) / 6)
    # A tritone sits opposite on the circle of fifths and of minor thirds, and on the same major-third point.
    assert d == pytest.approx(math.sqrt(4 + 4 + 0), abs=1e-6)


def test_roll_to_midi_to_roll_round_trip():
    roll = hand_roll()
    pm = musegan.roll_to_midi(roll, tempo=100, instruments=("Flute", "Oboe", "Cello", "Contrabass"))
    assert [i.program for i in pm.instruments] == [73, 68, 42, 43]
    assert len(pm.instruments[0].notes) == 3
    back = musegan.midi_to_roll(pm)
    assert back.shape == roll.shape[:1] + (4,) or back.shape[0] <= roll.shape[0]
    assert (back == roll[:len(back)]).all() and (roll[len(back):] == data.REST).all()
    with pytest.raises(ValueError, match="four"):
        pm.instruments = pm.instruments[:3]
        musegan.midi_to_roll(pm)


def test_score_musicxml_and_audio(tmp_path):
    roll = hand_roll()
    score = musegan.roll_to_score(roll, tempo=90)
    assert len(score.parts) == 4
    assert [n.pitch.midi for n in score.parts[0].flatten().notes] == [72, 74, 76]
    path = musegan.write_musicxml(roll, tmp_path / "piece.musicxml")
    assert path.is_file() and "<score-partwise" in path.read_text()
    audio = synthesize(musegan.roll_to_midi(roll, tempo=120), sample_rate=8000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < np.abs(audio).max() <= 0.81 and len(audio) >= 8000 * 4  # 2 bars at 120 bpm = 4 s


def test_a_few_training_steps_run_and_the_critic_accepts_any_length():
    rng = np.random.default_rng(0)
    pieces = data.ChoraleSet([rng.integers(30, 60, size=(16 * 9, 4)).astype(np.uint8) for _ in range(3)], list("abc"))
    model = musegan.MuseGAN(TINY)
    events = list(musegan.train(model, pieces, steps=2, generator=make_generator(0)))
    assert [e["step"] for e in events] == [1, 2]
    assert all(math.isfinite(e["wasserstein"]) and math.isfinite(e["gp"]) for e in events)
    for bars in (2, 5):
        assert model.critic(torch.rand(3, 4, bars, 16, 84)).shape == (3,)


@pytest.fixture
def shipped_tiny(tmp_path, monkeypatch):
    """A tiny untrained checkpoint where the tab looks for the shipped one."""
    import core.registry
    from core.checkpoints import load_shipped, make_card, save_checkpoint
    from core.metrics.music import METRICS

    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)
    metrics = {side: {name: 0.5 for name in METRICS} for side in ("generated", "held_out_chorales")}
    save_checkpoint(tmp_path / "musegan" / "chorales.pt", tiny_generator(), TINY,
                    make_card(commands=["test"], data="test", wall_time_s=0, metrics=metrics))
    for cached in (load_shipped, musegan.load_generator):
        cached.cache_clear()
    yield
    for cached in (load_shipped, musegan.load_generator):
        cached.cache_clear()


def test_tab_rerolls_one_voice_and_refuses_bad_input(shipped_tiny):
    from tabs import musegan as tab

    instruments = ("Choir Aahs", "Oboe", "Cello", "Contrabass")
    state, figure, (rate, audio), files, table, _ = tab.new_piece(5, 2, 120, *instruments)
    assert rate == SAMPLE_RATE and len(audio) >= rate * 4
    assert [Path(f).suffix for f in files] == [".mid", ".musicxml"]
    assert all(description in table for _, description in music.METRICS.values())
    new_state, *_, note = tab.reroll_input(state, "groove", "Tenor", 2, 120, *instruments)
    assert "tenor" in note
    for kind in ("chords", "style", "melody"):
        assert torch.equal(new_state["inputs"][kind], state["inputs"][kind])
    changed = [not torch.equal(new_state["inputs"]["groove"][:, v], state["inputs"]["groove"][:, v]) for v in range(4)]
    assert changed == [False, False, True, False]
    *_, interp_note = tab.interpolate(state, "Chords", 3, 1, 120, *instruments)
    assert "3 segments" in interp_note and "against the same 3 bars" in interp_note
    for bad in (lambda: tab.replay(state, 0, 120, *instruments), lambda: tab.replay(state, 99, 120, *instruments),
                lambda: tab.replay(state, 2, 5, *instruments), lambda: tab.replay(None, 2, 120, *instruments),
                lambda: tab.replay(state, 2, 120, "Kazoo", *instruments[1:])):
        with pytest.raises(ValueError):
            bad()


def test_tab_upload_with_three_parts_is_refused(shipped_tiny, tmp_path):
    from tabs import musegan as tab

    pm = musegan.roll_to_midi(hand_roll())
    pm.instruments = pm.instruments[:3]
    pm.write(str(tmp_path / "trio.mid"))
    with pytest.raises(ValueError, match="part"):
        list(tab.analyse_upload(str(tmp_path / "trio.mid"), 90, *data.DEFAULT_INSTRUMENTS))
    with pytest.raises(ValueError, match="MIDI or MusicXML"):
        list(tab.analyse_upload(str(tmp_path / "evil.p"), 90, *data.DEFAULT_INSTRUMENTS))


def sixteen_track_midi(path):
    """A General MIDI file as a sequencer writes it: 16 tracks of notes, none named after a voice."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    for track in range(16):
        instrument = pretty_midi.Instrument(program=track * 4, name=f"Track {track + 1}")
        instrument.notes = [pretty_midi.Note(80, 48 + 2 * track, 0.6 * beat, 0.6 * beat + 0.6) for beat in range(8)]
        pm.instruments.append(instrument)
    pm.write(str(path))
    return str(path)


def test_tab_upload_says_how_many_parts_a_file_has_and_what_it_needs(shipped_tiny, tmp_path):
    from tabs import musegan as tab

    with pytest.raises(ValueError) as refused:
        list(tab.analyse_upload(sixteen_track_midi(tmp_path / "band.mid"), 90, *data.DEFAULT_INSTRUMENTS))
    message = str(refused.value)
    assert "has 16 parts" in message and "exactly four parts" in message and "0 part" not in message


def test_tab_upload_error_clears_the_previous_result(shipped_tiny, tmp_path):
    from tabs import musegan as tab

    good = tmp_path / "good.mid"
    good.write_bytes(musegan.midi_bytes(musegan.roll_to_midi(hand_roll())))
    *_, (figure, sound, files, table, note) = tab.analyse_upload(str(good), 90, *data.DEFAULT_INSTRUMENTS)
    assert figure is not None and "good.mid" in note and len(files) == 2
    views = tab.analyse_upload(sixteen_track_midi(tmp_path / "band.mid"), 90, *data.DEFAULT_INSTRUMENTS)
    assert next(views) == (None, None, None, "", "")  # what the page shows before the refusal
    with pytest.raises(ValueError, match="16 parts"):
        next(views)


def test_generator_inputs_per_bar_equal_the_same_input_per_piece():
    model = tiny_generator()
    inputs = musegan.sample_inputs(TINY, 2, make_generator(3))
    per_bar = {"chords": inputs["chords"][:, None].repeat(1, 3, 1), "style": inputs["style"][:, None].repeat(1, 3, 1),
               "melody": inputs["melody"][:, :, None].repeat(1, 1, 3, 1),
               "groove": inputs["groove"][:, :, None].repeat(1, 1, 3, 1)}
    with torch.no_grad():
        assert torch.allclose(model(**per_bar, n_bars=3), model(**inputs, n_bars=3), atol=1e-6)
        with pytest.raises(ValueError, match="fits neither"):
            model(**{**inputs, "style": per_bar["style"]}, n_bars=4)


def test_style_walk_plays_on_instead_of_repeating_its_first_bars():
    """A walk of 4 segments x 2 bars is one 8-bar piece whose style moves; it used to be the piece's first
    2 bars four times over (each segment generated afresh), which an input with a quiet effect made audible
    as one phrase repeated in every voice."""
    generator = musegan.load_generator("chorales")
    start = musegan.sample_inputs(generator.cfg, 1, make_generator(29))
    end = musegan.reroll(start, "style", make_generator(30))
    piece = musegan.generate(generator, **start, n_bars=8)[0]
    assert len({bar.numpy().tobytes() for bar in piece.view(4, 32, 4)}) == 4  # the piece itself does not repeat
    held = musegan.interpolate_piece(generator, start, start, "style", 4, 2)[0]
    assert torch.equal(held, piece)
    walk = musegan.interpolate_piece(generator, start, end, "style", 4, 2)[0].view(4, 32, 4)
    assert torch.equal(walk[0], piece.view(4, 32, 4)[0])  # it starts at this piece's style...
    arrived = musegan.generate(generator, **end, n_bars=8)[0].view(4, 32, 4)
    assert torch.equal(walk[-1], arrived[-1])  # ...and ends at the new one, in the same piece's last bars
    assert len({segment.numpy().tobytes() for segment in walk}) == 4
    chords = musegan.interpolate_piece(generator, start, musegan.reroll(start, "chords", make_generator(31)),
                                       "chords", 4, 2)[0]
    assert chords.shape == (8 * 16, 4) and torch.equal(chords[:16], piece[:16])  # the chord network starts alike


def test_two_instruments_sound_different_through_fluidsynth():
    from core import audio

    if audio.find_soundfont() is None:
        pytest.skip("FluidSynth or a General MIDI SoundFont is not installed (tests/install.sh installs them)")
    roll = hand_roll()
    flute, trumpet = (audio.synthesize(musegan.roll_to_midi(roll, 120, (name,) * 4), sample_rate=8000)
                      for name in ("Flute", "Trumpet"))
    n = min(len(flute), len(trumpet))
    spectra = [np.abs(np.fft.rfft(sound[:n])) for sound in (flute, trumpet)]
    spectra = [s / s.sum() for s in spectra]
    assert 0.2 < np.abs(spectra[0] - spectra[1]).sum()  # total variation between the two timbres (0..2)


@pytest.mark.parametrize("fluidsynth", [True, False])
def test_a_piece_of_rests_is_one_second_of_silence(fluidsynth, monkeypatch):
    from core import audio

    if not fluidsynth:
        monkeypatch.setattr(audio, "find_soundfont", lambda: None)
    sound = audio.synthesize(musegan.roll_to_midi(np.full((32, 4), data.REST), 90))
    assert sound.shape == (audio.SAMPLE_RATE,) and not sound.any()  # not NaN (additive) nor empty (FluidSynth)


def test_tab_says_plainly_when_instruments_cannot_be_heard(shipped_tiny, monkeypatch):
    from core import audio
    from tabs import musegan as tab

    heard = tab.new_piece(5, 2, 120, *data.DEFAULT_INSTRUMENTS)[-1]
    assert (tab.NO_INSTRUMENTS in heard) == (audio.find_soundfont() is None)
    monkeypatch.setattr(audio, "find_soundfont", lambda: None)
    pieces = [tab.new_piece(5, 2, 120, *instruments) for instruments in (("Flute",) * 4, ("Trumpet",) * 4)]
    assert all(tab.NO_INSTRUMENTS in piece[-1] for piece in pieces)
    assert np.array_equal(pieces[0][2][1], pieces[1][2][1])  # the fallback: one tone for every instrument
