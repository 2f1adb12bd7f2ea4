"""How fast the shipped diffusion model samples, and proof that the step viewer never recomputes.

    python -m bench.diffusion_speed [--quick]

- 16 samples x 50 DDIM steps at 32x32 with the shipped Fashion-MNIST model (target <= 3 s median).
- Scrubbing the step viewer: time to show a frame of a finished run, and how many times the
  network ran while scrubbing through every frame (must be 0: frames are precomputed).
"""
from __future__ import annotations

import argparse

from bench.common import save_results, time_calls

TARGET_S = 3.0
MODEL = "fashion32"

README_ROWS = [
    {"figure": "Diffusion: 16 samples × 50 DDIM steps, 32 px (median s)",
     "measured": "{sample_16x50_ddim_median_s:.2f}", "reference": "≤ 3 s"},
    {"figure": "Diffusion step viewer: network calls while scrubbing every frame",
     "measured": "{network_calls_while_scrubbing}", "reference": "0"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    import torch

    from core import diffusion
    from core.runtime import make_generator, set_threads
    from tabs import diffusion as tab

    set_threads(args.threads)
    model = diffusion.load_model(MODEL)
    timing = time_calls(lambda: diffusion.sample(model, 16, make_generator(0), steps=50), repeats=3 if args.quick else 7)

    *_, last = tab.generate(MODEL, 0, 16, "DDIM", 50, 0.0, model.config.schedule)
    frames = last[1]
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        scrub = time_calls(lambda: [tab.show_frame(frames, i) for i in range(len(frames))], repeats=5)
    finally:
        hook.remove()
    figures = {"sample_16x50_ddim_median_s": round(timing["median_s"], 3),
               "sample_16x50_ddim_min_s": round(timing["min_s"], 3), "target_s": TARGET_S,
               "meets_target": timing["median_s"] <= TARGET_S,
               "viewer_frames": len(frames),
               "scrub_all_frames_median_ms": round(scrub["median_s"] * 1000, 3),
               "network_calls_while_scrubbing": len(calls),
               "threads": torch.get_num_threads()}
    save_results("diffusion_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
