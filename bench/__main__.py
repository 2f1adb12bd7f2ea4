"""Run every benchmark: python -m bench [--quick] [name ...].

Each module bench/<name>.py has main(argv) and writes bench/results/<name>.json.
--quick passes --quick to each. Torch uses GENLAB_THREADS threads (default: all cores); on a
machine busy with other work, GENLAB_THREADS=1 avoids OpenMP threads spin-waiting on each other.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

SKIP = {"common", "__main__", "report"}


def all_benchmarks() -> list[str]:
    folder = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in SKIP)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("names", nargs="*", help=f"default: all of {all_benchmarks()}")
    args = parser.parse_args(argv)
    from core.runtime import set_threads

    set_threads()
    failed = []
    for name in args.names or all_benchmarks():
        start = time.perf_counter()
        print(f"== bench.{name}", flush=True)
        try:
            importlib.import_module(f"bench.{name}").main(["--quick"] if args.quick else [])
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"== bench.{name}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
