"""Builds the vision pipeline from config: the detector and classifier backends, with loud fallbacks.

``classifier = auto`` tries the Edge TPU, then the processor; ``edgetpu`` that was asked for but
cannot run also falls back to the processor. Either way the active backend and the reason are
logged and published as ``vision.backend``, for speech, the status page and ``selftest``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from appliance.config import VisionConfig
from appliance.events import EventBus
from appliance.vision import Classifier, FaceDetector, VisionError
from appliance.vision.card import ModelCard, load_card
from appliance.vision.classify_cpu import open_cpu
from appliance.vision.classify_edgetpu import open_edgetpu
from appliance.vision.coral import CoralInUse
from appliance.vision.detect_edgetpu import EdgeTpuDetector
from appliance.vision.detect_haar import HaarDetector
from appliance.vision.litert import EdgeTpuAbsent
from appliance.vision.pipeline import VisionPipeline
from appliance.vision.smoothing import EmotionSmoother, SmoothingParams
from appliance.vision.tracking import FaceTracker

log = logging.getLogger(__name__)


# What became of the Coral, for what the unit says: in use, not there, there but failing, held by
# another process (emocall selftest or watch beside the unit), or not asked for (classifier = "cpu").
Coral = Literal["used", "absent", "failed", "busy", "unasked"]


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str
    coral: Coral = "unasked"


def open_detector(cfg: VisionConfig, edgetpu_failed: str = "") -> tuple[FaceDetector, Choice]:
    haar = Choice("haar", "configured")
    if cfg.detector == "edgetpu" and edgetpu_failed:
        haar = Choice("haar", f"the Edge TPU failed: {edgetpu_failed}")
    elif cfg.detector == "edgetpu":
        try:
            return EdgeTpuDetector(cfg.detector_model), Choice("edgetpu", "configured")
        except VisionError as e:
            haar = Choice("haar", f"the Edge TPU face detector cannot run: {e}")
            log.warning("face detection falls back to Haar: %s", e)
    return HaarDetector(min_face=cfg.min_face), haar


def open_classifier(
    cfg: VisionConfig, card: ModelCard, edgetpu_failed: str = ""
) -> tuple[Classifier, Choice]:
    """Raises :class:`VisionError` only when the processor cannot run the model either.
    ``edgetpu_failed``: why the Edge TPU is not to be tried (it failed in use)."""
    if cfg.classifier == "cpu":
        return open_cpu(card, cfg.threads), Choice("cpu", "configured")
    if edgetpu_failed:
        why = Choice("cpu", f"the Edge TPU failed: {edgetpu_failed}", "failed")
        return open_cpu(card, cfg.threads), why
    try:
        return open_edgetpu(card), Choice("edgetpu", "Coral Edge TPU found", "used")
    except VisionError as e:
        log.warning("expressions run on the processor: the Edge TPU cannot be used: %s", e)
        coral: Coral = (
            "absent" if isinstance(e, EdgeTpuAbsent) else "busy" if isinstance(e, CoralInUse) else "failed"
        )
        return open_cpu(card, cfg.threads), Choice("cpu", f"Edge TPU unavailable: {e}", coral)


def smoothing_params(cfg: VisionConfig) -> SmoothingParams:
    return SmoothingParams(
        cfg.smoothing_seconds, cfg.threshold, cfg.hysteresis, cfg.dwell_seconds, cfg.settle_seconds
    )


def open_pipeline(
    cfg: VisionConfig, events: EventBus | None = None, edgetpu_failed: str = ""
) -> VisionPipeline:
    """The pipeline for ``cfg``; raises :class:`VisionError` when expressions cannot be recognised.
    ``edgetpu_failed``: the Edge TPU failed in use, and the processor runs everything."""
    card = load_card(cfg.model_card)
    classifier, why = open_classifier(cfg, card, edgetpu_failed)
    try:
        detector, found = open_detector(cfg, edgetpu_failed)
    except VisionError:
        classifier.close()
        raise
    if events is not None:
        where = "the Edge TPU" if why.backend == "edgetpu" else "the processor"
        events.publish(
            "vision.backend",
            f"expressions run on {where} ({why.reason}); faces found by {found.backend}",
            backend=why.backend,
            reason=why.reason,
            coral=why.coral,
            detector=found.backend,
            detector_reason=found.reason,
        )
    tracker = FaceTracker(detector, cfg.detect_every, no_face_seconds=cfg.no_face_seconds)
    pipeline = VisionPipeline(tracker, classifier, card, EmotionSmoother(card.labels, smoothing_params(cfg)))
    pipeline.reasons = {"classifier": why.reason, "detector": found.reason}
    return pipeline
