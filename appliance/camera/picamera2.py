"""The Raspberry Pi camera through picamera2 (Pi only: picamera2 cannot be imported elsewhere)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from appliance.camera import CameraError, Frame


class Picamera2Source:
    name = "picamera2"

    def __init__(self, width: int, height: int, fps: float) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise CameraError("picamera2 is not installed (it comes with Raspberry Pi OS)") from e
        try:
            camera: Any = Picamera2()
            config = camera.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"},  # RGB888 is BGR in memory
                controls={"FrameRate": fps},
            )
            camera.configure(config)
            camera.start()
        except (RuntimeError, IndexError) as e:
            raise CameraError(f"no Pi camera found ({e}): check the ribbon cable") from e
        self._camera = camera
        self._index = 0
        self._start = time.monotonic()

    def read(self) -> Frame:
        try:
            image = np.asarray(self._camera.capture_array("main"))
        except RuntimeError as e:
            raise CameraError(f"the Pi camera stopped delivering frames ({e})") from e
        frame = Frame(image[:, :, :3], self._index, time.monotonic() - self._start)
        self._index += 1
        return frame

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()
