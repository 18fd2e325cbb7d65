from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.call.media import CaptureTrack
from appliance.camera import CameraError, EndOfStream, Frame, FrameSource, select
from appliance.camera import capture as capture_module
from appliance.camera.capture import Capture
from appliance.camera.file import FileSource
from appliance.camera.pattern import PatternSource
from appliance.config import CameraConfig
from appliance.events import EventBus

from .conftest import CLIPS, need, write_video


def numbered_frames(n: int) -> list[np.ndarray]:
    """Frames whose mean brightness encodes their number, so order survives compression."""
    return [np.full((120, 160, 3), 10 + 20 * i, np.uint8) for i in range(n)]


def test_file_source_reads_a_written_video_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", numbered_frames(8), fps=30)
    source = FileSource(video, loop=False, realtime=False)
    levels = []
    with pytest.raises(EndOfStream):
        while True:
            frame = source.read()
            assert frame.image.shape == (120, 160, 3)
            levels.append(frame.image.mean())
    source.close()
    assert len(levels) == 8
    assert np.all(np.diff(levels) > 10)
    assert frame.position == pytest.approx(7 / 30)


def test_file_source_paces_in_real_time(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", numbered_frames(6), fps=20)
    source = FileSource(video, loop=True)
    start = time.monotonic()
    frames = [source.read() for _ in range(10)]  # loops past the end
    elapsed = time.monotonic() - start
    source.close()
    assert elapsed >= 9 / 20 * 0.9
    assert [f.index for f in frames] == list(range(10))
    assert frames[6].image.mean() == pytest.approx(frames[0].image.mean(), abs=3)


@pytest.mark.parametrize(
    "clip", ["single_face.mp4", "no_face.mp4", "WolfgangLanger_Pexels.mp4", "multi_face.jpg"]
)
def test_sample_clips(clip: str) -> None:
    source = FileSource(need(CLIPS / clip), loop=False, realtime=False)
    frame = source.read()
    source.close()
    assert frame.image.ndim == 3 and frame.image.shape[2] == 3
    assert frame.image.std() > 5  # real picture, not blank


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match=r"camera file .*nope\.mp4 does not exist"):
        FileSource(tmp_path / "nope.mp4")


def test_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(CameraError, match="is not a video OpenCV can decode"):
        FileSource(junk)
    fake_png = tmp_path / "junk.png"
    fake_png.write_bytes(b"\x89PNG nope")
    with pytest.raises(CameraError, match="is not an image OpenCV can decode"):
        FileSource(fake_png)


def test_pattern_moves_and_says_no_camera() -> None:
    source = PatternSource(320, 240, fps=100)
    a, b = source.read(), source.read()
    assert a.image.shape == (240, 320, 3)
    assert not np.array_equal(a.image, b.image)
    # The caption band: black with white text across the middle.
    band = a.image[100:140, 40:280]
    assert (band == 0).mean() > 0.5 and (band == 255).any()


def paced_source(kind: str, tmp_path: Path) -> FrameSource:
    if kind == "pattern":
        return PatternSource(160, 120, fps=15)
    return FileSource(write_video(tmp_path / "v.avi", numbered_frames(6), fps=15))


@pytest.mark.parametrize("kind", ["pattern", "file"])
def test_a_source_left_unread_goes_on_at_its_rate(kind: str, tmp_path: Path) -> None:
    """Not read for a while (a paused capture, a real camera working meanwhile): no catch-up burst."""
    source = paced_source(kind, tmp_path)
    for _ in range(3):
        source.read()
    time.sleep(2)
    start, count = time.monotonic(), 0
    while time.monotonic() - start < 1:
        source.read()
        count += 1
    source.close()
    assert 10 <= count <= 15 + 2


def test_auto_without_camera_reports_why() -> None:
    with pytest.raises(CameraError, match=r"picamera2: .*; opencv: no webcam at '/dev/video99'"):
        select.open_source(CameraConfig(source="auto", device="/dev/video99"))


def test_capture_newest_frame_wins(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", numbered_frames(5), fps=30)
    cfg = CameraConfig(source="file", file=video, loop=True, fps=30)
    events = EventBus()
    capture = Capture(select.opener(cfg), events, retry_seconds=0.2).start()
    try:
        first = capture.wait_newer(-1, timeout=5)
        assert first is not None
        time.sleep(0.5)  # a slow consumer skips frames instead of queueing them
        latest = capture.wait_newer(first.index, timeout=5)
        assert latest is not None and latest.index >= first.index + 10
        assert capture.active == "file"
        assert [e.topic for e in events.recent("camera")] == ["camera.ready"]
    finally:
        capture.close()


def test_capture_survives_a_lost_camera_and_recovers(tmp_path: Path) -> None:
    """The file vanishes and comes back: pattern meanwhile, events for both, no crash."""
    video = write_video(tmp_path / "v.avi", numbered_frames(3), fps=30)
    spare = tmp_path / "spare.avi"
    video.rename(spare)
    cfg = CameraConfig(source="file", file=video, loop=False, fps=30)
    events = EventBus()
    capture = Capture(select.opener(cfg), events, retry_seconds=0.2, width=160, height=120, fps=30).start()
    try:
        frame = capture.wait_newer(-1, timeout=5)
        assert frame is not None and frame.image.shape == (120, 160, 3)
        assert capture.active == "pattern"
        spare.rename(video)
        deadline = time.monotonic() + 5
        while not events.recent("camera.recovered") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert capture.active == "file"
        topics = [e.topic for e in events.recent("camera")]
        assert topics[:2] == ["camera.lost", "camera.recovered"]
        assert "does not exist" in events.recent("camera.lost")[0].data["reason"]
    finally:
        capture.close()


class Broken(PatternSource):
    """A camera backend that fails in a way it did not foresee (not a CameraError) at its third
    picture: picamera2 slicing a USB webcam's 2-D YUYV picture, say."""

    name = "broken"

    def __init__(self) -> None:
        super().__init__(64, 48, 15)
        self.reads = 0

    def read(self) -> Frame:
        self.reads += 1
        if self.reads == 3:
            raise IndexError("too many indices for array: array is 2-dimensional")
        return super().read()


def test_a_camera_failing_in_a_way_its_backend_did_not_foresee_is_a_lost_camera() -> None:
    """The capture thread ended on anything but a CameraError: no camera.lost said, no retry, the
    call's video frozen on the last frame for the rest of the unit's run."""
    events = EventBus()
    capture = Capture(Broken, events, retry_seconds=0.2, width=64, height=48).start()
    try:
        deadline = time.monotonic() + 5
        while [e.topic for e in events.recent("camera")][-2:] != ["camera.lost", "camera.recovered"]:
            assert time.monotonic() < deadline, [e.topic for e in events.recent("camera")]
            time.sleep(0.05)
        assert "too many indices" in events.recent("camera.lost")[0].data["reason"]
        seen = capture.wait_newer(-1, timeout=2)
        assert seen is not None and capture.wait_newer(seen.index, timeout=2) is not None  # still live
    finally:
        capture.close()


class Unstarted(PatternSource):
    """A camera that opens but sends no picture (a loose ribbon cable: the sensor is listed, and
    libcamera's frontend times out), until ``fixed``; its close hangs while ``close_hangs`` is set."""

    name = "unstarted"
    fixed = False
    opened = 0

    def __init__(self) -> None:
        super().__init__(64, 48, 15)
        Unstarted.opened += 1
        self.close_hangs = threading.Event()

    def read(self) -> Frame:
        if not Unstarted.fixed:
            raise CameraError("the camera sent no frame for 2 s")
        return super().read()


def test_a_camera_that_opens_but_sends_nothing_is_lost_once_not_back_and_lost_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted as back when it opened, such a camera was said "back" then "lost" at every retry,
    on both units, for the whole call. Now it is back at its first frame, and retried ever later."""
    monkeypatch.setattr(Unstarted, "opened", 0)
    monkeypatch.setattr(Unstarted, "fixed", False)
    events = EventBus()
    capture = Capture(Unstarted, events, retry_seconds=0.1, width=64, height=48).start()
    try:
        time.sleep(2)
        assert [e.topic for e in events.recent("camera")] == ["camera.lost"]
        assert capture.active == "pattern" and capture.latest() is not None  # the pattern, live
        assert 3 <= Unstarted.opened <= 6  # 0, 0.1, 0.3, 0.7, 1.5 s (20 at 0.1 s apart)
        Unstarted.fixed = True
        deadline = time.monotonic() + 5
        while not events.recent("camera.recovered"):
            assert time.monotonic() < deadline, [e.topic for e in events.recent("camera")]
            time.sleep(0.05)
        assert capture.active == "unstarted"
    finally:
        capture.close()
    assert [e.topic for e in events.recent("camera")] == ["camera.lost", "camera.recovered"]


def test_a_camera_whose_close_hangs_is_said_lost_and_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """libcamera's stop can hang after a frontend timeout: the loss was said only after the close
    returned, so never, and the call's video stayed frozen, unsaid, until the unit restarted."""
    monkeypatch.setattr(capture_module, "CLOSE_SECONDS", 0.5)
    hanging: list[Unstarted] = []

    class Hangs(Unstarted):
        def close(self) -> None:
            hanging.append(self)
            self.close_hangs.wait(30)

    monkeypatch.setattr(Unstarted, "fixed", False)
    events = EventBus()
    capture = Capture(Hangs, events, retry_seconds=60, width=64, height=48).start()
    try:
        deadline = time.monotonic() + 5
        while not events.recent("camera.lost"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = capture.wait_newer(-1, timeout=2)
        assert seen is not None and capture.wait_newer(seen.index, timeout=2) is not None  # the pattern
        assert capture.active == "pattern"
        started = time.monotonic()
        capture.close()
        assert time.monotonic() - started < 2
    finally:
        for source in hanging:
            source.close_hangs.set()
    assert [e.topic for e in events.recent("camera")] == ["camera.lost"]


def test_a_dead_camera_is_said_lost_once_not_at_every_call() -> None:
    """The camera is gone for good: each call's start (the capture resumed) said "Camera lost." as
    news, for months; the fault line shows it all along."""
    events = EventBus()

    def gone() -> FrameSource:
        raise CameraError("no camera found")

    capture = Capture(gone, events, retry_seconds=60, width=64, height=48).start()
    try:
        for _ in range(3):  # three calls
            capture.pause()
            time.sleep(0.2)
            capture.resume()
            assert capture.wait_newer(-1, timeout=2) is not None  # the pattern
    finally:
        capture.close()
    assert [e.topic for e in events.recent("camera")] == ["camera.lost"]


class Tagged(PatternSource):
    """A camera whose every picture is one grey level: which time it was opened."""

    name = "tagged"

    def __init__(self, level: int) -> None:
        super().__init__(64, 48, 15)
        self.level = level

    def read(self) -> Frame:
        frame = super().read()
        return replace(frame, image=np.full_like(frame.image, self.level))


def test_the_next_call_is_never_sent_the_last_picture_of_the_call_before() -> None:
    """Between calls the camera is closed; a Pi camera takes a moment to start again. Meanwhile the
    new call's video is black: the last frame of the call before (someone else's call, maybe) is
    not sent to the new party."""
    opened: list[int] = []

    def opener() -> Tagged:
        if opened:
            time.sleep(1.0)  # the camera starting again for the next call
        opened.append(len(opened))
        return Tagged(100 + 50 * len(opened))  # 150 in the first call, 200 in the next

    async def sent(capture: Capture, frames: int) -> list[int]:
        track = CaptureTrack(capture, 64, 48, 15)
        return [int((await track.recv()).to_ndarray(format="bgr24").mean()) for _ in range(frames)]

    capture = Capture(opener, EventBus(), width=64, height=48).start()
    try:
        first = capture.wait_newer(-1, timeout=5)
        assert first is not None and int(first.image.mean()) == 150
        capture.pause()  # the call ends
        time.sleep(0.3)
        capture.resume()  # the next call rings
        levels = asyncio.run(sent(capture, 30))
    finally:
        capture.close()
    assert 150 not in levels, levels
    assert levels[0] == 0 and levels[-1] == 200, levels  # black until the camera delivers again
