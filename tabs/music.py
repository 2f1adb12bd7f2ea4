"""Music tab: Bach-style chorales two ways. MuseGAN (tabs/musegan.py) writes every bar at once from four
kinds of noise; the Transformer (tabs/music_transformer.py) continues a prompt one token at a time. Both are
drawn, played and measured the same way, against the same held-out chorales."""
from __future__ import annotations

import gradio as gr

from tabs import musegan, music_transformer


def build() -> None:
    gr.Markdown("## Music: two ways to write a chorale\nA GAN that writes a whole phrase at once, and a Transformer "
                "that writes one note after another. The measures under each result compare both models with "
                "Bach's held-out chorales.")
    with gr.Tabs():
        with gr.Tab("MuseGAN", id="musegan"):
            musegan.build()
        with gr.Tab("Transformer", id="transformer"):
            music_transformer.build()
