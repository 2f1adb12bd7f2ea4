import os

import numpy as np
import pytest
import torch
from PIL import Image

from core.backbones import load_backbone
from core.dream import (DreamConfig, activation_map, activation_objective, ascent_step, dream, guide_objective,
                        make_objective, noise_image, octave_sizes, resize, run_dream, save_animation, zoom_dream)
from core.runtime import make_generator

LAYERS = {"block10": 1.0}


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("efficientnet_lite0")


def small_photo() -> torch.Tensor:
    """A small natural-looking picture made here: smooth blobs of colour plus fine texture."""
    gen = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, 6, 8, generator=gen)
    return (0.8 * resize(coarse, (72, 96)) + 0.2 * torch.rand(1, 3, 72, 96, generator=gen)).clamp(0, 1)


@pytest.fixture(scope="module")
def photo():
    return small_photo()


def quick(**overrides) -> DreamConfig:
    settings = dict(layers=LAYERS, octaves=2, iterations=2, step=0.02, jitter=4)
    return DreamConfig(**{**settings, **overrides})


def test_one_step_raises_the_chosen_layers_activation(backbone, photo):
    objective = make_objective(backbone, LAYERS, None)
    before = float(objective(photo))
    stepped, reported = ascent_step(backbone, photo, objective, step=0.02, jitter=0, generator=make_generator(0))
    assert reported == pytest.approx(before, rel=1e-4)
    assert float(objective(stepped)) > before * 1.05
    assert stepped.shape == photo.shape and 0 <= stepped.min() and stepped.max() <= 1


def test_octave_sizes_are_as_configured():
    assert octave_sizes(512, 400, 3, 1.4) == [(261, 204), (366, 286), (512, 400)]
    assert octave_sizes(100, 300, 1, 1.4) == [(100, 300)]
    # Never below the network's 32-pixel minimum: a small image gets fewer distinct octaves.
    assert octave_sizes(40, 60, 4, 2.0) == [(32, 48), (40, 60)]


def test_dream_keeps_the_size_and_reports_each_step(backbone, photo):
    updates = list(dream(backbone, photo, quick(octaves=3, octave_scale=1.3), make_generator(1)))
    assert len(updates) == 6
    assert updates[0].octave_sizes == octave_sizes(72, 96, 3, 1.3)
    for update in updates:
        assert tuple(update.image.shape[-2:]) == update.octave_sizes[update.octave - 1]
    assert [u.progress for u in updates] == pytest.approx([i / 6 for i in range(1, 7)])
    assert updates[-1].image.shape == photo.shape
    assert not torch.allclose(updates[-1].image, photo, atol=0.01)  # it really changed the picture
    # The "where it fires" map has the picture's size, and the dream fires the layer harder.
    before, after = activation_map(backbone, photo, LAYERS), activation_map(backbone, updates[-1].image, LAYERS)
    assert before.shape == after.shape == photo.shape[-2:]
    assert after.mean() > before.mean()


def test_same_seed_same_dream_other_seed_other_dream(backbone, photo):
    first, _ = run_dream(backbone, photo, quick(), make_generator(7))
    again, _ = run_dream(backbone, photo, quick(), make_generator(7))
    other, _ = run_dream(backbone, photo, quick(), make_generator(8))  # other jitter shifts
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def cuda_checks_dream(device: str = "cuda") -> None:
    """Same seed, same dream on `device` as on the CPU, within tolerance (a 72x96 picture, 2 iterations),
    in bf16 autocast (the app's default on CUDA) and in float32 (GENLAB_FP32=1); results come back on the CPU.

    A GPU script calls this with "cuda"; test_cuda_checks_dream_on_the_cpu runs it with "cpu". Gradient
    ascent amplifies rounding (core.dream's docstring), so only a short dream can agree. The tolerance is
    from CPU runs of this dream: the mean pixel difference, over the dream's own mean change, was 0.55
    under bf16 autocast, 0.2 with the photo changed by 1e-4, and 0.9-1.4 for another seed."""
    photo, config = small_photo(), quick(octaves=1, jitter=8)
    on_cpu, on_device = load_backbone("efficientnet_lite0", "cpu"), load_backbone("efficientnet_lite0", device)
    reference, reference_losses = run_dream(on_cpu, photo, config, make_generator(7))
    reference_energy = activation_map(on_cpu, photo, LAYERS)
    moved = float((reference - photo).abs().mean())
    before = os.environ.get("GENLAB_FP32")
    try:
        for fp32 in ("0", "1"):
            os.environ["GENLAB_FP32"] = fp32
            dreamt, losses = run_dream(on_device, photo, config, make_generator(7))
            energy = activation_map(on_device, photo, LAYERS)
            assert dreamt.device.type == energy.device.type == "cpu", fp32
            assert float((dreamt - reference).abs().mean()) < 0.8 * moved, fp32
            assert losses[0] == pytest.approx(reference_losses[0], rel=1e-2), fp32
            assert float(energy.mean()) == pytest.approx(float(reference_energy.mean()), rel=1e-2), fp32
    finally:
        if before is None:
            os.environ.pop("GENLAB_FP32", None)
        else:
            os.environ["GENLAB_FP32"] = before


def test_cuda_checks_dream_on_the_cpu():
    cuda_checks_dream("cpu")


def test_lost_detail_is_put_back_between_octaves(backbone, photo):
    # With a negligible step the dream must return the photo itself, fine texture included;
    # without re-injection it would come back as the blurred small octave enlarged.
    barely, _ = run_dream(backbone, photo, quick(octaves=3, octave_scale=2.0, step=1e-6), make_generator(0))
    blurred = resize(resize(photo, (32, 43)), photo.shape[-2:])
    assert (barely - photo).abs().max() < 0.01
    assert (blurred - photo).abs().max() > 0.1


def test_guide_mode_changes_the_objective(backbone, photo):
    guide = torch.zeros(1, 3, 64, 64)
    guide[:, 0, ::8, :] = 1.0  # red stripes
    guide_features = {"block10": backbone(guide, ["block10"])["block10"].detach()}
    activations = backbone(photo, ["block10"])
    assert float(guide_objective(activations, guide_features, LAYERS)) != pytest.approx(
        float(activation_objective(activations, LAYERS)))
    # A guided step climbs the guide objective, and the guided dream differs from the plain one.
    objective = make_objective(backbone, LAYERS, guide_features)
    stepped, before = ascent_step(backbone, photo, objective, 0.02, 0, make_generator(0))
    assert float(objective(stepped)) > before
    plain, _ = run_dream(backbone, photo, quick(), make_generator(2))
    guided, _ = run_dream(backbone, photo, quick(), make_generator(2), guide=guide)
    assert (plain - guided).abs().mean() > 1e-3


def test_max_loss_stops_an_octave_early(backbone, photo):
    updates = list(dream(backbone, photo, quick(iterations=10, max_loss=1e-9), make_generator(0)))
    assert [u.iteration for u in updates] == [1, 1]
    assert "max loss" in updates[0].note and updates[-1].progress == 1.0
    assert updates[-1].image.shape == photo.shape


@pytest.mark.parametrize("overrides,message", [
    (dict(iterations=0), "at least one iteration"),
    (dict(layers={}), "at least one layer"),
    (dict(layers={"block10": 0.0}), "at least one layer"),
    (dict(layers={"mixed4": 1.0}), "no layer mixed4"),
    (dict(octave_scale=1.0), "octave scale"),
    (dict(step=float("nan")), "step size"),
])
def test_bad_settings_are_refused_with_a_sentence(backbone, photo, overrides, message):
    with pytest.raises(ValueError, match=message):
        next(dream(backbone, photo, quick(**overrides), make_generator(0)))


def test_noise_start_and_zoom_animation(backbone, tmp_path):
    canvas = noise_image(48, 64, make_generator(5))
    assert canvas.shape == (1, 3, 48, 64) and torch.equal(canvas, noise_image(48, 64, make_generator(5)))
    assert 0.25 <= canvas.min() and canvas.max() <= 0.75 and canvas.std() > 0.01
    frames = list(zoom_dream(backbone, canvas, quick(octaves=1, iterations=1), 4, 1.1, make_generator(0)))
    assert [i for i, _ in frames] == [0, 1, 2, 3]  # 4 frames asked, 4 given (the input is the first)
    assert all(f.shape == canvas.shape for _, f in frames) and torch.equal(frames[0][1], canvas)
    from core.data.images import tensor_to_pil

    path = save_animation([tensor_to_pil(f) for _, f in frames], tmp_path / "zoom.gif")
    assert Image.open(path).n_frames == 4
    try:  # MP4 needs the optional imageio-ffmpeg; without it the refusal must say so
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="imageio-ffmpeg"):
            save_animation([tensor_to_pil(f) for _, f in frames], tmp_path / "zoom.mp4")
    else:
        import imageio.v3 as iio

        video = save_animation([tensor_to_pil(f) for _, f in frames], tmp_path / "zoom.mp4")
        assert iio.imread(video).shape[0] == 4
    with pytest.raises(ValueError, match="frames"):
        next(zoom_dream(backbone, canvas, quick(), 1, 1.1, make_generator(0)))


# --- the tab's handlers, with every kind of awkward upload ----------------------------------------

def _run_tab(image, **overrides):
    from tabs import dream as tab

    settings = dict(octaves=1, scale=1.4, iterations=1, step=0.02, jitter=0, max_loss=0, seed=0, max_side=96)
    settings.update(overrides)
    slots = tab.layer_slot_values("efficientnet_lite0")
    return list(tab.run_dream(image, False, None, "efficientnet_lite0", *slots, *settings.values()))


def _save(tmp_path, name, image, **params):
    path = tmp_path / name
    image.save(path, **params)
    return str(path)


def _awkward_uploads(tmp_path):
    rgb = Image.fromarray((np.random.default_rng(0).random((40, 80, 3)) * 255).astype(np.uint8))
    exif = rgb.getexif()
    exif[274] = 6  # "rotate 90° clockwise to view"
    return {
        "rgba": (_save(tmp_path, "a.png", rgb.convert("RGBA")), (80, 40)),
        "palette": (_save(tmp_path, "p.png", rgb.convert("P")), (80, 40)),
        "grayscale": (_save(tmp_path, "g.png", rgb.convert("L")), (80, 40)),
        "16-bit": (_save(tmp_path, "i16.png", Image.fromarray((np.arange(3200).reshape(40, 80) * 20).astype(np.uint16))),
                   (80, 40)),
        "cmyk": (_save(tmp_path, "c.jpg", rgb.convert("CMYK")), (80, 40)),
        "exif-rotated": (_save(tmp_path, "r.jpg", rgb, exif=exif), (40, 80)),
        "huge": (_save(tmp_path, "huge.png", Image.new("RGB", (4100, 1200), (90, 140, 200))), (96, 32)),  # aspect kept until the 32-px minimum
    }


def test_tab_handles_awkward_uploads(tmp_path):
    for kind, (path, expected_size) in _awkward_uploads(tmp_path).items():
        outputs = _run_tab(path)
        result, status, curve, why, maps, png = outputs[-1][:6]
        assert result.size == expected_size, kind
        assert Image.open(png).size == expected_size and "Done" in status, kind
        assert len(curve) == 1 and "block10" in why and len(maps) == 2, kind
        assert maps[1][0].size == expected_size and "mean activation²" in maps[1][1], kind


def test_tab_refuses_bad_uploads_with_a_sentence(tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    tiny = _save(tmp_path, "tiny.png", Image.new("RGB", (20, 50)))
    for image, message in ((str(not_an_image), "not an image"), (tiny, "at least 32"), (None, "No image")):
        with pytest.raises(ValueError, match=message):
            _run_tab(image)
    with pytest.raises(ValueError, match="at least one iteration"):
        _run_tab(tiny, iterations=0)


def test_tab_backbone_switch_and_noise_zoom(tmp_path):
    from tabs import dream as tab

    updates = tab.change_backbone("inception_v3")
    assert [u.value for u in updates[::2]] == ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
    assert [u.value for u in updates[1::2]] == [1.0, 1.5, 2.0, 2.5]
    slots = tab.layer_slot_values("efficientnet_lite0")
    outputs = list(tab.run_zoom(None, True, "efficientnet_lite0", *slots, 0.02, 4, 0, 64, 8, 1.1, 1, "GIF"))
    assert Image.open(outputs[-1][2]).n_frames == 8  # as many frames as asked for, not one more
    assert [o[1].split(" (")[0] for o in outputs[:-1]] == [f"Frame {i}/8" for i in range(1, 9)]
    assert outputs[-1][1].startswith("Done: 8 frames")


def test_a_failed_download_says_so_in_a_sentence_and_shows_the_network_used(monkeypatch, caplog):
    import gradio as gr

    from core import backbones
    from tabs import dream as tab

    def no_network(weights):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution> /root/.cache/torch/vgg19.pth")

    monkeypatch.setitem(backbones.TORCHVISION_BUILDERS, "vgg19", no_network)
    monkeypatch.setattr(backbones, "_load", backbones._load.__wrapped__)  # uncached: the patch runs
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    slots = tab.layer_slot_values("vgg19")
    assert slots[0] == "relu4_2"
    settings = dict(octaves=1, scale=1.4, iterations=1, step=0.02, jitter=0, max_loss=0, seed=0, max_side=64)
    with caplog.at_level("WARNING", logger="genlab"):
        outputs = list(tab.run_dream(None, True, None, "vgg19", *slots, *settings.values()))
    sentence = "The VGG19 weights could not be downloaded, so the offline EfficientNet-Lite0 was used instead."
    assert warnings == [sentence]
    why = outputs[-1][3]
    assert sentence in why and "block10" in why and "urlopen" not in why and "/root" not in why
    # The first update puts the network and the layers actually used in their boxes.
    network, *boxes = outputs[0][6:]
    assert network.value == "efficientnet_lite0"
    assert [b.value for b in boxes[::2]] == ["block10", None, None, None]
    assert boxes[0].choices[0][0] == "stem"  # Lite0's layer list, not VGG's
    assert all(isinstance(o, type(gr.skip())) for o in outputs[-1][6:])
    assert any("Temporary failure in name resolution" in r.getMessage() for r in caplog.records)


def test_the_status_says_stopped_after_stop():
    from tabs.dream import stopped_status

    running = "Octave 1/3 (223×261), iteration 12: objective 3.9e+03 · 20% done"
    assert stopped_status(running) == f"**Stopped** at: {running}."
    assert stopped_status("Frame 3/12 (1.2 s)") == "**Stopped** at: Frame 3/12 (1.2 s)."
    # A run that finished, or failed before its first step, keeps its line.
    for ended in ("Done in 9.1 s.", "Done: 12 frames in 4.0 s → deepdream_zoom.gif", "", None):
        assert stopped_status(ended) == (ended or "")
