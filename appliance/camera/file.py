"""A video file or a still image as the camera, paced in real time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.camera import CameraError, EndOfStream, Frame
from appliance.timing import Pacer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class FileSource:
    name = "file"

    def __init__(self, path: Path, loop: bool = True, fps: float = 15.0, realtime: bool = True) -> None:
        if not path.is_file():
            raise CameraError(f"camera file {path} does not exist")
        self.path, self.loop, self.realtime = path, loop, realtime
        self._still: np.ndarray | None = None
        self._capture: cv2.VideoCapture | None = None
        if path.suffix.lower() in IMAGE_SUFFIXES:
            self._still = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if self._still is None:
                raise CameraError(f"camera file {path} is not an image OpenCV can decode")
            self.fps = fps
        else:
            self._capture = self._open()
            native = self._capture.get(cv2.CAP_PROP_FPS)
            self.fps = native if 1.0 <= native <= 120.0 else fps
        self._index = 0  # frames delivered since open
        self._position = 0  # frames into the file (restarts on loop)
        self._pacer = Pacer(self.fps)

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        ok, _ = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            capture.release()
            raise CameraError(f"camera file {self.path} is not a video OpenCV can decode")
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return capture

    def _next_image(self) -> np.ndarray:
        if self._still is not None:
            return self._still.copy()
        assert self._capture is not None
        ok, image = self._capture.read()
        if ok:
            return np.asarray(image)
        if self._position == 0:
            raise CameraError(f"camera file {self.path}: decoding failed")
        if not self.loop:
            raise EndOfStream(f"camera file {self.path} ended")
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._position = 0
        return self._next_image()

    def read(self) -> Frame:
        if self.realtime:
            self._pacer.wait()
        image = self._next_image()
        frame = Frame(image, self._index, self._position / self.fps)
        self._index += 1
        self._position += 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
