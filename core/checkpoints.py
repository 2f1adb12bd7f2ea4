"""Checkpoints: config + weights + model card in one file that rebuilds its own model.

Layout of a checkpoint (a plain dict, so `torch.load(weights_only=True)` can read it):
    {"format": 1, "config": {...}, "state_dict": {...}, "dtype": "float32"|"float16",
     "card": {...}, "extras": {...}}
`extras` holds whatever else the model needs at use time and is made of tensors,
numbers, strings, lists and dicts only (a tokenizer's alphabet, attribute vectors, ...).

Each shipped checkpoint `assets/checkpoints/<technique>/<name>.pt` has its model card
beside it as `<name>.json`, readable without torch: the exact training command, data,
steps, wall time, hardware and metrics.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch

from core.registry import shipped_path
from core.runtime import hardware_description

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and how to make it."""


@dataclass
class Checkpoint:
    config: dict
    state_dict: dict
    card: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    path: Path | None = None


def command_history(args, resume_state: dict | None = None) -> list[str]:
    """Every command line that contributed to a run, first one first.

    `python -m core.train` stores its command line on `args`; a run continued with --resume
    adds its own line to the ones saved in the resume state. Trainers keep this list in their
    resume state (key "commands") and pass it to `make_card`."""
    earlier = list(resume_state.get("commands", [])) if resume_state else []
    return earlier + [getattr(args, "command_line", None) or "(trainer called from Python, not the command line)"]


def make_card(*, commands: list[str], data: str, wall_time_s: float, metrics: dict | None = None,
              device=None, init: dict | None = None, **details) -> dict:
    """A model card: how this checkpoint was made, for a reader who wants to make it again.

    `commands` comes from `command_history`: the first made the run, any others continued it.
    `init` (from `start_from`) marks a run that started from another checkpoint: its wall time is
    added to this run's and its record is kept as `fine_tuned_from`."""
    if init:
        wall_time_s += init["wall_time_s"] or 0.0
        details = {"fine_tuned_from": {k: v for k, v in init.items() if k != "commands"}, **details}
    return {
        "command": commands[0],
        **({"resumed_with": commands[1:]} if len(commands) > 1 else {}),
        "data": data,
        "wall_time_s": round(float(wall_time_s), 1),
        "hardware": hardware_description(device),
        "threads": torch.get_num_threads(),  # CPU time = wall time x threads: benches compare runs by it
        "date": _dt.date.today().isoformat(),
        "metrics": metrics or {},
        **details,
    }


def _atomic_torch_save(obj, path: Path) -> None:
    # Write then rename, so a run killed mid-save never leaves a truncated file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path, model: torch.nn.Module, config, card: dict, extras: dict | None = None,
                    half: bool = False) -> Path:
    """Save weights + config + card to `path` and the card to `path` with a .json suffix."""
    path = Path(path)
    config = asdict(config) if is_dataclass(config) else dict(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:  # float16 halves the file; weights are cast back to float32 when loaded
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    _atomic_torch_save({"format": FORMAT_VERSION, "config": config, "state_dict": state,
                        "dtype": "float16" if half else "float32", "card": card,
                        "extras": extras or {}}, path)
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps({"config": config, **card}, indent=2, default=str) + "\n")
    return path


def amend_card(path, note: str, **fields) -> None:
    """Add fields to the .json card of a shipped checkpoint trained before they existed (the data's name,
    source and SHA-256, say). The .pt file stays byte for byte as trained, since other cards, benches and
    the text-to-image pipeline name it by its SHA-256; the card lists what was added in `amended`."""
    card_path = Path(path).with_suffix(".json")
    card = json.loads(card_path.read_text())
    amended = card.get("amended", {"fields": [], "notes": []})
    amended = {"fields": sorted({*amended["fields"], *fields}), "notes": [*amended["notes"], note]}
    card_path.write_text(json.dumps({**card, **fields, "amended": amended}, indent=2, default=str) + "\n")


def _how_to_make(path: Path) -> str:
    card_path = path.with_suffix(".json")
    try:
        command = json.loads(card_path.read_text())["command"]
    except (OSError, ValueError, KeyError, TypeError):
        technique = path.parent.name
        command = f"python -m core.train {technique} --help"
    return f"Create it with: {command}"


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint safely (weights_only=True); float16 weights come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} is missing. {_how_to_make(path)}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or "state_dict" not in raw or "config" not in raw:
            raise ValueError("not a GenLab checkpoint")
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"Checkpoint {path} is corrupt or not a GenLab checkpoint ({exc.__class__.__name__}). "
                              f"{_how_to_make(path)}") from None
    state = raw["state_dict"]
    if raw.get("dtype") == "float16":
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return Checkpoint(config=raw["config"], state_dict=state, card=raw.get("card", {}),
                      extras=raw.get("extras", {}), path=path)


def start_from(path, config: dict, kind: str, card_fields: tuple[str, ...] = (),
               defaults: dict | None = None) -> tuple[dict, dict]:
    """For a trainer's --init-from: the weights of checkpoint `path`, whose config must equal
    `config`, and a record of how it was made (its commands, wall time and `card_fields`). Keep the
    record in the resume state, pass it to `command_history` (its commands head the new run's) and
    to `make_card(init=...)`. `defaults`: config keys a checkpoint older than them lacks, and the value
    that absence means."""
    from core.train import portable_arguments

    start = load_checkpoint(path)
    if {**(defaults or {}), **start.config} != config:
        raise ValueError(f"{path} is a {start.config} {kind}; this run asks for {config}.")
    record = {"checkpoint": portable_arguments([str(path)])[0],
              "commands": [start.card["command"], *start.card.get("resumed_with", [])],
              **{k: start.card.get(k) for k in ("wall_time_s", *card_fields)}}
    return start.state_dict, record


def file_sha256(path) -> str:
    """The SHA-256 of a file: what a card or a record names a checkpoint or data file by."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_model(ckpt: Checkpoint, model_cls, config_cls):
    """Rebuild the model a checkpoint describes, in eval mode, with its weights loaded."""
    model = model_cls(config_cls(**ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    return model.eval()


@functools.lru_cache(maxsize=None)
def load_shipped(technique: str, name: str) -> Checkpoint:
    """A shipped checkpoint, read once per process and shared read-only by all sessions."""
    return load_checkpoint(shipped_path(technique, name))


# --- resumable training state ------------------------------------------------------

def save_resume(path, state: dict) -> None:
    """Everything a trainer needs to continue (model, optimizer, step, ...); plain tensors and numbers."""
    _atomic_torch_save(state, Path(path))


def load_resume(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No resumable state at {path}: start without --resume.")
    return torch.load(path, map_location="cpu", weights_only=True)
