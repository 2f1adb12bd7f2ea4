"""MIDI to sound: each voice as its General MIDI instrument through FluidSynth, wherever the lab runs.

FluidSynth is Debian's `fluidsynth` (libfluidsynth) driven through pip's `pyfluidsynth`, which
pretty_midi uses; the SoundFont is Debian's `timgm6mb-soundfont` or any other General MIDI one
(packages.txt installs both on Hugging Face Spaces, tests/install.sh on a test machine). Where they
are missing, pretty_midi's additive synthesis plays every instrument with one tone, and
find_soundfont() returning None is how the UI knows to say so. Free of torch, so the app's layout
can ask without loading any model code.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # plenty for voices (fundamentals below 1.1 kHz) and ~1.4x cheaper than 22.05 kHz
SOUNDFONT_ENV = "GENLAB_SOUNDFONT"  # a .sf2 of your choice, tried first
# Debian's General MIDI SoundFonts (timgm6mb-soundfont, fluid-soundfont-gm; default-GM is the alternatives
# link they set), the 6 MB one first: FluidSynth reads the whole file for every piece it plays.
SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
                   "/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/default-GM.sf3",
                   "/usr/share/soundfonts/default.sf2")


@functools.lru_cache(maxsize=1)
def _fluidsynth_loads() -> bool:
    # Asked once per process: a failed import is retried on every call, and each try searches for the library.
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth: ImportError without libfluidsynth too)
    except (ImportError, OSError):
        return False
    return True


def find_soundfont() -> str | None:
    """The General MIDI SoundFont FluidSynth will play, or None when FluidSynth (the library and pyfluidsynth,
    which pretty_midi uses) or every SoundFont is missing: then the instruments cannot be heard."""
    if not _fluidsynth_loads():
        return None
    spec = importlib.util.find_spec("pretty_midi")  # pretty_midi ships TimGM6mb.sf2: the last resort
    bundled = Path(spec.origin).with_name("TimGM6mb.sf2") if spec and spec.origin else None
    for path in (os.environ.get(SOUNDFONT_ENV), *SOUNDFONT_PATHS, bundled):
        if path and Path(path).is_file():
            return str(path)
    return None


def _soft_wave(phase: np.ndarray) -> np.ndarray:
    # A sine with two quiet overtones: closer to a reed than a pure sine, and voices blend.
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)


def synthesize(pm, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """MIDI -> mono float32 audio in [-1, 1]: each voice's General MIDI instrument through FluidSynth, or, where
    find_soundfont() finds none, pretty_midi's additive synthesis (one tone for every instrument)."""
    if not any(instrument.notes for instrument in pm.instruments):  # rests only: pretty_midi gives NaN or nothing
        return np.zeros(sample_rate, dtype=np.float32)
    soundfont = find_soundfont()
    # Positional: pretty_midi 0.2.11 calls this argument `synthesizer`, earlier versions `sf2_path`.
    audio = pm.fluidsynth(sample_rate, soundfont) if soundfont else pm.synthesize(sample_rate, _soft_wave)
    peak = np.abs(audio).max()
    return (audio / peak * 0.8 if peak > 0 else audio).astype(np.float32)
