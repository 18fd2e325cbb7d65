"""The Pi: mixed audio piped to ``aplay``, which plays through the system's audio server.

On the image ALSA's default device is PipeWire (pipewire-alsa), whose echo-cancel module removes
what the speaker plays from the microphone signal, so announcements are not sent to the other side.

Pacing: the device paces ``aplay``, and what waits in the pipe to it is latency. A Linux pipe holds
64 KiB by default (0.68 s of this audio; 256 KiB, 2.7 s, with a Pi 5's 16 KiB pages) and an unpaced
mixer keeps it full, so an announcement would start that late and call audio would lag by as much,
past the mixer's backlog limit. The pipe is shrunk to one page, unbuffered, and the mixer writes
only while aplay has less than ``MAX_QUEUED_SECONDS`` waiting in it.

aplay writes a line to stderr at every underrun, even with ``-q``; a thread reads them (the last few
kept for the reason aplay gives), since a full stderr pipe would stop aplay reading its input. An
aplay that takes nothing for ``STALLED_SECONDS`` (that, or an audio server that hangs) is a failed
output: the mixer starts it again.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import shutil
import subprocess
import termios
import threading
import time
from collections import deque

import numpy as np

from appliance import platform
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
# aplay has taken nothing from the pipe for this long: it is stuck, not merely paced by the device.
STALLED_SECONDS = 2.0
STALLED_LOOKS = 20  # and at least this many looks at the pipe in a row
ERROR_LINES = 5  # of aplay's stderr, the last kept (its reason is the last)
NO_CARD = "no sound card: plug in the speaker"


class AplaySpeaker(MixingSpeaker):
    """``wait_for_card``: aplay is started only while the kernel lists a sound card (``[speech]
    output = "auto"``); with none, the output is down with that reason and retried as any outage."""

    def __init__(
        self,
        device: str = "default",
        *,
        duck_gain: float = 0.25,
        events: EventBus | None = None,
        wait_for_card: bool = False,
    ) -> None:
        super().__init__(duck_gain=duck_gain, paced=False, events=events)
        aplay = shutil.which("aplay")
        if aplay is None:
            raise AudioError("aplay not found: install the alsa-utils package")
        self._args = [aplay, "-q", "-D", device, "-t", "raw", "-f", "S16_LE", "-c", "1"]
        self._args += ["-r", str(self.sample_rate), f"--buffer-time={BUFFER_MICROSECONDS}", "-"]
        self._max_queued = round(MAX_QUEUED_SECONDS * self.sample_rate) * BYTES_PER_SAMPLE
        self._wait_for_card = wait_for_card
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._open_output()
        except AudioError as e:
            # Not playing at start (the audio server not up yet, no card until a USB speaker is
            # plugged in): an outage as one later is, which the mixer retries and says
            # (audio.unavailable, then audio.recovered once it plays); the unit would otherwise stay
            # mute until restarted.
            log.error("%s; trying again", e)
        self.start()

    def _open_output(self) -> None:
        """Start aplay; at start-up and again whenever it has ended (the mixer reopens the output)."""
        if self._wait_for_card and not platform.sound_cards():
            raise AudioError(NO_CARD)
        self._spawn()
        self._check_started()

    def _spawn(self) -> None:
        try:
            # Unbuffered: Python's 8 KiB write buffer would hold back 85 ms of audio.
            self._proc = subprocess.Popen(
                self._args, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        except OSError as e:
            raise AudioError(f"cannot start aplay: {e.strerror}") from e
        self._errors: deque[str] = deque(maxlen=ERROR_LINES)
        self._reader = threading.Thread(target=self._read_errors, name="aplay-stderr", daemon=True)
        self._reader.start()
        self.pipe_bytes = self._shrink_pipe()

    def _check_started(self) -> None:
        try:
            self._aplay.wait(timeout=STARTUP_CHECK_SECONDS)
        except subprocess.TimeoutExpired:
            return  # still running: the device is open
        raise AudioError(f"aplay cannot play: {self._why()} (check the sound card and [speech] device)")

    @property
    def _aplay(self) -> subprocess.Popen[bytes]:
        """The aplay started last; none yet while there has been no card."""
        if self._proc is None:
            raise AudioError(NO_CARD)
        return self._proc

    def _output(self, block: np.ndarray) -> None:
        proc = self._aplay
        try:
            if proc.stdin is None or proc.poll() is not None:
                raise BrokenPipeError
            proc.stdin.write(block.astype("<i2").tobytes())
        except BrokenPipeError as e:
            raise AudioError(
                f"aplay stopped: {self._why()} (check the sound card and [speech] device)"
            ) from e
        self._wait_for_room()

    def _shrink_pipe(self) -> int:
        """The pipe's size after asking for one page."""
        assert self._aplay.stdin is not None
        fd = self._aplay.stdin.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError as e:  # only a kernel without pipe resizing: the queue limit still holds
            log.warning("cannot shrink the pipe to aplay (%s); the queue limit still applies", e)
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

    def queued_bytes(self) -> int:
        """Bytes written to aplay that it has not read yet."""
        assert self._aplay.stdin is not None
        count = array.array("i", [0])
        fcntl.ioctl(self._aplay.stdin.fileno(), termios.FIONREAD, count)
        return count[0]

    def _wait_for_room(self) -> None:
        """Hold the mixer while more than MAX_QUEUED_SECONDS wait in the pipe (the device's pace);
        raises AudioError when aplay has taken nothing for STALLED_SECONDS."""
        rate = self.sample_rate * BYTES_PER_SAMPLE
        queued, since, still = self.queued_bytes(), time.monotonic(), 0
        while not self._stop.is_set() and self._aplay.poll() is None:
            now_queued = self.queued_bytes()
            excess = now_queued - self._max_queued
            if excess <= 0:
                return
            if now_queued < queued:
                queued, since, still = now_queued, time.monotonic(), 0
            # Seconds and looks both: a process frozen and woken (SIGSTOP, a starved Pi) finds the
            # clock far ahead after a single look, which is not a stuck aplay.
            still += 1
            if still > STALLED_LOOKS and time.monotonic() - since > STALLED_SECONDS:
                raise AudioError(f"aplay stopped taking audio ({self._last_error() or 'no reason given'})")
            time.sleep(excess / rate)

    def _read_errors(self) -> None:
        """aplay's stderr, read as it comes: the underrun lines logged, the last lines kept."""
        stderr = self._aplay.stderr
        if stderr is None:
            return
        with contextlib.suppress(OSError, ValueError):  # closed under it at shutdown
            for raw in stderr:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self._errors.append(line)
                    log.debug("aplay: %s", line)

    def _last_error(self) -> str:
        return self._errors[-1] if self._errors else ""

    def _why(self) -> str:
        try:
            self._aplay.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "no reason given"
        self._reader.join(timeout=1)  # its last lines, written as it ended
        return self._last_error() or f"exit status {self._aplay.returncode}"

    def _close_output(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            # aplay may already be gone; the wait below collects its exit either way.
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=2)
        self._reader.join(timeout=1)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
