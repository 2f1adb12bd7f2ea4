"""Bach chorales as four-voice piano rolls on a 16th-note grid.

A chorale becomes an integer tensor `roll` of shape (steps, 4): for each 16th-note step and
each voice (soprano, alto, tenor, bass) the pitch class index that sounds, or REST. This is
MuseGAN's "one note per track per step" view of the music. Consecutive steps with the same
pitch form one held note (a repeated note of the same pitch therefore merges into a longer
one; the chorales rarely repeat a pitch within a voice, and the generator never needs to).

Index 0 is the rest symbol; index k >= 1 is MIDI pitch LOWEST_MIDI + k - 1, so the 84 classes
cover MIDI 24..106 (C1..A#7), far wider than any chorale voice even after transposition.

Sources, in order:
  1. the processed corpus shipped in assets/data/bach_chorales.npz (made by `build_cache`),
  2. ~/.cache/genlab/bach_chorales.npz,
  3. parsing the music21 corpus (minutes), then writing 2.
`load_folder` reads any folder of MIDI/MusicXML files with four parts the same way.

    python -m core.data.chorales --out assets/data/bach_chorales.npz   # (re)build the shipped cache
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REST = 0
N_PITCHES = 84            # rest + 83 pitches; 84 = 7 octaves, as in the book
LOWEST_MIDI = 24
STEPS_PER_BAR = 16        # 16th notes in a 4/4 bar
STEPS_PER_QUARTER = 4
N_TRACKS = 4
VOICES = ("soprano", "alto", "tenor", "bass")

# How the voices can be played back (General MIDI programs), and the tempi that make sense.
# Kept here, free of torch, so the app's menus can be built without loading any model code.
PROGRAMS = {"Choir Aahs": 52, "Church Organ": 19, "Acoustic Grand Piano": 0, "String Ensemble": 48,
            "Violin": 40, "Viola": 41, "Cello": 42, "Contrabass": 43, "Flute": 73, "Oboe": 68,
            "Clarinet": 71, "Bassoon": 70, "French Horn": 60, "Trumpet": 56, "Trombone": 57, "Tuba": 58}
DEFAULT_INSTRUMENTS = ("Flute", "Oboe", "Clarinet", "Bassoon")
MIN_TEMPO, MAX_TEMPO = 30, 240

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CACHE = ROOT / "assets" / "data" / "bach_chorales.npz"
USER_CACHE = Path.home() / ".cache" / "genlab" / "bach_chorales.npz"
MUSIC_SUFFIXES = (".mid", ".midi", ".xml", ".musicxml", ".mxl", ".krn", ".abc")


def midi_to_class(midi: int) -> int:
    """Pitch class index of a MIDI pitch; pitches outside the range are folded in by octaves."""
    while midi < LOWEST_MIDI:
        midi += 12
    while midi > LOWEST_MIDI + N_PITCHES - 2:
        midi -= 12
    return midi - LOWEST_MIDI + 1


def class_to_midi(index: int) -> int:
    return LOWEST_MIDI + int(index) - 1


# --- parsing -------------------------------------------------------------------------

def score_to_roll(score, name: str = "score") -> np.ndarray:
    """A four-part music21 score in 4/4 -> uint8 roll (steps, 4), bar lines on multiples of 16.

    Raises ValueError (with a sentence saying why) for scores that do not fit the grid.
    """
    from music21 import meter

    parts = list(score.parts)
    needs = "exactly four parts, one per voice (soprano, alto, tenor, bass)"
    if len(parts) > N_TRACKS:  # chorales with instrumental parts: keep the four sung voices
        sung = {(p.partName or "").strip().lower()[:1]: p for p in parts
                if (p.partName or "").strip().lower().startswith(VOICES)}
        found = [v for v in VOICES if v[0] in sung]
        if len(found) < N_TRACKS:
            names = [v.capitalize() for v in found]
            named = (f"only {', '.join(names[:-1]) + ' and ' if len(names) > 1 else ''}{names[-1]} among them "
                     "named as a voice" if names else "none of them named Soprano, Alto, Tenor or Bass")
            raise ValueError(f"{name} has {len(parts)} parts, {named}; this needs {needs}, or those four "
                             "named among more. Save just the four voices and upload that file.")
        parts = [sung[v[0]] for v in VOICES]
    if len(parts) != N_TRACKS:
        raise ValueError(f"{name} has {len(parts)} part(s); this needs {needs}.")
    signatures = {ts.ratioString for ts in score.recurse().getElementsByClass(meter.TimeSignature)}
    if signatures - {"4/4"}:
        raise ValueError(f"{name} is in {', '.join(sorted(signatures))}; only 4/4 fits the 16-step bars.")
    # A pickup (anacrusis) is shorter than a bar: shift so that the first full bar starts at step 0
    # and bar lines fall on multiples of 16. The pickup itself is dropped.
    measures = list(parts[0].getElementsByClass("Measure"))
    pickup = 0.0
    if measures and measures[0].duration.quarterLength < 4.0 and len(measures) > 1:
        pickup = float(measures[1].offset)
    length = int(round((float(parts[0].highestTime) - pickup) * STEPS_PER_QUARTER))
    length -= length % STEPS_PER_BAR
    if length <= 0:
        raise ValueError(f"{name} is shorter than one 4/4 bar.")
    roll = np.full((length, N_TRACKS), REST, dtype=np.uint8)
    for track, part in enumerate(parts):
        for element in part.flatten().notes:
            start = (float(element.offset) - pickup) * STEPS_PER_QUARTER
            end = start + float(element.quarterLength) * STEPS_PER_QUARTER
            # Round to the grid; grace notes (zero length) vanish, triplets snap to 16ths.
            start, end = max(0, int(round(start))), min(length, int(round(end)))
            if end <= start:
                continue
            pitches = element.pitches  # a Chord in one voice: keep its top note
            roll[start:end, track] = midi_to_class(max(p.midi for p in pitches))
    return roll


def parse_file(path) -> np.ndarray:
    """One MIDI/MusicXML/... file with four parts -> roll. ValueError if it cannot be used."""
    from music21 import converter

    path = Path(path)
    if path.suffix.lower() not in MUSIC_SUFFIXES:  # music21 would also unpickle .p files: never
        raise ValueError(f"{path.name}: use a MIDI or MusicXML file ({', '.join(MUSIC_SUFFIXES)}).")
    try:
        score = converter.parse(str(path))
    except Exception as exc:  # music21 raises many types for foreign or broken files
        raise ValueError(f"{path.name} could not be read as music ({exc.__class__.__name__}).") from None
    return score_to_roll(score, path.name)


@dataclass
class ChoraleSet:
    """Rolls of whole pieces (not yet cut into phrases) and their names."""
    rolls: list[np.ndarray]
    names: list[str]

    def split(self, every: int = 10) -> tuple["ChoraleSet", "ChoraleSet"]:
        """(train, held-out): a piece is held out, whole, when a hash of its name says so,
        so the split is stable when pieces are added and no phrase leaks across it."""
        held = [zlib.crc32(n.encode()) % every == 0 for n in self.names]
        pick = lambda keep: ChoraleSet([r for r, h in zip(self.rolls, held) if h == keep],
                                       [n for n, h in zip(self.names, held) if h == keep])
        return pick(False), pick(True)


def parse_bach_corpus(log=print) -> ChoraleSet:
    """Every four-part 4/4 Bach chorale of the music21 corpus (takes minutes)."""
    from music21 import corpus

    rolls, names = [], []
    paths = sorted(corpus.getComposer("bach"))
    for i, path in enumerate(paths):
        name = Path(path).stem
        if name in names:  # the corpus holds some chorales in two formats
            continue
        try:
            roll = parse_file(path)
        except ValueError as exc:
            log(f"skip {exc}")
            continue
        rolls.append(roll)
        names.append(name)
        if (i + 1) % 50 == 0:
            log(f"{i + 1}/{len(paths)} files, {len(rolls)} chorales kept")
    return ChoraleSet(rolls, names)


SOURCE = "music21 corpus (Bach chorales in 4/4 with four voices, SATB), parsed by core.data.chorales"


def provenance(folder=None) -> dict:
    """The chorale data as a model card names it: name, source, SHA-256 and size: of the parsed corpus file
    load_bach read, or, for a folder of the trainer's own, of every music file's relative path and contents."""
    if folder:
        folder = Path(folder)
        digest, size = hashlib.sha256(), 0
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MUSIC_SUFFIXES)
        for path in files:
            raw = path.read_bytes()
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + raw)
            size += len(raw)
        return {"name": folder.name, "source": "a folder of four-part MIDI/MusicXML files of the trainer's own",
                "sha256": digest.hexdigest(), "bytes": size, "files": len(files)}
    path = next(p for p in (SHIPPED_CACHE, USER_CACHE) if p.is_file())  # the one load_bach read
    raw = path.read_bytes()
    return {"name": path.name, "source": SOURCE, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


def save_set(chorales: ChoraleSet, path) -> Path:
    """Compressed npz without pickles: all rolls concatenated, plus lengths and names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, rolls=np.concatenate(chorales.rolls), lengths=np.array([len(r) for r in chorales.rolls]),
                        names=np.array(chorales.names))
    return path


def read_set(path) -> ChoraleSet:
    with np.load(path, allow_pickle=False) as data:
        rolls, lengths, names = data["rolls"], data["lengths"], data["names"]
    return ChoraleSet(np.split(rolls, np.cumsum(lengths)[:-1]), [str(n) for n in names])


def load_bach(log=print) -> ChoraleSet:
    """The Bach chorales, from the shipped cache, the user cache, or by parsing the corpus."""
    for path in (SHIPPED_CACHE, USER_CACHE):
        if path.is_file():
            return read_set(path)
    log("Parsing the music21 Bach corpus once (a few minutes); cached in " + str(USER_CACHE))
    chorales = parse_bach_corpus(log)
    save_set(chorales, USER_CACHE)
    return chorales


def load_folder(folder, log=print) -> ChoraleSet:
    """Every usable four-part 4/4 file in a folder (files that do not fit are skipped with a note)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    rolls, names = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in MUSIC_SUFFIXES):
        try:
            rolls.append(parse_file(path))
            names.append(path.stem)
        except ValueError as exc:
            log(f"skip {exc}")
    if not rolls:
        raise ValueError(f"No four-part 4/4 MIDI or MusicXML files in {folder}.")
    return ChoraleSet(rolls, names)


# --- phrases for training --------------------------------------------------------------

def phrases(chorales: ChoraleSet, n_bars: int = 2, hop_bars: int = 1) -> torch.Tensor:
    """All n_bars-long windows (hop: hop_bars) of every piece: long tensor (N, steps, 4).

    Windows with a bar in which all four voices are silent (the instrumental interludes of some
    cantata movements) are left out: there is no singing in them to learn from. A bar where
    only some voices rest is kept; the empty-bar metric should see those.
    """
    length = n_bars * STEPS_PER_BAR
    windows = [window for roll in chorales.rolls
               for start in range(0, len(roll) - length + 1, hop_bars * STEPS_PER_BAR)
               if not _has_silent_bar(window := roll[start:start + length])]
    if not windows:
        raise ValueError(f"No piece is {n_bars} bars long.")
    import torch

    return torch.from_numpy(np.stack(windows)).long()


def openings(pieces: ChoraleSet, bars: int) -> list[tuple[str, np.ndarray]]:
    """(name, roll of its first `bars` bars) of every piece at least that long whose opening bars all
    have singing (the rolls are read-only): prompts for a model that continues music."""
    steps = bars * STEPS_PER_BAR
    found = []
    for name, roll in zip(pieces.names, pieces.rolls):
        opening = np.array(roll[:steps], dtype=np.int64)
        if len(opening) == steps and not (opening.reshape(bars, -1) == REST).all(axis=1).any():
            opening.setflags(write=False)
            found.append((name, opening))
    return found


@functools.lru_cache(maxsize=None)
def held_out_openings(bars: int = 2) -> tuple[tuple[str, np.ndarray], ...]:
    """The openings (first `bars` bars, 1 to 16) of the held-out Bach chorales, the pieces no model here
    trained on, as (name, roll (bars * 16, 4)), read-only; read once per process (no torch needed, so the
    app can list them while it is being built)."""
    if not isinstance(bars, int) or not 1 <= bars <= 16:
        raise ValueError(f"An opening is 1 to 16 bars long, not {bars!r}.")
    return tuple(openings(load_bach().split()[1], bars))


def _has_silent_bar(window: np.ndarray) -> bool:
    return bool((window.reshape(-1, STEPS_PER_BAR * window.shape[1]) == REST).all(axis=1).any())


def transpose(rolls: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """Shift each phrase (N, steps, 4) by its own number of semitones; rests stay rests.
    Phrases that would leave the pitch range are returned unshifted."""
    import torch

    shift = semitones.view(-1, 1, 1).to(rolls.dtype)
    moved = torch.where(rolls == REST, rolls, rolls + shift)
    sounding = rolls != REST
    fits = ((moved >= 1) | ~sounding).all(dim=(1, 2)) & ((moved < N_PITCHES) | ~sounding).all(dim=(1, 2))
    return torch.where(fits.view(-1, 1, 1), moved, rolls)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Parse the music21 Bach chorales into a piano-roll cache.")
    parser.add_argument("--out", default=str(SHIPPED_CACHE))
    parser.add_argument("--folder", help="parse this folder of MIDI/MusicXML files instead of the Bach corpus")
    args = parser.parse_args(argv)
    chorales = load_folder(args.folder) if args.folder else parse_bach_corpus()
    path = save_set(chorales, args.out)
    steps = sum(len(r) for r in chorales.rolls)
    print(f"wrote {path}: {len(chorales.rolls)} pieces, {steps // STEPS_PER_BAR} bars, "
          f"{path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
