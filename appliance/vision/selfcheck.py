"""The ``vision`` part of ``emocall selftest``: load the model and run it on one camera frame."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from appliance.camera import CameraError, select
from appliance.camera.pattern import PatternSource
from appliance.config import Config
from appliance.vision import Box
from appliance.vision.crop import crop_face
from appliance.vision.select import open_pipeline
from appliance.vision.tracking import pick


def _frame(cfg: Config) -> tuple[np.ndarray, str]:
    try:
        source = select.open_source(cfg.camera, realtime=False)
    except CameraError:
        return PatternSource(cfg.camera.width, cfg.camera.height).read().image, "the test pattern"
    try:
        return source.read().image, "a camera frame"
    except CameraError:
        return PatternSource(cfg.camera.width, cfg.camera.height).read().image, "the test pattern"
    finally:
        with contextlib.suppress(CameraError):  # a close that fails is the camera part's to report
            source.close()


def check(cfg: Config, camera: bool = True) -> tuple[str, str]:
    """The active backends and what happened, on a camera frame (``camera``) or the test pattern;
    raises :class:`~appliance.vision.VisionError`."""
    pipeline = open_pipeline(cfg.vision)
    try:
        if camera:
            image, what = _frame(cfg)
        else:
            image = PatternSource(cfg.camera.width, cfg.camera.height).read().image
            what = "the test pattern (the running unit's call holds the camera)"
        h, w = image.shape[:2]
        start = time.perf_counter()
        faces = pipeline.tracker.detector.detect(image)
        # Without a face the model still runs, on the centre of the frame, to prove it loads and runs.
        box = pick(faces, w, h) if faces else Box(w / 2 - h / 4, h / 4, h / 2, h / 2)
        probabilities = pipeline.classifier.classify(crop_face(image, box, pipeline.card))
        ms = (time.perf_counter() - start) * 1000
        top = int(probabilities.argmax())
        found = f"{len(faces)} face(s)" if faces else "no face (ran on the centre)"
        detail = (
            f"{what}: {found}, {pipeline.card.labels[top]} {probabilities[top]:.0%}, {ms:.0f} ms; "
            f"classifier {pipeline.classifier.name}: {pipeline.reasons.get('classifier')}"
        )
        return f"{pipeline.tracker.detector.name}+{pipeline.classifier.name}", detail
    finally:
        pipeline.close()
