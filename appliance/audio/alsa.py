"""The Pi: mixed audio piped to ``aplay``, which plays through the system's audio server.

On the image ALSA's default device is PipeWire (pipewire-alsa), whose echo-cancel module removes
what the speaker plays from the microphone signal, so announcements are not sent to the other side.

Pacing: the device paces ``aplay``, and what waits in the pipe to it is latency. A Linux pipe holds
64 KiB by default (0.68 s of this audio; 256 KiB, 2.7 s, with a Pi 5's 16 KiB pages) and an unpaced
mixer keeps it full, so an announcement would start that late and call audio would lag by as much,
past the mixer's backlog limit. The pipe is shrunk to one page, unbuffered, and the mixer writes
only while aplay has less than ``MAX_QUEUED_SECONDS`` waiting in it.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import shutil
import subprocess
import termios
import time

import numpy as np

from appliance.audio import AudioError
from appliance.audio.mixer import MixingSpeaker
from appliance.events import EventBus

log = logging.getLogger(__name__)

# Small enough that an announcement starts promptly, large enough not to underrun on a busy Pi.
BUFFER_MICROSECONDS = 100_000
# aplay fails within this time when the device cannot be opened.
STARTUP_CHECK_SECONDS = 0.3
# At most this much audio waits in the pipe for aplay (two mixer blocks: aplay never starves).
MAX_QUEUED_SECONDS = 0.02
PIPE_BYTES = 4096  # asked of the kernel, which rounds it up to one page
BYTES_PER_SAMPLE = 2


class AplaySpeaker(MixingSpeaker):
    def __init__(
        self, device: str = "default", *, duck_gain: float = 0.25, events: EventBus | None = None
    ) -> None:
        super().__init__(duck_gain=duck_gain, paced=False, events=events)
        aplay = shutil.which("aplay")
        if aplay is None:
            raise AudioError("aplay not found: install the alsa-utils package")
        self._args = [aplay, "-q", "-D", device, "-t", "raw", "-f", "S16_LE", "-c", "1"]
        self._args += ["-r", str(self.sample_rate), f"--buffer-time={BUFFER_MICROSECONDS}", "-"]
        self._max_queued = round(MAX_QUEUED_SECONDS * self.sample_rate) * BYTES_PER_SAMPLE
        self._open_output()
        self.start()

    def _open_output(self) -> None:
        """Start aplay; at start-up and again whenever it has ended (the mixer reopens the output)."""
        try:
            # Unbuffered: Python's 8 KiB write buffer would hold back 85 ms of audio.
            self._proc = subprocess.Popen(
                self._args, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        except OSError as e:
            raise AudioError(f"cannot start aplay: {e.strerror}") from e
        self.pipe_bytes = self._shrink_pipe()
        try:
            self._proc.wait(timeout=STARTUP_CHECK_SECONDS)
        except subprocess.TimeoutExpired:
            return  # still running: the device is open
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
        self._wait_for_room()

    def _shrink_pipe(self) -> int:
        """The pipe's size after asking for one page."""
        assert self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError as e:  # only a kernel without pipe resizing: the queue limit still holds
            log.warning("cannot shrink the pipe to aplay (%s); the queue limit still applies", e)
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

    def queued_bytes(self) -> int:
        """Bytes written to aplay that it has not read yet."""
        assert self._proc.stdin is not None
        count = array.array("i", [0])
        fcntl.ioctl(self._proc.stdin.fileno(), termios.FIONREAD, count)
        return count[0]

    def _wait_for_room(self) -> None:
        """Hold the mixer while more than MAX_QUEUED_SECONDS wait in the pipe (the device's pace)."""
        rate = self.sample_rate * BYTES_PER_SAMPLE
        while not self._stop.is_set() and self._proc.poll() is None:
            excess = self.queued_bytes() - self._max_queued
            if excess <= 0:
                return
            time.sleep(excess / rate)

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
