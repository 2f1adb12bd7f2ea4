"""PixelCNN: the masks (the decisive test), the blind spot, learning, sampling and completion."""
import pytest
import torch

from core.pixelcnn import (MODELS, PixelCNNConfig, build, complete, horizontal_mask, nll_bits_per_dim, quantise,
                           raster_mask, receptive_field, sample, train, vertical_mask)
from core.runtime import make_generator

SIZE = 8


def tiny(kind, size=SIZE, blocks=3, levels=4):
    torch.manual_seed(0)
    return build(PixelCNNConfig(kind=kind, levels=levels, image_size=size, channels=8, blocks=blocks,
                                first_kernel=5)).eval()


def test_masks_hide_the_centre_for_a_and_the_future_for_both():
    a, b = raster_mask(3, "A"), raster_mask(3, "B")
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert vertical_mask(3).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert horizontal_mask(3, "A").tolist() == [[1, 0, 0]] and horizontal_mask(3, "B").tolist() == [[1, 1, 0]]


def _dependence(model, row, col) -> torch.Tensor:
    """|d logits(row, col) / d input|, per input pixel (flattened in raster order)."""
    x = torch.rand(1, 1, SIZE, SIZE, generator=make_generator(1)).requires_grad_()
    model.logits(x * 2 - 1)[0, :, row, col].sum().backward()
    return x.grad[0, 0].flatten().abs()


@pytest.mark.parametrize("kind", MODELS)
def test_no_pixel_depends_on_itself_or_any_later_pixel(kind):
    # The decisive test of an autoregressive model: output i has zero gradient with respect to
    # every input pixel j >= i in raster order, for every i. (A mask-B layer alone may see the
    # centre; only the whole network's output matters, and that starts with mask A.)
    model = tiny(kind)
    for row in range(SIZE):
        for col in range(SIZE):
            i = row * SIZE + col
            grad = _dependence(model, row, col)
            assert grad[i:].max() == 0, (kind, row, col)
            if col > 0:
                assert grad[i - 1] > 0, (kind, row, col)  # and it does see its left neighbour
            if row > 0:
                assert grad[i - SIZE] > 0, (kind, row, col)  # and the pixel above


def test_plain_has_a_blind_spot_and_gated_does_not():
    # Deep enough that every earlier pixel is within reach of the centre-bottom pixel.
    row, col = SIZE - 1, SIZE // 2
    before = torch.zeros(SIZE * SIZE, dtype=torch.bool)
    before[:row * SIZE + col] = True
    fields = {kind: receptive_field(tiny(kind, blocks=6), row, col).flatten() for kind in MODELS}
    assert (before & ~fields["gated"]).sum() == 0  # sees every pixel before it
    blind = before & ~fields["plain"]
    assert blind.sum() > 0
    assert not blind.view(SIZE, SIZE)[:, :col].any()  # the blind spot lies up and to the right


@pytest.mark.parametrize("kind", MODELS)
def test_a_tiny_model_learns_the_data(kind):
    # Two fixed 4-level patterns: the model can learn them almost exactly.
    gen = make_generator(0)
    patterns = torch.randint(0, 4, (2, 1, SIZE, SIZE), generator=gen)
    data = patterns[torch.arange(256) % 2]
    model = tiny(kind).train()
    with torch.no_grad():
        before = nll_bits_per_dim(model, data[:32]).mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in train(model, data, steps=80, batch_size=32, optimizer=optimizer, generator=make_generator(2)):
        pass
    model.eval()
    with torch.no_grad():
        after = nll_bits_per_dim(model, data[:32]).mean().item()
    assert before > 1.5 and after < 0.5 * before, (before, after)  # 2 bits/dim is the uniform guess


@pytest.mark.parametrize("kind", MODELS)
def test_same_seed_same_samples_and_rows_stream_in_order(kind):
    model = tiny(kind)
    rows_a = list(sample(model, 3, make_generator(5)))
    rows_b = list(sample(model, 3, make_generator(5)))
    assert [r for r, _ in rows_a] == list(range(SIZE))
    assert torch.equal(rows_a[-1][1], rows_b[-1][1])
    assert not torch.equal(rows_a[-1][1], list(sample(model, 3, make_generator(6)))[-1][1])
    first_row_done = rows_a[0][1]
    assert (first_row_done[:, :, 1:] == 0).all()  # nothing below the finished row is filled yet
    final = rows_a[-1][1]
    assert final.dtype == torch.long and 0 <= final.min() and final.max() <= 3


def test_zero_temperature_is_greedy_and_deterministic():
    model = tiny("gated")
    a = list(sample(model, 2, make_generator(1), temperature=0))[-1][1]
    b = list(sample(model, 2, make_generator(99), temperature=0))[-1][1]
    assert torch.equal(a, b) and torch.equal(a[0], a[1])


@pytest.mark.parametrize("kind", MODELS)
def test_completion_never_changes_the_known_pixels(kind):
    model = tiny(kind)
    image = torch.randint(0, 4, (1, 1, SIZE, SIZE), generator=make_generator(3)).expand(4, -1, -1, -1)
    known = torch.ones(SIZE, SIZE, dtype=torch.bool)
    known[SIZE // 2:] = False  # the lower half is hidden
    known[1, 2:5] = False      # and a little rectangle above
    done = list(complete(model, image, known, make_generator(4)))[-1][1]
    assert torch.equal(done[:, :, known], image[:, :, known])
    assert len({tuple(done[i, 0, ~known].tolist()) for i in range(4)}) > 1  # four different completions
    everything_known = list(complete(model, image, torch.ones(SIZE, SIZE, dtype=torch.bool), make_generator(4)))
    assert torch.equal(everything_known[-1][1], image)


def test_quantise_puts_every_grey_in_one_of_k_equal_bins():
    x = torch.tensor([0.0, 0.24, 0.25, 0.5, 0.99, 1.0])
    assert quantise(x, 4).tolist() == [0, 0, 1, 2, 3, 3]


def test_unknown_model_kind_is_a_sentence():
    with pytest.raises(ValueError, match="plain or gated"):
        build(PixelCNNConfig(kind="lstm"))
