"""The vision parts on their own: model card, crop, smoothing, backend fallback, failure paths, worker."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import config, platform, selftest
from appliance.camera.capture import Capture
from appliance.camera.file import FileSource
from appliance.events import Event, EventBus
from appliance.vision import Box, Classifier
from appliance.vision import select as select_module
from appliance.vision import worker as worker_module
from appliance.vision.card import ModelCard, ModelError, load_card
from appliance.vision.classify_cpu import open_cpu
from appliance.vision.crop import TwoCuts, crop_face
from appliance.vision.select import open_pipeline, smoothing_params
from appliance.vision.smoothing import EmotionSmoother
from appliance.vision.worker import VisionWorker

from .conftest import CLIPS, need, write_video

LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def vision_cfg(**fields: object) -> config.VisionConfig:
    return config.load(None, {"vision": fields}, environ={}).vision


def broken_card(tmp_path: Path, damage: str) -> Path:
    """A copy of the shipped card whose model file is truncated or missing."""
    card = load_card()
    target = tmp_path / "models"
    target.mkdir()
    shutil.copy(card.path, target / card.path.name)
    if damage == "truncated":
        data = (card.path.parent / card.file).read_bytes()
        (target / card.file).write_bytes(data[: len(data) // 2])
    return target / card.path.name


def test_card_matches_the_model_it_ships_with() -> None:
    card = load_card()
    assert card.labels == LABELS
    path = card.model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card.sha256[card.file]
    classifier = open_cpu(card, threads=1)
    grey = np.full((card.height, card.width, card.channels), 128, np.uint8)
    p = classifier.classify(grey)
    classifier.close()
    assert p.shape == (len(LABELS),)
    assert p.sum() == pytest.approx(1.0, abs=0.02)
    assert (p >= 0).all()


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_model_names_the_file_and_the_expected_sha256(tmp_path: Path, damage: str) -> None:
    card_path = broken_card(tmp_path, damage)
    card = load_card(card_path)
    expected = card.sha256[card.file]
    with pytest.raises(ModelError) as e:
        open_cpu(card, threads=1)
    assert str(card_path.parent / card.file) in str(e.value)
    assert f"expected sha256 {expected}" in str(e.value)


def test_corrupt_model_reports_emotions_unavailable_and_the_unit_keeps_going(tmp_path: Path) -> None:
    """The camera (and so the call) keeps delivering frames; vision says why it is not there."""
    events = EventBus()
    clip = need(CLIPS / "single_face.mp4")
    capture = Capture(lambda: FileSource(clip, loop=True), events).start()
    try:
        worker = VisionWorker.open(
            vision_cfg(model_card=str(broken_card(tmp_path, "truncated"))), capture, events
        )
        worker.start()
        (unavailable,) = events.recent("vision.unavailable")
        assert "is corrupt or truncated" in unavailable.message
        assert "emotions unavailable" in unavailable.message
        assert worker.status() == {"available": False, "reason": unavailable.data["reason"]}
        first = capture.wait_newer(-1, timeout=5)
        assert first is not None
        assert capture.wait_newer(first.index, timeout=5) is not None
        worker.close()
    finally:
        capture.close()


def test_corrupt_model_card_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "emotion.json"
    bad.write_text('{"labels": ["neutral"]}')
    with pytest.raises(ModelError, match=r"emotion\.json lacks or garbles input"):
        load_card(bad)
    # A field of the wrong type stopped the unit with an AttributeError (not said, restarted forever).
    shipped = json.loads(load_card().path.read_text())
    for field, value, where in (("sha256", None, "sha256"), ("file_edgetpu", 1, "file_edgetpu")):
        bad.write_text(json.dumps({**shipped, field: value}))
        with pytest.raises(ModelError, match=rf"emotion\.json lacks or garbles {where}"):
            load_card(bad)
    bad.write_text("[]")
    with pytest.raises(ModelError, match="lacks or garbles"):
        load_card(bad)


@pytest.mark.skipif(bool(platform.edgetpu_devices()), reason="a Coral is attached: nothing to fall back from")
@pytest.mark.parametrize("asked", ["edgetpu", "auto"])
def test_edgetpu_requested_but_absent_falls_back_to_the_cpu_and_says_why(asked: str) -> None:
    events = EventBus()
    pipeline = open_pipeline(vision_cfg(classifier=asked), events)
    pipeline.close()
    (backend,) = events.recent("vision.backend")
    assert backend.data["backend"] == "cpu"
    assert "Edge TPU unavailable: no Coral device found" in backend.data["reason"]
    assert pipeline.backends == {"detector": "haar", "classifier": "cpu"}


def test_edgetpu_detector_absent_falls_back_to_haar(tmp_path: Path) -> None:
    events = EventBus()
    pipeline = open_pipeline(
        vision_cfg(detector="edgetpu", detector_model=str(tmp_path / "nope.tflite")), events
    )
    pipeline.close()
    (backend,) = events.recent("vision.backend")
    assert backend.data["detector"] == "haar"
    assert "nope.tflite is missing" in backend.data["detector_reason"]


def test_selftest_vision_part_runs_the_model_on_a_camera_frame() -> None:
    cfg = config.load(
        None, {"camera": {"source": "file", "file": str(need(CLIPS / "single_face.mp4"))}}, environ={}
    )
    report = selftest.check_vision(cfg)
    assert report.ok
    assert report.backend == "haar+cpu"
    assert report.detail.startswith("a camera frame: 1 face(s)")


def test_selftest_vision_part_says_why_emotions_are_unavailable(tmp_path: Path) -> None:
    cfg = config.load(None, {"vision": {"model_card": str(broken_card(tmp_path, "missing"))}}, environ={})
    report = selftest.check_vision(cfg)
    assert not report.ok
    assert report.detail.startswith("emotions unavailable: model file")


def test_crop_follows_the_card_margin_and_pads_at_the_edges() -> None:
    card = load_card()
    # Columns numbered by brightness, so the crop's left and right edges tell where it was taken.
    frame = np.repeat(np.repeat(np.arange(160, dtype=np.uint8)[None, :, None], 120, 0), 3, 2)
    face = crop_face(frame, Box(40, 30, 50, 50), card)
    assert face.shape == (card.height, card.width, card.channels)
    margin = card.margin * 50
    assert face[0, 0, 0] == pytest.approx(40 - margin, abs=2)
    assert face[0, -1, 0] == pytest.approx(90 + margin, abs=2)
    edge = crop_face(frame, Box(130, 10, 40, 40), card)  # runs off the right edge: last column repeated
    assert edge[:, -1, 0].min() == 159


def test_a_held_face_is_read_as_the_mean_of_its_two_cuts(tmp_path: Path) -> None:
    """One classifier pass a frame, the card's two margins in turn; the answer averages the newest of each."""
    card = load_card()
    assert len(card.margins) == 2 and min(card.margins) < card.margin < max(card.margins)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)
    box = Box(100, 60, 110, 110)
    classifier = open_cpu(card, threads=1)
    narrow, wide = (classifier.classify(crop_face(frame, box, card, m)) for m in card.margins)
    assert not np.allclose(narrow, wide)
    cuts = TwoCuts(card)
    assert np.allclose(cuts.classify(classifier, frame, box), narrow)  # a face just seen: its one cut
    for _ in range(3):
        assert np.allclose(cuts.classify(classifier, frame, box), (narrow + wide) / 2, atol=1e-6)
    cuts.reset()
    assert np.allclose(cuts.classify(classifier, frame, box), narrow)
    # A card without cuts (an older export) cuts once, at its margin.
    raw = json.loads(card.path.read_text())
    del raw["crop"]["cuts"]
    (tmp_path / card.path.name).write_text(json.dumps(raw))
    single = load_card(tmp_path / card.path.name)
    assert single.margins == (card.margin,)
    one = TwoCuts(single)
    centre = classifier.classify(crop_face(frame, box, card))
    assert all(np.allclose(one.classify(classifier, frame, box), centre) for _ in range(2))
    classifier.close()


class Seen:
    """The real classifier, keeping each face it was given."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier, self.name, self.faces = classifier, classifier.name, []

    def classify(self, face: np.ndarray) -> np.ndarray:
        self.faces.append(face.astype(np.float32))
        return self._classifier.classify(face)

    def close(self) -> None:
        self._classifier.close()


def test_the_pipeline_cuts_a_held_face_at_the_two_margins_in_turn() -> None:
    """What the unit runs: a still face, its frames cut narrow, wide, narrow, wide."""
    source = FileSource(need(CLIPS / "single_face.mp4"))
    frame = source.read().image
    source.close()
    pipeline = open_pipeline(vision_cfg())
    seen = Seen(pipeline.classifier)
    pipeline.classifier = seen
    try:
        for i in range(6):
            pipeline.process(frame, i / 10)
    finally:
        pipeline.close()
    faces = seen.faces[-4:]
    assert len(faces) == 4

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    # Same cut two frames apart (the tracker's box barely moves), the other cut in between.
    assert max(apart(faces[0], faces[2]), apart(faces[1], faces[3])) < apart(faces[0], faces[1]) / 3


def smooth(sequence: list[np.ndarray], fps: float = 10.0) -> list[tuple[float, str]]:
    smoother = EmotionSmoother(LABELS, smoothing_params(config.VisionConfig()))
    changes = [smoother.update(p, i / fps) for i, p in enumerate(sequence)]
    return [(round(c.since, 2), c.emotion) for c in changes if c is not None]


def one_hot(label: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    p = rng.dirichlet(np.ones(len(LABELS))) * (1 - strength)
    p[LABELS.index(label)] += strength
    return p


def test_smoother_announces_a_held_expression_once_and_ignores_flicker() -> None:
    rng = np.random.default_rng(0)
    frames = [one_hot("happiness", 0.6, rng) for _ in range(100)]
    for i in (30, 31, 60, 75):  # single frames where another expression wins
        frames[i] = one_hot("anger", 0.9, rng)
    assert [e for _, e in smooth(frames)] == ["happiness"]


def test_smoother_settles_on_a_new_face_then_follows_changes_within_0_7_s() -> None:
    params = smoothing_params(config.VisionConfig())
    rng = np.random.default_rng(1)
    # A new face: a brief first look (shorter than the settling time) is not announced.
    frames = [one_hot("happiness", 0.8, rng) for _ in range(7)] + [
        one_hot("neutral", 0.7, rng) for _ in range(23)
    ]
    frames += [one_hot("surprise", 0.7, rng) for _ in range(30)]
    smoother = EmotionSmoother(LABELS, params)
    at = [(i / 10, c.emotion) for i, p in enumerate(frames) if (c := smoother.update(p, i / 10))]
    assert [e for _, e in at] == ["neutral", "surprise"]
    assert at[0][0] <= 0.7 + params.settle_seconds + 0.2
    assert 3.0 < at[1][0] <= 3.7  # the change at 3.0 s, announced within 0.7 s


def test_smoother_holds_below_threshold_and_within_hysteresis() -> None:
    flat = np.full(len(LABELS), 1 / len(LABELS))
    assert smooth([flat] * 50) == []
    rng = np.random.default_rng(2)
    close = [one_hot("neutral", 0.5, rng) for _ in range(20)]
    # Sadness edges ahead of neutral by less than the hysteresis: neutral stays.
    edging = np.zeros(len(LABELS))
    edging[[0, 3]] = 0.46, 0.50
    assert [e for _, e in smooth(close + [edging] * 30)] == ["neutral"]


def test_worker_analyses_the_newest_frame_at_the_configured_rate(tmp_path: Path) -> None:
    """A 30 fps camera and 5 analyses a second: about one frame in six, in step with the source."""
    video = write_video(tmp_path / "grey.avi", [np.full((240, 320, 3), 90, np.uint8)] * 90, fps=30)
    events = EventBus()
    capture = Capture(lambda: FileSource(video, loop=False), events).start()
    worker = VisionWorker.open(vision_cfg(analyse_fps=5), capture, events).start()
    worker.join(timeout=10)
    worker.close()
    capture.close()
    assert worker.pipeline is not None
    assert 13 <= worker.pipeline.frames <= 16
    no_face: list[Event] = events.recent("vision.no_face")
    assert len(no_face) == 1  # a grey picture: no face, said once
    assert no_face[0].data["t"] == pytest.approx(1.0, abs=0.25)


def test_a_frame_stamped_later_than_the_next_ones_does_not_hold_back_expressions() -> None:
    """The camera's clock starts again at each call: one frame analysed with the call before's time
    (ten minutes in) must not keep the same face's expression from being said in the next call."""
    source = FileSource(need(CLIPS / "single_face.mp4"), loop=False, realtime=False)
    try:
        face = source.read().image
    finally:
        source.close()
    pipeline = open_pipeline(vision_cfg())
    try:
        pipeline.process(face, 600.0)  # the last frame of the call before
        events = [e for i in range(30) for e in pipeline.process(face, i / 10)]  # the next call
    finally:
        pipeline.close()
    emotions = [e for e in events if e.kind == "emotion"]
    assert emotions and emotions[0].t <= vision_cfg().settle_seconds + 0.5, events


class FailsOnce:
    """The real classifier, whose first run fails as a Coral's does on a USB glitch."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier, self.name, self.failed = classifier, classifier.name, False

    def classify(self, face: np.ndarray) -> np.ndarray:
        if not self.failed:
            self.failed = True
            raise RuntimeError("Failed to invoke (edgetpu)")
        return self._classifier.classify(face)

    def close(self) -> None:
        self._classifier.close()


def test_a_failed_analysis_reopens_the_pipeline_and_expressions_come_back() -> None:
    events = EventBus()
    capture = Capture(lambda: FileSource(need(CLIPS / "single_face.mp4"), loop=True), events).start()
    worker = VisionWorker.open(vision_cfg(), capture, events)
    try:
        assert worker.pipeline is not None
        failing = FailsOnce(worker.pipeline.classifier)
        worker.pipeline.classifier = failing
        worker.start()
        deadline = time.monotonic() + 20
        while not (failing.failed and events.recent("vision.emotion")) and time.monotonic() < deadline:
            time.sleep(0.2)
        status = worker.status()
    finally:
        worker.close()
        capture.close()
    topics = [e.topic for e in events.recent("vision.") if e.topic != "vision.no_face"]
    assert topics[:3] == ["vision.backend", "vision.unavailable", "vision.backend"]
    assert "Failed to invoke (edgetpu)" in events.recent("vision.unavailable")[0].data["reason"]
    assert "vision.emotion" in topics[3:]
    assert status["available"] is True


class InvokeFails:
    """A Coral still plugged in whose every invoke fails (an under-powered USB port, a flaky cable):
    it opens as the Edge TPU, and each analysis raises."""

    name = "edgetpu"

    def classify(self, face: np.ndarray) -> np.ndarray:
        raise RuntimeError("Failed to invoke (edgetpu): USB transfer error")

    def close(self) -> None:
        pass


def test_a_coral_that_fails_again_once_opened_anew_leaves_expressions_to_the_processor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opened again on the Coral after every failure, expressions were gone after five tries, for
    the rest of the run, though the processor would have worked."""
    opened: list[InvokeFails] = []

    def open_edgetpu(card: ModelCard) -> InvokeFails:
        opened.append(InvokeFails())
        return opened[-1]

    monkeypatch.setattr(select_module, "open_edgetpu", open_edgetpu)
    events = EventBus()
    capture = Capture(lambda: FileSource(need(CLIPS / "single_face.mp4"), loop=True), events).start()
    worker = VisionWorker.open(vision_cfg(), capture, events).start()
    try:
        deadline = time.monotonic() + 20
        while not events.recent("vision.emotion") and time.monotonic() < deadline:
            time.sleep(0.2)
        status = worker.status()
    finally:
        worker.close()
        capture.close()
    backends = [(e.data["backend"], e.data["coral"]) for e in events.recent("vision.backend")]
    assert backends == [("edgetpu", "used"), ("edgetpu", "used"), ("cpu", "failed")]
    assert len(opened) == 2  # once at start, once again after the first failure
    assert "USB transfer error" in events.recent("vision.backend")[-1].data["reason"]
    assert status["available"] is True and events.recent("vision.emotion")


class HangsOnce:
    """The real classifier, whose first run does not return until released: a USB Coral that
    stopped answering holds its invoke()."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier, self.name = classifier, classifier.name
        self.release, self.hung = threading.Event(), threading.Event()

    def classify(self, face: np.ndarray) -> np.ndarray:
        if not self.hung.is_set():
            self.hung.set()
            self.release.wait(30)
        return self._classifier.classify(face)

    def close(self) -> None:
        self._classifier.close()


def test_an_analysis_stuck_in_the_backend_is_said_and_the_pipeline_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Coral that stops answering mid-call held the vision thread for good, unsaid: no
    "expressions cannot be described" for either person."""
    monkeypatch.setattr(worker_module, "STUCK_SECONDS", 1.0)
    events = EventBus()
    capture = Capture(lambda: FileSource(need(CLIPS / "single_face.mp4"), loop=True), events).start()
    worker = VisionWorker.open(vision_cfg(), capture, events)
    assert worker.pipeline is not None
    hanging = HangsOnce(worker.pipeline.classifier)
    try:
        worker.pipeline.classifier = hanging
        worker.start()
        deadline = time.monotonic() + 10
        while not events.recent("vision.unavailable") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hanging.hung.is_set() and not hanging.release.is_set()  # said while still stuck
        hanging.release.set()
        deadline = time.monotonic() + 20
        while not events.recent("vision.emotion") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        hanging.release.set()
        worker.close()
        capture.close()
    topics = [e.topic for e in events.recent("vision.") if e.topic != "vision.no_face"]
    assert topics[:3] == ["vision.backend", "vision.unavailable", "vision.backend"], topics
    assert "the Edge TPU stopped answering" in events.recent("vision.unavailable")[0].data["reason"]
    assert "vision.emotion" in topics[3:]


def test_watch_needs_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance import cli

    card = broken_card(tmp_path, "missing")
    clip = need(CLIPS / "single_face.mp4")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOCALL_VISION__MODEL_CARD", str(card))
        assert cli.main(["watch", "--source", str(clip)]) == 1
    assert "emotions unavailable: model file" in capsys.readouterr().err


def test_watch_prints_events_then_fps_and_backends(capsys: pytest.CaptureFixture[str]) -> None:
    from appliance import cli

    assert cli.main(["watch", "--json", "--source", str(need(CLIPS / "no_face.mp4"))]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"t": pytest.approx(1.0, abs=0.15), "emotion": "no_face", "confidence": 1.0}
    summary = lines[-1]["summary"]
    assert summary["detector"] == "haar" and summary["classifier"] == "cpu"
    assert summary["fps"] > 0 and summary["frames"] > 0


@pytest.mark.parametrize("damage", [None, "truncated"])
def test_the_unit_reports_its_vision_backends_or_why_there_are_none(
    tmp_path: Path, damage: str | None
) -> None:
    import urllib.request

    from appliance.app import Appliance

    from .call_unit import free_port

    vision = {"model_card": str(broken_card(tmp_path, damage))} if damage else {}
    port = free_port()
    cfg = config.load(
        None,
        {
            "unit": {"data_dir": str(tmp_path / "data")},
            "web": {"port": port, "discovery": False},
            "camera": {"source": "pattern"},
            "speech": {"output": "wav"},
            "display": {"backend": "offscreen"},
            "vision": vision,
        },
        environ={},
    )
    unit = Appliance(cfg).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            status = json.load(r)
        # The camera opened at start (outside a call it is closed again, and keeps no frame).
        assert [e.topic for e in unit.events.recent("camera")] == ["camera.ready"]
    finally:
        unit.close()
    if damage:
        assert status["vision"]["available"] is False
        assert "expected sha256" in status["vision"]["reason"]
    else:
        assert status["vision"]["available"] is True
        assert (status["vision"]["detector"], status["vision"]["classifier"]) == ("haar", "cpu")


@pytest.mark.hardware
@pytest.mark.skipif(not platform.edgetpu_devices(), reason="no Coral Edge TPU attached")
def test_edgetpu_classifier_and_detector_run_on_the_coral() -> None:
    cfg = vision_cfg(classifier="edgetpu", detector="edgetpu")
    events = EventBus()
    pipeline = open_pipeline(cfg, events)
    try:
        assert pipeline.backends == {"detector": "edgetpu", "classifier": "edgetpu"}
        source = FileSource(need(CLIPS / "single_face.mp4"), loop=False, realtime=False)
        frame = source.read()
        source.close()
        assert pipeline.tracker.detector.detect(frame.image)
        card = pipeline.card
        p = pipeline.classifier.classify(np.zeros((card.height, card.width, card.channels), np.uint8))
        assert p.sum() == pytest.approx(1.0, abs=0.02)
    finally:
        pipeline.close()
