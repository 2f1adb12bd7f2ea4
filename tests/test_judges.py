"""The judges of sample quality (core.metrics.quality.JUDGES): the second Fashion-MNIST network,
precision/recall on every judge's features, judge(), the ranking sentence and the benchmarks' tables."""
import json

import pytest
import torch

from core.checkpoints import load_checkpoint
from core.metrics import classifiers, quality
from core.metrics.fid import fid, kid, mmd2_unbiased
from core.metrics.precision_recall import precision_recall
from core.registry import shipped_path
from tests.conftest import real_fashion_test_split, require_module

RESULT_KEYS = {"n", "fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall", "real_fid",
               "real_kid_mean", "real_kid_std", "real_precision", "real_recall"}


@pytest.fixture(scope="module")
def clothes():
    """800 real Fashion-MNIST test images as [800, 1, 32, 32] in [0, 1] and their labels."""
    from core.data.fashion_mnist import to_float

    assert shipped_path("classifier", classifiers.RESNET_NAME).is_file(), "the second Fashion-MNIST judge is missing"
    images, labels = real_fashion_test_split()
    return to_float(images[:800]), labels[:800]


# --- the second Fashion-MNIST network ----------------------------------------------------------

def test_the_second_judge_differs_from_the_first_in_architecture_seed_and_augmentation():
    card = load_checkpoint(shipped_path("classifier", classifiers.RESNET_NAME)).card
    first = load_checkpoint(shipped_path("classifier", classifiers.FASHION_NAME)).card
    model = classifiers.load_fashion_resnet()
    layers = [type(m) for m in model.modules()]
    assert torch.nn.MaxPool2d not in layers and classifiers._Residual in layers
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules() if m is not model.head)  # no dense bottleneck
    assert model.cfg.feature_dim == 256 and "--seed" in card["command"] and "--seed" not in first["command"]
    assert card["arch"] == "resnet" and card["erase"] > 0 and card["shift"] != first["shift"]
    assert card["metrics"]["test_accuracy"] >= 0.90
    assert shipped_path("classifier", classifiers.RESNET_NAME).stat().st_size <= 2 * 1024 * 1024


def test_the_second_judge_names_real_clothes(clothes):
    images, labels = clothes
    predicted = classifiers.fashion_probabilities(images, (0, 1), model=classifiers.load_fashion_resnet()).argmax(-1)
    assert float((predicted == labels).float().mean()) > 0.88  # measured, not read from the card


@pytest.mark.parametrize("network", ["classifier", "resnet", "lite0"])
@pytest.mark.parametrize("damage, levels", [("noise", [0.0, 0.05, 0.1, 0.2, 0.4]), ("blur", [0.0, 0.6, 1.0, 1.5, 2.5])])
def test_real_vs_real_fid_is_small_and_grows_with_noise_and_blur(clothes, network, damage, levels):
    reference, images = clothes[0][:400], clothes[0][400:]
    ref_feats = quality.features(network, "fashion", reference, (0, 1))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    fids, kids = [], []
    for level in levels:
        if level == 0:
            damaged = images
        elif damage == "noise":
            damaged = (images + level * noise).clamp(0, 1)
        else:
            damaged = quality.gaussian_blur(images, level)
        feats = quality.features(network, "fashion", damaged, (0, 1))
        fids.append(fid(ref_feats, feats))
        kids.append(kid(ref_feats, feats, subsets=20, subset_size=200).mean)
    assert fids == sorted(fids) and len(set(fids)) == len(fids), fids
    assert kids == sorted(kids) and len(set(kids)) == len(kids), kids
    assert fids[0] < fids[-1] / 5, fids  # two real halves lie far closer than the worst damage


def test_erasing_fills_one_rectangle_per_image_with_one_grey():
    x = torch.ones(64, 1, 32, 32)
    erased = classifiers._erase(x, torch.Generator().manual_seed(0), 1.0)
    for image in erased[:, 0]:
        changed = (image != 1).nonzero()
        rows, cols = changed[:, 0], changed[:, 1]
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(changed) == height * width  # one filled rectangle
        assert 0.015 * 1024 <= len(changed) <= 0.21 * 1024
        assert image[image != 1].unique().numel() == 1  # one grey
    again = classifiers._erase(x, torch.Generator().manual_seed(0), 1.0)
    assert torch.equal(erased, again)
    assert torch.equal(classifiers._erase(x, torch.Generator().manual_seed(0), 0.0), x)
    some = classifiers._erase(torch.ones(400, 1, 32, 32), torch.Generator().manual_seed(1), 0.5)
    assert 150 < int((some != 1).flatten(1).any(1).sum()) < 250


def test_training_the_second_judge_writes_its_own_checkpoint(tmp_path):
    from tests.test_metrics import _tiny_fashion, _train_args

    _tiny_fashion(tmp_path)
    args = _train_args(tmp_path, arch="resnet", erase=0.5, seed=7, epochs=2, out=str(tmp_path / "resnet.pt"))
    card = load_checkpoint(classifiers.train_main(args)).card
    assert card["arch"] == "resnet" and card["erase"] == 0.5 and "global average" in card["features"]
    model = classifiers.load_fashion_resnet(str(tmp_path / "resnet.pt"))
    assert classifiers.fashion_features(torch.rand(3, 28, 28), (0, 1), model=model).shape == (3, 256)
    with pytest.raises(ValueError, match="--erase"):
        classifiers.train_main(_train_args(tmp_path, arch="resnet", erase=1.5))
    with pytest.raises(ValueError, match="Fashion-MNIST judges only"):
        classifiers.train_main(_train_args(tmp_path, dataset="faces", arch="resnet"))
    with pytest.raises(ValueError, match="convnet"):
        classifiers.train_main(_train_args(tmp_path, arch="resnet", adversarial_epsilon=8 / 255))


# --- precision and recall on every judge's features -------------------------------------------

def _real_images(domain: str, n: int) -> torch.Tensor:
    if domain == "fashion":
        from core.data.fashion_mnist import to_float

        return to_float(real_fashion_test_split()[0][:n])
    from core.data.faces import face_split

    return face_split("test", n, size=32).images


@pytest.mark.parametrize("domain, network", [(d, net) for d, nets in quality.JUDGES.items() for net in nets])
def test_precision_recall_is_one_for_a_set_against_itself_and_recall_falls_when_collapsed(domain, network):
    images = _real_images(domain, 120)
    feats = quality.features(network, domain, images, (0, 1))
    itself = precision_recall(feats, quality.features(network, domain, images.clone(), (0, 1)), k=3)
    assert (itself.precision, itself.recall) == (1.0, 1.0)
    collapsed = precision_recall(feats, quality.features(network, domain, images[5:6].repeat(120, 1, 1, 1), (0, 1)))
    assert collapsed.precision == 1.0  # the one image is real: inside the real manifold
    assert collapsed.recall <= 2 / 120  # but it covers (at most) itself


# --- judge() ------------------------------------------------------------------------------------

def test_judge_gives_every_network_with_its_real_baseline():
    from core.data.fashion_mnist import to_float

    quality.clear_real_caches()
    samples = quality.gaussian_blur(to_float(quality.fashion_real_images("train", 60, seed=5)), 1.0)
    judged = quality.judge(samples, "fashion", (0, 1))
    assert list(judged) == list(quality.JUDGES["fashion"])
    for network, result in judged.items():
        assert set(result) == RESULT_KEYS and result["n"] == 60, network
        assert result["fid"] > result["real_fid"] >= 0, network  # blurred clothes against real vs real
        # The baseline is real training images against the same real test images the samples faced.
        train = quality.real_features(network, "fashion", "train", 60)
        test = quality.real_features(network, "fashion", "test", 60)
        assert result["real_fid"] == round(fid(train, test), 4)
        assert result["real_precision"] == round(precision_recall(test, train).precision, 4)
    assert quality.fashion_quality(samples, (0, 1)) == judged["classifier"]  # the thin wrapper


def test_faces_are_judged_at_their_own_resolution_by_both_face_judges():
    from core.data.faces import face_split

    samples = face_split("train", 40, size=32, start=500).images
    judged = quality.judge(samples * 2 - 1, "faces", (-1, 1))
    assert list(judged) == ["attributes", "lite0"] and all(set(r) == RESULT_KEYS for r in judged.values())
    # The 32-pixel attribute classifier judges 32-pixel faces, against real faces drawn at 32 pixels.
    expected = classifiers.face_features(face_split("test", 40, size=32).images,
                                         model=classifiers.load_face_classifier(size=32))
    assert torch.equal(quality.real_features("attributes", "faces", "test", 40, size=32), expected)
    assert quality.face_quality(samples, (0, 1))["size"] == 32


def test_judge_refuses_what_it_cannot_judge():
    with pytest.raises(ValueError, match="Judges exist for"):
        quality.judge(torch.rand(10, 1, 32, 32), "music", (0, 1))
    with pytest.raises(ValueError, match=r"\[N, 3, H, H\]"):
        quality.judge(torch.rand(10, 1, 32, 32), "faces", (0, 1))
    with pytest.raises(ValueError, match="No judge"):
        quality.features("resnet", "faces", torch.rand(4, 3, 32, 32), (0, 1))


# --- the ranking sentence ---------------------------------------------------------------------

def _judged(**fids):
    return {net: {"fid": value} for net, value in fids.items()}


def test_the_ranking_sentence_says_when_the_judges_agree_and_flips_when_they_do_not():
    agree = quality.ranking({"dcgan": _judged(a=50, b=20, c=300), "diffusion": _judged(a=45, b=18, c=250)})
    assert agree["agrees"] and agree["disagreements"] == []
    assert agree["sentence"] == "ranking by FID agrees on every judge (a, b, c): diffusion ahead of dcgan"
    flipped = quality.ranking({"dcgan": _judged(a=50, b=20, c=300), "diffusion": _judged(a=45, b=25, c=320)})
    assert not flipped["agrees"]
    assert flipped["sentence"] == "ranking by FID differs between judges: dcgan ahead of diffusion on b and c but behind on a"
    assert flipped["order"] == {"a": ["diffusion", "dcgan"], "b": ["dcgan", "diffusion"], "c": ["dcgan", "diffusion"]}
    three = quality.ranking({"x": _judged(a=1, b=1), "y": _judged(a=2, b=3), "z": _judged(a=3, b=2)})
    assert three["sentence"] == "ranking by FID differs between judges: y ahead of z on a but behind on b"
    with pytest.raises(ValueError, match="same networks"):
        quality.ranking({"x": _judged(a=1), "y": _judged(b=1)})


def _full(fid_value, real=1.5):
    return {"n": 100, "fid": fid_value, "kid_mean": 0.5, "kid_std": 0.1, "kid_subset_size": 50, "precision": 0.8,
            "recall": 0.4, "real_fid": real, "real_kid_mean": -0.01, "real_kid_std": 0.1, "real_precision": 0.9,
            "real_recall": 0.9}


def test_the_judge_table_has_a_row_per_generator_and_four_columns_per_judge():
    text = quality.judge_table({"dcgan": {"a": _full(52.34), "b": _full(7.1)},
                                "cgan": {"a": _full(9.0), "b": _full(3.0)}})
    lines = text.splitlines()
    assert lines[0] == "| generator | a FID | a KID | a P | a R | b FID | b KID | b P | b R |"
    assert lines[2] == "| dcgan | 52.3 (1.50) | 0.5 (-0.01) | 0.80 (0.90) | 0.40 (0.90) | 7.10 (1.50) | 0.5 (-0.01) " \
                       "| 0.80 (0.90) | 0.40 (0.90) |"
    assert len(lines) == 4


def test_the_benchmarks_tables_carry_the_ranking_sentence(tmp_path):
    from bench import diffusion_quality, gan_quality, report

    figures = {"n": 100, "face_n": 100, "judges": {}, "ranking": {}}
    for name, a, b in (("dcgan_fashion", 50, 20), ("cgan_fashion", 9, 25)):
        figures[name] = {**_full(a), "class_accuracy": 0.9, "domain": "fashion", "judges": {"a": _full(a), "b": _full(b)}}
    figures["wgangp_faces"] = {"fid": 200.0, "real_fid": 1.5}  # (the README's GAN prose quotes both)
    figures["stylegan_faces"] = {"fid": 120.0}
    figures["ranking"]["fashion"] = quality.ranking({k: figures[k]["judges"] for k in ("dcgan_fashion", "cgan_fashion")})
    table = gan_quality.README_TABLE(figures)
    assert "| dcgan_fashion | 50.0 (1.50) |" in table
    assert "Judges: ranking by FID differs between judges: dcgan_fashion ahead of cgan_fashion on b but behind on a." in table
    assert gan_quality.README_TABLE({"n": 10, "dcgan_fashion": {"fid": 3.0}}) is None  # saved before the judges

    # The README must quote the table of a full run, as it quotes the prose.
    record = {"name": "gan_quality", "date": "2026-01-02", "quick": False, "machine": {}, "figures": figures}
    (tmp_path / "gan_quality.json").write_text(json.dumps(record))
    sentences = report.prose(tmp_path, ["gan_quality"])
    assert sentences[-1] == table
    assert report.prose_missing_from(" ".join(sentences[:-1]), tmp_path, ["gan_quality"]) == [table]
    assert report.prose_missing_from(" ".join(sentences[:-1]) + f"\n\n{table}\n", tmp_path, ["gan_quality"]) == []

    sets = {"ddim_50": _full(45), "dcgan_fashion": _full(50)}
    diffusion = {"n": 100, "judges": {}, "sets": list(sets),
                 **{k: {"n": 100, "judges": {"a": v, "b": v}} for k, v in sets.items()},
                 "ranking": quality.ranking({k: {"a": v, "b": v} for k, v in sets.items()})}
    text = diffusion_quality.README_TABLE(diffusion)
    assert "| ddim_50 |" in text and "ranking by FID agrees on every judge (a, b): ddim_50 ahead of dcgan_fashion" in text
    assert diffusion_quality.sampler_key("DPM++2M", 20) == "dpmpp2m_20"


# --- a well-kept library computes the same FID and KID on the same features ---------------------

def test_fid_and_kid_agree_with_torchmetrics_on_the_second_judge(clothes):
    fid_module = require_module("torchmetrics.image.fid", "torchmetrics is not installed (pip install -r requirements-dev.txt)")
    from torchmetrics.image.kid import KernelInceptionDistance

    class SecondJudge(torch.nn.Module):
        num_features = 256

        def forward(self, images):
            return quality.features("resnet", "fashion", images, (0, 1)).double()  # KID in float64, as ours

    real, other = clothes[0][:300], quality.gaussian_blur(clothes[0][300:600], 0.8)
    ours_real, ours_other = (quality.features("resnet", "fashion", x, (0, 1)) for x in (real, other))
    metric = fid_module.FrechetInceptionDistance(feature=SecondJudge())
    metric.update(real, real=True)
    metric.update(other, real=False)
    assert float(metric.compute()) == pytest.approx(fid(ours_real, ours_other), rel=1e-6)
    assert fid(ours_real, ours_other) > 1  # not a trivial agreement on nothing

    kid_metric = KernelInceptionDistance(feature=SecondJudge(), subsets=1, subset_size=300)
    kid_metric.update(real, real=True)
    kid_metric.update(other, real=False)
    kid_mean, _ = kid_metric.compute()
    assert float(kid_mean) == pytest.approx(mmd2_unbiased(ours_real.double(), ours_other.double()), rel=1e-6)


def test_the_standard_inception_fid_is_skipped_with_a_sentence_when_its_weights_cannot_load(monkeypatch, clothes):
    fid_module = pytest.importorskip("torchmetrics.image.fid")

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", offline)
    result = quality.inception_fid(clothes[0][:50], "fashion", (0, 1))
    assert set(result) == {"skipped"} and "Inception FID was skipped" in result["skipped"] and "OSError" in result["skipped"]


def test_the_standard_inception_fid_path_measures_samples_and_real_vs_real(monkeypatch, clothes):
    """The same code with a small stand-in for Inception (no download): real vs real stays low, noise does not."""
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    real_class = fid_module.FrechetInceptionDistance
    torch.manual_seed(0)
    stand_in = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                   torch.nn.Flatten())

    def small_inception(feature=2048, **kwargs):
        return real_class(feature=stand_in, **kwargs)

    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", small_inception)
    monkeypatch.setattr(quality, "INCEPTION_MAX_N", 300)
    real = quality.inception_fid(clothes[0][:400], "fashion", (0, 1))
    noise = quality.inception_fid(torch.rand(400, 1, 32, 32), "fashion", (0, 1))
    assert real["n"] == noise["n"] == 300 and real["real_fid"] == noise["real_fid"]
    assert noise["fid"] > 10 * max(real["fid"], real["real_fid"])
