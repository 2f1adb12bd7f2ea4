"""The adversarial-examples tab's handlers, called directly with small settings: the real shipped
Fashion-MNIST classifier and EfficientNet-Lite0, a few PGD steps each."""
import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import tabs.adversarial as tab
from core.adversarial import fashion_classifier, load_classifier
from core.data.fashion_mnist import CLASS_NAMES
from core.metrics.classifiers import load_fashion_classifier
from core.registry import ROOT, read_card
from tabs.common import PALETTE, user_errors
from tests.conftest import require

PHOTO = str(ROOT / "assets" / "examples" / "dream" / "grace_hopper.jpg")
OUTPUTS = ("original", "perturbation", "adversarial", "scale", "bars", "curve", "status")


@pytest.fixture(scope="module")
def test_set():
    try:
        return tab.fashion_test_split()
    except ValueError as exc:
        require(False, f"Fashion-MNIST is not installed: run `sh tests/install.sh` ({exc})")


def run(source="photo", image=PHOTO, index=0, network=tab.LITE0, method="pgd", epsilon=2, steps=5, step_size=0,
        target=tab.UNTARGETED, random_start=False, seed=0):
    """Every streamed frame, each as a dict of the outputs."""
    frames = tab.attack_image(source, image, index, network, method, epsilon, steps, step_size, target,
                              random_start, seed)
    return [dict(zip(OUTPUTS, frame)) for frame in frames]


def grey(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB")).astype(int)


def test_pgd_fools_lite0_on_a_photo_within_epsilon_and_streams_as_it_goes():
    frames = run(epsilon=2, steps=5)
    first, last = frames[0], frames[-1]
    assert first["bars"] is None and isinstance(first["original"], Image.Image)  # the old bars are cleared
    assert first["status"].startswith(tab.RUNNING) and "military uniform" in first["status"]
    assert last["status"].startswith("**Fooled**")
    assert "its own answer on the image, “military uniform”" in last["status"]
    original, adversarial = grey(last["original"]), grey(last["adversarial"])
    assert original.shape == adversarial.shape == (tab.PHOTO_SIZE, tab.PHOTO_SIZE, 3)
    change = np.abs(adversarial - original)
    assert change.max() == 2 and change.mean() > 0.5  # the whole budget of 2 grey levels, and no more
    assert "×63.8" in last["scale"] and "ε = 2/255" in last["scale"]
    perturbation = grey(last["perturbation"])
    assert perturbation.min() < 20 and perturbation.max() > 235  # ±ε magnified to black and white
    assert np.abs(perturbation[change == 0] - 128).max() <= 1  # unchanged pixels are mid-grey
    # The first frame gives the two series colour-blind-safe colours: the true class blue, the other orange.
    assert first["curve"].color_map == {"its first answer: military uniform": tab.TRUE_COLOUR,
                                        "the most likely other class": tab.TARGET_COLOUR}
    assert (tab.TRUE_COLOUR, tab.TARGET_COLOUR) == (PALETTE[0], PALETTE[1])
    curve = last["curve"]
    assert sorted(set(curve["step"])) == list(range(6)) and len(curve) == 12  # two series, steps 0 … 5
    mine = curve[curve["class"] == "its first answer: military uniform"]["probability"].tolist()
    assert mine[-1] < 0.05 < mine[0]
    assert isinstance(last["bars"], Image.Image) and last["bars"].width > 600
    assert "As an 8-bit image" in last["status"] and "Notes:** centre-cropped" in last["status"]


def test_a_targeted_attack_on_a_test_image_walks_to_the_target(test_set):
    bag = f"{CLASS_NAMES[8]} (8)"
    last = run(source="fashion", image=None, index=0, network=tab.PLAIN, epsilon=16, steps=20, target=bag)[-1]
    assert "true class “Ankle boot”" in last["status"] and last["status"].startswith("**Fooled**: it now says")
    curve = last["curve"]
    target = curve[curve["class"] == "target: Bag"]["probability"].tolist()
    true = curve[curve["class"] == "true class: Ankle boot"]["probability"].tolist()
    assert len(target) == len(true) == 21 and target[-1] > 0.5 > target[0] and true[-1] < true[0]
    assert last["original"].size == (32 * 7, 32 * 7)  # every pixel of the 32-px image, enlarged 7×


def test_a_test_image_is_attacked_with_the_fashion_classifier_even_when_lite0_is_chosen(test_set):
    last = run(source="fashion", image=None, index=5, network=tab.LITE0, method="fgsm", epsilon=8)[-1]
    assert "attacked with the Fashion-MNIST classifier" in last["status"]
    assert len(last["curve"]) == 4  # FGSM: the start and one step


def test_a_photo_attacked_by_the_fashion_classifier_is_drawn_as_clothes():
    last = run(network=tab.PLAIN, epsilon=8, steps=3)[-1]
    assert last["original"].size == last["adversarial"].size == (32 * 7, 32 * 7)
    assert "drawn as clothes" in last["status"].lower() and "made grey" in last["status"]


def test_the_random_start_follows_the_seed_and_fgsm_ignores_it_with_a_note(test_set):
    def adversarial(seed, method="pgd"):
        frames = run(source="fashion", image=None, network=tab.PLAIN, method=method, epsilon=8, steps=2,
                     random_start=True, seed=seed)
        return grey(frames[-1]["adversarial"]), frames[-1]["status"]
    first, again, other = adversarial(3)[0], adversarial(3)[0], adversarial(4)[0]
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert "random start (seed 3)" in adversarial(3)[1]
    assert "the random start is for PGD" in adversarial(3, "fgsm")[1]


@pytest.mark.parametrize("settings, words", [
    (dict(epsilon=0), "ε = 0 allows no pixel to change"),
    (dict(epsilon=-3), "ε = 0 allows no pixel to change"),
    (dict(method="cw"), "Unknown attack"),
    (dict(network="resnet"), "Unknown network"),
    (dict(source="webcam"), "Unknown source"),
    (dict(image=None), "No photo was given"),
    (dict(target="military uniform (652)"), "already says “military uniform”"),
    (dict(target="unicorn"), "not one of this network's 1000 classes"),
    (dict(target=5000), "from 0 to 999"),
])
def test_bad_settings_are_sentences(settings, words):
    given = dict(source="photo", image=PHOTO, index=0, network=tab.LITE0, method="pgd", epsilon=2, steps=2,
                 step_size=0, target=tab.UNTARGETED, random_start=False, seed=0) | settings
    with pytest.raises(gr.Error, match=words):
        list(user_errors(tab.attack_image)(**given))  # as the tab wires it


def test_a_huge_epsilon_is_the_whole_range_and_steps_are_clamped(test_set):
    last = run(source="fashion", image=None, network=tab.PLAIN, epsilon=1e9, steps=10**9, step_size=1e9,
               method="pgd")[-1]
    assert "ε = 255/255" in last["status"] and f"PGD, {tab.MAX_STEPS} steps of α = 255/255" in last["status"]
    assert "magnified ×1**" in last["scale"]  # ±ε is beyond black and white: not magnified


def test_targets_are_read_by_name_number_or_the_boxes_label():
    names = load_classifier(tab.LITE0).class_names
    assert tab.parse_target(tab.UNTARGETED, names) is None and tab.parse_target(None, names) is None
    assert tab.parse_target("", names) is None and tab.parse_target("none", names) is None
    assert tab.parse_target("goldfish (1)", names) == 1 == tab.parse_target("Goldfish", names)
    assert tab.parse_target("1", names) == 1 == tab.parse_target(1, names) == tab.parse_target(1.0, names)
    assert tab.parse_target("crane (517)", names) == 517 == tab.parse_target("crane", names)
    assert tab.parse_target("crane bird (134)", names) == 134 == tab.parse_target("134", names)
    with pytest.raises(ValueError, match="not one of this network's 10 classes"):
        tab.parse_target("goldfish (1)", list(CLASS_NAMES))  # another network's class, not Trouser
    with pytest.raises(ValueError, match="from 0 to 9"):
        tab.parse_target(2.5, list(CLASS_NAMES))


def test_the_target_box_follows_the_network_and_the_source_moves_the_network():
    imagenet = tab.target_choices(tab.LITE0)
    labels = [choice[0] for choice in imagenet.choices]
    assert len(labels) == 1001 and labels[0] == tab.UNTARGETED and imagenet.value == tab.UNTARGETED
    assert {"crane bird (134)", "crane (517)", "goldfish (1)"} <= set(labels)
    clothes = [choice[0] for choice in tab.target_choices(tab.PLAIN).choices]
    assert clothes == [tab.UNTARGETED, *(f"{name} ({i})" for i, name in enumerate(CLASS_NAMES))]
    with pytest.raises(ValueError, match="Unknown network"):
        tab.target_choices("resnet")
    # A "Try this" button sets the network and the target at once: a target the new network has stays chosen.
    assert tab.target_choices(tab.PLAIN, "Bag (8)").value == "Bag (8)" == tab.target_choices(tab.ROBUST, "bag").value
    assert tab.target_choices(tab.LITE0, "goldfish (1)").value == "goldfish (1)"
    assert tab.target_choices(tab.LITE0, "Bag (8)").value == tab.UNTARGETED  # not an ImageNet class
    assert tab.target_choices(tab.PLAIN, "goldfish (1)").value == tab.UNTARGETED
    assert tab.source_changed(tab.TEST_IMAGE, tab.LITE0).value == tab.PLAIN
    assert tab.source_changed(tab.TEST_IMAGE, tab.PLAIN) == gr.skip()
    assert tab.source_changed(tab.PHOTO, tab.LITE0) == gr.skip()


def test_stop_says_stopped_only_for_a_run_in_progress():
    assert tab.stopped_status("Step 3/10: the network says …") == "**Stopped** at: Step 3/10: the network says …."
    assert tab.stopped_status("**Fooled**: it changed its mind.") == "**Fooled**: it changed its mind."
    assert tab.stopped_status(None) == ""


def test_side_by_side_without_the_robust_classifier_says_how_to_make_it(test_set, monkeypatch):
    monkeypatch.setattr(tab, "robust_shipped", lambda: False)
    picture, note = tab.side_by_side(0, 8, 3, 0)
    assert isinstance(picture, Image.Image) and grey(picture).std() > 0
    assert note.count("| Fashion-MNIST classifier") == 1 and "fooled on test images 0–99" in note
    assert "python -m core.train classifier" in note and "--adversarial-epsilon 8/255" in note
    card, accuracy = tab.side_card(), read_card("classifier", tab.PLAIN)["metrics"]["test_accuracy"]
    assert "python -m core.train classifier" in card and f"Clean test accuracy: plain {100 * accuracy:.1f} %" in card
    assert tab.robust_command().startswith("python -m core.train classifier --dataset fashion")


def test_side_by_side_attacks_both_classifiers(test_set, monkeypatch):
    import core.adversarial

    if not tab.robust_shipped():  # a stand-in: the plain network under the robust one's name
        stand_in = fashion_classifier(load_fashion_classifier().requires_grad_(False), tab.ROBUST)
        real = core.adversarial.load_classifier
        monkeypatch.setattr(core.adversarial, "load_classifier",
                            lambda name: stand_in if name == tab.ROBUST else real(name))
        monkeypatch.setattr(tab, "robust_shipped", lambda: True)
    picture, note = tab.side_by_side(9990, 8, 3, 0)
    rows = [line for line in note.splitlines() if line.startswith("| Fashion-MNIST classifier")]
    assert len(rows) == 2 and "adversarially trained" in rows[1]
    assert "fooled on test images 9990–9999" in note  # the batch stops at the last test image
    assert "has not been trained yet" not in note
    assert picture.height > 300  # two rows of pictures


def test_the_bench_figures_are_quoted_when_there_are_some(monkeypatch):
    plain = {"clean_accuracy": 0.93, "success": {"pgd": {"8": 0.68}}}
    record = {"quick": True, "figures": {"n": 200, tab.PLAIN: plain}}
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([("adversarial.quick.json", record)]))
    text = tab.measured_text()
    assert "200 test images (quick run)" in text and "clean accuracy 93.0 %, PGD at 8/255 fools it on 68 %" in text
    monkeypatch.setattr(tab, "bench_records", lambda name: iter([]))
    assert tab.measured_text() == ""
