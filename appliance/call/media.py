"""The call's media tracks: the camera's newest frame out, a WAV file or microphone out, and the
remote unit's video and audio handed to the display and the speaker.

aiortc pulls each outgoing track with ``recv()``; the tracks pace themselves on the loop's clock and
never wait on a device (the capture thread and the microphone callback fill buffers beside it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio import SAMPLE_RATE, Speaker
from appliance.call import CallError
from appliance.camera import Frame
from appliance.camera.capture import Capture
from appliance.timing import Pacer

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
RATE_SLACK = 0.25  # camera timing jitter tolerated before a frame counts as too early
AUDIO_PTIME = 0.02
AUDIO_SAMPLES = int(SAMPLE_RATE * AUDIO_PTIME)
MAX_AUDIO_FILE_SECONDS = 600

FrameSink = Callable[[np.ndarray], None]


class CaptureTrack(MediaStreamTrack):
    """The shared camera capture as outgoing video, at the call's size and at most its rate.

    Each frame goes out as soon as it is captured (sampling on a clock of its own would add up to
    a frame interval of latency); a camera faster than ``fps`` has frames skipped by capture time."""

    kind = "video"

    def __init__(self, capture: Capture, width: int, height: int, fps: float) -> None:
        super().__init__()
        self._capture, self._size, self._period = capture, (width, height), 1.0 / fps
        self._black = np.zeros((height, width, 3), np.uint8)
        self._start = 0.0
        self._due = 0.0
        self._index = -1

    async def recv(self) -> av.VideoFrame:
        frame = await self._next_frame()
        now = time.monotonic()
        self._start = self._start or now
        out = av.VideoFrame.from_ndarray(
            self._fit(self._black if frame is None else frame.image), format="bgr24"
        )
        out.pts = round((now - self._start) * VIDEO_CLOCK)
        out.time_base = Fraction(1, VIDEO_CLOCK)
        return out

    async def _next_frame(self) -> Frame | None:
        while True:
            frame = await asyncio.to_thread(self._capture.wait_newer, self._index, 2 * self._period)
            if frame is None:  # stalled or ended: repeat the last picture at the call's rate
                await asyncio.sleep(self._period)
                return self._capture.latest()
            self._index = frame.index
            if frame.t >= self._due - RATE_SLACK * self._period:
                # Due times advance by the period, so the rate never exceeds fps over time;
                # after a pause they start again from now instead of sending a burst.
                self._due = max(self._due + self._period, frame.t - self._period / 2)
                return frame

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` scaled to fit the call's size, letterboxed rather than stretched."""
        (w, h), (iw, ih) = self._size, (image.shape[1], image.shape[0])
        if (iw, ih) == (w, h):
            return image
        scale = min(w / iw, h / ih)
        fw, fh = round(iw * scale), round(ih * scale)
        out = self._black.copy()
        x, y = (w - fw) // 2, (h - fh) // 2
        out[y : y + fh, x : x + fw] = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA)
        return out


class AudioInput(Protocol):
    name: str  # what the other unit hears: "microphone", "silence" or the file

    def read(self, samples: int) -> np.ndarray:
        """``samples`` int16 mono samples at 48 kHz, at once (silence where there is no sound)."""
        ...

    def close(self) -> None: ...


class SilentInput:
    name = "silence"

    def read(self, samples: int) -> np.ndarray:
        return np.zeros(samples, np.int16)

    def close(self) -> None:
        pass


class WavInput:
    """Software mode's microphone: a sound file (any format av reads), looped."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._pcm = _decode_audio(path)
        self._pos = 0

    def read(self, samples: int) -> np.ndarray:
        idx = (self._pos + np.arange(samples)) % self._pcm.size
        self._pos = (self._pos + samples) % self._pcm.size
        return self._pcm[idx]

    def close(self) -> None:
        pass


def _decode_audio(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
                if sum(c.size for c in chunks) > MAX_AUDIO_FILE_SECONDS * SAMPLE_RATE:
                    break
    except (OSError, av.FFmpegError) as e:
        raise CallError(f"cannot read the call audio file {path}: {e} (set [call] audio_file)") from e
    if not chunks:
        raise CallError(f"{path} holds no audio (set [call] audio_file to a WAV file)")
    return np.concatenate(chunks).astype(np.int16)


class AudioInputTrack(MediaStreamTrack):
    """Outgoing call audio: 20 ms frames of 48 kHz mono from an :class:`AudioInput`."""

    kind = "audio"

    def __init__(self, source: AudioInput) -> None:
        super().__init__()
        self._source = source
        # After a stall of over a second it starts again instead of sending the missed frames at once.
        self._pacer = Pacer(1 / AUDIO_PTIME, max_lag_s=1.0)
        self._sent = 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(self._pacer.delay())
        n, self._sent = self._sent, self._sent + 1
        pcm = self._source.read(AUDIO_SAMPLES)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = n * AUDIO_SAMPLES
        frame.time_base = Fraction(1, SAMPLE_RATE)
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.close()


@dataclass
class ReceivedMedia:
    """What arrived from the other unit in this call (for the status page and the tests)."""

    frames: int = 0
    audio_samples: int = 0
    last_frame_t: float = 0.0


async def play_remote_video(track: MediaStreamTrack, sink: FrameSink, received: ReceivedMedia) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.VideoFrame):
            continue
        image = frame.to_ndarray(format="bgr24")
        received.frames += 1
        received.last_frame_t = time.monotonic()
        try:
            sink(image)
        except Exception:
            log.exception("the remote video sink failed; the call goes on")


async def play_remote_audio(track: MediaStreamTrack, speaker: Speaker, received: ReceivedMedia) -> None:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=speaker.sample_rate)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        for out in resampler.resample(frame):
            pcm = out.to_ndarray().reshape(-1)
            received.audio_samples += pcm.size
            speaker.write_call(pcm)
