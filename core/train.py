"""Command-line entry for training every GenLab model.

    python -m core.train --help              # lists the techniques
    python -m core.train text --help         # that technique's options
    python -m core.train text --model gpt --corpus shakespeare.txt --minutes 60

Each technique module registered in TRAINERS provides two functions:
    add_train_arguments(parser)   its own options
    train_main(args) -> Path      trains, writes checkpoint + model card, returns the path
Trainers are resumable: they save their state every few minutes (core.registry.resume_path: runs/resume/ for
shipped checkpoints, `<out>.resume.pt` otherwise) and continue from it with --resume.

Many processes or GPUs: the same command under torch's launcher (core.engine explains the rules):
    torchrun --nproc_per_node=2 -m core.train diffusion --data faces --batch-size 64
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

# technique -> (module, one-line description). Modules are imported only when chosen,
# so `--help` is instant and a technique that has not landed yet breaks nothing else.
TRAINERS = {
    "text": ("core.text", "character language models (GPT, LSTM) on any UTF-8 text"),
    "autoencoder": ("core.autoencoder", "PCA by SVD, plain and denoising autoencoders on Fashion-MNIST (the 2-D VAE's encoder and decoder)"),
    "vae": ("core.vae", "variational autoencoders (Fashion-MNIST 2-D, 16x16 4-level Fashion-MNIST, synthetic faces, CelebA)"),
    "gan": ("core.gan", "DCGAN, WGAN-GP and conditional GAN"),
    "diffusion": ("core.diffusion", "DDPM/DDIM denoising diffusion models, unconditional or text/class-conditional"),
    "clip": ("core.clip", "a tiny CLIP (image and caption encoders, contrastive) on captioned synthetic faces"),
    "musegan": ("core.musegan", "MuseGAN on Bach chorales"),
    "music_transformer": ("core.music_transformer", "Music Transformer (a small GPT) on Bach chorales, grid tokens"),
    "world_models": ("core.world_models", "World Models on CarRacing: rollouts, VAE, MDN-RNN, CMA-ES controller (real or dreamed)"),
    "classifier": ("core.metrics.classifiers", "feature networks for FID/KID (Fashion-MNIST, face attributes)"),
    "pixelcnn": ("core.pixelcnn", "PixelCNN, plain and gated, on Fashion-MNIST with K intensity levels"),
    "flow": ("core.flow", "RealNVP/GLOW-lite normalizing flow on Fashion-MNIST with K intensity levels"),
    "ebm": ("core.ebm", "energy-based model on Fashion-MNIST (contrastive divergence, Langevin sampling)"),
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="checkpoint path to write (default: the shipped location)")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    parser.add_argument("--resume", action="store_true", help="continue from the saved state (runs/resume/... or <out>.resume.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available; "
                        "under torchrun each process takes the GPU of its LOCAL_RANK)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA (it is on by default there)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (slow to start; "
                        "worth it for long GPU runs)")


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, TRAINERS))
    parser = argparse.ArgumentParser(
        prog="python -m core.train", description="Train a GenLab model and write its checkpoint + model card.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="techniques:\n" + "\n".join(f"  {name:<{width}} {desc}" for name, (_, desc) in TRAINERS.items()))
    parser.add_argument("technique", choices=sorted(TRAINERS), help="what to train")
    return parser


def portable_arguments(argv: list[str]) -> list[str]:
    """The command line as a model card records it: a file or folder outside the repository is named
    by its name alone (the card names data by name, source and SHA-256; a path of the training
    machine means nothing on another)."""
    root = Path(__file__).resolve().parent.parent

    def portable(argument: str) -> str:
        path = Path(argument)
        if (path.is_absolute() or ".." in path.parts) and not path.resolve().is_relative_to(root):
            return path.name
        return argument
    return [portable(argument) for argument in argv]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return
    argv = [argv[0].replace("-", "_"), *argv[1:]]  # world-models is world_models
    technique = top.parse_args(argv[:1]).technique
    module_name, description = TRAINERS[technique]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        top.exit(2, f"{technique}: not built yet ({module_name} does not exist).\n")
    parser = argparse.ArgumentParser(prog=f"python -m core.train {technique}", description=description)
    add_common_arguments(parser)
    module.add_train_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.command_line = "python -m core.train " + shlex.join(portable_arguments(argv))  # for the model card
    from core.checkpoints import CheckpointError
    from core.engine import RankFailure, main_process_only_output, world
    from core.runtime import set_threads

    main_process_only_output()
    set_threads(args.threads)
    try:
        path = module.train_main(args)
    except RankFailure as exc:  # each process says what it saw
        parser.exit(1, f"{parser.prog}: {exc}\n")
    except (ValueError, CheckpointError) as exc:  # core's sentences for the user, not tracebacks;
        # every process meets the same mistake, so rank 0 alone says it
        parser.exit(2, f"{parser.prog}: {exc}\n" if world()[0] == 0 else None)
    print(f"wrote {path}")
    if world()[1] > 1:
        # Everything is written and every process passed the final barrier. Leave without the
        # interpreter's teardown: there, now and then, a gloo thread still being destroyed aborted a
        # CPU process ("terminate called without an active exception"), and torchrun then called a
        # finished run a failure.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def progress(events: Iterable[dict], total: int | None = None, desc: str = "training") -> Iterator[dict]:
    """Show a tqdm bar over a trainer's event stream ({"step": ..., "loss": ...}) and pass events on."""
    with tqdm(total=total, desc=desc, dynamic_ncols=True) as bar:
        for event in events:
            bar.update(event.get("step", bar.n + 1) - bar.n)
            bar.set_postfix({k: f"{v:.4g}" for k, v in event.items()
                             if k != "step" and isinstance(v, (int, float))}, refresh=False)
            yield event


class Every:
    """True once each `seconds`: for periodic resumable saves and time budgets."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


if __name__ == "__main__":
    main()
