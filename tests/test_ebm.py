"""Energy-based models: Langevin dynamics that moves only the input, contrastive divergence that
separates data from noise, the replay buffer, and the trainer under one and two processes."""
import pytest
import torch
from torch import nn

from core.ebm import (EBMConfig, Ebm2D, EnergyNet, ReplayBuffer, contrastive_divergence, corrupt, energies, grey_faces,
                      langevin, last, repair, sample, train, uniform_noise)
from core.runtime import make_generator


def tiny_net(**overrides) -> EnergyNet:
    torch.manual_seed(0)
    return EnergyNet(EBMConfig(image_size=16, widths=(4, 8), **overrides))


def test_zero_step_size_and_zero_noise_change_nothing():
    model = tiny_net()
    x = torch.rand(3, 1, 16, 16, generator=make_generator(0)) * 2 - 1
    steps = list(langevin(model, x, 5, step_size=0.0, noise=0.0, generator=make_generator(1)))
    assert len(steps) == 5 and all(torch.equal(s, x) for s, _ in steps)
    assert list(langevin(model, x, 0, 1.0, 0.1, make_generator(1))) == []


def test_langevin_walks_downhill_on_the_energy_and_stays_in_range():
    energy = lambda x: (x - 0.5).pow(2).flatten(1).sum(1)  # noqa: E731 - a bowl with its bottom at 0.5
    bowl = nn.Module()
    bowl.forward = energy
    x = torch.full((2, 1, 4, 4), -1.0)
    path = list(langevin(bowl, x, 100, step_size=0.05, noise=0.0, generator=make_generator(0), grad_clip=None))
    assert torch.allclose(path[-1][0], torch.full_like(x, 0.5), atol=1e-3)
    assert all(path[i + 1][1].max() <= path[i][1].max() for i in range(len(path) - 1))
    pushed = last(langevin(bowl, x, 3, step_size=100.0, noise=0.0, generator=make_generator(0), grad_clip=None))[0]
    assert pushed.min() >= -1 and pushed.max() <= 1  # a huge step is clipped to the data's range


def test_sampling_moves_the_input_not_the_weights():
    model = tiny_net()
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(2, 1, 16, 16, generator=make_generator(2)) * 2 - 1
    out = last(langevin(model, x, 4, 10.0, 0.005, make_generator(3)))[0]
    assert not torch.equal(out, x)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # handed back as they were


def test_same_seed_same_samples():
    model = tiny_net()
    model.config.steps = 5
    a = last(sample(model, 3, make_generator(4)))
    b = last(sample(model, 3, make_generator(4)))
    c = last(sample(model, 3, make_generator(5)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize("step_size, noise", [(-1.0, 0.0), (float("nan"), 0.0), (1.0, float("inf"))])
def test_impossible_samplers_are_refused_in_a_sentence(step_size, noise):
    with pytest.raises(ValueError, match="finite and not negative"):
        next(langevin(tiny_net(), torch.zeros(1, 1, 16, 16), 1, step_size, noise, make_generator(0)))


def test_the_replay_buffer_never_exceeds_its_size_and_keeps_the_newest():
    buffer = ReplayBuffer(10, (2,))
    gen = make_generator(6)
    assert buffer.starts(4, gen).abs().max() <= 1 and len(buffer) == 0  # empty: all fresh noise
    for i in range(7):
        buffer.push(torch.full((3, 2), float(i)))
        assert len(buffer) <= 10
    assert len(buffer) == 10 and buffer.items[0, 0] == 6 and buffer.items[-1, 0] == 3  # 6,6,6,5,5,5,4,4,4,3
    starts = buffer.starts(1000, gen)
    from_buffer = (starts[:, 0] == starts[:, 0].round()) & (starts[:, 0] >= 3)
    assert 0.9 < from_buffer.float().mean() < 0.99  # about 5 % fresh noise
    with pytest.raises(ValueError, match="at least one"):
        ReplayBuffer(0, (2,))


def test_contrastive_divergence_is_low_when_data_sits_below_the_samples():
    low, high = torch.full((4,), -1.0), torch.full((4,), 1.0)
    assert contrastive_divergence(low, high, 0.0) == -2 and contrastive_divergence(high, low, 0.0) == 2
    assert contrastive_divergence(low, high, 0.5) == -1  # the regulariser adds α (1 + 1)


def test_a_tiny_model_gives_its_data_lower_energy_than_noise():
    gen = make_generator(7)
    images = torch.zeros(64, 1, 16, 16)
    images[:, :, 4:12, 4:12] = 0.8  # one bright square on black: a data set easy to tell from noise
    images = images * 2 - 1
    model = tiny_net(steps=10, step_size=1.0)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, betas=(0.0, 0.999))
    events = list(train(model, images, 60, 16, optimizer, ReplayBuffer(128, (1, 16, 16)), gen))
    noise = torch.rand(64, 1, 16, 16, generator=gen) * 2 - 1
    assert energies(model, images).mean() < energies(model, noise).mean() - 0.1
    assert events[-1]["energy_real"] < events[-1]["energy_fake"]


def test_the_live_2d_ebm_learns_low_energy_on_the_data():
    ebm = Ebm2D("eight_gaussians", seed=0)
    ebm.train(150)
    data_energy = ebm._energy(ebm.shown_data).mean()
    assert data_energy < ebm._energy(ebm.buffer.noise(400, make_generator(8))).mean()
    assert ebm.energy_map(20).shape == (20, 20) and ebm.step == 150 and ebm.diverged is None


TINY = ["ebm", "--limit", "64", "--epochs", "2", "--batch-size", "16", "--langevin-steps", "3", "--buffer", "64",
        "--threads", "1"]


def test_the_trainer_writes_a_checkpoint_and_two_processes_agree(tmp_path):
    from core.checkpoints import load_checkpoint
    from tests.distributed import check_ranks_agree, train as run_trainer
    from tests.test_metrics import _tiny_fashion

    _tiny_fashion(tmp_path, n_train=64, n_test=16)
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path)], tmp_path / "one.pt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert card["command"].startswith("python -m core.train ebm") and card["steps"] == 8
    assert card["sampler"]["steps"] == 3 and len(card["training_curve"]["step_loss_energy_real_energy_fake"]) > 0
    metrics = card["metrics"]  # measured at the end on the test split
    assert metrics["images_each"] == 16 and 0 <= metrics["auroc_test_vs_noise"] <= 1
    assert set(metrics) >= {"mean_energy_test", "mean_energy_noise", "mean_energy_faces", "auroc_test_vs_faces"}
    ckpt = load_checkpoint(tmp_path / "one.pt")
    model = EnergyNet(EBMConfig(**{**ckpt.config, "widths": tuple(ckpt.config["widths"])}))
    model.load_state_dict(ckpt.state_dict)
    assert last(sample(model, 2, make_generator(0), steps=2))[0].shape == (2, 1, 32, 32)
    chains = ckpt.extras["chains"]  # the newest buffer samples, for the tab to continue
    assert chains.dtype == torch.uint8 and chains.shape == (64, 1, 32, 32) and card["chains_shipped"] == 64
    assert chains.float().std() > 0
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path)], tmp_path / "two.pt", processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks_agree(card, 2)


def test_inpainting_holds_the_known_pixels_and_moves_the_hole():
    model = tiny_net()
    images = torch.rand(2, 1, 16, 16, generator=make_generator(9)) * 2 - 1
    damaged, known = corrupt(images, "mask", 0.0, make_generator(10), box=(4, 2, 6, 8))
    assert known.sum() == 2 * (256 - 48) and (damaged[~known] == 0).all()  # the hole is flat grey
    assert torch.equal(damaged[known], images[known])
    walked = last(repair(model, damaged, known, make_generator(11), steps=5, step_size=10.0, noise=0.01))[0]
    assert torch.equal(walked[known], images[known]) and not torch.equal(walked[~known], damaged[~known])


def test_noise_damage_moves_every_pixel_and_stays_in_range():
    images = torch.zeros(3, 1, 16, 16)
    damaged, known = corrupt(images, "noise", 0.5, make_generator(12))
    assert known is None and damaged.abs().max() <= 1 and (damaged != 0).float().mean() > 0.99
    assert 0.4 < damaged.std() < 0.6
    with pytest.raises(ValueError, match="noise or mask"):
        corrupt(images, "blur", 1.0, make_generator(12))
    with pytest.raises(ValueError, match="inside"):
        corrupt(images, "mask", 0.0, make_generator(12), box=(20, 0, 4, 4))
    with pytest.raises(ValueError, match="not negative"):
        corrupt(images, "noise", float("nan"), make_generator(12))


def test_start_noise_and_the_faces_it_never_saw_are_in_the_models_range():
    noise = uniform_noise(500, 16, make_generator(13))
    assert noise.shape == (500, 1, 16, 16) and noise.min() >= -1 and noise.max() <= 1
    assert abs(noise.mean()) < 0.01 and torch.equal(noise, uniform_noise(500, 16, make_generator(13)))
    faces = grey_faces(4, size=32)
    assert faces.shape == (4, 1, 32, 32) and faces.min() >= -1 and faces.max() <= 1 and faces.std() > 0.1


def test_the_images_handed_out_at_each_step_are_plain_tensors_left_as_they_were():
    model = tiny_net()
    steps = [x for x, _ in langevin(model, torch.zeros(2, 1, 16, 16), 3, 1.0, 0.1, make_generator(14))]
    assert not any(x.requires_grad for x in steps)
    assert not torch.equal(steps[0], steps[1]) and not torch.equal(steps[1], steps[2])


def cuda_checks_ebm(device="cuda"):
    """The shipped energy network on `device` against the CPU (tests/gpu_checks.py calls this on a GPU; the
    test below on the CPU): the same energies, and the same seed walks to the same images. The clipped
    steps are ±0.3 a pixel, so a tiny difference can flip one step: most pixels must agree, not all."""
    from core.checkpoints import load_shipped

    ckpt = load_shipped("ebm", "fashion")
    models = []
    for where in ("cpu", device):
        model = EnergyNet(EBMConfig(**{**ckpt.config, "widths": tuple(ckpt.config["widths"])}))
        model.load_state_dict(ckpt.state_dict)
        models.append(model.float().eval().to(where))
    start = uniform_noise(8, 32, make_generator(5))
    assert (energies(models[0], start) - energies(models[1], start)).abs().max() <= 1e-3
    reference, on_device = (last(sample(m, 8, make_generator(6), steps=10))[0] for m in models)
    assert on_device.device.type == "cpu" and ((reference - on_device).abs() < 1e-2).float().mean() > 0.95


def test_the_shipped_model_tells_clothes_from_noise_and_faces_and_ships_its_chains():
    from core.ebm import load_chains, load_images, load_model
    from core.registry import shipped_path
    from tests.conftest import require

    require(shipped_path("ebm", "fashion").is_file(), "the shipped energy model is missing")
    model = load_model("fashion")
    clothes = energies(model, load_images("test", limit=200))
    for outliers in (uniform_noise(200, 32, make_generator(7)), grey_faces(200)):
        assert clothes.max() < energies(model, outliers).min()  # every test image below every outlier
    chains = load_chains("fashion")
    assert len(chains) == 1024 and chains.min() >= -1 and chains.max() <= 1
    assert energies(model, chains).mean() < clothes.mean() + 0.1  # the buffer's samples score like data
    cuda_checks_ebm("cpu")
