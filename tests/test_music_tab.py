"""The Music tab's Transformer part (tabs/music_transformer.py) and what it shares with the MuseGAN part.

A tiny untrained chorale GPT stands in for the shipped Music Transformer (core.music_transformer.load_shipped
is monkeypatched), the real MuseGAN card gives the table its Bach and MuseGAN columns, and a made-up card
with made-up measures plays the Transformer's, so every number in the table can be traced to its source.
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from core import music_transformer as mt
from core import musegan
from core.data import chorales as data
from core.data.chorales import DEFAULT_INSTRUMENTS
from core.metrics.music import METRICS, all_metrics
from core.text import GPT

BAR = mt.TOKENS_PER_BAR
BLOCK_BARS = 2  # the tiny model reads 2 bars: the 2-bar prompt fills its context, so the window moves on at once
REAL_MUSEGAN_CARD = __import__("core.registry").registry.CHECKPOINT_DIR / "musegan" / "chorales.json"
# Made-up Transformer measures, unlike any real ones, so the table's fifth column can be told apart.
TRANSFORMER_MEASURES = {name: 0.1111 * (i + 1) for i, name in enumerate(METRICS)}


def tiny_music_gpt(seed=0):
    """A small chorale GPT whose weights are drawn large, so that its samples change with the seed and
    its argmax from token to token (an untrained GPT's outputs are nearly uniform)."""
    torch.manual_seed(seed)
    model = GPT(mt.model_config(block_size=BLOCK_BARS * BAR, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + p.numel()))
    return model


class Shipped:
    """What the tab finds on disk: the real MuseGAN card, and a Transformer whose card may or may not
    carry music measures (write_card), with a tiny GPT as its weights."""

    def __init__(self, root, model):
        self.root, self.model = root, model

    def write_card(self, music: bool = True, shipped: bool = True):
        folder = self.root / "music_transformer"
        folder.mkdir(exist_ok=True)
        metrics = {"valid_loss_nats_per_token": 1.0}
        if music:
            metrics["music"] = {"generated": TRANSFORMER_MEASURES,
                                "held_out_chorales": {name: 0.5 for name in METRICS}}
        (folder / "chorales.json").write_text(json.dumps({"metrics": metrics}))
        checkpoint = folder / "chorales.pt"
        if shipped:
            checkpoint.write_bytes(b"")  # only its name is read: load_shipped is replaced
        elif checkpoint.exists():
            checkpoint.unlink()


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    import core.registry

    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "musegan").mkdir()
    shutil.copy(REAL_MUSEGAN_CARD, tmp_path / "musegan" / "chorales.json")
    model = tiny_music_gpt()
    monkeypatch.setattr(mt, "load_shipped", lambda name="chorales": model)
    found = Shipped(tmp_path, model)
    found.write_card()
    return found


def opening(index=3):
    return data.held_out_openings(2)[index]


FIRST = object()  # the default prompt: a held-out opening


def cont(choice=FIRST, upload=None, bars=2, temperature=1.0, top_k=0, seed=0, tempo=120,
         instruments=DEFAULT_INSTRUMENTS):
    from tabs import music_transformer as tab

    choice = opening()[0] if choice is FIRST else choice
    return tab.continue_music(choice, upload, bars, temperature, top_k, seed, tempo, *instruments)


def roll_of(state) -> np.ndarray:
    return mt.roll_of(torch.tensor(state["tokens"]))


def table_rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.splitlines()
            if not line.startswith("|---")]


# --- continue_music --------------------------------------------------------------------------------

def test_a_continuation_keeps_the_opening_and_writes_the_asked_bars(shipped):
    name, prompt = opening()
    state, figure, (rate, audio), files, table, note, position = cont(bars=3, seed=7)
    roll = roll_of(state)
    assert roll.shape == (5 * 16, 4)  # 2 bars of prompt + 3 new ones
    assert np.array_equal(roll[:32], prompt)  # the held-out opening, exactly
    assert state["start"] == 2 * BAR and len(state["tokens"]) - state["start"] == 3 * BAR
    assert not np.array_equal(roll[32:48], roll[:16])  # new music, not the prompt again
    assert (f"the first 2 bars of {name} (a held-out chorale), continued by 3 bar(s) with temperature 1, seed 7"
            in note)
    assert position == {"__type__": "update", "maximum": 3 * BAR, "value": 1}  # one slider step per new token
    assert len(audio) >= rate * 10 * 0.95  # 5 bars of 4 beats at 120 per minute: 10 s
    assert [p.rsplit(".", 1)[1] for p in files] == ["mid", "musicxml"]
    import pretty_midi

    back = musegan.midi_to_roll(pretty_midi.PrettyMIDI(files[0]))  # the MIDI file is the whole piece
    assert np.array_equal(back, roll[:len(back)]) and (roll[len(back):] == data.REST).all()
    assert np.array_equal(data.parse_file(files[1]), roll)


def test_the_same_seed_gives_the_same_music_and_another_seed_other_music(shipped):
    first, again, other = (cont(seed=seed) for seed in (5, 5, 6))
    assert first[0]["tokens"] == again[0]["tokens"]
    assert np.array_equal(first[2][1], again[2][1])  # the audio too
    assert first[4] == again[4]  # and the measures
    new = slice(first[0]["start"], None)
    assert first[0]["tokens"][new] != other[0]["tokens"][new]
    assert first[0]["tokens"][:first[0]["start"]] == other[0]["tokens"][:other[0]["start"]]  # the same prompt


def test_temperature_zero_is_greedy_and_the_note_says_so(shipped):
    greedy = [cont(temperature=0, seed=seed) for seed in (1, 2)]
    assert greedy[0][0]["tokens"] == greedy[1][0]["tokens"]  # no randomness left
    note = greedy[0][5]
    assert "the most likely token each time (temperature 0)" in note and "seed 1" in note
    # top-k 1 at any temperature is the same as always taking the likeliest token
    assert cont(temperature=1.5, top_k=1, seed=9)[0]["tokens"] == greedy[0][0]["tokens"]
    assert "temperature 1.5, top-k 1," in cont(temperature=1.5, top_k=1, seed=9)[5]
    # top-k from the vocabulary's size up keeps every token: the same draw as no top-k, and not named
    off, huge = cont(top_k=0, seed=4), cont(top_k=1000, seed=4)
    assert off[0]["tokens"] == huge[0]["tokens"] and "top-k" not in huge[5]


def test_unknown_prompts_and_an_upload_choice_without_a_file_are_refused(shipped):
    from tabs import music_transformer as tab

    for choice in ("no such chorale", None, "", "bwv0.0"):
        with pytest.raises(ValueError, match="Unknown prompt") as refused:
            cont(choice=choice)
        assert refused.value.args[0].endswith(".")
    for nothing in (None, "", "   "):
        with pytest.raises(ValueError, match="Upload a MIDI or MusicXML file"):
            cont(choice=tab.UPLOAD, upload=nothing)


def test_an_uploaded_four_part_file_is_the_prompt(shipped, tmp_path):
    from tabs import music_transformer as tab

    piece = data.held_out_openings(4)[0][1]  # four bars: only the first two are the prompt
    path = tmp_path / "mine.mid"
    path.write_bytes(musegan.midi_bytes(musegan.roll_to_midi(piece)))
    state, *_, note, position = cont(choice=tab.UPLOAD, upload=str(path), bars=1)
    assert np.array_equal(roll_of(state)[:32], piece[:32]) and state["start"] == 2 * BAR
    assert note.startswith("the first bars of your file, continued by 1 bar(s)")
    trio = tmp_path / "trio.mid"
    pm = musegan.roll_to_midi(piece)
    pm.instruments = pm.instruments[:3]
    pm.write(str(trio))
    with pytest.raises(ValueError, match="3 part"):
        cont(choice=tab.UPLOAD, upload=str(trio))


@pytest.mark.parametrize("bars, new_bars", [(0, 1), (-3, 1), (99, 8), (1e12, 8), (float("inf"), 8), (None, 4),
                                            (float("nan"), 4), ("two", 4), (2.7, 2), (8, 8)])
def test_bars_out_of_the_sliders_range_are_clamped(shipped, bars, new_bars):
    state, *_, position = cont(bars=bars)
    assert len(state["tokens"]) - state["start"] == new_bars * BAR == position["maximum"]


@pytest.mark.parametrize("options, message", [
    (dict(temperature=-0.1), "temperature"), (dict(temperature=5.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(temperature="hot"), "temperature"), (dict(temperature=None), "temperature"),
    (dict(top_k=-1), "top-k"), (dict(top_k=2.5), "top-k"), (dict(top_k=None), "top-k"),
    (dict(top_k=float("nan")), "top-k"), (dict(top_k=float("inf")), "top-k"),
    (dict(tempo=0), "tempo"), (dict(tempo=1000), "tempo"), (dict(tempo=float("nan")), "tempo"),
    (dict(tempo=None), "tempo"), (dict(instruments=("Kazoo",) + DEFAULT_INSTRUMENTS[1:]), "instrument")])
def test_sampling_options_that_make_no_sense_are_refused_with_a_sentence(shipped, options, message):
    with pytest.raises(ValueError, match=message) as refused:
        cont(**options)
    assert refused.value.args[0].endswith(".") and "Traceback" not in refused.value.args[0]


@pytest.mark.parametrize("seed", [-1, 2**80, None, float("nan"), 3.7])
def test_any_number_is_a_seed(shipped, seed):
    state, *_, note, _ = cont(seed=seed, bars=1)
    assert len(state["tokens"]) == 3 * BAR and re.search(r"seed \d+\.", note)


def test_the_highest_temperature_check_sampling_allows_works(shipped):
    from core.text import MAX_TEMPERATURE

    state, *_, note, _ = cont(temperature=MAX_TEMPERATURE, bars=1)
    assert f"temperature {MAX_TEMPERATURE:g}" in note


# --- what render shows: the measures and the piano roll -------------------------------------------

def test_the_measures_have_a_column_per_shipped_model_and_measure_only_the_new_bars(shipped):
    real = json.loads(REAL_MUSEGAN_CARD.read_text())["metrics"]
    state, _, _, _, table, _, _ = cont(bars=2, seed=3)
    roll = roll_of(state)
    rows = table_rows(table)
    assert rows[0] == ["measure", "this sample (new bars)", "Bach (held-out chorales)", "MuseGAN (1,000 phrases)",
                       "Transformer (continued held-out openings)"]
    assert [row[0] for row in rows[1:]] == [description for _, description in METRICS.values()]
    new, whole = all_metrics(roll[32:]), all_metrics(roll)
    for row, name in zip(rows[1:], METRICS):
        assert row[1:] == [f"{new[name]:.3f}", f"{real['held_out_chorales'][name]:.3f}",
                           f"{real['generated'][name]:.3f}", f"{TRANSFORMER_MEASURES[name]:.3f}"], name
    # The prompt (Bach's own bars) is left out: measured with it, some figure would read differently.
    assert [row[1] for row in rows[1:]] != [f"{whole[name]:.3f}" for name in METRICS]


@pytest.mark.parametrize("music, shipped_model", [(False, True), (True, False)])
def test_no_transformer_column_without_its_measures(shipped, music, shipped_model):
    shipped.write_card(music=music, shipped=shipped_model)
    header = table_rows(cont(bars=1)[4])[0]
    assert header == ["measure", "this sample (new bars)", "Bach (held-out chorales)", "MuseGAN (1,000 phrases)"]


def test_a_musegan_piece_is_measured_whole_and_drawn_in_colour(shipped):
    from tabs import musegan as tab

    roll = np.array(opening()[1])
    figure, _, _, table, _ = tab.render(roll, 90, DEFAULT_INSTRUMENTS)
    assert table_rows(table)[0][1] == "this sample"
    whole = all_metrics(roll)
    assert [row[1] for row in table_rows(table)[1:]] == [f"{whole[name]:.3f}" for name in METRICS]
    assert tab.PROMPT_COLOUR not in {colour for _, colour in bars_drawn(figure)}


def bars_drawn(figure) -> list[tuple[float, str]]:
    """(start in beats, colour) of every note bar of a piano roll figure."""
    from matplotlib.colors import to_hex

    ax = figure.axes[0]
    return [(float(c.get_paths()[0].vertices[:, 0].min()), to_hex(c.get_facecolor()[0])) for c in ax.collections]


def test_the_piano_roll_draws_the_prompt_grey_and_the_new_bars_in_the_voices_colours(shipped):
    from matplotlib.colors import to_hex

    from tabs import musegan as tab

    state, figure, *_ = cont(bars=2, seed=1)
    drawn = bars_drawn(figure)
    roll = roll_of(state)
    started_in_prompt = sum(start < 32 for v in range(4) for start, _, _ in musegan.notes_of(roll[:, v]))
    assert sum(colour == tab.PROMPT_COLOUR for _, colour in drawn) == started_in_prompt > 0
    for start, colour in drawn:
        if start < 8 - 1e-6:  # the prompt: 2 bars of 4 beats
            assert colour == tab.PROMPT_COLOUR, start
        else:
            assert colour in [to_hex(voice) for voice in tab.VOICE_COLOURS], (start, colour)
    assert any(start >= 8 for start, _ in drawn)
    ax = figure.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [8, 8]  # where the new music starts
    assert "prompt" in [text.get_text() for text in ax.get_legend().get_texts()]
    assert ax.get_xlim() == (0, 16)  # 4 bars of 4 beats


# --- attention_figure ------------------------------------------------------------------------------

@pytest.fixture
def continued(shipped):
    """A 1-bar continuation (64 new tokens) of the tiny model."""
    return cont(bars=1, seed=2)[0]


def attention(state, layer=1, head="all heads", position=1):
    from tabs import music_transformer as tab

    return tab.attention_figure(state, layer, head, position)


def test_attention_is_refused_before_any_continuation(shipped):
    for state in (None, {}, {"other": 1}):
        with pytest.raises(ValueError, match="Continue a prompt first"):
            attention(state)


@pytest.mark.parametrize("position, shown", [(0, 1), (-5, 1), (None, 1), (float("nan"), 1), ("first", 1),
                                             (2.6, 2), (64, 64), (65, 64), (10**6, 64), (float("inf"), 64)])
def test_the_position_is_clamped_to_the_new_tokens(continued, position, shown):
    _, note = attention(continued, position=position)
    assert note.startswith(f"New token {shown} of 64: ")


def test_the_note_names_the_chosen_token_and_the_window_the_model_read(continued):
    tokens, start = continued["tokens"], continued["start"]
    for k in (1, 2, 10, 64):
        chosen = start + k - 1
        _, note = attention(continued, position=k)
        first = mt.window_start(chosen, BLOCK_BARS * BAR)
        assert f": {mt.describe_token(chosen, tokens[chosen])}." in note, (k, note)
        read = re.search(r"read (\d+) tokens \(([\d.]+) bars\)", note)
        assert read and int(read[1]) == chosen - first, (k, note)
        assert float(read[2]) == pytest.approx((chosen - first) / BAR, abs=0.05), (k, note)
    # The first new token was chosen from the whole 2-bar prompt; the second from a window moved on by a bar.
    assert "read 128 tokens (2" in attention(continued, position=1)[1]
    assert "read 65 tokens (1" in attention(continued, position=2)[1]


class Drawn:
    """What attention_figure hands matplotlib: each imshow's array, and the figure itself (its axes
    and their transforms, to read the picture's pixels back as voices and 16th notes)."""

    def __init__(self, monkeypatch):
        import matplotlib.axes

        from tabs import music_transformer as tab

        self.pictures, self.figures = [], []
        imshow, to_image = matplotlib.axes.Axes.imshow, tab.figure_to_image

        def spy_imshow(ax, picture, *args, **kwargs):
            self.pictures.append(np.array(picture, dtype=float))
            return imshow(ax, picture, *args, **kwargs)

        def spy_to_image(fig):
            self.figures.append(fig)
            return to_image(fig)

        monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy_imshow)
        monkeypatch.setattr(tab, "figure_to_image", spy_to_image)

    def clear(self):
        self.pictures.clear()
        self.figures.clear()


def as_grid(weights: torch.Tensor) -> np.ndarray:
    """Weights over earlier tokens (n,) as the picture lays them out: voices x 16th notes, NaN after the last."""
    steps = -(-len(weights) // 4)
    grid = np.full(steps * 4, np.nan)
    grid[:len(weights)] = weights.numpy()
    return grid.reshape(steps, 4).T


def test_the_picture_shows_attention_to_earlier_tokens_for_the_chosen_layer_and_heads(continued, monkeypatch):
    drawn = Drawn(monkeypatch)
    model, tokens, start = mt.load_shipped(), continued["tokens"], continued["start"]
    for k, layer in ((1, 1), (7, 2), (40, 1), (64, 2)):
        chosen = start + k - 1
        first, weights = mt.attention_to_earlier(model, tokens[:chosen], chosen)
        drawn.clear()
        attention(continued, layer=layer, position=k)
        assert len(drawn.pictures) == 2  # one per head
        for head, picture in enumerate(drawn.pictures):
            np.testing.assert_allclose(picture, as_grid(weights[layer - 1, head]), rtol=1e-5, atol=1e-7,
                                       equal_nan=True, err_msg=f"position {k} layer {layer} head {head + 1}")
        drawn.clear()
        attention(continued, layer=layer, head="head 2", position=k)
        assert len(drawn.pictures) == 1
        np.testing.assert_allclose(drawn.pictures[0], as_grid(weights[layer - 1, 1]), rtol=1e-5, atol=1e-7,
                                   equal_nan=True)


def bright_cells(image, fig) -> list[tuple[float, float]]:
    """For each axes of the figure, the centre of its brightest cells (magma's pale yellow) in data
    coordinates: (16th notes from the start of the piece, voice 0..3)."""
    pixels = np.asarray(image).astype(int)
    yellow = (pixels[..., 0] > 235) & (pixels[..., 1] > 235) & (pixels[..., 2] > 160) & (pixels[..., 2] < 215)
    height = pixels.shape[0]
    found = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        rows, cols = np.nonzero(yellow)
        display = np.stack([cols + 0.5, height - rows - 0.5], 1)
        inside = (display[:, 0] > box.x0) & (display[:, 0] < box.x1) & (display[:, 1] > box.y0) & (display[:, 1] < box.y1)
        assert inside.any(), "no bright cell in this head's picture"
        found.append(tuple(ax.transData.inverted().transform(display[inside]).mean(0)))
    return found


def test_the_pixels_put_each_weight_on_its_voice_and_16th_note(continued, monkeypatch):
    """attention_to_earlier replaced by a known pattern: head h gives all its weight to one earlier token;
    that token's cell is the bright one, on its voice's row and its 16th note's column."""
    from tabs import music_transformer as tab

    drawn = Drawn(monkeypatch)
    targets = {0: 5 * 4 + 2, 1: 20 * 4 + 3}  # head 1: the tenor at 16th 5; head 2: the bass at 16th 20 (from the window)

    def known(model, tokens, position):
        first = mt.window_start(position, model.config.block_size)
        weights = torch.zeros(model.config.n_layer, model.config.n_head, position - first)
        for head, index in targets.items():
            weights[:, head, index] = 1.0
        return first, weights

    monkeypatch.setattr(mt, "attention_to_earlier", known)
    k = 30
    chosen = continued["start"] + k - 1
    first = mt.window_start(chosen, BLOCK_BARS * BAR)
    image, _ = attention(continued, position=k)
    for head, (x, voice) in enumerate(bright_cells(image, drawn.figures[-1])):
        step, want_voice = divmod(targets[head], 4)
        assert abs(x - (first / 4 + step + 0.5)) < 0.5, (head, x)
        assert abs(voice - want_voice) < 0.5, (head, voice)
    image, _ = attention(continued, head="head 2", position=k)
    (x, voice), = bright_cells(image, drawn.figures[-1])
    assert abs(x - (first / 4 + 20 + 0.5)) < 0.5 and abs(voice - 3) < 0.5
    assert image.size[1] < attention(continued, position=k)[0].size[1]  # one head's picture is smaller
    assert tab.ALL_HEADS == "all heads"


def test_the_layer_is_clamped_and_each_choice_draws_its_own_picture(continued):
    pixels = lambda *args, **kwargs: np.asarray(attention(continued, *args, **kwargs)[0])
    one, two = pixels(layer=1, position=9), pixels(layer=2, position=9)
    assert not np.array_equal(one, two)
    for layer, same in ((0, one), (-3, one), (None, one), (float("nan"), one), (99, two), (float("inf"), two)):
        assert np.array_equal(pixels(layer=layer, position=9), same), layer
    head_two = pixels(layer=1, head="head 2", position=9)
    assert head_two.shape != one.shape  # one head, not all of them
    assert np.array_equal(pixels(layer=1, head=2, position=9), head_two)  # the API may send the bare number
    assert np.array_equal(pixels(layer=1, head=None, position=9), one)  # no choice: every head
    assert not np.array_equal(pixels(layer=1, head="head 1", position=9), head_two)
    assert not np.array_equal(pixels(layer=1, position=40), one)  # another token, another picture
    picture = attention(continued, position=9)[0]
    assert np.asarray(picture.convert("L")).std() > 5  # not blank


@pytest.mark.parametrize("head", ["head 3", "head 0", "head", "", "voice 2", "all", 2.5])
def test_a_head_the_model_does_not_have_is_refused(continued, head):
    with pytest.raises(ValueError, match="Pick a head from 1 to 2, or all heads."):
        attention(continued, head=head)


# --- the wiring ------------------------------------------------------------------------------------

def test_the_prompt_list_is_the_held_out_openings():
    from tabs import music_transformer as tab

    names = tab.prompt_names()
    assert names == [name for name, _ in data.held_out_openings(2)] and len(names) >= 30
    train, held_out = data.load_bach().split()
    assert set(names) <= set(held_out.names) and not set(names) & set(train.names)
    roll, what = tab._prompt(names[0], None)
    assert np.array_equal(roll, data.held_out_openings(2)[0][1]) and names[0] in what


def test_the_head_names_map_to_head_indices():
    from tabs import music_transformer as tab

    model = tiny_music_gpt()
    assert [tab._head_index(name, model) for name in ("head 1", "Head 2", " head 2 ", "1", 2)] == [0, 1, 1, 0, 1]


# --- the lesson: one for both panels ---------------------------------------------------------------

def test_a_link_or_try_button_makes_a_musegan_piece_and_for_the_transformer_also_continues_and_shows_it():
    import gradio as gr

    from tabs import music
    from tabs.classroom import widget_value

    with gr.Blocks() as demo:
        page = music.build()
    assert page.lesson is music.LESSON and music.LESSON.main == "musegan-new"
    assert {"panel", "seed", "bars", "tempo", "prompt", "new_bars", "temperature", "top_k", "gpt_seed"} == set(page.settings)
    for example in music.LESSON.try_this:  # every setting is a valid value of its widget
        for name, value in example.settings.items():
            assert widget_value(page.settings[name], str(value)) == (value, None), (example.label, name)
    triggers = {fn.api_name: {(block, event) for block, event in fn.targets} for fn in demo.fns.values()}
    assert (page.ran._id, "change") in triggers["musegan_new_piece"]  # the first panel's main action
    continued = next(block for block, event in triggers["music_continue"] if event == "change")
    assert (page.ran._id, "change") in triggers["music_show_panel"]
    show = next(fn for fn in demo.fns.values() if fn.api_name == "music_show_panel")
    assert continued in [block._id for block in show.outputs]
    # the Transformer's panel is shown and its prompt continued; for MuseGAN's, nothing more
    selected, bumped = music.show_panel("transformer", 2)
    assert selected.selected == "transformer" and bumped == 3
    selected, untouched = music.show_panel("musegan", 2)
    assert selected.selected == "musegan" and untouched == gr.skip()
