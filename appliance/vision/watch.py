"""``emocall watch``: the camera and the vision pipeline alone, one line per event.

How a user or a maintainer checks what the unit sees. A file is analysed as fast as it decodes (not
in real time), with event times in seconds into the file; a camera runs until Ctrl-C.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, suppress
from typing import Any, TextIO

from appliance.camera import CameraError, select
from appliance.camera.capture import Capture
from appliance.camera.file import FileSource
from appliance.config import Config
from appliance.events import Event, EventBus
from appliance.vision.worker import FileFeed, FrameFeed, VisionWorker

TOPICS = {"vision.emotion": None, "vision.no_face": "no_face", "vision.face_back": "face_back"}


def _open_feed(cfg: Config, events: EventBus, stack: ExitStack) -> FrameFeed:
    cam = cfg.camera
    if cam.source == "file" and cam.file is not None:
        feed = FileFeed(FileSource(cam.file, loop=False, fps=cam.fps, realtime=False))
        stack.callback(feed.close)
        return feed
    capture = Capture(
        select.opener(cam),
        events,
        retry_seconds=cam.retry_seconds,
        width=cam.width,
        height=cam.height,
        fps=cam.fps,
    ).start()
    stack.callback(capture.close)
    return capture


def _line(event: Event, as_json: bool) -> str | None:
    if event.topic not in TOPICS:
        return None
    emotion = TOPICS[event.topic] or str(event.data["emotion"])
    if as_json:
        if emotion == "face_back":
            return None  # the JSON lines carry expressions and no_face only; an emotion follows
        confidence = float(event.data.get("confidence", 1.0))
        return json.dumps({"t": event.data["t"], "emotion": emotion, "confidence": confidence})
    detail = f" {float(event.data['confidence']):.2f}" if event.topic == "vision.emotion" else ""
    return f"{float(event.data['t']):8.2f}s  {emotion}{detail}"


def _summary(worker: VisionWorker, wall: float, as_json: bool) -> str:
    status: dict[str, Any] = worker.status()
    frames = worker.pipeline.frames if worker.pipeline else 0
    faces = worker.pipeline.frames_with_face if worker.pipeline else 0
    stats = {
        "frames": frames,
        "face_rate": round(faces / frames, 3) if frames else 0.0,
        "fps": round(frames / wall, 1) if wall else 0.0,
        "pipeline_fps": round(worker.fps, 1),
        "detector": status.get("detector"),
        "classifier": status.get("classifier"),
        "reasons": status.get("reasons", {}),
    }
    if as_json:
        return json.dumps({"summary": stats})
    reasons = stats["reasons"]
    return (
        f"analysed {stats['frames']} frames in {wall:.1f} s, a face in {stats['face_rate']:.0%}: "
        f"{stats['fps']} fps (pipeline alone {stats['pipeline_fps']} fps); detector {stats['detector']} "
        f"({reasons.get('detector')}), classifier {stats['classifier']} ({reasons.get('classifier')})"
    )


def run(cfg: Config, as_json: bool, out: TextIO, err: TextIO) -> int:
    events = EventBus()

    def show(event: Event) -> None:
        line = _line(event, as_json)
        if line is not None:
            print(line, file=out, flush=True)

    with ExitStack() as stack:
        try:
            feed = _open_feed(cfg, events, stack)
        except CameraError as e:
            print(f"emocall watch: {e}", file=err)
            return 1
        worker = VisionWorker.open(cfg.vision, feed, events)
        stack.callback(worker.close)
        if worker.pipeline is None:
            print(f"emocall watch: emotions unavailable: {worker.unavailable}", file=err)
            return 1
        events.subscribe(show)
        start = time.monotonic()
        worker.start()
        with suppress(KeyboardInterrupt):
            worker.join()
        print(_summary(worker, time.monotonic() - start, as_json), file=out)
        return 0 if worker.unavailable is None else 1
