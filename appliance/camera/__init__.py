"""Camera sources: one small interface, one module per backend, chosen by config.

Every source yields timestamped BGR frames (numpy) from ``read()`` and releases the device in
``close()``. :class:`~appliance.camera.capture.Capture` runs one in a thread, keeps only the
newest frame and reopens lost devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# A paced source this far behind was not read meanwhile (a paused capture, a real camera working):
# it goes on from now, as the audio mixer does, instead of drawing the missed frames at full CPU.
MAX_LAG_SECONDS = 0.2


class CameraError(Exception):
    """The camera cannot be opened or stopped delivering; the message says what to check."""


class EndOfStream(CameraError):
    """A file source reached its end and does not loop."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # uint8 HxWx3, BGR (OpenCV's order)
    index: int  # counts from 0 for each capture
    position: float  # seconds into the source (file time for files, since open otherwise)
    t: float = field(default_factory=time.monotonic)  # when it was captured


class FrameSource(Protocol):
    name: str

    def read(self) -> Frame:
        """Block until the next frame; raise :class:`CameraError` when the source fails."""
        ...

    def close(self) -> None: ...


class Pacer:
    """Spaces successive frames ``1 / fps`` apart in real time."""

    def __init__(self, fps: float) -> None:
        self._period = 1 / fps
        self._due = time.monotonic()

    def wait(self) -> None:
        """Sleep until the next frame is due."""
        delay = self._due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -MAX_LAG_SECONDS:
            self._due = time.monotonic()
        self._due += self._period
