"""The Pi's microphone through PortAudio (sounddevice), imported only here.

Not exercised on the development machine (it has no sound card); :func:`open_input` falls back to
the WAV file or silence there, and says why. A microphone that is missing, fails to open or stops
delivering sound is told to the owner (``microphone.unavailable``; ``microphone.recovered`` once it
delivers again): the other person hears silence, and nobody at this end would know.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from appliance.audio import SAMPLE_RATE
from appliance.call import CallError
from appliance.call.media import AUDIO_SAMPLES, AudioInput, SilentInput, WavInput
from appliance.config import CallConfig
from appliance.events import EventBus

log = logging.getLogger(__name__)

MAX_BUFFERED_BLOCKS = 25  # half a second: older sound is dropped, the call stays live
# What a read may leave for the next one: the sound card's and the call's clocks jitter by a block or
# so, but a stall or a card a little fast must not become a delay that lasts the rest of the call.
MAX_LEFT_SAMPLES = 2 * AUDIO_SAMPLES
# The card sends a block every 20 ms: none for this long is a microphone unplugged or a stream that
# PortAudio stopped after an error, not jitter.
STALL_SECONDS = 2.0


class MicrophoneWatch:
    """Tells the owner when the call's microphone does not work and when it works again; one per
    call engine, since each call opens the microphone anew."""

    def __init__(self, events: EventBus | None = None) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._down = False
        self._said = False  # its fault was said in this call (or, before any, since it failed)

    def new_call(self) -> None:
        """A call starts: a microphone still not working is said again, once in this call."""
        with self._lock:
            self._said = False

    def failed(self, reason: str) -> None:
        """Said once a call: each reconnect attempt opens the microphone anew, and it was said at
        every one, back to back for the 30 s a call tries to come back."""
        with self._lock:
            self._down = True
            said, self._said = self._said, True
        if not said and self._events is not None:
            message = f"the microphone is not working: {reason}"
            self._events.publish("microphone.unavailable", message, reason=reason)

    def works(self) -> None:
        with self._lock:
            was_down, self._down, self._said = self._down, False, False
        if was_down and self._events is not None:
            self._events.publish("microphone.recovered", "the microphone works again")


class Blocks:
    """The sound card's blocks (from its thread) for the call's reads, never far behind the card."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque(maxlen=MAX_BUFFERED_BLOCKS)
        self._lock = threading.Lock()
        self._pending = np.zeros(0, np.int16)
        self._pushed_at = time.monotonic()

    def push(self, block: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(block)
            self._pushed_at = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since the card's last block (since the stream opened, before the first)."""
        with self._lock:
            return time.monotonic() - self._pushed_at

    def read(self, samples: int) -> np.ndarray:
        """The next ``samples`` (silence where there are none yet), at most MAX_LEFT_SAMPLES behind
        the newest block: what is older is dropped."""
        with self._lock:
            chunks = [self._pending, *self._blocks]
            self._blocks.clear()
        pcm = np.concatenate(chunks)[-(samples + MAX_LEFT_SAMPLES) :]
        self._pending = pcm[samples:]
        out = pcm[:samples]
        return np.pad(out, (0, samples - out.size)) if out.size < samples else out


class Microphone:
    name = "microphone"

    def __init__(self, watch: MicrophoneWatch | None = None) -> None:
        """``watch`` hears when blocks stop coming and start again (none: nobody is told)."""
        try:
            import sounddevice
        except (ImportError, OSError) as e:
            raise CallError(f"no microphone support ({e}): install libportaudio2 and the [pi] extra") from e
        self._blocks = Blocks()
        self._watch, self._stalled = watch or MicrophoneWatch(), False
        try:
            self._stream = sounddevice.InputStream(
                samplerate=SAMPLE_RATE,
                channels=1,
                dtype="int16",
                blocksize=AUDIO_SAMPLES,
                callback=self._on_block,
            )
            self._stream.start()
        except sounddevice.PortAudioError as e:
            raise CallError(f"cannot open the microphone: {e} (is it plugged in?)") from e

    def _on_block(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self._blocks.push(indata[:, 0].copy())

    def read(self, samples: int) -> np.ndarray:
        self._check_delivering()
        return self._blocks.read(samples)

    def _check_delivering(self) -> None:
        """Told once when the card stops sending blocks, and once when it sends them again."""
        stalled = self._blocks.silent_for() > STALL_SECONDS
        if stalled == self._stalled:
            return
        self._stalled = stalled
        if stalled:
            self._watch.failed("the microphone stopped delivering sound")
        else:
            self._watch.works()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def open_input(cfg: CallConfig, watch: MicrophoneWatch | None = None) -> AudioInput:
    """The configured call audio source; ``auto`` takes the microphone, else the file, else silence.
    ``watch`` hears whether the microphone opened."""
    if cfg.audio_in == "none":
        return SilentInput()
    if cfg.audio_in == "wav":
        if cfg.audio_file is None:
            raise CallError("[call] audio_in = wav needs audio_file = a WAV file")
        return WavInput(cfg.audio_file)
    watch = watch or MicrophoneWatch()
    try:
        microphone = Microphone(watch)
    except CallError as e:
        watch.failed(str(e))
        if cfg.audio_in == "microphone":
            raise
        return _instead_of_the_microphone(cfg, e)
    watch.works()
    return microphone


def _instead_of_the_microphone(cfg: CallConfig, why: CallError) -> AudioInput:
    if cfg.audio_file is not None:
        log.warning("%s; sending %s as call audio instead", why, cfg.audio_file)
        return WavInput(cfg.audio_file)
    log.warning("%s; the call sends silence", why)
    return SilentInput()
