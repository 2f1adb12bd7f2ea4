"""How fast the GAN tab answers: a 64-image grid from each shipped generator (target: <= 100 ms median).

    python -m bench.gan_speed [--quick]

Times what the "Generate" button does: sample 64 images with a fresh seeded generator and tile them.
Also reports CPU time per call and the load average: on a shared, busy machine wall time says more
about the neighbours than about the model.
"""
from __future__ import annotations

import argparse
import os
import time

from bench.common import save_results, time_calls

TARGET_S = 0.100

README_ROWS = [
    {"figure": f"GAN: a 64-image grid from {name} (median ms)", "measured": f"{{{name}.grid64_median_ms:.1f}}",
     "reference": "≤ 100 ms"}
    for name in ("dcgan_fashion", "cgan_fashion", "wgangp_faces")
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from core import gan
    from core.checkpoints import load_shipped
    from core.data.images import image_grid
    from core.registry import list_shipped, shipped_path
    from core.runtime import make_generator

    figures = {"target_s": TARGET_S, "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    names = [n for n in list_shipped("gan") if shipped_path("gan", n).with_suffix(".json").is_file()]
    if not names:
        raise SystemExit("No shipped GAN to time: train one with python -m core.train gan --help")
    for name in names:
        G = gan.load_generator(load_shipped("gan", name))
        labels = [i % G.cfg.num_classes for i in range(64)] if G.cfg.num_classes else None
        seeds = iter(range(10**6))

        def grid():
            image_grid(gan.sample(G, 64, make_generator(next(seeds)), labels=labels), nrow=8)

        repeats = 10 if args.quick else 30
        cpu_start = time.process_time()
        timing = time_calls(grid, repeats=repeats, warmup=2)
        # CPU seconds per grid: what the wall time would be on an idle core (a busy machine inflates wall time).
        cpu_ms = 1000 * (time.process_time() - cpu_start) / (repeats + 2)
        figures[name] = {"grid64_median_ms": round(1000 * timing["median_s"], 1),
                         "grid64_max_ms": round(1000 * timing["max_s"], 1),
                         "grid64_cpu_ms_per_call": round(cpu_ms, 1),
                         "meets_target": timing["median_s"] <= TARGET_S}
    save_results("gan_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
