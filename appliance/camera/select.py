"""Chooses the camera backend from config; ``auto`` tries picamera2, then a webcam.

When ``auto`` finds neither, :class:`~appliance.camera.capture.Capture` shows the pattern and retries.
"""

from __future__ import annotations

import logging
from functools import partial

from appliance.camera import CameraError, FrameSource
from appliance.camera.file import FileSource
from appliance.camera.pattern import PatternSource
from appliance.camera.picamera2 import Picamera2Source
from appliance.camera.webcam import WebcamSource, usb_cameras
from appliance.config import CameraConfig

log = logging.getLogger(__name__)


def opener(cfg: CameraConfig, realtime: bool = True) -> partial[FrameSource]:
    """A function that opens the configured source (``auto`` resolved on each call)."""
    return partial(open_source, cfg, realtime)


def open_source(cfg: CameraConfig, realtime: bool = True) -> FrameSource:
    size = (cfg.width, cfg.height, cfg.fps)
    match cfg.source:
        case "picamera2":
            return Picamera2Source(*size)
        case "opencv":
            return WebcamSource(cfg.device, *size)
        case "file":
            if cfg.file is None:
                raise CameraError("camera.source is 'file' but camera.file is not set")
            return FileSource(cfg.file, loop=cfg.loop, fps=cfg.fps, realtime=realtime)
        case "pattern":
            return PatternSource(*size)
        case "auto":
            return _auto(cfg)
    raise CameraError(f"unknown camera source {cfg.source!r}")


def _auto(cfg: CameraConfig) -> FrameSource:
    reasons = []
    usb = usb_cameras()
    # A USB camera by its stable name where one is plugged in: index 0 may be the CSI receiver.
    device = usb[0] if usb and cfg.device == "0" else cfg.device
    for kind in ("picamera2", "opencv"):
        try:
            source = open_source(cfg.model_copy(update={"source": kind, "device": device}))
        except CameraError as e:
            reasons.append(f"{kind}: {e}")
            continue
        log.info("camera auto: using %s (%s)", kind, "; ".join(reasons) or "first choice")
        return source
    # The capture shows the pattern meanwhile and keeps retrying, so a camera plugged in later is found.
    raise CameraError("no camera found (" + "; ".join(reasons) + "); showing the test pattern")
