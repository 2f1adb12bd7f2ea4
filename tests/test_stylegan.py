"""The StyleGAN-style generator (core.stylegan): styles, mixing, truncation, noise, and its training in core.gan."""
import pytest
import torch

from core import gan, stylegan
from core.checkpoints import load_checkpoint
from core.runtime import make_generator

CFG = gan.GANConfig(image_size=16, channels=3, z_dim=16, width=4, loss="r1", architecture="style", w_dim=16)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = stylegan.StyleGenerator(CFG).eval()
    with torch.no_grad():  # a trained generator's noise matters; a new one's strengths start at 0
        for layer in G.layers:
            layer.noise_strength.fill_(0.5)
        G.w_avg.normal_()
    return G


def test_the_synthesis_reads_one_style_per_layer(G):
    assert G.num_styles == 5 and G.layer_resolutions() == [4, 8, 8, 16, 16]
    assert G(torch.randn(3, 16)).shape == (3, 3, 16, 16)


def test_mixing_with_the_crossover_at_the_last_layer_is_the_first_seeds_image(G):
    ws_a, ws_b = stylegan.styles(G, stylegan.latents(G, [1, 2])).split(1)
    image_a, image_b = stylegan.render(G, ws_a), stylegan.render(G, ws_b)
    assert torch.equal(stylegan.render(G, stylegan.mix_styles(ws_a, ws_b, G.num_styles)), image_a)
    assert torch.equal(stylegan.render(G, stylegan.mix_styles(ws_a, ws_b, 0)), image_b)
    middle = stylegan.render(G, stylegan.mix_styles(ws_a, ws_b, 2))
    assert (middle - image_a).abs().mean() > 1e-3 and (middle - image_b).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="crossover"):
        stylegan.mix_styles(ws_a, ws_b, G.num_styles + 1)


def test_the_same_seed_draws_the_same_face_as_gan_sample(G):
    assert torch.equal(stylegan.render(G, stylegan.styles(G, stylegan.latents(G, [7]))), gan.sample(G, 1, make_generator(7)))


def test_psi_zero_gives_every_seed_the_average_face_and_psi_one_leaves_w_alone(G):
    z = stylegan.latents(G, [1, 2, 3])
    average = stylegan.render(G, stylegan.styles(G, z, psi=0.0))
    assert torch.allclose(average, average[:1].expand_as(average))
    assert torch.allclose(stylegan.styles(G, z, 1.0)[:, 0], G.mapping(z))
    # gan.sample's truncation is psi in w for a style generator (not the redrawn z of a DCGAN)
    assert torch.allclose(gan.sample(G, 3, make_generator(4), truncation=0.5),
                          stylegan.render(G, stylegan.styles(G, torch.randn(3, 16, generator=make_generator(4)), 0.5)))
    with pytest.raises(ValueError, match="psi"):
        stylegan.styles(G, z, psi=2.0)


def test_noise_fixed_fresh_and_off(G):
    ws = stylegan.styles(G, stylegan.latents(G, [5]))
    fixed, off = stylegan.render(G, ws, "const"), stylegan.render(G, ws, "off")
    fresh = [stylegan.render(G, ws, "random", make_generator(s)) for s in (1, 1, 2)]
    assert torch.equal(fixed, stylegan.render(G, ws, "const")) and torch.equal(fresh[0], fresh[1])
    assert (fixed - off).abs().mean() > 1e-4 and (fresh[0] - fresh[2]).abs().mean() > 1e-4
    with torch.no_grad():
        strengths = [layer.noise_strength.clone() for layer in G.layers]
        for layer in G.layers:
            layer.noise_strength.zero_()
        try:  # with zero strength the noise inputs do nothing
            assert torch.allclose(stylegan.render(G, ws, "random", make_generator(3)), off)
        finally:
            for layer, value in zip(G.layers, strengths):
                layer.noise_strength.copy_(value)
    with pytest.raises(ValueError, match="Noise"):
        stylegan.render(G, ws, "loud")


def test_demodulation_makes_a_layer_blind_to_the_scale_of_its_style():
    torch.manual_seed(1)
    conv = stylegan.ModulatedConv2d(6, 5, 3, w_dim=8)
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        base = conv(x, w)
        conv.affine.weight.mul_(10), conv.affine.bias.mul_(10)  # every style s_i ten times larger
        assert torch.allclose(conv(x, w), base, atol=1e-4)
        conv.demodulate = False
        assert not torch.allclose(conv(x, w), base, atol=1e-1)


def test_equalised_layers_keep_unit_variance_at_initialisation():
    torch.manual_seed(2)
    linear, conv = stylegan.EqualLinear(256, 256), stylegan.EqualConv2d(64, 64, 3)
    with torch.no_grad():
        assert 0.8 < linear(torch.randn(4000, 256)).var().item() < 1.2
        assert 0.8 < conv(torch.randn(8, 64, 16, 16))[:, :, 1:-1, 1:-1].var().item() < 1.2


def test_minibatch_stddev_is_zero_for_identical_images_and_positive_otherwise():
    D = stylegan.ResidualDiscriminator(CFG)
    same = torch.randn(1, 8, 4, 4).expand(4, -1, -1, -1)
    assert torch.equal(D.minibatch_stddev(same)[:, -1], torch.zeros(4, 4, 4))
    assert (D.minibatch_stddev(torch.randn(4, 8, 4, 4))[:, -1] > 0).all()
    assert D(torch.randn(6, 3, 16, 16)).shape == (6,)  # a batch that the group size does not divide


def test_r1_is_the_squared_gradient_norm_at_real_images():
    weights = torch.randn(3, 4, 4)

    def linear_critic(x, labels=None):  # D(x) = <a, x>: its gradient is a everywhere
        return (x * weights).flatten(1).sum(1)

    assert torch.allclose(gan.r1_penalty(linear_critic, torch.randn(5, 3, 4, 4)), weights.square().sum())


def test_a_tiny_stylegan_trains_saves_and_loads(tmp_path):
    images = (torch.rand(64, 3, 16, 16) * 255).to(torch.uint8)
    data = gan.ImageData(images, None, "random colour squares", files=[])
    tcfg = gan.TrainConfig(**{**gan.PRESETS["stylegan"][1], "batch_size": 8, "epochs": 1, "r1_every": 2})
    out = gan.train(CFG, tcfg, data, tmp_path / "tiny_style.pt")
    ckpt = load_checkpoint(out)
    G = gan.load_generator(ckpt)
    assert isinstance(G, stylegan.StyleGenerator)
    assert G.w_avg.abs().sum() > 0  # the running mean of w reached the shipped (EMA) copy
    assert all(key in ckpt.card["curves"][-1] for key in ("loss_d", "loss_g", "r1"))
    image = gan.sample(G, 2, make_generator(0))
    assert image.shape == (2, 3, 16, 16) and image.std() > 0
