"""Style transfer speed on this CPU: seconds per iteration and the wall time of the default run.

* Seconds per network evaluation (forward + backward through the content and style layers, Gram
  matrices included; an L-BFGS iteration costs 1-2) at 256 and 512 px, every evaluation at that size
  (no coarse-to-fine), for each backbone of the style tab. A
  backbone whose weights cannot be downloaded is timed with random weights: the arithmetic,
  and so the speed, is the same.
* The default run: the tab's defaults (EfficientNet-Lite0, 256 px, 100 L-BFGS iterations) on
  the example photo and style. Target: <= 15 s. Also its CPU seconds, which stay meaningful when
  other jobs share the machine (wall time then stretches, CPU time much less).

    python -m bench.style_speed [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.common import save_results

TARGET_S = 15.0
README_ROWS = [
    {"figure": "Style transfer, the tab's default run (EfficientNet-Lite0, 256 px, 100 L-BFGS iterations), "
               "wall s (CPU s)", "measured": "{default_run_median_s:.1f} ({default_run_cpu_s:.1f})", "reference": "≤ 15 s"},
    {"figure": "Style transfer s per evaluation at 256 / 512 px, EfficientNet-Lite0",
     "measured": "{per_backbone.efficientnet_lite0.s_per_iteration_256px:.2f} / "
                 "{per_backbone.efficientnet_lite0.s_per_iteration_512px:.2f}", "reference": "—"},
    {"figure": "Style transfer s per evaluation at 256 / 512 px, VGG19 (the book's network)",
     "measured": "{per_backbone.vgg19.s_per_iteration_256px:.2f} / {per_backbone.vgg19.s_per_iteration_512px:.2f}",
     "reference": "—"},
]
EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples" / "style"


def _backbone(name: str):
    """(backbone, how its weights were had)."""
    from core.backbones import build_torchvision, load_backbone

    backbone = load_backbone(name)
    if backbone.name == name:
        return backbone, "pretrained"
    random_weights = build_torchvision(name, weights=None).eval().requires_grad_(False)
    return random_weights, "random (no download here; same speed)"


def _run(backbone, content, style, settings):
    """Wall seconds of the whole run; wall and CPU seconds per evaluation after the targets are computed."""
    from core.style import stylize

    start = time.perf_counter()
    steps = [(time.perf_counter(), time.process_time(), step.evaluations)
             for step in stylize(backbone, content, [(style, 1.0)], settings)]
    (wall0, cpu0, n0), (wall1, cpu1, n1) = steps[0], steps[-1]
    return wall1 - start, (wall1 - wall0) / max(1, n1 - n0), (cpu1 - cpu0) / max(1, n1 - n0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="EfficientNet-Lite0 at 256 px only, fewer evaluations, one default run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)

    from core.data.images import prepare_image
    from core.runtime import set_threads
    from core.style import DEFAULT_ITERATIONS, RECIPES, StyleSettings

    threads = set_threads(args.threads)
    content, _ = prepare_image(EXAMPLES / "grace_hopper.jpg")
    style, _ = prepare_image(EXAMPLES / "brush_strokes.png")
    per_iteration = {}
    for name in ["efficientnet_lite0"] if args.quick else RECIPES:  # VGG19 costs ~40 s: full run only
        backbone, weights = _backbone(name)
        row = {"weights": weights}
        # VGG19 is ~10x slower per evaluation: fewer of them still give a stable mean.
        evaluations = 8 if name == "vgg19" else (6 if args.quick else 21)
        for size in (256,) if args.quick else (256, 512):
            settings = StyleSettings(size=size, iterations=evaluations, report_every=2, coarse_to_fine=False)
            _, wall, cpu = _run(backbone, content, style, settings)
            row[f"s_per_iteration_{size}px"] = round(wall, 3)
            row[f"cpu_s_per_iteration_{size}px"] = round(cpu, 3)
        per_iteration[name] = row

    lite0, _ = _backbone("efficientnet_lite0")
    defaults = StyleSettings()
    _run(lite0, content, style, StyleSettings(iterations=5))  # warm-up: first-call allocations
    walls, cpu = [], []
    for _ in range(1 if args.quick else 3):
        cpu_start = time.process_time()
        walls.append(_run(lite0, content, style, defaults)[0])
        cpu.append(time.process_time() - cpu_start)
    figures = {
        "per_backbone": per_iteration,
        "default_run": f"efficientnet_lite0, grace_hopper.jpg + brush_strokes.png, {defaults.size} px, "
                       f"{DEFAULT_ITERATIONS[defaults.init]} {defaults.optimizer} iterations",
        "default_run_median_s": round(statistics.median(walls), 2),
        "default_run_s": [round(t, 2) for t in walls],
        "default_run_cpu_s": round(statistics.median(cpu), 2),
        "threads": threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "target_s": TARGET_S,
    }
    save_results("style_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
