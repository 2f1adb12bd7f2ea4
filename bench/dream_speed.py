"""DeepDream speed: a 512-px photo, 3 octaves x 20 iterations, offline backbone, this CPU.

Target: <= 10 s median for the whole dream. Also reports seconds per iteration at each octave
size (the cost grows with the pixel count), and the CPU seconds the process used, which stay
meaningful when other jobs share the machine (wall time then stretches, CPU time does not).

    python -m bench.dream_speed [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import save_results

TARGET_S = 10.0

README_ROWS = [
    {"figure": "DeepDream, 512-px photo, 3 octaves × 20 iterations: wall s (CPU s)",
     "measured": "{dream_median_s:.1f} ({cpu_s_per_dream:.1f})", "reference": "≤ 10 s"},
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed run instead of three")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--size", type=int, default=512, help="longer side of the photo in pixels")
    args = parser.parse_args(argv)

    import matplotlib.cbook

    from core.backbones import load_backbone
    from core.data.images import pil_to_tensor, prepare_image
    from core.dream import DreamConfig, dream
    from core.runtime import make_generator, set_threads

    threads = set_threads(args.threads)
    backbone = load_backbone()
    photo, _ = prepare_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), max_side=args.size)
    image = pil_to_tensor(photo)
    config = DreamConfig(octaves=3, iterations=20)  # the tab's defaults: block10, step 0.02, jitter 16

    def one_dream():
        """Seconds for the whole dream, plus (wall, CPU) seconds of every iteration by octave size."""
        per_octave, start = {}, time.perf_counter()
        last = (start, time.process_time())
        for update in dream(backbone, image, config, make_generator(0)):
            now = (time.perf_counter(), time.process_time())
            per_octave.setdefault(update.octave_sizes[update.octave - 1], []).append((now[0] - last[0], now[1] - last[1]))
            last = now
        return time.perf_counter() - start, per_octave

    one_dream()  # warm-up: first-call allocations and kernel selection
    runs = 1 if args.quick else 3
    totals, cpu, per_size = [], [], {}
    for _ in range(runs):
        cpu_start = time.process_time()
        total, per_octave = one_dream()
        cpu.append(time.process_time() - cpu_start)
        totals.append(total)
        for size, steps in per_octave.items():
            per_size.setdefault(size, []).extend(steps)
    figures = {
        "image": f"grace_hopper.jpg, {image.shape[-1]}x{image.shape[-2]}",
        "config": "efficientnet_lite0 block10, 3 octaves x 20 iterations, scale 1.4",
        "threads": threads,
        "dream_median_s": round(statistics.median(totals), 2),
        "dream_s": [round(t, 2) for t in totals],
        "cpu_s_per_dream": round(statistics.median(cpu), 2),
        "s_per_iteration": {f"{w}x{h}": round(statistics.median(s[0] for s in steps), 3)
                            for (h, w), steps in per_size.items()},
        "cpu_s_per_iteration": {f"{w}x{h}": round(statistics.median(s[1] for s in steps), 3)
                                for (h, w), steps in per_size.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "target_s": TARGET_S,
    }
    save_results("dream_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
