"""PixelCNN tab speed on one CPU thread, for each shipped model (plain and gated, 16x16, 4 levels):

- 16 new samples at the shipped size, pixel by pixel (target <= 10 s), and the time until the first
  finished row reaches the page (target <= 1 s: the tab streams rows);
- one completion of a test image whose lower half is hidden (target <= 5 s).

    python -m bench.pixelcnn_speed [--quick]

Median over 3 runs (--quick: 1), after one untimed warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import save_results

TARGETS = {"sample16_s": 10.0, "first_row_s": 1.0, "completion_s": 5.0}
MODELS = {"plain": "plain_fashion16_k4", "gated": "gated_fashion16_k4"}

README_ROWS = [row for key, label in (("plain", "PixelCNN (plain)"), ("gated", "Gated PixelCNN")) for row in (
    {"figure": f"{label}: 16 samples at 16x16, one CPU thread (median s)",
     "measured": f"{{{key}.sample16_s:.2f}}", "reference": "≤ 10 s"},
    {"figure": f"{label}: time to the first streamed row of those samples (median s)",
     "measured": f"{{{key}.first_row_s:.3f}}", "reference": "≤ 1 s"},
    {"figure": f"{label}: completing one half-hidden image, one CPU thread (median s)",
     "measured": f"{{{key}.completion_s:.2f}}", "reference": "≤ 5 s"},
)]


def timed_stream(make_steps) -> tuple[float, float]:
    """(seconds to the first yielded row, seconds to the last) of a row generator."""
    start = time.perf_counter()
    first = None
    for _ in make_steps():
        if first is None:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def measure(model, image: torch.Tensor, repeats: int) -> dict:
    from core.pixelcnn import complete, sample
    from core.runtime import make_generator

    size = model.config.image_size
    known = torch.zeros(size, size, dtype=torch.bool)
    known[:size // 2] = True
    runs = {"sample16": [], "first_row": [], "completion": []}
    for i in range(repeats + 1):  # the first run warms up (allocations, kernel choice) and is not counted
        first, total = timed_stream(lambda: sample(model, 16, make_generator(i)))
        _, completion = timed_stream(lambda: complete(model, image, known, make_generator(i)))
        if i:
            runs["sample16"].append(total)
            runs["first_row"].append(first)
            runs["completion"].append(completion)
    result = {f"{key}_s": round(statistics.median(values), 4) for key, values in runs.items()}
    result["runs"] = repeats
    result["meets_targets"] = all(result[key] <= target for key, target in TARGETS.items())
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from core.pixelcnn import load_levels, load_model
    from core.registry import shipped_path
    from core.runtime import set_threads

    set_threads(1)  # the figure is for one CPU thread, whatever the machine has
    image = load_levels("test", 16, 4, limit=1)
    figures = {"targets": TARGETS, "torch_threads": torch.get_num_threads(), "missing": []}
    for key, name in MODELS.items():
        if not shipped_path("pixelcnn", name).is_file():
            figures["missing"].append(key)
            continue
        model = load_model(name)
        figures[key] = {"device": str(next(model.parameters()).device),
                        **measure(model, image, 1 if args.quick else 3)}
    save_results("pixelcnn_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
