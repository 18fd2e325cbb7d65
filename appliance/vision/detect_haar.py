"""Face detection with OpenCV's frontal-face Haar cascade, on a downscaled grey frame (the CPU default).

A full search on a 640x480 frame costs about 20 ms at 1/3 scale; a search ``near`` a known face
looks only at a small region around it, scaled so the face is about :data:`TRACK_SIZE` pixels wide.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.vision import Box, VisionError

CASCADE = "haarcascade_frontalface_default.xml"
TRACK_SIZE = 56  # face width (px) for a search near a known face: well above the cascade's 24 px
TRACK_REACH = 0.5  # how far around a known face to look, as a fraction of its width on each side


class HaarDetector:
    name = "haar"

    def __init__(self, scale: float = 1 / 3, min_face: float = 0.15, neighbours: int = 3) -> None:
        """``min_face``: smallest face searched for, as a fraction of the frame height."""
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades if data else "") / CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise VisionError(f"OpenCV's Haar cascade {path} is missing: install opencv-python-headless 4.x")
        self.scale, self.min_face, self.neighbours = scale, min_face, neighbours

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Box]:
        if near is not None:
            return self._detect_near(image, near)
        small = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        side = max(24, round(self.min_face * small.shape[0]))
        return self._search(small, (0, 0), self.scale, (side, 0))

    def _detect_near(self, image: np.ndarray, near: Box) -> list[Box]:
        ih, iw = image.shape[:2]
        reach = TRACK_REACH * max(near.w, near.h)
        x0, y0 = max(0, int(near.x - reach)), max(0, int(near.y - reach))
        x1, y1 = min(iw, int(near.x + near.w + reach)), min(ih, int(near.y + near.h + reach))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return []
        scale = min(1.0, TRACK_SIZE / near.w)
        region = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sides = (max(24, round(0.6 * TRACK_SIZE)), round(1.7 * TRACK_SIZE))
        return self._search(region, (x0, y0), scale, sides)

    def _search(
        self, bgr: np.ndarray, origin: tuple[int, int], scale: float, sides: tuple[int, int]
    ) -> list[Box]:
        """Faces in a scaled region whose top left is ``origin``; ``sides``: min and max (0: any)."""
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        lo, hi = sides
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=self.neighbours, minSize=(lo, lo), maxSize=(hi, hi)
        )
        x0, y0 = origin
        return [
            Box(float(x0 + x / scale), float(y0 + y / scale), float(w / scale), float(h / scale))
            for x, y, w, h in found
        ]

    def close(self) -> None:
        """Nothing to release: the cascade is plain memory."""
