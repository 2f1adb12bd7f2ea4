"""Run a trainer the way users do on many GPUs, here as 2 CPU processes under torchrun (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def train(arguments: list[str], out: Path, processes: int = 1, timeout: float = 300,
          extra_env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m core.train <arguments> --out <out>` on `processes` processes (torchrun when more than
    one, exactly as the README says); returns the finished process and the card it wrote ({} if none)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "GENLAB_THREADS": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    done = subprocess.run([*launcher, "-m", "core.train", *arguments, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    card_path = out.with_suffix(".json")
    return done, (json.loads(card_path.read_text()) if card_path.is_file() else {})


def check_ranks_agree(card: dict, processes: int) -> None:
    """Both ranks ran on their own data, and DDP averaged the gradients: equal weights at the end."""
    assert card["world_size"] == processes and len(card["devices"]) == processes
    ranks = card["ranks"]
    assert [r["rank"] for r in ranks] == list(range(processes))
    assert len({r["data"] for r in ranks}) == processes  # each its own shard
    assert len({r["weights_sha256"] for r in ranks}) == 1, ranks


def loads(out: Path):
    return load_checkpoint(out)
