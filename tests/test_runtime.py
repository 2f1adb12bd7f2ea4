import math

import pytest
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


def test_pick_device_prefers_cuda_then_mps_then_cpu_and_honours_a_preference(monkeypatch):
    # Pretend each accelerator is (not) there, so every branch runs on any machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")  # the preference wins over what is available
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_pick_device_refuses_a_device_this_machine_lacks_in_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="1 CUDA GPU"):
        pick_device("cuda:1")
    with pytest.raises(ValueError, match="Unknown device"):
        pick_device("gpu")
