"""The Pi's microphone through PortAudio (sounddevice), imported only here.

Not exercised on the development machine (it has no sound card); :func:`open_input` falls back to
the WAV file or silence there, and says why.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import numpy as np

from appliance.audio import SAMPLE_RATE
from appliance.call import CallError
from appliance.call.media import AUDIO_SAMPLES, AudioInput, SilentInput, WavInput
from appliance.config import CallConfig

log = logging.getLogger(__name__)

MAX_BUFFERED_BLOCKS = 25  # half a second: older sound is dropped, the call stays live
# What a read may leave for the next one: the sound card's and the call's clocks jitter by a block or
# so, but a stall or a card a little fast must not become a delay that lasts the rest of the call.
MAX_LEFT_SAMPLES = 2 * AUDIO_SAMPLES


class Blocks:
    """The sound card's blocks (from its thread) for the call's reads, never far behind the card."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque(maxlen=MAX_BUFFERED_BLOCKS)
        self._lock = threading.Lock()
        self._pending = np.zeros(0, np.int16)

    def push(self, block: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(block)

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

    def __init__(self) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as e:
            raise CallError(f"no microphone support ({e}): install libportaudio2 and the [pi] extra") from e
        self._blocks = Blocks()
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
        return self._blocks.read(samples)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def open_input(cfg: CallConfig) -> AudioInput:
    """The configured call audio source; ``auto`` takes the microphone, else the file, else silence."""
    if cfg.audio_in == "none":
        return SilentInput()
    if cfg.audio_in == "wav":
        if cfg.audio_file is None:
            raise CallError("[call] audio_in = wav needs audio_file = a WAV file")
        return WavInput(cfg.audio_file)
    try:
        return Microphone()
    except CallError as e:
        if cfg.audio_in == "microphone":
            raise
        if cfg.audio_file is not None:
            log.warning("%s; sending %s as call audio instead", e, cfg.audio_file)
            return WavInput(cfg.audio_file)
        log.warning("%s; the call sends silence", e)
        return SilentInput()
