"""The Music tab's Transformer part: continue a chorale one token at a time, and see what each head attended to.

A prompt (the opening bars of a held-out chorale, or a four-part file of your own) becomes grid tokens
(core.music_transformer: S A T B for each 16th note); the shipped Transformer continues it with the
temperature, top-k and seed you choose. The result is drawn, played and offered as files by the MuseGAN
part's own render (prompt grey, new bars in the voices' colours), with the same measures for both models.
The attention view shows, for any generated token, each head's weights over the earlier tokens, laid out
as the music is: one row per voice, one column per 16th note. Per-user results live in gr.State.
"""
from __future__ import annotations

import gradio as gr

from core.data.chorales import MAX_TEMPO, MIN_TEMPO, VOICES
from core.registry import list_shipped, read_card
from tabs.common import PALETTE, caption, figure_to_image, number, queue, user_errors

TAB = "music"
MODEL = "chorales"
UPLOAD = "my file (upload below)"
PROMPT_BARS = 2
UI_MAX_BARS = 8
ALL_HEADS = "all heads"
INTRO = ("The same chorales as one stream of tokens, soprano, alto, tenor and bass for every 16th note (64 a bar); a "
         "small GPT continues a 2-bar prompt one token at a time, each drawn with the temperature and top-k you set.")
MARK = PALETTE[4]  # sky blue: the token being chosen, and where the prompt ends, on the magma heat map


def _ready() -> bool:
    return MODEL in list_shipped("music_transformer")


def prompt_names() -> list[str]:
    """The held-out chorales whose opening can be a prompt (read without torch, while the app is built)."""
    from core.data.chorales import held_out_openings

    return [name for name, _ in held_out_openings(PROMPT_BARS)]


def _prompt(choice, upload) -> tuple:
    """(roll, what it is) of the chosen prompt."""
    from core.data.chorales import held_out_openings
    from core.music_transformer import prompt_from_upload

    if choice == UPLOAD:
        roll = prompt_from_upload(upload, PROMPT_BARS)
        return roll, "the first bars of your file"
    openings = dict(held_out_openings(PROMPT_BARS))
    if choice not in openings:
        raise ValueError(f"Unknown prompt {str(choice)[:60]!r}: pick a held-out chorale, or your own file.")
    return openings[choice], f"the first {PROMPT_BARS} bars of {choice} (a held-out chorale)"


def continue_music(choice, upload, bars, temperature, top_k, seed, tempo, *instruments):
    """The prompt continued: state (tokens, where the new ones start), then the MuseGAN part's render
    outputs, and the position slider reset to the first new token."""
    from core import music_transformer as mt
    from core.runtime import clamp_seed
    from tabs.musegan import render

    roll, what = _prompt(choice, upload)
    bars = number(bars, 4, 1, UI_MAX_BARS, whole=True)
    temperature, top_k = mt.check_sampling(temperature, top_k)
    seed = clamp_seed(seed)
    result = mt.continue_roll(mt.load_shipped(MODEL), roll, bars, temperature, top_k, seed)
    state = {"tokens": mt.tokens_of(result.roll).tolist(), "start": result.start * mt.TOKENS_PER_STEP}
    how = "the most likely token each time (temperature 0)" if temperature == 0 else \
        f"temperature {temperature:g}" + (f", top-k {top_k}" if top_k else "")
    note = f"{what}, continued by {bars} bar(s) with {how}, seed {seed}. " + result.note
    new_tokens = len(state["tokens"]) - state["start"]
    position = gr.update(maximum=new_tokens, value=1)
    return (state, *render(result.roll, tempo, instruments, note.strip(), result.start), position)


def attention_figure(state, layer, head, position):
    """How the model chose the position-th new token: the chosen layer's heads (or one head), their weights
    over the earlier tokens of its window as a voices x 16th-notes heat map."""
    import numpy as np

    from core import music_transformer as mt
    from core.data.chorales import STEPS_PER_QUARTER
    from tabs.common import pyplot

    if not state or "tokens" not in state:
        raise ValueError("Continue a prompt first: the attention belongs to the tokens the model wrote.")
    model = mt.load_shipped(MODEL)
    tokens, start = state["tokens"], state["start"]
    n_new = len(tokens) - start
    k = number(position, 1, 1, n_new, whole=True)
    layer = number(layer, 1, 1, model.config.n_layer, whole=True)
    heads = list(range(model.config.n_head)) if head in (None, ALL_HEADS) else [_head_index(head, model)]
    chosen = start + k - 1  # the token's index in the piece
    first, weights = mt.attention_to_earlier(model, tokens[:chosen], chosen)  # the query that chose it
    steps = -(-(chosen - first) // mt.TOKENS_PER_STEP)
    plt = pyplot()
    fig, axes = plt.subplots(len(heads), 1, figsize=(10, 1.2 + 1.1 * len(heads)), dpi=100, squeeze=False)
    for ax, h in zip(axes[:, 0], heads):
        grid = np.full(steps * mt.TOKENS_PER_STEP, np.nan)
        grid[:chosen - first] = weights[layer - 1, h].numpy()
        picture = grid.reshape(steps, mt.TOKENS_PER_STEP).T  # rows: voices, columns: 16th notes
        ax.imshow(picture, aspect="auto", cmap="magma", interpolation="nearest",
                  extent=(first / mt.TOKENS_PER_STEP, first / mt.TOKENS_PER_STEP + steps, 3.5, -0.5))
        step, voice = divmod(chosen, mt.TOKENS_PER_STEP)
        ax.plot(step + 0.5, voice, marker="s", mfc="none", mec=MARK, mew=2, ms=9)  # the token being chosen
        if start / mt.TOKENS_PER_STEP > first / mt.TOKENS_PER_STEP:
            ax.axvline(start / mt.TOKENS_PER_STEP, color=MARK, lw=1, ls="--")
        ax.set_yticks(range(4), [v[0].upper() for v in VOICES])
        ax.set_ylabel(f"head {h + 1}")
        ax.set_xlim(first / mt.TOKENS_PER_STEP, step + 1)
    axes[-1, 0].set_xlabel(f"16th notes from the start of the piece ({STEPS_PER_QUARTER} per beat); "
                           "dashed: where the prompt ends")
    fig.suptitle(f"Layer {layer}: where the model looked to choose {mt.describe_token(chosen, tokens[chosen])} "
                 "(the square)", fontsize=10)
    fig.tight_layout()
    read = (chosen - first) / mt.TOKENS_PER_BAR
    note = (f"New token {k} of {n_new}: {mt.describe_token(chosen, tokens[chosen])}. The query before it read "
            f"{chosen - first} tokens ({read:.1f} bars); brighter = more weight, each head's weights sum to 1.")
    return figure_to_image(fig), note


def _head_index(head, model) -> int:
    text = str(head).strip().lower().removeprefix("head").strip()
    if text.isdigit() and 1 <= int(text) <= model.config.n_head:
        return int(text) - 1
    raise ValueError(f"Pick a head from 1 to {model.config.n_head}, or all heads.")


# --- layout ---------------------------------------------------------------------------------------------

def build(ran=None) -> dict | None:
    """The Transformer panel. `ran` (a State the Music tab bumps for a link or a "Try this" button of this
    panel): a change continues the prompt, as the button does. Returns the widgets a link may set (None when
    no model is shipped)."""
    from tabs.musegan import instrument_menus, result_views

    gr.Markdown(INTRO)
    if not _ready():
        gr.Markdown(f"**Not ready:** no Music Transformer is shipped yet. Train one with "
                    "`python -m core.train music_transformer` (it writes "
                    f"assets/checkpoints/music_transformer/{MODEL}.pt).")
        return None
    card = read_card("music_transformer", MODEL)
    config = card["config"]
    state = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            go = gr.Button("Continue the prompt", variant="primary", elem_id="music-continue")
            names = prompt_names()
            prompt = gr.Dropdown(names + [UPLOAD], value=names[0], label="prompt (2 bars)", elem_id="music-prompt")
            with gr.Row():
                bars = gr.Slider(1, UI_MAX_BARS, value=4, step=1, label="bars to write", min_width=120)
                seed = gr.Number(value=0, label="seed", precision=0, minimum=0, min_width=80)
            temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="temperature (0: always the likeliest token)")
            top_k = gr.Slider(0, 84, value=0, step=1, label="top-k (0: off)")
            tempo = gr.Slider(MIN_TEMPO, MAX_TEMPO, value=90, step=1, label="tempo (quarter notes per minute)")
            instruments = instrument_menus("music")
            with gr.Accordion("Your own prompt: a four-part MIDI or MusicXML file (its first 2 bars)", open=False):
                upload = gr.File(label="four-part file", file_types=[".mid", ".midi", ".xml", ".musicxml", ".mxl"],
                                 type="filepath", elem_id="music-upload")
            with gr.Accordion("model card: how it was trained", open=False):
                gr.Markdown(f"Model: {config['n_layer']} layers, {config['n_head']} heads, width {config['n_embd']}; "
                            f"trained for {card['steps']:,} steps ({card['wall_time_s'] / 60:.0f} min, "
                            f"{card['hardware']}) with `{card['command']}`; held-out loss "
                            f"{card['metrics']['valid_loss_nats_per_token']:.3f} nats per token (a uniform guess: "
                            "4.431).")
        with gr.Column(scale=2):
            note, plot, audio, files, metrics = result_views("music", "piano roll (grey: the prompt)",
                                                             "Measures: the new bars next to Bach and to both models",
                                                             prompt=True)

    gr.Markdown("#### Attention: what the model looked at to write each note\nPick a new token; every head of "
                "the chosen layer shows its weights over the earlier tokens, laid out like the score.")
    with gr.Row():
        position = gr.Slider(1, 256, value=1, step=1, label="new token", elem_id="music-position")
        layer = gr.Slider(1, config["n_layer"], value=1, step=1, label="layer")
        head = gr.Dropdown([ALL_HEADS] + [f"head {h + 1}" for h in range(config["n_head"])], value=ALL_HEADS,
                           label="head")
    explained = ("one strip per head; rows: soprano, alto, tenor, bass; across: 16th notes from the start of the "
                 "piece. Brightness (magma: black, purple, orange, pale yellow) is the weight the head gave each "
                 "earlier token; the sky-blue square is the token being chosen, the dashed sky-blue line where "
                 "the prompt ends")
    caption(f"**Attention over the earlier tokens**: {explained}.")
    attention = gr.Image(label="attention over the earlier tokens", type="pil", interactive=False,
                         elem_id="music-attention", alt_text=f"Attention heat maps: {explained}.")
    attention_note = gr.Markdown(elem_id="music-attention-note")

    gr.on([go.click] + ([ran.change] if ran is not None else []), user_errors(continue_music),
          [prompt, upload, bars, temperature, top_k, seed, tempo, *instruments],
          [state, plot, audio, files, metrics, note, position], api_name="music_continue", **queue(TAB, 2)).then(
        user_errors(attention_figure), [state, layer, head, position], [attention, attention_note],
        api_name="music_attention_after_continue", api_visibility="undocumented", **queue(TAB, 2))
    for i, control in enumerate((position, layer, head)):
        api = {"api_name": "music_attention"} if i == 0 else \
            {"api_name": f"music_attention_from_{('layer', 'head')[i - 1]}", "api_visibility": "undocumented"}
        control.input(user_errors(attention_figure), [state, layer, head, position], [attention, attention_note],
                      trigger_mode="always_last", show_progress="hidden", **api, **queue(TAB, 2))
    return {"prompt": prompt, "bars": bars, "temperature": temperature, "top_k": top_k, "seed": seed}
