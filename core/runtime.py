"""Where tensors live and where randomness comes from.

No function here seeds the global RNG: every sampler takes an explicit
`torch.Generator`, so two users with the same seed get the same picture and
never disturb each other's random streams.

torch is imported inside the functions that need it, so the tabs can use MAX_SEED and
clamp_seed while the app is being built (start-up is budgeted; torch alone costs ~1.6 s).
"""
from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**31 - 1  # what a UI number box and every RNG we use can hold


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA, then Apple's MPS, then CPU; `prefer` ("cpu", "cuda", ...) overrides."""
    import torch

    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(n: int | None = None) -> int:
    """Use `n` intra-op threads (default: GENLAB_THREADS or all cores). Returns the count."""
    import torch

    if n is None:
        n = int(os.environ.get("GENLAB_THREADS", 0)) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def clamp_seed(seed) -> int:
    """Any number a user types becomes a valid seed: NaN/None -> 0, floats truncated, range wrapped."""
    try:
        seed = int(seed)
    except (TypeError, ValueError, OverflowError):
        return 0
    return seed % (MAX_SEED + 1)


def make_generator(seed, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh, private random stream for one call."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(clamp_seed(seed))
    return gen


def hardware_description(device: torch.device | str | None = None) -> str:
    """One line for model cards and benchmark results."""
    import torch

    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{device.type}: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads"
