"""Variational autoencoders: the model, its loss, training, and the latent-space tools of the VAE tab.

A VAE encodes an image to a Gaussian q(z|x) = N(mu, diag(exp(logvar))) instead of a point, samples
z = mu + sigma * eps (the reparameterisation trick: the randomness is an input, so gradients flow
through mu and sigma), and decodes z back to an image. The loss is the negative ELBO, with a weight
beta on its KL term:

    loss = reconstruction + beta * KL(q(z|x) || N(0, I))

reconstruction is the binary cross-entropy summed over pixels (nats per image). beta = 1 is the true
ELBO; beta > 1 pulls codes harder towards the prior, trading sharpness for a smoother, fuller latent
space that decodes well everywhere. Foster's book writes the same trade-off as a weight on a
per-pixel mean; "beta = 500" there is beta = 32 * 32 / 500 = 2.05 here for 32x32 Fashion-MNIST.
The faces use beta = 0.25: a mouth's curve or a pair of glasses covers a few dozen of 4,096 pixels,
and with beta = 1 a short CPU training left them out of the code (blurry mouths, a smile vector with
almost no effect); a cheaper KL lets the encoder keep them. Even so, pixel cross-entropy hardly
notices a missing smile, and the decoder drew every mouth as the same faint smear; the faces model is
therefore trained with one more term, a feature-consistency loss (feature_loss: compare what a frozen
ImageNet network sees in the original and in the reconstruction), which makes thin features matter.

Latent-space tools: attribute vectors (mean code of images with an attribute minus the mean without,
Foster's smile vector), interpolation (core.latent), and per-dimension KL, which tells which of the
200 face dimensions the model actually uses (the rest stay at the prior and decode to nothing).

    python -m core.train vae --dataset fashion            # 2-D latent map (assets/checkpoints/vae/fashion_2d.pt)
    python -m core.train vae --dataset faces              # 200-D synthetic faces (assets/checkpoints/vae/faces_200d.pt)
    python -m core.train vae --dataset celeba --data-dir ~/data/celeba --out runs/celeba.pt
    python -m core.train vae --dataset fashion16k4 --minutes 8 --threads 1   # assets/checkpoints/vae/fashion16_k4.pt
    torchrun --nproc_per_node=2 -m core.train vae --dataset celeba --data-dir ~/data/celeba --batch-size 256

Likelihood against the PixelCNN: with `levels = K` the decoder ends in K logits per pixel, a categorical
p(x|z) over the same K intensity levels a PixelCNN predicts, so the ELBO and the importance-weighted
bound (bits_per_dim_bounds) are bounds on the same discrete p(x) whose exact value a PixelCNN reports.

Models live on any device; the functions here take and return CPU tensors (codes, images) and move
them to the model's device and back, so the tab never thinks about devices.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core import latent
from core.checkpoints import build_model, command_history, load_shipped, start_from
from core.registry import shipped_path
from core.runtime import autocast, make_generator

DEFAULT_ATTRIBUTE_STRENGTH = 1.5  # multiples of an attribute vector added by default (the tab's sliders span -4..4)


@dataclass
class VAEConfig:
    image_size: int = 32
    channels: int = 1
    latent_dim: int = 2
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels of each stride-2 stage
    levels: int = 0  # 0: Bernoulli decoder on [0, 1] pixels; K >= 2: a softmax over K levels per pixel

    def __post_init__(self):
        self.widths = list(self.widths)
        if self.levels == 1 or not 0 <= self.levels <= 256:
            raise ValueError(f"levels must be 0 (pixels in [0, 1]) or between 2 and 256, not {self.levels}.")
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"Image size {self.image_size} must be divisible by 2^{len(self.widths)} "
                             f"(one halving per encoder stage).")


def _stage(cin, cout, transpose=False):
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return nn.Sequential(conv(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2))


def conv_encoder(config: VAEConfig) -> tuple[nn.Sequential, int]:
    """Stride-2 conv stages that halve the image each time, flattened: (the stack, its output length).
    The VAE and the plain autoencoder (core.autoencoder) share it, so only the loss tells them apart."""
    w = config.widths
    bottom = config.image_size // 2 ** len(w)  # spatial size after the last stage
    stack = nn.Sequential(*[_stage(cin, cout) for cin, cout in zip([config.channels] + w[:-1], w)], nn.Flatten())
    return stack, w[-1] * bottom ** 2


def conv_decoder(config: VAEConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """The mirror of conv_encoder: (a linear layer from a code to the smallest feature map, transposed-conv
    stages back to pixel logits)."""
    w = config.widths
    flat = w[-1] * (config.image_size // 2 ** len(w)) ** 2
    ups = [_stage(cin, cout, transpose=True) for cin, cout in zip(w[::-1][:-1], w[::-1][1:])]
    out = config.channels * (config.levels or 1)  # K logits per pixel and channel for a categorical decoder
    return (nn.Sequential(nn.Linear(config.latent_dim, flat), nn.LeakyReLU(0.2)),
            nn.Sequential(*ups, nn.ConvTranspose2d(w[0], out, 4, stride=2, padding=1)))


class VAE(nn.Module):
    """Convolutional encoder (stride-2 stages) -> (mu, logvar); decoder mirrors it back to pixels."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.bottom = config.image_size // 2 ** len(config.widths)
        self.encoder, flat = conv_encoder(config)
        self.to_mu = nn.Linear(flat, config.latent_dim)
        self.to_logvar = nn.Linear(flat, config.latent_dim)
        self.from_z, self.decoder = conv_decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-30, 20)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, self.config.widths[-1], self.bottom, self.bottom)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [N, latent_dim] -> images [N, C, H, W] in [0, 1]."""
        return mean_image(self.config, self.decode_logits(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        return self.decode_logits(reparameterize(mu, logvar, generator)), mu, logvar


def level_logits(config: VAEConfig, logits: torch.Tensor) -> torch.Tensor:
    """A categorical decoder's output [N, C*K, H, W] -> [N, K, C, H, W] (the class axis where cross_entropy wants it)."""
    n, _, h, w = logits.shape
    return logits.view(n, config.channels, config.levels, h, w).transpose(1, 2)


def mean_image(config: VAEConfig, logits: torch.Tensor) -> torch.Tensor:
    """The decoder's mean picture in [0, 1]: sigmoid(logits), or sum_k p_k * k / (K-1) over the K levels."""
    if not config.levels:
        return torch.sigmoid(logits)
    probs = level_logits(config, logits).softmax(1)
    grey = torch.arange(config.levels, device=logits.device, dtype=probs.dtype) / (config.levels - 1)
    return (probs * grey.view(1, -1, 1, 1, 1)).sum(1)


def as_levels(config: VAEConfig, x: torch.Tensor) -> torch.Tensor:
    """Inputs in [0, 1] (level / (K-1)) back to the integer levels 0..K-1."""
    return (x * (config.levels - 1)).round().long().clamp(0, config.levels - 1)


def reconstruction_nats(config: VAEConfig, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image [N], in nats, summed over pixels: binary cross-entropy for the Bernoulli
    decoder, the K-way cross-entropy of each pixel's level for the categorical one."""
    if not config.levels:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return F.cross_entropy(level_logits(config, logits), as_levels(config, x), reduction="none").flatten(1).sum(1)


def reparameterize(mu, logvar, generator: torch.Generator | None = None) -> torch.Tensor:
    # eps is drawn on the CPU in float32 and moved: the same seed gives the same draw on every device
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_per_dimension(mu, logvar) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each sample and dimension, in closed form: [N, D]."""
    return 0.5 * (mu * mu + logvar.exp() - 1 - logvar)


def vae_loss(model: VAE, x, beta: float, generator=None, feature_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-image means of: loss = reconstruction + beta * kl [+ feature_weight * features] (terms logged
    separately). The feature term is only for training; the ELBO never includes it."""
    logits, mu, logvar = model(x, generator)
    config = getattr(model, "module", model).config  # through a DistributedDataParallel wrapper too
    recon = reconstruction_nats(config, logits, x).mean()
    kl = kl_per_dimension(mu, logvar).sum(1).mean()
    terms = {"loss": recon + beta * kl, "recon": recon, "kl": kl}
    if feature_weight:
        terms["features"] = feature_loss(mean_image(config, logits), x)
        terms["loss"] = terms["loss"] + feature_weight * terms["features"]
    return terms


# Early EfficientNet-Lite0 activations: at 64 px they are 32x32 and 16x16 maps of edges and
# strokes, fine enough to see a mouth's curve or a glasses frame.
FEATURE_LAYERS = ("stem", "block1", "block3")


def feature_loss(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature-consistency loss (Hou et al. 2017, "Deep Feature Consistent VAE"): the squared distance
    between a frozen ImageNet network's activations of the reconstruction and of the original,
    mean over each layer, summed over FEATURE_LAYERS, averaged over images.

    Why: pixel cross-entropy barely notices a thin feature. A smile is a few dozen darker pixels
    bent up at the corners. The pixel-loss faces model reconstructed within 64 nats of the best
    possible cross-entropy (~7,030 nats per image) while drawing every mouth as the same faint
    smear: 4 in 5 smiling faces came back not smiling, so the smile vector had nothing to move.
    In edge-detecting features the same mouth is a strong, localised pattern."""
    from core.backbones import load_backbone

    backbone = load_backbone("efficientnet_lite0", images.device)
    if images.shape[1] == 1:  # grayscale: the same image in all three colour channels
        images, target = images.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
    if min(images.shape[-2:]) < 32:  # the backbone's smallest input
        images, target = (F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
                          for t in (images, target))
    with torch.no_grad():
        wanted = backbone(target, FEATURE_LAYERS)
    got = backbone(images, FEATURE_LAYERS)
    return sum((got[k] - wanted[k]).pow(2).flatten(1).mean(1) for k in FEATURE_LAYERS).mean()


@torch.no_grad()
def evaluate(model: VAE, images, batch_size: int = 500, seed: int = 0) -> dict[str, float]:
    """Validation ELBO (beta = 1, one posterior sample, nats per image; higher is better) and its terms."""
    model.eval()
    gen, device = make_generator(seed), device_of(model)
    total = {"recon": 0.0, "kl": 0.0}
    for i in range(0, len(images), batch_size):
        x = as_float(images[i:i + batch_size]).to(device)
        terms = vae_loss(model, x, 1.0, gen)
        for k in total:
            total[k] += terms[k].item() * len(x)
    recon, kl = total["recon"] / len(images), total["kl"] / len(images)
    return {"elbo": -(recon + kl), "recon": recon, "kl": kl}


@torch.no_grad()
def log_likelihood_bounds(model: VAE, x: torch.Tensor, k: int, generator: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two lower bounds on log p(x) for each image of x (float [N, C, H, W] in [0, 1]), in nats, [N] each,
    from the same k posterior draws z_j = mu + sigma * eps_j (eps drawn on the CPU from `generator`)."""
    if k < 1:
        raise ValueError(f"k must be at least 1 posterior sample, not {k}.")
    model.eval()
    device = device_of(model)
    x = x.to(device)
    mu, logvar = model.encode(x)
    eps = torch.randn((k, *mu.shape), generator=generator).to(device)             # [k, N, D]
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decode_logits(z.flatten(0, 1))
    log_px_z = -reconstruction_nats(model.config, logits, x.repeat(k, 1, 1, 1)).view(k, -1)  # log p(x|z_j)
    # log p(z_j) - log q(z_j|x) for N(0, I) and N(mu, sigma^2), the 0.5 log 2pi terms cancelling:
    log_prior_over_q = (-0.5 * z ** 2 + 0.5 * eps ** 2 + 0.5 * logvar).sum(-1)
    kl = kl_per_dimension(mu, logvar).sum(-1)
    elbo = log_px_z.mean(0) - kl                      # log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z))
    log_w = log_px_z + log_prior_over_q               # log p(x, z_j) / q(z_j|x)
    iwae = torch.logsumexp(log_w, 0) - math.log(k)    # log p(x) >= E[log (1/k) sum_j p(x,z_j)/q(z_j|x)]
    return elbo.cpu(), iwae.cpu()


def bits_per_dim_bounds(model: VAE, levels: torch.Tensor, k: int = 100, seed: int = 0,
                        batch_size: int | None = None) -> tuple[float, float]:
    """(ELBO, IWAE with k samples) as bits per dimension, -bound / (C*H*W) / ln 2, averaged over the
    images of `levels` (integers 0..K-1 [N, C, H, W], as core.pixelcnn.load_levels gives): upper bounds
    on the exact -log2 p(x) / dims a PixelCNN reports, the IWAE one tighter (it grows towards log p(x)
    as k grows; k = 1 is the ELBO with a sampled KL)."""
    K = model.config.levels
    if not K:
        raise ValueError("Bits per dimension need a VAE with a categorical decoder (levels > 0); "
                         "this one models pixels in [0, 1].")
    if levels.min() < 0 or levels.max() >= K:
        raise ValueError(f"The images must hold levels 0..{K - 1}.")
    generator = make_generator(seed)
    batch_size = batch_size or max(1, 10000 // k)  # about 10,000 decodes per batch
    elbo = iwae = 0.0
    for i in range(0, len(levels), batch_size):
        e, w = log_likelihood_bounds(model, levels[i:i + batch_size].float() / (K - 1), k, generator)
        elbo, iwae = elbo + e.sum().item(), iwae + w.sum().item()
    dims = levels[0].numel() * len(levels)
    return -elbo / dims / math.log(2), -iwae / dims / math.log(2)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """Stored uint8 images -> float in [0, 1]; float images pass through."""
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives (from its buffers when it has no parameters, as PCA)."""
    return next(itertools.chain(model.parameters(), model.buffers())).device


@torch.no_grad()
def encode_all(model: VAE, images, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of every image (uint8 or float in [0, 1]), in batches, on the CPU."""
    model.eval()
    parts = [model.encode(as_float(images[i:i + batch_size]).to(device_of(model)))
             for i in range(0, len(images), batch_size)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Codes [N, latent_dim] -> images [N, C, H, W] in [0, 1] on the CPU, decoded on the model's device
    (in bf16 on CUDA: the pixels move a little and nothing is chosen by an argmax; tests/test_vae.py's
    cuda_checks_vae bounds the difference from the CPU's picture)."""
    model.eval()
    device = device_of(model)
    with autocast(device):
        return model.decode(z.to(device)).float().cpu()


def random_codes(n: int, latent_dim: int, generator: torch.Generator, spread=None) -> torch.Tensor:
    """n codes from the prior N(0, I), or, given `spread` (the per-dimension std of the training codes),
    from N(0, diag(spread^2)). With beta < 1 the training codes do not fill the prior: unused dimensions
    shrink towards 0 and used ones spread wider, so prior draws land where the decoder never trained."""
    z = torch.randn(n, latent_dim, generator=generator)
    return z * spread if spread is not None else z


@torch.no_grad()
def sample(model: VAE, n: int, generator: torch.Generator, spread=None) -> torch.Tensor:
    """n images decoded from random codes (see random_codes), on the CPU."""
    return decode(model, random_codes(n, model.config.latent_dim, generator, spread))


def attribute_vectors(codes: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For each attribute: mean code of the images that have it minus the mean of those that don't."""
    vectors = {}
    for name, has in labels.items():
        has = has.bool()
        if has.all() or not has.any():
            continue  # no contrast to measure
        vectors[name] = codes[has].mean(0) - codes[~has].mean(0)
    return vectors


def apply_attributes(z: torch.Tensor, vectors: dict[str, torch.Tensor], strengths: dict[str, float]) -> torch.Tensor:
    """z + sum of strength * vector; unknown names are refused, strengths clamped to [-4, 4]."""
    z = z.clone()
    for name, strength in strengths.items():
        if name not in vectors:
            raise ValueError(f"There is no attribute vector called {name!r}.")
        z = z + max(-4.0, min(4.0, float(strength))) * vectors[name]
    return z


def active_dimensions(mu, logvar) -> torch.Tensor:
    """Mean KL per latent dimension over a data set, [D]; dimensions near 0 are unused by the model."""
    return kl_per_dimension(mu, logvar).mean(0)


def normal_grid(n: int, margin: float = 0.05) -> torch.Tensor:
    """An n x n grid of 2-D codes [n * n, 2], evenly spaced in probability under the prior
    (inverse normal CDF of margin .. 1 - margin), so each cell covers as much prior mass as
    any other (Deep Learning with Python's decoded latent plane). Rows go from high z2 to low."""
    n = max(2, min(30, int(n)))
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(margin, 1 - margin, n))
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)


def morph(model: VAE, z0, z1, steps: int, mode: str = "slerp") -> torch.Tensor:
    """Decoded frames walking from code z0 to z1 (inclusive): [steps, C, H, W], on the CPU."""
    return decode(model, latent.interpolate(z0.reshape(1, -1), z1.reshape(1, -1), steps, mode)[:, 0])


# --- shipped models ---------------------------------------------------------------------------

SHIPPED = {"fashion": "fashion_2d", "faces": "faces_200d"}
LIKELIHOOD_MODEL = "fashion16_k4"  # the categorical VAE compared with the PixelCNNs (bench.likelihood)


@functools.lru_cache(maxsize=None)
def load_vae(name: str):
    """(model, checkpoint) of a shipped VAE, built once per process, moved to the app's device and shared
    read-only."""
    from core.runtime import app_device

    ckpt = load_shipped("vae", name)
    return build_model(ckpt, VAE, VAEConfig).requires_grad_(False).to(app_device()), ckpt


# --- data ---------------------------------------------------------------------------------------

def load_dataset(args) -> dict:
    """Training and validation images (uint8 [N, C, H, W], on the CPU) plus what the extras need, per --dataset."""
    if args.dataset in ("fashion", "fashion16k4"):
        from core.data.fashion_mnist import provenance

        files = [provenance("train", args.data_dir), provenance("test", args.data_dir)]
    if args.dataset == "fashion":
        from core.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_float

        to_uint8 = lambda x: (to_float(x, 32) * 255).round().to(torch.uint8)
        train_x, _ = load_fashion_mnist("train", args.data_dir)
        test_x, test_y = load_fashion_mnist("test", args.data_dir)
        return {"train": to_uint8(train_x), "valid": to_uint8(test_x), "valid_labels": test_y,
                "class_names": CLASS_NAMES, "files": files, "description": "Fashion-MNIST train (60k), validated on "
                "the test set (10k), zero-padded to 32x32"}
    if args.dataset == "fashion16k4":  # the PixelCNNs' data: 16x16, K = 4 levels, scaled to [0, 1]
        from core.pixelcnn import load_levels

        k = DATASET_DEFAULTS["fashion16k4"]["levels"]
        train_x, test_x = (load_levels(split, 16, k, args.data_dir).float() / (k - 1) for split in ("train", "test"))
        return {"train": train_x, "valid": test_x, "files": files, "description": "Fashion-MNIST train (60k), validated on the test "
                "set (10k), resized to 16x16 and quantised to 4 levels (core.pixelcnn.load_levels), input = level divided by 3"}
    if args.dataset == "faces":
        from core.data.faces import face_split, provenance

        def faces(split, n):
            batches = [face_split(split, min(2000, n - i), size=args.image_size, start=i) for i in range(0, n, 2000)]
            images = torch.cat([(b.images * 255).round().to(torch.uint8) for b in batches])
            labels = {k: torch.cat([b.labels[k] for b in batches]) for k in batches[0].labels}
            return images, labels
        train_x, train_labels = faces("train", args.train_size)
        valid_x, valid_labels = faces("validation", args.valid_size)
        return {"train": train_x, "train_labels": train_labels, "valid": valid_x, "valid_labels": valid_labels,
                "files": [provenance("train", args.train_size, args.image_size),
                          provenance("validation", args.valid_size, args.image_size)],
                "description": f"synthetic faces (core.data.faces): train split faces 0-{args.train_size - 1}, "
                f"validation split faces 0-{args.valid_size - 1}, {args.image_size}x{args.image_size}"}
    from core.data import data_record
    from core.data.celeba import SOURCE, load_celeba

    train_x, train_labels = load_celeba(args.data_dir, "train", args.image_size, limit=args.train_size,
                                        download=args.download)
    valid_x, valid_labels = load_celeba(args.data_dir, "validation", args.image_size, limit=args.valid_size)
    if len(valid_x) == 0:  # no partition file: hold out the last images
        cut = max(1, len(train_x) // 10)
        train_x, valid_x = train_x[:-cut], train_x[-cut:]
        valid_labels = {k: v[-cut:] for k, v in train_labels.items()}
        train_labels = {k: v[:-cut] for k, v in train_labels.items()}
    description = f"CelebA aligned crops, centre-cropped to {args.image_size}x{args.image_size}"
    return {"train": train_x, "train_labels": train_labels, "valid": valid_x, "valid_labels": valid_labels,
            "files": [data_record(f"{description}: {len(train_x)} for training", SOURCE, train_x, key="sha256_of_images"),
                      data_record(f"{description}: {len(valid_x)} for validation", SOURCE, valid_x, key="sha256_of_images")],
            "description": description}


# --- training -------------------------------------------------------------------------------------

DATASET_DEFAULTS = {
    "fashion": {"latent": 2, "widths": "16,32,64", "beta": 32 * 32 / 500, "image_size": 32, "epochs": 10,
                "feature_weight": 0.0},
    "faces": {"latent": 200, "widths": "24,48,96,192", "beta": 0.25, "image_size": 64, "epochs": 30,
              "feature_weight": 2.0},
    "celeba": {"latent": 200, "widths": "24,48,96,192", "beta": 0.25, "image_size": 64, "epochs": 10,
               "feature_weight": 2.0},
    # beta = 1: the true ELBO, the bound bits_per_dim_bounds reports
    "fashion16k4": {"latent": 16, "widths": "32,64", "beta": 1.0, "image_size": 16, "epochs": 100,
                    "feature_weight": 0.0, "levels": 4},
}
OUT_NAMES = {"fashion": "fashion_2d", "fashion16k4": LIKELIHOOD_MODEL}  # every other data set: faces_200d


def config_dict(config: VAEConfig) -> dict:
    """The config as checkpoints store it: without `levels` when it is 0, so the Bernoulli models'
    configs stay exactly what the shipped checkpoints hold (and --init-from them still matches)."""
    values = asdict(config)
    if not values["levels"]:
        del values["levels"]
    return values


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS), default="fashion")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder or CelebA folder")
    parser.add_argument("--latent", type=int, default=None, help="latent dimensions (fashion 2, faces 200)")
    parser.add_argument("--widths", default=None, help="channels per encoder stage, comma-separated")
    parser.add_argument("--beta", type=float, default=None, help="weight of the KL term (fashion 2.05, faces 0.25)")
    parser.add_argument("--feature-weight", type=float, default=None,
                        help="weight of the EfficientNet-Lite0 feature loss (fashion 0, faces 2; see feature_loss)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=40000, help="faces/CelebA images to train on")
    parser.add_argument("--valid-size", type=int, default=2000, help="faces/CelebA validation images")
    parser.add_argument("--init-from", default=None,
                        help="start from this VAE checkpoint's weights (fine-tuning, e.g. with a new loss); "
                             "its card's commands head the new card's")
    parser.add_argument("--download", action="store_true",
                        help="celeba: fetch CelebA through torchvision into --data-dir when it is not there")


def train_epochs(model: nn.Module, train_x, loss, *, epochs: int, batch_size: int, optimizer,
                 generator: torch.Generator, progress: dict, steps_per_epoch: int | None = None, step: int = 0,
                 network: nn.Module | None = None, autocast=contextlib.nullcontext):
    """The training loop of the VAE and of the autoencoders, as a generator: an event per step
    ({"step", "epoch", "loss", and the loss's other terms}) and, after each epoch, {"step", "epoch_done",
    "train": mean terms over the epoch}. `loss(network, x, generator=...)` returns the terms (a dict with
    "loss"), e.g. functools.partial(vae_loss, beta=2.05).

    `network` is what the step calls (the model, or its DistributedDataParallel wrapper, which averages
    the gradients over the processes); `batch_size` is this process's share of the batch; `train_x`
    (uint8, on the CPU) this process's share of the images. `progress` ({"epoch", "batch", "sums"}) is
    kept up to date in place, so a save between two events can resume from it: a run resumed
    mid-epoch finishes that epoch on a fresh shuffle from its restored random stream."""
    network = network or model
    device = device_of(model)
    steps_per_epoch = steps_per_epoch or math.ceil(len(train_x) / batch_size)
    while progress["epoch"] < epochs:
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(progress["batch"], steps_per_epoch):
            x = as_float(train_x[order[i * batch_size:(i + 1) * batch_size]]).to(device)
            with autocast():
                terms = loss(network, x, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            step += 1
            values = {k: v.item() for k, v in terms.items()}
            progress["batch"] = i + 1
            progress["sums"] = {k: progress["sums"].get(k, 0.0) + v for k, v in values.items()}
            yield {"step": step, "epoch": progress["epoch"], **values}
        means = {k: v / steps_per_epoch for k, v in progress["sums"].items()}
        progress.update(epoch=progress["epoch"] + 1, batch=0, sums={})
        yield {"step": step, "epoch_done": progress["epoch"], "train": means}


def fit_epochs(run, model: nn.Module, train_x, loss, *, epochs: int, lr: float, desc: str, validate,
               extra_state: dict | None = None) -> list[dict]:
    """The epoch loop the VAE and the autoencoders (core.autoencoder) share, on a core.engine.TrainingRun:
    Adam, this process's share of the images, a resumable save every few minutes (with `extra_state`),
    and after each epoch a curve point of the train means and `validate()` (its keys prefixed "valid_").
    `model` already holds its starting weights (a resumed run's included). Returns the card's curves: a
    run stopped by --minutes ends mid-epoch, and its last point counts epochs as data seen, e.g. 4.26
    (the resume state leaves that point out: the resumed run finishes the epoch)."""
    state = run.resumed
    network = run.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    progress = state["progress"] if state else {"epoch": 0, "batch": 0, "sums": {}}
    curves = state["curves"] if state else []
    # Every process takes the same number of steps (the smallest share decides), or DDP would wait forever.
    steps_per_epoch = math.ceil(len(train_x) // run.world_size / run.batch)
    train_x = train_x[run.shard(len(train_x), "images")]

    def curve_point(train_means: dict) -> dict:
        # Every process evaluates the same model on the same images: no process waits for another.
        run.sync_buffers(model)
        return {"epoch": round(run.step / steps_per_epoch, 2), "step": run.step, "wall_s": round(run.elapsed_s, 1),
                **{f"train_{k}": round(run.mean(v), 3) for k, v in sorted(train_means.items())},
                **{f"valid_{k}": v for k, v in validate().items()}}

    def save() -> None:
        run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": progress,
                        "curves": curves, **(extra_state or {})})

    events = train_epochs(model, train_x, loss, epochs=epochs, batch_size=run.batch, optimizer=optimizer,
                          generator=run.generator("batches and noise"), progress=progress,
                          steps_per_epoch=steps_per_epoch, step=run.step, network=network, autocast=run.autocast)
    for event in run.loop(events, save, total=steps_per_epoch * epochs, desc=desc):
        if "epoch_done" in event:
            curves.append(curve_point(event["train"]))
            run.log(f"epoch {curves[-1]['epoch']}: " + ", ".join(f"{k} {v:.4g}" for k, v in curves[-1].items()
                                                                  if k.startswith(("train_", "valid_"))))
    return curves + ([curve_point({k: v / progress["batch"] for k, v in progress["sums"].items()})]
                     if progress["batch"] else [])


def train_main(args) -> Path:
    from core.engine import TrainingRun

    defaults = DATASET_DEFAULTS[args.dataset]
    for key in ("latent", "widths", "beta", "image_size", "epochs", "feature_weight"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    out = Path(args.out) if args.out else shipped_path("vae", OUT_NAMES.get(args.dataset, "faces_200d"))
    run = TrainingRun(args, out, global_batch=args.batch_size)  # seeds the weight initialisation
    run.refuse_download_in_many(args.download)
    data = load_dataset(args)
    config = VAEConfig(image_size=args.image_size, channels=data["train"].shape[1], latent_dim=args.latent,
                       widths=[int(w) for w in str(args.widths).split(",")], levels=defaults.get("levels", 0))
    model = VAE(config)
    state, init = run.resumed, None  # init: what the --init-from checkpoint's card says about how it was made
    if state:
        model.load_state_dict(state["model"])
        init = state.get("init")
    elif args.init_from:
        weights, init = start_from(args.init_from, config_dict(config), "VAE", ("epochs", "metrics"))
        model.load_state_dict(weights)
        run.commands = command_history(args, init)  # the checkpoint's commands head this run's
    run.log(f"{data['description']}; from step {run.step}; {run.world_size} process(es) on {run.device}")
    loss = functools.partial(vae_loss, beta=args.beta, feature_weight=args.feature_weight)
    card_curves = fit_epochs(run, model, data["train"], loss, epochs=args.epochs, lr=args.lr,
                             desc=f"vae {args.dataset}", validate=lambda: {k: round(v, 3) for k, v in evaluate(model, data["valid"]).items()},
                             extra_state={"init": init})
    path = _save(run, model, config, args, data, card_curves, init)
    run.finish()
    return path


def _save(run, model: VAE, config: VAEConfig, args, data, curves, init=None) -> Path:
    """Checkpoint + card, with the extras the tab needs (test-set codes for the map, attribute vectors).
    Every process computes them (the same numbers: run.sync_buffers); rank 0 writes."""
    run.sync_buffers(model)
    valid = evaluate(model, data["valid"])
    mu, logvar = encode_all(model, data["valid"])
    kl_dims = active_dimensions(mu, logvar)
    extras = {"kl_per_dim": kl_dims.float()}
    metrics = {"valid_elbo": round(valid["elbo"], 2), "valid_recon": round(valid["recon"], 2),
               "valid_kl": round(valid["kl"], 2), "beta": args.beta, "feature_weight": args.feature_weight,
               "active_dims_kl_over_0.1": int((kl_dims > 0.1).sum())}
    if config.levels:  # a bound on the discrete likelihood: -ELBO / (C*H*W) / ln 2, comparable with a PixelCNN's
        metrics["valid_elbo_bits_per_dim"] = round(-valid["elbo"] / data["valid"][0].numel() / math.log(2), 4)
    if "class_names" in data:  # the 2-D map: every test image's code and class
        extras.update(map_codes=mu.half(), map_labels=data["valid_labels"].to(torch.uint8),
                      class_names=list(data["class_names"]))
    if "train_labels" in data:  # attribute vectors from the training codes
        train_mu, _ = encode_all(model, data["train"][:10000])
        labels = {k: v[:10000] for k, v in data["train_labels"].items()}
        vectors = attribute_vectors(train_mu, labels)
        extras.update(attribute_names=list(vectors), attribute_vectors=torch.stack(list(vectors.values())).half(),
                      code_std=train_mu.std(0).float())
    # Readable without torch, so the tab can label its sliders while the app is being built.
    order = kl_dims.argsort(descending=True)[:12]
    details = {"most_active_dims": order.tolist(), "most_active_kl": [round(kl_dims[i].item(), 3) for i in order],
               "attribute_names": list(extras.get("attribute_names", []))}
    card = run.card(data=data["description"], data_files=data["files"], model=model, metrics=metrics, init=init,
                    epochs=curves[-1]["epoch"] if curves else 0, batch_size=args.batch_size, learning_rate=args.lr,
                    bf16_autocast=run.bf16, latent=details, curves=curves)
    return run.save_model(model, config_dict(config), card, extras, half=True)
