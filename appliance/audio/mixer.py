"""The mixing speaker: a real-time thread that mixes call audio and one announcement at a time.

Call audio arrives in chunks from the call's asyncio loop (``write_call`` never blocks); an
announcement is handed over by ``play``, which blocks its caller until the last sample has gone to
the output. While an announcement plays the call audio is lowered (ducked) with a short ramp, so
the words are heard over the conversation without clicks. The owner's volume scales the whole mix,
ramped across one block when it changes. Backends only provide where the samples go
(``_open_output``, ``_output``, ``_close_output``).

When the output fails (aplay ends because PipeWire restarted or the USB sound card was replugged),
the speaker reopens it by itself (``timing.backoff``: 1 s, then twice as long each time up to 30 s), and
publishes ``audio.unavailable`` and then ``audio.recovered``: a unit left alone for months must not
stay mute until someone restarts it. An output that opens and fails again soon (a faulty card) is
one outage: ``audio.recovered`` waits until it has played for ``RECOVERED_SECONDS``, and the delay
keeps growing until it has played for ``HEALTHY_SECONDS``. Call audio waiting when the output
fails is dropped: played after the outage, it could be the voice of a call already over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from appliance.audio import SAMPLE_RATE, AudioError, resample
from appliance.events import EventBus
from appliance.timing import Pacer, backoff

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.01
# Call audio beyond this much is dropped, oldest first: late audio is worse than a gap.
MAX_CALL_BACKLOG_SECONDS = 0.5
# Call audio that stayed queued beyond CALL_TARGET_SECONDS all through a DRAIN_SECONDS window is
# dropped down to it: after a burst (the network stalled, then delivered at once) arrivals and
# playback run at the same rate, and the other person's voice would stay that late all call.
CALL_TARGET_SECONDS = 0.06
DRAIN_SECONDS = 1.0
# ``play`` counts the output as stopped after this many checks in a row without a block written.
# Counted in checks, not seconds: a paused process (SIGSTOP, a Pi starved of CPU) wakes to find the
# clock far ahead and its output merely behind, which is not a broken speaker.
STALL_CHECK_SECONDS = 0.5
STALL_CHECKS = 10
# The newest announcements kept in ``played`` (tests and benchmarks read them); a unit that runs for
# months must not keep every one.
HISTORY = 100
# Played this long without failing, a reopened output counts as back (and is said to be).
RECOVERED_SECONDS = 2.0
# Played this long without failing, the next failure's retries start again at 1 s.
HEALTHY_SECONDS = 60.0
# Call audio stays ducked this long after an announcement: the next sentence of a row (espeak-ng
# takes 25-80 ms to make it) would otherwise start after a swell of the other person's voice.
DUCK_HOLD_SECONDS = 0.15


def volume_gain(percent: int) -> float:
    """The owner's volume (0-100) as a gain: cubic, as PipeWire's and ALSA's volume controls map
    their percentages, so that equal steps sound like equal steps; 100 is full scale."""
    return (min(max(percent, 0), 100) / 100) ** 3


@dataclass
class Played:
    """One announcement as it went out: where in the output stream and when, in wall-clock time."""

    start_s: float  # position of its first sample in the output stream
    duration_s: float
    started_at: float = 0.0  # time.monotonic() when its first sample was output
    done: threading.Event = field(default_factory=threading.Event)


class MixingSpeaker:
    """Base of every :class:`~appliance.audio.Speaker` backend; subclasses open, feed and close the output."""

    def __init__(
        self,
        *,
        duck_gain: float = 0.25,
        duck_ramp_s: float = 0.02,
        paced: bool = True,
        events: EventBus | None = None,
    ) -> None:
        self.sample_rate = SAMPLE_RATE
        self._duck_gain = duck_gain
        self._ramp_step = 1.0 / max(1.0, duck_ramp_s * SAMPLE_RATE)
        self._paced = paced  # a file has no clock of its own; a sound device blocks by itself
        self._block = round(BLOCK_SECONDS * SAMPLE_RATE)
        self._lock = threading.Lock()
        self._play_lock = threading.Lock()
        self._call: deque[np.ndarray] = deque()
        self._call_len = 0
        self._call_floor = 0  # the least call audio queued in this drain window (samples)
        self._floor_blocks = 0  # blocks output in this drain window
        self._current: tuple[Played, np.ndarray] | None = None
        self._pos = 0  # samples of the current announcement already output
        self._gain = 1.0
        self._ducked_until = 0  # the sample (of _written) up to which call audio stays ducked
        self._volume = self._volume_target = 1.0
        self._written = 0  # samples output so far
        self.played: list[Played] = []
        self._failure = ""  # why the output is down, while it is
        self._attempt = 0  # reopenings in this outage (it ends once HEALTHY_SECONDS played)
        self._reopened_at: float | None = None  # while an outage is not yet over: when it was reopened
        self._said_back = False  # audio.recovered published since the output was last reopened
        self._events = events or EventBus()  # a speaker on its own (tests, benchmarks) tells no one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)

    def start(self) -> MixingSpeaker:
        self._thread.start()
        return self

    def _open_output(self) -> None:
        """Open the device or file; raises (AudioError, OSError...) when it cannot."""
        raise NotImplementedError

    def _output(self, block: np.ndarray) -> None:
        raise NotImplementedError

    def _close_output(self) -> None:
        raise NotImplementedError

    def set_volume(self, percent: int) -> None:
        with self._lock:
            self._volume_target = volume_gain(percent)
            if self._current is None and not self._call:  # on silence: no click to ramp away, and an
                self._volume = self._volume_target  # announcement next starts at the new volume

    def write_call(self, pcm: np.ndarray) -> None:
        chunk = np.asarray(pcm, dtype=np.int16).reshape(-1)
        limit = round(MAX_CALL_BACKLOG_SECONDS * self.sample_rate)
        chunk = chunk[-limit:]  # a chunk longer than the backlog keeps its newest part only
        with self._lock:
            if self._failure:
                return  # no output: kept, it would play after the outage, maybe after the call
            self._call.append(chunk.copy())
            self._call_len += chunk.size
            while self._call_len - self._call[0].size >= limit:
                self._call_len -= self._call.popleft().size

    def play(self, pcm: np.ndarray, sample_rate: int) -> float:
        samples = resample(pcm, sample_rate, self.sample_rate)
        with self._play_lock:  # one announcement at a time: two are never mixed together
            entry = Played(self._written / self.sample_rate, samples.size / self.sample_rate)
            with self._lock:
                self._check()
                self._current, self._pos = (entry, samples), 0
            self._wait_played(entry)
            with self._lock:
                self._check()
            return entry.duration_s

    def _wait_played(self, entry: Played) -> None:
        """Until ``entry`` has gone out, or the output has made no progress for STALL_CHECKS checks."""
        written, still = self._written, 0
        while not entry.done.wait(STALL_CHECK_SECONDS):
            with self._lock:
                moved, written = self._written != written, self._written
            still = 0 if moved else still + 1
            if still >= STALL_CHECKS or not self._thread.is_alive():
                raise AudioError("the speaker stopped playing: check the audio output")

    def _check(self) -> None:
        if self._failure:
            raise AudioError(self._failure)
        if self._stop.is_set():
            raise AudioError("the speaker is closed")

    @property
    def speaking(self) -> bool:
        with self._lock:
            return self._current is not None

    def _take_call(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        filled = 0
        while filled < n and self._call:
            chunk = self._call[0]
            take = min(n - filled, chunk.size)
            out[filled : filled + take] = chunk[:take]
            filled += take
            self._call_len -= take
            if take == chunk.size:
                self._call.popleft()
            else:
                self._call[0] = chunk[take:]
        return out

    def _drain_call(self) -> None:
        """Once a window, drop (oldest first) what stayed queued beyond the target all through it."""
        self._call_floor = min(self._call_floor, self._call_len)
        self._floor_blocks += 1
        if self._floor_blocks * self._block < DRAIN_SECONDS * self.sample_rate:
            return
        excess = self._call_floor - round(CALL_TARGET_SECONDS * self.sample_rate)
        if excess > 0:
            self._take_call(excess)
        self._call_floor, self._floor_blocks = self._call_len, 0

    def _mix(self) -> tuple[np.ndarray, Played | None]:
        """The next block of output and the announcement that started in it, if one did."""
        n = self._block
        with self._lock:
            call = self._take_call(n)
            self._drain_call()
            if self._current is not None:
                self._ducked_until = self._written + n + round(DUCK_HOLD_SECONDS * self.sample_rate)
            target = self._duck_gain if self._written < self._ducked_until else 1.0
            gains = np.clip(
                self._gain + np.sign(target - self._gain) * self._ramp_step * np.arange(1, n + 1),
                min(self._gain, target),
                max(self._gain, target),
            )
            self._gain = float(gains[-1])
            mixed = call * gains
            started = None
            if self._current is not None:
                entry, samples = self._current
                if self._pos == 0:
                    started = entry
                    entry.start_s = self._written / self.sample_rate
                part = samples[self._pos : self._pos + n]
                mixed[: part.size] += part
                self._pos += part.size
                if self._pos >= samples.size:
                    self._current = None
                    self.played.append(entry)
                    del self.played[:-HISTORY]
                    entry.done.set()
            mixed *= np.linspace(self._volume, self._volume_target, n + 1, dtype=np.float32)[1:]
            self._volume = self._volume_target
            self._written += n
        return np.clip(np.round(mixed), -32768, 32767).astype(np.int16), started

    def _run(self) -> None:
        # Far behind (the machine busy, the output reopened): it carries on from now, no burst.
        pacer = Pacer(self.sample_rate / self._block)
        try:
            while not self._stop.is_set():
                if self._paced:
                    pacer.wait()
                block, started = self._mix()
                if started is not None:
                    started.started_at = time.monotonic()
                try:
                    self._output(block)
                except Exception as e:  # whatever the output raises (struct.error too) is a failed output
                    self._reopen(e)
                    continue
                self._note_playing()
        finally:
            self._release_waiter()

    def _reopen(self, error: Exception) -> None:
        """Reopen the failed output, backing off, until it plays again or the speaker is closed.

        While it is down ``play`` raises at once: those announcements are dropped, not queued, since
        they would be stale by the time a replugged speaker could say them.
        """
        log.error("audio output failed: %s", error, exc_info=not isinstance(error, OSError | AudioError))
        with self._lock:
            self._failure = f"audio output failed: {error}"
            self._call.clear()
            self._call_len = 0
        self._release_waiter()  # the announcement that was playing is lost: its play() raises
        # A new outage, or the same one back after the output was said to work: said. The same one
        # back sooner (a card that opens, then fails) is not, and waits longer before each retry.
        self._attempt = 0 if self._reopened_at is None else self._attempt + 1
        if self._reopened_at is None or self._said_back:
            self._events.publish("audio.unavailable", f"no speaker: {self._failure}", reason=self._failure)
        self._said_back = False
        while not self._stop.wait(backoff(self._attempt)):
            try:
                self._close_output()
                self._open_output()
            except Exception as e:
                self._attempt += 1
                log.warning("audio output still failing (%s); next try in %.0f s", e, backoff(self._attempt))
                continue
            with self._lock:
                self._failure = ""
            log.info("audio output open again")
            self._reopened_at = time.monotonic()
            return
        self._reopened_at = None  # closed while out: nothing to say back

    def _note_playing(self) -> None:
        """After an outage: the output is back once it has played RECOVERED_SECONDS, and the outage
        over (its retries counted from the start again) once it has played HEALTHY_SECONDS."""
        if self._reopened_at is None:
            return
        played = time.monotonic() - self._reopened_at
        if not self._said_back and played >= RECOVERED_SECONDS:
            log.info("audio output works again")
            self._events.publish("audio.recovered", "the speaker works again")
            self._said_back = True
        if played >= HEALTHY_SECONDS:
            self._reopened_at = None

    def _release_waiter(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current[0].done.set()
                self._current = None

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._release_waiter()
        self._close_output()
