"""Software mode: everything the speaker would play, mixed, written in real time to a WAV file."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from appliance.audio import AudioError
from appliance.audio.mixer import MixingSpeaker


class WavSpeaker(MixingSpeaker):
    """Writes 16-bit mono at 48 kHz; the file is complete (valid header) once closed."""

    def __init__(self, path: Path, *, duck_gain: float = 0.25) -> None:
        super().__init__(duck_gain=duck_gain, paced=True)
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(str(path), "wb")  # noqa: SIM115 (closed in _close_output)
        except OSError as e:
            raise AudioError(f"cannot write the speaker's WAV file {path}: {e.strerror}") from e
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)
        self.start()

    def _output(self, block: np.ndarray) -> None:
        self._wav.writeframesraw(block.astype("<i2").tobytes())

    def _close_output(self) -> None:
        self._wav.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The samples (int16 mono) and rate of a WAV file, e.g. one written by :class:`WavSpeaker`."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise AudioError(f"{path} is not 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy(), w.getframerate()
