"""From PCA to the autoencoder to the VAE, measured (issue "From PCA to autoencoder to VAE"): how well each
2-D code reconstructs, whether random points of each latent space decode to clothes and land where the
decoder was trained (in 2 and in 32 dimensions), how fast a clicked point decodes, and what a denoising
autoencoder removes.

    python -m bench.autoencoder [--quick] [--n-test 10000] [--codes 1000] [--manifold-set 3000] [--threads N]

The models are the shipped ones: PCA (assets/checkpoints/autoencoder/pca_32d.pt, its first 2 directions), the
plain 2-D autoencoder (plain_2d.pt) and the 2-D VAE (assets/checkpoints/vae/fashion_2d.pt); in 32 dimensions
the plain 32-D autoencoder (plain_32d.pt, key "autoencoder_32d") and the 32-D VAE
(assets/checkpoints/vae/fashion_32d.pt, key "vae_32d"); for the denoising figures the plain and the denoising
32-D autoencoders (plain_32d.pt, denoising_32d.pt). A model not trained yet is listed under "missing" and its
figures are left out; "checkpoints" records the steps and date of each one measured.

- Reconstruction: decode(encode(x)) against x on the first --n-test Fashion-MNIST test images (default all
  10,000; --quick 1,000), zero-padded to 32x32 in [0, 1], by core.autoencoder.reconstruction_error: mean
  squared error per pixel and binary cross-entropy per image in nats (summed over the 1,024 pixels). The
  VAE's code is its mean mu.
- Holes in the latent space: --codes codes (default 1,000; --quick 200) drawn from each model's prior
  (core.autoencoder.prior): N(0, I) for the VAE; for PCA N(0, diag(variance along its first 2 directions));
  for the autoencoder the Gaussian fitted to its training codes (mean and covariance stored at training
  time). Models of the same size transform the same standard normal draws (seed CODE_SEED). Each code is
  decoded and the project's Fashion-MNIST classifier scores the image: "share" is the fraction whose top
  class probability is >= 0.5 (recognised as some garment), "mean_top_probability" the mean of that
  probability. The 2-D trio and the 32-D pair (the autoencoder from its fitted Gaussian, the VAE from
  N(0, I)) alike. References: as many real test images (a seeded random choice), and the 2-D autoencoder
  decoding codes from N(0, I), a prior its codes were never scaled to (the key says so:
  "autoencoder_standard_normal_unscaled").
- On the decoder's own manifold: the recognised share cannot tell a code that lands in a hole from a
  decoder that blurs everything. So each model's decoded prior codes (the same --codes codes, seed
  CODE_SEED) are compared with that model's own reconstructions decode(encode(x)) of the first --manifold-set
  test images (default MANIFOLD_SET = 3,000; --quick 300; whatever --n-test): improved precision and recall
  (core.metrics.precision_recall, k = K = 3) in the Fashion-MNIST classifier's features. Precision: the
  share of random codes whose image lies among the reconstructions (low: codes fall into holes, off where the
  decoder was trained); recall: the share of reconstructions that random codes come near (low: the prior
  misses regions the codes fill). Reference: the same model's reconstructions of the next --codes test
  images (held out from the set) against the same set, which is what a prior matching the codes would
  reach; "recognised" there is the classifier's share on those reconstructions (the decoder's own blur).
  For the 2-D trio (PCA through its first 2 directions) and the 32-D pair. With fewer test images than
  the set plus --codes, the set and the held-out images split what there is (the n's are recorded).
- A clicked point: milliseconds for one decode of one 2-D code (core.autoencoder.decode for PCA and the
  autoencoder, core.vae.decode for the VAE), each click a different code from the prior, on one CPU thread:
  median and max (target <= 20 ms). When tabs.latent_spaces exists, its whole click handler
  decode_click(space, evt) is timed too (map redraw included), under "click.handler".
- Denoising: on the --n-test test images, Gaussian noise of std sigma = 0.1, 0.3 and 0.5 (clipped to
  [0, 1]; the same draw, seed NOISE_SEED, scaled by each sigma, for every model), and the mean squared error
  per pixel against the clean images of (a) the noisy input itself, (b) the plain 32-D autoencoder's
  reconstruction of it, (c) the denoising 32-D autoencoder's. Keys sigma_10, sigma_30, sigma_50: sigma in
  hundredths; "clean": each model's error on the clean images, for comparison.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import save_results, time_calls
from core.autoencoder import PCA_NAME

PCA, AUTOENCODER, VAE = "pca", "autoencoder", "vae"
SHIPPED = {PCA: PCA_NAME, AUTOENCODER: "plain_2d", VAE: "fashion_2d"}  # the three 2-D latent spaces
PLAIN_32, DENOISING_32 = "plain_32d", "denoising_32d"
AUTOENCODER_32, VAE_32 = "autoencoder_32d", "vae_32d"
SHIPPED_32 = {AUTOENCODER_32: PLAIN_32, VAE_32: "fashion_32d"}  # the two 32-D latent spaces
VAES = (VAE, VAE_32)  # decoded by core.vae.decode, prior N(0, I)
SPACES = {PCA: "PCA", AUTOENCODER: "autoencoder", VAE: "VAE"}  # the names tabs.latent_spaces.decode_click takes
DIMS = 2
SIGMAS = (0.1, 0.3, 0.5)
THRESHOLD = 0.5  # a decoded image is "recognised" when the classifier's top class probability reaches it
CODE_SEED, REAL_SEED, NOISE_SEED = 0, 1, 2
CLICK_TARGET_MS = 20.0
UNSCALED = "autoencoder_standard_normal_unscaled"
MANIFOLD_SET, QUICK_MANIFOLD_SET = 3000, 300  # test images whose reconstructions are each decoder's manifold
K = 3  # neighbours of the precision/recall balls
BATCH = 1000  # reconstruction_error's batch: the noisy-input figure draws its noise in the same batches

README_PROSE = [
    "at 2-D the three are close to one another on both measures: of {recognised.n:,} codes drawn from each model's "
    "prior, the classifier recognises {recognised.pca.share:.0%} of PCA's decoded images, "
    "{recognised.autoencoder.share:.0%} of the autoencoder's and {recognised.vae.share:.0%} of the VAE's (of their "
    "reconstructions of held-out test images: {manifold.pca.reference.recognised:.0%}, "
    "{manifold.autoencoder.reference.recognised:.0%} and {manifold.vae.reference.recognised:.0%}; of the real "
    "test images: {recognised.real_test.share:.0%}), and their precision against the decoder's own reconstructions "
    "is {manifold.pca.precision:.2f}, {manifold.autoencoder.precision:.2f} and {manifold.vae.precision:.2f} "
    "(held-out reconstructions: {manifold.pca.reference.precision:.2f}, "
    "{manifold.autoencoder.reference.precision:.2f} and {manifold.vae.reference.precision:.2f}): no holes to "
    "speak of in two dimensions",
    "at 32-D the autoencoder's random codes fall off its codes' manifold (precision "
    "{manifold.autoencoder_32d.precision:.2f}, recall {manifold.autoencoder_32d.recall:.2f}; "
    "{recognised.autoencoder_32d.share:.0%} recognised) while the VAE's stay nearer (precision "
    "{manifold.vae_32d.precision:.2f}, recall {manifold.vae_32d.recall:.2f}; {recognised.vae_32d.share:.0%} "
    "recognised); held-out reconstructions reach precision {manifold.autoencoder_32d.reference.precision:.2f} "
    "and {manifold.vae_32d.reference.precision:.2f}",
]


def _sigma_key(sigma: float) -> str:
    return f"sigma_{round(sigma * 100):02d}"


def _three(section: str, field: str, fmt: str) -> str:
    return " / ".join(f"{{{section}.{key}.{field}:{fmt}}}" for key in (PCA, AUTOENCODER, VAE))


def _pair(section: str, field: str, fmt: str) -> str:
    return " / ".join(f"{{{section}.{key}.{field}:{fmt}}}" for key in (AUTOENCODER_32, VAE_32))


def _precision_recall(key: str, reference: bool = False) -> str:
    path = f"manifold.{key}" + (".reference" if reference else "")
    return f"{{{path}.precision:.3f}} / {{{path}.recall:.3f}}"


def _by_sigma(key: str) -> str:
    return " / ".join(f"{{denoising.{key}.{_sigma_key(s)}.mse:.4f}}" for s in SIGMAS)


_TRIO = "PCA (first 2 directions) / plain autoencoder / VAE (its mean code)"
_SIGMAS = "σ = " + " / ".join(f"{s:g}" for s in SIGMAS)
README_ROWS = [
    {"figure": f"Test reconstruction error of 2-D codes, mean squared error per pixel: {_TRIO} (n = {{n_test:,}})",
     "measured": _three("reconstruction", "mse", ".4f"), "reference": "—"},
    {"figure": f"Test reconstruction error of 2-D codes, binary cross-entropy per image (nats): {_TRIO}",
     "measured": _three("reconstruction", "bce_nats", ".1f"), "reference": "—"},
    {"figure": "Random codes from each prior whose decoded image the Fashion-MNIST classifier recognises "
               "(top probability ≥ 0.5): PCA / autoencoder (Gaussian fitted to their codes) / VAE (N(0, I)); "
               "n = {recognised.n:,} each",
     "measured": _three("recognised", "share", ".1%"),
     "reference": "real test images {recognised.real_test.share:.1%}; autoencoder from N(0, I), unscaled "
                  f"{{recognised.{UNSCALED}.share:.1%}}"},
    {"figure": "Classifier's mean top-class probability on those decoded random codes: PCA / autoencoder / VAE",
     "measured": _three("recognised", "mean_top_probability", ".3f"),
     "reference": "real test images {recognised.real_test.mean_top_probability:.3f}; autoencoder from N(0, I) "
                  f"{{recognised.{UNSCALED}.mean_top_probability:.3f}}"},
    {"figure": "Random codes on the decoder's own manifold (precision against its reconstructions of "
               "{manifold.set:,} test images, classifier features, k = 3): PCA / autoencoder / VAE, 2-D",
     "measured": _three("manifold", "precision", ".3f"),
     "reference": "held-out reconstructions " + _three("manifold", "reference.precision", ".3f")},
    {"figure": "32-D: random codes recognised by the classifier: autoencoder (fitted Gaussian) / VAE (N(0, I)); "
               "n = {recognised.n:,} each",
     "measured": _pair("recognised", "share", ".1%"),
     "reference": "real test images {recognised.real_test.share:.1%}"},
    {"figure": "32-D: precision / recall of random codes against the decoder's own reconstructions "
               "(as above): autoencoder; VAE",
     "measured": f"{_precision_recall(AUTOENCODER_32)}; {_precision_recall(VAE_32)}",
     "reference": f"held-out reconstructions {_precision_recall(AUTOENCODER_32, True)}; "
                  f"{_precision_recall(VAE_32, True)}"},
    {"figure": "One clicked 2-D code decoded, one CPU thread (median ms; max in brackets): PCA / autoencoder / VAE",
     "measured": " / ".join(f"{{click.{key}.median_ms:.2f}} ({{click.{key}.max_ms:.1f}})"
                            for key in (PCA, AUTOENCODER, VAE)),
     "reference": f"≤ {CLICK_TARGET_MS:g} ms"},
    {"figure": "A whole click on the latent-space map (tabs.latent_spaces.decode_click, map redraw included; "
               "median ms): PCA / autoencoder / VAE",
     "measured": _three("click.handler", "median_ms", ".1f"), "reference": f"≤ {CLICK_TARGET_MS:g} ms"},
    {"figure": f"Denoising, test mse against the clean images ({_SIGMAS}): the denoising 32-D autoencoder's "
               "reconstruction of the noisy input",
     "measured": _by_sigma(DENOISING_32) + f" (clean input {{denoising.{DENOISING_32}.clean.mse:.4f}})",
     "reference": f"the noisy input {_by_sigma('noisy_input')}"},
    {"figure": f"Denoising, test mse against the clean images ({_SIGMAS}): the plain 32-D autoencoder's "
               "reconstruction of the noisy input",
     "measured": _by_sigma(PLAIN_32) + f" (clean input {{denoising.{PLAIN_32}.clean.mse:.4f}})",
     "reference": f"the noisy input {_by_sigma('noisy_input')}"},
]


# --- what the bench measures (module functions, so tests can put tiny stand-ins in their place) ---

def load(name: str):
    """(model, checkpoint) of a shipped model by its file name; core.checkpoints.CheckpointError (a
    ValueError, with the command that makes it) while it is not trained."""
    if name in (SHIPPED[VAE], SHIPPED_32[VAE_32]):
        from core.vae import load_vae

        return load_vae(name)
    from core.autoencoder import load_model

    return load_model(name)


def test_images(n: int | None) -> torch.Tensor:
    """The first n Fashion-MNIST test images (all with None), [n, 1, 32, 32] in [0, 1], zero-padded."""
    from core.data.fashion_mnist import load_fashion_mnist, to_float

    images, _ = load_fashion_mnist("test", download=False)
    return to_float(images[:n])


def probabilities(images: torch.Tensor) -> torch.Tensor:
    """The Fashion-MNIST classifier's class probabilities [N, 10] of [0, 1] images."""
    from core.metrics.classifiers import fashion_probabilities

    return fashion_probabilities(images, value_range=(0, 1))


def features(images: torch.Tensor) -> torch.Tensor:
    """The Fashion-MNIST classifier's penultimate features [N, 128] of [0, 1] images."""
    from core.metrics.classifiers import fashion_features

    return fashion_features(images, (0, 1))


def click_handler():
    """tabs.latent_spaces (its decode_click(space, evt) handles a click on the map), or None while the tab
    does not exist. A tab that exists but fails to import raises."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("tabs.latent_spaces") is None:
        return None
    return importlib.import_module("tabs.latent_spaces")


# --- the figures --------------------------------------------------------------------------------

def checkpoint_card(ckpt) -> dict:
    """Which checkpoint was measured: its training steps, date and command (from its card)."""
    from pathlib import Path

    from core.registry import ROOT

    card = getattr(ckpt, "card", None) or {}
    path = getattr(ckpt, "path", None)
    if path is not None and Path(path).resolve().is_relative_to(ROOT):
        path = Path(path).resolve().relative_to(ROOT)
    return {"file": str(path) if path else None, "steps": card.get("steps"), "date": card.get("date"),
            "command": card.get("command")}


def decoder_of(key: str):
    """How each latent space decodes codes to [0, 1] images on the CPU: as the tab does."""
    if key in VAES:
        from core.vae import decode
    else:
        from core.autoencoder import decode
    return decode


def prior_of(key: str, model, ckpt) -> tuple[torch.Tensor, torch.Tensor]:
    """core.autoencoder.prior; for PCA restricted to its first DIMS directions (it keeps 32)."""
    from core.autoencoder import prior

    mean, covariance = prior(model, ckpt)
    if key == PCA:
        mean, covariance = mean[:DIMS], covariance[:DIMS, :DIMS]
    return mean.float(), covariance.float()


@torch.no_grad()
def codes_of(key: str, model, images: torch.Tensor) -> torch.Tensor:
    """The codes of images in a latent space, on the CPU: PCA's first DIMS coordinates (encode_all would give
    all its directions), the autoencoder's z, a VAE's mean mu."""
    if key == PCA:
        return torch.cat([model.encode(images[i:i + BATCH], DIMS) for i in range(0, len(images), BATCH)]).cpu()
    from core.autoencoder import encode_all

    return encode_all(model, images, batch_size=BATCH)


def decoded(key: str, model, codes: torch.Tensor) -> torch.Tensor:
    """decoder_of(key) over codes in batches of BATCH."""
    decode = decoder_of(key)
    return torch.cat([decode(model, part) for part in codes.split(BATCH)])


def prior_codes(key: str, model, ckpt, n: int) -> torch.Tensor:
    """n codes from the model's prior, drawn with seed CODE_SEED."""
    from core.autoencoder import gaussian_codes
    from core.runtime import make_generator

    return gaussian_codes(*prior_of(key, model, ckpt), n, make_generator(CODE_SEED))


def recognition(images: torch.Tensor) -> dict:
    """The share of images whose top class probability is >= THRESHOLD, the mean top probability, and the
    share of each class among the top classes."""
    top = probabilities(images).max(-1)
    shares = torch.bincount(top.indices, minlength=10).double() / len(images)
    return {"n": len(images), "share": round((top.values >= THRESHOLD).double().mean().item(), 4),
            "mean_top_probability": round(top.values.double().mean().item(), 4),
            "class_shares": [round(s, 4) for s in shares.tolist()]}


def recognised(models: dict, real: torch.Tensor, n: int) -> dict:
    """Decode n codes from each model's prior (the same standard normal draws for all models of a size, seed
    CODE_SEED) and count what the classifier recognises; the n real images and the 2-D autoencoder from
    N(0, I) as references."""
    from core.autoencoder import gaussian_codes
    from core.runtime import make_generator

    result = {"n": n, "threshold": THRESHOLD, "seed": CODE_SEED,
              "what": "share: the fraction of decoded images whose top class probability is >= 0.5; "
                      "mean_top_probability: that probability's mean"}
    for key, (model, ckpt) in models.items():
        mean, covariance = prior_of(key, model, ckpt)
        codes = prior_codes(key, model, ckpt, n)
        result[key] = {**recognition(decoded(key, model, codes)), "dims": len(mean),
                       "prior": "N(0, I)" if key in VAES else "the Gaussian fitted to its codes",
                       "prior_mean": [round(v, 4) for v in mean.tolist()]}
        if len(mean) <= DIMS:
            result[key]["prior_covariance"] = [[round(v, 4) for v in row] for row in covariance.tolist()]
        else:  # 32 x 32 numbers say little in a results file: the variances, and how far it is from diagonal
            off = covariance - torch.diag(covariance.diagonal())
            result[key]["prior_variances"] = [round(v, 4) for v in covariance.diagonal().tolist()]
            result[key]["prior_largest_off_diagonal"] = round(off.abs().max().item(), 4)
        if key == AUTOENCODER:
            codes = gaussian_codes(torch.zeros(DIMS), torch.eye(DIMS), n, make_generator(CODE_SEED))
            result[UNSCALED] = {**recognition(decoded(key, model, codes)),
                                "prior": "N(0, I), which the autoencoder's codes were never scaled to"}
    index = torch.randperm(len(real), generator=make_generator(REAL_SEED))[:n]
    result["real_test"] = {**recognition(real[index]), "what": f"{min(n, len(real))} random test images "
                                                               f"(seed {REAL_SEED})"}
    return result


def manifold_split(total: int, set_size: int, n: int) -> tuple[int, int]:
    """(set, held out): the first set_size test images and the next n, or, with fewer than set_size + n,
    what there is split between them (the held-out part at most half)."""
    held = n if total >= set_size + n else min(n, max(total - set_size, total // 2))
    return min(set_size, total - held), held


def manifold(models: dict, real: torch.Tensor, n: int, set_size: int) -> dict:
    """Improved precision/recall (k = K, classifier features) of n decoded prior codes (seed CODE_SEED)
    against the model's own reconstructions of the first set_size test images, and of its reconstructions of
    the next (held-out) test images against the same set as the reference."""
    from core.metrics.precision_recall import precision_recall

    set_size, held = manifold_split(len(real), set_size, n)
    test_set, held_out = real[:set_size], real[set_size:set_size + held]
    result = {"k": K, "seed": CODE_SEED, "codes": n, "set": set_size, "held_out": held,
              "set_images": [0, set_size], "held_out_images": [set_size, set_size + held],
              "what": "precision: the share of decoded prior codes inside the manifold (k-NN balls, k = 3, in the "
                      "Fashion-MNIST classifier's features) of the model's own reconstructions of test images "
                      "set_images[0]..set_images[1] - 1; recall: the share of those reconstructions inside the "
                      "codes' manifold; reference: the model's reconstructions of the held-out test images "
                      "held_out_images[0]..held_out_images[1] - 1 against the same set, and the classifier's "
                      "recognised share (top probability >= 0.5) of them"}

    def figures(reference, generated) -> dict:
        pr = precision_recall(reference, generated, k=K)
        return {"precision": round(pr.precision, 4), "recall": round(pr.recall, 4)}

    for key, (model, ckpt) in models.items():
        set_codes = codes_of(key, model, test_set)
        reconstructions = features(decoded(key, model, set_codes))
        held_images = decoded(key, model, codes_of(key, model, held_out))
        result[key] = {"dims": set_codes.shape[1],
                       "prior": "N(0, I)" if key in VAES else "the Gaussian fitted to its codes",
                       **figures(reconstructions, features(decoded(key, model, prior_codes(key, model, ckpt, n)))),
                       "reference": {**figures(reconstructions, features(held_images)),
                                     "recognised": recognition(held_images)["share"]}}
    return result


def reconstruction(models: dict, images: torch.Tensor) -> dict:
    from core.autoencoder import reconstruction_error

    result = {}
    for key, (model, _) in models.items():
        error = reconstruction_error(model, images, batch_size=BATCH, dims=DIMS if key == PCA else None)
        result[key] = {k: round(v, 5 if k == "mse" else 3) for k, v in error.items()}
    return result


def _ms(timing: dict) -> dict:
    return {"median_ms": round(timing["median_s"] * 1000, 3), "max_ms": round(timing["max_s"] * 1000, 3),
            "runs": timing["runs"]}


def click_speed(models: dict, repeats: int) -> dict:
    """Milliseconds of one decode of one 2-D code, each call a new code from the model's prior, one thread."""
    from core.autoencoder import gaussian_codes
    from core.runtime import make_generator, set_threads

    threads = torch.get_num_threads()
    set_threads(1)
    result = {"threads": 1, "target_ms": CLICK_TARGET_MS}
    try:
        for key, (model, ckpt) in models.items():
            codes = gaussian_codes(*prior_of(key, model, ckpt), repeats + 3, make_generator(CODE_SEED)).split(1)
            clicks, decode = iter(codes), decoder_of(key)
            result[key] = _ms(time_calls(lambda: decode(model, next(clicks)), repeats=repeats, warmup=3))
    finally:
        set_threads(threads)
    result["meets_target"] = all(result[key]["median_ms"] <= CLICK_TARGET_MS for key in models)
    return result


def handler_speed(tab, spaces, repeats: int) -> dict:
    """Milliseconds of the tab's whole click handler (map redraw included) at a few points near the middle
    of the map, one thread."""
    import gradio as gr

    from core.runtime import set_threads

    middle = tab.MAP_PX // 2
    points = [(middle + dx, middle + dy) for dx in (-40, 0, 40) for dy in (-40, 0, 40)]
    threads = torch.get_num_threads()
    set_threads(1)
    result = {"threads": 1, "target_ms": CLICK_TARGET_MS, "pixels": [list(p) for p in points]}
    try:
        for key in spaces:
            events = iter([gr.SelectData(None, {"index": list(p), "value": None}) for p in points] * (repeats + 3))
            result[key] = _ms(time_calls(lambda: tab.decode_click(SPACES[key], next(events)), repeats, warmup=3))
    finally:
        set_threads(threads)
    result["meets_target"] = all(result[key]["median_ms"] <= CLICK_TARGET_MS for key in spaces)
    return result


def noisy_input_mse(images: torch.Tensor, sigma: float, seed: int) -> float:
    """Mean squared error per pixel of the noisy images themselves against the clean ones, with the very noise
    reconstruction_error(..., noise=sigma, seed=seed) draws (the same generator, the same batches)."""
    from core.autoencoder import add_noise
    from core.runtime import make_generator

    generator, squared = make_generator(seed), 0.0
    for i in range(0, len(images), BATCH):
        x = images[i:i + BATCH].float()
        squared += (add_noise(x, sigma, generator) - x).pow(2).flatten(1).mean(1).sum().item()
    return squared / len(images)


def denoising(models: dict, images: torch.Tensor) -> dict:
    from core.autoencoder import reconstruction_error

    result = {"sigmas": list(SIGMAS), "seed": NOISE_SEED, "n": len(images),
              "what": "mse per pixel against the clean test images; the same noise draw scaled by each sigma, "
                      "clipped to [0, 1]",
              "noisy_input": {_sigma_key(s): {"mse": round(noisy_input_mse(images, s, NOISE_SEED), 5)}
                              for s in SIGMAS}}
    for name, (model, _) in models.items():
        clean = reconstruction_error(model, images, batch_size=BATCH)
        result[name] = {"clean": {k: round(v, 5 if k == "mse" else 3) for k, v in clean.items()}}
        for s in SIGMAS:
            error = reconstruction_error(model, images, batch_size=BATCH, noise=s, seed=NOISE_SEED)
            result[name][_sigma_key(s)] = {k: round(v, 5 if k == "mse" else 3) for k, v in error.items()}
    return result


def _load_all(names: list[str], figures: dict) -> dict:
    loaded = {}
    for name in names:
        try:
            loaded[name] = load(name)
        except ValueError as exc:  # CheckpointError: not trained yet
            figures["missing"].append(name)
            figures.setdefault("missing_notes", {})[name] = str(exc)
            continue
        figures["checkpoints"][name] = checkpoint_card(loaded[name][1])
    return loaded


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-test", type=int, default=None,
                        help="test images for the reconstruction and denoising errors (default all 10000; quick 1000)")
    parser.add_argument("--codes", type=int, default=None, help="random codes per prior (default 1000; quick 200)")
    parser.add_argument("--manifold-set", type=int, default=None,
                        help=f"test images whose reconstructions are each decoder's manifold (default {MANIFOLD_SET}; "
                             f"quick {QUICK_MANIFOLD_SET})")
    parser.add_argument("--repeats", type=int, default=None, help="timed clicks per model (default 200; quick 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default GENLAB_THREADS or all cores)")
    args = parser.parse_args(argv)
    n_test = args.n_test if args.n_test is not None else 1000 if args.quick else None
    codes = args.codes if args.codes is not None else 200 if args.quick else 1000
    set_size = (args.manifold_set if args.manifold_set is not None
                else QUICK_MANIFOLD_SET if args.quick else MANIFOLD_SET)
    repeats = args.repeats if args.repeats is not None else 20 if args.quick else 200
    for flag, value, least in (("--n-test", n_test, 1), ("--codes", codes, K + 1), ("--manifold-set", set_size, K + 1),
                               ("--repeats", repeats, 1)):
        if value is not None and value < least:
            raise SystemExit(f"{flag} needs at least {least}, not {value}")
    from core.runtime import set_threads

    threads = set_threads(args.threads)
    figures = {"threads": threads, "missing": [], "checkpoints": {}}
    timings = {}
    images = test_images(n_test)
    all_images = images if n_test is None else test_images(None)
    figures["n_test"] = len(images)
    loaded = _load_all([SHIPPED[key] for key in (PCA, AUTOENCODER, VAE)] + [PLAIN_32, DENOISING_32, SHIPPED_32[VAE_32]],
                       figures)
    trio = {key: loaded[SHIPPED[key]] for key in (PCA, AUTOENCODER, VAE) if SHIPPED[key] in loaded}
    pair = {key: loaded[name] for key, name in SHIPPED_32.items() if name in loaded}
    figures["models"] = {**{key: SHIPPED[key] for key in trio}, **{key: SHIPPED_32[key] for key in pair}}

    start = time.perf_counter()
    figures["reconstruction"] = reconstruction(trio, images)
    timings["reconstruction_s"] = time.perf_counter() - start

    start = time.perf_counter()
    figures["recognised"] = recognised({**trio, **pair}, all_images, codes)
    timings["recognised_s"] = time.perf_counter() - start

    start = time.perf_counter()
    figures["manifold"] = manifold({**trio, **pair}, all_images, codes, set_size)
    timings["manifold_s"] = time.perf_counter() - start

    start = time.perf_counter()
    figures["click"] = click_speed(trio, repeats)
    tab = click_handler()
    if tab is None:
        figures["missing"].append("tabs.latent_spaces")
    else:
        figures["click"]["handler"] = handler_speed(tab, list(trio), max(5, repeats // 4))
    timings["click_s"] = time.perf_counter() - start

    start = time.perf_counter()
    denoisers = {name: loaded[name] for name in (PLAIN_32, DENOISING_32) if name in loaded}
    figures["denoising"] = denoising(denoisers, images)
    timings["denoising_s"] = time.perf_counter() - start
    figures["wall_s"] = {key: round(value, 1) for key, value in timings.items()}
    save_results("autoencoder", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
