"""Seconds to sample 500 characters from each shipped text model on this CPU (median of several runs).

Targets: <= 1.5 s for the GPT, <= 0.75 s for the LSTM. This times `core.text.sample` exactly as the tab
drives it (temperature 1, the full next-character distribution computed at every step); the GPT's
key/value cache keeps the cost of a character flat however long the text grows. Besides the wall-clock
median it reports the mean CPU seconds per run (one thread): on a machine shared with other jobs the wall
clock includes time spent waiting for a core, the CPU time is what the sampling itself costs.

    python -m bench.text_speed [--quick]
"""
from __future__ import annotations

import argparse
import time

from bench.common import save_results, time_calls

LENGTH = 500
TARGETS_S = {"gpt": 1.5, "lstm": 0.75}

README_ROWS = [
    {"figure": "500 characters from the GPT (s, median)", "measured": "{gpt_shakespeare.median_s:.2f}",
     "reference": "≤ 1.5"},
    {"figure": "500 characters from the LSTM (s, median)", "measured": "{lstm_shakespeare.median_s:.2f}",
     "reference": "≤ 0.75"},
    {"figure": "CPU seconds for 500 characters, GPT / LSTM (one thread)",
     "measured": "{gpt_shakespeare.cpu_s_per_run:.2f} / {lstm_shakespeare.cpu_s_per_run:.2f}",
     "reference": "≤ 1.5 / ≤ 0.75"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from core import text
    from core.registry import list_shipped
    from core.runtime import make_generator

    figures = {"torch_threads": torch.get_num_threads(), "length": LENGTH}
    for name in [n for n in list_shipped("text") if not n.endswith(".resume")]:  # skip training state
        model, tokenizer, _ = text.load_shipped_model(name)
        prompt = text.prepare_prompt(tokenizer, "\n").ids

        def generate():
            for _ in text.sample(model, tokenizer, prompt, LENGTH, 1.0, generator=make_generator(0)):
                pass

        repeats = 3 if args.quick else 7
        cpu_start = time.process_time()
        timing = time_calls(generate, repeats=repeats, warmup=1)
        cpu_s = (time.process_time() - cpu_start) / (repeats + 1)
        target = TARGETS_S[text.model_kind(model)]
        figures[name] = {"median_s": round(timing["median_s"], 3), "max_s": round(timing["max_s"], 3),
                         "cpu_s_per_run": round(cpu_s, 3), "target_s": target,
                         "meets_target": timing["median_s"] <= target}
    save_results("text_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
