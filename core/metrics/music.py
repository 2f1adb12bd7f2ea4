"""Musical measures of four-voice piano rolls (MuseGAN paper, Dong et al. 2018, sec. 5.1, plus two
for chorales).

Every function takes rolls of shape (N, steps, 4) (or one (steps, 4) roll) of pitch-class
indices as made by core.data.chorales (0 = rest, k = MIDI pitch 23 + k), on a 16th-note grid
with bars of 16 steps, voices ordered soprano, alto, tenor, bass. A "note" is a run of steps
holding the same pitch in one voice. Numbers are pooled over everything given, so the same
function measures one sample or a thousand phrases.

    empty_bar_rate            bars (per voice) that are all rest
    used_pitch_classes        distinct pitch classes (C, C#, ...) per non-empty bar per voice
    qualified_note_rate       notes at least an eighth long (2 steps). The paper counts notes of
                              >= 3 of its 96 steps per bar (a 32nd) as qualified; on a 16th grid the
                              shortest note is already a 16th, so "not a fragment" means >= an eighth
    tonal_distance            distance between two voices' tonal centroids (Harte et al. 2006) per
                              bar, over the 6 voice pairs: lower = voices agree on the harmony
    in_key_ratio              sounding steps whose pitch class lies in the phrase's best-fitting
                              major/natural-minor scale
    voice_order_violations    steps where a voice sounds below the voice under it (soprano under
                              alto, alto under tenor, tenor under bass), per adjacent pair sounding
"""
from __future__ import annotations

import itertools

import numpy as np

REST = 0
LOWEST_MIDI = 24
STEPS_PER_BAR = 16
QUALIFIED_STEPS = 2
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


def _rolls(rolls) -> np.ndarray:
    rolls = np.asarray(rolls, dtype=np.int64)
    if rolls.ndim == 2:
        rolls = rolls[None]
    if rolls.ndim != 3 or rolls.shape[1] % STEPS_PER_BAR:
        raise ValueError(f"Expected rolls (N, steps, voices) with whole 16-step bars, got shape {rolls.shape}.")
    return rolls


def _bars(rolls: np.ndarray) -> np.ndarray:
    """(N, steps, V) -> (N * bars, 16, V)."""
    n, steps, v = rolls.shape
    return rolls.reshape(n * steps // STEPS_PER_BAR, STEPS_PER_BAR, v)


def _pitch_class(rolls: np.ndarray) -> np.ndarray:
    return (rolls + LOWEST_MIDI - 1) % 12


def empty_bar_rate(rolls) -> float:
    bars = _bars(_rolls(rolls))
    return float((bars == REST).all(axis=1).mean())


def used_pitch_classes(rolls) -> float:
    bars = _bars(_rolls(rolls))
    pitch_class = _pitch_class(bars)
    counts = [len(np.unique(pitch_class[b, :, v][bars[b, :, v] != REST]))
              for b in range(bars.shape[0]) for v in range(bars.shape[2])]
    counts = [c for c in counts if c > 0]
    return float(np.mean(counts)) if counts else 0.0


def note_lengths(rolls) -> np.ndarray:
    """Lengths in steps of all notes (runs of one pitch in one voice, within a phrase)."""
    lengths = []
    for roll in _rolls(rolls):
        for voice in roll.T:
            change = np.flatnonzero(np.diff(voice)) + 1
            starts = np.concatenate([[0], change])
            ends = np.concatenate([change, [len(voice)]])
            lengths.extend((ends - starts)[voice[starts] != REST])
    return np.asarray(lengths)


def qualified_note_rate(rolls) -> float:
    lengths = note_lengths(rolls)
    return float((lengths >= QUALIFIED_STEPS).mean()) if len(lengths) else 0.0


def _tonal_matrix() -> np.ndarray:
    # Rows: circle of fifths, minor thirds, major thirds, as (sin, cos) pairs with radii 1, 1, 0.5.
    semitone = np.arange(12)
    rows = []
    for radius, angle in ((1.0, 7 * np.pi / 6), (1.0, 3 * np.pi / 2), (0.5, 2 * np.pi / 3)):
        rows += [radius * np.sin(semitone * angle), radius * np.cos(semitone * angle)]
    return np.stack(rows)  # (6, 12)


def tonal_distance(rolls) -> float:
    bars = _bars(_rolls(rolls))
    pitch_class = _pitch_class(bars)
    chroma = np.zeros((bars.shape[0], bars.shape[2], 12))
    for v in range(bars.shape[2]):
        for pc in range(12):
            chroma[:, v, pc] = ((pitch_class[:, :, v] == pc) & (bars[:, :, v] != REST)).sum(axis=1)
    total = chroma.sum(axis=2, keepdims=True)
    centroid = (chroma / np.maximum(total, 1)) @ _tonal_matrix().T   # (bars, V, 6)
    distances = [np.linalg.norm(centroid[:, a] - centroid[:, b], axis=1)[(total[:, a, 0] > 0) & (total[:, b, 0] > 0)]
                 for a, b in itertools.combinations(range(bars.shape[2]), 2)]
    distances = np.concatenate(distances)
    return float(distances.mean()) if len(distances) else 0.0


def in_key_ratio(rolls) -> float:
    rolls = _rolls(rolls)
    in_key = sounding = 0
    for roll in rolls:
        pcs = _pitch_class(roll)[roll != REST]
        histogram = np.bincount(pcs, minlength=12)
        best = max(sum(histogram[(tonic + d) % 12] for d in MAJOR_SCALE) for tonic in range(12))
        in_key += best
        sounding += len(pcs)
    return float(in_key / sounding) if sounding else 0.0


def voice_order_violations(rolls) -> float:
    rolls = _rolls(rolls)
    upper, lower = rolls[:, :, :-1], rolls[:, :, 1:]
    both = (upper != REST) & (lower != REST)
    return float(((upper < lower) & both).sum() / both.sum()) if both.any() else 0.0


# How close generated music must come to the chorales (issue #9): within 25% of their value (0.02
# absolute where their value is under 0.05: 25% of almost nothing is no tolerance at all), and voice
# crossings at most twice as often as Bach wrote them.
RELATIVE_TOLERANCE = 0.25
ABSOLUTE_TOLERANCE = 0.02
MAX_VOICE_ORDER_RATIO = 2.0


def target_gaps(generated: dict, reference: dict) -> dict[str, float]:
    """Each metric's distance from the reference in units of its tolerance: <= 1 meets the target."""
    gaps = {}
    for name in METRICS:
        if name == "voice_order_violations":
            allowed = (MAX_VOICE_ORDER_RATIO - 1) * reference[name]
            gaps[name] = max(0.0, generated[name] - reference[name]) / max(allowed, 1e-9)
        else:
            tolerance = max(RELATIVE_TOLERANCE * abs(reference[name]),
                            ABSOLUTE_TOLERANCE if reference[name] < 0.05 else 0.0)
            gaps[name] = abs(generated[name] - reference[name]) / tolerance
    return gaps


METRICS = {  # name -> (function, what the tab's table calls it)
    "empty_bar_rate": (empty_bar_rate, "empty bars (share of bars x voices)"),
    "used_pitch_classes": (used_pitch_classes, "pitch classes per bar and voice"),
    "qualified_note_rate": (qualified_note_rate, "notes an eighth or longer"),
    "tonal_distance": (tonal_distance, "tonal distance between voices"),
    "in_key_ratio": (in_key_ratio, "steps in the phrase's key"),
    "voice_order_violations": (voice_order_violations, "voice crossings (share of steps)"),
}


def all_metrics(rolls) -> dict:
    """Every measure of METRICS, rounded to 4 places."""
    rolls = _rolls(rolls)
    return {name: round(function(rolls), 4) for name, (function, _) in METRICS.items()}
