"""MuseGAN tab: four-voice chorales from chords, style, melody and groove noise.

Each of the generator's four inputs can be re-rolled on its own (melody and groove per voice),
so a student hears what each one controls. The piece is shown as a piano roll with the four
voices in colour, played back, offered as MIDI and MusicXML, and measured next to Bach's chorales.
Handlers are plain functions; per-user inputs live in gr.State; the model loads on first use.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from core import audio as sound
from core.data.chorales import DEFAULT_INSTRUMENTS, MAX_TEMPO, MIN_TEMPO, PROGRAMS, VOICES
from core.registry import list_shipped, read_card
from tabs.common import PALETTE, caption, number, queue, user_errors

TAB = "musegan"
MODEL = "chorales"
UI_MAX_BARS = 8
# Okabe-Ito, readable with any colour vision: soprano blue, alto orange, tenor bluish green, bass reddish
# purple (the piano roll's caption names them)
VOICE_COLOURS = PALETTE[:4]
VOICE_COLOUR_NAMES = ("blue", "orange", "green", "purple")
PROMPT_COLOUR = "#b0b0b0"  # the bars a model was given, not the ones it wrote
TRANSFORMER = "chorales"   # the shipped Music Transformer (tabs/music_transformer.py), a column of the measures
INTRO = ("Four kinds of random input: **chords** and **style** (one vector each for the piece), **melody** and "
         "**groove** (one per voice). Re-roll one and listen to what changes; the others stay exactly as they were.")
NO_INSTRUMENTS = ("**The instruments are not audible here:** FluidSynth or a General MIDI SoundFont is not installed, "
                  "so every voice plays the same synthesized tone and the instrument menus change only the MIDI and "
                  "MusicXML files. Install Debian's `fluidsynth` and `timgm6mb-soundfont` and pip's `pyfluidsynth` "
                  "to hear them.")


def _model_ready() -> bool:
    return MODEL in list_shipped(TAB)


def _card() -> dict:
    return read_card(TAB, MODEL)


# --- handlers (plain functions; tests call them directly) ----------------------------------

def _seed_stream(state: dict):
    """A private random stream for the next re-roll: seed and re-roll count, so a session replays."""
    from core.runtime import make_generator

    state["rerolls"] += 1
    return make_generator(state["seed"] * 7919 + state["rerolls"])


def _check_instruments(instruments) -> tuple:
    instruments = tuple(instruments)
    for name in instruments:
        if name not in PROGRAMS:
            raise ValueError(f"Unknown instrument {name!r}; choose one from the list.")
    return instruments


def reference_columns() -> list[tuple[str, dict]]:
    """The measures both music models are judged by, from their cards: the held-out chorales, then each
    shipped model's own figure (MuseGAN: 1,000 generated phrases; the Transformer: its continuations of
    the held-out chorales' openings)."""
    card = _card()["metrics"]
    columns = [("Bach (held-out chorales)", card["held_out_chorales"]), ("MuseGAN (1,000 phrases)", card["generated"])]
    if TRANSFORMER in list_shipped("music_transformer"):
        music = read_card("music_transformer", TRANSFORMER)["metrics"].get("music")
        if music:
            columns.append(("Transformer (continued held-out openings)", music["generated"]))
    return columns


def render(roll, tempo, instruments, note: str = "", prompt_steps: int = 0):
    """One roll (steps, 4) -> (piano roll figure, audio, [MIDI, MusicXML] files, metrics table, note). With
    `prompt_steps`, the first steps are a prompt: drawn grey, and left out of this sample's measures."""
    from core import musegan
    from core.metrics.music import METRICS, all_metrics

    instruments = _check_instruments(instruments)
    tempo = musegan.check_tempo(tempo)
    pm = musegan.roll_to_midi(roll, tempo, instruments)
    audio = sound.synthesize(pm)
    if sound.find_soundfont() is None:
        note = f"{note}  \n{NO_INSTRUMENTS}" if note else NO_INSTRUMENTS
    folder = Path(tempfile.mkdtemp(prefix="genlab_music_"))
    (folder / "chorale.mid").write_bytes(musegan.midi_bytes(pm))
    musegan.write_musicxml(roll, folder / "chorale.musicxml", tempo, instruments)
    sample = all_metrics(roll[prompt_steps:])
    columns = reference_columns()
    # A Markdown table, not gr.Dataframe: that one imports pandas' styler and matplotlib at start-up.
    table = [f"| measure | this sample{' (new bars)' if prompt_steps else ''} | "
             + " | ".join(label for label, _ in columns) + " |", "|---" * (2 + len(columns)) + "|"]
    table += [f"| {description} | {sample[name]:.3f} | " + " | ".join(f"{values[name]:.3f}" for _, values in columns)
              + " |" for name, (_, description) in METRICS.items()]
    return (piano_roll_figure(roll, -(-len(roll) // 16), prompt_steps), (sound.SAMPLE_RATE, audio),
            [str(folder / "chorale.mid"), str(folder / "chorale.musicxml")], "\n".join(table), note)


def _generate_and_render(state, n_bars, tempo, instruments, note=""):
    from core import musegan

    roll = musegan.generate(musegan.load_generator(MODEL), **state["inputs"], n_bars=_bars(n_bars))[0].numpy()
    return (state, *render(roll, tempo, instruments, note))


def _bars(n_bars) -> int:
    from core import musegan

    n_bars = musegan.check_bars(n_bars)
    if n_bars > UI_MAX_BARS:
        raise ValueError(f"The number of bars must be between 1 and {UI_MAX_BARS}, not {n_bars}.")
    return n_bars


def new_piece(seed, n_bars, tempo, *instruments):
    """Fresh chords, style, melody and groove from `seed`."""
    from core import musegan
    from core.runtime import clamp_seed, make_generator

    seed = clamp_seed(seed)
    cfg = musegan.load_generator(MODEL).cfg
    state = {"seed": seed, "rerolls": 0, "inputs": musegan.sample_inputs(cfg, 1, make_generator(seed))}
    return _generate_and_render(state, n_bars, tempo, instruments)


def reroll_input(state, kind, voice, n_bars, tempo, *instruments):
    """New noise for one input (melody and groove: of one voice); the rest of the piece's inputs are kept."""
    from core import musegan

    if not state:
        raise ValueError("Make a piece first (New piece), then re-roll its inputs.")
    if kind in ("melody", "groove") and str(voice).lower() not in VOICES:
        raise ValueError(f"Pick a voice: {', '.join(v.capitalize() for v in VOICES)}.")
    voice_index = VOICES.index(voice.lower()) if kind in ("melody", "groove") else None
    state = {**state, "inputs": musegan.reroll(state["inputs"], kind, _seed_stream(state), voice_index)}
    what = f"the {voice.lower()}'s {kind}" if voice_index is not None else f"the {kind}"
    return _generate_and_render(state, n_bars, tempo, instruments, f"Re-rolled {what}; everything else is unchanged.")


def replay(state, n_bars, tempo, *instruments):
    """Same inputs, new bar count, tempo or instruments."""
    if not state:
        raise ValueError("Make a piece first (New piece).")
    return _generate_and_render(state, n_bars, tempo, instruments)


def replay_if_made(state, n_bars, tempo, *instruments):
    """replay() for the bars, tempo and instrument controls, which may change before there is a piece."""
    return replay(state, n_bars, tempo, *instruments) if state else (state, None, None, None, None, "")


def _reroller(kind: str):
    def reroll(state, voice, n_bars, tempo, *instruments):
        return reroll_input(state, kind, voice, n_bars, tempo, *instruments)
    reroll.__name__ = f"reroll_{kind}"  # named in the server log's one-line refusals
    return reroll


def interpolate(state, kind, segments, bars_per_segment, tempo, *instruments):
    """One piece walking the chosen input from this piece's value to a fresh random one."""
    from core import musegan

    if not state:
        raise ValueError("Make a piece first (New piece): it is the interpolation's starting point.")
    kind, segments = kind.lower(), number(segments, 4, 2, 8, whole=True)  # the slider's range
    bars, generator = _bars(bars_per_segment), musegan.load_generator(MODEL)
    end = musegan.reroll(state["inputs"], kind, _seed_stream(state))
    roll = musegan.interpolate_piece(generator, state["inputs"], end, kind, segments, bars)[0].numpy()
    # The same bars with the input held still: how much of what you hear is the walk's doing.
    still = musegan.interpolate_piece(generator, state["inputs"], state["inputs"], kind, segments, bars)[0].numpy()
    note = (f"{segments} segments of {bars} bar(s): the {kind} moves from this piece's to a new random one while "
            f"the other inputs stay fixed and the piece plays on; the walk changed {(roll != still).mean():.0%} of "
            f"the voices' 16th-note steps against the same {segments * bars} bars with the {kind} held still.")
    return render(roll, tempo, instruments, note)


def analyse_upload(path, tempo, *instruments):
    """A four-part MIDI/MusicXML file of your own: its piano roll, sound and metrics.

    Streams twice: first the views emptied, so that when this file is refused no earlier result stays
    on screen as if it were this file's; then this file's views."""
    from core.data.chorales import STEPS_PER_BAR, parse_file

    yield None, None, None, "", ""
    if not path:
        raise ValueError("Upload a MIDI or MusicXML file with four parts first.")
    roll = parse_file(path)[:UI_MAX_BARS * 2 * STEPS_PER_BAR]
    yield render(roll, tempo, instruments, f"{Path(path).name}: first {len(roll) // STEPS_PER_BAR} bars.")


def piano_roll_figure(roll, n_bars: int, prompt_steps: int = 0):
    """The four voices as coloured note bars over pitch and time, with bar lines; notes that start in the
    first `prompt_steps` (a prompt the model continued) in grey, with a dashed line where the new music starts."""
    from matplotlib.figure import Figure

    from core import musegan
    from core.data.chorales import class_to_midi

    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    for v, (voice, colour) in enumerate(zip(VOICES, VOICE_COLOURS)):
        notes = musegan.notes_of(roll[:, v])
        ax.plot([], [], color=colour, lw=6, label=voice)  # legend entry
        for start, end, cls in notes:
            ax.broken_barh([(start / 4, (end - start) / 4 - 0.05)], (class_to_midi(cls) - 0.4, 0.8),
                           color=PROMPT_COLOUR if start < prompt_steps else colour)
    for bar in range(n_bars + 1):
        ax.axvline(bar * 4, color="#999", lw=0.8)
    if prompt_steps:
        ax.axvline(prompt_steps / 4, color="#000", lw=1.5, ls="--")
        ax.plot([], [], color=PROMPT_COLOUR, lw=6, label="prompt")
    sounding = [class_to_midi(c) for c in roll.flatten() if c]
    low, high = (min(sounding) - 2, max(sounding) + 2) if sounding else (48, 84)
    ax.set_ylim(low, high)
    ax.set_xlim(0, n_bars * 4)
    ax.set_xlabel("beats (quarter notes)")
    ax.set_ylabel("MIDI pitch (60 = middle C)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=5, fontsize=8, frameon=False)  # above, off the notes
    fig.tight_layout()
    return fig


# --- layout -----------------------------------------------------------------------------

def instrument_menus(prefix: str) -> list:
    """A General MIDI instrument menu per voice (elem_id prefix-voice), and a sentence when FluidSynth
    cannot make them heard here. Both music parts play their rolls through render() with these."""
    with gr.Row():
        menus = [gr.Dropdown(list(PROGRAMS), value=default, label=f"{voice} plays", elem_id=f"{prefix}-{voice}")
                 for voice, default in zip(VOICES, DEFAULT_INSTRUMENTS)]
    if sound.find_soundfont() is None:
        gr.Markdown(NO_INSTRUMENTS)
    return menus


def result_views(prefix: str, plot_label: str, measures: str, prompt: bool = False) -> tuple:
    """The views render() fills, in its order after the note: (note, piano roll, audio, files, measures)."""
    note = gr.Markdown(elem_id=f"{prefix}-note")
    voices = ", ".join(f"{voice} {colour}" for voice, colour in zip(VOICES, VOICE_COLOUR_NAMES))
    caption(f"**{plot_label.capitalize()}**: one bar per note, across in beats (quarter notes; thin grey lines "
            f"are bar lines), up in MIDI pitch (60 = middle C). Voices: {voices}"
            + ("; the prompt's notes grey, a dashed line where the new music starts." if prompt else "."))
    plot = gr.Plot(label=plot_label, elem_id=f"{prefix}-plot")
    audio = gr.Audio(label="listen", type="numpy", elem_id=f"{prefix}-audio")
    files = gr.File(label="MIDI and MusicXML", file_count="multiple")
    gr.Markdown(f"**{measures}** (definitions in `core/metrics/music.py`)")
    return note, plot, audio, files, gr.Markdown(elem_id=f"{prefix}-metrics")


def build(ran=None) -> dict | None:
    """The MuseGAN panel. `ran` (the Music tab's lesson trigger): a change makes a new piece, as the button does.
    Returns the widgets a link may set (None when no model is shipped)."""
    gr.Markdown(INTRO)
    if not _model_ready():
        gr.Markdown(f"**Not ready:** no trained MuseGAN is shipped yet. Train one with "
                    f"`python -m core.train musegan` (it writes assets/checkpoints/musegan/{MODEL}.pt).")
        return None
    state = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            new_button = gr.Button("New piece (all inputs from the seed)", variant="primary", elem_id="musegan-new")
            with gr.Row():
                chords_button = gr.Button("Re-roll chords", size="sm")
                style_button = gr.Button("Re-roll style", size="sm")
            voice = gr.Radio([v.capitalize() for v in VOICES], value="Soprano", label="voice")
            with gr.Row():
                melody_button = gr.Button("Re-roll its melody", size="sm")
                groove_button = gr.Button("Re-roll its groove", size="sm")
            with gr.Row():
                seed = gr.Number(value=0, label="seed", precision=0, min_width=80)
                n_bars = gr.Slider(1, UI_MAX_BARS, value=4, step=1, label="bars", min_width=120)
            tempo = gr.Slider(MIN_TEMPO, MAX_TEMPO, value=90, step=1, label="tempo (quarter notes per minute)")
            instruments = instrument_menus("musegan")
            with gr.Accordion("model card: how it was trained", open=False):
                gr.Markdown(_card_text())
        with gr.Column(scale=2):
            note, plot, audio, files, metrics = result_views("musegan", "piano roll", "Metrics: this sample next to "
                                                             "the chorales and to both models")
    with gr.Accordion("Interpolate: one input walks to a new value while the music plays on", open=False):
        with gr.Row():
            interp_kind = gr.Radio(["Style", "Chords"], value="Style", label="walk")
            segments = gr.Slider(2, 8, value=4, step=1, label="segments")
            bars_per_segment = gr.Slider(1, 4, value=2, step=1, label="bars per segment")
        interp_button = gr.Button("Play the interpolation")
    with gr.Accordion("Measure your own four-part MIDI or MusicXML", open=False):
        upload = gr.File(label="four-part file", file_types=[".mid", ".midi", ".xml", ".musicxml", ".mxl"], type="filepath",
                         elem_id="musegan-upload")
        upload_button = gr.Button("Show and measure it", elem_id="musegan-measure")

    piece_outputs = [state, plot, audio, files, metrics, note]
    view_outputs = [plot, audio, files, metrics, note]
    render_args = [n_bars, tempo, *instruments]
    gr.on([new_button.click] + ([ran.change] if ran is not None else []), user_errors(new_piece),
          [seed, *render_args], piece_outputs, api_name="musegan_new_piece", **queue(TAB, 2))
    for button, kind in ((chords_button, "chords"), (style_button, "style"),
                         (melody_button, "melody"), (groove_button, "groove")):
        button.click(user_errors(_reroller(kind)), [state, voice, *render_args], piece_outputs,
                     api_name=f"musegan_reroll_{kind}", **queue(TAB, 2))
    # One action, six widgets: one public name, the other wirings undocumented. On .input (a user's change),
    # not .change: a link or a "Try this" button that sets these makes a whole new piece anyway.
    for i, (control, widget) in enumerate(zip((n_bars, tempo, *instruments), ("bars", "tempo", *VOICES))):
        control.input(user_errors(replay_if_made), [state, *render_args], piece_outputs,
                      api_name="musegan_replay" if i == 0 else f"musegan_replay_from_{widget}",
                      api_visibility="public" if i == 0 else "undocumented", trigger_mode="always_last",
                      **queue(TAB, 2))
    interp_button.click(user_errors(interpolate), [state, interp_kind, segments, bars_per_segment, tempo, *instruments],
                        view_outputs, api_name="musegan_interpolate", **queue(TAB, 2))
    upload_button.click(user_errors(analyse_upload), [upload, tempo, *instruments], view_outputs,
                        api_name="musegan_analyse_upload", **queue(TAB, 2))
    return {"seed": seed, "bars": n_bars, "tempo": tempo}


def _card_text() -> str:
    card = _card()
    continued = len(card.get("resumed_with", []))
    shipped_step = card.get("selected_step", card["steps"])
    earlier = card.get("fine_tuned_from")
    steps = (f"{earlier.get('selected_step', earlier.get('steps')):,} generator steps, then {card['steps']:,} more "
             "from that generator with a fresh critic" if earlier else f"{card['steps']:,} generator steps")
    return (f"Model trained for {steps} ({card['wall_time_s'] / 60:.0f} min, {card['hardware']}) "
            f"with `{card['command']}`"
            + (f", continued {continued} times (the model card lists every command)" if continued else "")
            + f"; these weights are the generator's average at step {shipped_step}"
            + (" of the last run" if earlier else "") + ", the one closest to the training chorales' metrics.")
