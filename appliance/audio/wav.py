"""Software mode: everything the speaker would play, mixed, written in real time to a WAV file."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from appliance.audio import AudioError
from appliance.audio.mixer import MixingSpeaker
from appliance.events import EventBus


class WavSpeaker(MixingSpeaker):
    """Writes 16-bit mono at 48 kHz; the file is complete (valid header) once closed.

    A unit left running in software mode would fill the disk (about 96 kB a second), so after
    ``max_seconds`` the file starts again from empty.
    """

    def __init__(
        self,
        path: Path,
        *,
        duck_gain: float = 0.25,
        max_seconds: float = 3600.0,
        events: EventBus | None = None,
    ) -> None:
        super().__init__(duck_gain=duck_gain, paced=True, events=events)
        self.path = path
        self._max_frames = round(max_seconds * self.sample_rate)
        self._wav: wave.Wave_write
        self._open_output()
        self.start()

    def _open_output(self) -> None:
        """Start the file from empty: at start-up, at the size limit and after a failed write."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 (closed in _close_output)
        except OSError as e:
            raise AudioError(f"cannot write the speaker's WAV file {self.path}: {e.strerror}") from e
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav, self._frames = wav, 0

    def _output(self, block: np.ndarray) -> None:
        if self._frames + block.size > self._max_frames:
            self._wav.close()
            self._open_output()
        self._wav.writeframesraw(block.astype("<i2").tobytes())
        self._frames += block.size

    def _close_output(self) -> None:
        self._wav.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The samples (int16 mono) and rate of a WAV file, e.g. one written by :class:`WavSpeaker`."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise AudioError(f"{path} is not 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy(), w.getframerate()
