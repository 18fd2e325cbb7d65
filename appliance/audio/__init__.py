"""Audio out: what the unit's speaker plays, call audio and announcements mixed, with ducking.

Every backend implements :class:`Speaker`. The mixing (call audio lowered while an announcement
plays, one announcement at a time) lives in :mod:`appliance.audio.mixer`; a backend only says where
the mixed samples go: a WAV file in real time (:mod:`appliance.audio.wav`, software mode) or the
system's audio server through ``aplay`` (:mod:`appliance.audio.alsa`, the Pi).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SAMPLE_RATE = 48000


class AudioError(Exception):
    """The speaker cannot play; the message says what to check."""


class Speaker(Protocol):
    sample_rate: int

    def write_call(self, pcm: np.ndarray) -> None:
        """Queue int16 mono call audio (any chunk size) at ``sample_rate``; never blocks."""

    def play(self, pcm: np.ndarray, sample_rate: int) -> float:
        """Play an int16 mono announcement or tone; blocks until played, returns the seconds played."""

    def set_volume(self, percent: int) -> None:
        """The owner's volume, 0 (silent) to 100 (full scale), for everything played from now on."""

    def close(self) -> None:
        """Stop playing and release the device or file."""


def resample(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``pcm`` (int16 mono) at ``target`` Hz; linear interpolation is enough for speech and tones."""
    samples = np.asarray(pcm, dtype=np.int16).reshape(-1)
    if rate == target or samples.size == 0:
        return samples.copy()
    n = round(samples.size * target / rate)
    positions = np.arange(n) * (rate / target)
    out = np.interp(positions, np.arange(samples.size), samples.astype(np.float32))
    result: np.ndarray = np.round(out).astype(np.int16)
    return result
