"""Shared by every benchmark: timing and writing results with the machine they came from."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def portable(path) -> str:
    """A path as a record names it: relative to the repository, or by its name alone when outside it."""
    from core.registry import ROOT

    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def checkpoint_record(path, card: dict, data: bytes | None = None) -> dict:
    """Which checkpoint file was measured: its SHA-256 (of `data`, the bytes that were loaded, when given) and
    its card's command, continuations, steps, time and own figures (and what it was fine-tuned from)."""
    import hashlib

    from core.checkpoints import file_sha256

    return {"file": portable(path), "sha256": file_sha256(path) if data is None else hashlib.sha256(data).hexdigest(),
            "command": card.get("command"), "resumed_with": card.get("resumed_with"), "steps": card.get("steps"),
            "wall_time_s": card.get("wall_time_s"), "date": card.get("date"), "card_metrics": card.get("metrics"),
            **({"fine_tuned_from": card["fine_tuned_from"]} if card.get("fine_tuned_from") else {})}


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Median/min/max seconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def save_results(name: str, figures: dict, quick: bool = False) -> Path:
    """Print the figures and write them, with machine and date, to bench/results/<name>.json
    (<name>.quick.json for --quick runs, so a quick check never replaces the full figures)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "date": _dt.datetime.now().isoformat(timespec="seconds"), "quick": quick,
              "machine": machine(), "figures": figures}
    path = RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({name: figures}, indent=2))
    return path
