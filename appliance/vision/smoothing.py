"""Turns per-frame class probabilities into a calm stable expression.

An exponential moving average (time constant ``seconds``) of the probabilities; a new expression
becomes stable only when its averaged probability reaches ``threshold``, leads the current one by
``hysteresis`` and keeps doing so for ``dwell_seconds``. Only a change of the stable expression
is reported, so a held expression gives no events and a flicker gives none either. The first
expression of a face that has just appeared must lead for ``settle_seconds`` instead: a face
coming into view is often mid-movement, and its first read is the one most often wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingParams:
    seconds: float
    threshold: float
    hysteresis: float
    dwell_seconds: float
    settle_seconds: float


@dataclass(frozen=True)
class Change:
    emotion: str
    confidence: float  # the averaged probability when it became stable
    since: float  # when it started to lead (seconds, the caller's clock)


class EmotionSmoother:
    def __init__(self, labels: tuple[str, ...], params: SmoothingParams) -> None:
        self.labels, self.params = labels, params
        self.reset()

    def reset(self) -> None:
        """Forget everything (the face left): the next stable expression is reported afresh."""
        self._average: np.ndarray | None = None
        self._last_t = 0.0
        self.stable: int | None = None
        self._candidate: int | None = None
        self._candidate_since = 0.0

    def update(self, probabilities: np.ndarray, t: float) -> Change | None:
        """Feed one frame's probabilities taken at ``t``; returns the new stable expression, if any."""
        self._average = self._blend(probabilities.astype(np.float32), t)
        top = int(self._average.argmax())
        confidence = float(self._average[top])
        lead = confidence - (float(self._average[self.stable]) if self.stable is not None else 0.0)
        if top == self.stable or confidence < self.params.threshold or lead < self.params.hysteresis:
            self._candidate = None
            return None
        if top != self._candidate:
            self._candidate, self._candidate_since = top, t
        dwell = self.params.dwell_seconds if self.stable is not None else self.params.settle_seconds
        if t - self._candidate_since < dwell:
            return None
        self.stable, self._candidate = top, None
        return Change(self.labels[top], confidence, self._candidate_since)

    def _blend(self, probabilities: np.ndarray, t: float) -> np.ndarray:
        previous, dt = self._average, t - self._last_t
        self._last_t = t
        if previous is None or dt < 0:
            return probabilities
        # Time-based weight, so the behaviour does not depend on the analysis frame rate.
        weight = 1.0 - math.exp(-dt / self.params.seconds) if self.params.seconds > 0 else 1.0
        return np.asarray(previous + weight * (probabilities - previous), np.float32)
