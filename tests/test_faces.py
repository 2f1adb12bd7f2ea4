"""The synthetic face generator: deterministic, labelled, and its labels agree with what it drew."""
import pytest
import torch

from core.data.faces import (FACE_ATTRIBUTES, HAIR_COLOURS, SMILE_THRESHOLD, _HAIR_RGB, draw_factors, face_split,
                             make_faces, render_faces)




def upright(factors, **overrides):
    """The same faces, centred, untilted and at a known scale, so features sit at known pixels."""
    n = len(factors["tilt"])
    fixed = {"tilt": 0.0, "head_x": 0.0, "head_y": 0.0, "head_scale": 1.0, **overrides}
    return {**factors, **{k: torch.full((n,), float(v)) for k, v in fixed.items()}}


def to_row(local_y, size):
    # head at the image centre with scale 1: local unit 1 spans size/2 pixels
    return (local_y + 1) * size / 2 - 0.5


def test_shapes_ranges_and_labels():
    batch = make_faces(40, seed=1)
    assert batch.images.shape == (40, 3, 64, 64) and batch.images.dtype == torch.float32
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert list(batch.labels) == FACE_ATTRIBUTES
    for name in FACE_ATTRIBUTES:
        assert batch.labels[name].dtype == torch.bool and batch.labels[name].shape == (40,)
    hair = torch.stack([batch.labels[f"{c}_hair"] for c in HAIR_COLOURS], 1)
    assert (hair.sum(1) == 1).all()  # exactly one hair colour each
    assert (batch.labels["smiling"] == (batch.factors["mouth_curve"] > SMILE_THRESHOLD)).all()
    many = make_faces(300, seed=2, size=16)
    for name in FACE_ATTRIBUTES:  # every attribute occurs, and is not universal
        assert 0 < many.labels[name].float().mean() < 1, name


def test_face_i_does_not_depend_on_batch():
    whole = make_faces(12, seed=7)
    part = make_faces(5, seed=7, start=4)
    assert torch.equal(part.images, whole.images[4:9])
    for name in FACE_ATTRIBUTES:
        assert torch.equal(part.labels[name], whole.labels[name][4:9])
    assert not torch.equal(make_faces(5, seed=8, start=4).images, part.images)
    assert torch.equal(face_split("test", 3).images, make_faces(3, seed=2).images)


def test_smiling_faces_have_mouth_corners_higher_than_the_centre():
    size = 96
    f = upright(draw_factors(80, seed=3), mouth_open=0.0)
    images = render_faces(f, size)
    gray = images.mean(1)                                   # [N, H, W]
    rows = torch.arange(size, dtype=torch.float32)
    band = slice(int(to_row(0.15, size)), int(to_row(0.38, size)))  # between the nose and the chin
    def lip_row(col):
        # darkness-weighted mean row of the lip line in one column, relative to the cheek beside the mouth
        column = gray[:, band, col]
        darkness = (column.max(1, keepdim=True).values - column).clamp_min(0) ** 2
        return (darkness * rows[band]).sum(1) / darkness.sum(1)
    centre = size // 2
    corner = round(0.13 * size / 2)
    lift = lip_row(centre) - (lip_row(centre - corner) + lip_row(centre + corner - 1)) / 2  # pixels, >0 = corners up
    smiling = make_faces(80, seed=3, size=16).labels["smiling"]
    assert lift[smiling].min() > lift[~smiling].max()
    assert lift[smiling].min() > 0.3


def test_eyeglasses_put_a_frame_across_the_bridge_of_the_nose():
    size = 96
    f = upright(draw_factors(80, seed=4))
    images = render_faces(f, size)
    row, col = round(to_row(-0.03, size)), size // 2
    bridge = images[:, :, row - 1:row + 2, col]
    skin = images[:, :, round(to_row(0.12, size)), col + round(0.08 * size / 2)]  # beside the nose
    difference = (bridge - skin[:, :, None]).abs().sum(1).max(1).values
    glasses = make_faces(80, seed=4, size=16).labels["eyeglasses"]
    assert difference[glasses].min() > difference[~glasses].max() + 0.1


def test_the_top_of_the_head_has_the_labelled_hair_colour():
    size = 48
    f = upright(draw_factors(120, seed=5))
    images = render_faces(f, size)
    patch = images[:, :, round(to_row(-0.45, size)) - 1:round(to_row(-0.45, size)) + 2, size // 2 - 2:size // 2 + 2]
    colour = patch.mean((2, 3))                             # [N, 3]
    # nearest palette colour, allowing the shading to brighten or darken it
    direction = _HAIR_RGB / _HAIR_RGB.norm(dim=1, keepdim=True)
    gain = (colour @ direction.T).clamp_min(0)             # best scale per palette colour
    error = (colour[:, None, :] - gain[:, :, None] * direction[None]).norm(dim=2)
    error = error + 0.5 * (colour.norm(dim=1, keepdim=True) < 0.2) * (torch.arange(5) != 0)  # very dark = black
    labels = make_faces(120, seed=5, size=16).labels
    truth = torch.stack([labels[f"{c}_hair"] for c in HAIR_COLOURS], 1).float().argmax(1)
    assert (error.argmin(1) == truth).float().mean() > 0.97


def test_bad_arguments_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="pixels"):
        make_faces(2, seed=0, size=4)
    with pytest.raises(ValueError, match="negative"):
        make_faces(-1, seed=0)
    with pytest.raises(ValueError, match="split"):
        face_split("training", 2)
    assert make_faces(0, seed=0).images.shape == (0, 3, 64, 64)
