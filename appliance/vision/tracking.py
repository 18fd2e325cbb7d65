"""Keeps one face box steady between detections and says when the face has gone.

A full-frame search runs every ``detect_every`` analysed frames (or when the face is lost); in
between, the detector looks only near the last box, which is far cheaper. The box is smoothed so
the crop does not jitter, and the largest, most central face wins when there are several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from appliance.vision import Box, FaceDetector

SAME_FACE_IOU = 0.3  # a new box overlapping the old one this much is the same face moving


@dataclass(frozen=True)
class Sighting:
    box: Box | None  # the smoothed face box; None once the face has been gone for the timeout
    seen: bool  # the detector found the face in this frame
    present: bool  # a face was seen within the no-face timeout


def pick(boxes: list[Box], width: int, height: int) -> Box:
    """The largest face, with faces far from the centre counting up to half as much."""
    half_diag = math.hypot(width, height) / 2

    def score(b: Box) -> float:
        cx, cy = b.centre
        return b.area / (1 + math.hypot(cx - width / 2, cy - height / 2) / half_diag)

    return max(boxes, key=score)


def blend(old: Box, new: Box, weight: float) -> Box:
    k = 1 - weight
    return Box(
        old.x * k + new.x * weight,
        old.y * k + new.y * weight,
        old.w * k + new.w * weight,
        old.h * k + new.h * weight,
    )


class FaceTracker:
    def __init__(
        self,
        detector: FaceDetector,
        detect_every: int = 10,
        box_smoothing: float = 0.6,
        no_face_seconds: float = 1.0,
    ) -> None:
        """``box_smoothing``: weight of the new detection in the box (1 = no smoothing)."""
        self.detector = detector
        self.detect_every = detect_every
        self.box_smoothing = box_smoothing
        self.no_face_seconds = no_face_seconds
        self.reset()

    def reset(self) -> None:
        self._box: Box | None = None
        self._last_seen: float | None = None
        self._since_full = 0

    def update(self, image: np.ndarray, t: float) -> Sighting:
        if self._last_seen is not None and t < self._last_seen:
            self.reset()  # the source started again (a looping file, a reopened camera)
        boxes = self._detect(image)
        if boxes:
            best, old = pick(boxes, image.shape[1], image.shape[0]), self._box
            same = old is not None and old.iou(best) >= SAME_FACE_IOU
            self._box = blend(old, best, self.box_smoothing) if old is not None and same else best
            self._last_seen = t
        present = self._last_seen is not None and t - self._last_seen <= self.no_face_seconds
        if not present:
            self._box = None
        return Sighting(self._box, bool(boxes), present)

    def _detect(self, image: np.ndarray) -> list[Box]:
        if self._box is not None and self._since_full < self.detect_every - 1:
            self._since_full += 1
            found = self.detector.detect(image, near=self._box)
            if found:
                return found
        # Time for a full search, or the face slipped out of the local one: look everywhere now.
        self._since_full = 0
        return self.detector.detect(image)
