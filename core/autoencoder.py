"""From PCA to the autoencoder: the two latent spaces that come before the VAE (core/vae.py).

PCA finds the K orthonormal directions along which the centred images vary most, from the singular
value decomposition of the centred data matrix X (N images x D pixels):

    X - mean = U S V^T             rows of V^T: the principal directions ("eigen-clothes")
    z = (x - mean) V_K             encode: the coordinates along the first K directions
    x' = mean + z V_K^T            decode: a weighted sum of eigen-clothes, so linear in z

The data's variance along direction i is S_i^2 / (N - 1), and no other K-dimensional linear code
reconstructs the images with a smaller squared error (Eckart-Young).

An autoencoder replaces both linear maps by networks, here the very encoder and decoder of the 2-D
VAE (core.vae.conv_encoder / conv_decoder), and trains them only to reconstruct:

    loss = -log p(x | z = encoder(x))      the VAE's reconstruction term, without its KL term or sampling

Nothing asks the codes to fill any particular region: they spread into streaks with gaps between them,
on a scale of their own, so there is no prior to sample from. The nearest thing is a Gaussian fitted to
the codes. In two dimensions it still lands mostly near codes the decoder trained on; with more
dimensions the codes fill a thin, curved part of the space, and random codes fall off it and decode to
blends that are neither garment nor reconstruction (bench/autoencoder.py measures both). The VAE's KL
term is the fix: it pulls every posterior towards N(0, I), so the prior is where the codes are.

A denoising autoencoder sees a corrupted input and is scored against the clean image,

    loss = -log p(x | z = encoder(x + sigma * eps)),   sigma ~ U(0, max_noise) for each image,

so it cannot copy its input: it must learn what clothes look like.

    python -m core.train autoencoder --kind pca                 # assets/checkpoints/autoencoder/pca_32d.pt
    python -m core.train autoencoder --latent 2 --epochs 5      # plain_2d.pt (and 1, 4, 8, 16, 32 for the curve)
    python -m core.train autoencoder --latent 32 --noise 0.5    # denoising_32d.pt
    python -m core.autoencoder figures                          # error against dimensions, the shipped figure
"""
from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.checkpoints import build_model, load_shipped
from core.registry import RECON_VS_DIMS, shipped_path
from core.runtime import make_generator
from core.vae import (VAEConfig, as_float, config_dict, conv_decoder, conv_encoder, device_of, fit_epochs,
                      reconstruction_nats)

SWEEP_DIMS = (1, 2, 4, 8, 16, 32)  # the latent sizes of the error-against-dimensions figure
DENOISING_DIMS = 32                # the denoiser is compared with the plain autoencoder of the same size
FIGURE = RECON_VS_DIMS  # .json (the numbers), .png (the plot)
EXAMPLES_FIGURE = FIGURE.with_suffix(".examples.png")  # ten test images reconstructed at each size


# --- PCA ----------------------------------------------------------------------------------------

@dataclass
class PCAConfig:
    image_size: int = 32
    channels: int = 1
    components: int = 32  # principal directions kept (at most the number of pixels)


class PCA(nn.Module):
    """Principal component analysis as a module with the autoencoders' encode/decode, its fitted values
    held in buffers (so it is saved, shipped and loaded like every other model)."""

    def __init__(self, config: PCAConfig):
        super().__init__()
        self.config = config
        pixels = config.channels * config.image_size ** 2
        if not 1 <= config.components <= pixels:
            raise ValueError(f"PCA keeps between 1 and {pixels} components, not {config.components}.")
        self.register_buffer("mean", torch.zeros(pixels))
        self.register_buffer("directions", torch.zeros(config.components, pixels))  # orthonormal rows
        self.register_buffer("variances", torch.zeros(config.components))  # the data's variance along each
        self.register_buffer("total_variance", torch.zeros(()))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> "PCA":
        """Fit to images [N, C, H, W] (uint8, or float in [0, 1]) by one SVD of the centred data."""
        x = as_float(images).flatten(1).double()  # float64: the small singular values stay accurate
        if len(x) < 2:
            raise ValueError("PCA needs at least two images.")
        mean = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)   # X - mean = U S V^T
        k = self.config.components
        if len(s) < k:
            raise ValueError(f"{len(x)} images give at most {len(s)} principal directions, not {k}.")
        self.mean.copy_(mean)
        self.directions.copy_(vt[:k])
        self.variances.copy_(s[:k] ** 2 / (len(x) - 1))                 # variance along direction i
        self.total_variance.copy_(s.pow(2).sum() / (len(x) - 1))
        return self

    def explained_variance_ratio(self) -> torch.Tensor:
        """The share of the data's total variance along each kept direction, [components]."""
        return self.variances / self.total_variance

    def encode(self, x: torch.Tensor, dims: int | None = None) -> torch.Tensor:
        """Images [N, C, H, W] (uint8, or float in [0, 1]) -> codes [N, dims]: z = (x - mean) V_dims."""
        if dims is not None and not 1 <= dims <= self.config.components:
            raise ValueError(f"This PCA keeps {self.config.components} components; it cannot give {dims}.")
        return (as_float(x).flatten(1).to(self.mean) - self.mean) @ self.directions[:dims].T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [N, dims] (any dims <= components) -> images [N, C, H, W] in [0, 1]: x' = mean + z V_dims^T,
        clipped to the pixel range like every decoder here (it only matters far from the data)."""
        c = self.config
        x = self.mean + z @ self.directions[:z.shape[1]]
        return x.clamp(0, 1).view(-1, c.channels, c.image_size, c.image_size)


# --- the autoencoder ------------------------------------------------------------------------------

class Autoencoder(nn.Module):
    """The 2-D VAE's encoder and decoder joined by a plain code: x -> z -> x (no mu, no sigma)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.levels:
            raise ValueError("The autoencoders model pixels in [0, 1] (levels = 0).")
        self.config = config
        self.bottom = config.image_size // 2 ** len(config.widths)
        self.encoder, flat = conv_encoder(config)
        self.to_code = nn.Linear(flat, config.latent_dim)
        self.from_z, self.decoder = conv_decoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_z(z).view(-1, self.config.widths[-1], self.bottom, self.bottom))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [N, latent_dim] -> images [N, C, H, W] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_logits(self.encode(x))


def add_noise(x: torch.Tensor, sigma, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + sigma * eps, eps ~ N(0, I), clipped to [0, 1]; sigma a number or one per image ([N, 1, 1, 1]).
    eps is drawn on the CPU, so a seed gives the same noise on every device."""
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    return (x + torch.as_tensor(sigma, dtype=x.dtype, device=x.device) * eps).clamp(0, 1)


def autoencoder_loss(model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None,
                     noise: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-image mean of -log p(x | z = encoder(input)) in nats: input = x for the plain autoencoder;
    for a denoising one (noise > 0) input = x + sigma * eps with sigma ~ U(0, noise) for each image."""
    inputs = x
    if noise:
        sigma = torch.rand(len(x), 1, 1, 1, generator=generator) * noise
        inputs = add_noise(x, sigma, generator)
    config = getattr(model, "module", model).config  # through a DistributedDataParallel wrapper too
    recon = reconstruction_nats(config, model(inputs), x).mean()  # the target is always the clean image
    return {"loss": recon, "recon": recon}


# --- the three latent spaces, used alike ------------------------------------------------------------

def encode_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The code of x in any of the three: PCA's coordinates, the autoencoder's z, a VAE's mean mu."""
    code = model.encode(x)
    return code[0] if isinstance(code, tuple) else code


@torch.no_grad()
def encode_all(model: nn.Module, images, batch_size: int = 1000) -> torch.Tensor:
    """Codes of every image (uint8 or float in [0, 1]), in batches, on the CPU."""
    model.eval()
    device = device_of(model)
    return torch.cat([encode_mean(model, as_float(images[i:i + batch_size]).to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def decode(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Codes -> images in [0, 1] on the CPU, whichever of the three decodes them."""
    model.eval()
    return model.decode(z.to(device_of(model))).float().cpu()


@torch.no_grad()
def reconstruction_error(model: nn.Module, images, batch_size: int = 1000, dims: int | None = None,
                         noise: float = 0.0, seed: int = 0) -> dict[str, float]:
    """Mean squared error per pixel and binary cross-entropy per image (nats) of decode(encode(x)) against
    the clean x, over `images`; `dims` keeps PCA's first directions; `noise` corrupts the inputs first."""
    model.eval()
    generator, device = make_generator(seed), device_of(model)
    squared = nats = 0.0
    for i in range(0, len(images), batch_size):
        x = as_float(images[i:i + batch_size]).to(device)
        inputs = add_noise(x, noise, generator) if noise else x
        z = model.encode(inputs, dims) if isinstance(model, PCA) else encode_mean(model, inputs)
        out = model.decode(z).clamp(1e-6, 1 - 1e-6)
        squared += (out - x).pow(2).flatten(1).mean(1).sum().item()
        nats += torch.nn.functional.binary_cross_entropy(out, x, reduction="none").flatten(1).sum(1).sum().item()
    return {"mse": squared / len(images), "bce_nats": nats / len(images)}


def fitted_gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of codes [N, D]: the nearest thing to a prior that PCA and a plain autoencoder have."""
    codes = codes.double()
    centred = codes - codes.mean(0)
    return codes.mean(0).float(), (centred.T @ centred / (len(codes) - 1)).float()


def gaussian_codes(mean: torch.Tensor, covariance: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes from N(mean, covariance): z = mean + L eps with L L^T = covariance (Cholesky)."""
    # a tiny ridge, so a flat direction (a singular covariance) still factorises
    jitter = 1e-6 * covariance.diagonal().mean().clamp(min=1e-6) * torch.eye(len(mean))
    lower = torch.linalg.cholesky(covariance.double() + jitter.double()).float()
    return mean + torch.randn(n, len(mean), generator=generator) @ lower.T


def prior(model: nn.Module, ckpt) -> tuple[torch.Tensor, torch.Tensor]:
    """Where to draw random codes for each model: a VAE's prior N(0, I); for PCA (variances along its
    directions, no correlation) and an autoencoder (the training codes' mean and covariance, stored at
    training time) the Gaussian fitted to its codes."""
    if isinstance(model, PCA):
        return torch.zeros(len(model.variances)), torch.diag(model.variances.float())
    if isinstance(model, Autoencoder):
        return ckpt.extras["code_mean"].float(), ckpt.extras["code_covariance"].float()
    d = model.config.latent_dim
    return torch.zeros(d), torch.eye(d)


# --- shipped models ---------------------------------------------------------------------------------

def shipped_name(kind: str, latent: int, noise: float = 0.0) -> str:
    return f"pca_{latent}d" if kind == "pca" else f"{'denoising' if noise else 'plain'}_{latent}d"


PCA_NAME = shipped_name("pca", max(SWEEP_DIMS))  # the shipped PCA: 32 components, enough for every size in the figure


@functools.lru_cache(maxsize=None)
def load_model(name: str):
    """(model, checkpoint) of a shipped PCA ("pca_32d") or autoencoder ("plain_2d", "denoising_32d", ...),
    built once per process on the CPU (they are small; a click decodes in a millisecond) and shared read-only."""
    ckpt = load_shipped("autoencoder", name)
    model = build_model(ckpt, PCA, PCAConfig) if name.startswith("pca") else build_model(ckpt, Autoencoder, VAEConfig)
    return model.requires_grad_(False).eval(), ckpt


# --- training ----------------------------------------------------------------------------------------

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=["autoencoder", "pca"], default="autoencoder",
                        help="pca: fit PCA by SVD (no gradient steps); autoencoder: train one")
    parser.add_argument("--latent", type=int, default=None,
                        help=f"code size (autoencoder, default 2) or components kept (pca, default {max(SWEEP_DIMS)})")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="above 0: a denoising autoencoder, inputs corrupted with Gaussian noise of std "
                             "U(0, noise) (pixels in [0, 1])")
    parser.add_argument("--widths", default="16,32,64", help="channels per encoder stage (the 2-D VAE's)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder")


def _fashion(args) -> dict:
    """The 2-D VAE's data (Fashion-MNIST zero-padded to 32x32, uint8), with the files' provenance."""
    from core.data.fashion_mnist import provenance
    from core.vae import load_dataset

    data = load_dataset(argparse.Namespace(dataset="fashion", data_dir=args.data_dir))
    data["files"] = [provenance(split, args.data_dir) for split in ("train", "test")]
    return data


def _map_extras(codes: torch.Tensor, data: dict) -> dict:
    """What the tab's latent map needs: every test image's 2-D code and class."""
    return {"map_codes": codes[:, :2].half(), "map_labels": data["valid_labels"].to(torch.uint8),
            "class_names": list(data["class_names"])}


def example_images(data: dict, per_class: int = 10) -> dict:
    """The first `per_class` test images of each class (uint8, 100 KB for ten classes), shipped with PCA so
    the tab can corrupt and reconstruct real test images where the data set is not installed."""
    labels = data["valid_labels"]
    index = torch.cat([(labels == c).nonzero()[:per_class, 0] for c in range(len(data["class_names"]))]).sort().values
    return {"examples": data["valid"][index], "example_labels": labels[index].to(torch.uint8),
            "example_test_index": index}


def _fit_pca(args, out: Path, data: dict) -> Path:
    from core.engine import TrainingRun

    run = TrainingRun(args, out)
    pca = PCA(PCAConfig(components=args.latent)).fit(data["train"])
    ratio = pca.explained_variance_ratio()
    metrics = {f"valid_mse_{d}d": round(reconstruction_error(pca, data["valid"], dims=d)["mse"], 5)
               for d in SWEEP_DIMS if d <= args.latent}
    metrics.update({f"explained_variance_{d}d": round(ratio[:d].sum().item(), 4)
                    for d in SWEEP_DIMS if d <= args.latent})
    card = run.card(data=data["description"], data_files=data["files"], model=pca, metrics=metrics,
                    method="one SVD of the centred training images, float64")
    extras = {**_map_extras(pca.encode(as_float(data["valid"]), 2), data), **example_images(data)}
    path = run.save_model(pca, pca.config, card, extras)
    run.finish()
    return path


def train_main(args) -> Path:
    from core.engine import TrainingRun

    if args.latent is None:
        args.latent = max(SWEEP_DIMS) if args.kind == "pca" else 2
    if args.latent < (2 if args.kind == "pca" else 1) or args.noise < 0:
        raise ValueError("--latent must be at least 1 (PCA: 2, for its map) and --noise at least 0.")
    if args.kind == "pca" and args.noise:
        raise ValueError("--noise trains a denoising autoencoder; PCA is fitted to the clean images.")
    out = Path(args.out) if args.out else shipped_path("autoencoder", shipped_name(args.kind, args.latent, args.noise))
    data = _fashion(args)
    if args.kind == "pca":
        return _fit_pca(args, out, data)
    run = TrainingRun(args, out, global_batch=args.batch_size)  # seeds the weight initialisation
    config = VAEConfig(image_size=32, channels=1, latent_dim=args.latent,
                       widths=[int(w) for w in str(args.widths).split(",")])
    model = Autoencoder(config)
    if run.resumed:
        model.load_state_dict(run.resumed["model"])
    run.log(f"{data['description']}; {shipped_name('autoencoder', args.latent, args.noise)} from step {run.step}")

    def validate() -> dict:
        error = reconstruction_error(model, data["valid"])
        return {"recon": round(error["bce_nats"], 3), "mse": round(error["mse"], 5)}

    card_curves = fit_epochs(run, model, data["train"], functools.partial(autoencoder_loss, noise=args.noise),
                             epochs=args.epochs, lr=args.lr, desc=f"autoencoder {args.latent}-D", validate=validate)
    run.sync_buffers(model)
    valid = reconstruction_error(model, data["valid"])
    metrics = {"valid_recon": round(valid["bce_nats"], 2), "valid_mse": round(valid["mse"], 5)}
    if args.noise:  # how much of the noise it removes, at half and at the full training noise
        for sigma in (args.noise / 2, args.noise):
            noisy = reconstruction_error(model, data["valid"], noise=sigma)["mse"]
            metrics[f"valid_mse_from_noise_{sigma:g}"] = round(noisy, 5)
    train_codes = encode_all(model, data["train"][:20000])
    mean, covariance = fitted_gaussian(train_codes)
    extras = {"code_mean": mean, "code_covariance": covariance}
    if args.latent == 2:
        extras.update(_map_extras(encode_all(model, data["valid"]), data))
    card = run.card(data=data["description"], data_files=data["files"], model=model, metrics=metrics,
                    epochs=card_curves[-1]["epoch"] if card_curves else 0, batch_size=args.batch_size,
                    learning_rate=args.lr, noise=args.noise, curves=card_curves)
    path = run.save_model(model, config_dict(config), card, extras, half=True)
    run.finish()
    return path


# --- the shipped figure: reconstruction error against the number of dimensions -------------------------

def reconstruction_curve(images: torch.Tensor, dims=SWEEP_DIMS) -> dict:
    """PCA's and the shipped plain autoencoders' test errors at each size, with the 2-D VAE's for reference."""
    from core.vae import load_vae

    pca, _ = load_model(PCA_NAME)
    curve = {"dims": list(dims), "pca": [], "autoencoder": []}
    for d in dims:
        curve["pca"].append(reconstruction_error(pca, images, dims=d))
        curve["autoencoder"].append(reconstruction_error(load_model(f"plain_{d}d")[0], images))
    curve["vae_2d"] = reconstruction_error(load_vae("fashion_2d")[0], images)
    return curve


def reconstruction_rows(images: torch.Tensor, dims=SWEEP_DIMS) -> torch.Tensor:
    """The originals, then their PCA and autoencoder reconstructions at each size:
    [(1 + 2 * len(dims)) * N, 1, H, W]."""
    pca, _ = load_model(PCA_NAME)
    rows = [images]
    for d in dims:
        rows.append(pca.decode(pca.encode(images, d)))
        autoencoder, _ = load_model(f"plain_{d}d")
        rows.append(decode(autoencoder, encode_all(autoencoder, images)))
    return torch.cat(rows)


def plot_curve(curve: dict):
    """Test error against latent dimensions, PCA and autoencoder, the 2-D VAE as one point: a PIL image."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for kind, style in (("pca", "o-"), ("autoencoder", "s-")):
        ax.plot(curve["dims"], [e["mse"] for e in curve[kind]], style, label=kind.upper() if kind == "pca" else kind)
    ax.plot([2], [curve["vae_2d"]["mse"]], "D", color="C3", label="VAE (2-D, its mean code)")
    ax.set(xscale="log", xlabel="latent dimensions", ylabel="test error (mean squared, per pixel)",
           title="Reconstruction error against code size (Fashion-MNIST test set)")
    ax.set_xticks(curve["dims"], [str(d) for d in curve["dims"]])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(buffer).convert("RGB")


def figures_main(argv: list[str] | None = None) -> None:
    """Write the error-against-dimensions figure the tab shows: FIGURE.json (the numbers), FIGURE.png (the
    plot) and EXAMPLES_FIGURE (ten test images and their reconstructions at each size)."""
    import datetime
    import time

    from core.data.fashion_mnist import load_fashion_mnist, provenance, to_float
    from core.data.images import image_grid
    from core.runtime import hardware_description, set_threads

    parser = argparse.ArgumentParser(prog="python -m core.autoencoder figures")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    started = time.monotonic()
    images, labels = load_fashion_mnist("test", args.data_dir)
    test = to_float(images)
    curve = reconstruction_curve(test)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(curve).save(FIGURE.with_suffix(".png"))
    first_of_each_class = [int((labels == c).nonzero()[0]) for c in range(int(labels.max()) + 1)]
    image_grid(reconstruction_rows(test[first_of_each_class]), nrow=len(first_of_each_class), padding=1,
               pad_value=1.0).save(EXAMPLES_FIGURE)
    record = {"command": "python -m core.autoencoder figures", "data": provenance("test", args.data_dir),
              "date": datetime.date.today().isoformat(), "hardware": hardware_description(None),
              "wall_time_s": round(time.monotonic() - started, 1), "test_images": len(test),
              "error": "mse: mean squared error per pixel (pixels in [0, 1]); bce_nats: binary cross-entropy "
                       "per image, summed over the 1,024 pixels", **curve,
              "example_images": first_of_each_class,
              "example_rows": ["original"] + [f"{kind} {d}-D" for d in SWEEP_DIMS for kind in ("PCA", "autoencoder")]}
    FIGURE.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {FIGURE.with_suffix('.json')}, {FIGURE.with_suffix('.png')} and {EXAMPLES_FIGURE}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["figures"]:
        sys.exit("usage: python -m core.autoencoder figures [--data-dir DIR] [--threads N]")
    figures_main(sys.argv[2:])
