"""Vision targets: frames per second against the `fer` package, and the sample clip's events.

The peer runs in its own virtualenv so fer's TensorFlow never enters ours. Set it up once:

    python3 -m venv .venv-peer && .venv-peer/bin/pip install --no-deps fer==25.10.3 \\
      && .venv-peer/bin/pip install "tensorflow>=2.18,<2.22" "opencv-python-headless>=4.10,<5" \\
         pandas tqdm requests Pillow "setuptools<81"

Then, from the repository root:

    .venv/bin/python -m benchmarks.vision_fps [--frames 240] [--peer .venv-peer/bin/python]

Targets (issue 4): one 640x480 frame with one face (detection + crop + classification) at >= 60 fps
on one core, >= 10x the peer's `FER(mtcnn=False).detect_emotions` on the same frames; on the sample
clip the events follow sad -> surprised -> laughing, a held expression gives <= 1 spurious event a
minute and a change gives its event within 0.7 s. Both pipelines are pinned to one core; on a
machine shared with other work the CPU-time figures are the fairer ones, and both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from appliance import config
from appliance.camera.file import FileSource
from appliance.events import EventBus
from appliance.vision.select import open_pipeline
from appliance.vision.worker import FileFeed, VisionWorker

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "clips" / "WolfgangLanger_Pexels.mp4"
# The clip's expressions as its README gives them (judged by eye: a guide, not ground truth).
CLIP_ARC = (("sadness", 0.0, 6.0), ("surprise", 6.0, 10.0), ("happiness", 10.0, 19.7))
CHANGE_WITHIN = 0.7


def clip_frames(count: int) -> tuple[np.ndarray, float]:
    """``count`` frames spread over the clip, letterboxed to 640x480, and the clip's frame rate."""
    capture = cv2.VideoCapture(str(CLIP))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        pad = (480 - image.shape[0]) // 2
        frames.append(cv2.copyMakeBorder(image, pad, 480 - image.shape[0] - pad, 0, 0, cv2.BORDER_CONSTANT))
    capture.release()
    step = max(1, len(frames) // count)
    return np.stack(frames[::step][:count]), fps / step


def bench_ours(frames: np.ndarray, fps: float, vision: dict[str, object]) -> dict[str, float]:
    cfg = config.load(None, {"vision": {"threads": 1, **vision}}, environ={})
    pipeline = open_pipeline(cfg.vision)
    pipeline.process(frames[0], 0.0)  # warm-up: first interpreter run
    start, cpu = time.perf_counter(), time.process_time()
    for i, frame in enumerate(frames):
        pipeline.process(frame, 1.0 + i / fps)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    face = pipeline.frames_with_face / pipeline.frames
    pipeline.close()
    return {"fps": len(frames) / seconds, "cpu_fps": len(frames) / cpu, "face_rate": face}


def bench_peer(frames: np.ndarray, python: Path) -> dict[str, float] | None:
    if not python.exists():
        print(f"peer: {python} not found; set it up as this file's docstring says")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npy"
        np.save(path, frames)
        run = subprocess.run(
            [str(python), str(ROOT / "benchmarks" / "fer_peer.py"), str(path)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    if run.returncode != 0:
        print(f"peer failed: {run.stderr[-2000:]}")
        return None
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def file_events(video: Path, vision: dict[str, str]) -> tuple[list[tuple[float, str]], float]:
    """A video through the worker as `emocall watch` runs it: (time, label) events, seconds analysed."""
    cfg = config.load(None, {"vision": vision}, environ={})
    events = EventBus()
    seen: list[tuple[float, str]] = []
    events.subscribe(
        lambda e: (
            seen.append((float(e.data["t"]), str(e.data["emotion"]))) if e.topic == "vision.emotion" else None
        )
    )
    feed = FileFeed(FileSource(video, loop=False, realtime=False))
    worker = VisionWorker.open(cfg.vision, feed, events).start()
    worker.join()
    duration = worker.pipeline.frames / cfg.vision.analyse_fps if worker.pipeline else 0.0
    worker.close()
    feed.close()
    return seen, duration


def judge_clip(events: list[tuple[float, str]], duration: float) -> None:
    labels = [label for _, label in events]
    first_ok = bool(labels) and (labels[0] == "sadness" or labels[:2] == ["neutral", "sadness"])
    print(f"clip events: {', '.join(f'{t:.2f}s {label}' for t, label in events) or 'none'}")
    print(
        f"clip arc: first {labels[:2]} (want sadness or neutral then sadness): {'ok' if first_ok else 'NO'}; "
        f"last {labels[-1:]} (want happiness): {'ok' if labels[-1:] == ['happiness'] else 'NO'}"
    )
    spurious = 0
    for label, start, end in CLIP_ARC:
        # An expression's own event may come a little before a boundary judged by eye.
        last = end == CLIP_ARC[-1][2]
        inside = [
            (t, got) for t, got in events if start - CHANGE_WITHIN <= t and (last or t < end - CHANGE_WITHIN)
        ]
        opening = 2 if start == 0 and [g for _, g in inside[:2]] == ["neutral", label] else 1
        spurious += max(0, len(inside) - opening)  # a held expression should give its one event only
        hits = [t for t, got in inside if got == label]
        latency = f"after {hits[0] - start:.2f} s" if hits else "never"
        print(f"  {label:<10} {start:4.1f}-{end:4.1f} s: {[g for _, g in inside]}, {label} {latency}")
    print(
        f"clip spurious events: {spurious} in {duration:.1f} s = {spurious / duration * 60:.1f} a minute "
        f"(target <= 1); latencies above count from boundaries judged by eye (target {CHANGE_WITHIN} s)"
    )


def fer_cuts(vision: dict[str, str]) -> None:
    """Cuts between FERPlus faces with known times: how fast the new face's expression is reported."""
    from tests.vision_faces import build_video, pick_faces, score

    with tempfile.TemporaryDirectory() as tmp:
        video, segments = build_video(Path(tmp) / "faces.avi", list(pick_faces(per_class=4)), hold=1.5)
        seen, _ = file_events(video, vision)
    result = score(segments, seen)
    lat = np.array(result.latencies)
    print(
        f"FERPlus cuts: {result.matched}/{result.faces} faces reported right; event after the cut: "
        f"median {np.median(lat):.2f} s, {np.mean(lat <= CHANGE_WITHIN):.0%} within {CHANGE_WITHIN} s "
        f"(of the {len(lat)} cuts whose expression was reported)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=240, help="frames of the clip to time (spread over it)")
    p.add_argument("--peer", type=Path, default=ROOT / ".venv-peer" / "bin" / "python")
    p.add_argument("--model-card", help="another emotion.json than the shipped one")
    args = p.parse_args()
    vision = {"model_card": args.model_card} if args.model_card else {}
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    frames, fps = clip_frames(args.frames)
    print(f"{len(frames)} frames of {CLIP.name}, letterboxed to 640x480, one core")
    ours = bench_ours(frames, fps, vision)
    every = bench_ours(frames, fps, {**vision, "detect_every": 1})
    print(
        f"ours: {ours['fps']:.1f} fps wall clock, {ours['cpu_fps']:.1f} fps of CPU time "
        f"(face in {ours['face_rate']:.0%} of frames); with a whole-frame search on every frame: "
        f"{every['fps']:.1f} / {every['cpu_fps']:.1f} fps (target >= 60)"
    )
    peer = bench_peer(frames, args.peer)
    if peer:
        print(
            f"fer: {peer['fps']:.1f} fps wall clock, {peer['cpu_fps']:.1f} fps of CPU time "
            f"(face in {peer['faces'] / peer['frames']:.0%} of frames)"
        )
        print(
            f"ratio ours / fer: {ours['fps'] / peer['fps']:.1f}x wall clock, "
            f"{ours['cpu_fps'] / peer['cpu_fps']:.1f}x CPU time (target >= 10x)"
        )
    judge_clip(*file_events(CLIP, vision))
    fer_cuts(vision)


if __name__ == "__main__":
    main()
