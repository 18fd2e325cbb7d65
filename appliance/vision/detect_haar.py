"""Face detection with OpenCV's frontal-face Haar cascade, on a downscaled grey frame (the CPU default).

The cascade's cost grows with the pixels it scans at its smallest scale, so every search scales its
image so that the smallest face wanted is just the cascade's 24 px window: a whole 640x480 frame
for faces of a fifth of its height or more is scanned at 1/4 scale; a search ``near`` a known face
looks only at a small region around it, scaled so the face is about :data:`TRACK_SIZE` px wide.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.vision import Box, VisionError

CASCADE = "haarcascade_frontalface_default.xml"
WINDOW = 24  # the cascade's own window: it finds nothing smaller
TRACK_SIZE = 30  # face width (px) in a search near a known face: just above the window, so it is cheap
TRACK_REACH = 0.4  # how far around a known face to look, as a fraction of its width on each side


class HaarDetector:
    name = "haar"

    def __init__(self, min_face: float = 0.2, neighbours: int = 3) -> None:
        """``min_face``: smallest face searched for, as a fraction of the frame height."""
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades if data else "") / CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise VisionError(f"OpenCV's Haar cascade {path} is missing: install opencv-python-headless 4.x")
        self.min_face, self.neighbours = min_face, neighbours

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Box]:
        if near is not None:
            return self._detect_near(image, near)
        scale = min(1.0, WINDOW / (self.min_face * image.shape[0]))
        return self._search(image, (0, 0), scale)

    def _detect_near(self, image: np.ndarray, near: Box) -> list[Box]:
        ih, iw = image.shape[:2]
        reach = TRACK_REACH * max(near.w, near.h)
        x0, y0 = max(0, int(near.x - reach)), max(0, int(near.y - reach))
        x1, y1 = min(iw, int(near.x + near.w + reach)), min(ih, int(near.y + near.h + reach))
        scale = min(1.0, TRACK_SIZE / near.w)
        if min(x1 - x0, y1 - y0) * scale < WINDOW:
            return []
        return self._search(image[y0:y1, x0:x1], (x0, y0), scale)

    def _search(self, bgr: np.ndarray, origin: tuple[int, int], scale: float) -> list[Box]:
        """Faces in a region of the frame whose top left corner is ``origin``, scanned at ``scale``."""
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=self.neighbours, minSize=(WINDOW, WINDOW)
        )
        x0, y0 = origin
        return [
            Box(float(x0 + x / scale), float(y0 + y / scale), float(w / scale), float(h / scale))
            for x, y, w, h in found
        ]

    def close(self) -> None:
        """Nothing to release: the cascade is plain memory."""
