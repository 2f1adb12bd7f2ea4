"""Text to image: the conditional U-Net, classifier-free guidance, prompts, and the conditional trainer.

Everything runs on a tiny random TinyCLIP and tiny conditional U-Nets whose conditioning layers are
NOT zero (a fresh one ignores its condition, which would let wrong guidance arithmetic pass)."""
import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import core.clip
import core.text_to_image as t2i
from core.captions import CONTEXT, write_caption
from core.clip import ClipConfig, TinyCLIP
from core.diffusion import DiffusionConfig, Sampler, UNet, pick_conditions, predict_noise, start_noise, to_unit
from core.runtime import make_generator
from core.text_to_image import (Pipeline, caption_conditions, check_weight, class_conditions, empty_condition,
                                generate, guidance_strip, guided_denoise, guided_noise, read_prompt)
from tests.conftest import require

D = 8  # the tiny CLIP's embedding size = the tiny U-Net's condition_dim
PROMPT = "a smiling person with red hair and glasses"


def tiny_clip(seed=0) -> TinyCLIP:
    torch.manual_seed(seed)
    return TinyCLIP(ClipConfig(image_size=16, widths=(8, 16), text_width=16, text_layers=1, heads=2,
                               embedding_dim=D)).eval()


def unet_config(condition_dim: int, channels: int = 3) -> DiffusionConfig:
    return DiffusionConfig(channels=channels, image_size=8, widths=(8, 16), attention=False, embedding_dim=8,
                           patch=1, condition_dim=condition_dim)


def conditional_unet(condition_dim=D, channels=3, seed=0) -> UNet:
    torch.manual_seed(seed)
    model = UNet(unet_config(condition_dim, channels)).eval()
    with torch.no_grad():  # both start at zero: give them weights, so the condition and the output matter
        torch.nn.init.normal_(model.head[-1].weight, std=0.1)
        torch.nn.init.normal_(model.condition[-1].weight, std=0.5)
        torch.nn.init.normal_(model.condition[-1].bias, std=0.1)
    return model


@pytest.fixture(scope="module")
def faces_pipeline() -> Pipeline:
    return Pipeline("tiny_captions", conditional_unet(), "captions", tiny_clip())


@pytest.fixture(scope="module")
def fashion_pipeline() -> Pipeline:
    return Pipeline("tiny_classes", conditional_unet(10, channels=1), "classes")


def fashion_installed():
    from core.data.fashion_mnist import load_fashion_mnist

    try:
        load_fashion_mnist("train", download=False)
    except FileNotFoundError:
        require(False, "Fashion-MNIST is not installed: run `sh tests/install.sh` (apt-get install dataset-fashion-mnist)")


# --- classifier-free guidance -------------------------------------------------------------------

def test_guidance_weight_1_is_the_conditional_and_0_the_unconditional_prediction(faces_pipeline):
    model, clip = faces_pipeline.model, faces_pipeline.clip
    x = torch.randn(3, 3, 8, 8, generator=make_generator(0))
    c, e = caption_conditions(clip, [PROMPT]), caption_conditions(clip, [""])
    with torch.no_grad():
        eps_c = predict_noise(model, x, 0.6, "cosine", c)
        eps_e = predict_noise(model, x, 0.6, "cosine", e)
    assert (eps_c - eps_e).abs().max() > 1e-2  # the condition matters in this network: the test can fail

    one = guided_noise(model, x, 0.6, "cosine", c, e, 1.0)
    assert torch.allclose(one.conditional, eps_c, atol=1e-5) and torch.allclose(one.unconditional, eps_e, atol=1e-5)
    assert torch.allclose(one.guided, eps_c, atol=1e-5)
    zero = guided_noise(model, x, 0.6, "cosine", c, e, 0.0)
    assert torch.equal(zero.guided, zero.unconditional)
    assert torch.allclose(zero.guided, eps_e, atol=1e-5)
    three = guided_noise(model, x, 0.6, "cosine", c, e, 3.0)
    assert torch.allclose(three.guided, eps_e + 3 * (eps_c - eps_e), atol=1e-4)
    assert not torch.allclose(three.guided, eps_c, atol=1e-3)
    # one weight per image
    each = guided_noise(model, x, 0.6, "cosine", c, e, torch.tensor([0.0, 1.0, 3.0]))
    assert torch.allclose(each.guided[0], zero.guided[0], atol=1e-5)
    assert torch.allclose(each.guided[1], one.guided[1], atol=1e-5)
    assert torch.allclose(each.guided[2], three.guided[2], atol=1e-5)


def test_a_conditional_unet_needs_a_condition():
    model = conditional_unet()
    with pytest.raises(ValueError, match="condition"):
        model(torch.zeros(1, 3, 8, 8), torch.tensor([0.5]))


def test_a_fresh_conditional_unet_is_exactly_the_unconditional_one():
    # The --init-from promise: the new conditioning layers start at zero, so the conditional model
    # starts exactly where the unconditional one was, whatever the condition.
    torch.manual_seed(1)
    unconditional = UNet(unet_config(0)).eval()
    with torch.no_grad():
        for p in unconditional.parameters():  # every weight non-trivial, the zero-initialised head too
            p.add_(torch.randn(p.shape, generator=make_generator(p.numel())) * 0.05)
    conditional = UNet(unet_config(D)).eval()
    missing, unexpected = conditional.load_state_dict(unconditional.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("condition.") for key in missing)
    x = torch.randn(4, 3, 8, 8, generator=make_generator(2))
    variance = torch.tensor([0.1, 0.4, 0.7, 0.95])
    conditions = torch.randn(4, D, generator=make_generator(3)) * 3
    with torch.no_grad():
        expected = unconditional(x, variance)
        assert expected.abs().max() > 1e-2
        assert torch.equal(conditional(x, variance, conditions), expected)
        assert torch.equal(conditional(x, variance, torch.zeros(1, D)), expected)
        torch.nn.init.normal_(conditional.condition[-1].weight, std=0.5)  # ... and once it has learned, it differs
        assert not torch.allclose(conditional(x, variance, conditions), expected, atol=1e-3)


def test_guided_frames_pull_is_conditional_minus_unconditional_noise(faces_pipeline):
    model, clip = faces_pipeline.model, faces_pipeline.clip
    c, e = caption_conditions(clip, [PROMPT]), caption_conditions(clip, [""])
    sampler = Sampler("DDIM", 3, 0.0, "cosine")
    x = torch.randn(2, 3, 8, 8, generator=make_generator(4))
    frames = list(guided_denoise(model, sampler, x, c, e, 2.0))
    assert [f.step for f in frames] == [1, 2, 3]
    for i, frame in enumerate(frames):
        t = float(sampler.times[i])
        with torch.no_grad():
            eps_c = predict_noise(model, x, t, "cosine", c)
            eps_e = predict_noise(model, x, t, "cosine", e)
        assert torch.allclose(frame.pull, eps_c - eps_e, atol=1e-5), i
        assert frame.pull.abs().max() > 1e-2
        signal, noise = sampler.rates(i)
        assert torch.allclose(frame.x0_conditional, ((x - noise * eps_c) / signal).clamp(-1, 1), atol=1e-4), i
        assert torch.allclose(frame.x0_unconditional, ((x - noise * eps_e) / signal).clamp(-1, 1), atol=1e-4), i
        step = sampler.step(eps_e + 2.0 * (eps_c - eps_e), t, x, float(sampler.times[i + 1]))
        assert torch.allclose(frame.x_t, step.prev_sample, atol=1e-4), i
        x = frame.x_t
    assert frames[-1].noise_rate == 0.0 and torch.allclose(frames[-1].x_t, frames[-1].x0, atol=1e-6)


def test_check_weight_refuses_what_is_not_a_finite_number(faces_pipeline):
    for bad in (float("nan"), float("inf"), -float("inf"), [1.0, float("nan")]):
        with pytest.raises(ValueError, match="finite"):
            check_weight(bad)
    assert torch.equal(check_weight(3), torch.tensor(3.0))
    assert torch.equal(check_weight([0, 7.5]), torch.tensor([0.0, 7.5]))
    with pytest.raises(ValueError, match="finite"):
        generate(faces_pipeline, PROMPT, 1, make_generator(0), weight=float("nan"), steps=2)


# --- the dropped caption is the empty condition -----------------------------------------------------

def _distinct_conditions(n=50, k=4, d=3):
    conditions = torch.arange(n * k * d, dtype=torch.float32).reshape(n, k, d) + 1  # all different, all > 0
    return conditions, torch.full((d,), -1.0)


def test_pick_conditions_drops_to_exactly_the_null_condition():
    conditions, null = _distinct_conditions()
    gen = make_generator(0)
    index = torch.randint(len(conditions), (300,), generator=gen)
    dropped = pick_conditions(conditions, null, index, 1.0, gen)
    assert dropped.shape == (300, 3) and torch.equal(dropped, null.expand(300, 3))

    kept = pick_conditions(conditions, null, index, 0.0, gen)
    choices = set()
    for row, i in zip(kept, index.tolist()):
        match = (conditions[i] == row).all(dim=1).nonzero().flatten().tolist()
        assert len(match) == 1, (i, row)  # one of this image's own K conditions, whole
        choices.add(match[0])
    assert choices == {0, 1, 2, 3}  # every one of the K is used

    index = torch.randint(len(conditions), (20000,), generator=gen)
    some = pick_conditions(conditions, null, index, 0.15, gen)
    is_null = (some == null).all(dim=1)
    assert abs(is_null.float().mean().item() - 0.15) < 0.01
    own = conditions[index[~is_null]]  # [kept, K, D]: each kept row is one of its image's own K
    assert (own == some[~is_null][:, None]).all(-1).any(-1).all()


def test_training_feeds_the_network_the_picked_conditions(monkeypatch):
    from core import diffusion

    picked, seen = [], []
    real_pick = diffusion.pick_conditions

    def spy_pick(*args):
        out = real_pick(*args)
        picked.append((args[3], out))
        return out

    monkeypatch.setattr(diffusion, "pick_conditions", spy_pick)
    model = UNet(unet_config(3, channels=1))

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x_t, variance, condition=None):
            seen.append(condition)
            return self.model(x_t, variance, condition)

    conditions, null = _distinct_conditions(n=10, k=2, d=3)
    images = torch.rand(10, 1, 8, 8, generator=make_generator(1)) * 2 - 1
    events = list(diffusion.train(model, images, 2, batch_size=6, generator=make_generator(2), network=Spy(),
                                       conditions=conditions, null_condition=null, drop_probability=0.5))
    assert len(events) == 2 and len(picked) == 2 and len(seen) == 2
    for (probability, out), condition in zip(picked, seen):
        assert probability == 0.5 and torch.equal(out, condition) and condition.shape == (6, 3)


def test_the_caption_pipelines_empty_condition_is_the_empty_captions_embedding(faces_pipeline):
    clip = faces_pipeline.clip
    empty = empty_condition(faces_pipeline)
    assert empty.shape == (1, D)
    assert torch.equal(empty, caption_conditions(clip, [""]))
    assert torch.equal(read_prompt(faces_pipeline, "zebra quantum flux")[0], empty)  # unknown words only: ∅
    assert torch.equal(read_prompt(faces_pipeline, "   ")[0], empty)
    assert not torch.equal(read_prompt(faces_pipeline, PROMPT)[0], empty)
    # scaled CLIP unit vectors: about ±1 per entry
    assert caption_conditions(clip, [PROMPT]).norm().item() == pytest.approx(D ** 0.5, rel=1e-5)


def test_the_trainers_captions_and_null_condition_are_what_generation_uses(faces_pipeline, monkeypatch):
    from core import checkpoints

    clip = faces_pipeline.clip
    monkeypatch.setattr(core.clip, "load_model", lambda name: clip)
    monkeypatch.setattr(checkpoints, "file_sha256", lambda path: "0" * 64)
    monkeypatch.setattr(checkpoints, "load_shipped",
                        lambda technique, name: SimpleNamespace(card={"command": "python -m core.train clip"}))
    args = argparse.Namespace(condition="captions", data="faces", limit=30, size=16, seed=0, captions_per_image=3,
                              clip="faces32", data_dir=None)
    images, conditions, null, description, extras = t2i.conditional_training_set(args)
    faces, fact, _ = core.clip.training_faces(30, 16)
    assert images.shape == faces.shape and torch.equal(images, faces * 2 - 1)
    assert conditions.shape == (len(faces), 3, D)
    assert torch.equal(null, empty_condition(faces_pipeline)[0])  # the dropped caption is generation's ∅
    rng = np.random.default_rng(0)
    texts = [write_caption(f, rng) for f in fact for _ in range(3)]
    assert torch.allclose(conditions.reshape(-1, D), caption_conditions(clip, texts), atol=1e-6)
    assert "3 captions per face" in description


def test_the_class_pipelines_empty_condition_is_zero(fashion_pipeline):
    empty = empty_condition(fashion_pipeline)
    assert torch.equal(empty, torch.zeros(1, 10)) and torch.equal(empty, class_conditions([[]]))
    assert torch.equal(read_prompt(fashion_pipeline, "a zebra")[0], empty)
    sneaker = read_prompt(fashion_pipeline, "a sneaker")[0]
    assert torch.equal(sneaker, torch.eye(10)[7:8])
    both = read_prompt(fashion_pipeline, "a sneaker and a bag")[0]
    assert both[0, 7] == both[0, 8] == 0.5 and both.sum() == 1


def test_the_class_training_set_drops_to_the_same_zero(fashion_pipeline):
    fashion_installed()
    from core.data.fashion_mnist import load_fashion_mnist

    args = argparse.Namespace(condition="classes", data="fashion", limit=20, size=32, data_dir=None)
    images, conditions, null, _, _ = t2i.conditional_training_set(args)
    _, labels = load_fashion_mnist("train", download=False)
    assert images.shape == (20, 1, 32, 32) and -1 <= images.min() < images.max() <= 1
    assert torch.equal(conditions[:, 0], torch.eye(10)[labels[:20]]) and conditions.shape == (20, 1, 10)
    assert torch.equal(null, empty_condition(fashion_pipeline)[0])
    for data, condition in (("faces", "classes"), ("fashion", "captions")):
        with pytest.raises(ValueError, match="--condition"):
            t2i.conditional_training_set(argparse.Namespace(**{**vars(args), "data": data, "condition": condition}))


# --- prompts, seeds and the strip -------------------------------------------------------------------

def test_read_prompt_notes(faces_pipeline, fashion_pipeline):
    assert read_prompt(faces_pipeline, "")[1] == []
    assert read_prompt(faces_pipeline, None)[1] == []
    assert read_prompt(faces_pipeline, PROMPT)[1] == []
    _, notes = read_prompt(faces_pipeline, "red hair and a purple hat")
    assert len(notes) == 1 and "Unknown words" in notes[0] and "purple, hat" in notes[0]
    _, notes = read_prompt(faces_pipeline, "red hair, black hair")
    assert len(notes) == 1 and "contradicts" in notes[0] and "hair: black and red" in notes[0]
    _, notes = read_prompt(faces_pipeline, "zebra quantum")
    assert any("unconditional" in n for n in notes) and any("zebra, quantum" in n for n in notes)
    _, notes = read_prompt(faces_pipeline, " ".join(["glasses"] * (CONTEXT + 5)))
    assert any(f"first {CONTEXT} known words" in n for n in notes)
    _, notes = read_prompt(fashion_pipeline, "a shiny sneaker")
    assert notes == ["Not a Fashion-MNIST class name, left out: shiny."]
    _, notes = read_prompt(fashion_pipeline, "a zebra")
    assert any("unconditional" in n for n in notes)
    _, notes = read_prompt(fashion_pipeline, "a sneaker and a bag")
    assert any("Several classes" in n for n in notes)
    assert read_prompt(fashion_pipeline, "")[1] == []


def test_the_same_seed_and_prompt_give_the_same_image(faces_pipeline):
    a = generate(faces_pipeline, PROMPT, 2, make_generator(4), weight=3.0, steps=4)
    b = generate(faces_pipeline, PROMPT, 2, make_generator(4), weight=3.0, steps=4)
    assert a.shape == (2, 3, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, generate(faces_pipeline, PROMPT, 2, make_generator(5), weight=3.0, steps=4))
    assert not torch.allclose(a, generate(faces_pipeline, "gray hair, serious", 2, make_generator(4), 3.0, steps=4),
                              atol=1e-3)


def test_guidance_strip_rows_are_generate_at_each_weight(faces_pipeline):
    weights = (0.0, 1.0, 3.0, 7.5)
    strip = guidance_strip(faces_pipeline, PROMPT, seed=6, weights=weights, steps=4)
    assert strip.shape == (4, 3, 8, 8)
    for row, w in zip(strip, weights):
        alone = generate(faces_pipeline, PROMPT, 1, make_generator(6), weight=w, steps=4)
        assert torch.allclose(row, alone[0], atol=1e-5), w
    for i in range(len(weights) - 1):
        assert not torch.allclose(strip[i], strip[i + 1], atol=1e-3), i
    # w = 0 ignores the prompt: the same picture whatever was asked
    other = guidance_strip(faces_pipeline, "gray hair, serious", seed=6, weights=weights, steps=4)
    assert torch.allclose(other[0], strip[0], atol=1e-6) and not torch.allclose(other[2], strip[2], atol=1e-3)


def test_a_negative_prompt_takes_the_place_of_the_empty_condition(faces_pipeline):
    model = faces_pipeline.model
    plain = generate(faces_pipeline, PROMPT, 2, make_generator(8), weight=3.0, steps=4)
    negative = generate(faces_pipeline, PROMPT, 2, make_generator(8), weight=3.0, steps=4, negative="black hair")
    assert not torch.allclose(plain, negative, atol=1e-3)

    def by_hand(empty):
        x = start_noise(2, model.config, make_generator(8))
        for frame in guided_denoise(model, Sampler("DDIM", 4, 0.0, model.config.schedule), x,
                                    read_prompt(faces_pipeline, PROMPT)[0], empty, torch.tensor(3.0)):
            x = frame.x_t
        return to_unit(x)

    assert torch.equal(negative, by_hand(read_prompt(faces_pipeline, "black hair")[0]))
    assert torch.equal(plain, by_hand(empty_condition(faces_pipeline)))
    # weight 1 is the plain conditional model, with or without a negative prompt
    w1 = generate(faces_pipeline, PROMPT, 2, make_generator(8), weight=1.0, steps=4)
    w1_negative = generate(faces_pipeline, PROMPT, 2, make_generator(8), weight=1.0, steps=4, negative="black hair")
    assert torch.allclose(w1, w1_negative, atol=1e-4)


def test_class_prompts_generate(fashion_pipeline):
    a = generate(fashion_pipeline, "a sneaker", 2, make_generator(1), weight=3.0, steps=3)
    b = generate(fashion_pipeline, "a bag", 2, make_generator(1), weight=3.0, steps=3)
    assert a.shape == (2, 1, 8, 8) and not torch.allclose(a, b, atol=1e-3)


# --- the conditional trainer's command line ----------------------------------------------------------

UNCONDITIONAL = ["diffusion", "--data", "fashion", "--limit", "64", "--steps", "3", "--widths", "8,16"]


@pytest.fixture(scope="module")
def unconditional_checkpoint(tmp_path_factory):
    from core.train import main

    fashion_installed()
    folder = tmp_path_factory.mktemp("unconditional")
    main([*UNCONDITIONAL, "--out", str(folder / "u.pt"), "--threads", "1"])
    return folder / "u.pt"


def _as_before_condition_dim(path, to):
    """The checkpoint as trainers wrote it before DiffusionConfig had condition_dim (the shipped
    fashion32.pt and faces32.pt are such)."""
    raw = torch.load(path, weights_only=True)
    assert raw["config"].pop("condition_dim") == 0
    torch.save(raw, to)
    return to


@pytest.mark.parametrize("written", ["now", "before condition_dim"])
def test_init_from_an_unconditional_checkpoint_keeps_its_history(unconditional_checkpoint, tmp_path, written):
    from core.checkpoints import build_model, load_checkpoint
    from core.train import main

    start = unconditional_checkpoint if written == "now" else \
        _as_before_condition_dim(unconditional_checkpoint, tmp_path / "u.pt")
    assert start.name == "u.pt"
    fine_tune = ["diffusion", "--data", "fashion", "--condition", "classes", "--init-from", str(start),
                 "--widths", "8,16", "--limit", "64"]
    # --steps 0: the checkpoint is where fine-tuning starts, which must be the unconditional model exactly
    main([*fine_tune, "--steps", "0", "--out", str(tmp_path / "c0.pt"), "--threads", "1"])
    unconditional = build_model(load_checkpoint(start), UNet, DiffusionConfig)
    at_start = build_model(load_checkpoint(tmp_path / "c0.pt"), UNet, DiffusionConfig)
    assert at_start.config.condition_dim == 10 and unconditional.config.condition_dim == 0
    x = torch.randn(3, 1, 32, 32, generator=make_generator(0))
    with torch.no_grad():
        assert torch.equal(at_start(x, torch.tensor([0.5]), torch.eye(10)[[1, 7, 9]]),
                           unconditional(x, torch.tensor([0.5])))

    out = tmp_path / "c.pt"
    main([*fine_tune, "--steps", "3", "--out", str(out), "--threads", "1"])
    card = load_checkpoint(out).card
    first = "python -m core.train diffusion --data fashion --limit 64 --steps 3 --widths 8,16 --out u.pt --threads 1"
    this = ("python -m core.train diffusion --data fashion --condition classes --init-from u.pt --widths 8,16 "
            "--limit 64 --steps 3 --out c.pt --threads 1")
    assert card["command"] == first           # the unconditional run made most of this model ...
    assert card["resumed_with"] == [this]     # ... and the fine-tuning continued it
    record = card["fine_tuned_from"]
    assert record["checkpoint"] == start.name and record["steps"] == 3 and "commands" not in record
    assert card["steps"] == 3 and card["caption_dropout"] == 0.15
    assert card["wall_time_s"] >= record["wall_time_s"]
    model = build_model(load_checkpoint(out), UNet, DiffusionConfig)
    assert model.config.condition_dim == 10

    main([*fine_tune, "--steps", "5", "--out", str(out), "--threads", "1", "--resume"])
    card = load_checkpoint(out).card
    assert card["command"] == first and card["resumed_with"][0] == this and len(card["resumed_with"]) == 2
    assert card["resumed_with"][1].endswith("--steps 5 --out c.pt --threads 1 --resume")
    assert card["fine_tuned_from"] == record and card["steps"] == 5


def test_a_mismatched_init_from_fails_with_a_sentence(unconditional_checkpoint, tmp_path, capsys):
    from core.train import main

    with pytest.raises(SystemExit) as stopped:
        main(["diffusion", "--data", "fashion", "--condition", "classes", "--init-from", str(unconditional_checkpoint),
              "--widths", "16,32", "--limit", "64", "--steps", "1", "--out", str(tmp_path / "c.pt"), "--threads", "1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(unconditional_checkpoint) in err
    assert "unconditional diffusion U-Net" in err and "(16, 32)" in err
    assert not (tmp_path / "c.pt").exists()


# --- the shipped models, once they exist ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["faces32_captions", "fashion32_classes"])
def test_shipped_pipelines_fit_their_encoders_and_are_reproducible(name):
    from core.registry import shipped_path

    needed = [shipped_path("diffusion", name)] + ([shipped_path("clip", "faces32")] if "captions" in name else [])
    for path in needed:
        require(path.is_file(), f"{path} is missing: the commands in core/text_to_image.py make it")
    pipeline = t2i.load_pipeline(name)
    expected_dim = pipeline.clip.config.embedding_dim if pipeline.kind == "captions" else 10
    assert pipeline.model.config.condition_dim == expected_dim
    prompt = PROMPT if pipeline.kind == "captions" else "a sneaker"
    a = generate(pipeline, prompt, 1, make_generator(0), weight=3.0, steps=2)
    b = generate(pipeline, prompt, 1, make_generator(0), weight=3.0, steps=2)
    assert torch.equal(a, b) and a.shape[-1] == pipeline.model.config.image_size
