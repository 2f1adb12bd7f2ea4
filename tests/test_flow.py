"""Normalizing flows: the change of variables done right (log-determinants against brute force),
exact inverses, learning, sampling, and the trainer under one and two processes."""
import math

import numpy as np
import pytest
import torch

from core.data import toy2d
from core.flow import (ActNorm, AffineCoupling, Flow2D, ImageFlow, ImageFlowConfig, RealNVP2D, bits_per_dim,
                       dequantize, encode, interpolate, sample, squeeze, standard_normal_log_prob,
                       test_bits_per_dim as flow_test_bits_per_dim, train, unsqueeze)
from core.pixelcnn import quantise
from core.runtime import make_generator


def shaken(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Random weights everywhere, the zeroed last layers and ActNorms too: no layer stays the identity."""
    gen = make_generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def tiny_image_flow(size=4, steps=2, mixing="invconv") -> ImageFlow:
    return shaken(ImageFlow(ImageFlowConfig(image_size=size, hidden=8, steps_per_scale=steps, mixing=mixing)))


# --- the change of variables ------------------------------------------------------------------

def test_the_2d_log_determinant_equals_the_autograd_jacobians():
    model = shaken(RealNVP2D(couplings=5, hidden=16))
    x = torch.randn(6, 2, generator=make_generator(1))
    _, log_det = model(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda v: model(v[None])[0][0], x[i])
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-4)


@pytest.mark.parametrize("mixing", ["invconv", "reverse"])
def test_the_image_flows_log_determinant_equals_the_autograd_jacobians(mixing):
    """The whole multi-scale plumbing (logit, squeezes, ActNorm, 1×1 convolutions, couplings, the split)
    on 4×4 images, whose 16×16 Jacobian is small enough to build by brute force."""
    model = tiny_image_flow(mixing=mixing).double()
    y = torch.rand(3, 1, 4, 4, generator=make_generator(2), dtype=torch.float64) * 0.9 + 0.05
    _, log_det = model(y)
    for i in range(len(y)):
        jacobian = torch.autograd.functional.jacobian(lambda v: model(v[None])[0][0], y[i]).reshape(16, 16)
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-6)


def test_identity_couplings_give_the_standard_gaussians_likelihood():
    # A fresh flow without ActNorm: every coupling's last layer is zero, so s = t = 0 and f is the identity.
    model = RealNVP2D(couplings=4, act_norm=False)
    x = torch.randn(50, 2, generator=make_generator(3))
    gaussian = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    assert torch.allclose(model.log_prob(x), gaussian, atol=1e-6)
    assert torch.equal(model(x)[0], x)


def test_a_shifted_and_scaled_gaussian_through_actnorm_has_its_exact_likelihood():
    norm = ActNorm(2)
    x = torch.randn(20000, 2, generator=make_generator(4)) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    norm.initialize(x)
    y, log_det = norm(x)
    truth = torch.distributions.Normal(torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])).log_prob(x).sum(1)
    assert torch.allclose(y.mean(0), torch.zeros(2), atol=1e-4) and torch.allclose(y.std(0), torch.ones(2), atol=1e-3)
    with torch.no_grad():  # with the true mean and scale the change of variables is the truth itself
        norm.shift.copy_(torch.tensor([1.0, -2.0]))
        norm.log_scale.copy_(torch.tensor([3.0, 0.5]).log())
    y, log_det = norm(x)
    assert torch.allclose(standard_normal_log_prob(y) + log_det, truth, atol=1e-4)


def test_a_coupling_leaves_its_conditioning_half_alone_and_bounds_its_scale():
    net = torch.nn.Linear(2, 4)
    with torch.no_grad():
        net.weight.fill_(100.0)  # a huge raw scale: tanh keeps it within ±2
    coupling = AffineCoupling(net, torch.tensor([1.0, 0.0]))
    x = torch.randn(10, 2, generator=make_generator(5))
    y, log_det = coupling(x)
    assert torch.equal(y[:, 0], x[:, 0]) and not torch.equal(y[:, 1], x[:, 1])
    assert log_det.abs().max() <= 2.0 + 1e-6


# --- exact inverses ------------------------------------------------------------------------------

def test_every_flow_is_inverted_to_within_1e_4():
    model = shaken(RealNVP2D(couplings=8, hidden=16)).double()  # the algebra is exact: float64 shows it
    x = toy2d.sample("spiral", 500, make_generator(6)).double()
    assert (model.inverse(model(x)[0]) - x).abs().max() <= 1e-10
    flow = Flow2D("spiral", couplings=8, seed=0)
    flow.train(200)  # a trained flow in float32, on points it never saw
    assert (flow.model.inverse(flow.model(flow.held_out)[0]) - flow.held_out).abs().max() <= 1e-4
    image_model = shaken(ImageFlow(ImageFlowConfig(hidden=8, steps_per_scale=2)), scale=0.1)
    levels = torch.randint(4, (8, 1, 16, 16), generator=make_generator(7))
    y = dequantize(levels, 4, make_generator(8))
    assert (image_model.inverse(image_model(y)[0]) - y).abs().max() <= 1e-4


def test_squeeze_is_a_permutation_and_unsqueeze_undoes_it():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 2) and torch.equal(s.flatten().sort().values, x.flatten().sort().values)
    assert torch.equal(s[0, :4, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))  # one 2×2 patch -> four channels
    assert torch.equal(unsqueeze(s), x)


def test_the_path_through_the_layers_starts_at_the_point_and_ends_at_its_image():
    model = shaken(RealNVP2D(couplings=3, hidden=16))
    x = torch.randn(4, 2, generator=make_generator(9))
    forward, backward = model.forward_path(x), model.inverse_path(model(x)[0])
    assert len(forward) == len(backward) == 4
    assert torch.equal(forward[0], x) and torch.allclose(forward[-1], model(x)[0])
    assert torch.allclose(backward[-1], x, atol=1e-5)
    assert all(torch.allclose(f, b, atol=1e-5) for f, b in zip(forward, reversed(backward)))


# --- dequantisation and bits per dimension ---------------------------------------------------------

def test_dequantised_values_stay_in_their_levels_bin():
    levels = torch.randint(4, (50, 1, 16, 16), generator=make_generator(10))
    assert torch.equal(quantise(dequantize(levels, 4, make_generator(11)), 4), levels)
    assert torch.equal(quantise(dequantize(levels, 4), 4), levels)  # the bins' centres


def test_a_uniform_density_scores_log2_k_bits_per_dimension():
    class Uniform(ImageFlow):  # p_Y = 1 on [0, 1]^D: the discrete bound is exactly log2 K per pixel
        def log_prob(self, y):
            return torch.zeros(len(y))

    model = Uniform(ImageFlowConfig(levels=4, hidden=8, steps_per_scale=1))
    bpd = bits_per_dim(model, torch.randint(4, (3, 1, 16, 16)), make_generator(0))
    assert torch.allclose(bpd, torch.full((3,), 2.0))


# --- learning -------------------------------------------------------------------------------------

def test_the_live_2d_flow_learns_the_moons_better_than_a_gaussian():
    flow = Flow2D("moons", couplings=6, seed=0, lr=3e-3)
    before = flow.held_out_nll()
    flow.train(600)
    data = flow.held_out
    gaussian = torch.distributions.MultivariateNormal(data.mean(0), torch.from_numpy(np.cov(data.T.numpy())).float())
    assert flow.held_out_nll() < before - 0.5
    assert flow.held_out_nll() < -gaussian.log_prob(data).mean().item()
    assert flow.step == 600 and len(flow.history) == 600 and flow.diverged is None


def test_the_density_map_integrates_to_about_one_over_the_plotted_square():
    flow = Flow2D("ring", couplings=4, seed=1)
    flow.train(300)
    density = flow.density_map(200)
    cell = (2 * toy2d.EXTENT / 200) ** 2
    assert 0.9 < density.sum().item() * cell <= 1.01


def test_the_maps_plane_is_stored_as_an_image_is():
    points = toy2d.plane(3).reshape(3, 3, 2)
    assert points[0, 0].tolist() == [-toy2d.EXTENT, toy2d.EXTENT]   # top left
    assert points[0, 2].tolist() == [toy2d.EXTENT, toy2d.EXTENT]    # top right
    assert points[2, 0].tolist() == [-toy2d.EXTENT, -toy2d.EXTENT]  # bottom left


def test_a_huge_learning_rate_is_reported_not_raised():
    flow = Flow2D("checkerboard", couplings=8, seed=0, lr=10.0)
    flow.train(300)
    assert flow.diverged and "step" in flow.diverged
    steps = flow.step
    flow.train(10)  # a diverged flow stays put
    assert flow.step == steps


@pytest.mark.parametrize("bad", [0, 65])
def test_impossible_flows_are_refused_in_a_sentence(bad):
    with pytest.raises(ValueError, match="between 1 and 64 coupling layers"):
        Flow2D("moons", couplings=bad)
    with pytest.raises(ValueError, match="Unknown distribution"):
        Flow2D("cube")
    with pytest.raises(ValueError, match="learning rate"):
        Flow2D("moons").set_learning_rate(float("nan"))


def test_same_seed_same_flow_whatever_the_global_random_stream():
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # another user's draws from the global stream change nothing here
        flow = Flow2D("eight_gaussians", couplings=3, seed=5)
        flow.train(20)
        runs.append((flow.history, flow.sample_points()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    other = Flow2D("eight_gaussians", couplings=3, seed=6)
    other.train(20)
    assert other.history != runs[0][0]


def test_a_tiny_image_flow_lowers_its_bits_per_dimension():
    levels = quantise(torch.rand(64, 1, 8, 8, generator=make_generator(12)) ** 3, 4)  # mostly dark pixels
    model = ImageFlow(ImageFlowConfig(image_size=8, hidden=16, steps_per_scale=2))
    model.initialize(dequantize(levels, 4, make_generator(13)))
    before = flow_test_bits_per_dim(model, levels)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    losses = [event["loss"] for event in train(model, levels, 150, 32, optimizer, make_generator(14))]
    assert flow_test_bits_per_dim(model, levels) < before - 0.1
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert optimizer.param_groups[0]["lr"] == 3e-3  # the warm-up hands the learning rate back


def test_same_seed_same_samples_and_temperature_shrinks_the_latent():
    model = shaken(ImageFlow(ImageFlowConfig(image_size=8, hidden=8, steps_per_scale=2)), scale=0.05)
    a, b = sample(model, 4, make_generator(1)), sample(model, 4, make_generator(1))
    assert torch.equal(a, b) and a.shape == (4, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, sample(model, 4, make_generator(2)))
    z = torch.randn(4, 64, generator=make_generator(3))
    cold = sample(model, 4, None, temperature=0.3, z=z)
    assert torch.allclose(model(cold)[0], 0.3 * z, atol=1e-3)
    for bad in (0, -1, 5, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            sample(model, 1, make_generator(0), temperature=bad)


def test_interpolation_runs_from_one_image_to_the_other():
    model = tiny_image_flow(size=8)
    a, b = torch.randint(4, (2, 1, 8, 8), generator=make_generator(15))
    strip = interpolate(model, a, b, 5)
    assert strip.shape == (5, 1, 8, 8)
    assert torch.equal(quantise(strip[0], 4), a) and torch.equal(quantise(strip[-1], 4), b)
    assert torch.allclose(encode(model, a[None])[0], model(dequantize(a[None], 4))[0][0])


def test_an_image_size_the_squeezes_cannot_halve_is_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        ImageFlow(ImageFlowConfig(image_size=14))


# --- the trainer, as users run it -----------------------------------------------------------------

def _tiny_levels_data(folder):
    from tests.test_metrics import _tiny_fashion

    _tiny_fashion(folder, n_train=64, n_test=16)


TINY = ["flow", "--size", "8", "--hidden", "8", "--steps-per-scale", "2", "--limit", "64", "--epochs", "4",
        "--batch-size", "16", "--lr", "3e-3", "--threads", "1"]


def test_the_trainer_writes_a_checkpoint_the_app_loads_and_resumes(tmp_path):
    from core.checkpoints import load_checkpoint
    from tests.distributed import train as run_trainer

    _tiny_levels_data(tmp_path)
    out = tmp_path / "flow.pt"
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path)], out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert card["command"].startswith("python -m core.train flow --size 8") and card["steps"] == 16
    assert 0 < card["metrics"]["test_bits_per_dim"] < 2  # better than a uniform guess (2 bits for K = 4)
    assert [len(f["sha256_of_images_and_labels"]) for f in card["data_files"]] == [64, 64]
    ckpt = load_checkpoint(out)
    model = ImageFlow(ImageFlowConfig(**ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    assert sample(model, 2, make_generator(0)).shape == (2, 1, 8, 8)

    stopped = tmp_path / "stopped.pt"
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path), "--minutes", "1e-9"], stopped)
    assert done.returncode == 0 and card["steps"] == 1, done.stderr[-3000:]
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path), "--resume", "--lr", "1e-4"], stopped)
    assert done.returncode == 0 and card["steps"] == 16 and "--resume" in card["resumed_with"][0], done.stderr[-3000:]
    from core.checkpoints import load_resume
    from core.registry import resume_path

    state = load_resume(resume_path(stopped))  # the resumed part ran at its own --lr (a cool-down)
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [1e-4]


def test_two_processes_train_one_flow(tmp_path):
    from tests.distributed import check_ranks_agree, train as run_trainer

    _tiny_levels_data(tmp_path)
    done, card = run_trainer([*TINY, "--data-dir", str(tmp_path)], tmp_path / "two.pt", processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks_agree(card, 2)
    assert card["global_batch"] == 16 and math.isfinite(card["metrics"]["test_bits_per_dim"])


# --- the shipped image flow, and the same on a GPU ------------------------------------------------

def cuda_checks_flow(device="cuda"):
    """The shipped flow on `device` against the CPU (tests/gpu_checks.py calls this on a GPU; the test
    below on the CPU). No autocast for flows, but cuDNN may use TF32: same seed, samples within 2e-2."""
    from core.checkpoints import load_shipped

    ckpt = load_shipped("flow", "fashion16_k4")
    models = []
    for where in ("cpu", device):
        model = ImageFlow(ImageFlowConfig(**ckpt.config))
        model.load_state_dict(ckpt.state_dict)
        models.append(model.float().eval().to(where))
    reference, on_device = (sample(m, 16, make_generator(3), temperature=0.7) for m in models)
    assert on_device.device.type == "cpu" and (reference - on_device).abs().max() <= 2e-2
    y = sample(models[1], 8, make_generator(4), temperature=0.7).clamp(0.01, 0.99).to(device)
    with torch.no_grad():
        assert (models[1].inverse(models[1](y)[0]) - y).abs().max() <= 1e-3


def test_the_shipped_flow_beats_a_uniform_guess_inverts_and_samples_alike_everywhere():
    from core.pixelcnn import load_levels
    from core.registry import read_card, shipped_path
    from tests.conftest import require

    require(shipped_path("flow", "fashion16_k4").is_file(), "the shipped image flow is missing")
    card = read_card("flow", "fashion16_k4")
    assert card["metrics"]["test_bits_per_dim"] < 1.0  # a uniform guess over 4 levels: 2 bits
    from core.flow import load_model

    model = load_model()
    levels = load_levels("test", 16, 4, limit=200)
    assert flow_test_bits_per_dim(model, levels) == pytest.approx(card["metrics"]["test_bits_per_dim"], abs=0.05)
    y = dequantize(levels, 4, make_generator(0))
    with torch.no_grad():
        assert (model.inverse(model(y)[0]) - y).abs().max() <= 1e-4
    cuda_checks_flow("cpu")
