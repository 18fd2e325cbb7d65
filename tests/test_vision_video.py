"""The vision pipeline on real pixels: videos of FERPlus faces built at test time, and the sample clip.

Rates measured with the shipped model are in the README; the floors here sit just under them.
``EMOCALL_VISION__*`` variables (e.g. ``EMOCALL_VISION__MODEL_CARD``) apply, to try another model.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance import config
from appliance.camera.file import FileSource
from appliance.events import Event, EventBus
from appliance.vision.select import open_pipeline
from appliance.vision.worker import FileFeed, VisionWorker

from .conftest import CLIPS, need
from .vision_faces import Segment, background, build_video, paste, pick_faces, score

HOLD = 1.5  # seconds each face is shown
DETECTION_FLOOR = 0.95
MATCH_FLOOR = 0.7  # measured 19/23 (83%) with the shipped model and its two cuts; see the README


def vision_config() -> config.VisionConfig:
    environ = {k: v for k, v in os.environ.items() if k.startswith("EMOCALL_VISION__")}
    return config.load(None, {}, environ=environ).vision


def watch(video: Path) -> tuple[list[Event], VisionWorker]:
    """Runs the video through the worker as `emocall watch` does; the vision events and the worker."""
    events = EventBus()
    feed = FileFeed(FileSource(video, loop=False, realtime=False))
    worker = VisionWorker.open(vision_config(), feed, events).start()
    worker.join(timeout=120)
    worker.close()
    feed.close()
    return [e for e in events.recent("vision.") if e.topic != "vision.backend"], worker


def emotions(events: list[Event]) -> list[tuple[float, str]]:
    return [(float(e.data["t"]), str(e.data["emotion"])) for e in events if e.topic == "vision.emotion"]


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, str]]:
    return pick_faces(per_class=4)


@pytest.fixture(scope="module")
def face_video(
    faces: list[tuple[np.ndarray, str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Segment]]:
    return build_video(tmp_path_factory.mktemp("fer") / "faces.avi", list(faces), HOLD)


def test_faces_are_found_and_their_expressions_reported(face_video: tuple[Path, list[Segment]]) -> None:
    video, segments = face_video
    events, worker = watch(video)
    assert worker.pipeline is not None
    found = worker.pipeline.frames_with_face / worker.pipeline.frames
    result = score(segments, emotions(events))
    rate = result.matched / result.faces
    print(
        f"face found in {found:.1%} of frames; {result.matched}/{result.faces} faces ({rate:.0%}) "
        f"reported right; cut to right event {np.median(result.latencies or [np.nan]):.2f} s median"
    )
    assert found >= DETECTION_FLOOR
    assert rate >= MATCH_FLOOR
    assert np.median(result.latencies) <= 0.7  # in source time: measured 0.60 s
    assert not [e for e in events if e.topic == "vision.no_face"]  # cuts between faces are not "no face"


def test_no_face_then_face_back(faces: list[tuple[np.ndarray, str]], tmp_path: Path) -> None:
    (a, label_a), (b, label_b) = faces[:2]
    video, segments = build_video(tmp_path / "gap.avi", [(a, label_a), (a, None), (b, label_b)], hold=2.5)
    events, _ = watch(video)
    topics = [e.topic for e in events]
    gap, back = segments[1], segments[2]
    assert topics.count("vision.no_face") == 1 and topics.count("vision.face_back") == 1
    no_face = next(e for e in events if e.topic == "vision.no_face")
    face_back = next(e for e in events if e.topic == "vision.face_back")
    assert gap.start + 0.9 <= no_face.data["t"] <= gap.start + 1.3  # the 1 s no-face timeout
    assert back.start <= face_back.data["t"] <= back.start + 0.2
    # The expression after the gap is announced afresh, even if it is the same as before.
    after = [e for e in events if e.topic == "vision.emotion" and e.data["t"] > face_back.data["t"]]
    assert after


def test_a_face_is_said_back_after_the_camera_came_back(faces: list[tuple[np.ndarray, str]]) -> None:
    """The camera is lost mid-call (the pattern, its own times, says "no face") and comes back
    with its times from 0: the face was taken as a first sighting, and its return never said."""
    (face, _), grey = faces[0], background(np.random.default_rng(5))
    empty = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    paste(grey, face, 200, 100, 200)
    canvas = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    pipeline = open_pipeline(vision_config())
    kinds = []
    try:
        for image, start in ((canvas, 50.0), (empty, 3.0), (canvas, 0.0)):
            for i in range(20):
                kinds += [e.kind for e in pipeline.process(image, start + i / 10)]
    finally:
        pipeline.close()
    assert kinds.count("no_face") == 1 and kinds[kinds.index("no_face") + 1 :].count("face_back") == 1, kinds


def test_two_faces_the_larger_one_wins(faces: list[tuple[np.ndarray, str]]) -> None:
    (small, _), (large, _) = faces[:2]
    back = background(np.random.default_rng(3))
    both, alone = back.copy(), back.copy()
    paste(both, small, 40, 60, 150)
    for canvas in (both, alone):
        paste(canvas, large, 330, 120, 260)
    vision = vision_config()
    reports = []
    for canvas in (both, alone):
        frame = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
        pipeline = open_pipeline(vision)
        seen = []
        for i in range(20):
            seen += pipeline.process(frame, i / 10)
            box = pipeline.tracker.update(frame, i / 10 + 0.05).box
            assert box is not None
            assert 330 < box.centre[0] < 590 and 120 < box.centre[1] < 380  # on the larger face
        pipeline.close()
        reports.append([(e.kind, e.emotion) for e in seen])
    assert reports[0] == reports[1]  # what is reported is the larger face's expression


def test_sample_clip_follows_the_arc_sad_to_laughing() -> None:
    """WolfgangLanger_Pexels.mp4: crying (0-6 s), surprised (6-10 s), laughing (10-20 s)."""
    events, _ = watch(need(CLIPS / "WolfgangLanger_Pexels.mp4"))
    labels = [label for _, label in emotions(events)]
    print("clip events:", emotions(events))
    assert labels[0] == "sadness" or labels[:2] == ["neutral", "sadness"]
    assert labels[-1] == "happiness"
