"""Where shipped checkpoints live, readable without importing torch.

Tabs call these while the app is being built (to fill model pickers and show model cards),
so this module must stay free of heavy imports: app start-up is budgeted at 5 s.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = ROOT / "assets" / "checkpoints"
RESUME_DIR = ROOT / "runs" / "resume"  # trainers' resumable state: large, never shipped
# Figures computed once and shipped (the tabs show them without importing torch):
RECON_VS_DIMS = CHECKPOINT_DIR / "autoencoder" / "recon_vs_dims"  # core.autoencoder figures: .json, .png, .examples.png


def shipped_path(technique: str, name: str) -> Path:
    return CHECKPOINT_DIR / technique / f"{name}.pt"


def resume_path(checkpoint) -> Path:
    """Where a trainer keeps the resumable state of `checkpoint`: for a shipped checkpoint under
    runs/resume/<technique>/ (so assets/ holds only what ships), for any other beside it."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.parent.parent == CHECKPOINT_DIR:
        return RESUME_DIR / checkpoint.parent.name / (checkpoint.name + ".resume.pt")
    return checkpoint.with_name(checkpoint.name + ".resume.pt")


def list_shipped(technique: str) -> list[str]:
    """Names of the shipped checkpoints of a technique, sorted."""
    folder = CHECKPOINT_DIR / technique
    if not folder.is_dir():
        return []
    # A resumable state (<name>.pt.resume.pt) may sit beside a checkpoint but is not one.
    return sorted(p.stem for p in folder.glob("*.pt") if not p.name.endswith(".resume.pt"))


def read_card(technique: str, name: str) -> dict:
    """The model card of a shipped checkpoint (the .json beside the .pt)."""
    return json.loads(shipped_path(technique, name).with_suffix(".json").read_text())
