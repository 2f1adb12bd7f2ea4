"""Music tab: Bach-style chorales two ways. MuseGAN (tabs/musegan.py) writes every bar at once from four
kinds of noise; the Transformer (tabs/music_transformer.py) continues a prompt one token at a time. Both are
drawn, played and measured the same way, against the same held-out chorales.

One lesson covers both panels. A link or a "Try this" button always makes a new MuseGAN piece (the first
panel's main action); its `panel` setting (a hidden radio, kept in step with the panel tabs) says which panel
to show, and with `panel=transformer` the Transformer also continues its prompt with the link's settings."""
from __future__ import annotations

import gradio as gr

from tabs import musegan, music_transformer
from tabs.classroom import Code, Lesson, Try, lesson_bar

TAB = "music"
PANELS = [("MuseGAN", "musegan"), ("Transformer", "transformer")]
INTRO = ("**MuseGAN** writes every bar of four voices at once from four kinds of noise; the **Transformer** "
         "continues a prompt one token at a time. Both are measured against Bach's held-out chorales.")

LESSON = Lesson(
    tab=TAB, main="musegan-new", result="musegan-plot",
    chapters="*Generative Deep Learning* ch. 11 (music: the Music Transformer, MuseGAN) · ch. 9 (Transformers) "
             "· ch. 4 (WGAN-GP, MuseGAN's training)",
    equations=(r"MuseGAN, bar $b$ of voice $v$: $x_{b,v} = G_v(\mathrm{chords}_b,\ \mathrm{style},\ "
               r"\mathrm{melody}_{b,v},\ \mathrm{groove}_v)$ · Transformer, next token: "
               r"$p_i \propto \exp(\ell_i / T)$ over the $k$ likeliest tokens ($T = 0$: $\arg\max_i \ell_i$)"),
    try_this=(
        Try("8 bars", {"panel": "musegan", "bars": 8},
            "The same seed gives the same four inputs, and the first four bars are exactly the 4-bar piece's: "
            "the chords and melody networks are recurrent and look only backwards, so more bars extend the "
            "piece, they never rewrite it."),
        Try("temperature 0", {"panel": "transformer", "temperature": 0, "top_k": 0},
            "Greedy decoding: always the likeliest token. Change the seed and the continuation stays the same; "
            "the voices hold their notes (fewer pitch classes per bar than Bach in the measures)."),
        Try("temperature 1.5", {"panel": "transformer", "temperature": 1.5, "top_k": 0},
            "A flatter distribution: unlikely tokens get drawn. The measures show more steps out of the key and "
            "more voice crossings than at 0.8."),
        Try("1.5 and top-k 3", {"panel": "transformer", "temperature": 1.5, "top_k": 3},
            "The same temperature, but only the 3 likeliest tokens may be drawn: most wrong notes and crossings "
            "are gone, while the music still varies with the seed."),
    ),
    misconceptions=(
        ("MuseGAN writes its music note by note, like the Transformer.",
         "It writes every bar of every voice in one forward pass. Only two of its inputs, chords and melody, go "
         "through small recurrent networks, which turn one vector per piece into one per bar."),
        ("Style and groove are the same kind of input.",
         "Style is one vector shared by every voice and bar; groove is one vector per voice, the same in every "
         "bar. Re-roll the soprano's groove and the other three voices keep theirs."),
        ("A higher temperature makes the Transformer more creative.",
         "Temperature only flattens (T > 1) or sharpens (T < 1) the distribution each token is drawn from; at "
         "1.5 it mostly adds wrong notes and crossed voices, which top-k removes again."),
        ("The Transformer knows which voice and bar each note belongs to.",
         "It reads one flat stream, soprano, alto, tenor, bass for every 16th note; voices and bars are only "
         "positions in that stream, which it learned from the chorales."),
    ),
    code=(Code("MuseGAN: four inputs, every bar of every voice at once", "core/musegan.py", ("Generator.forward",),
               r"$x_{b,v} = G_v\big([\,\mathrm{TN}(\mathrm{chords})_b,\ \mathrm{style},\ "
               r"\mathrm{TN}_v(\mathrm{melody}_v)_b,\ \mathrm{groove}_v\,]\big)$, TN: a temporal network "
               r"(a GRU) that unfolds one vector into one per bar"),
          Code("the Transformer: the next token, drawn with temperature and top-k", "core/music_transformer.py",
               ("_pick",),
               r"$p = \mathrm{softmax}(\ell / T)$, all but the $k$ likeliest set to 0 and renormalised, "
               r"$i \sim p$; $T = 0$: $i = \arg\max_i \ell_i$")),
)


def build():
    page = lesson_bar(LESSON)
    gr.Markdown(INTRO)
    # Which panel a link or a "Try this" button shows; the panel tabs keep it in step (for "Copy link").
    panel = gr.Radio(PANELS, value="musegan", label="panel", visible=False, elem_id="music-panel")
    # bumped when a link or a "Try this" button is for the Transformer (hidden Number: see tabs.classroom.lesson_bar)
    continued = gr.Number(0, visible=False, precision=0, elem_id="music-continued")
    with gr.Tabs() as panels:
        with gr.Tab("MuseGAN", id="musegan") as gan_tab:
            gan = musegan.build(page.ran)
        with gr.Tab("Transformer", id="transformer") as gpt_tab:
            gpt = music_transformer.build(continued)
    gan_tab.select(None, None, panel, js="() => 'musegan'", api_name="music_panel_musegan", api_visibility="private")
    gpt_tab.select(None, None, panel, js="() => 'transformer'", api_name="music_panel_transformer",
                   api_visibility="private")
    if gan is None or gpt is None:  # a model is not shipped: nothing for a link to run
        return page
    page.ran.change(show_panel, [panel, continued], [panels, continued], api_name="music_show_panel",
                    api_visibility="private")
    page.link({"panel": panel, "seed": gan["seed"], "bars": gan["bars"], "tempo": gan["tempo"],
               "prompt": gpt["prompt"], "new_bars": gpt["bars"], "temperature": gpt["temperature"],
               "top_k": gpt["top_k"], "gpt_seed": gpt["seed"]})
    return page


def show_panel(panel, continued):
    """After a link or a "Try this" button: show its panel, and for the Transformer's, continue the prompt."""
    if panel == "transformer":
        return gr.Tabs(selected="transformer"), (continued or 0) + 1
    return gr.Tabs(selected="musegan"), gr.skip()
