import functools
import json
import re
import shutil
from types import SimpleNamespace

import pytest
import torch

from core import gan
from core.engine import TrainingRun
from core.gan import Critic, GANConfig, Generator, ImageData, TrainConfig
from core.data.toy2d import sample as sample_real
from core.gan2d import Gan2D, distance_to_data
from core.runtime import make_generator
from tests import distributed

TINY = dict(image_size=8, width=4, z_dim=6)


def test_gradient_penalty_equals_its_definition_on_a_tiny_critic():
    critic = Critic(GANConfig(loss="wgan-gp", channels=1, **TINY))
    real, fake = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    penalty = gan.gradient_penalty(critic, real, fake, make_generator(3))
    # By hand: the same random mixing weights, then each image's own gradient norm.
    eps = torch.rand(5, 1, 1, 1, generator=make_generator(3))
    expected = []
    for i in range(5):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x)
        expected.append((grad.norm() - 1) ** 2)
    assert penalty.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_gap():
    w = torch.randn(1, 1, 8, 8)

    def linear_critic(x, labels=None):
        return (x * w).flatten(1).sum(1)

    penalty = gan.gradient_penalty(linear_critic, torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), make_generator(0))
    assert penalty.item() == pytest.approx(((w.norm() - 1) ** 2).item(), rel=1e-5)


@pytest.mark.parametrize("preset", ["dcgan", "wgan-gp", "cgan"])
def test_one_training_step_changes_both_networks(preset):
    changes, train_changes = gan.PRESETS[preset]
    cfg = GANConfig(**TINY, **changes)
    tcfg = TrainConfig(batch_size=8, **train_changes)
    torch.manual_seed(0)
    G, D = Generator(cfg), Critic(cfg)
    before_g = [p.detach().clone() for p in G.parameters()]
    before_d = [p.detach().clone() for p in D.parameters()]
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
    labels = torch.randint(10, (8,)) if cfg.num_classes else None
    logs = gan.train_step(G, D, opt_g, opt_d, torch.rand(8, 1, 8, 8) * 2 - 1, labels, tcfg, make_generator(0))
    assert all(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))
    assert {"loss_d", "loss_g"} <= logs.keys()
    if cfg.loss == "wgan-gp":
        assert logs["gp"] >= 0 and "wasserstein" in logs


def test_conditional_sampling_returns_the_requested_labels_shape():
    G = Generator(GANConfig(num_classes=10, **TINY)).eval()
    labels = [0, 3, 3, 9, 1, 2, 2]
    images = gan.sample(G, len(labels), make_generator(0), labels=labels)
    assert images.shape == (7, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert gan.sample(G, 4, make_generator(0), labels=5).shape == (4, 1, 8, 8)  # one label for all
    z = gan.noise(G.cfg, 1, make_generator(1)).expand(2, -1)
    pair = gan.generate(G, z, [0, 9])
    assert not torch.equal(pair[0], pair[1])  # the label, not only z, decides the image
    with pytest.raises(ValueError, match="class label"):
        gan.sample(G, 3, make_generator(0))
    with pytest.raises(ValueError, match="0-9"):
        gan.sample(G, 2, make_generator(0), labels=[1, 10])


def test_unconditional_model_refuses_labels_and_bad_sizes():
    G = Generator(GANConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="not conditional"):
        gan.sample(G, 2, make_generator(0), labels=[1, 2])
    with pytest.raises(ValueError, match="between 1 and"):
        gan.sample(G, 0, make_generator(0))
    with pytest.raises(ValueError, match="Truncation"):
        gan.sample(G, 2, make_generator(0), truncation=0)


def test_slerp_keeps_the_norm_between_the_endpoints_norms():
    cfg = GANConfig()  # the real latent size: Gaussian noise of 100 dimensions
    for seed in range(10):
        z0, z1 = gan.noise(cfg, 1, make_generator(2 * seed)), gan.noise(cfg, 1, make_generator(2 * seed + 1))
        walk = gan.interpolate(z0, z1, 9, mode="slerp")
        low, high = sorted([z0.norm().item(), z1.norm().item()])
        norms = walk.flatten(1).norm(dim=1)
        assert walk.shape == (9, 1, cfg.z_dim)
        assert ((norms >= low - 1e-4) & (norms <= high + 1e-4)).all()
        # lerp cuts through the inside of the shell, where Gaussian samples never lie
        assert gan.interpolate(z0, z1, 9, mode="lerp").flatten(1).norm(dim=1)[4] < 0.8 * low


def test_the_same_seed_gives_the_same_grid_and_truncation_narrows_it():
    G = Generator(GANConfig(**TINY)).eval()
    a, b = gan.sample(G, 16, make_generator(42)), gan.sample(G, 16, make_generator(42))
    assert torch.equal(a, b)
    assert not torch.equal(a, gan.sample(G, 16, make_generator(43)))
    # eval-mode batch norm: an image does not depend on the others in its batch
    z = gan.noise(G.cfg, 16, make_generator(42))
    assert torch.allclose(gan.generate(G, z[:4]), gan.generate(G, z)[:4], atol=1e-6)
    narrow = gan.sample(G, 64, make_generator(0), truncation=0.1)
    wide = gan.sample(G, 64, make_generator(0))
    assert narrow.std(dim=0).mean() < wide.std(dim=0).mean()


def test_truncation_redraws_only_the_components_outside_the_limit():
    cfg = GANConfig()
    full = gan.noise(cfg, 500, make_generator(5))
    for psi in (0.9, 0.3, 0.05):
        limit = gan.TRUNCATION_RANGE * psi
        z = gan.noise(cfg, 500, make_generator(5), truncation=psi)
        assert z.abs().max() <= limit
        inside = full.abs() <= limit
        assert torch.equal(z[inside], full[inside])  # a seed's images change gradually with psi
        assert torch.equal(z, gan.noise(cfg, 500, make_generator(5), truncation=psi))  # still pure
    # A truncated normal, not a scaled one: the share beyond half the limit is that of N(0, 1) cut at the limit.
    z = gan.noise(cfg, 2000, make_generator(1), truncation=0.5)  # limit 1.5
    cut = torch.distributions.Normal(0.0, 1.0).cdf
    expected = (cut(torch.tensor(1.5)) - cut(torch.tensor(0.75))) / (cut(torch.tensor(1.5)) - 0.5)
    assert (z.abs() > 0.75).float().mean().item() == pytest.approx(expected.item(), abs=0.01)


# Contrast (each image's pixel spread) at psi = 0.3, as a share of the untruncated one, measured on 256
# samples: truncated normal 0.54 (Fashion DCGAN) and 0.70 (faces); scaling z by psi gave 0.30 and 0.55.
# The StyleGAN truncates w towards its mean instead: 0.90 (its variety falls to 0.63).
@pytest.mark.parametrize("name, min_contrast", [("dcgan_fashion", 0.45), ("wgangp_faces", 0.65),
                                                ("stylegan_faces", 0.8)])
def test_truncation_narrows_variety_without_washing_the_images_out(name, min_contrast):
    from core.checkpoints import load_shipped

    G = gan.load_generator(load_shipped("gan", name))

    def contrast_and_variety(psi):
        x = gan.sample(G, 256, make_generator(0), truncation=psi)
        return x.flatten(1).std(dim=1).mean().item(), x.std(dim=0).mean().item()

    contrast, variety = contrast_and_variety(None)
    contrast_07, variety_07 = contrast_and_variety(0.7)
    contrast_03, variety_03 = contrast_and_variety(0.3)
    assert variety_03 < variety_07 < variety and variety_03 < 0.8 * variety
    assert contrast_03 >= min_contrast * contrast and contrast_07 >= 0.9 * contrast


def test_a_long_timeline_keeps_the_first_epoch_the_last_frame_and_an_even_spread():
    short = [0, 0.5, 1, 2, 3]
    assert gan.timeline_picks(short, most=5) == [0, 1, 2, 3, 4]
    epochs = [0, 0.13, 0.27, 0.53] + list(range(1, 76))  # the StyleGAN's 79 frames: 4 early, one per epoch
    picks = gan.timeline_picks(epochs, most=60)
    assert len(picks) == 60 and picks == sorted(set(picks))
    assert picks[:5] == [0, 1, 2, 3, 4] and picks[-1] == len(epochs) - 1  # all of the first epoch, and the end
    gaps = torch.diff(torch.tensor([epochs[i] for i in picks[5:]]))
    assert gaps.max() - gaps.min() <= 1  # the later epochs evenly spread


def test_training_writes_checkpoint_card_timeline_and_resumes(tmp_path):
    gen = make_generator(0)
    images = (torch.rand(64, 1, 8, 8, generator=gen) * 255).to(torch.uint8)
    files = [{"name": "64 random 8x8 images", "source": "this test", "sha256": "0" * 64}]
    data = ImageData(images, torch.randint(10, (64,), generator=gen), "64 random 8x8 images", files)
    cfg, out = GANConfig(num_classes=10, **TINY), tmp_path / "tiny.pt"
    gan.train(cfg, TrainConfig(batch_size=16, epochs=1), data, out)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["data_files"] == files
    assert card["steps"] == 4 and card["timeline"]["steps"] == [0, 4] and card["config"]["num_classes"] == 10
    assert out.with_name("tiny.timeline.png").is_file()
    resume = torch.load(out.with_name("tiny.pt.resume.pt"), weights_only=True)
    assert resume["step"] == 4 and resume["frame_steps"] == [0, 4]
    gan.train(cfg, TrainConfig(batch_size=16, epochs=2), data, out,
              TrainingRun(SimpleNamespace(resume=True), out, global_batch=16))
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 8 and card["timeline"]["steps"] == [0, 4, 8]
    from core.checkpoints import load_checkpoint

    G = gan.load_generator(load_checkpoint(out))
    assert gan.sample(G, 3, make_generator(0), labels=[1, 2, 3]).shape == (3, 1, 8, 8)


# --- many processes (torchrun, 2 CPU processes talking gloo, as in CI) ------------------------

# 128 synthetic 16x16 faces, 8 epochs of global batch 16: 64 steps, a few seconds of training a run.
TINY_RUN = ["gan", "--data", "faces", "--faces", "128", "--image-size", "16", "--width", "8", "--z-dim", "8",
            "--epochs", "8", "--batch-size", "16", "--lr", "2e-3", "--threads", "1"]


@functools.lru_cache(maxsize=None)
def mean_training_face() -> torch.Tensor:
    return (gan.load_data("faces", 16, faces=128).images.float() / 255).mean(0)


def distance_to_the_data_mean(G) -> float:
    """RMS distance between the mean of 512 samples and the mean training face (pixels in [0, 1]).
    GAN losses rise and fall as the two players take turns, so they show no learning; this moves
    only if G's images become more like the data, and an untrained G sits at ~0.17."""
    fake = gan.sample(G, 512, make_generator(0))
    return ((fake.mean(0) - mean_training_face()) ** 2).mean().sqrt().item()


def untrained_distance(model: str) -> float:
    cfg_changes, _ = gan.PRESETS[model]
    torch.manual_seed(0)
    G = Generator(GANConfig(image_size=16, channels=3, z_dim=8, width=8, **cfg_changes))
    gan.recalibrate_batch_norm(G, make_generator(1))  # as the step-0 frame of the timeline shows it
    return distance_to_the_data_mean(G)


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    folder, runs = tmp_path_factory.mktemp("gan_ddp"), {}
    for model in ("dcgan", "wgan-gp"):
        for processes in (1, 2):
            out = folder / f"{model}_{processes}.pt"
            done, card = distributed.train(TINY_RUN + ["--model", model], out, processes=processes)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[model, processes] = out, card
    return runs


@pytest.mark.parametrize("model", ["dcgan", "wgan-gp"])
def test_two_processes_train_one_gan_that_the_app_loads_and_that_learned(one_and_two_processes, model):
    from core.checkpoints import load_checkpoint

    out, card = one_and_two_processes[model, 2]
    distributed.check_ranks_agree(card, 2)  # G's and D's weights: DDP averaged both networks' gradients
    assert card["global_batch"] == 16 and card["training"]["batch_size"] == 16 and card["steps"] == 64
    assert [r["data"] for r in card["ranks"]] == ["images 0::2 (64 of 128)", "images 1::2 (64 of 128)"]
    assert card["timeline"]["steps"] == list(range(0, 65, 8))  # a frame per epoch, written by rank 0
    G = gan.load_generator(load_checkpoint(out))  # the tab's loader, minus its cache and device
    images = gan.sample(G, 5, make_generator(0))
    assert images.shape == (5, 3, 16, 16) and torch.isfinite(images).all()
    assert distance_to_the_data_mean(G) < 0.7 * untrained_distance(model)


@pytest.mark.parametrize("model", ["dcgan", "wgan-gp"])
def test_two_processes_match_one_with_the_same_global_batch(one_and_two_processes, model):
    from core.checkpoints import load_checkpoint

    # Same global batch (16 = 2 x 8), same 64 steps; only which random numbers and which images each
    # process drew differ. Tolerance: the two distances to the data's mean face within 0.04 of each
    # other, 1.5 times the spread of 1-process DCGAN runs over seeds 0-5 (0.082-0.106). When this was
    # written they matched to 0.005 (DCGAN 0.082 / 0.077) and 0.001 (WGAN-GP 0.054 / 0.054); untrained: 0.17.
    one, two = (distance_to_the_data_mean(gan.load_generator(load_checkpoint(one_and_two_processes[model, p][0])))
                for p in (1, 2))
    assert abs(one - two) < 0.04, (one, two)
    card = one_and_two_processes[model, 1][1]
    assert card["world_size"] == 1 and "ranks" not in card and card["steps"] == 64


def test_a_two_process_gan_resumes_on_one_process(one_and_two_processes, tmp_path):
    source, _ = one_and_two_processes["dcgan", 2]
    out = tmp_path / "resumed.pt"
    shutil.copy(source.with_name(source.name + ".resume.pt"), out.with_name(out.name + ".resume.pt"))
    done, card = distributed.train(TINY_RUN + ["--model", "dcgan", "--epochs", "9", "--resume"], out, processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "new random streams" in done.stdout  # saved by 2 processes, continued by 1
    assert card["steps"] == 72 and card["world_size"] == 1 and len(card["resumed_with"]) == 1
    assert card["timeline"]["steps"][-2:] == [64, 72]  # the 2-process run's frames are kept


def test_a_batch_the_processes_cannot_share_is_refused_in_one_sentence(tmp_path):
    done, card = distributed.train(TINY_RUN + ["--batch-size", "15"], tmp_path / "bad.pt", processes=2)
    assert done.returncode != 0 and not card
    sentence = "multiple of the 2 processes"
    assert sentence in done.stderr.splitlines()[0] and done.stderr.count(sentence) == 1
    # torchrun itself ends with a report and a traceback of its own frames whenever a worker fails;
    # none of the workers' frames may show (that would be a traceback of ours).
    assert not re.search(r'File ".*/(core|tabs)/', done.stderr), done.stderr[-3000:]


def test_the_live_2d_gan_moves_generated_points_toward_the_data():
    live = Gan2D("ring", seed=0)
    real = sample_real("ring", 2000, make_generator(9))
    start = distance_to_data(live.fake_points(), real)
    live.train(300)
    assert live.step == 300 and live.diverged is None and len(live.history) == 300
    assert distance_to_data(live.fake_points(), real) < 0.3 * start
    assert live.decision_map(16).shape == (16, 16)


def test_the_live_2d_gan_reports_divergence_instead_of_crashing():
    live = Gan2D("spiral", seed=0, lr_g=10, lr_d=10)
    live.train(200)
    assert live.diverged and "step" in live.diverged
    step = live.step
    live.train(10)  # a diverged game stays stopped
    assert live.step == step
    with pytest.raises(ValueError, match="learning rate"):
        live.set_learning_rates(0, 1e-3)
    with pytest.raises(ValueError, match="distribution"):
        Gan2D("banana")


# --- devices ---------------------------------------------------------------------------------

def cuda_checks_gan(device="cuda"):
    """The shipped generators on `device` against the CPU (the lead's GPU script calls this; the test
    below runs it on the CPU). Same seed, same images: fp32 on `device` within 1e-2 of the CPU
    (cuDNN may use TF32 there), and bf16 (the app's default on CUDA) finite, within 0.02 on average
    and 0.25 at worst (bf16 keeps 8 bits of mantissa; a pixel's error grows through the layers)."""
    import contextlib
    import os

    from core.checkpoints import load_shipped

    @contextlib.contextmanager
    def fp32():
        before = os.environ.get("GENLAB_FP32")
        os.environ["GENLAB_FP32"] = "1"  # core.runtime.autocast reads it at every call
        try:
            yield
        finally:
            os.environ.pop("GENLAB_FP32") if before is None else os.environ.update(GENLAB_FP32=before)

    for name in ("dcgan_fashion", "cgan_fashion", "wgangp_faces", "stylegan_faces"):
        ckpt = load_shipped("gan", name)
        on_cpu, on_device = gan.load_generator(ckpt), gan.load_generator(ckpt, device)
        assert next(on_device.parameters()).device.type == torch.device(device).type
        labels = list(range(10)) * 2 if on_cpu.cfg.num_classes else None
        n = 20 if labels else 16
        reference = gan.sample(on_cpu, n, make_generator(7), labels, truncation=0.7)
        with fp32():
            exact = gan.sample(on_device, n, make_generator(7), labels, truncation=0.7)
        mixed = gan.sample(on_device, n, make_generator(7), labels, truncation=0.7)
        assert exact.device.type == mixed.device.type == "cpu" and exact.dtype == mixed.dtype == torch.float32
        assert (exact - reference).abs().max() < 1e-2, name
        error = (mixed - reference).abs()
        assert torch.isfinite(mixed).all() and error.mean() < 0.02 and error.max() < 0.25, (name, error.mean())


def test_cuda_checks_run_on_the_cpu():
    cuda_checks_gan("cpu")


def test_the_tab_puts_its_generators_on_the_app_device_and_returns_cpu_images():
    from core.runtime import app_device
    from tabs import gan as tab

    G = tab._generator("dcgan_fashion")
    assert next(G.parameters()).device == app_device()
    assert gan.generate(G, gan.noise(G.cfg, 2, make_generator(0))).device.type == "cpu"


# --- the tab's handlers, on the shipped models ----------------------------------------------

def test_tab_samples_same_seed_same_grid_and_clear_errors():
    from tabs import gan as tab

    name = tab.model_choices()[0][1]
    first, note = tab.samples(name, 7, 4)
    again, _ = tab.samples(name, 7, 4)
    assert first.tobytes() == again.tobytes() and note == ""
    assert tab.samples(name, 8, 4)[0].tobytes() != first.tobytes()
    _, note = tab.samples(name, 7, 1000)
    assert "limited" in note
    with pytest.raises(ValueError, match="at least 1"):
        tab.samples(name, 7, 0)
    with pytest.raises(ValueError, match="different seeds"):
        tab.latent_walk(name, 3, 3, 8)
    strip, gif = tab.latent_walk(name, 3, 4, 5, "lerp")
    assert strip.width > strip.height and gif.endswith(".gif")


def test_tab_conditional_grid_names_its_rows():
    import numpy as np

    from tabs import gan as tab

    names = tab._class_names("cgan_fashion")
    named, note = tab.samples("cgan_fashion", 0, 3)
    assert note == "Rows, top to bottom: " + ", ".join(names) + "."
    one_class, note = tab.samples("cgan_fashion", 0, 3, "Dress")
    assert note == "" and one_class.height < named.height
    # The same images, with a white margin on the left where every row's name is written.
    pixels = np.asarray(named.convert("L"))
    grid_width = 3 * (32 + tab.GRID_PADDING) + tab.GRID_PADDING
    scale = tab.SHOW_PX // 32
    margin = named.width - grid_width * scale
    assert margin > 40 and pixels.shape[0] == (10 * (32 + tab.GRID_PADDING) + tab.GRID_PADDING) * scale
    row_pitch = (32 + tab.GRID_PADDING) * scale
    for row in range(len(names)):  # ink in the margin beside each row, and only there
        band = pixels[row * row_pitch:(row + 1) * row_pitch, :margin]
        assert (band < 128).sum() > 20, f"no name beside row {row} ({names[row]})"
    strip, _ = tab.latent_walk("cgan_fashion", 1, 2, 3)
    assert (np.asarray(strip.convert("L"))[:, :margin // 2] < 128).any()  # the walk's rows are named too


def test_tab_style_mixing_takes_coarse_styles_from_a_and_fine_from_b():
    import numpy as np

    from tabs import gan as tab

    layers = tab._generator("stylegan_faces").num_styles
    assert tab._generator_layers("stylegan_faces") == layers  # the slider, built from the card, fits the model

    def pictures(crossover, seed_b=8, noise="fixed"):
        trio, sweep, noise_panel, note = tab.style_mix("stylegan_faces", 3, seed_b, crossover, 0.7, noise)
        scale, pad = tab.SHOW_PX // 32, tab.GRID_PADDING
        top, pitch = pad * scale, (32 + pad) * scale
        faces = [np.asarray(trio)[top:top + 32 * scale, top + i * pitch:top + i * pitch + 32 * scale]
                 for i in range(3)]  # A, the mix, B
        return faces, sweep, noise_panel, note

    (a, mix, b), sweep, noise_panel, note = pictures(layers)
    assert np.array_equal(mix, a) and not np.array_equal(a, b) and "every layer reads seed 3" in note
    (a, mix, b), *_ = pictures(0)
    assert np.array_equal(mix, b)
    (a, mix, b), _, _, note = pictures(3)
    assert not np.array_equal(mix, a) and not np.array_equal(mix, b) and "Layers 0–2 read seed 3" in note
    assert sweep.width > 2 * sweep.height and noise_panel.width > 2 * noise_panel.height
    _, _, _, note = pictures(99)
    assert "crossover" in note.lower()  # clamped, and said so
    (a, mix, b), *_ = pictures(3, seed_b=3)  # one seed on both sides: nothing to mix
    assert np.array_equal(a, mix) and np.array_equal(mix, b)
    # psi reaches a StyleGAN's grid and its latent walk (it truncates w there, not z)
    assert tab.samples("stylegan_faces", 1, 2, truncation=0.3)[0].tobytes() != tab.samples("stylegan_faces", 1, 2)[0].tobytes()
    walks = [tab.latent_walk("stylegan_faces", 1, 2, 3, "slerp", tab.ALL_CLASSES, psi)[0].tobytes() for psi in (0.3, 1.0)]
    assert walks[0] != walks[1]
    with pytest.raises(ValueError, match="StyleGAN"):
        tab.style_mix("dcgan_fashion", 3, 8, 3, 0.7, "fixed")
    with pytest.raises(ValueError, match="Noise must be one of"):
        tab.style_mix("stylegan_faces", 3, 8, 3, 0.7, "loud")


def test_tab_class_box_follows_the_model():
    from tabs import gan as tab

    box, image, note = tab.model_samples("wgangp_faces", 0, 2, "Dress")
    assert box["value"] == tab.ALL_CLASSES and box["interactive"] is False  # no classes: reset and disabled
    assert image.size == tab.samples("wgangp_faces", 0, 2)[0].size
    box, _, _ = tab.model_samples("cgan_fashion", 0, 2, "Dress")
    assert box["value"] == "Dress" and box["interactive"] is True
    box, _, note = tab.model_samples("cgan_fashion", 0, 2, "no such class")
    assert box["value"] == tab.ALL_CLASSES and note.startswith("Rows, top to bottom")


def test_tab_training_story_scrubs_through_the_timeline():
    from tabs import gan as tab

    name = tab.model_choices()[0][1]
    early, caption = tab.story_frame(name, 0)
    late, _ = tab.story_frame(name, 10**6)  # clamped to the last frame
    assert "step 0" in caption and early.size == late.size and early.tobytes() != late.tobytes()


def test_tab_live_gan_handlers_report_divergence():
    from tabs import gan as tab
    from tabs import live2d

    live, picture, status = tab.live_reset("grid", 0, -3, -3)
    live, picture, status = tab.live_step(live, 5, -3, -3)
    assert live.step == 5 and "Step 5" in status
    frames = list(tab.live_play(live, 20, 1, 1))  # learning rate 10: the game falls apart
    assert "diverged" in frames[-1][2] and len(frames) < live2d.FRAMES
    with pytest.raises(ValueError, match="Reset"):
        tab.live_step(None, 5, -3, -3)
