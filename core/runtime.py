"""Where tensors live and where randomness comes from.

No function here seeds the global RNG: every sampler takes an explicit
`torch.Generator`, so two users with the same seed get the same picture and
never disturb each other's random streams.

torch is imported inside the functions that need it, so the tabs can use MAX_SEED and
clamp_seed while the app is being built (start-up is budgeted; torch alone costs ~1.6 s).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**31 - 1  # what a UI number box and every RNG we use can hold


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA, then Apple's MPS, then CPU; `prefer` ("cpu", "cuda", "cuda:1", "mps") overrides, and
    a device this machine does not have is refused in one sentence (ValueError)."""
    import torch

    if prefer:
        try:
            device = torch.device(prefer)
        except RuntimeError:
            raise ValueError(f"Unknown device {prefer!r}: use cpu, cuda, cuda:N or mps.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {prefer!r} was asked for, but this machine has no usable CUDA GPU "
                             f"(torch {torch.__version__}); use cpu, or leave the device out to pick the best.")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"Device {prefer!r} was asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0.")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"Device {prefer!r} was asked for, but Apple's MPS is not available here; use cpu.")
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"Device {prefer!r} is not supported: use cpu, cuda, cuda:N or mps.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.lru_cache(maxsize=None)
def app_device() -> torch.device:
    """The device the app computes on: GENLAB_DEVICE if set, else the best available. Shipped
    models move here once, at first use (their loaders are cached); noise is still drawn on the CPU
    from the call's own generator and moved here, so a seed gives the same picture on every device."""
    return pick_device(os.environ.get("GENLAB_DEVICE") or None)


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA GPUs that compute in bf16 natively (Ampere and later; a T4 does not) for
    training and sampling; GENLAB_FP32=1 turns it off. Nothing elsewhere: on a CPU bf16 is slower and
    less exact."""
    import torch

    device = torch.device(device)
    if (device.type == "cuda" and os.environ.get("GENLAB_FP32") != "1"
            and torch.cuda.is_bf16_supported(including_emulation=False)):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(n: int | None = None) -> int:
    """Use `n` intra-op threads (default: GENLAB_THREADS or all cores). Returns the count."""
    import torch

    if n is None:  # several processes on one machine (torchrun) share its cores
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        n = int(os.environ.get("GENLAB_THREADS", 0)) or max(1, (os.cpu_count() or 1) // local_processes)
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


def seeded_init(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Redraw the weights of every linear and convolution layer (PyTorch's default U(±1/√fan_in)) from
    `generator`, not from the global stream other users share. Layers zeroed on purpose stay zero."""
    import math

    import torch
    from torch import nn

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)) and layer.weight.any():
                bound = 1 / math.sqrt(layer.weight[0].numel())
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)


@contextlib.contextmanager
def frozen(network: torch.nn.Module):
    """Run `network` as at test time (batch norm's running statistics, no dropout) with no gradient
    for its weights, for walks that move the input instead (Langevin dynamics, adversarial attacks);
    afterwards every module's mode and every weight's requires_grad are as they were. (Restoring only
    the top module's mode would switch a shared backbone's batch norms to training.)"""
    modes = [(module, module.training) for module in network.modules()]
    flags = [(p, p.requires_grad) for p in network.parameters()]
    network.eval().requires_grad_(False)
    try:
        yield network
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, what: str = "The learning rate") -> None:
    """Change a live trainer's learning rate between steps (a slider moved while it trains)."""
    if not (isinstance(lr, (int, float)) and 0 < lr <= 10):
        raise ValueError(f"{what} must be between 0 and 10, not {lr}.")
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def hardware_description(device: torch.device | str | None = None) -> str:
    """One line for model cards and benchmark results."""
    import torch

    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{device.type}: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads"
