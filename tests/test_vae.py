"""VAE model, loss, latent tools, the CelebA loader and the training entry point, on tiny data."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoints import load_checkpoint
from core.data.celeba import load_celeba
from core.runtime import make_generator
from core.vae import (VAE, VAEConfig, apply_attributes, attribute_vectors, evaluate, kl_per_dimension, morph,
                      sample, vae_loss)



TINY = VAEConfig(image_size=16, channels=3, latent_dim=4, widths=[8, 16])


def test_kl_matches_the_closed_form():
    mu = torch.tensor([[0.0, 1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0, math.log(4.0)]])
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                                 torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(kl_per_dimension(mu, logvar), expected, atol=1e-6)
    assert kl_per_dimension(mu, logvar)[0, 0] == 0  # the prior itself costs nothing
    assert torch.isclose(kl_per_dimension(mu, logvar)[0, 1], torch.tensor(0.5))  # mu^2 / 2


def test_encode_decode_shapes_and_sampling():
    torch.manual_seed(0)
    model = VAE(TINY).eval()
    x = torch.rand(5, 3, 16, 16)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    images = model.decode(mu)
    assert images.shape == x.shape and 0 <= images.min() and images.max() <= 1
    a, b = sample(model, 3, make_generator(1)), sample(model, 3, make_generator(1))
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(image_size=30, widths=[8, 16])


def test_loss_falls_on_a_tiny_batch_and_logs_both_terms():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=8, channels=1, latent_dim=2, widths=[4, 8]))
    x = torch.rand(4, 1, 8, 8).round()  # a fixed batch to memorise
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = make_generator(0)
    first = vae_loss(model, x, beta=1.0, generator=gen)
    assert torch.isclose(first["loss"], first["recon"] + first["kl"])
    for _ in range(50):
        terms = vae_loss(model, x, beta=1.0, generator=gen)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert terms["loss"].item() < 0.85 * first["loss"].item()
    result = evaluate(model, x)
    assert result["elbo"] == pytest.approx(-(result["recon"] + result["kl"]))


def test_feature_loss_is_zero_for_the_original_and_joins_the_training_loss():
    from core.vae import feature_loss

    torch.manual_seed(0)
    faces = torch.rand(2, 3, 64, 64)
    assert feature_loss(faces, faces).item() == pytest.approx(0.0, abs=1e-6)
    slightly, badly = ((faces + scale * torch.randn_like(faces)).clamp(0, 1) for scale in (0.02, 0.3))
    assert 0 < feature_loss(slightly, faces) < feature_loss(badly, faces)
    assert feature_loss(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)) > 0  # grayscale, smaller than the backbone's minimum
    model, x = VAE(TINY).eval(), torch.rand(2, 3, 16, 16)
    plain, with_features = (vae_loss(model, x, 0.5, make_generator(0), weight) for weight in (0.0, 3.0))
    assert "features" not in plain and torch.isclose(plain["recon"], with_features["recon"])
    assert torch.isclose(with_features["loss"], plain["loss"] + 3.0 * with_features["features"])


def test_attribute_vector_is_the_difference_of_means():
    codes = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0], [0.0, 4.0]])
    labels = {"smiling": torch.tensor([True, True, False, False]), "everyone": torch.ones(4, dtype=torch.bool)}
    vectors = attribute_vectors(codes, labels)
    assert torch.allclose(vectors["smiling"], torch.tensor([2.0, 1.0]) - torch.tensor([0.0, 2.0]))
    assert "everyone" not in vectors  # no contrast, no vector
    z = torch.zeros(1, 2)
    assert torch.allclose(apply_attributes(z, vectors, {"smiling": 9.0}), 4.0 * vectors["smiling"])  # clamped to 4
    with pytest.raises(ValueError, match="frowning"):
        apply_attributes(z, vectors, {"frowning": 1.0})


def test_morph_starts_and_ends_at_the_two_faces():
    torch.manual_seed(0)
    model = VAE(TINY).eval()
    z0, z1 = torch.randn(4), torch.randn(4)
    frames = morph(model, z0, z1, steps=5)
    assert frames.shape == (5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(frames[0], model.decode(z0[None])[0], atol=1e-5)
        assert torch.allclose(frames[-1], model.decode(z1[None])[0], atol=1e-5)
    same = morph(model, z0, z0, steps=3)  # morphing a face with itself is a still picture
    assert torch.allclose(same[0], same[1], atol=1e-5)


ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
         "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
         "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
         "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
         "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
         "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young"]


def write_fake_celeba(root, n=12):
    """torchvision's CelebA layout with n solid-colour 178x218 'photos'; odd images are smiling."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rows, parts = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (178, 218), (20 * i, 100, 200 - 10 * i)).save(folder / "img_align_celeba" / name)
        values = ["1" if (j == ATTRS.index("Smiling") and i % 2) else "-1" for j in range(40)]
        rows.append(f"{name} " + " ".join(values))
        parts.append(f"{name} {0 if i < n - 4 else 1}")
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRS) + "\n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return folder


def test_celeba_loader_reads_torchvisions_layout(tmp_path):
    write_fake_celeba(tmp_path)
    images, labels = load_celeba(tmp_path, "train", size=32)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert len(labels) == 40 and labels["smiling"].tolist() == [i % 2 == 1 for i in range(8)]
    assert abs(int(images[3, 0].float().mean()) - 60) <= 2  # image 4's red channel (20 * 3)
    valid, _ = load_celeba(tmp_path / "celeba", "validation", size=32)
    assert len(valid) == 4
    with pytest.raises(ValueError, match="CelebA"):
        load_celeba(tmp_path / "nowhere", "train")


def test_training_on_celeba_writes_a_checkpoint_with_attribute_vectors(tmp_path, capsys):
    from core.train import main

    write_fake_celeba(tmp_path)
    out = tmp_path / "vae.pt"
    main(["vae", "--dataset", "celeba", "--data-dir", str(tmp_path), "--image-size", "16", "--latent", "4",
          "--widths", "8,16", "--epochs", "2", "--batch-size", "4", "--threads", "1", "--out", str(out)])
    ckpt = load_checkpoint(out)
    assert ckpt.config["latent_dim"] == 4
    names = ckpt.extras["attribute_names"]
    assert "smiling" in names and ckpt.extras["attribute_vectors"].shape == (len(names), 4)
    assert [p["epoch"] for p in ckpt.card["curves"]] == [1, 2]
    assert {"valid_elbo", "valid_recon", "valid_kl"} <= set(ckpt.card["metrics"])
    assert out.with_suffix(".json").is_file()
    # Fine-tuning starts from those weights and keeps the first run's command at the head of the card.
    tuned = tmp_path / "tuned.pt"
    main(["vae", "--dataset", "celeba", "--data-dir", str(tmp_path), "--image-size", "16", "--latent", "4",
          "--widths", "8,16", "--epochs", "1", "--batch-size", "4", "--threads", "1", "--out", str(tuned),
          "--init-from", str(out), "--feature-weight", "1"])
    card = load_checkpoint(tuned).card
    assert card["command"] == ckpt.card["command"] and "--init-from" in card["resumed_with"][0]
    assert card["fine_tuned_from"]["epochs"] == 2 and card["metrics"]["feature_weight"] == 1.0
    with pytest.raises(SystemExit):  # core.train says the sentence on stderr, without a traceback
        main(["vae", "--dataset", "celeba", "--data-dir", str(tmp_path), "--image-size", "16", "--latent", "5",
              "--widths", "8,16", "--epochs", "1", "--threads", "1", "--out", str(tuned), "--init-from", str(out)])
    assert "this run asks for" in capsys.readouterr().err


FACES_TINY = ["vae", "--dataset", "faces", "--train-size", "16", "--valid-size", "8", "--image-size", "16",
              "--latent", "4", "--widths", "8,16", "--epochs", "2", "--batch-size", "4", "--feature-weight", "0"]


def test_training_on_two_processes_averages_the_gradients_and_the_app_loads_it(tmp_path):
    from core.checkpoints import build_model
    from tests.distributed import check_ranks_agree, train

    out = tmp_path / "faces.pt"
    done, card = train(FACES_TINY, out, processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks_agree(card, 2)  # the BatchNorm statistics too: every rank ships rank 0's
    assert card["global_batch"] == 4 and card["steps"] == 8  # 16 images, 4 per step, 2 epochs
    assert [p["epoch"] for p in card["curves"]] == [1, 2]
    ckpt = load_checkpoint(out)
    model = build_model(ckpt, VAE, VAEConfig)  # as core.vae.load_vae builds it
    assert ckpt.extras["attribute_vectors"].shape == (len(ckpt.extras["attribute_names"]), 4)
    images = sample(model, 2, make_generator(0), ckpt.extras["code_std"])
    assert images.shape == (2, 3, 16, 16) and images.device.type == "cpu"


def test_a_run_stopped_mid_epoch_resumes_and_finishes_its_epochs(tmp_path):
    from core.train import main

    out = tmp_path / "faces.pt"
    main([*FACES_TINY, "--threads", "1", "--out", str(out), "--minutes", "1e-9"])  # stops after its first step
    stopped = load_checkpoint(out).card
    assert stopped["steps"] == 1 and [p["epoch"] for p in stopped["curves"]] == [0.25]  # a quarter of an epoch seen
    main([*FACES_TINY, "--threads", "1", "--out", str(out), "--resume"])
    card = load_checkpoint(out).card
    assert card["steps"] == 8 and [p["epoch"] for p in card["curves"]] == [1, 2] and len(card["resumed_with"]) == 1


def cuda_checks_vae(device="cuda") -> dict:
    """Same seed, same faces on `device` as on the CPU (the noise is drawn on the CPU and moved), within
    bf16's tolerance on CUDA; the lead's GPU script calls this with "cuda". Returns the largest difference."""
    import copy

    from core.checkpoints import build_model, load_shipped

    ckpt = load_shipped("vae", "faces_200d")
    on_cpu = build_model(ckpt, VAE, VAEConfig)
    on_device = copy.deepcopy(on_cpu).to(device)
    spread = ckpt.extras["code_std"].float()
    a = sample(on_cpu, 8, make_generator(11), spread)
    b = sample(on_device, 8, make_generator(11), spread)
    assert b.device.type == "cpu" and b.dtype == torch.float32  # results come back to the CPU, in float32
    difference = (a - b).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1, (difference.mean(), difference.max())
    frames = morph(on_device, a.new_zeros(200), spread, steps=3)
    assert frames.device.type == "cpu" and torch.allclose(frames, morph(on_cpu, a.new_zeros(200), spread, 3), atol=0.1)
    return {"mean_abs_difference": float(difference.mean()), "max_abs_difference": float(difference.max())}


def test_cuda_checks_run_on_the_cpu():
    figures = cuda_checks_vae("cpu")
    assert figures["max_abs_difference"] == 0.0  # the same device: the very same numbers


@pytest.fixture
def tiny_shipped(monkeypatch):
    """The tab's handlers, wired to tiny untrained VAEs instead of the shipped checkpoints."""
    import tabs.vae as tab
    from core import vae
    from core.checkpoints import Checkpoint

    torch.manual_seed(0)
    faces = VAE(VAEConfig(image_size=64, channels=3, latent_dim=6, widths=[4, 4, 4, 4])).eval()
    fashion = VAE(VAEConfig(image_size=32, channels=1, latent_dim=2, widths=[4, 4, 4])).eval()
    names = ["smiling", "eyeglasses"]
    face_ckpt = Checkpoint(config={}, state_dict={}, card={"latent": {"most_active_dims": [5, 0, 2, 1, 3, 4],
                                                                      "attribute_names": names}},
                           extras={"attribute_names": names, "attribute_vectors": torch.eye(6)[:2],
                                   "code_std": torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 2.0])})
    fashion_ckpt = Checkpoint(config={}, state_dict={}, extras={
        "map_codes": torch.randn(300, 2), "map_labels": torch.arange(300) % 10,
        "class_names": [f"class {i}" for i in range(10)]})
    models = {"faces_200d": (faces, face_ckpt), "fashion_2d": (fashion, fashion_ckpt)}
    monkeypatch.setattr(vae, "load_vae", lambda name: models[name])
    monkeypatch.setattr(tab, "ATTRIBUTES", names)
    return tab, faces


def test_face_handlers_edit_decode_and_morph(tiny_shipped):
    tab, model = tiny_shipped
    outputs = tab.dataset_face(7)
    state, original, picture, note = outputs[:4]
    assert len(state["z"]) == 6 and original.size == picture.size == (tab.SHOW, tab.SHOW)
    assert "#7" in note
    dims = outputs[4 + len(tab.ATTRIBUTES):]
    assert [d["value"] for d in dims] == [round(state["z"][d], 2) for d in (5, 0, 2, 1, 3, 4)]
    neutral = tab.render_face(state, 0.0, 0.0, *[state["z"][d] for d in (5, 0, 2, 1, 3, 4)])
    smiling = tab.render_face(state, 4.0, 0.0, *[state["z"][d] for d in (5, 0, 2, 1, 3, 4)])
    extreme = tab.render_face(state, 99.0, 0.0, *[state["z"][d] for d in (5, 0, 2, 1, 3, 4)])  # clamped to 4
    assert np.asarray(neutral).tolist() != np.asarray(smiling).tolist()
    assert np.asarray(extreme).tolist() == np.asarray(smiling).tolist()
    with pytest.raises(ValueError, match="Choose a face"):
        tab.render_face(None, 0.0)
    ends, _ = tab.set_end(state, "A", {})
    ends, _ = tab.set_end(state, "B", ends)
    strip, note = tab.morph_faces(ends, 4, "slerp")
    assert "same face" in note and strip.size[0] > 4 * 64
    with pytest.raises(ValueError, match="A and B"):
        tab.morph_faces({"A": state["z"]}, 4, "slerp")
    assert tab.morph_position(ends, 2.0, "lerp").size == (tab.SHOW, tab.SHOW)  # t clamped to 1
    with pytest.raises(ValueError, match="whole number"):
        tab.dataset_face("seven")
    fitted = tab.random_face(3)[0]["z"]  # drawn with the training codes' spread: unused dims stay at 0
    assert fitted[1:5] == [0.0] * 4 and fitted[0] != 0
    assert 0.0 not in tab.random_face(3, "the prior N(0, I)")[0]["z"]


def test_uploaded_photos_of_any_shape_are_cropped_with_a_note(tiny_shipped):
    tab, _ = tiny_shipped
    photo = Image.new("RGBA", (300, 120), (200, 30, 30, 128))
    outputs = tab.uploaded_face(photo)
    assert "centre-cropped and resized from 300x120 to 64x64" in outputs[3]
    with pytest.raises(ValueError, match="at least"):
        tab.uploaded_face(Image.new("L", (10, 10)))
    with pytest.raises(ValueError, match="No image"):
        tab.uploaded_face(None)


def test_fashion_map_click_and_grid(tiny_shipped):
    import gradio as gr

    tab, _ = tiny_shipped
    assert tab.draw_map().size == (tab.MAP_SIZE + tab.MAP_LEGEND, tab.MAP_SIZE)
    event = gr.SelectData(None, {"index": [tab.MAP_SIZE // 2, 0], "value": None})
    _, decoded, where = tab.decode_map_click(event)
    assert where.startswith("z = (+0.0") and decoded.size == (192, 192)
    with pytest.raises(ValueError, match="legend"):
        tab.decode_map_click(gr.SelectData(None, {"index": [tab.MAP_SIZE + 5, 10], "value": None}))
    grid = tab.decode_plane(4)
    assert grid.size == (4 * 33 + 1, 4 * 33 + 1)


def test_the_tab_states_the_measured_attribute_figures(tmp_path):
    import json

    import gradio as gr

    import tabs.vae as tab
    from core.registry import ROOT

    record = json.loads((ROOT / "bench" / "results" / "vae_quality.json").read_text())
    smile, gains = record["figures"]["smile_vector"], record["figures"]["attribute_vectors_gain_rate"]
    with gr.Blocks() as demo:
        tab.build()
    intro = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "vae-faces-intro")
    assert f"makes {smile['now_smiling']:.1%} of {smile['faces']} non-smiling faces smile" in intro.value
    for name, share in gains.items():
        assert f"{name.replace('_', ' ')} {share:.0%}" in intro.value
    assert "quarter" not in intro.value
    # The sentence follows whatever the bench measured last, and says so when it has not run.
    record["figures"]["smile_vector"].update(now_smiling=0.25, faces=40)
    (tmp_path / "vae_quality.quick.json").write_text(json.dumps(record))
    assert "makes 25.0% of 40 non-smiling faces smile" in tab.measured_edits(tmp_path)
    assert "not measured yet" in tab.measured_edits(tmp_path / "missing")


# --- the categorical decoder and the likelihood bounds (bench.likelihood compares them with the PixelCNNs) ---

CATEGORICAL = VAEConfig(image_size=8, channels=1, latent_dim=3, widths=[4, 8], levels=4)


def _trained_categorical(steps=60):
    """A tiny categorical VAE fitted a little to a fixed batch of 4-level images, so q(z|x) means something."""
    torch.manual_seed(0)
    model = VAE(CATEGORICAL)
    levels = torch.randint(0, 4, (16, 1, 8, 8), generator=make_generator(3))
    x = levels.float() / 3
    opt, gen = torch.optim.Adam(model.parameters(), lr=1e-2), make_generator(0)
    for _ in range(steps):
        loss = vae_loss(model, x, 1.0, gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), levels


def test_categorical_decoder_is_a_softmax_over_the_levels():
    from core.vae import reconstruction_nats

    model = VAE(CATEGORICAL).eval()
    logits = model.decode_logits(torch.zeros(2, 3))
    assert logits.shape == (2, 4, 8, 8)  # K logits per pixel
    images = model.decode(torch.zeros(2, 3))
    assert images.shape == (2, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    # Uniform logits: p(x|z) = 4^-64 for every image, whatever its levels.
    nats = reconstruction_nats(CATEGORICAL, torch.zeros(3, 4, 8, 8), torch.rand(3, 1, 8, 8))
    assert torch.allclose(nats, torch.full((3,), 64 * math.log(4)))
    # Each pixel's own level: the cross-entropy of a logit that points at it is near 0.
    levels = torch.randint(0, 4, (1, 1, 8, 8))
    sure = torch.nn.functional.one_hot(levels[:, 0], 4).permute(0, 3, 1, 2).float() * 50
    assert reconstruction_nats(CATEGORICAL, sure, levels.float() / 3).item() < 1e-6
    with pytest.raises(ValueError, match="levels"):
        VAEConfig(levels=1)


def test_the_shipped_bernoulli_configs_are_stored_without_levels():
    from core.registry import shipped_path
    from core.vae import config_dict

    assert "levels" not in config_dict(VAEConfig(latent_dim=2))
    assert config_dict(CATEGORICAL)["levels"] == 4
    ckpt = load_checkpoint(shipped_path("vae", "fashion_2d"))
    assert VAEConfig(**ckpt.config).levels == 0  # today's checkpoints build the Bernoulli decoder


def test_iwae_bound_is_above_the_elbo_and_tightens_with_k():
    from core.vae import bits_per_dim_bounds, log_likelihood_bounds

    model, levels = _trained_categorical()
    x = levels.float() / 3
    elbo, iwae = log_likelihood_bounds(model, x, 50, make_generator(1))
    assert elbo.shape == iwae.shape == (16,)
    assert iwae.mean() >= elbo.mean()  # both bound log p(x) from below; the importance-weighted one is tighter
    assert (elbo < 0).all() and (iwae < 0).all()  # a discrete likelihood: log p(x) < 0
    # Averaged over repeated draws, the k-sample bound grows with k (Burda et al., 2016, Theorem 1).
    means = [torch.stack([log_likelihood_bounds(model, x, k, make_generator(s))[1] for s in range(8)]).mean()
             for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means
    elbo_bpd, iwae_bpd = bits_per_dim_bounds(model, levels, k=20, batch_size=5)
    assert math.isfinite(elbo_bpd) and math.isfinite(iwae_bpd) and 0 < iwae_bpd <= elbo_bpd
    assert iwae_bpd < 2.0 + 0.5  # 2 bits is a uniform guess over 4 levels; a fitted model is near it or below
    assert bits_per_dim_bounds(model, levels, k=20, seed=4) == bits_per_dim_bounds(model, levels, k=20, seed=4)
    with pytest.raises(ValueError, match="categorical"):
        bits_per_dim_bounds(VAE(TINY), levels)
    with pytest.raises(ValueError, match="levels 0..3"):
        bits_per_dim_bounds(model, levels + 1)


def test_training_on_fashion16k4_writes_a_categorical_vae(tmp_path, monkeypatch):
    from core import pixelcnn
    from core.train import main

    fake = torch.randint(0, 4, (40, 1, 16, 16), generator=make_generator(0))
    monkeypatch.setattr(pixelcnn, "load_levels", lambda split, size, k, data_dir=None: fake[:32] if split == "train"
                        else fake[32:])
    out = tmp_path / "cat.pt"
    main(["vae", "--dataset", "fashion16k4", "--latent", "3", "--widths", "4,8", "--epochs", "1", "--batch-size", "8",
          "--threads", "1", "--out", str(out)])
    ckpt = load_checkpoint(out)
    assert ckpt.config["levels"] == 4 and ckpt.config["image_size"] == 16
    assert ckpt.card["metrics"]["valid_elbo_bits_per_dim"] > 0
    from core.checkpoints import build_model

    model = build_model(ckpt, VAE, VAEConfig)
    assert model.decode_logits(torch.zeros(1, 3)).shape == (1, 4, 16, 16)
