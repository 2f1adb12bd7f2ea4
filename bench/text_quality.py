"""Validation loss of the shipped character models on the held-out last 10% of their corpus.

Targets: GPT <= 1.50 nats/char, LSTM <= 1.65 on tinyshakespeare. Every character of the validation
split is predicted once, in non-overlapping windows of the model's training context. For comparison,
the published figure of nanoGPT's shakespeare_char (its README: 1.4697, "best validation loss", a
6-layer, 384-wide GPT with context 256 trained about 3 minutes on one A100, same last-10% split; nanoGPT
estimates the loss from 200 random batches rather than every character once).

    python -m bench.text_quality [--quick] [--data-dir DIR]

The corpora are not shipped; the default folder is ../shared/data/text beside the checkout
(or $GENLAB_TEXT_DATA). Each model card names its corpus with the file's source and SHA-256, and a
file with another SHA-256 is refused.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.common import save_results

DEFAULT_DATA = Path(os.environ.get("GENLAB_TEXT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "text"))
TARGETS = {"gpt_shakespeare": 1.50, "lstm_shakespeare": 1.65}
QUICK_CHARS = 20_000

README_ROWS = [
    {"figure": "GPT validation loss, tinyshakespeare (nats/char; the model's size and training time)",
     "measured": "{gpt_shakespeare.val_loss:.3f} ({gpt_shakespeare.parameters:,} parameters, "
                 "{gpt_shakespeare.training_minutes:g} min on {gpt_shakespeare.training_threads} CPU thread)",
     "reference": "≤ 1.50 (nanoGPT's published shakespeare_char: 1.4697; 6 layers × 384, context 256, ~3 min on an A100)"},
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
        if "corpus" not in card:
            raise SystemExit(f"{name}: its card does not name its corpus (name, source, sha256).")
        corpus = args.data_dir / card["corpus"]["name"]
        if not corpus.is_file():
            raise SystemExit(f"{name}: its corpus {corpus} is missing ({card['corpus']['source']}); pass --data-dir.")
        if text.corpus_record(corpus)["sha256"] != card["corpus"]["sha256"]:  # as the trainer recorded it
            raise SystemExit(f"{name}: {corpus} is not the file the model was trained on (SHA-256 differs).")
        threads = card["threads"]
        _, val = text.split_corpus(torch.tensor(tokenizer.encode(text.read_corpus(corpus)), dtype=torch.long))
        if args.quick:
            val = val[:QUICK_CHARS]
        context = card["train_config"]["context"]
        loss = text.split_loss(model, val, context)
        figures[name] = {"val_loss": round(loss, 4), "validation_chars": len(val), "context": context,
                         "training_minutes": round(card["wall_time_s"] / 60, 1),
                         "training_threads": threads, "parameters": card["metrics"]["parameters"]}
        if name in TARGETS:
            figures[name] |= {"target": TARGETS[name], "meets_target": loss <= TARGETS[name]}
    save_results("text_quality", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
