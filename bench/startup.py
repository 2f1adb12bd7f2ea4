"""Seconds from `import app` to build_app() done, in a new Python process (target: <= 5 s median).

The child times itself from its first line, so Python's own start-up is excluded; the whole
process, interpreter start-up included, is saved too (fresh_process_median_s).

    python -m bench.startup [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import save_results

ROOT = Path(__file__).resolve().parent.parent
# The child measures from its own first line, so interpreter start-up is counted separately.
README_ROWS = [{"figure": "seconds from `import app` to build_app() done in a new process (median; in "
                          "brackets: the whole process, interpreter start-up included)",
                "measured": "{build_app_median_s:.2f} s ({fresh_process_median_s:.2f} s)", "reference": "≤ {target_s:g} s"}]
CHILD = ("import time; t0 = time.perf_counter(); import app; app.build_app(); "
         "print(time.perf_counter() - t0)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    build_s, process_s = [], []
    for _ in range(runs):
        import time

        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True)
        process_s.append(time.perf_counter() - start)
        build_s.append(float(out.stdout.strip().splitlines()[-1]))
    figures = {"build_app_median_s": round(statistics.median(build_s), 3),
               "build_app_s": [round(t, 3) for t in build_s],
               "fresh_process_median_s": round(statistics.median(process_s), 3),
               "target_s": 5.0}
    save_results("startup", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
