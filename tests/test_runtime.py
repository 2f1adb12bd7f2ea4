import math

import torch

from core.runtime import MAX_SEED, clamp_seed, make_generator, pick_device


def test_same_seed_same_stream_and_private_state():
    a, b = make_generator(123), make_generator(123)
    torch.manual_seed(999)  # the global RNG must not matter
    x = torch.randn(5, generator=a)
    torch.randn(100)  # nor draws from it in between
    assert torch.equal(x, torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=make_generator(124)), x)


def test_clamp_seed_accepts_anything_a_user_types():
    assert clamp_seed(7) == 7
    assert clamp_seed(7.9) == 7
    assert clamp_seed(None) == 0
    assert clamp_seed(float("nan")) == 0
    assert clamp_seed(math.inf) == 0
    assert 0 <= clamp_seed(-5) <= MAX_SEED
    assert 0 <= clamp_seed(10**30) <= MAX_SEED
    make_generator(10**30)  # must not raise


def test_pick_device_honours_preference():
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in {"cpu", "cuda", "mps"}
