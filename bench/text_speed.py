"""Seconds to sample 500 characters from each shipped text model on this CPU (median of several runs).

Targets: <= 1.5 s for the GPT, <= 0.75 s for the LSTM. This times `core.text.sample` exactly as the tab
drives it (temperature 1, the full next-character distribution computed at every step); the GPT's
key/value cache keeps the cost of a character flat however long the text grows. Timed on one thread (the
figure against the target) and on torch's default thread count; besides the wall-clock median it reports
the mean CPU seconds per run: on a machine shared with other jobs the wall clock includes time spent
waiting for a core, the CPU time is what the sampling itself costs.

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
    {"figure": "the same with torch's default thread count, GPT / LSTM (s, median)",
     "measured": "{gpt_shakespeare.median_s_default_threads:.2f} / {lstm_shakespeare.median_s_default_threads:.2f}",
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

    default_threads = torch.get_num_threads()
    figures = {"default_threads": default_threads, "length": LENGTH}
    for name in list_shipped("text"):
        model, tokenizer, _ = text.load_shipped_model(name)
        prompt = text.prepare_prompt(tokenizer, "\n").ids

        def generate():
            for _ in text.sample(model, tokenizer, prompt, LENGTH, 1.0, generator=make_generator(0)):
                pass

        repeats = 3 if args.quick else 7
        target = TARGETS_S[text.model_kind(model)]
        figures[name] = {"target_s": target}
        # One character at a time is a chain of tiny matrix-vector products: a second thread only adds
        # hand-offs, so one thread is the figure that counts; the default is recorded beside it.
        for label, threads in (("", 1), ("_default_threads", default_threads)):
            torch.set_num_threads(threads)
            cpu_start = time.process_time()
            timing = time_calls(generate, repeats=repeats, warmup=1)
            figures[name] |= {f"median_s{label}": round(timing["median_s"], 3),
                              f"cpu_s_per_run{label}": round((time.process_time() - cpu_start) / (repeats + 1), 3)}
        figures[name]["meets_target"] = figures[name]["median_s"] <= target
    torch.set_num_threads(default_threads)
    save_results("text_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
