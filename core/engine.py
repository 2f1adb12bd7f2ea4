"""The training skeleton every trainer shares, on one process or many.

A trainer module keeps only what is its own (model, data, one optimisation step) and hands the
chores to a `TrainingRun`:

    run = TrainingRun(args, out, global_batch=args.batch_size)     # device, ranks, resume state
    net = run.wrap(model)                        # DistributedDataParallel when there are several ranks
    gen = run.generator("batches")               # this rank's own random stream, saved and restored
    mine = run.shard(len(images))                # the examples this rank trains on
    for event in run.loop(train(...), save, total=args.steps):   # time budget, periodic saves, tqdm
        ...                                                         # the trainer's own bookkeeping
    run.finish()

The engine is torch's own: `torchrun --nproc_per_node=N -m core.train ...` starts N processes and
sets RANK/WORLD_SIZE/LOCAL_RANK; `torch.nn.parallel.DistributedDataParallel` averages the gradients
during backward (NCCL between GPUs, gloo between CPU processes). No process spawning or all-reduce of
our own. Why torchrun and not Accelerate: it ships with torch (no extra dependency, no config file),
and DDP is what Accelerate itself wraps; `accelerate launch` sets the same variables, so it works too.

Rules the skeleton keeps for every trainer:
- `--batch-size` is the *global* batch: N ranks each take batch/N, so the same command trains the
  same model on 1 or N processes (up to each rank's own random stream).
- rank 0 alone writes checkpoints, cards, resume state, logs and the progress bar.
- the decisions "save now" and "stop now" are made by rank 0 and broadcast, so no rank waits for
  another in a collective that never comes.
- the resume state is the same whatever the world size; each rank's random stream is restored when
  the world size is unchanged, and re-seeded from (seed, rank, step) when it changed.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from core.checkpoints import command_history, load_resume, make_card, save_checkpoint, save_resume
from core.registry import resume_path
from core.runtime import autocast, hardware_description, make_generator, pick_device

# A rank that waits longer than this in a collective gives up with a sentence instead of hanging.
TIMEOUT_S = float(os.environ.get("GENLAB_DIST_TIMEOUT", 300))


class RankFailure(RuntimeError):
    """Another process of a many-process run stopped; the message says what to do."""


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun (or accelerate launch) set them; (0, 1, 0) alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


class TrainingRun:
    """One training run: its ranks and device, time budget, resumable saves and model card."""

    def __init__(self, args, out, *, global_batch: int | None = None, save_every_s: float | None = None):
        self.args, self.out = args, Path(out)
        self.state_file = resume_path(self.out)
        self.rank, self.world_size, local_rank = world()
        self.is_main = self.rank == 0
        device = pick_device(getattr(args, "device", None))
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)  # one GPU per process on this node
        self.device = device
        if self.world_size > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=TIMEOUT_S))
            # torchrun stops the other processes with SIGTERM when one fails: say so in a sentence.
            signal.signal(signal.SIGTERM, self._stopped_by_launcher)
        self.global_batch = global_batch
        self.batch = self.per_rank(global_batch) if global_batch else None
        self.minutes = getattr(args, "minutes", None)
        self.save_every_s = save_every_s or getattr(args, "save_every", None) or 180
        self.seed = getattr(args, "seed", 0)
        self.resumed = load_resume(self.state_file) if getattr(args, "resume", False) else None
        self.commands = command_history(args, self.resumed)
        self.step = self.resumed.get("step", 0) if self.resumed else 0
        self._elapsed_before = self.resumed.get("elapsed_s", 0.0) if self.resumed else 0.0
        self._started = time.monotonic()
        self.steps_per_s: float | None = None  # measured by loop(); on the card
        self._generators: dict[str, torch.Generator] = {}
        self._shards: list[str] = []
        self.bf16 = (device.type == "cuda" and not getattr(args, "fp32", False)
                     and torch.cuda.is_bf16_supported(including_emulation=False))
        self.hardware = self._gather(hardware_description(device))
        torch.manual_seed(self.seed)  # weight initialisation: the same on every rank before DDP checks it

    # --- ranks -------------------------------------------------------------------------

    def per_rank(self, global_batch: int) -> int:
        if global_batch < self.world_size or global_batch % self.world_size:
            raise ValueError(f"--batch-size {global_batch} is the global batch: it must be a multiple of the "
                             f"{self.world_size} processes, so each trains on the same number of examples.")
        return global_batch // self.world_size

    def refuse_download_in_many(self, download: bool) -> None:
        """--download fetches a dataset once, in one process: N processes would fetch it N times into one folder."""
        if download and self.world_size > 1:
            raise ValueError("--download fetches the data once, in one process: run the command without torchrun "
                             "first (or put the data in --data-dir yourself), then start the processes without --download.")

    def shard(self, n: int, what: str = "examples") -> torch.Tensor:
        """Indices of the `n` examples this rank trains on (every world_size-th, from its rank)."""
        if n < self.world_size:
            raise ValueError(f"{n} {what} cannot be shared among {self.world_size} processes: "
                             f"use at most {n} processes or more data.")
        indices = torch.arange(self.rank, n, self.world_size)
        self._shards.append(f"{what} {self.rank}::{self.world_size} ({len(indices)} of {n})")
        return indices

    def generator(self, name: str) -> torch.Generator:
        """This rank's own random stream `name`, on the CPU (so a run draws the same numbers on every
        device), restored on --resume, re-seeded if the world size changed."""
        gen = make_generator(self.seed + 1_000_003 * self.rank)
        saved = (self.resumed or {}).get("random_streams", {}).get(name)
        if saved is not None and len(saved) == self.world_size:
            gen.set_state(saved[self.rank])
        elif saved is not None:  # a new world size: fresh streams that still differ per rank and per resume
            gen.manual_seed(self.seed + 1_000_003 * self.rank + 7919 * self.step)
            self.log(f"resuming on {self.world_size} processes (saved on {len(saved)}): "
                     f"new random streams from step {self.step}")
        self._generators[name] = gen
        return gen

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in the training step: DDP averages its gradients across ranks.
        Keep the unwrapped `model` for state_dicts, EMA and sampling."""
        model.to(self.device)
        net = model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if getattr(self.args, "compile", False):
            net = torch.compile(net)
        return net

    def autocast(self):
        """bf16 autocast on CUDA (halves activation memory, uses the tensor cores); fp32 elsewhere or with --fp32."""
        return autocast(self.device) if self.bf16 else nullcontext()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch norm's running statistics). DDP averages gradients,
        so the weights agree, but each rank updates these on its own batches. Call it on every rank at
        the same point, before work every rank must do alike (validation, codes, the shipped model)."""
        if self.world_size > 1:
            for buffer in model.buffers():
                self._collective(lambda: dist.broadcast(buffer, 0))

    def _lost_peers(self, what_happened: str) -> RankFailure:
        return RankFailure(f"rank {self.rank} of {self.world_size}: {what_happened}; continue from the last "
                           f"save with --resume (on any number of processes).")

    def _stopped_by_launcher(self, signum, frame):
        raise self._lost_peers("stopped by the launcher because another process of this run failed or was stopped")

    def _gather(self, value):
        if self.world_size == 1:
            return [value]
        out = [None] * self.world_size
        self._collective(lambda: dist.all_gather_object(out, value))
        return out

    def _collective(self, call: Callable):
        try:
            return call()
        except RuntimeError as exc:  # a peer died, or the timeout ran out
            if not is_peer_failure(exc):
                raise
            raise self._lost_peers(f"another process of this run stopped or stopped answering "
                                   f"({type(exc).__name__})") from None

    @property
    def _wire(self) -> torch.device:
        """Where small collective tensors live: NCCL needs them on the GPU, gloo on the CPU (an MPS
        tensor would be neither)."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def mean(self, value: float) -> float:
        """The mean of `value` over all ranks (for the curves on the card: every rank's loss counts)."""
        if self.world_size == 1:
            return value
        total = torch.tensor([float(value)], device=self._wire)
        self._collective(lambda: dist.all_reduce(total))
        return total.item() / self.world_size

    def _agree(self, *flags: bool) -> list[bool]:
        """Rank 0's decision, the same on every rank."""
        if self.world_size == 1:
            return list(flags)
        decision = torch.tensor([float(f) for f in flags], device=self._wire)
        self._collective(lambda: dist.broadcast(decision, 0))
        return [bool(f) for f in decision.tolist()]

    # --- the loop ------------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        """Wall time of this model over all its runs (what the card records)."""
        return self._elapsed_before + time.monotonic() - self._started

    def out_of_time(self) -> bool:
        return self.minutes is not None and time.monotonic() - self._started > self.minutes * 60

    def loop(self, events: Iterable[dict], save: Callable[[], None], total: int | None = None,
             desc: str = "training") -> Iterator[dict]:
        """Pass the trainer's events on, doing the chores between them: the progress bar (rank 0),
        a resumable `save()` every few minutes, the --minutes budget, and a last `save()` at the end.
        `save` is called on every rank at the same step; it writes through `save_state`/`save_model`,
        which only rank 0 carries out."""
        from core.train import Every, progress

        timer = Every(self.save_every_s)
        stream = progress(events, total=total, desc=desc) if self.is_main else events
        timed_from = None  # (time, step) after the first step: the speed leaves out start-up and warm-up
        if self.world_size > 1:  # the models are built and DDP gave them rank 0's weights: from here on,
            # each rank's dropout masks (torch's global stream) must differ, like its data
            torch.manual_seed(self.seed + 1_000_003 * self.rank + 7919 * self.step)
        try:
            for event in stream:
                self.step = event.get("step", self.step + 1)
                if timed_from is None:
                    timed_from = (time.monotonic(), self.step)
                else:
                    self.steps_per_s = (self.step - timed_from[1]) / (time.monotonic() - timed_from[0])
                yield event
                save_now, stop = self._agree(timer.due(), self.out_of_time())
                if stop:
                    break
                if save_now:
                    save()
        except RankFailure:
            raise
        except RuntimeError as exc:  # DDP's all-reduce inside backward fails when a peer is gone
            if self.world_size > 1 and is_peer_failure(exc):
                raise self._lost_peers(f"another process of this run stopped ({type(exc).__name__})") from None
            raise
        save()

    # --- what rank 0 writes --------------------------------------------------------------

    def save_state(self, state: dict) -> None:
        """The resumable state: the trainer's `state` plus the skeleton's own (step, time, commands,
        every rank's random streams). Called on every rank; rank 0 writes."""
        streams = {name: self._gather(gen.get_state()) for name, gen in self._generators.items()}
        if self.is_main:
            save_resume(self.state_file, {**state, "step": self.step, "elapsed_s": self.elapsed_s,
                                          "commands": self.commands, "random_streams": streams,
                                          "world_size": self.world_size})

    def card(self, *, data: str, metrics: dict | None = None, model: torch.nn.Module | None = None,
             **details) -> dict:
        """A model card with the skeleton's fields: world size, devices, global batch, and per rank the
        data shard and a checksum of the weights (equal on all ranks when the gradients were averaged)."""
        ranks = None
        if self.world_size > 1 and model is not None:
            checksum = weights_checksum(model)
            ranks = [{"rank": r, "data": shard, "weights_sha256": c} for r, (shard, c) in
                     enumerate(self._gather(("; ".join(self._shards), checksum)))]
        return make_card(commands=self.commands, data=data, wall_time_s=self.elapsed_s, metrics=metrics,
                         device=self.device, steps=self.step, world_size=self.world_size,
                         devices=self.hardware, **({"global_batch": self.global_batch} if self.global_batch else {}),
                         **({"steps_per_s": round(self.steps_per_s, 3)} if self.steps_per_s else {}),
                         **({"ranks": ranks} if ranks else {}), **details)

    def save_model(self, model: torch.nn.Module, config, card: dict, extras: dict | None = None,
                   half: bool = False, path=None) -> Path:
        """The checkpoint + card (rank 0 writes; every rank gets the path)."""
        path = Path(path or self.out)
        if self.is_main:
            save_checkpoint(path, model, config, card, extras, half=half)
        return path

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    def finish(self) -> None:
        """Wait for every rank, then leave the process group. (gloo's group is left to the interpreter's
        exit: destroying it explicitly sometimes aborted a CPU process as it exited, after everything was
        written; NCCL's must be destroyed.)"""
        if self.world_size > 1 and dist.is_initialized():
            self._collective(dist.barrier)
            if dist.get_backend() == "nccl":
                dist.destroy_process_group()


def is_peer_failure(exc: BaseException) -> bool:
    """Is this error a collective that lost its peers (not a bug in the step)?"""
    text = str(exc)
    return isinstance(exc, dist.DistBackendError) or any(
        word in text for word in ("Connection", "connection", "Gloo", "NCCL", "timed out", "Timed out"))


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters (not the buffers: batch norm's running statistics are updated by each
    rank's own forward pass, after DDP copied rank 0's at its start)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def main_process_only_output() -> None:
    """Ranks other than 0 stay quiet on stdout (rank 0 speaks for the run); errors still show."""
    if world()[0] != 0:
        sys.stdout = open(os.devnull, "w")
