"""A short two-note chime per emotion, generated (not recorded), for people who prefer no words.

Pleasant expressions rise, unpleasant ones fall or sit low, so the contour itself carries meaning;
every label has its own pair of notes. A label the table does not know gets a pair derived from its
name, so a new model card still gives distinct chimes.
"""

from __future__ import annotations

import zlib

import numpy as np

TONE_RATE = 48000
NOTE_SECONDS = 0.14
GAP_SECONDS = 0.03
AMPLITUDE = 9000
FADE_SECONDS = 0.01  # no clicks at the note edges

NOTES_HZ: dict[str, tuple[float, float]] = {
    "neutral": (440.0, 440.0),
    "happiness": (523.3, 784.0),
    "surprise": (659.3, 1046.5),
    "sadness": (392.0, 311.1),
    "anger": (233.1, 220.0),
    "disgust": (293.7, 277.2),
    "fear": (880.0, 830.6),
    "contempt": (349.2, 329.6),
}


def notes_for(label: str) -> tuple[float, float]:
    if label in NOTES_HZ:
        return NOTES_HZ[label]
    seed = zlib.crc32(label.encode("utf-8"))
    return 300.0 + seed % 600, 300.0 + (seed >> 10) % 600


def _note(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * TONE_RATE)) / TONE_RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / FADE_SECONDS)
    return np.sin(2 * np.pi * freq * t) * envelope


def chime(label: str) -> np.ndarray:
    """int16 mono samples at :data:`TONE_RATE` of the chime for ``label``."""
    first, second = notes_for(label)
    gap = np.zeros(round(GAP_SECONDS * TONE_RATE))
    wave = np.concatenate([_note(first, NOTE_SECONDS), gap, _note(second, NOTE_SECONDS)])
    return np.round(wave * AMPLITUDE).astype(np.int16)
