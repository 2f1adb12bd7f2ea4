import math

import pytest
import torch

from core import backbones
from core.backbone_layers import LAYER_NAMES
from core.backbones import BACKBONE_NAMES, load_backbone
from core.data.images import center_crop_square, pil_to_tensor, prepare_image


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def test_offline_backbone_has_real_imagenet_weights(lite0):
    # A natural photo that ships with matplotlib: Grace Hopper in her US Navy uniform.
    import matplotlib.cbook
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    image, _ = prepare_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with torch.no_grad():
        logits = lite0.classify(pil_to_tensor(center_crop_square(image, 224)))
    assert logits.shape == (1, 1000)
    top5 = {_IMAGENET_CATEGORIES[i] for i in logits[0].topk(5).indices.tolist()}
    assert top5 & {"military uniform", "suit", "Windsor tie", "bow tie", "academic gown", "mortarboard"}, top5


def test_lite0_layout_and_frozen(lite0):
    assert BACKBONE_NAMES[0] == lite0.name == "efficientnet_lite0"
    assert "package" in lite0.source
    blocks = [n for n in lite0.layer_names if n.startswith("block") and "." not in n]
    assert blocks == [f"block{i}" for i in range(1, 17)]
    assert lite0.layer_names[0] == "stem" and lite0.layer_names[-1] == "head"
    assert "block1.expand" not in lite0.layer_names  # the first block has no expansion conv
    assert lite0.layer_names.index("block5.expand") == lite0.layer_names.index("block5") - 1
    assert lite0.layer_names == LAYER_NAMES["efficientnet_lite0"]  # the UI's torch-free list is exact
    assert not lite0.training and not any(p.requires_grad for p in lite0.parameters())
    assert load_backbone("efficientnet_lite0") is lite0  # cached and shared


def test_loaded_once_per_device_on_the_apps_device_by_default(lite0):
    from core.runtime import app_device

    assert {t.device for t in [*lite0.parameters(), *lite0.buffers()]} == {app_device()}
    assert load_backbone("efficientnet_lite0", app_device()) is lite0
    on_cpu = load_backbone(" EfficientNet_Lite0", "cpu")
    assert on_cpu is load_backbone("efficientnet_lite0", torch.device("cpu"))  # cached per device
    assert {t.device.type for t in [*on_cpu.parameters(), *on_cpu.buffers()]} == {"cpu"}
    assert not on_cpu.training and not any(p.requires_grad for p in on_cpu.parameters())


@pytest.mark.parametrize("height,width", [(32, 32), (45, 33), (97, 128)])
def test_any_size_works_with_tensorflow_same_padding(lite0, height, width):
    out = lite0(torch.rand(2, 3, height, width), ["stem", "block2", "block10", "head"])
    assert set(out) == {"stem", "block2", "block10", "head"}
    # SAME padding: every stride-2 layer gives ceil(size / 2), whatever the size.
    assert out["stem"].shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))
    assert out["block2"].shape[-2:] == (math.ceil(height / 4), math.ceil(width / 4))
    assert out["head"].shape[1] == 1280 and out["head"].shape[-2:] == (math.ceil(height / 32), math.ceil(width / 32))


def test_returns_only_requested_layers_and_gradients_reach_the_image(lite0):
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    out = lite0(image, ["block3.expand"])
    assert list(out) == ["block3.expand"] and out["block3.expand"].shape[1] == 144
    assert out["block3.expand"].min() >= 0 and out["block3.expand"].max() <= 6  # ReLU6
    out["block3.expand"].square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_bad_requests_are_refused_with_a_sentence(lite0):
    with pytest.raises(ValueError, match="no layer 'mixed4'"):
        lite0(torch.rand(1, 3, 64, 64), ["mixed4"])
    with pytest.raises(ValueError, match="at least 32"):
        lite0(torch.rand(1, 3, 16, 64), ["stem"])
    with pytest.raises(ValueError, match="Unknown backbone"):
        load_backbone("resnet9000")


def test_failed_download_falls_back_to_the_offline_network(monkeypatch, lite0, caplog):
    def no_network(weights):
        raise OSError("<urlopen error [Errno -2] Name or service not known>\n/root/.cache/torch/hub/vgg19.pth")

    monkeypatch.setitem(backbones.TORCHVISION_BUILDERS, "vgg19", no_network)
    with caplog.at_level("WARNING", logger="genlab"):
        fallback = backbones._load.__wrapped__("vgg19", lite0.mean.device)  # uncached: the patched builder runs
    assert fallback.name == "efficientnet_lite0" and fallback.layer_names == lite0.layer_names
    # One sentence for the user: no exception text (its "<" cut Gradio's toast short), no path.
    assert fallback.source == ("The VGG19 weights could not be downloaded, so the offline EfficientNet-Lite0 "
                               "was used instead.")
    assert "/" not in lite0.source
    # The details go to the server's log, as one line.
    (record,) = [r for r in caplog.records if "vgg19" in r.getMessage()]
    assert "Name or service not known" in record.getMessage() and "\n" not in record.getMessage()
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(fallback(image, ["block4"])["block4"], lite0(image, ["block4"])["block4"])


@pytest.mark.parametrize("name,layers", [("googlenet", ["inception3a", "inception4c"]),
                                         ("inception_v3", ["Mixed_5b", "Mixed_6a"]),
                                         ("vgg19", ["conv1_1", "relu1_1", "relu2_1"])])
def test_torchvision_wiring_with_random_weights(name, layers):
    # The online weights cannot be downloaded here; the wrapping code is the same with random weights.
    model = backbones.build_torchvision(name, weights=None).eval()
    assert model.layer_names == LAYER_NAMES[name] and all(layer in model.layer_names for layer in layers)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 40, 48), layers)  # inception_v3 enlarges inputs below 75 px itself
        assert model.classify(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert list(out) == layers
    if name == "vgg19":  # the ReLU must not overwrite the conv activation handed back to the caller
        assert out["conv1_1"].min() < 0 and torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))
