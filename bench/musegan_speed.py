"""Seconds to generate a 4-bar chorale, turn it into MIDI and synthesise its audio (target <= 1 s median).

    python -m bench.musegan_speed [--quick]

The model is loaded once before timing (the app caches it too); each timed call draws new inputs.
MusicXML export (music21) is timed separately: the tab makes it too, but it is not in the target.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import save_results, time_calls

TARGET_S = 1.0

README_ROWS = [
    {"figure": "MuseGAN: generate 4 bars + MIDI + audio (median s)", "measured": "{generate_midi_audio.median_s:.3f}",
     "reference": "≤ 1 s"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bars", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice). On a busy shared CPU, 1 is far faster "
                             "for this small network: a second thread mostly waits for a core")
    args = parser.parse_args(argv)
    from core import audio as sound, musegan
    from core.runtime import make_generator, set_threads

    if args.threads:
        set_threads(args.threads)

    model = musegan.load_generator()
    seeds = iter(range(10**6))

    def one_piece():
        inputs = musegan.sample_inputs(model.cfg, 1, make_generator(next(seeds)))
        roll = musegan.generate(model, **inputs, n_bars=args.bars)[0].numpy()
        audio = sound.synthesize(musegan.roll_to_midi(roll, tempo=90))
        return roll, audio

    repeats = 5 if args.quick else 20
    timing = time_calls(one_piece, repeats=repeats)
    roll, audio = one_piece()
    with tempfile.TemporaryDirectory() as folder:
        xml = time_calls(lambda: musegan.write_musicxml(roll, Path(folder) / "x.musicxml"), repeats=3 if args.quick else 5)
    figures = {"bars": args.bars, "generate_midi_audio": {k: round(v, 4) if isinstance(v, float) else v
                                                          for k, v in timing.items()},
               "audio_seconds": round(len(audio) / sound.SAMPLE_RATE, 2),
               "musicxml_median_s": round(xml["median_s"], 4),
               "soundfont": sound.find_soundfont() or "none (pretty_midi additive synthesis)",
               "target_s": TARGET_S, "pass": timing["median_s"] <= TARGET_S}
    save_results("musegan_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
