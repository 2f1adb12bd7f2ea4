import pytest
import torch
from PIL import Image

from core.data.images import save_gif
from core.latent import interpolate, lerp, slerp


def test_slerp_endpoints_and_norm():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=gen), torch.randn(4, 64, generator=gen) * 2
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid_norm = slerp(a, b, 0.5).norm(dim=-1)
    lo, hi = torch.minimum(a.norm(dim=-1), b.norm(dim=-1)), torch.maximum(a.norm(dim=-1), b.norm(dim=-1))
    assert torch.all(mid_norm >= lo - 1e-4) and torch.all(mid_norm <= hi + 1e-4)
    assert torch.all(lerp(a, b, 0.5).norm(dim=-1) < mid_norm)  # the washed-out middle slerp avoids


def test_slerp_on_images_and_parallel_vectors():
    a = torch.randn(2, 3, 8, 8)
    assert slerp(a, a, 0.3).shape == a.shape and torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)


def test_interpolate_stacks_steps_and_checks_mode():
    z0, z1 = torch.zeros(1, 5), torch.ones(1, 5)
    path = interpolate(z0, z1, 5, mode="lerp")
    assert path.shape == (5, 1, 5) and torch.allclose(path[2], torch.full((1, 5), 0.5))
    with pytest.raises(ValueError, match="mode"):
        interpolate(z0, z1, 3, mode="cubic")


def test_save_gif_writes_all_frames(tmp_path):
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(4)]
    path = save_gif(frames, tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4
    with pytest.raises(ValueError):
        save_gif([], tmp_path / "b.gif")
