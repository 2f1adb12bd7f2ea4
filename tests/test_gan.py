import json

import pytest
import torch

from core import gan
from core.gan import Critic, GANConfig, Generator, ImageData, TrainConfig
from core.gan2d import Gan2D, distance_to_data, sample_real
from core.runtime import make_generator

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
@pytest.mark.parametrize("name, min_contrast", [("dcgan_fashion", 0.45), ("wgangp_faces", 0.65)])
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


def test_training_writes_checkpoint_card_timeline_and_resumes(tmp_path):
    gen = make_generator(0)
    images = (torch.rand(64, 1, 8, 8, generator=gen) * 255).to(torch.uint8)
    data = ImageData(images, torch.randint(10, (64,), generator=gen), "64 random 8x8 images")
    cfg, out = GANConfig(num_classes=10, **TINY), tmp_path / "tiny.pt"
    gan.train(cfg, TrainConfig(batch_size=16, epochs=1), data, out)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 4 and card["timeline"]["steps"] == [0, 4] and card["config"]["num_classes"] == 10
    assert out.with_name("tiny.timeline.png").is_file()
    resume = torch.load(out.with_name("tiny.pt.resume.pt"), weights_only=True)
    gan.train(cfg, TrainConfig(batch_size=16, epochs=2), data, out, resume=resume)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 8 and card["timeline"]["steps"] == [0, 4, 8]
    from core.checkpoints import load_checkpoint

    G = gan.load_generator(load_checkpoint(out))
    assert gan.sample(G, 3, make_generator(0), labels=[1, 2, 3]).shape == (3, 1, 8, 8)


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

    live, picture, status = tab.live_reset("grid", 0, -3, -3)
    live, picture, status = tab.live_step(live, 5, -3, -3)
    assert live.step == 5 and "Step 5" in status
    frames = list(tab.live_play(live, 20, 1, 1))  # learning rate 10: the game falls apart
    assert "diverged" in frames[-1][2] and len(frames) < tab.LIVE_FRAMES
    with pytest.raises(ValueError, match="Reset"):
        tab.live_step(None, 5, -3, -3)
