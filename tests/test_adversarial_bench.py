"""bench.adversarial end to end, tiny: 16 Fashion-MNIST test images, the example photos at 64 px, and the
robust classifier missing (as before it is trained) or stood in for by the plain one."""
import json

import pytest
import torch

import bench.adversarial as adversarial_bench
import bench.common
import core.adversarial
import core.registry
from bench.report import MISSING, fill, table
from core.adversarial import fashion_classifier
from core.metrics.classifiers import load_fashion_classifier
from tests.conftest import require

N = 16
ROBUST_ROWS = 3  # the robust classifier's FGSM and PGD success rates and its clean accuracy


@pytest.fixture
def tiny_world(monkeypatch, tmp_path):
    """Results go to tmp_path; photos are attacked and timed at 64 px."""
    try:
        adversarial_bench.test_images(1)
    except FileNotFoundError:
        require(False, "Fashion-MNIST is not installed: run `sh tests/install.sh` "
                       "(apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(adversarial_bench, "PHOTO_SIZE", 64)
    monkeypatch.setattr(adversarial_bench, "SPEED_SIZE", 64)
    return tmp_path


def robust_missing(monkeypatch, tmp_path):
    """core.adversarial.load_classifier as it behaves before the robust classifier exists (its real sentence)."""
    real_path = core.registry.shipped_path
    monkeypatch.setattr(core.registry, "shipped_path",
                        lambda technique, name: tmp_path / "nothing.pt" if name == adversarial_bench.ROBUST
                        else real_path(technique, name))
    monkeypatch.setattr(adversarial_bench, "load", lambda name: core.adversarial.load_classifier.__wrapped__(name))


def test_the_bench_writes_every_figure_its_rows_show(tiny_world, monkeypatch):
    robust_missing(monkeypatch, tiny_world)
    figures = adversarial_bench.main(["--quick", "--n", str(N), "--threads", "1"])
    saved = json.loads((tiny_world / "adversarial.quick.json").read_text())["figures"]
    assert saved == json.loads(json.dumps(figures))
    assert figures["n"] == N and figures["threads"] == 1 and figures["pgd_steps"] == 10
    assert figures["missing"] == ["fashion_mnist_robust"] and adversarial_bench.ROBUST not in figures
    assert "python -m core.train classifier" in figures["fashion_mnist_robust_note"]

    plain = figures["fashion_mnist"]
    assert plain["clean_accuracy"] + plain["clean_error"] == pytest.approx(1)
    assert plain["card_test_accuracy"] > 0.9 and plain["clean_accuracy"] > 0.8
    for method in ("fgsm", "pgd"):
        rates = [plain["success"][method][str(k)] for k in adversarial_bench.EPSILONS]
        assert all(0 <= rate <= 1 for rate in rates) and rates[-1] > rates[0], (method, rates)
    # PGD at 8/255 fools the shipped classifier on most images, and at least as often as one FGSM step.
    assert plain["success"]["pgd"]["8"] >= max(0.5, plain["success"]["fgsm"]["8"])

    photos = figures["photos"]
    assert photos["n"] == len(photos["photos"]) == len(photos["before"]) == 4 and photos["size"] == 64
    for method in ("fgsm", "pgd"):
        for k in adversarial_bench.EPSILONS:
            after = photos["after"][method][str(k)]
            changed = sum(a != b["class"] for a, b in zip(after, photos["before"])) / 4
            assert photos["success"][method][str(k)] == changed

    speed = figures["speed"]
    assert speed["size"] == 64 and speed["steps"] == 10 and speed["threads"] == 1 and speed["runs"] == 3
    assert speed["meets_target"] == (0 < speed["median_s"] <= speed["target_s"] == adversarial_bench.SPEED_TARGET_S)
    assert torch.get_num_threads() == 1  # the speed figure's one thread is given back

    rows = table(tiny_world, ["adversarial"])
    assert rows.count("`bench/adversarial.py`") == len(adversarial_bench.README_ROWS)
    assert rows.count(MISSING) == ROBUST_ROWS and "(quick)" in rows  # only the robust classifier's figures wait


def test_with_the_robust_classifier_every_row_is_filled(tiny_world, monkeypatch):
    stand_in = fashion_classifier(load_fashion_classifier().requires_grad_(False), adversarial_bench.ROBUST)
    real = adversarial_bench.load
    monkeypatch.setattr(adversarial_bench, "load", lambda name: stand_in if name == adversarial_bench.ROBUST
                        else real(name))
    figures = adversarial_bench.main(["--quick", "--n", "8", "--threads", "1"])
    assert figures["missing"] == []
    robust, plain = figures[adversarial_bench.ROBUST], figures[adversarial_bench.PLAIN]
    assert robust["success"] == plain["success"] and robust["clean_accuracy"] == plain["clean_accuracy"]
    for row in adversarial_bench.README_ROWS:  # every figure the README's table shows was measured
        fill(row["figure"] + row["measured"] + row["reference"], figures)
    assert MISSING not in table(tiny_world, ["adversarial"])


def test_the_attacks_and_their_settings():
    assert adversarial_bench.settings("fgsm", 4) == {"method": "fgsm", "epsilon": 4 / 255}
    assert adversarial_bench.settings("pgd", 8) == {"method": "pgd", "epsilon": 8 / 255, "steps": 10}
    names, photos = adversarial_bench.example_photos(48)
    assert names == ["clouds", "grace_hopper", "lion", "tower"] and photos.shape == (4, 3, 48, 48)
    for bad in ("0", "-5"):  # refused before anything runs (0 is not "the default")
        with pytest.raises(SystemExit):
            adversarial_bench.main(["--n", bad])
