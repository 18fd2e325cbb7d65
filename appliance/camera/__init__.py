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
