"""Synthetic faces with exact attribute labels: the lab's offline stand-in for CelebA.

CelebA cannot ship with the lab, yet the VAE's smile vector, the GANs and diffusion all want a
face dataset with attribute labels. So we draw one: each face is a handful of random factors
(mouth curve, face width, eye size, skin tone, hair colour and length, glasses, head position,
tilt and size, background colour, ...) rendered as signed-distance shapes with analytic
anti-aliasing and soft shading. Because we drew it, every label is exact.

    batch = make_faces(256, seed=0)          # FaceBatch: images [256, 3, 64, 64] in [0, 1]
    batch.labels["smiling"]                  # bool [256]
    batch.factors["mouth_curve"]             # the continuous value behind that label

Face `i` of a seed depends only on (seed, i), never on how many faces are drawn around it, so
"face #123 of the test split" means the same picture everywhere. Thresholded continuous factors
(smile, face width, eye size, skin tone, ...) are never drawn close to their threshold: a margin
is left empty so each label is unambiguous even at 64 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FACE_ATTRIBUTES = [
    "smiling", "mouth_open", "eyeglasses",
    "black_hair", "brown_hair", "blond_hair", "red_hair", "gray_hair",
    "long_hair", "bangs", "pale_skin", "dark_skin", "wide_face", "big_eyes",
]
HAIR_COLOURS = ["black", "brown", "blond", "red", "gray"]
# Seeds of the standard splits, so every technique trains and evaluates on the same faces.
FACE_SPLITS = {"train": 0, "validation": 1, "test": 2}

# Thresholds of the continuous factors (labels are factor > threshold) and the empty margin around them.
SMILE_THRESHOLD = 0.25
_HAIR_RGB = torch.tensor([[0.10, 0.08, 0.07], [0.42, 0.25, 0.12], [0.92, 0.77, 0.45],
                          [0.75, 0.28, 0.10], [0.72, 0.72, 0.74]])
_HAIR_P = [0.25, 0.30, 0.22, 0.10, 0.13]
_SKIN_RGB = torch.tensor([[0.99, 0.88, 0.80], [0.87, 0.66, 0.50], [0.42, 0.27, 0.18]])
_EYE_RGB = torch.tensor([[0.35, 0.20, 0.10], [0.25, 0.45, 0.75], [0.30, 0.55, 0.30]])
_FRAME_RGB = torch.tensor([[0.08, 0.08, 0.10], [0.55, 0.10, 0.12], [0.85, 0.62, 0.10]])
_N_UNIFORMS = 24  # random numbers per face; fixed so face i never depends on its neighbours


@dataclass
class FaceBatch:
    images: torch.Tensor               # float32 [N, 3, size, size] in [0, 1]
    labels: dict[str, torch.Tensor]    # bool [N] for each name in FACE_ATTRIBUTES
    factors: dict[str, torch.Tensor]   # float32 [N]: the continuous values the faces were drawn from


def _with_gap(u: np.ndarray, lo: float, hi: float, gap_lo: float, gap_hi: float) -> np.ndarray:
    """Map uniforms in [0, 1) to a uniform over [lo, hi] with the interval (gap_lo, gap_hi) left empty."""
    below = gap_lo - lo
    v = lo + u * (below + hi - gap_hi)
    return np.where(v < gap_lo, v, v + (gap_hi - gap_lo))


def _skin_tone(u: np.ndarray) -> np.ndarray:
    """Uniform over [0, 1] with margins (0.25, 0.35) and (0.65, 0.75) around the two skin labels."""
    v = u * 0.8
    return np.where(v < 0.25, v, np.where(v < 0.55, v + 0.1, v + 0.2))


def _uniforms(n: int, seed: int, start: int) -> np.ndarray:
    # One tiny generator per face, keyed by (seed, index): face i is the same whatever n and start are.
    return np.stack([np.random.default_rng([int(seed) & 0xFFFFFFFF, start + i]).random(_N_UNIFORMS)
                     for i in range(n)]) if n else np.zeros((0, _N_UNIFORMS))


def draw_factors(n: int, seed: int, start: int = 0) -> dict[str, torch.Tensor]:
    """The random factors of faces start .. start+n-1 of a seed (float32 [n] each)."""
    u = _uniforms(n, seed, start).T
    hair = np.searchsorted(np.cumsum(_HAIR_P), u[3] * 0.999999)
    f = {
        "mouth_curve": _with_gap(u[0], -0.6, 1.0, 0.15, 0.35),      # > 0.25: corners up (smiling)
        "mouth_open": np.where(u[1] < 0.3, 0.4 + u[2] * 0.6, 0.0),   # how far the lips part (0 = closed)
        "hair_colour": hair.astype(np.float64),                       # index into HAIR_COLOURS
        "hair_length": _with_gap(u[4], 0.0, 1.0, 0.4, 0.6),          # > 0.5: falls below the chin
        "hair_line": _with_gap(u[5], -0.34, -0.12, -0.24, -0.18),    # > -0.21: bangs over the forehead
        "skin_tone": _skin_tone(u[6]),                               # < 0.3 pale; > 0.7 dark
        "face_width": _with_gap(u[7], 0.8, 1.25, 1.0, 1.12),         # > 1.06: wide face
        "eye_size": _with_gap(u[8], 0.75, 1.35, 1.0, 1.12),          # > 1.06: big eyes
        "eyeglasses": (u[9] < 0.3).astype(np.float64),
        "frame_colour": np.floor(u[10] * 3),
        "eye_colour": np.floor(u[11] * 3),
        "head_x": (u[12] - 0.5) * 0.16,
        "head_y": (u[13] - 0.5) * 0.1 - 0.08,
        "tilt": (u[14] - 0.5) * math.radians(30),                    # radians, +-15 degrees
        "head_scale": 1.15 + u[15] * 0.2,
        "background_hue": u[16],
        "background_value": 0.7 + u[17] * 0.25,
        "shirt_hue": u[18],
        "blush": u[19],
        "hair_shade": 0.85 + u[20] * 0.3,                            # lighter/darker within a colour
    }
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in f.items()}


def labels_from_factors(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The binary attributes, read off the factors by their thresholds."""
    hair = f["hair_colour"].round().long()
    labels = {
        "smiling": f["mouth_curve"] > SMILE_THRESHOLD,
        "mouth_open": f["mouth_open"] > 0,
        "eyeglasses": f["eyeglasses"] > 0.5,
        "long_hair": f["hair_length"] > 0.5,
        "bangs": f["hair_line"] > -0.21,
        "pale_skin": f["skin_tone"] < 0.3,
        "dark_skin": f["skin_tone"] > 0.7,
        "wide_face": f["face_width"] > 1.06,
        "big_eyes": f["eye_size"] > 1.06,
    }
    for i, name in enumerate(HAIR_COLOURS):
        labels[f"{name}_hair"] = hair == i
    return {name: labels[name] for name in FACE_ATTRIBUTES}


# --- drawing -------------------------------------------------------------------------------
# Every shape is a signed distance d (negative inside) on a grid of pixel centres in [-1, 1].
# Coverage clamp(0.5 - d / pixel, 0, 1) is the fraction of a pixel the shape covers: analytic
# anti-aliasing, so the 64 px faces need no supersampling. Small features are computed only in
# the window of pixels they can reach, which keeps drawing well above 1,000 faces a second.

def _ellipse(x, y, cx, cy, a, b):
    # Approximate distance to an ellipse: exact for circles, good enough near the edge otherwise.
    dx, dy = (x - cx) / a, (y - cy) / b
    return (torch.sqrt(dx * dx + dy * dy) - 1) * torch.minimum(torch.as_tensor(a), torch.as_tensor(b))


def _segment(x, y, ax, ay, bx, by, radius):
    # Distance to a capsule: a line segment with round ends, thickened by `radius`.
    px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
    t = ((px * vx + py * vy) / torch.as_tensor(vx * vx + vy * vy).clamp_min(1e-9)).clamp(0, 1)
    return torch.sqrt((px - t * vx) ** 2 + (py - t * vy) ** 2) - radius


def _cover(d, pixel, soft: float = 1.0):
    return (0.5 - d / (pixel * soft)).clamp(0, 1)


def _paint(image, alpha, colour):
    """Composite `colour` over `image` (a view, changed in place) with coverage `alpha` [N, 1, h, w]."""
    image.lerp_(torch.as_tensor(colour).expand_as(image), alpha)


def _rgb(*values):
    return torch.tensor(values).reshape(1, 3, 1, 1)


def _hsv(h, s, v):
    # HSV -> RGB for tensors of hues in [0, 1), the standard piecewise-linear formula.
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _lerp_palette(palette, t):
    # t in [0, 1] walks along the palette's rows (skin from pale to dark).
    pos = t * (len(palette) - 1)
    i = pos.floor().long().clamp(max=len(palette) - 2)
    w = (pos - i)[:, None]
    return palette[i] * (1 - w) + palette[i + 1] * w


class _HeadFrame:
    """Pixel coordinates in each face's own upright frame (head centre at 0, before tilt and scale)."""

    def __init__(self, f, size):
        n = f["tilt"].shape[0]
        self.size, self.pixel = size, 2.0 / size
        self.cx, self.cy = f["head_x"].reshape(n, 1, 1, 1), f["head_y"].reshape(n, 1, 1, 1)
        self.scale = f["head_scale"].reshape(n, 1, 1, 1)
        self.cos, self.sin = torch.cos(f["tilt"]).reshape(n, 1, 1, 1), torch.sin(f["tilt"]).reshape(n, 1, 1, 1)
        self.grid = torch.linspace(-1 + self.pixel / 2, 1 - self.pixel / 2, size)

    def window(self, x0, x1, y0, y1):
        """Pixel rows/columns that the local box [x0, x1] x [y0, y1] can touch on any face of the batch,
        and the local coordinates (x, y) of those pixels."""
        corners = torch.tensor([[x0, y0], [x0, y1], [x1, y0], [x1, y1]])
        lx, ly = corners[:, 0].reshape(1, 4), corners[:, 1].reshape(1, 4)
        s, c, si = self.scale.reshape(-1, 1), self.cos.reshape(-1, 1), self.sin.reshape(-1, 1)
        gx = self.cx.reshape(-1, 1) + s * (c * lx - si * ly)
        gy = self.cy.reshape(-1, 1) + s * (si * lx + c * ly)
        to_index = lambda v: (v + 1) / self.pixel - 0.5
        c0, c1 = int(to_index(gx.min()).floor()) - 1, int(to_index(gx.max()).ceil()) + 2
        r0, r1 = int(to_index(gy.min()).floor()) - 1, int(to_index(gy.max()).ceil()) + 2
        rows, cols = slice(max(r0, 0), min(max(r1, 0), self.size)), slice(max(c0, 0), min(max(c1, 0), self.size))
        ox = self.grid[cols].reshape(1, 1, 1, -1) - self.cx
        oy = self.grid[rows].reshape(1, 1, -1, 1) - self.cy
        x = (self.cos * ox + self.sin * oy) / self.scale
        y = (-self.sin * ox + self.cos * oy) / self.scale
        return (..., rows, cols), x, y


def render_faces(f: dict[str, torch.Tensor], size: int = 64) -> torch.Tensor:
    """Draw faces from their factors: float32 [N, 3, size, size] in [0, 1]."""
    n = f["mouth_curve"].shape[0]
    col = lambda c: c.reshape(n, 3, 1, 1)
    par = lambda v: v.reshape(n, 1, 1, 1)
    head = _HeadFrame(f, size)
    pixel, px = head.pixel, head.pixel / head.scale   # one pixel, in image and in head units
    gx, gy = head.grid.reshape(1, 1, 1, size), head.grid.reshape(1, 1, size, 1)

    # Background: a muted colour with a soft vertical gradient.
    bg = _hsv(f["background_hue"], torch.full((n,), 0.35), f["background_value"])
    image = (col(bg) * (1.0 - 0.12 * (gy + 1) / 2)).expand(n, 3, size, size).contiguous()

    skin = _lerp_palette(_SKIN_RGB, f["skin_tone"])
    hair_rgb = (_HAIR_RGB[f["hair_colour"].round().long()] * f["hair_shade"][:, None]).clamp(0, 1)
    a = 0.36 * par(f["face_width"])            # face half-width
    b = 0.46                                    # face half-height

    # Hair behind the head: a cap round the skull and, for long hair, a curtain down to the shoulders.
    win, x, y = head.window(-0.62, 0.62, -0.62, 0.9)
    light = 1.0 - 0.10 * (x + y)                # soft light from the upper left
    length = par(f["hair_length"])
    bottom = -0.05 + 0.9 * length
    curtain = torch.maximum(x.abs() - (a + 0.1), (y - (bottom - 0.2) / 2).abs() - (bottom + 0.2) / 2)
    back = torch.minimum(_ellipse(x, y, 0.0, -0.06, a + 0.1, b + 0.08), curtain)
    _paint(image[win], _cover(back, px), col(hair_rgb) * (0.75 * light))

    # Neck and shoulders stay upright below the head (only the head tilts).
    neck = _segment(gx, gy, head.cx, head.cy + 0.3, head.cx, torch.tensor(1.0), 0.15)
    _paint(image, _cover(neck, pixel), col(skin) * (0.82 - 0.1 * (gy - head.cy - 0.4).clamp(0, 1)))
    shirt = _hsv(f["shirt_hue"], torch.full((n,), 0.45), torch.full((n,), 0.6))
    shoulders = _ellipse(gx, gy, head.cx * 0.5, torch.tensor(1.3), torch.tensor(0.85), torch.tensor(0.5))
    _paint(image, _cover(shoulders, pixel), col(shirt) * (1.05 - 0.15 * (gy + 1) / 2))

    # Ears, then the face with spherical shading, then hair over the forehead: inside a cap a little
    # larger than the head and above a hairline that comes down at the temples (higher value = bangs).
    ears = torch.minimum(_ellipse(x, y, -a, 0.03, 0.07, 0.1), _ellipse(x, y, a, 0.03, 0.07, 0.1))
    _paint(image[win], _cover(ears, px), col(skin) * 0.88)
    jaw = a * (1 - 0.18 * (y / b).clamp(0, 1) ** 2)   # narrower towards the chin
    face = _ellipse(x, y, 0.0, 0.0, jaw, b)
    rho2 = (x / jaw) ** 2 + (y / b) ** 2
    _paint(image[win], _cover(face, px), col(skin) * (light * (1.04 - 0.16 * rho2)))
    cap = torch.maximum(_ellipse(x, y, 0.0, -0.03, a + 0.06, b + 0.07),
                        y - (par(f["hair_line"]) + 0.5 * (x / a) ** 2))
    sheen = 1.0 + 0.25 * (1 - ((y + 0.32 - 0.15 * x.abs()) / 0.07) ** 2).clamp_min(0)  # a band of shine
    _paint(image[win], _cover(cap, px), col(hair_rgb) * (light * sheen))

    # Cheeks and nose: soft shapes (a wider coverage ramp) for gentle shading.
    ex = 0.40 * a                               # eye centres at +-ex
    win, x, y = head.window(-0.35, 0.35, 0.0, 0.25)
    cheeks = torch.minimum(_ellipse(x, y, -1.55 * ex, 0.15, 0.07, 0.05), _ellipse(x, y, 1.55 * ex, 0.15, 0.07, 0.05))
    _paint(image[win], _cover(cheeks, px, soft=6.0) * 0.35 * par(f["blush"]), _rgb(0.95, 0.45, 0.45))
    nose = _segment(x, y, 0.0, 0.03, 0.015, 0.13, 0.012)
    _paint(image[win], _cover(nose, px, soft=2.5) * 0.5, col(skin) * 0.7)

    # Mouth: the lip line is the curve y = my - bend * ((x / mw)^2 - 0.4); bend > 0 lifts the corners.
    win, x, y = head.window(-0.2, 0.2, 0.1, 0.42)
    mw, my = 0.15, 0.25
    bend = 0.11 * par(f["mouth_curve"])
    xm = (x / mw).clamp(-1, 1)
    lip_y = my - bend * (xm * xm - 0.4)
    slope = -2 * bend * xm / mw
    inside = x.abs() <= mw
    line = torch.where(inside, (y - lip_y).abs() / torch.sqrt(1 + slope * slope),
                       torch.sqrt((x.abs() - mw) ** 2 + (y - (my - bend * 0.6)) ** 2)) - 0.014
    opening = 0.13 * par(f["mouth_open"]) * (1 - xm * xm)
    mouth_in = torch.where(inside, torch.maximum(lip_y - y, y - lip_y - opening), torch.ones_like(y))
    _paint(image[win], _cover(mouth_in, px), _rgb(0.35, 0.06, 0.08))
    teeth = torch.maximum(mouth_in, y - lip_y - 0.3 * opening)
    _paint(image[win], _cover(teeth, px) * (opening > 0.02), _rgb(0.96, 0.95, 0.92))
    _paint(image[win], _cover(line, px), col(skin) * _rgb(0.72, 0.42, 0.42))

    # Eyes: white, iris, pupil and a highlight; eyebrows in a darker hair colour.
    win, x, y = head.window(-0.47, 0.47, -0.2, 0.1)
    es = par(f["eye_size"])
    ey = -0.02
    iris_rgb = col(_EYE_RGB[f["eye_colour"].long().clamp(0, 2)])
    for side in (-1.0, 1.0):
        cx = side * ex
        white = _ellipse(x, y, cx, ey, 0.075 * es, 0.05 * es)
        _paint(image[win], _cover(white, px), _rgb(0.97, 0.97, 0.97))
        iris = torch.maximum(_ellipse(x, y, cx, ey, 0.04 * es, 0.04 * es), white)
        _paint(image[win], _cover(iris, px), iris_rgb)
        pupil = _ellipse(x, y, cx, ey, 0.02 * es, 0.02 * es)
        _paint(image[win], _cover(pupil, px), _rgb(0.0, 0.0, 0.0))
        shine = _ellipse(x, y, cx + 0.012 * es, ey - 0.014 * es, 0.009 * es, 0.009 * es)
        _paint(image[win], _cover(shine, px) * 0.9, _rgb(1.0, 1.0, 1.0))
        brow_y = ey - 0.05 * es - 0.045
        brow = _segment(x, y, cx - side * 0.05, brow_y + 0.01, cx + side * 0.08, brow_y, 0.017)
        _paint(image[win], _cover(brow, px), col(hair_rgb) * 0.7)

    # Glasses: two rings round the eyes, a bridge and arms to the ears, lenses faintly tinted.
    r = 0.105
    lenses = torch.minimum(_ellipse(x, y, -ex, ey, r, r * 0.85), _ellipse(x, y, ex, ey, r, r * 0.85))
    rings = lenses.abs() - 0.014
    bridge = _segment(x, y, -ex + r, ey - 0.01, ex - r, ey - 0.01, 0.014)
    arms = torch.minimum(_segment(x, y, -ex - r, ey - 0.01, -a, ey - 0.03, 0.011),
                         _segment(x, y, ex + r, ey - 0.01, a, ey - 0.03, 0.011))
    frame = torch.minimum(torch.minimum(rings, bridge), arms)
    wear = par(f["eyeglasses"])
    _paint(image[win], _cover(lenses, px) * 0.15 * wear, _rgb(0.7, 0.85, 1.0))
    _paint(image[win], _cover(frame, px) * wear, col(_FRAME_RGB[f["frame_colour"].long().clamp(0, 2)]))
    return image.clamp_(0, 1)


def make_faces(n: int, seed: int, size: int = 64, start: int = 0) -> FaceBatch:
    """Faces start .. start+n-1 of `seed`, with their labels and factors (see the module docstring)."""
    n, size, start = int(n), int(size), int(start)
    if n < 0 or start < 0:
        raise ValueError("The number of faces and the start index must not be negative.")
    if not 16 <= size <= 512:
        raise ValueError(f"Face images can be 16 to 512 pixels wide, not {size}.")
    factors = draw_factors(n, seed, start)
    chunk = max(1, 2**18 // (size * size))  # keep each pass's tensors cache-sized
    images = torch.cat([render_faces({k: v[i:i + chunk] for k, v in factors.items()}, size)
                        for i in range(0, n, chunk)]) if n else torch.zeros(0, 3, size, size)
    return FaceBatch(images=images, labels=labels_from_factors(factors), factors=factors)


SOURCE = "generated by core.data.faces in this repository (seeded: no download; the same faces on every machine)"
CHECKED_FACES = 256  # provenance hashes the first faces of a range: enough to tell two generators apart


def provenance(split: str, n: int, size: int = 64, start: int = 0, leaving_out: str = "") -> dict:
    """What a model card records about faces it trained on: the split and range, the generator, and a
    SHA-256 of the first faces of the range as 8-bit pixels with their labels (the faces are drawn, not
    downloaded, so that checks the generator). `leaving_out` names faces the trainer dropped."""
    from core.data import data_record

    sample = face_split(split, min(int(n), CHECKED_FACES), size=size, start=start)
    pixels = (sample.images * 255).round().to(torch.uint8)
    labels = torch.stack([sample.labels[name] for name in FACE_ATTRIBUTES], 1)
    name = f"synthetic faces, {split} split, faces {start}-{start + int(n) - 1} at {size}x{size}" + (
        f", less {leaving_out}" if leaving_out else "")
    return data_record(name, SOURCE, pixels, labels, key=f"sha256_of_first_{len(pixels)}_faces_and_labels")


def face_split(split: str, n: int, size: int = 64, start: int = 0) -> FaceBatch:
    """Faces of a standard split ("train", "validation", "test")."""
    if split not in FACE_SPLITS:
        raise ValueError(f"The face split must be one of {', '.join(FACE_SPLITS)}, not {split!r}.")
    return make_faces(n, FACE_SPLITS[split], size=size, start=start)
