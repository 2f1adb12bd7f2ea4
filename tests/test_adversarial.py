import math

import pytest
import torch

from core.adversarial import (CLASSIFIERS, attack, fashion_classifier, load_classifier, predict,
                              run_attack, success_rate)
from core.metrics import classifiers
from core.metrics.classifiers import FashionClassifier, FashionClassifierConfig
from core.registry import shipped_path
from core.runtime import make_generator
from tests.conftest import real_fashion_test_split

EPSILON = 8 / 255


@pytest.fixture(scope="module")
def fashion():
    assert shipped_path("classifier", "fashion_mnist").is_file(), "the shipped Fashion-MNIST classifier is missing"
    return load_classifier("fashion_mnist")


@pytest.fixture(scope="module")
def clothes():
    """The first 100 Fashion-MNIST test images, [100, 1, 32, 32] in [0, 1], and their labels."""
    from core.data.fashion_mnist import to_float

    images, labels = real_fashion_test_split()
    return to_float(images[:100]), labels[:100]


@pytest.fixture(scope="module")
def lite0():
    return load_classifier("efficientnet_lite0")


@pytest.fixture(scope="module")
def hopper():
    """Grace Hopper in uniform, 160 px: small enough for a quick attack, large enough to be recognised."""
    from core.data.images import center_crop_square, pil_to_tensor, prepare_image

    image, _ = prepare_image("assets/examples/dream/grace_hopper.jpg")
    return pil_to_tensor(center_crop_square(image, 160))


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖∞"""
    return float((a - b).abs().max())


# --- the tests ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_perturbation_stays_in_the_ball_and_pixels_in_unit_range(fashion, clothes, method):
    images, labels = clothes[0][:32], clothes[1][:32]
    settings = dict(random_start=True, generator=make_generator(0), step_size=0.02) if method == "pgd" else {}
    steps = list(attack(fashion, images, labels, method=method, epsilon=EPSILON, **settings))
    assert [s.step for s in steps] == list(range(len(steps))) and len(steps) == (11 if method == "pgd" else 2)
    for step in steps:
        assert distance(step.images, images) <= EPSILON + 1e-6
        assert step.images.min() >= 0 and step.images.max() <= 1
        assert torch.allclose(step.probabilities.sum(-1), torch.ones(32))
    assert distance(steps[-1].images, images) > EPSILON - 1e-6  # the budget is used, not wasted


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_epsilon_zero_changes_nothing(fashion, clothes, method):
    images = clothes[0][:16]
    settings = dict(random_start=True, generator=make_generator(1)) if method == "pgd" else {}
    steps = list(attack(fashion, images, method=method, epsilon=0, **settings))
    assert all(torch.equal(s.images, images) for s in steps)
    assert torch.equal(steps[-1].probabilities, steps[0].probabilities) and not steps[-1].success.any()


def test_pgd_at_8_of_255_fools_the_shipped_classifier_on_most_test_images(fashion, clothes):
    images, labels = clothes
    assert (predict(fashion, images) == labels).float().mean() > 0.85  # it is a good classifier, clean
    assert success_rate(fashion, images, labels, "pgd", EPSILON, steps=10) > 0.5


def test_fgsm_raises_the_loss_above_the_clean_loss(fashion, clothes):
    clean, attacked = attack(fashion, *clothes, method="fgsm", epsilon=EPSILON)
    assert attacked.loss.mean() > 2 * clean.loss.mean()
    assert (attacked.loss > clean.loss).float().mean() > 0.9  # on nearly every image, not on average only


def test_the_same_seed_gives_the_same_attack(fashion, clothes):
    def pgd(seed):
        return run_attack(fashion, clothes[0][:16], method="pgd", epsilon=EPSILON, steps=3, random_start=True,
                          generator=make_generator(seed))
    first, again, other = pgd(5), pgd(5), pgd(6)
    assert torch.equal(first.images, again.images) and torch.equal(first.probabilities, again.probabilities)
    assert not torch.equal(first.images, other.images)


# --- targets, projection, frozen weights ----------------------------------------------

def test_targeted_pgd_walks_toward_the_target_class(fashion, clothes):
    images = clothes[0][:32]
    target = (predict(fashion, images) + 1) % 10  # one target per image, never its current class
    steps = list(attack(fashion, images, method="pgd", epsilon=16 / 255, steps=20, target=target))
    assert (steps[-1].loss < steps[0].loss).all()  # L(f(x'), t) falls for every image
    assert steps[-1].success.float().mean() > 0.5
    assert torch.equal(steps[-1].success, steps[-1].predictions == target)


def test_projection_clips_to_the_ball_and_the_unit_box(fashion, clothes):
    images = clothes[0][:8]
    epsilon = 0.05
    # A step of 1 overshoots everywhere: wherever the gradient is not zero, Π leaves each pixel on the
    # boundary of [max(x − ε, 0), min(x + ε, 1)].
    moved = run_attack(fashion, images, method="pgd", epsilon=epsilon, step_size=1.0, steps=1).images
    low, high = (images - epsilon).clamp(0, 1), (images + epsilon).clamp(0, 1)
    on_boundary = torch.isclose(moved, low) | torch.isclose(moved, high)
    changed = moved != images
    assert changed.float().mean() > 0.5 and on_boundary[changed].all()
    assert (images[changed & (images == 0)] < moved[changed & (images == 0)]).all()  # black pixels can only brighten


def test_weights_mode_and_grad_flags_are_left_as_they_were(clothes):
    # A model being trained: in training mode, weights that want gradients.
    model = FashionClassifier(FashionClassifierConfig()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_attack(fashion_classifier(model), clothes[0][:8], clothes[1][:8], method="pgd", epsilon=EPSILON, steps=2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch norm's statistics too
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_a_shared_backbone_stays_frozen_in_eval_mode(lite0, hopper):
    backbone = lite0.network.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    run_attack(lite0, hopper, method="fgsm", epsilon=1 / 255)
    assert not any(m.training for m in backbone.modules())  # restoring only the top module's mode broke this once
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


# --- bad input: a sentence or a sane result ------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    (dict(epsilon=-0.01), "at least 0"),
    (dict(epsilon=math.nan), "at least 0"),
    (dict(epsilon=math.inf), "at least 0"),
    (dict(epsilon=EPSILON, method="pgd", steps=0), "between 1"),
    (dict(epsilon=EPSILON, method="pgd", steps=2.5), "between 1"),
    (dict(epsilon="a lot"), "at least 0"),
    (dict(epsilon=EPSILON, method="cw"), "Unknown attack"),
    (dict(epsilon=EPSILON, method="pgd", step_size=0), "step size"),
    (dict(epsilon=EPSILON, target=10), "classes 0 to 9"),
    (dict(epsilon=EPSILON, target=-1), "classes 0 to 9"),
    (dict(epsilon=EPSILON, target=0.5), "whole class numbers"),
    (dict(epsilon=EPSILON, target=[1, 2, 3]), "one per image"),
    (dict(epsilon=EPSILON, random_start=True, generator=make_generator(0)), "choose PGD"),
    (dict(epsilon=EPSILON, method="pgd", random_start=True), "torch.Generator"),
])
def test_bad_settings_are_refused_with_a_sentence(fashion, clothes, settings, words):
    with pytest.raises(ValueError, match=words):
        attack(fashion, clothes[0][:4], **settings)  # refused at the call, before the first step


def test_a_target_equal_to_the_current_class_is_refused(fashion, clothes):
    images = clothes[0][:4]
    current = predict(fashion, images)
    with pytest.raises(ValueError, match="already classifies image 0 as .* choose another target"):
        attack(fashion, images, method="pgd", epsilon=EPSILON, target=current)


def test_bad_images_and_labels_are_refused(fashion, lite0, clothes):
    with pytest.raises(ValueError, match="outside the stated"):
        attack(fashion, clothes[0][:2] * 255, epsilon=EPSILON)
    with pytest.raises(ValueError, match="grey 28x28 or 32x32"):
        attack(fashion, torch.rand(2, 3, 32, 32), epsilon=EPSILON)
    with pytest.raises(ValueError, match="at least 32"):
        attack(lite0, torch.rand(1, 3, 16, 16), epsilon=EPSILON)
    with pytest.raises(ValueError, match="classes 0 to 9"):
        attack(fashion, clothes[0][:2], labels=[3, 12], epsilon=EPSILON)
    with pytest.raises(ValueError, match="Unknown classifier"):
        load_classifier("resnet")


def test_numbers_from_numpy_or_a_number_box_are_accepted(fashion, clothes):
    import numpy as np

    images = clothes[0][:4]
    expected = run_attack(fashion, images, method="pgd", epsilon=EPSILON, steps=3)
    given = run_attack(fashion, images, method="pgd", epsilon=np.float32(EPSILON), steps=3.0, target=None)
    assert torch.allclose(given.images, expected.images)


def test_a_huge_epsilon_is_the_whole_unit_box(fashion, clothes):
    images = clothes[0][:8]
    huge = run_attack(fashion, images, method="fgsm", epsilon=1e6).images
    assert torch.equal(huge, run_attack(fashion, images, method="fgsm", epsilon=1.0).images)
    assert huge.min() >= 0 and huge.max() <= 1


# --- EfficientNet-Lite0 on a photo -----------------------------------------------------------

def test_lite0_recognises_the_photo_and_a_targeted_attack_turns_it_into_a_goldfish(lite0, hopper):
    assert len(lite0.class_names) == 1000 and lite0.class_names[0] == "tench"
    goldfish = lite0.class_names.index("goldfish")
    steps = list(attack(lite0, hopper, method="pgd", epsilon=2 / 255, steps=10, target=goldfish))
    assert lite0.class_names[int(steps[0].predictions)] == "military uniform"
    assert steps[-1].predictions.item() == goldfish and steps[-1].probabilities[0, goldfish] > 0.5
    assert distance(steps[-1].images, hopper) <= 2 / 255 + 1e-6  # invisible: at most 2 grey levels per pixel


def test_every_listed_classifier_loads_or_says_how_to_make_it():
    assert len(load_classifier("fashion_mnist").class_names) == 10
    if shipped_path("classifier", "fashion_mnist_robust").is_file():
        assert load_classifier("fashion_mnist_robust").channels == 1
    else:
        with pytest.raises(ValueError, match="python -m core.train classifier .*--adversarial-epsilon"):
            load_classifier("fashion_mnist_robust")
    assert set(CLASSIFIERS) == {"fashion_mnist", "fashion_mnist_robust", "efficientnet_lite0"}


# --- adversarial training, on tiny data ---------------------------------------------------------

def test_adversarial_training_writes_its_own_checkpoint_and_its_loss_falls(tmp_path, monkeypatch):
    from tests.test_metrics import _tiny_fashion, _train_args

    _tiny_fashion(tmp_path)
    # The "shipped" checkpoints live in tmp_path here, so the default output can be checked.
    monkeypatch.setattr(classifiers, "shipped_path", lambda technique, name: tmp_path / f"{name}.pt")
    with pytest.raises(ValueError, match="must not overwrite fashion_mnist.pt"):
        classifiers.train_main(_train_args(tmp_path, out=str(tmp_path / "fashion_mnist.pt"), adversarial_epsilon=0.1))
    path = classifiers.train_main(_train_args(tmp_path, out=None, epochs=4, adversarial_epsilon=0.1,
                                              pgd_steps=3, shift=0))
    assert path == tmp_path / "fashion_mnist_robust.pt" and path.with_suffix(".json").is_file()
    assert not (tmp_path / "fashion_mnist.pt").exists()
    card = classifiers.load_checkpoint(path).card
    assert card["adversarial_training"]["epsilon"] == 0.1 and card["adversarial_training"]["pgd_steps"] == 3
    losses = [c["train_loss"] for c in card["curves"]]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert 0 <= card["metrics"]["pgd_test_accuracy"] <= card["metrics"]["test_accuracy"] <= 1
    robust = fashion_classifier(classifiers.load_fashion_classifier(str(path)))
    assert run_attack(robust, torch.rand(2, 28, 28), method="fgsm", epsilon=0.1).images.shape == (2, 1, 32, 32)


def test_adversarial_training_settings_are_checked(tmp_path):
    from tests.test_metrics import _train_args

    with pytest.raises(ValueError, match="between 1"):
        classifiers.train_main(_train_args(tmp_path, adversarial_epsilon=0.1, pgd_steps=0))
    with pytest.raises(ValueError, match="--adversarial-fraction"):
        classifiers.train_main(_train_args(tmp_path, adversarial_epsilon=0.1, adversarial_fraction=0))
    with pytest.raises(ValueError, match="Fashion-MNIST classifier only"):
        classifiers.train_main(_train_args(tmp_path, dataset="faces", adversarial_epsilon=0.1))


def test_an_epsilon_can_be_written_as_a_fraction():
    import argparse

    parser = argparse.ArgumentParser()
    classifiers.add_train_arguments(parser)
    assert parser.parse_args(["--adversarial-epsilon", "8/255"]).adversarial_epsilon == 8 / 255
    assert parser.parse_args([]).adversarial_epsilon == 0  # off unless asked for
