"""Energy-based models: a network that scores images, and Langevin dynamics that samples from it.

An EBM gives every input x a real number, its energy E(x), and defines a density by the Boltzmann
distribution of physics:

    p(x) = exp(−E(x)) / Z,     Z = ∫ exp(−E(x)) dx  (intractable)

Low energy means likely. Neither sampling nor training needs Z:

* **Sampling by Langevin dynamics**: start anywhere (noise) and walk downhill on the energy, with a
  little noise so the walk explores instead of sticking in the nearest dip:
      x ← x − η · clip(∇ₓE(x)) + σ · ε,   ε ~ N(0, I),   then x clipped to the data's range.
  The textbook sampler ties the two, σ = √(2η), and samples p exactly as η → 0 and the steps → ∞;
  practical EBMs (Du & Mordatch, 2019; Generative Deep Learning) take few, larger steps with a much
  smaller σ, so both are parameters here.
* **Training by contrastive divergence**: the gradient of −log p(x) is ∇E(x_real) − E_p[∇E(x)], and
  the expectation is estimated with Langevin samples x⁻. So lower the energy of real images and raise
  it on the samples:
      loss = mean E(x_real) − mean E(x⁻) + α · (mean E(x_real)² + mean E(x⁻)²)
  The α term keeps the energies near 0, without which both can drift off together. Chains start
  mostly from a **replay buffer** of earlier samples (a few from fresh noise), so 60 steps per
  training step continue long chains instead of starting from scratch each time.

Those persistent chains are where the model's variety lives: walked for thousands of steps over
training, they spread over every kind of garment, while a few hundred steps from fresh noise mostly
roll into the widest valley. The checkpoint therefore keeps the newest buffer samples (`load_chains`)
for the tab to continue. Langevin from damaged images with the known pixels held (`corrupt`, `repair`)
inpaints; the energy itself scores how unlike the training data an input is (`evaluate`, the card's
out-of-distribution AUROCs).

Two models: `EnergyNet` on Fashion-MNIST (32×32 in [−1, 1], the book's network with Swish), and
`Ebm2D`, an MLP energy on the toy 2-D sets, small enough to train live.

    python -m core.train ebm --minutes 60 --threads 1
    python -m core.train ebm --resume --minutes 30 --threads 1        # continue from runs/resume/
    python -m core.train ebm --init-from assets/checkpoints/ebm/fashion.pt   # new optimizer and buffer
"""
from __future__ import annotations

import argparse
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from core.data.toy2d import EXTENT, check, plane, sample as sample_toy
from core.runtime import frozen, make_generator, seeded_init, set_learning_rate


@dataclass
class EBMConfig:
    image_size: int = 32      # Fashion-MNIST padded from 28, as in the book
    widths: tuple = (16, 32, 64, 64)
    alpha: float = 0.1        # the weight of the energy-magnitude regulariser
    # the sampler the model was trained with (and the tab's defaults)
    steps: int = 60
    step_size: float = 10.0
    noise: float = 0.005
    grad_clip: float = 0.03


class EnergyNet(nn.Module):
    """x [N, 1, 32, 32] in [−1, 1] -> E(x) [N]: four stride-2 convolutions and two linear layers,
    Swish (x · σ(x)) everywhere: smooth, so ∇ₓE, which Langevin follows, is smooth too."""

    def __init__(self, config: EBMConfig):
        super().__init__()
        self.config = config
        layers, channels = [], 1
        for i, width in enumerate(config.widths):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv2d(channels, width, kernel, stride=2, padding=kernel // 2), nn.SiLU()]
            channels = width
        side = config.image_size // 2 ** len(config.widths)
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, 64), nn.SiLU(),
                                  nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


# --- Langevin dynamics ----------------------------------------------------------------------------

def langevin(energy: nn.Module, x: torch.Tensor, steps: int, step_size: float, noise: float,
             generator: torch.Generator, grad_clip: float | None = 0.03,
             bounds: tuple[float, float] | None = (-1.0, 1.0),
             known: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x after step k, E(x) per sample, before the step) for k = 1 … steps:
        x ← clip(x − step_size · clip(∇ₓE(x), ±grad_clip) + noise · ε)   (η, σ; ε ~ N(0, I))
    The gradient is taken with respect to the input only: the energy's weights are left untouched.
    Where the boolean mask `known` is True, pixels keep their starting values (inpainting: only the
    rest of the image walks). Noise is drawn on the CPU from `generator` (same seed, same samples on
    every device)."""
    if not (math.isfinite(step_size) and step_size >= 0) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"Step size and noise must be finite and not negative, not {step_size} and {noise}.")
    if steps < 0:
        raise ValueError(f"The number of Langevin steps cannot be negative ({steps}).")
    with frozen(energy):
        x = x.detach()
        if known is not None:
            known, start = known.to(x.device), x
        for _ in range(int(steps)):
            x_in = x.detach().requires_grad_(True)  # a new leaf: the x handed out last step is left as it was
            with torch.enable_grad():
                e = energy(x_in).reshape(len(x))  # E(x_k), one number per image
                (grad,) = torch.autograd.grad(e.sum(), x_in)  # ∇ₓE(x_k): by the pixels, not the weights
            if grad_clip is not None:
                grad = grad.clamp(-grad_clip, grad_clip)  # clip(∇ₓE, ±c), pixel by pixel
            # −η · ∇ₓE(x_k) + σ · ε
            step = -step_size * grad + noise * torch.randn(x.shape, generator=generator).to(x.device)
            x = x.detach() + step  # x_{k+1}
            if bounds is not None:
                x = x.clamp(*bounds)  # kept in the pixel range
            if known is not None:
                x = torch.where(known, start, x)
            yield x, e.detach()


def last(stream):
    """The final item of a stream (for callers that want only the end of a Langevin run)."""
    item = None
    for item in stream:
        pass
    return item


class ReplayBuffer:
    """Earlier Langevin samples, newest kept, oldest dropped beyond `size`. Each batch of chain starts
    takes a `fresh` share of new uniform noise, the rest from the buffer (all noise while it is empty)."""

    def __init__(self, size: int, shape: tuple, fresh: float = 0.05, low: float = -1.0, high: float = 1.0):
        if size < 1:
            raise ValueError(f"A replay buffer needs room for at least one sample, not {size}.")
        self.size, self.shape, self.fresh, self.low, self.high = size, tuple(shape), fresh, low, high
        self.items = torch.empty(0, *shape)

    def __len__(self) -> int:
        return len(self.items)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, *self.shape, generator=generator)

    def starts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if not len(self.items):
            return self.noise(n, generator)
        n_fresh = int(torch.binomial(torch.tensor(float(n)), torch.tensor(self.fresh), generator=generator))
        old = self.items[torch.randint(len(self.items), (n - n_fresh,), generator=generator)]
        return torch.cat([self.noise(n_fresh, generator), old])

    def push(self, samples: torch.Tensor) -> None:
        self.items = torch.cat([samples.detach().cpu(), self.items])[:self.size]

    def state_dict(self) -> dict:
        return {"items": self.items}

    def load_state_dict(self, state: dict) -> None:
        self.items = state["items"][:self.size]


def contrastive_divergence(energy_real: torch.Tensor, energy_fake: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean E(x_real) − mean E(x⁻) + α · (mean E(x_real)² + mean E(x⁻)²): minimised, it pushes the energy
    down on real images and up on the model's samples x⁻; the α term keeps both near 0."""
    return (energy_real.mean() - energy_fake.mean()
            + alpha * (energy_real.pow(2).mean() + energy_fake.pow(2).mean()))


# --- sampling the shipped model ------------------------------------------------------------------

def uniform_noise(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n grey images of uniform noise in [−1, 1], where every chain starts: [n, 1, size, size]."""
    return torch.rand(n, 1, size, size, generator=generator) * 2 - 1


def sample(model: EnergyNet, n: int, generator: torch.Generator, steps: int | None = None,
           step_size: float | None = None, noise: float | None = None, start: torch.Tensor | None = None,
           known: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Langevin from uniform noise (or `start`, pixels under `known` held), with the model's training
    sampler unless told otherwise; yields (images [n, 1, S, S] in [−1, 1] on the CPU, energies [n]
    of the images before the step) at every step."""
    config = model.config
    device = next(model.parameters()).device
    if start is None:
        start = uniform_noise(n, config.image_size, generator)
    for x, e in langevin(model, start.to(device), config.steps if steps is None else steps,
                         config.step_size if step_size is None else step_size,
                         config.noise if noise is None else noise, generator, config.grad_clip, known=known):
        yield x.cpu(), e.cpu()


def corrupt(images: torch.Tensor, kind: str, amount: float, generator: torch.Generator,
            box: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Damage images in [−1, 1] for the model to repair -> (damaged images, mask of the pixels to keep or None).

    "noise": add amount · ε to every pixel (ε ~ N(0, I)); every pixel may then move.
    "mask":  paint the rectangle box = (top, left, height, width) flat grey (0, the middle of the range:
             a start the walk repairs better than noise or black); the pixels outside it are known and
             stay as they are (inpainting). `amount` is unused."""
    if kind == "noise":
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"The noise level must be finite and not negative, not {amount}.")
        return (images + amount * torch.randn(images.shape, generator=generator)).clamp(-1, 1), None
    if kind == "mask":
        side = images.shape[-1]
        top, left, height, width = box or (side // 4, side // 4, side // 2, side // 2)
        if not (0 <= top < side and 0 <= left < side and height > 0 and width > 0):
            raise ValueError(f"The hidden rectangle must lie inside the {side}×{side} image, not {box}.")
        hidden = torch.zeros(images.shape, dtype=torch.bool)
        hidden[..., top:top + height, left:left + width] = True
        return images.masked_fill(hidden, 0.0), ~hidden
    raise ValueError(f"Unknown corruption {kind!r}: choose noise or mask.")


def repair(model: EnergyNet, damaged: torch.Tensor, known: torch.Tensor | None, generator: torch.Generator,
           steps: int, step_size: float | None = None, noise: float | None = None
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Langevin dynamics started from damaged images (the known pixels held fixed): the walk downhill
    on the energy pulls them back towards images the model finds likely. Yields like `sample`."""
    yield from sample(model, len(damaged), generator, steps, step_size, noise, start=damaged, known=known)


def grey_faces(n: int, size: int = 32, split: str = "test") -> torch.Tensor:
    """The project's synthetic faces as grey size×size images in [−1, 1]: images the clothes model never saw."""
    from core.data.faces import face_split

    faces = face_split(split, n, size=size).images  # [n, 3, size, size] in [0, 1]
    grey = (0.299 * faces[:, 0] + 0.587 * faces[:, 1] + 0.114 * faces[:, 2]).unsqueeze(1)
    return grey * 2 - 1


@torch.no_grad()
def energies(model: EnergyNet, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """E(x) for images [N, 1, S, S] in [−1, 1]: low for what looks like the training data."""
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device)).cpu() for chunk in images.split(batch)])


@functools.lru_cache(maxsize=None)
def load_model(name: str = "fashion") -> EnergyNet:
    """The shipped energy network, built once, moved to the app's device, shared read-only."""
    from core.checkpoints import load_shipped
    from core.runtime import app_device

    ckpt = load_shipped("ebm", name)
    config = EBMConfig(**{**ckpt.config, "widths": tuple(ckpt.config["widths"])})
    model = EnergyNet(config)
    model.load_state_dict(ckpt.state_dict)
    return model.float().eval().requires_grad_(False).to(app_device())


def chains_to_bytes(images: torch.Tensor) -> torch.Tensor:
    """Buffer samples in [−1, 1] -> uint8, a quarter of the bytes (the screen shows 8 bits anyway)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@functools.lru_cache(maxsize=None)
def load_chains(name: str = "fashion") -> torch.Tensor:
    """The newest replay-buffer samples of the shipped model's training, in [−1, 1]: the persistent chains
    contrastive divergence kept walking, which the tab can continue. Empty if the checkpoint has none."""
    from core.checkpoints import load_shipped

    chains = load_shipped("ebm", name).extras.get("chains")
    if chains is None:
        return torch.empty(0, 1, 32, 32)
    return chains.float() / 127.5 - 1


# --- a 2-D EBM to watch learn ---------------------------------------------------------------------

class Ebm2D:
    """One user's live 2-D EBM: an MLP energy on the plane, trained by contrastive divergence with
    Langevin particles from a replay buffer; the particles shown move on the energy landscape.

        ebm = Ebm2D("eight_gaussians", seed=0)
        ebm.train(100)
        ebm.energy_map(), ebm.particles, ebm.history
    """

    def __init__(self, distribution: str = "eight_gaussians", seed: int = 0, lr: float = 3e-3,
                 hidden: int = 64, batch_size: int = 256, steps: int = 20, step_size: float = 0.05,
                 noise: float = 0.05, alpha: float = 0.1, shown: int = 400):
        self.distribution, self.batch_size = check(distribution), batch_size
        self.steps, self.step_size, self.noise, self.alpha = steps, step_size, noise, alpha
        self.rng = make_generator(seed)
        self.energy = nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                    nn.Linear(hidden, 1))
        seeded_init(self.energy, make_generator(seed + 1))
        self.optimizer = torch.optim.Adam(self.energy.parameters(), lr, betas=(0.0, 0.999))
        self.set_learning_rate(lr)
        self.buffer = ReplayBuffer(4096, (2,), low=-EXTENT, high=EXTENT)
        self.shown_data = sample_toy(distribution, shown, self.rng)
        self.particles = self.buffer.noise(shown, self.rng)  # shown chains, carried on from frame to frame
        self.step = 0
        self.history: list[tuple[int, float, float]] = []  # (step, mean E(real), mean E(samples))
        self.diverged: str | None = None

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy(x).squeeze(1)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_learning_rate(self, lr: float) -> None:
        set_learning_rate(self.optimizer, lr)

    def _walk(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        out = last(langevin(self.energy, x, steps, self.step_size, self.noise, self.rng, grad_clip=None,
                            bounds=(-EXTENT, EXTENT)))
        return x if out is None else out[0]

    def train(self, steps: int) -> None:
        for _ in range(max(0, int(steps))):
            if self.diverged:
                return
            real = sample_toy(self.distribution, self.batch_size, self.rng)
            fake = self._walk(self.buffer.starts(self.batch_size, self.rng), self.steps)
            self.buffer.push(fake)
            e_real, e_fake = self._energy(real), self._energy(fake)
            loss = contrastive_divergence(e_real, e_fake, self.alpha)
            if not math.isfinite(loss.item()):
                self.diverged = f"the energies became {loss.item()} at step {self.step + 1}"
                return
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.history.append((self.step, e_real.mean().item(), e_fake.mean().item()))
        self.particles = self._walk(self.particles, self.steps)

    @torch.no_grad()
    def energy_map(self, resolution: int = 80) -> torch.Tensor:
        """E on a resolution² grid over the plotted square (row 0 at the top, y = +EXTENT)."""
        return self._energy(plane(resolution)).reshape(resolution, resolution)


# --- training ------------------------------------------------------------------------------------

def load_images(split: str, size: int = 32, data_dir=None, limit: int | None = None) -> torch.Tensor:
    """Fashion-MNIST `split`, zero-padded to size×size, in [−1, 1]: float [N, 1, size, size]."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float

    images, _ = load_fashion_mnist(split, data_dir)
    return to_float(images[:limit], size) * 2 - 1


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, shared by all processes")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of the energy-magnitude regulariser")
    parser.add_argument("--langevin-steps", type=int, default=60)
    parser.add_argument("--step-size", type=float, default=10.0)
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--buffer", type=int, default=8192, help="replay buffer size (per process)")
    parser.add_argument("--name", default="fashion", help="checkpoint name")
    parser.add_argument("--ship-chains", type=int, default=1024,
                        help="newest replay-buffer samples saved in the checkpoint (8 bits each), for the tab to continue")
    parser.add_argument("--init-from", default=None,
                        help="start from this EBM checkpoint's weights (a fresh optimizer and an empty buffer: "
                             "continuing a run whose resume state is gone); its card's commands head the new card's")


def train(model: EnergyNet, images: torch.Tensor, steps: int, batch_size: int, optimizer, buffer: ReplayBuffer,
          generator, start_step: int = 0, network: nn.Module | None = None) -> Iterator[dict]:
    """Contrastive divergence; yields {"step", "loss", "energy_real", "energy_fake"}."""
    network = network or model
    config = model.config
    device = next(model.parameters()).device
    for step in range(start_step + 1, steps + 1):
        real = images[torch.randint(len(images), (batch_size,), generator=generator)]
        real = (real + 0.005 * torch.randn(real.shape, generator=generator)).clamp(-1, 1).to(device)
        model.eval()
        fake = last(langevin(model, buffer.starts(batch_size, generator).to(device), config.steps,
                             config.step_size, config.noise, generator, config.grad_clip))[0]
        buffer.push(fake)
        model.train()
        e = network(torch.cat([real, fake]))
        e_real, e_fake = e[:batch_size], e[batch_size:]
        loss = contrastive_divergence(e_real, e_fake, config.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield {"step": step, "loss": loss.item(), "energy_real": e_real.mean().item(),
               "energy_fake": e_fake.mean().item()}


EVALUATED = 1000  # test images (and as many noise images and faces) the card's metrics score


@torch.no_grad()
def evaluate(model: EnergyNet, test: torch.Tensor, generator: torch.Generator) -> dict:
    """The card's metrics: mean energies of test images, uniform noise and grey faces, and the AUROC of the
    energy as an outlier score (test against each): does the model rank unseen clothes below the rest?"""
    from core.metrics.ood import auroc

    model.eval()
    scores = {"test": energies(model, test), "noise": energies(model, uniform_noise(len(test), test.shape[-1], generator)),
              "faces": energies(model, grey_faces(len(test), test.shape[-1]))}
    return {"images_each": len(test), **{f"mean_energy_{k}": round(v.mean().item(), 4) for k, v in scores.items()},
            "auroc_test_vs_noise": round(auroc(scores["test"], scores["noise"]), 4),
            "auroc_test_vs_faces": round(auroc(scores["test"], scores["faces"]), 4)}


def train_main(args) -> Path:
    from core.checkpoints import command_history, start_from
    from core.data.fashion_mnist import provenance
    from core.engine import TrainingRun
    from core.registry import shipped_path

    out = Path(args.out) if args.out else shipped_path("ebm", args.name)
    run = TrainingRun(args, out, global_batch=args.batch_size)
    images = load_images("train", data_dir=args.data_dir, limit=args.limit)
    mine = images[run.shard(len(images), "images")]
    config = EBMConfig(alpha=args.alpha, steps=args.langevin_steps, step_size=args.step_size, noise=args.noise)
    model = EnergyNet(config)
    seeded_init(model, make_generator(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.0, 0.999))
    buffer = ReplayBuffer(args.buffer, (1, config.image_size, config.image_size))
    generator = run.generator("batches")
    curve, init = [], None  # init: what the --init-from checkpoint's card says about how it was made
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        buffer.load_state_dict(run.resumed["buffer"])  # rank 0's buffer: a warm start for every rank
        curve, init = run.resumed["curve"], run.resumed.get("init")
    elif args.init_from:
        weights, init = start_from(args.init_from, {**asdict(config), "widths": list(config.widths)}, "EBM",
                                   ("steps", "training_curve"))
        model.load_state_dict(weights)
        run.commands = command_history(args, init)  # the checkpoint's commands head this run's
    network = run.wrap(model)
    steps = args.epochs * len(images) // args.batch_size
    every = max(1, min(100, steps // 10))
    n_params = sum(p.numel() for p in model.parameters())
    run.log(f"ebm {args.name}: {n_params / 1e3:.0f}k parameters, {len(images)} training images; {steps} steps of "
            f"{config.steps} Langevin steps each")
    data_files = [provenance("train", args.data_dir)]
    running: list[dict] = []
    metrics: dict = {}  # measured once, at the end

    def write_checkpoint() -> None:
        card = run.card(data=f"Fashion-MNIST train ({len(images)} images), zero-padded to 32x32, in [-1, 1]",
                        data_files=data_files, model=model, parameters=n_params, batch_size=args.batch_size,
                        optimizer=f"Adam lr {args.lr}, betas (0, 0.999)", buffer_size=args.buffer,
                        chains_shipped=min(args.ship_chains, len(buffer)),
                        sampler={"steps": config.steps, "step_size": config.step_size, "noise": config.noise,
                                 "grad_clip": config.grad_clip},
                        training_curve={"step_loss_energy_real_energy_fake": curve}, init=init, metrics=metrics)
        run.save_model(model, {**asdict(config), "widths": list(config.widths)}, card,
                       extras={"chains": chains_to_bytes(buffer.items[:args.ship_chains])})

    def save() -> None:
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve,
                        "buffer": buffer.state_dict(), "init": init})
        write_checkpoint()

    for event in run.loop(train(model, mine, steps, run.batch, optimizer, buffer, generator, run.step, network),
                          save, total=steps, desc=f"ebm {args.name}"):
        running.append(event)
        if event["step"] % every == 0:
            curve.append([event["step"]] + [round(run.mean(sum(e[k] for e in running) / len(running)), 4)
                                            for k in ("loss", "energy_real", "energy_fake")])
            running = []
    metrics.update(evaluate(model, load_images("test", data_dir=args.data_dir, limit=EVALUATED),
                            make_generator(args.seed)))
    write_checkpoint()
    run.finish()
    return out
