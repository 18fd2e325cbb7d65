"""The Raspberry Pi camera through picamera2 (Pi only: picamera2 comes from Raspberry Pi OS's apt).

Everything picamera2 can throw becomes a :class:`CameraError`, so the capture thread shows the
pattern and retries instead of dying: its import can fail with more than ImportError (apt's
simplejpeg raises ValueError against a venv's newer numpy), and ``stop()``/``close()`` raise
RuntimeError. The camera is released on every failure after it was acquired, a missing camera is
found before ``Picamera2()`` opens anything (each failed construction leaked a descriptor), and a
frame that does not come within ``frame_timeout`` counts as a lost camera instead of a hang.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from appliance.camera import CameraError, Frame

log = logging.getLogger(__name__)


def _picamera2_class() -> Any:
    try:
        from picamera2 import Picamera2
    except Exception as e:  # ImportError, or ValueError from a numpy/simplejpeg binary mismatch
        raise CameraError(
            f"picamera2 cannot be imported ({type(e).__name__}: {e}): install python3-picamera2 "
            "from Raspberry Pi OS and run in a virtualenv made with --system-site-packages"
        ) from e
    return Picamera2


class Picamera2Source:
    name = "picamera2"

    def __init__(self, width: int, height: int, fps: float, *, frame_timeout: float = 2.0) -> None:
        picamera2 = _picamera2_class()
        try:
            cameras = picamera2.global_camera_info()
        except Exception as e:  # libcamera errors are plain RuntimeErrors or worse
            raise CameraError(f"libcamera cannot list cameras ({e})") from e
        if not cameras:
            raise CameraError("no Pi camera found: check the ribbon cable and `rpicam-hello --list-cameras`")
        try:
            camera: Any = picamera2()
        except Exception as e:
            raise CameraError(f"the Pi camera cannot be opened ({e}): is another program using it?") from e
        try:
            config = camera.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"},  # RGB888 is BGR in memory
                controls={"FrameRate": fps},
            )
            camera.configure(config)
            camera.start()
        except Exception as e:
            _release(camera)
            raise CameraError(f"the Pi camera cannot start ({e})") from e
        self._camera = camera
        self._timeout = frame_timeout
        self._index = 0
        self._start = time.monotonic()

    def read(self) -> Frame:
        try:
            job = self._camera.capture_array("main", wait=False)
            image = np.asarray(self._camera.wait(job, timeout=self._timeout))
        except TimeoutError as e:
            raise CameraError(f"the Pi camera sent no frame for {self._timeout:g} s") from e
        except Exception as e:
            raise CameraError(f"the Pi camera stopped delivering frames ({e})") from e
        if image.ndim != 3 or image.shape[2] < 3:
            # picamera2 hands over a USB camera's raw YUYV, in two dimensions: no picture to read.
            raise CameraError(
                f"the Pi camera sent a {'x'.join(map(str, image.shape))} frame, not a colour picture "
                '(a USB camera? set [camera] source = "opencv")'
            )
        frame = Frame(image[:, :, :3], self._index, time.monotonic() - self._start)
        self._index += 1
        return frame

    def close(self) -> None:
        if not _release(self._camera):
            raise CameraError("the Pi camera did not close cleanly (see the log)")


def _release(camera: Any) -> bool:
    """Stop and close, each attempted whatever the other did; False (logged) if either failed."""
    ok = True
    for step in (camera.stop, camera.close):
        try:
            step()
        except Exception as e:
            log.warning("picamera2 %s failed: %s", step.__name__, e)
            ok = False
    return ok
