"""The Pi: mixed audio piped to ``aplay``, which plays through the system's audio server.

On the image ALSA's default device is PipeWire (pipewire-alsa), whose echo-cancel module removes
what the speaker plays from the microphone signal, so announcements are not sent to the other side.
``aplay`` blocks while the device buffer is full, which paces the mixer.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess

import numpy as np

from appliance.audio import AudioError
from appliance.audio.mixer import MixingSpeaker

# Small enough that an announcement starts promptly, large enough not to underrun on a busy Pi.
BUFFER_MICROSECONDS = 100_000
# aplay fails within this time when the device cannot be opened.
STARTUP_CHECK_SECONDS = 0.3


class AplaySpeaker(MixingSpeaker):
    def __init__(self, device: str = "default", *, duck_gain: float = 0.25) -> None:
        super().__init__(duck_gain=duck_gain, paced=False)
        aplay = shutil.which("aplay")
        if aplay is None:
            raise AudioError("aplay not found: install the alsa-utils package")
        args = [aplay, "-q", "-D", device, "-t", "raw", "-f", "S16_LE", "-c", "1"]
        args += ["-r", str(self.sample_rate), f"--buffer-time={BUFFER_MICROSECONDS}", "-"]
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise AudioError(f"cannot start aplay: {e.strerror}") from e
        try:
            self._proc.wait(timeout=STARTUP_CHECK_SECONDS)
        except subprocess.TimeoutExpired:
            self.start()  # still running: the device is open
            return
        raise AudioError(f"aplay cannot play: {self._why()} (check the sound card and [speech] device)")

    def _output(self, block: np.ndarray) -> None:
        try:
            if self._proc.stdin is None or self._proc.poll() is not None:
                raise BrokenPipeError
            self._proc.stdin.write(block.astype("<i2").tobytes())
        except BrokenPipeError as e:
            raise AudioError(
                f"aplay stopped: {self._why()} (check the sound card and [speech] device)"
            ) from e

    def _why(self) -> str:
        try:
            self._proc.wait(timeout=2)
            err = self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
        except (subprocess.TimeoutExpired, OSError):
            return "no reason given"
        lines = [line for line in err.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self._proc.returncode}"

    def _close_output(self) -> None:
        if self._proc.stdin is not None:
            # aplay may already be gone; the wait below collects its exit either way.
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=2)
