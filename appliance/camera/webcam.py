"""A V4L2 / USB webcam through OpenCV, by index or device path."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from appliance.camera import CameraError, Frame

# USB cameras by their stable names. A Pi's CSI receiver (unicam) has /dev/video nodes too, often
# /dev/video0, but no entry here, so ``auto`` never opens it as a webcam.
BY_ID = Path("/dev/v4l/by-id")


def usb_cameras(by_id: Path = BY_ID) -> list[str]:
    """Capture nodes of the USB cameras plugged in (the ``-video-index0`` of each), stable across boots."""
    return [str(p) for p in sorted(by_id.glob("*-video-index0"))] if by_id.is_dir() else []


class WebcamSource:
    name = "opencv"

    def __init__(self, device: str, width: int, height: int, fps: float) -> None:
        self.device = int(device) if device.isdigit() else device
        capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"no webcam at {device!r}: is it plugged in (ls /dev/video*)?")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)
        self._capture = capture
        self._index = 0
        self._start = time.monotonic()

    def read(self) -> Frame:
        ok, image = self._capture.read()
        if not ok:
            raise CameraError(f"webcam {self.device!r} stopped delivering frames (unplugged?)")
        frame = Frame(np.asarray(image), self._index, time.monotonic() - self._start)
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()
