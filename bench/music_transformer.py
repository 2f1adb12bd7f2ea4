"""The Music Transformer beside MuseGAN (issue #22): its held-out loss, the music it continues, and its speed.

    python -m bench.music_transformer [--quick] [--n 1000] [--bars 4] [--seed 0] [--speed-repeats 20] [--threads N]

The model is the shipped chorale Transformer (assets/checkpoints/music_transformer/chorales.pt,
core.music_transformer.load_shipped); the JSON records which checkpoint (its card's steps, time and
held-out loss) was measured. The chorales are core.data.chorales' split: the held-out pieces, which no
model here trained on, give the loss, the prompts and the reference.

- Validation loss: mean next-token cross-entropy per token (core.music_transformer.loss_per_token: every
  predicted token of every window counts once; a window that ends its piece has no target for its last
  token) over every 8-bar window of the held-out chorales (training_windows), untransposed, in nats and
  bits, beside the card's figure and a uniform guess over the 84 symbols (ln 84 nats).
- Music: n continuations (default 1,000; --quick 50) of the held-out chorales' 2-bar openings
  (core.data.chorales.openings, cycled in order), each by `bars` new bars at temperature 1 and no top-k,
  continuation i with seed seed + i (so the first pass over the openings is what the card measures).
  Only the new bars are measured (Continuation.roll[start:]; the prompt is Bach's), with
  core.metrics.music.all_metrics pooled over all of them, against the held-out chorales' `bars`-bar
  phrases, and judged by the targets of bench/musegan_quality.py (target_gaps <= 1 for each metric; no
  silent and no single-pitch continuation). The same n again at temperature COOLER (0.8, the tab's
  default), under "cooler": what a slightly sharper distribution does to the same measures.
- MuseGAN: its figures are read, not recomputed, from the full run's bench/results/musegan_quality.json
  (the figures the README's MuseGAN rows show, 1,000 generated 4-bar phrases); the JSON says whether that
  run measured the same chorale reference.
- Speed, on one CPU thread, the model loaded beforehand (the app caches it): what the tab does with a
  prompt, continue_roll + roll_to_midi + synthesize (the whole roll, prompt included, as the tab plays
  it), one call per prompt and seed, median and max seconds (target <= 1 s); MusicXML writing
  (music21) timed separately; and generation alone (core.music_transformer.generate) in tokens per second.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

import bench.common
from bench.common import save_results, time_calls
from bench.musegan_quality import tolerance
from core.metrics.music import METRICS

MODEL = "chorales"
PROMPT_BARS = 2
TEMPERATURE, TOP_K = 1.0, 0   # the full predicted distribution, as the card's metrics
COOLER = 0.8                  # the tab's default: a little less variety for fewer wrong notes (measured beside)
TEMPO = 90                    # the tab's default
SPEED_TARGET_S = 1.0
MUSEGAN_RESULTS = "musegan_quality.json"

_SPEED = "continue {speed.prompt_bars} bars by {speed.bars} + MIDI + audio, one CPU thread"
README_ROWS = [
    {"figure": "Music Transformer validation loss per token, held-out chorales' 8-bar windows (nats / bits)",
     "measured": "{validation.nats_per_token:.3f} / {validation.bits_per_token:.3f} "
                 "(n = {validation.tokens:,} tokens)",
     "reference": "uniform {validation.uniform_nats_per_token:.3f} / {validation.uniform_bits_per_token:.3f}; "
                  "card {checkpoint.valid_loss_nats_per_token:.3f} nats"},
    *[{"figure": f"Music Transformer {metric.replace('_', ' ')}, {{bars}}-bar continuations (new bars); MuseGAN",
       "measured": f"{{generated.{metric}:.3f}} (n = {{continuations}}); MuseGAN {{musegan.generated.{metric}:.3f}}",
       "reference": f"chorales {{held_out_chorales.{metric}:.3f}} ({tolerance(metric)})"}
      for metric in METRICS],
    {"figure": "Music Transformer targets met (each metric; no silent or single-pitch continuation); MuseGAN",
     "measured": "{targets_met} of {targets}; MuseGAN {musegan.targets_met} of {musegan.targets}",
     "reference": "{targets} of {targets}"},
    {"figure": "Music Transformer at temperature {cooler.temperature:g}: targets met; voice crossings; pitch classes "
               "per bar and voice",
     "measured": "{cooler.targets_met} of {cooler.targets}; {cooler.generated.voice_order_violations:.3f}; "
                 "{cooler.generated.used_pitch_classes:.3f}",
     "reference": "chorales {held_out_chorales.voice_order_violations:.3f}; "
                  "{held_out_chorales.used_pitch_classes:.3f}"},
    {"figure": f"Music Transformer: {_SPEED} (median / max s; MusicXML, timed apart)",
     "measured": "{speed.median_s:.3f} / {speed.max_s:.3f}; MusicXML {speed.musicxml_median_s:.3f}",
     "reference": f"≤ {SPEED_TARGET_S:g} s"},
    {"figure": "Music Transformer generation alone, one CPU thread (tokens per second, median)",
     "measured": "{speed.tokens_per_s:,.0f}", "reference": "{speed.tokens} tokens = {speed.bars} bars"},
]

README_PROSE = ["the Music Transformer predicts the held-out chorales at {validation.bits_per_token:.2f} bits per token "
                "(a uniform guess: {validation.uniform_bits_per_token:.2f}); its {continuations:,} {bars}-bar "
                "continuations meet {targets_met} of the {targets} targets MuseGAN's phrases are held to (MuseGAN's "
                "meet {musegan.targets_met}), its voices cross on {generated.voice_order_violations:.1%} of steps "
                "(Bach's on {held_out_chorales.voice_order_violations:.1%}), and continuing a prompt by {speed.bars} "
                "bars with MIDI and audio takes {speed.median_s:.2f} s (median) on one CPU thread",
                "at temperature {cooler.temperature:g} its continuations meet {cooler.targets_met} of the "
                "{cooler.targets} (voices crossing on {cooler.generated.voice_order_violations:.1%} of steps, "
                "{cooler.generated.used_pitch_classes:.2f} pitch classes per bar and voice against Bach's "
                "{held_out_chorales.used_pitch_classes:.2f}): a cooler distribution trades a little variety for "
                "fewer wrong notes"]


# --- what the bench measures (module functions, so tests can put tiny stand-ins in their place) ---

def shipped_model():
    from core.music_transformer import load_shipped

    return load_shipped(MODEL)


def model_card() -> dict:
    """Which checkpoint was measured: the card's steps, time, command and held-out loss."""
    from core.registry import shipped_path

    path = shipped_path("music_transformer", MODEL).with_suffix(".json")
    card = json.loads(path.read_text()) if path.is_file() else {}
    metrics = card.get("metrics", {})
    return {"name": MODEL, "steps": card.get("steps"), "wall_time_s": card.get("wall_time_s"),
            "date": card.get("date"), "command": card.get("command"), "resumed_with": card.get("resumed_with"),
            "valid_loss_nats_per_token": metrics.get("valid_loss_nats_per_token")}


def chorale_split():
    """(training, held-out) chorales, as the model was trained and judged."""
    from core.data import chorales

    return chorales.load_bach().split()


def musegan_record() -> dict | None:
    """MuseGAN's figures from the full run of bench/musegan_quality.py (None if it has not run)."""
    path = bench.common.RESULTS_DIR / MUSEGAN_RESULTS
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    figures = record["figures"]
    return {"source": f"bench/results/{MUSEGAN_RESULTS} (read, not recomputed)", "date": record.get("date"),
            "phrases": figures["phrases"], "bars": figures["bars"], "generated": figures["generated"],
            "held_out_chorales": figures["held_out_chorales"], "checks": figures["checks"],
            "targets_met": sum(bool(v) for v in figures["checks"].values()), "targets": len(figures["checks"])}


def validation(model, held_out) -> dict:
    """Loss per token on every 8-bar window of the held-out chorales, nats and bits, and what a uniform guess scores."""
    from core import music_transformer as mt

    rolls, continues = mt.training_windows(held_out)
    nats = mt.loss_per_token(model, rolls, continues)
    tokens = len(rolls) * mt.BLOCK_SIZE - int((~continues).sum())  # window_batch ignores a piece's last target
    uniform = math.log(mt.VOCAB)
    return {"windows": len(rolls), "window_bars": mt.CONTEXT_BARS, "tokens": tokens,
            "nats_per_token": round(nats, 4), "bits_per_token": round(nats / math.log(2), 4),
            "uniform_nats_per_token": round(uniform, 4), "uniform_bits_per_token": round(uniform / math.log(2), 4)}


def continuations(model, openings, n: int, bars: int, seed: int, temperature: float = TEMPERATURE
                  ) -> tuple[np.ndarray, list[str]]:
    """The new bars (n, bars * 16, 4) of n continuations of the openings, cycled; continuation i has seed seed + i."""
    from core import music_transformer as mt

    new, names = [], []
    for i in range(n):
        name, prompt = openings[i % len(openings)]
        result = mt.continue_roll(model, prompt, bars, temperature, TOP_K, seed + i)
        assert result.start == len(prompt) and len(result.roll) - result.start == bars * 16, "not the new bars"
        new.append(result.roll[result.start:])
        names.append(name)
    return np.stack(new), names


def silent_and_single_pitch(rolls) -> tuple[int, int]:
    """How many rolls have no note at all, and how many sound one pitch or none (as bench/musegan_quality.py counts)."""
    from core.data.chorales import REST

    rolls = np.asarray(rolls)
    sounding = rolls != REST
    silent = int((~sounding).all(axis=(1, 2)).sum())
    single = int(sum(len(set(r[s].tolist())) <= 1 for r, s in zip(rolls, sounding)))
    return silent, single


def speed(model, openings, bars: int, repeats: int, xml_repeats: int, seed: int) -> dict:
    """The tab's work for one prompt on one CPU thread: continue + MIDI + audio (median, max over prompts and
    seeds); MusicXML separately; generation alone in tokens per second. Torch's thread count is given back."""
    import torch

    from core import audio as sound, musegan
    from core import music_transformer as mt
    from core.data.chorales import DEFAULT_INSTRUMENTS, STEPS_PER_BAR
    from core.runtime import make_generator, set_threads

    threads = torch.get_num_threads()
    set_threads(1)
    try:
        calls = iter(range(10**6))
        last = {}

        def one_piece():
            i = next(calls)
            _, prompt = openings[i % len(openings)]
            roll = mt.continue_roll(model, prompt, bars, TEMPERATURE, TOP_K, seed + i).roll
            last["roll"], last["audio"] = roll, sound.synthesize(musegan.roll_to_midi(roll, TEMPO, DEFAULT_INSTRUMENTS))

        timing = time_calls(one_piece, repeats=repeats, warmup=1)
        tokens = bars * mt.TOKENS_PER_BAR
        calls = iter(range(10**6))

        def generate_only():
            i = next(calls)
            mt.generate(model, mt.tokens_of(openings[i % len(openings)][1]), tokens, TEMPERATURE, TOP_K,
                        make_generator(seed + i))

        generation = time_calls(generate_only, repeats=repeats, warmup=1)
        with tempfile.TemporaryDirectory() as folder:
            xml = time_calls(lambda: musegan.write_musicxml(last["roll"], Path(folder) / "x.musicxml", TEMPO,
                                                            DEFAULT_INSTRUMENTS), repeats=xml_repeats, warmup=1)
    finally:
        set_threads(threads)
    prompt_bars = len(openings[0][1]) // STEPS_PER_BAR
    return {"prompt_bars": prompt_bars, "bars": bars, "threads": 1, "runs": timing["runs"],
            "median_s": round(timing["median_s"], 4), "min_s": round(timing["min_s"], 4),
            "max_s": round(timing["max_s"], 4), "target_s": SPEED_TARGET_S,
            "meets_target": timing["median_s"] <= SPEED_TARGET_S,
            "musicxml_median_s": round(xml["median_s"], 4), "musicxml_runs": xml["runs"],
            "tokens": tokens, "generate_median_s": round(generation["median_s"], 4),
            "tokens_per_s": round(tokens / generation["median_s"], 1),
            "audio_seconds": round(len(last["audio"]) / sound.SAMPLE_RATE, 2), "tempo": TEMPO,
            "soundfont": sound.find_soundfont() or "none (pretty_midi additive synthesis)"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="continuations to measure (default 1000; quick 50)")
    parser.add_argument("--bars", type=int, default=4, help="new bars per continuation")
    parser.add_argument("--seed", type=int, default=0, help="continuation i uses seed + i")
    parser.add_argument("--speed-repeats", type=int, default=None, help="timed calls (default 20; quick 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the loss and the music "
                        "(default GENLAB_THREADS or all cores); the speed figures always use one")
    args = parser.parse_args(argv)
    from core.data import chorales
    from core.metrics.music import all_metrics, target_gaps
    from core.runtime import set_threads

    n = args.n or (50 if args.quick else 1000)
    repeats = args.speed_repeats or (5 if args.quick else 20)
    threads = set_threads(args.threads)
    timings = {}
    model = shipped_model()
    _, held_out = chorale_split()
    openings = chorales.openings(held_out, PROMPT_BARS)
    if not openings:
        raise SystemExit(f"No held-out chorale has a {PROMPT_BARS}-bar opening to continue.")
    figures = {"threads": threads, "checkpoint": model_card(),
               "parameters": sum(p.numel() for p in model.parameters())}

    start = time.perf_counter()
    figures["validation"] = validation(model, held_out)
    timings["validation_s"] = time.perf_counter() - start

    start = time.perf_counter()
    new, names = continuations(model, openings, n, args.bars, args.seed)
    timings["continuations_s"] = time.perf_counter() - start
    generated, bach = all_metrics(new), all_metrics(chorales.phrases(held_out, args.bars))
    checks = {name: gap <= 1 for name, gap in target_gaps(generated, bach).items()}
    silent, single = silent_and_single_pitch(new)
    checks["no_silent_or_single_pitch_phrase"] = silent == 0 and single == 0
    figures.update({
        "continuations": n, "bars": args.bars,
        "sampling": {"prompts": f"the held-out chorales' {PROMPT_BARS}-bar openings, cycled in order",
                     "distinct_prompts": len(openings), "temperature": TEMPERATURE, "top_k": TOP_K,
                     "seeds": f"{args.seed} + continuation index ({args.seed}..{args.seed + n - 1})",
                     "measured": "the new bars only (the prompt is left out)",
                     "tokens_per_s": round(new.size / timings["continuations_s"], 1)},  # 4 tokens a step
        "generated": generated, "held_out_chorales": bach,
        "gaps": {name: round(gap, 3) for name, gap in target_gaps(generated, bach).items()},
        "silent_continuations": silent, "single_pitch_continuations": single,
        "checks": checks, "all_pass": all(checks.values()),
        "targets_met": sum(checks.values()), "targets": len(checks)})
    start = time.perf_counter()
    cooler, _ = continuations(model, openings, n, args.bars, args.seed, COOLER)
    timings["cooler_s"] = time.perf_counter() - start
    cooler_metrics = all_metrics(cooler)
    cooler_checks = {name: gap <= 1 for name, gap in target_gaps(cooler_metrics, bach).items()}
    cooler_checks["no_silent_or_single_pitch_phrase"] = silent_and_single_pitch(cooler) == (0, 0)
    figures["cooler"] = {"temperature": COOLER, "continuations": n, "generated": cooler_metrics,
                         "gaps": {name: round(gap, 3) for name, gap in target_gaps(cooler_metrics, bach).items()},
                         "checks": cooler_checks, "targets_met": sum(cooler_checks.values()),
                         "targets": len(cooler_checks)}
    musegan = musegan_record()
    if musegan is None:
        figures["missing"] = ["musegan (run python -m bench.musegan_quality)"]
    else:
        musegan["same_reference"] = musegan["held_out_chorales"] == bach and musegan["bars"] == args.bars
        figures["musegan"] = musegan

    start = time.perf_counter()
    figures["speed"] = speed(model, openings, args.bars, repeats, 3 if args.quick else 5, args.seed)
    timings["speed_s"] = time.perf_counter() - start
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("music_transformer", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
