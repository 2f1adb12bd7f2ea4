"""Training throughput of every trainer: 1 CPU thread, 2 CPU processes under torchrun, and a GPU.

    python -m bench.train_speed [--quick] [--only text,gan]

Each trainer runs its real `python -m core.train` command on a small, realistic configuration for a
fixed time budget (--minutes); the skeleton (core.engine) measures its steps per second after the
first step and writes them on the card, and this script turns them into images (or characters, or
bars) per second. The 2-process run keeps the same *global* batch and gives each process one thread,
so on an idle 2-core machine perfect scaling is an efficiency of 1.0:

    scaling efficiency = 2-process throughput / (2 x 1-process throughput)

A GPU row (1 process, --device cuda, bf16 autocast) is added when CUDA is present.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import save_results

ROOT = Path(__file__).resolve().parent.parent


def _corpus() -> str | None:
    for folder in (os.environ.get("GENLAB_TEXT_DATA"), ROOT.parent / "shared" / "data" / "text"):
        if folder and (Path(folder) / "tinyshakespeare.txt").is_file():
            return str(Path(folder) / "tinyshakespeare.txt")
    return None


def _fashion() -> bool:
    from core.data.fashion_mnist import load_fashion_mnist

    try:
        return load_fashion_mnist("test", download=False) is not None
    except FileNotFoundError:
        return False


# name -> (arguments, unit, units per step given the card, what it needs or None)
TRAINERS = {
    "text": (lambda: ["text", "--model", "gpt", "--corpus", _corpus(), "--layers", "4", "--width", "128",
                      "--heads", "4", "--context", "128", "--batch-size", "32", "--steps", "1000000"],
             "characters", lambda card: card["global_batch"] * 128, _corpus),
    "vae": (lambda: ["vae", "--dataset", "faces", "--train-size", "2000", "--valid-size", "200", "--epochs", "1000",
                     "--batch-size", "64"], "images", lambda card: card["global_batch"], None),
    "gan": (lambda: ["gan", "--model", "dcgan", "--data", "fashion", "--epochs", "1000", "--batch-size", "64"],
            "images", lambda card: card["global_batch"], _fashion),
    "diffusion": (lambda: ["diffusion", "--data", "faces", "--limit", "2000", "--batch-size", "64",
                           "--steps", "1000000"], "images", lambda card: card["global_batch"], None),
    "musegan": (lambda: ["musegan", "--steps", "1000000", "--select-every", "1000000", "--eval-phrases", "50"],
                "bars", lambda card: card.get("global_batch") or 32, None),
    "classifier": (lambda: ["classifier", "--dataset", "fashion", "--epochs", "1000", "--batch-size", "128"],
                   "images", lambda card: card["global_batch"], _fashion),
}

README_ROWS = [
    {"figure": f"Training {name}: {unit} per second, 1 CPU thread → 2 processes under torchrun",
     "measured": f"{{{name}.cpu_1_thread:.0f}} → {{{name}.cpu_2_processes:.0f}}",
     "reference": f"scaling efficiency {{{name}.scaling_efficiency:.2f}} (ideal 1.0)"}
    for name, (_, unit, _, _) in TRAINERS.items()
]


README_PROSE = ["the efficiency runs from {musegan.scaling_efficiency:.2f} (MuseGAN) to {vae.scaling_efficiency:.2f} (VAE)"]


def run_once(arguments: list[str], processes: int, minutes: float, folder: Path, extra: list[str]) -> dict:
    out = folder / f"{arguments[0]}_{processes}{'_gpu' if extra else ''}.pt"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "GENLAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "core.train", *arguments, "--minutes", str(minutes), *extra,
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments[:1])} on {processes} process(es) failed:\n{done.stderr[-2000:]}")
    return json.loads(out.with_suffix(".json").read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated trainers (default: all)")
    args = parser.parse_args(argv)
    import torch

    minutes = 0.15 if args.quick else 0.5
    names = args.only.split(",") if args.only else list(TRAINERS)
    figures = {"minutes_per_run": minutes, "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            arguments, unit, per_step, needs = TRAINERS[name]
            if needs is not None and not needs():
                figures[name] = {"skipped": f"its data is not on this machine ({needs.__name__.strip('_')})"}
                continue
            arguments = arguments()
            row = {"unit": f"{unit} per second"}
            for key, processes, extra in (("cpu_1_thread", 1, ["--device", "cpu"]),
                                          ("cpu_2_processes", 2, ["--device", "cpu"])):
                card = run_once(arguments, processes, minutes, Path(tmp), extra)
                row[key] = round(card["steps_per_s"] * per_step(card), 1)
                row[f"{key}_steps_per_s"] = card["steps_per_s"]
            row["scaling_efficiency"] = round(row["cpu_2_processes"] / (2 * row["cpu_1_thread"]), 3)
            if torch.cuda.is_available():
                card = run_once(arguments, 1, minutes, Path(tmp), ["--device", "cuda"])
                row["gpu"] = round(card["steps_per_s"] * per_step(card), 1)
                row["gpu_device"] = card["devices"][0]
            figures[name] = row
            print(name, row, flush=True)
    save_results("train_speed", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
