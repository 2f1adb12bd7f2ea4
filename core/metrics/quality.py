"""How close generated images are to real ones: FID and KID with their real-vs-real baseline.

FID is biased upwards at small n, so a bare "FID = 23" means little. Every function here
also measures two *real* sets against each other at the same n: the score a perfect
generator would get with this many samples. A benchmark reports both, e.g.
    FID 23.4 at n = 2,000 (real vs real at n = 2,000: 1.9)

Fashion-MNIST: samples are compared with n random test images; the baseline compares n
random training images with the same test images (a generator learnt from the training set).
Faces: the same with the synthetic faces' standard splits (core.data.faces.face_split):
samples against n "test" faces, baseline n "train" faces against the same "test" faces.

A figure measured on one feature network alone can be an artefact of that network, so every figure
is given by several judges (JUDGES): for clothes the project's classifier, a second Fashion-MNIST
network of another architecture, seed and augmentation (classifiers.FashionResNet) and ImageNet
EfficientNet-Lite0; for the colour faces the face-attribute classifier and EfficientNet-Lite0.

    judge(samples, "fashion", value_range=(0, 1))
    # -> {"classifier": {...}, "resnet": {...}, "lite0": {...}}, each
    #    {"n", "fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall",
    #     "real_fid", "real_kid_mean", "real_kid_std", "real_precision", "real_recall"}
    ranking({"dcgan": judged, "diffusion": judged})  # do the judges order the generators alike?

Precision and recall (core.metrics.precision_recall, k = 3) tell fidelity from variety in the same
feature spaces. compare_sets scores any sets of images, with any feature function, against real test
images and the real-vs-real baseline.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from core.metrics.classifiers import face_features, fashion_features, fashion_input, to_unit_range
from core.metrics.fid import fid, kid
from core.runtime import make_generator

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
NEIGHBOURS = 3  # k of improved precision and recall (Kynkäänniemi et al. use 3)
LITE0_SIZE = 64  # images are enlarged to this for EfficientNet-Lite0 (its head map is then 2x2)

# The feature networks that judge each kind of image; every quality figure is given on each of them.
JUDGES = {"fashion": ("classifier", "resnet", "lite0"), "faces": ("attributes", "lite0")}
JUDGE_NAMES = {
    "classifier": "the Fashion-MNIST classifier (convolution and max-pool stages, dense 128-d features)",
    "resnet": "the second Fashion-MNIST network (residual blocks, global average pooling, 256-d features; "
              "another seed and augmentation)",
    "attributes": "the face-attribute classifier (128-d features; the one trained at the faces' resolution)",
    "lite0": f"ImageNet EfficientNet-Lite0 (1280-d head features averaged over positions, images enlarged to "
             f"{LITE0_SIZE} px; it never saw the data)",
}


def compare(sample_feats: torch.Tensor, real_feats: torch.Tensor, seed: int = 0) -> dict:
    """FID and KID (mean and std over subsets) of two feature sets, as plain floats."""
    k = kid(sample_feats, real_feats, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
            generator=make_generator(seed))
    return {"fid": round(fid(sample_feats, real_feats), 4), "kid_mean": round(k.mean, 6),
            "kid_std": round(k.std, 6), "kid_subset_size": k.subset_size}


def score(sample_feats: torch.Tensor, real_feats: torch.Tensor, seed: int = 0) -> dict:
    """compare() and improved precision/recall (k = NEIGHBOURS) of samples against real features."""
    from core.metrics.precision_recall import precision_recall

    pr = precision_recall(real_feats, sample_feats, k=NEIGHBOURS)
    return {**compare(sample_feats, real_feats, seed), "precision": round(pr.precision, 4),
            "recall": round(pr.recall, 4)}


def _with_baseline(n: int, scores: dict, baseline: dict) -> dict:
    return {"n": n, **scores, **{f"real_{k}": v for k, v in baseline.items() if k != "kid_subset_size"}}


def _random_rows(n_total: int, n: int, seed: int) -> torch.Tensor:
    if not 2 <= n <= n_total:
        raise ValueError(f"n must be between 2 and {n_total}, got {n}.")
    return torch.randperm(n_total, generator=make_generator(seed))[:n]


def fashion_real_images(split: str, n: int, seed: int = 0) -> torch.Tensor:
    """n random real Fashion-MNIST images of a split (uint8 [n, 28, 28]); the same for the same seed."""
    from core.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist(split)
    return images[_random_rows(len(images), n, seed)]


@functools.lru_cache(maxsize=16)
def fashion_real_features(split: str, n: int, seed: int = 0, network: str = "classifier") -> torch.Tensor:
    """`network`'s features of fashion_real_images(split, n, seed) (cached: several benchmarks use them)."""
    return features(network, "fashion", fashion_real_images(split, n, seed), value_range=(0, 255))


def fashion_baseline(n: int, seed: int = 0, network: str = "classifier") -> dict:
    """Real vs real: n training images against n test images (the floor a generator is compared with)."""
    return compare(fashion_real_features("train", n, seed, network), fashion_real_features("test", n, seed, network),
                   seed)


def fashion_quality(samples: torch.Tensor, value_range, seed: int = 0) -> dict:
    """judge(samples, "fashion", ...) on the classifier alone (FID/KID/precision/recall and real_* baselines).

    samples: [N, 1, 32, 32] / [N, 1, 28, 28] (or without the channel axis) in `value_range`.
    """
    return judge(samples, "fashion", value_range, seed, networks=("classifier",))["classifier"]


def face_judge_size(size: int) -> int:
    """Which face-attribute classifier judges faces of `size` pixels: the one trained at that size when
    it is shipped (32), else the 64-pixel one (the faces are resized to it)."""
    from core.registry import shipped_path

    return 32 if size == 32 and shipped_path("classifier", "face_attributes32").is_file() else 64


@functools.lru_cache(maxsize=16)
def face_real_features(split: str, n: int, size: int = 64, network: str = "attributes") -> torch.Tensor:
    """`network`'s features of the first n synthetic faces of a split, rendered at `size` pixels."""
    from core.data.faces import face_split

    return features(network, "faces", face_split(split, n, size=size).images, value_range=(0, 1))


def face_baseline(n: int, size: int = 64, seed: int = 0, network: str = "attributes") -> dict:
    """Real vs real for faces: n train-split faces against n test-split faces at `size` pixels."""
    return compare(face_real_features("train", n, size, network), face_real_features("test", n, size, network), seed)


def face_quality(samples: torch.Tensor, value_range=(0, 1), seed: int = 0) -> dict:
    """judge(samples, "faces", ...) on the face-attribute classifier alone, plus the samples' "size"."""
    return {**judge(samples, "faces", value_range, seed, networks=("attributes",))["attributes"],
            "size": samples.shape[-1]}


def features(network: str, domain: str, images: torch.Tensor, value_range) -> torch.Tensor:
    """The features [N, dim] that judge `network` sees in images of `domain` ("fashion": grey clothes,
    28 or 32 px; "faces": colour [N, 3, H, H]) whose pixels lie in `value_range`."""
    from core.metrics import classifiers

    if domain not in JUDGES or network not in JUDGES[domain]:
        raise ValueError(f"No judge {network!r} for {domain!r} images; the judges are "
                         + "; ".join(f"{d}: {', '.join(nets)}" for d, nets in JUDGES.items()) + ".")
    if domain == "fashion":
        if network == "lite0":
            return lite0_features(fashion_input(images, value_range), (0, 1), size=LITE0_SIZE)
        model = classifiers.load_fashion_resnet() if network == "resnet" else None
        return fashion_features(images, value_range, model=model)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"Face samples must be [N, 3, H, H], got shape {tuple(images.shape)}.")
    if network == "lite0":
        return lite0_features(images, value_range, size=LITE0_SIZE)
    model = classifiers.load_face_classifier(size=face_judge_size(images.shape[-1]))
    return face_features(images, value_range, model=model)


def real_features(network: str, domain: str, split: str, n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    """`network`'s features of n real images of a split (cached): random Fashion-MNIST images chosen by
    `seed`, or the first n synthetic faces drawn at `size` pixels."""
    if domain == "fashion":
        return fashion_real_features(split, n, seed, network)
    return face_real_features(split, n, size, network)


def judge(samples: torch.Tensor, domain: str, value_range, seed: int = 0, networks=None) -> dict:
    """FID, KID, precision and recall of samples on every judge of their domain, each beside real vs real.

    samples: Fashion-MNIST-like [N, 1, 32, 32] / [N, 1, 28, 28] ("fashion") or colour faces [N, 3, H, H]
    ("faces", compared with real faces drawn at the same H) in `value_range`. The samples are compared
    with N real test images; real vs real compares N real training images with the same test images
    (what a perfect generator scores at this n). Returns {network: {"n", "fid", "kid_mean", "kid_std",
    "kid_subset_size", "precision", "recall", "real_fid", "real_kid_mean", "real_kid_std",
    "real_precision", "real_recall"}} for each network of JUDGES[domain] (or of `networks`).
    """
    if domain not in JUDGES:
        raise ValueError(f"Judges exist for {', '.join(JUDGES)} images, not {domain!r}.")
    n, size = len(samples), samples.shape[-1]
    result = {}
    for network in networks or JUDGES[domain]:
        feats = features(network, domain, samples, value_range)  # first: a wrong shape or range fails at once
        test = real_features(network, domain, "test", n, seed, size)
        result[network] = _with_baseline(n, score(feats, test, seed), real_baseline(network, domain, n, seed, size))
    return result


@functools.lru_cache(maxsize=32)
def real_baseline(network: str, domain: str, n: int, seed: int = 0, size: int = 64) -> dict:
    """score() of n real training images against the n real test images judge() compares samples with."""
    return score(real_features(network, domain, "train", n, seed, size),
                 real_features(network, domain, "test", n, seed, size), seed)


def clear_real_caches() -> None:
    """Forget the cached real features and baselines (tests that swap the data in call this)."""
    for cached in (fashion_real_features, face_real_features, real_baseline):
        cached.cache_clear()


def ranking(judged: dict[str, dict], metric: str = "fid") -> dict:
    """Do the judges order the generators alike? `judged`: {generator: judge(...)'s result}, all on the
    same judges (lower `metric` is better). Returns {"order": {network: generators, best first},
    "agrees": bool, "disagreements": [...], "sentence": "ranking agrees on every judge ..." or
    "X ahead of Y on A but behind on B; ..."}."""
    names = list(judged)
    if len(names) < 2:
        raise ValueError("A ranking needs at least two generators.")
    networks = list(judged[names[0]])
    if any(list(judged[name]) != networks for name in names):
        raise ValueError("Every generator must be judged by the same networks to be ranked.")
    order = {net: sorted(names, key=lambda name: judged[name][net][metric]) for net in networks}
    disagreements, words = [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ahead = [net for net in networks if judged[a][net][metric] < judged[b][net][metric]]
            behind = [net for net in networks if net not in ahead]
            if ahead and behind:
                disagreements.append({"generator": a, "other": b, "ahead_on": ahead, "behind_on": behind})
                words.append(f"{a} ahead of {b} on {_listed(ahead)} but behind on {_listed(behind)}")
    label = "FID" if metric == "fid" else metric
    if words:
        sentence = f"ranking by {label} differs between judges: " + "; ".join(words)
    else:
        sentence = (f"ranking by {label} agrees on every judge ({', '.join(networks)}): "
                    + " ahead of ".join(order[networks[0]]))
    return {"metric": metric, "order": order, "agrees": not words, "disagreements": disagreements,
            "sentence": sentence}


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def judge_table(judged: dict[str, dict]) -> str:
    """A markdown table: one row per generator, and per judge its FID, KID, precision and recall, each
    with real vs real at the same n in brackets. `judged`: {generator: judge(...)'s result}."""
    names = list(judged)
    networks = list(judged[names[0]])
    head = ["generator"] + [f"{net} {what}" for net in networks for what in ("FID", "KID", "P", "R")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name]
        for net in networks:
            s = judged[name][net]
            cells += [f"{_figure(s['fid'])} ({_figure(s['real_fid'])})",
                      f"{_figure(s['kid_mean'], kid=True)} ({_figure(s['real_kid_mean'], kid=True)})",
                      f"{s['precision']:.2f} ({s['real_precision']:.2f})",
                      f"{s['recall']:.2f} ({s['real_recall']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(value: float, kid: bool = False) -> str:
    """FID: one decimal from 10 up, else two. KID (unscaled, any size): whole numbers from 100 up, two
    decimals from 1 up, three significant digits below."""
    size = abs(value)
    if kid:
        return f"{value:.0f}" if size >= 100 else f"{value:.2f}" if size >= 1 else f"{value:.3g}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}"


INCEPTION_MAX_N = 1000  # Inception v3 at 299 px is slow on a CPU: the standard FID uses at most this many


def inception_fid(samples: torch.Tensor, domain: str, value_range, seed: int = 0) -> dict:
    """The standard FID (Inception v3 pool3 features, through torchmetrics and torch-fidelity's weights) of
    at most INCEPTION_MAX_N samples against as many real test images, beside real train vs real test ->
    {"n", "fid", "real_fid"}. Its weights download at run time; where that fails (offline) or torch-fidelity
    is not installed -> {"skipped": a sentence saying why}, never an exception. torch-fidelity is not a
    dev dependency: its wheel installs a top-level package called `tests`, which hides this project's."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        # normalize: images in [0, 1]; the real (test) statistics survive reset(), so the test images go
        # through Inception once for both figures
        fid_metric = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False)
    except Exception as exc:  # ImportError, or URLError/OSError when the weights cannot be downloaded
        return {"skipped": f"The standard Inception FID was skipped: torch-fidelity's Inception weights could not "
                           f"be loaded ({exc.__class__.__name__}: not installed, or offline)."}
    n, size = min(len(samples), INCEPTION_MAX_N), samples.shape[-1]

    def colour(images: torch.Tensor, value_range) -> torch.Tensor:
        x = fashion_input(images, value_range) if domain == "fashion" else to_unit_range(images, value_range)
        return x.expand(-1, 3, -1, -1).clamp(0, 1)

    if domain == "fashion":
        real_range, (test, train) = (0, 255), (fashion_real_images(split, n, seed) for split in ("test", "train"))
    else:
        from core.data.faces import face_split

        real_range, (test, train) = (0, 1), (face_split(split, n, size=size).images for split in ("test", "train"))
    fid_metric.update(colour(test, real_range), real=True)
    scores = {}
    for key, images, images_range in (("fid", samples[:n], value_range), ("real_fid", train, real_range)):
        fid_metric.update(colour(images, images_range), real=False)
        scores[key] = round(float(fid_metric.compute()), 4)
        fid_metric.reset()  # forgets the generated images only
    return {"n": n, **scores}


def lite0_features(images: torch.Tensor, value_range, size: int = 64, batch: int = 250) -> torch.Tensor:
    """ImageNet EfficientNet-Lite0's head activations [N, 1280], averaged over positions (the analogue of
    Inception's pool3 features in the original FID): a feature network that never saw the data, beside
    the project's own classifiers. Grey [N, 1, H, W] or colour [N, 3, H, W] images in `value_range`,
    enlarged bilinearly to size x size (64: the head map is then 2x2); grey is copied to the three colours."""
    from core.backbones import load_backbone

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"EfficientNet-Lite0 features need [N, 1, H, W] or [N, 3, H, W] images, "
                         f"got shape {tuple(images.shape)}.")
    # Loaded outside no_grad/inference mode: the backbone is cached and shared with code that
    # differentiates through it (core.vae.feature_loss).
    backbone = load_backbone("efficientnet_lite0")
    device = backbone.mean.device
    out = []
    with torch.no_grad():
        for chunk in images.split(batch):
            x = F.interpolate(to_unit_range(chunk, value_range), size=(size, size), mode="bilinear",
                              align_corners=False).clamp(0, 1)
            out.append(backbone(x.expand(-1, 3, -1, -1).to(device), ["head"])["head"].float().mean(dim=(2, 3)).cpu())
    return torch.cat(out)


def compare_sets(feature_fn, sets: dict[str, torch.Tensor], real_test: torch.Tensor, real_train: torch.Tensor) -> dict:
    """FID/KID and improved precision/recall (k = 3) of each set's features against the real test
    images', and "real": the real training images against the same test images, at the same n (what
    a perfect model scores). `feature_fn` maps a set of images to [N, dim] features. (judge() does the
    same with the JUDGES' features and cached real sets.)"""
    test_feats = feature_fn(real_test)
    result = {key: score(feature_fn(images), test_feats) for key, images in sets.items()}
    result["real"] = score(feature_fn(real_train), test_feats)
    return result


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] images, edges reflected: a calibrated way to damage
    real images and see how far FID/KID move (bench.fid_baseline, tests)."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).to(images.dtype)
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
