"""From camera frames to a stable emotion: face detection, classification, smoothing, events.

Two small interfaces with one module per backend: :class:`FaceDetector` (``detect_haar``,
``detect_edgetpu``) and :class:`Classifier` (``classify_cpu``, ``classify_edgetpu``).
``select`` builds them from config (``auto`` tries the Edge TPU, then the CPU, and says why),
``pipeline`` turns one frame into events, ``worker`` runs it off the media path on the newest frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class VisionError(Exception):
    """A vision backend cannot be used; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Box:
    """A face in full-frame pixel coordinates."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Box]:
        """Faces in a BGR frame. ``near`` is a hint: a backend may search only around that box."""
        ...

    def close(self) -> None: ...


class Classifier(Protocol):
    name: str

    def classify(self, face: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, model-card label order) for a uint8 HxWxC model-sized crop."""
        ...

    def close(self) -> None: ...
