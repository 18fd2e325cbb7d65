"""A V4L2 / USB webcam through OpenCV, by index or device path."""

from __future__ import annotations

import time

import cv2
import numpy as np

from appliance.camera import CameraError, Frame


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
