import re

import numpy as np
import pytest
import torch

from core.diffusion import (SAMPLERS, SCHEDULES, DiffusionConfig, Guess, Sampler, UNet, add_noise, denoise,
                            diffusion_loss, half_log_snr, sample, schedule_rates, train)
from core.runtime import make_generator
from tabs import stepviewer
from tests.conftest import require_module
from tests.test_datasets import any_checksum  # noqa: F401 (a fixture)

TINY = DiffusionConfig(channels=1, image_size=8, widths=(8, 16), attention=True, embedding_dim=8, patch=1)




def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)  # weights only; sampling below always uses explicit generators
    model = UNet(config).eval()
    # The head starts at zero (predicts "no noise"); give it weights so samplers see a real signal.
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    return model


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_rates_are_on_the_unit_circle_and_monotone(schedule):
    t = torch.linspace(0, 1, 1001)
    signal, noise = schedule_rates(schedule, t)
    assert torch.allclose(signal ** 2 + noise ** 2, torch.ones_like(t), atol=1e-5)
    assert (signal[1:] <= signal[:-1]).all() and (noise[1:] >= noise[:-1]).all()
    assert signal[0] == 1 and noise[0] == 0      # t = 0 is the data
    assert signal[-1] < 0.05 and noise[-1] > 0.99  # t = 1 is (almost) pure noise


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="schedule"):
        schedule_rates("quadratic", torch.zeros(1))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_noising_at_t0_returns_the_image_and_at_t1_is_mostly_noise(schedule):
    gen = make_generator(1)
    x0 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen)
    assert torch.equal(add_noise(x0, 0.0, eps, schedule), x0)
    x1 = add_noise(x0, 1.0, eps, schedule)
    assert (x1 - eps).abs().max() < 0.1
    per_image = add_noise(x0, torch.tensor([0.0, 0.3, 0.6, 1.0]), eps, schedule)
    assert torch.equal(per_image[0], x0[0]) and torch.allclose(per_image[3], x1[3])


def test_ddim_eta0_is_deterministic_for_a_fixed_start_noise():
    model = tiny_model()
    noise = torch.randn(3, 1, 8, 8, generator=make_generator(5))
    a = sample(model, 3, make_generator(1), steps=10, noise=noise)
    b = sample(model, 3, make_generator(999), steps=10, noise=noise)  # eta 0: the generator is never used
    assert torch.equal(a, b)
    c = sample(model, 3, make_generator(1), steps=10, eta=1.0, noise=noise)
    d = sample(model, 3, make_generator(2), steps=10, eta=1.0, noise=noise)
    assert not torch.equal(c, d)  # eta 1 does draw fresh noise


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("kind", ["DDIM", "DDPM"])
def test_step_returns_x0_consistent_with_the_noise_prediction(kind, clip):
    sampler = Sampler(kind, steps=20, eta=0.5, schedule="cosine", clip_x0=clip)
    gen = make_generator(3)
    x_t = torch.randn(2, 1, 8, 8, generator=gen)
    eps = torch.randn(2, 1, 8, 8, generator=gen)
    out = sampler.step(eps, 0.6, x_t, 0.55, generator=gen)
    signal, noise = schedule_rates("cosine", torch.tensor(0.6))
    if not clip:  # x_t = signal * x0 + noise * eps, exactly
        assert torch.allclose(signal * out.pred_original + noise * eps, x_t, atol=1e-5)
    else:  # clipped x0 stays in the data range
        assert out.pred_original.abs().max() <= 1.0
    assert out.prev_sample.shape == x_t.shape


def test_ddpm_equals_ddim_with_eta_1():
    gen = make_generator(4)
    x_t, eps, z = (torch.randn(2, 1, 8, 8, generator=gen) for _ in range(3))
    ddpm = Sampler("DDPM", 10, schedule="linear").step(eps, 0.5, x_t, 0.4, variance_noise=z)
    ddim = Sampler("DDIM", 10, eta=1.0, schedule="linear").step(eps, 0.5, x_t, 0.4, variance_noise=z)
    assert torch.allclose(ddpm.prev_sample, ddim.prev_sample, atol=1e-5)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(eta, clip):
    diffusers = require_module("diffusers", "diffusers (dev dependency) is not installed: run `sh tests/install.sh`")
    T, steps = 1000, 20
    # diffusers counts training steps 0..T-1; ours is continuous time with t = (k + 1) / T and t = 0 = data.
    t_grid = torch.arange(1, T + 1, dtype=torch.float64) / T
    alpha_bar = schedule_rates("cosine", t_grid)[0].double() ** 2
    betas = 1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    reference = diffusers.DDIMScheduler(num_train_timesteps=T, trained_betas=betas.numpy(), clip_sample=clip,
                                        clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                                        timestep_spacing="leading")
    reference.set_timesteps(steps)
    ours = Sampler("DDIM", steps, eta=eta, schedule="cosine", clip_x0=clip)
    gen = make_generator(7)
    x_t = torch.randn(2, 1, 8, 8, generator=gen) * 1.5
    eps = torch.randn(2, 1, 8, 8, generator=gen)
    z = torch.randn(2, 1, 8, 8, generator=gen)
    for k in (int(reference.timesteps[0]), 450, int(reference.timesteps[-1])):
        expected = reference.step(eps, k, x_t, eta=eta, use_clipped_model_output=clip,
                                  variance_noise=z if eta > 0 else None)
        got = ours.step(eps, (k + 1) / T, x_t, (k + 1 - T // steps) / T, variance_noise=z)
        assert torch.allclose(got.prev_sample, expected.prev_sample, atol=1e-4), k
        assert torch.allclose(got.pred_original, expected.pred_original_sample, atol=1e-4), k


def fake_x0_network(seed=7, scale=1.5):
    """A fixed stand-in for the network: ε̂(x, t) = (x − α_t · scale · tanh(W x)) / σ_t, i.e. the guess of x_0 is a
    fixed nonlinear function of x, so successive guesses differ and a multistep solver's history matters."""
    weights = torch.randn(64, 64, generator=make_generator(seed)) / 8

    def noise_prediction(x, t, schedule="cosine"):
        signal, noise = (float(rate) for rate in schedule_rates(schedule, torch.tensor(float(t))))
        return (x - signal * scale * torch.tanh((x.flatten(1) @ weights).reshape(x.shape))) / noise
    return noise_prediction


@pytest.mark.parametrize("steps", [5, 10])
@pytest.mark.parametrize("clip", [False, True])
def test_dpm_solver_matches_diffusers(clip, steps):
    diffusers = require_module("diffusers", "diffusers (dev dependency) is not installed: run `sh tests/install.sh`")
    T = 1000
    t_grid = torch.arange(1, T + 1, dtype=torch.float64) / T  # as in the DDIM test: t = (k + 1) / T
    alpha_bar = schedule_rates("cosine", t_grid)[0].double() ** 2
    betas = 1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    # "trailing" spacing starts at k = T − 1 (our t = 1) and steps T / steps apart; the final sigma is zero (our
    # t = 0). diffusers' dynamic thresholding with sample_max_value 1 is a clamp to [−1, 1]: our clip_x0.
    reference = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=betas.numpy(), algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", prediction_type="epsilon", timestep_spacing="trailing", final_sigmas_type="zero",
        thresholding=clip, sample_max_value=1.0, lower_order_final=True)
    reference.set_timesteps(steps)
    ours = Sampler("DPM++2M", steps, schedule="cosine", clip_x0=clip)
    first_order = Sampler("DDIM", steps, schedule="cosine", clip_x0=clip)
    assert [(int(k) + 1) / T for k in reference.timesteps] == pytest.approx(ours.times[:-1].tolist(), abs=1e-6)
    eps = fake_x0_network()
    x = torch.randn(2, 1, 8, 8, generator=make_generator(3))
    x_ref, x_ours, x_ddim, previous, clipped = x.clone(), x.clone(), x.clone(), None, False
    for i, k in enumerate(reference.timesteps):
        t, t_prev = float(ours.times[i]), float(ours.times[i + 1])
        x_ref = reference.step(eps(x_ref, t), k, x_ref).prev_sample
        out = ours.step(eps(x_ours, t), t, x_ours, t_prev, previous=previous)
        clipped |= bool((out.pred_original.abs() >= 1).any())
        x_ours, previous = out.prev_sample, Guess(t, out.pred_original)
        x_ddim = first_order.step(eps(x_ddim, t), t, x_ddim, t_prev).prev_sample
        assert torch.allclose(x_ours, x_ref, atol=1e-4), (i, (x_ours - x_ref).abs().max())
        if i == 1:  # the first 2M step: first order alone (DDIM) no longer matches
            assert (x_ddim - x_ref).abs().max() > 1e-3
    assert clipped or not clip  # with clipping on, the fake network's guesses did reach past [−1, 1]
    assert (x_ddim - x_ref).abs().max() > 1e-2  # the whole run: the history made a difference


class PerfectNetwork(torch.nn.Module):
    """The ideal noise predictor when the data is the one image x0: ε̂ = (x_t − α x0) / σ (α² + σ² = 1)."""

    def __init__(self, x0):
        super().__init__()
        self.config = TINY  # its cosine schedule is what `sample` walks
        self.x0 = torch.nn.Parameter(x0, requires_grad=False)

    def forward(self, x_t, noise_variance, condition=None):
        noise = noise_variance.sqrt()
        return (x_t - (1 - noise_variance).sqrt() * self.x0) / noise


@pytest.mark.parametrize("kind", SAMPLERS[::2])  # DDIM and DPM++2M (DDPM adds noise)
@pytest.mark.parametrize("steps", [1, 10])
def test_a_perfect_noise_predictor_leads_back_to_its_single_training_image(kind, steps):
    x0 = torch.rand(1, 1, 8, 8, generator=make_generator(2)) * 1.8 - 0.9
    model = PerfectNetwork(x0)
    noise = torch.randn(3, 1, 8, 8, generator=make_generator(5))
    out = sample(model, 3, make_generator(0), steps=steps, kind=kind, noise=noise)
    assert torch.allclose(out, ((x0 + 1) / 2).expand(3, -1, -1, -1), atol=1e-4)


def test_dpm_solver_is_deterministic_and_its_step_keeps_no_state():
    model = tiny_model()
    noise = torch.randn(3, 1, 8, 8, generator=make_generator(5))
    a = sample(model, 3, make_generator(1), steps=10, kind="DPM++2M", noise=noise)
    b = sample(model, 3, make_generator(999), steps=10, kind="DPM++2M", eta=0.7, noise=noise)  # eta does not apply
    assert torch.equal(a, b) and torch.isfinite(a).all()
    ddim = sample(model, 3, make_generator(1), steps=10, noise=noise)
    assert not torch.allclose(a, ddim, atol=1e-3)  # a different sampler, not DDIM under another name
    # One Sampler shared by two users whose runs interleave step by step: each gets what it gets alone.
    sampler = Sampler("DPM++2M", 10)
    other = torch.randn(3, 1, 8, 8, generator=make_generator(6))
    alone = [list(denoise(model, sampler, start)) for start in (noise, other)]
    together = list(zip(denoise(model, sampler, noise), denoise(model, sampler, other)))
    for i, (first, second) in enumerate(together):
        assert torch.equal(first.x_t, alone[0][i].x_t) and torch.equal(second.x_t, alone[1][i].x_t), i
    assert torch.equal(((alone[0][-1].x_t + 1) / 2).clamp(0, 1), a)


def test_the_dpm_solver_lands_on_its_guess_at_t_0():
    # Arriving at t = 0 (noise rate 0, λ = +∞) with a history: x̂₀ itself, no log of 0, no NaN.
    sampler = Sampler("DPM++2M", 10, clip_x0=False)
    x_t, eps, earlier = (torch.randn(2, 1, 8, 8, generator=make_generator(s)) for s in (1, 2, 3))
    out = sampler.step(eps, 0.1, x_t, 0.0, previous=Guess(0.2, earlier))
    assert torch.isfinite(out.prev_sample).all() and torch.equal(out.prev_sample, out.pred_original)
    assert half_log_snr("cosine", 0.0) == float("inf") and half_log_snr("cosine", 1.0) == pytest.approx(-4.6, abs=0.01)
    with pytest.raises(ValueError, match="noisier time"):  # a "previous" guess from a later time is a caller's bug
        sampler.step(eps, 0.5, x_t, 0.4, previous=Guess(0.4, earlier))


def test_ddim_and_ddpm_ignore_a_previous_guess():
    gen = make_generator(8)
    x_t, eps, z, earlier = (torch.randn(2, 1, 8, 8, generator=gen) for _ in range(4))
    for kind in ("DDIM", "DDPM"):
        sampler = Sampler(kind, 10, eta=0.5)
        plain = sampler.step(eps, 0.5, x_t, 0.4, variance_noise=z)
        given = sampler.step(eps, 0.5, x_t, 0.4, variance_noise=z, previous=Guess(0.6, earlier))
        assert torch.equal(plain.prev_sample, given.prev_sample), kind


def test_guided_sampling_can_use_the_dpm_solver():
    from core.diffusion import predict_noise
    from core.text_to_image import guided_denoise

    config = DiffusionConfig(channels=1, image_size=8, widths=(8, 16), attention=False, embedding_dim=8, condition_dim=4)
    model = tiny_model(config=config)
    torch.nn.init.normal_(model.condition[-1].weight, std=0.5)
    c, e = torch.randn(1, 4, generator=make_generator(1)), torch.zeros(1, 4)
    x = start = torch.randn(2, 1, 8, 8, generator=make_generator(2))
    sampler = Sampler("DPM++2M", 4)
    frames = list(guided_denoise(model, sampler, x, c, e, 2.0))
    previous = None
    for i, frame in enumerate(frames):  # the same as stepping by hand with the previous guess passed along
        t = float(sampler.times[i])
        with torch.no_grad():
            eps_c, eps_e = (predict_noise(model, x, t, "cosine", cond) for cond in (c, e))
        step = sampler.step(eps_e + 2.0 * (eps_c - eps_e), t, x, float(sampler.times[i + 1]), previous=previous)
        assert torch.allclose(frame.x_t, step.prev_sample, atol=1e-4), i
        x, previous = frame.x_t, Guess(t, frame.x0)
    ddim = list(guided_denoise(model, Sampler("DDIM", 4), start, c, e, 2.0))
    assert not torch.allclose(ddim[-1].x_t, frames[-1].x_t, atol=1e-3)  # the history was used


def test_sampler_refuses_bad_settings_with_sentences():
    for kwargs, match in [({"steps": 0}, "Steps"), ({"steps": 5000}, "Steps"), ({"eta": 1.5}, "eta"),
                          ({"eta": -0.1}, "eta"), ({"kind": "PNDM"}, "sampler"), ({"schedule": "x"}, "schedule")]:
        with pytest.raises(ValueError, match=match):
            Sampler(**kwargs)
    with pytest.raises(ValueError, match=r"Unknown sampler 'DPM\+\+'; choose one of DDIM, DDPM, DPM\+\+2M\."):
        Sampler("DPM++")


def test_denoise_yields_every_step_with_time_running_backwards():
    model = tiny_model()
    sampler = Sampler("DDIM", steps=4, schedule="offset-cosine")
    frames = list(denoise(model, sampler, torch.randn(2, 1, 8, 8, generator=make_generator(0))))
    assert [f.step for f in frames] == [1, 2, 3, 4]
    assert [round(f.t, 2) for f in frames] == [0.75, 0.5, 0.25, 0.0]
    assert frames[-1].signal_rate == 1.0 and frames[-1].noise_rate == 0.0
    # the last step lands on the clean-image guess
    assert torch.allclose(frames[-1].x_t, frames[-1].x0, atol=1e-6)


def test_patch_folding_keeps_the_shape():
    config = DiffusionConfig(channels=3, image_size=8, widths=(8, 16), attention=False, embedding_dim=8, patch=2)
    model = UNet(config)
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.tensor([0.3, 0.9])).shape == x.shape


def test_a_tiny_model_learns_to_predict_noise():
    # Data with structure a network can learn: each image is one of two fixed patterns.
    gen = make_generator(0)
    patterns = torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1
    images = patterns[torch.arange(256) % 2]
    torch.manual_seed(0)
    model = UNet(DiffusionConfig(channels=1, image_size=8, widths=(8, 16), attention=False, embedding_dim=8))

    def eval_loss():
        with torch.no_grad():
            return sum(diffusion_loss(model, model.config, images[:64], make_generator(s)).item() for s in range(4)) / 4

    before = eval_loss()
    for _ in train(model, images, steps=60, batch_size=16, lr=5e-3, generator=make_generator(1)):
        pass
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


# --- the tab's handlers, on a tiny untrained model (behaviour, not image quality) ---------------

@pytest.fixture
def tab_with_tiny_model(monkeypatch):
    from tabs import diffusion as tab

    model = tiny_model()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(tab, "_model", lambda name: model)
    return tab, calls


def test_tab_viewer_frames_are_precomputed_and_scrubbing_runs_no_network(tab_with_tiny_model):
    tab, calls = tab_with_tiny_model
    *_, last = tab.generate("tiny", 3, 4, "DDIM", 6, 0.0, "cosine")
    final, frames, slider, viewer, caption, note = last
    assert len(frames) == 7 and final is not None and "Step 6 of 6" in caption
    assert slider["maximum"] == 6
    assert "Step 0 of 6" in frames[0][1] and "pure noise" in frames[0][1]
    n_calls = len(calls)
    pixels = [np.asarray(image) for image, _ in frames]
    assert not np.array_equal(pixels[0], pixels[3]) and not np.array_equal(pixels[3], pixels[6])
    for i, shown in ((0, 0), (3, 3), (6, 6), (99, 6), (-5, 0)):  # out-of-range positions are clamped
        image, text = stepviewer.show_frame(frames, i)
        assert np.array_equal(np.asarray(image), pixels[shown]) and f"Step {shown} of 6" in text, i
    assert list(stepviewer.play(frames, 6))[0][0] == 0  # at the end, play restarts from noise
    assert len(calls) == n_calls  # scrubbing and playing never ran the network
    from PIL import Image

    gif = Image.open(stepviewer.frames_gif(frames, "diffusion"))  # the frames in order (Pillow merges the held last)
    for i, _ in enumerate(frames):
        gif.seek(i)
        assert np.array_equal(np.asarray(gif.convert("RGB")), np.asarray(frames[i][0].convert("RGB"))), i


def test_tab_caps_and_refuses_bad_input(tab_with_tiny_model):
    tab, _ = tab_with_tiny_model
    *_, last = tab.generate("tiny", 2**40, 500, "DDIM", 2, 0.0, "cosine")  # huge seed wraps, n is capped
    assert "Limited to 36" in last[5]
    for args in [(0, 0.0), (100_000, 0.0), (10, 1.5), (10, -1)]:
        with pytest.raises(ValueError):
            next(tab.generate("tiny", 0, 4, "DDIM", *args, "cosine"))
    with pytest.raises(ValueError, match="different seeds"):
        tab.interpolation("tiny", 5, 5, 4, 5)
    assert tab.interpolation("tiny", 1, 2, 3, 2).width > 0
    image, note = tab.steps_versus_quality("tiny", 0, 1)
    assert image.width > image.height and "100 steps" in note


def test_tab_samples_with_the_dpm_solver_and_lists_every_sampler(tab_with_tiny_model):
    tab, calls = tab_with_tiny_model
    assert [key for _, key in tab.SAMPLER_CHOICES] == list(SAMPLERS)  # the tab imports no torch: kept in step by hand
    assert "DPM-Solver++ (2M)" in dict(tab.SAMPLER_CHOICES) and "DDIM-50" in tab.SAMPLER_INFO
    *_, last = tab.generate("tiny", 3, 4, "DPM++2M", 6, 0.5, "cosine")
    final, frames, slider, viewer, caption, note = last
    assert len(frames) == 7 and final is not None and "Step 6 of 6" in caption and len(calls) == 6
    assert "DPM-Solver++ (2M) is deterministic" in note  # η was set: said to do nothing here
    again = list(tab.generate("tiny", 3, 4, "DPM++2M", 6, 0.0, "cosine"))[-1]
    assert np.array_equal(np.asarray(again[0]), np.asarray(final))  # η did nothing: same seed, same picture
    ddim = list(tab.generate("tiny", 3, 4, "DDIM", 6, 0.0, "cosine"))[-1]
    assert not np.array_equal(np.asarray(ddim[0]), np.asarray(final))
    with pytest.raises(ValueError, match=r"choose one of DDIM, DDPM, DPM\+\+2M"):
        next(tab.generate("tiny", 0, 4, "Euler", 10, 0.0, "cosine"))
    # A link names it by its key or its label; "Copy link" writes the "+" as %2B, so it survives the URL, and
    # typed by hand (where a "+" arrives as a space) it still finds DPM-Solver++ and nothing else.
    import gradio as gr
    from urllib.parse import parse_qs, urlencode

    from tabs.classroom import widget_value

    radio = gr.Radio(tab.SAMPLER_CHOICES, value="DDIM")
    assert widget_value(radio, "DPM++2M") == widget_value(radio, "dpm-solver++ (2m)") == ("DPM++2M", None)
    assert parse_qs(urlencode({"sampler": "DPM++2M"}))["sampler"] == ["DPM++2M"]
    assert widget_value(radio, parse_qs("sampler=DPM++2M")["sampler"][0]) == ("DPM++2M", None)
    assert widget_value(radio, "DPM")[0] is None and widget_value(radio, "2M")[0] is None


def test_tab_forward_process_at_t0_shows_the_image_itself():
    from tabs import diffusion as tab

    example = tab.EXAMPLES[0].name
    x0 = tab._example_image(example, None)
    noised, strip, figure, caption = tab.forward_process(example, None, 0.0, "offset-cosine")
    expected = tab._grid((x0 + 1) / 2, 1)
    assert list(noised.getdata()) == list(expected.getdata())
    assert "1.000 · x₀ + 0.000 · ε" in caption
    with pytest.raises(ValueError):
        tab.forward_process(example, None, 0.5, "sigmoid")


@pytest.mark.parametrize("kind", ["DDIM", "DPM++2M"])
def test_one_step_is_the_clipped_guess_from_pure_noise(kind):
    model = tiny_model()
    x_T = torch.randn(3, 1, 8, 8, generator=make_generator(4))
    with torch.no_grad():
        eps = model(x_T, schedule_rates("cosine", torch.tensor([1.0]))[1] ** 2)
    signal, noise = schedule_rates("cosine", torch.tensor(1.0))
    guess = ((x_T - noise * eps) / signal).clamp(-1, 1)  # x̂₀: no noise is added on the way to t = 0
    one = sample(model, 3, make_generator(0), steps=1, kind=kind, noise=x_T)
    assert torch.allclose(one, (guess + 1) / 2, atol=1e-5)
    assert float(signal) == pytest.approx(0.01, abs=1e-6)  # the tab's text: "about 0.01 … a hundredfold"


def test_one_step_on_the_shipped_model_is_salt_and_pepper_and_the_tab_says_so():
    from tabs import diffusion as tab

    model = tab._model("fashion32")
    noise = torch.randn(4, 1, 32, 32, generator=make_generator(0))
    one = sample(model, 4, make_generator(0), steps=1, noise=noise)
    fifty = sample(model, 4, make_generator(0), steps=50, noise=noise)
    # Measured: 73 % of the 1-step pixel values are pure black or white, 12 % after 50 steps (a black
    # background); neighbouring pixels differ 3.5x as much: noise, not a blurry average.
    assert tab.clipped_share(one) > 0.5 > 2 * tab.clipped_share(fifty)
    roughness = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()
    assert roughness(one) > 2.5 * roughness(fifty)
    _, note = tab.steps_versus_quality("fashion32", 0, 1)
    one_step, hundred = map(int, re.search(r"1-step column (\d+)% .*\(100 steps: (\d+)%\)", note).groups())
    assert one_step > 50 > 2 * hundred and "0.010 on this model's cosine schedule" in note


# --- real datasets: the trainer's wiring (the loaders themselves: tests/test_datasets.py) ------------

def test_flowers_train_the_diffusion_model_from_all_three_splits(tmp_path, any_checksum):
    from core.diffusion import load_training_images
    from tests.test_datasets import write_fake_flowers

    write_fake_flowers(tmp_path)
    x, description = load_training_images("flowers", 16, tmp_path)
    assert x.shape[1:] == (3, 16, 16) and -1 <= x.min() < x.max() <= 1
    assert len(x) == 7 and "Oxford 102 Flowers (all" in description  # every fake image, whatever its split


def test_missing_flowers_stop_the_trainer_with_one_sentence(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "core.train", "diffusion", "--data", "flowers", "--data-dir",
                           str(tmp_path), "--steps", "1", "--out", str(tmp_path / "x.pt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "102flowers.tgz" in done.stderr and str(tmp_path) in done.stderr


def cuda_checks_diffusion(device="cuda"):
    """The shipped models on `device` against the CPU (tests/gpu_checks.py calls this on a GPU; the test
    below runs it on the CPU). Same seed, same DDIM samples: fp32 within 2e-2 of the CPU (cuDNN may use
    TF32, and ten steps compound it), bf16 (the default on CUDA) finite and within 0.05 on average."""
    import copy
    import os

    from core.checkpoints import build_model, load_shipped

    for name in ("fashion32", "faces32"):
        on_cpu = build_model(load_shipped("diffusion", name), UNet, DiffusionConfig)
        on_device = copy.deepcopy(on_cpu).to(device)
        reference = sample(on_cpu, 4, make_generator(3), steps=10)
        os.environ["GENLAB_FP32"] = "1"  # core.runtime.autocast reads it at every call
        try:
            exact = sample(on_device, 4, make_generator(3), steps=10)
        finally:
            del os.environ["GENLAB_FP32"]
        mixed = sample(on_device, 4, make_generator(3), steps=10)
        assert exact.device.type == mixed.device.type == "cpu"
        assert (exact - reference).abs().max() < 2e-2, name
        assert torch.isfinite(mixed).all() and (mixed - reference).abs().mean() < 0.05, name


def test_cuda_checks_run_on_the_cpu():
    cuda_checks_diffusion("cpu")
