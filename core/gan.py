"""Generative adversarial networks: DCGAN, WGAN-GP and the conditional GAN (CGAN).

The forger and the art dealer: a generator G turns random noise z into images, a
discriminator D (called a *critic* when it scores instead of classifying) tells them from real
ones, and each is trained against the other. Three variants share one pair of networks:

    DCGAN    transposed convolutions + batch norm + ReLU in G (tanh output), strided convolutions
             + batch norm + LeakyReLU in D, binary cross-entropy with label smoothing and noise.
    WGAN-GP  D becomes a critic with no batch norm and no sigmoid; its score gap between real and
             fake estimates the Wasserstein distance. A gradient penalty (weight 10) keeps the
             critic 1-Lipschitz; it takes several steps per generator step; Adam(0.5, 0.9).
    CGAN     a one-hot class label is appended to z, and given to D as extra constant image
             channels, so the user can ask for "a sneaker".

    python -m core.train gan --model dcgan --data fashion --minutes 30
    python -m core.train gan --model cgan --data fashion --minutes 30
    python -m core.train gan --model wgan-gp --data faces --minutes 35
    torchrun --nproc_per_node=2 -m core.train gan --model dcgan --data celeba --data-dir ~/data --batch-size 128

Training runs on core.engine.TrainingRun: under torchrun each process trains on its own shard with
its share of the (global) --batch-size, and DistributedDataParallel averages both networks' gradients,
the gradient penalty's double backward included.

Sampling is pure: `sample(G, n, generator, labels, truncation)` with an explicit torch.Generator.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from core.data.images import image_grid, pil_to_tensor, tensor_to_pil
from core.latent import interpolate  # noqa: F401  (latent walks: gan.interpolate(z0, z1, steps, mode))
from core.registry import shipped_path
from core.runtime import autocast, make_generator


LOSSES = ("bce", "wgan-gp", "r1")


@dataclass
class GANConfig:
    """The networks' shape; saved in the checkpoint so it rebuilds its own generator."""
    image_size: int = 32      # a power of two >= 8: G doubles 4x4 up to it
    channels: int = 1         # 1 for Fashion-MNIST, 3 for faces
    z_dim: int = 100
    width: int = 32           # channels of G's last / D's first layer; doubled at each lower resolution
    num_classes: int = 0      # > 0 makes a conditional GAN
    loss: str = "bce"         # "bce" (DCGAN, CGAN), "wgan-gp" or "r1" (non-saturating + R1 penalty, StyleGAN)
    architecture: str = "dcgan"  # "dcgan": the networks below; "style": core.stylegan's
    w_dim: int = 128          # style: size of the intermediate latent w
    mapping_layers: int = 4   # style: fully connected layers from z to w

    def __post_init__(self):
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, not {self.image_size}.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        if self.architecture not in ("dcgan", "style"):
            raise ValueError(f"architecture must be 'dcgan' or 'style', not {self.architecture!r}.")

    @property
    def levels(self) -> int:  # upsamplings from 4x4 to image_size
        return int(math.log2(self.image_size)) - 2


@dataclass
class TrainConfig:
    """How the two networks are trained (recorded in the model card)."""
    batch_size: int = 64
    epochs: int = 10
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999      # WGAN-GP: 0.9
    critic_steps: int = 1     # WGAN-GP: several critic updates per generator update
    gp_weight: float = 10.0
    r1_gamma: float = 1.0     # "r1": penalty (gamma / 2) E ||grad D(real)||^2 ...
    r1_every: int = 4         # ... computed every few steps, scaled up to match (lazy regularisation)
    label_smoothing: float = 0.1  # DCGAN: real targets 0.9 ...
    label_noise: float = 0.05     # ... plus/minus a little noise, so D never becomes certain
    ema_decay: float = 0.999  # 0 turns the moving average of G's weights off


PRESETS = {  # --model name -> (config changes, training changes)
    "dcgan": ({"loss": "bce"}, {}),
    "cgan": ({"loss": "bce", "num_classes": 10}, {}),
    "wgan-gp": ({"loss": "wgan-gp"}, {"beta2": 0.9, "critic_steps": 3, "label_smoothing": 0.0, "label_noise": 0.0}),
    # StyleGAN2's recipe: equalised learning rate, so a high rate; no momentum; R1 instead of label tricks.
    "stylegan": ({"loss": "r1", "architecture": "style"},
                 {"lr_g": 2e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "label_smoothing": 0.0, "label_noise": 0.0,
                  "r1_gamma": 0.1}),
}


# --- networks -------------------------------------------------------------------------------

class Generator(nn.Module):
    """z (+ one-hot label) -> image in [-1, 1]: a 4x4 seed grown by transposed convolutions."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.width * 2 ** (cfg.levels - 1)
        layers = [nn.ConvTranspose2d(cfg.z_dim + cfg.num_classes, ch, 4, 1, 0, bias=False),
                  nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(cfg.levels - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, cfg.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.cfg.num_classes).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Critic(nn.Module):
    """image (+ label planes) -> one score per image (a logit for DCGAN, a free score for WGAN)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        # Batch norm mixes the samples of a batch, which breaks the per-sample gradient penalty.
        norm = nn.BatchNorm2d if cfg.loss == "bce" else (lambda ch: nn.Identity())
        ch = cfg.width
        layers = [nn.Conv2d(cfg.channels + cfg.num_classes, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(cfg.levels - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), norm(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        # A WGAN critic needs no final bias: a constant added to every score cancels in the loss.
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=cfg.loss == "bce")]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.num_classes:
            planes = F.one_hot(labels, self.cfg.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[-2:])], dim=1)
        return self.net(x).flatten()


def networks(cfg: GANConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and the discriminator/critic a config describes."""
    if cfg.architecture == "style":
        from core.stylegan import ResidualDiscriminator, StyleGenerator

        return StyleGenerator(cfg), ResidualDiscriminator(cfg)
    return Generator(cfg), Critic(cfg)


# --- sampling (pure) ------------------------------------------------------------------------

TRUNCATION_RANGE = 3.0  # truncation psi keeps each component of z within +-3 psi (1: almost the full normal)


def noise(cfg: GANConfig, n: int, generator: torch.Generator, truncation: float | None = None) -> torch.Tensor:
    """n latent vectors. Truncation psi < 1 is BigGAN's truncation trick: every component of z outside
    +-TRUNCATION_RANGE * psi is redrawn until it falls inside (a truncated normal), so the images get
    more typical and less varied. Scaling z by psi instead would shrink it towards 0, a norm this
    generator never saw in training (100-D normal noise lies near radius 10): its images fade to a
    washed-out average. Components already inside are kept, so a seed's images change gradually.
    A style generator truncates w instead (`generate`), so its z is drawn whole."""
    z = torch.randn(n, cfg.z_dim, generator=generator)
    if truncation is not None and cfg.architecture != "style":
        if not 0 < truncation <= 1:
            raise ValueError(f"Truncation must be in (0, 1], not {truncation}.")
        limit = TRUNCATION_RANGE * truncation
        outside = z.abs() > limit
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = z.abs() > limit
    return z


def check_labels(cfg: GANConfig, n: int, labels) -> torch.Tensor | None:
    if not cfg.num_classes:
        if labels is not None:
            raise ValueError("This GAN is not conditional: it takes no class labels.")
        return None
    if labels is None:
        raise ValueError(f"This conditional GAN needs a class label (0-{cfg.num_classes - 1}) for each image.")
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n or labels.min() < 0 or labels.max() >= cfg.num_classes:
        raise ValueError(f"Give one class label in 0-{cfg.num_classes - 1} per image ({n} images).")
    return labels


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, labels=None, truncation: float | None = None) -> torch.Tensor:
    """Decode given latent vectors to images in [0, 1], on the CPU (latent walks reuse the same z).
    z and labels move to G's device; on CUDA G runs in bf16 (core.runtime.autocast). `truncation` is
    read by a style generator only (psi in w-space, core.stylegan); a DCGAN's is applied to z by `noise`."""
    labels = check_labels(G.cfg, len(z), labels)
    if G.cfg.architecture == "style":
        from core import stylegan

        return stylegan.render(G, stylegan.styles(G, z, 1.0 if truncation is None else truncation))
    device = next(G.parameters()).device
    with autocast(device):
        x = G.eval()(z.to(device), None if labels is None else labels.to(device))
    return ((x.float() + 1) / 2).cpu()


def sample(G: Generator, n: int, generator: torch.Generator, labels=None, truncation: float | None = None):
    """n new images in [0, 1], [n, C, H, W]; the same generator seed gives the same images."""
    if not 1 <= n <= 1024:
        raise ValueError(f"Ask for between 1 and 1024 images, not {n}.")
    return generate(G, noise(G.cfg, n, generator, truncation), labels, truncation)


# --- losses and one training step -----------------------------------------------------------

def gradient_penalty(critic: Critic, real, fake, generator: torch.Generator, labels=None) -> torch.Tensor:
    """E[(||grad_x critic(x)|| - 1)^2] at random points x on lines between real and fake images.

    Always in float32, outside any autocast: the penalty is a gradient of a gradient, and bf16's
    8 bits of mantissa would make its norm too coarse to hold at 1. Under DistributedDataParallel
    `critic` may be the wrapper: autograd.grad here only reaches the input `mixed`, and the weights'
    gradients (this double backward included) are summed once, in loss.backward(), where DDP
    averages them."""
    eps = torch.rand(real.size(0), 1, 1, 1, generator=generator).to(real.device)
    with torch.autocast(real.device.type, enabled=False):
        mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
        (grads,) = torch.autograd.grad(critic(mixed, labels).float().sum(), mixed, create_graph=True)
    return ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(critic: nn.Module, real: torch.Tensor, labels=None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 at real images, in float32 like the gradient
    penalty. It flattens D around the data, so the game settles there instead of circling."""
    with torch.autocast(real.device.type, enabled=False):
        real = real.detach().float().requires_grad_(True)
        (grads,) = torch.autograd.grad(critic(real, labels).float().sum(), real, create_graph=True)
    return grads.flatten(1).square().sum(1).mean()


def train_step(G, D, opt_g, opt_d, real, labels, tcfg: TrainConfig, generator: torch.Generator,
               cfg: GANConfig | None = None, autocast=contextlib.nullcontext, step: int = 0) -> dict:
    """Update D (critic_steps times) then G on one batch of real images in [-1, 1]; returns the losses.

    G and D are what the step calls: the networks, or their DistributedDataParallel wrappers (then
    pass `cfg`, which a wrapper does not carry). Random draws come from `generator` on the CPU and
    move to the batch's device, so a seed trains the same way on every device."""
    n, cfg = real.size(0), cfg or G.cfg

    def latent():
        return torch.randn(n, cfg.z_dim, generator=generator).to(real.device)

    def jitter():  # uniform in [-label_noise, label_noise]
        return ((torch.rand(n, generator=generator) * 2 - 1) * tcfg.label_noise).to(real.device)

    logs = {}
    for _ in range(tcfg.critic_steps):
        with torch.no_grad(), autocast():
            fake = G(latent(), labels)
        with autocast():
            real_score, fake_score = D(real, labels).float(), D(fake, labels).float()
        if cfg.loss == "bce":
            real_target = 1 - tcfg.label_smoothing + jitter()
            fake_target = jitter().abs()
            loss_d = (F.binary_cross_entropy_with_logits(real_score, real_target)
                      + F.binary_cross_entropy_with_logits(fake_score, fake_target))
            logs.update(d_real=torch.sigmoid(real_score).mean().item(), d_fake=torch.sigmoid(fake_score).mean().item())
        elif cfg.loss == "r1":
            # softplus(-r) = -log sigmoid(r): the logistic loss of calling reals real and fakes fake
            loss_d = F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
            logs.update(d_real=torch.sigmoid(real_score).mean().item(), d_fake=torch.sigmoid(fake_score).mean().item())
            if step % tcfg.r1_every == 0:
                r1 = r1_penalty(D, real, labels)
                loss_d = loss_d + tcfg.r1_gamma / 2 * tcfg.r1_every * r1
                logs["r1"] = r1.item()
        else:
            gp = gradient_penalty(D, real, fake, generator, labels)
            wasserstein = real_score.mean() - fake_score.mean()
            loss_d = -wasserstein + tcfg.gp_weight * gp
            logs.update(wasserstein=wasserstein.item(), gp=gp.item())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    with autocast():
        fake_score = D(G(latent(), labels), labels).float()
    # Non-saturating generator loss: G wants D to call its fakes real.
    loss_g = (F.binary_cross_entropy_with_logits(fake_score, torch.ones_like(fake_score)) if cfg.loss != "wgan-gp"
              else -fake_score.mean())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), **logs}


@torch.no_grad()
def ema_update(ema: Generator, G: Generator, decay: float) -> None:
    for e, p in zip(ema.parameters(), G.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), G.buffers()):  # running statistics (a style G's mean w) are copied
        e.copy_(b)


@torch.no_grad()
def recalibrate_batch_norm(G: Generator, generator: torch.Generator, batches: int = 8, batch_size: int = 128):
    """Averaged weights need their own batch-norm statistics: measure them on fresh noise."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in G.modules()):
        return
    labels = None
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
    G.train()
    device = next(G.parameters()).device
    for _ in range(batches):
        if G.cfg.num_classes:
            labels = torch.randint(G.cfg.num_classes, (batch_size,), generator=generator).to(device)
        G(torch.randn(batch_size, G.cfg.z_dim, generator=generator).to(device), labels)
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    G.eval()


# --- data -----------------------------------------------------------------------------------

class ImageData:
    """A whole dataset held as uint8 [N, C, S, S] (small), served as float batches in [-1, 1]."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor | None, description: str,
                 files: list[dict], class_names: list[str] | None = None):
        self.images, self.labels, self.description = images_uint8, labels, description
        self.files = files  # name, source and SHA-256 of the data, for the model card
        self.class_names = class_names

    def __len__(self):
        return len(self.images)

    def batch(self, index: torch.Tensor):
        x = self.images[index].float().div_(127.5).sub_(1)
        return x, (self.labels[index] if self.labels is not None else None)


def load_data(name: str, image_size: int, data_dir=None, faces: int = 12000, limit: int | None = None,
              download: bool = False) -> ImageData:
    if name == "fashion":
        from core.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist, provenance, to_float

        images, labels = load_fashion_mnist("train", data_dir)
        x = torch.cat([(to_float(images[i:i + 5000], image_size) * 255).round().to(torch.uint8)
                       for i in range(0, len(images), 5000)])
        return ImageData(x, labels, f"Fashion-MNIST train ({len(x)} images, zero-padded 28->{image_size})",
                         [provenance("train", data_dir)], CLASS_NAMES)
    if name == "faces":
        from core.data.faces import face_split, provenance

        x = torch.cat([(face_split("train", min(1000, faces - start), size=image_size, start=start).images * 255)
                       .round().to(torch.uint8) for start in range(0, faces, 1000)])
        return ImageData(x, None, f"synthetic faces, core.data.faces train split, first {len(x)}, "
                                  f"drawn at {image_size}x{image_size}", [provenance("train", len(x), image_size)])
    if name == "celeba":
        from core.data import data_record
        from core.data.celeba import SOURCE, load_celeba

        x, _ = load_celeba(data_dir, "train", image_size, limit, download=download)
        description = f"CelebA train split, aligned crops, {len(x)} images, centre-cropped and resized to {image_size}x{image_size}"
        return ImageData(x, None, description, [data_record(description, SOURCE, x, key="sha256_of_images")])
    raise ValueError(f"Unknown data {name!r}: use 'fashion', 'faces' or 'celeba'.")


# --- training loop --------------------------------------------------------------------------

EARLY_FRAMES = {50 * 2 ** k for k in range(8)}  # extra timeline frames in the first epoch: 50, 100, 200, ...
MAX_TIMELINE_FRAMES = 60  # a frame of 64 colour faces at 32 px is ~135 KB of PNG: 60 keep the strip under 10 MB


def timeline_picks(epochs: list[float], most: int = MAX_TIMELINE_FRAMES) -> list[int]:
    """The frames a shipped timeline keeps (indices): all of them when they fit; otherwise every frame of
    the first epoch (where learning is fastest) and the later ones spread evenly, the last always."""
    if len(epochs) <= most:
        return list(range(len(epochs)))
    early = [i for i, epoch in enumerate(epochs) if epoch <= 1]
    later = range(len(early), len(epochs))
    keep = most - len(early)
    return early + sorted({later[round(k * (len(later) - 1) / (keep - 1))] for k in range(keep)})


def snapshot_inputs(cfg: GANConfig, seed: int):
    """The fixed noise (and labels) whose images form the per-epoch timeline."""
    n = 10 * 8 if cfg.num_classes else 64
    z = torch.randn(n, cfg.z_dim, generator=make_generator(seed + 7919))
    labels = torch.arange(cfg.num_classes).repeat_interleave(8) if cfg.num_classes else None
    return z, labels


def snapshot(G: Generator, z, labels) -> torch.Tensor:
    """One timeline frame: the fixed batch as a uint8 grid [C, H, W] (eight images a row)."""
    grid = pil_to_tensor(image_grid(generate(G, z, labels), nrow=8))[0, :G.cfg.channels]
    return (grid * 255).round().to(torch.uint8)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=sorted(PRESETS), default="dcgan")
    parser.add_argument("--data", choices=["fashion", "faces", "celeba"], default="fashion")
    parser.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST IDX files, or with CelebA")
    parser.add_argument("--faces", type=int, default=12000, help="how many synthetic faces to draw")
    parser.add_argument("--limit", type=int, default=None, help="CelebA: use only the first N training images")
    parser.add_argument("--download", action="store_true", help="celeba: fetch it into --data-dir first")
    parser.add_argument("--image-size", type=int, default=None, help="default: 32 (fashion), 64 (faces, celeba)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--z-dim", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, shared by all processes")
    parser.add_argument("--lr", type=float, default=None, help="both networks' (default: 2e-4, stylegan 2e-3)")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of G's weights (0: off)")
    parser.add_argument("--note", default="", help="a sentence for the model card (why this budget, ...)")


def default_out(args) -> Path:
    return shipped_path("gan", f"{args.model.replace('-', '')}_{args.data}")


def train_main(args) -> Path:
    from core.engine import TrainingRun

    out = Path(args.out) if args.out else default_out(args)
    size = args.image_size or (32 if args.data == "fashion" else 64)
    cfg_changes, train_changes = PRESETS[args.model]
    cfg = GANConfig(image_size=size, channels=1 if args.data == "fashion" else 3, z_dim=args.z_dim,
                    width=args.width, **cfg_changes)
    learning_rates = {"lr_g": args.lr, "lr_d": args.lr} if args.lr else {}
    tcfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, ema_decay=args.ema,
                       **{**train_changes, **learning_rates})
    if cfg.num_classes and args.data != "fashion":
        raise ValueError("The conditional GAN is trained on Fashion-MNIST's 10 classes.")
    run = TrainingRun(args, out, global_batch=args.batch_size)
    run.refuse_download_in_many(args.download)
    data = load_data(args.data, size, args.data_dir, args.faces, args.limit, args.download)
    return train(cfg, tcfg, data, out, run, note=args.note)


def train(cfg: GANConfig, tcfg: TrainConfig, data: ImageData, out: Path, run=None, note: str = "") -> Path:
    """Train until tcfg.epochs or the run's --minutes; writes the checkpoint each epoch and at the end.

    `run` (a core.engine.TrainingRun) brings the device, the processes, the resume state and the
    command lines for the card; without one, this process alone, from scratch. tcfg.batch_size is the
    global batch: each of the run's processes trains on batch_size / processes images of its own shard."""
    from core.engine import TrainingRun

    out = Path(out)
    run = run or TrainingRun(SimpleNamespace(), out, global_batch=tcfg.batch_size)
    seed, batch = run.seed, run.per_rank(tcfg.batch_size)
    mine = run.shard(len(data), "images")
    # The same number of steps on every process (the shards differ by at most one image).
    steps_per_epoch = len(data) // run.world_size // batch
    if not steps_per_epoch:
        raise ValueError(f"{len(data)} images do not fill one batch of {tcfg.batch_size}"
                         f"{f' on {run.world_size} processes' if run.world_size > 1 else ''}: "
                         f"use a smaller --batch-size or more images.")
    G, D = networks(cfg)
    G_net, D_net = run.wrap(G), run.wrap(D)  # the step calls these; EMA, snapshots and saves use G and D
    opt_g = torch.optim.Adam(G.parameters(), tcfg.lr_g, betas=(tcfg.beta1, tcfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), tcfg.lr_d, betas=(tcfg.beta1, tcfg.beta2))
    ema = copy.deepcopy(G)
    gen = run.generator("latents and label noise")
    state = {"history": [], "frames": [], "frame_steps": []}
    if run.resumed:
        resume = run.resumed
        G.load_state_dict(resume["G"]), D.load_state_dict(resume["D"]), ema.load_state_dict(resume["ema"])
        opt_g.load_state_dict(resume["opt_g"]), opt_d.load_state_dict(resume["opt_d"])
        state = {k: resume[k] for k in state}
    total = steps_per_epoch * tcfg.epochs
    fixed_z, fixed_labels = snapshot_inputs(cfg, seed)

    def save():
        run.save_state({"G": G.state_dict(), "D": D.state_dict(), "ema": ema.state_dict(),
                        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), **state})

    def shipped_generator():
        # The averaged weights are smoother than the live ones; without EMA ship G itself.
        ship = copy.deepcopy(ema if tcfg.ema_decay else G)
        recalibrate_batch_norm(ship, make_generator(seed + 1))
        return ship

    def record_frame(ship):
        state["frames"].append(snapshot(ship, fixed_z, fixed_labels))
        state["frame_steps"].append(run.step)

    def write_checkpoint(ship):
        # Every process builds the card (it gathers their weight checksums); rank 0 writes.
        epochs = [round(step / steps_per_epoch, 2) for step in state["frame_steps"]]
        picks = timeline_picks(epochs)  # the file keeps these; the run keeps every frame, so a resume thins afresh
        frames = torch.stack([state["frames"][i] for i in picks]) if state["frames"] else torch.zeros(0)
        card = run.card(data=data.description, data_files=data.files, model=nn.ModuleList([G, D]),
                        metrics={k: v for k, v in state["history"][-1].items() if k != "step"}
                        if state["history"] else {},
                        epochs=round(run.step / steps_per_epoch, 2), training=asdict(tcfg), bf16_autocast=run.bf16,
                        class_names=data.class_names if cfg.num_classes else None, notes=note,
                        parameters={"generator": sum(p.numel() for p in G.parameters()),
                                    "critic": sum(p.numel() for p in D.parameters())},
                        curves=state["history"],
                        timeline={"file": out.stem + ".timeline.png", "steps": [state["frame_steps"][i] for i in picks],
                                  "epochs": [epochs[i] for i in picks],
                                  "frame_height": int(frames.shape[-2]) if len(frames) else 0})
        run.save_model(ship, cfg, card, half=True)
        if run.is_main and len(frames):  # the frames stacked top to bottom, one PNG the tab slices by epoch
            strip = torch.cat(list(frames), dim=1).float() / 255
            tensor_to_pil(strip).save(out.with_name(out.stem + ".timeline.png"), optimize=True)

    if not state["frames"]:
        record_frame(shipped_generator())  # step 0: pure noise, the start of the story
    window: list[dict] = []

    def steps():
        for step in range(run.step, total):
            epoch, i = divmod(step, steps_per_epoch)
            order = mine[torch.randperm(len(mine), generator=make_generator(seed * 1000 + epoch))]
            real, labels = data.batch(order[i * batch:(i + 1) * batch])
            real = real.to(run.device)
            labels = labels.to(run.device) if (labels is not None and cfg.num_classes) else None
            G.train(), D.train()
            logs = train_step(G_net, D_net, opt_g, opt_d, real, labels, tcfg, gen, cfg, run.autocast, step)
            if tcfg.ema_decay:  # warm-up: early on, the average must not remember the random start
                ema_update(ema, G, min(tcfg.ema_decay, (1 + step) / (10 + step)))
            yield {"step": step + 1, **logs}

    for event in run.loop(steps(), save, total=total, desc=f"gan {out.stem}"):
        window.append(event)
        step = event["step"]
        if not math.isfinite(event["loss_d"] + event["loss_g"]):
            raise RuntimeError(f"Training diverged at step {step} (loss is not finite).")
        if step % 25 == 0 or step == total:  # curve points: the mean over the window and over the processes
            # a lazily computed term (R1) is in some events only: each mean is over the events that have it
            values = {k: [e[k] for e in window if k in e] for k in dict.fromkeys(k for e in window for k in e)}
            state["history"].append({"step": step, **{k: round(run.mean(sum(v) / len(v)), 4)
                                                      for k, v in values.items() if k != "step"}})
            window = []
        if step % steps_per_epoch == 0 or (step < steps_per_epoch and step in EARLY_FRAMES):
            ship = shipped_generator()
            record_frame(ship)
            if step % steps_per_epoch == 0:
                write_checkpoint(ship)
    ship = shipped_generator()
    if state["frame_steps"][-1] != run.step:  # stopped between epochs: the last frame shows what is shipped
        record_frame(ship)
        save()  # so that a resumed run's timeline keeps it
    write_checkpoint(ship)
    run.log(f"{run.step} steps, {run.step / steps_per_epoch:.2f} epochs, {run.elapsed_s / 60:.1f} min this model, "
            f"{run.world_size} process(es): {run.hardware[0]}")
    run.finish()
    return out


# --- loading shipped generators -------------------------------------------------------------

def load_generator(ckpt, device="cpu") -> Generator:
    """The checkpoint's generator on `device`, in eval mode (the tab's cached loader passes the app's device)."""
    from core.checkpoints import build_model
    from core.stylegan import StyleGenerator

    style = ckpt.config.get("architecture") == "style"
    return build_model(ckpt, StyleGenerator if style else Generator, GANConfig).to(device)
