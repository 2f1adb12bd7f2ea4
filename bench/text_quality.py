"""Validation loss of the shipped character models on the held-out last 10% of their corpus.

Targets: GPT <= 1.50 nats/char, LSTM <= 1.65 on tinyshakespeare. Every character of the validation
split is predicted once, in non-overlapping windows of the model's training context, as nanoGPT's
shakespeare_char reports it; the reference is nanoGPT on this 2-core machine (1.545 after 26.5 min).

    python -m bench.text_quality [--quick] [--data-dir DIR]

The corpora are not shipped; the default folder is ../shared/data/text beside the checkout
(or $GENLAB_TEXT_DATA).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.common import save_results

DEFAULT_DATA = Path(os.environ.get("GENLAB_TEXT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "text"))
TARGETS = {"gpt_shakespeare": 1.50, "lstm_shakespeare": 1.65}
QUICK_CHARS = 20_000
NANOGPT_SECONDS = 26.5 * 60  # nanoGPT's reference run on this machine: 1.545 after 26.5 min
NANOGPT_THREADS = 2  # ... using both cores, so equal CPU time is 53 min of a one-thread run


def curve_at(curve: list[dict], seconds: float) -> float | None:
    """The training curve's validation loss (fixed subset) at the last evaluation within `seconds`."""
    before = [point["val_loss"] for point in curve if point["elapsed_s"] <= seconds]
    return before[-1] if before else None

README_ROWS = [
    {"figure": "GPT validation loss, tinyshakespeare (nats/char)", "measured": "{gpt_shakespeare.val_loss:.3f}",
     "reference": "≤ 1.50 (nanoGPT here: 1.545 after 26.5 min)"},
    {"figure": "GPT validation loss after 26.5 min of training (curve, nats/char)",
     "measured": "{gpt_shakespeare.curve_val_loss_at_26_5_min:.3f} ({gpt_shakespeare.training_threads} thread)",
     "reference": "nanoGPT here: 1.545 (2 threads)"},
    {"figure": "GPT validation loss at nanoGPT's CPU time (26.5 min × 2 threads; curve, nats/char)",
     "measured": "{gpt_shakespeare.curve_val_loss_at_nanogpt_cpu_time:.3f}", "reference": "nanoGPT here: 1.545"},
    {"figure": "LSTM validation loss, tinyshakespeare (nats/char)", "measured": "{lstm_shakespeare.val_loss:.3f}",
     "reference": "≤ 1.65"},
    {"figure": "LSTM validation loss, Nietzsche (nats/char)", "measured": "{lstm_nietzsche.val_loss:.3f}",
     "reference": "no target"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"score only the first {QUICK_CHARS:,} validation characters")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    import torch

    from core import text
    from core.registry import list_shipped

    figures = {}
    for name in list_shipped("text"):
        model, tokenizer, card = text.load_shipped_model(name)
        corpus = args.data_dir / card["data"].split(":")[0]
        if not corpus.is_file():
            raise SystemExit(f"{name}: its corpus {corpus} is missing; pass --data-dir.")
        threads = card["threads"]
        _, val = text.split_corpus(torch.tensor(tokenizer.encode(text.read_corpus(corpus)), dtype=torch.long))
        if args.quick:
            val = val[:QUICK_CHARS]
        context = card["train_config"]["context"]
        loss = text.split_loss(model, val, context)
        figures[name] = {"val_loss": round(loss, 4), "validation_chars": len(val), "context": context,
                         "training_minutes": round(card["wall_time_s"] / 60, 1),
                         "training_threads": threads,
                         "curve_val_loss_at_26_5_min": curve_at(card["curve"], NANOGPT_SECONDS),
                         "curve_val_loss_at_nanogpt_cpu_time": curve_at(
                             card["curve"], NANOGPT_SECONDS * NANOGPT_THREADS / threads)}
        if name in TARGETS:
            figures[name] |= {"target": TARGETS[name], "meets_target": loss <= TARGETS[name]}
    save_results("text_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
