"""One analysed frame in, zero or more vision events out: track the face, crop, classify, smooth.

Synchronous and single-threaded; :mod:`appliance.vision.worker` runs it in its own thread, and
``emocall watch`` and the benchmark drive it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance.vision import Classifier
from appliance.vision.card import ModelCard
from appliance.vision.crop import TwoCuts
from appliance.vision.smoothing import EmotionSmoother
from appliance.vision.tracking import FaceTracker

EventKind = Literal["emotion", "no_face", "face_back"]


@dataclass(frozen=True)
class VisionEvent:
    kind: EventKind
    t: float  # seconds into the source of the frame that produced the event
    emotion: str | None = None
    confidence: float = 0.0
    since: float = 0.0  # for emotions: when the expression started to lead


class VisionPipeline:
    def __init__(
        self, tracker: FaceTracker, classifier: Classifier, card: ModelCard, smoother: EmotionSmoother
    ) -> None:
        self.tracker, self.classifier, self.card, self.smoother = tracker, classifier, card, smoother
        self.cuts = TwoCuts(card)
        self._present: bool | None = None  # None until the first face or the first no-face timeout
        self._start: float | None = None
        self._last: float | None = None  # the time of the frame processed last
        self.reasons: dict[str, str] = {}  # why each backend was chosen (set by select)
        self.frames = 0
        self.frames_with_face = 0  # frames where the detector found the face

    @property
    def backends(self) -> dict[str, str]:
        return {"detector": self.tracker.detector.name, "classifier": self.classifier.name}

    def process(self, image: np.ndarray, t: float) -> list[VisionEvent]:
        if self._last is not None and t < self._last:
            # The source started again (a camera reopened for the next call, a looping file): what
            # was seen before, and when, means nothing now. The smoother above all: an expression
            # that started to lead at a later time than every frame to come would never be stable.
            # But a face said to be gone (the camera lost, the pattern in its place) is said to be
            # back when the camera returns with its own times from 0.
            gone = self._present is False
            self.reset()
            self._present = False if gone else None
        self._last = t
        if self._start is None:
            self._start = t
        sighting = self.tracker.update(image, t)
        self.frames += 1
        self.frames_with_face += sighting.seen
        events = self._presence(sighting.present, t)
        if not sighting.present:
            self.cuts.reset()  # the cuts' answers pair up frames of one face's visit only
        if sighting.seen and sighting.box is not None:
            probabilities = self.cuts.classify(self.classifier, image, sighting.box)
            change = self.smoother.update(probabilities, t)
            if change is not None:
                events.append(VisionEvent("emotion", t, change.emotion, change.confidence, change.since))
        return events

    def reset(self) -> None:
        """Forget the face and its expression: the next frame starts as if the source were new."""
        self.tracker.reset()
        self.smoother.reset()
        self.cuts.reset()
        self._present = self._start = self._last = None

    def _presence(self, present: bool, t: float) -> list[VisionEvent]:
        if present:
            back = self._present is False
            self._present = True
            return [VisionEvent("face_back", t)] if back else []
        assert self._start is not None
        timed_out = self._present is True or t - self._start >= self.tracker.no_face_seconds
        if self._present is False or not timed_out:
            return []
        self._present = False
        self.smoother.reset()
        return [VisionEvent("no_face", t)]

    def close(self) -> None:
        self.tracker.detector.close()
        self.classifier.close()
