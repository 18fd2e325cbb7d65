"""Builds test videos from FERPlus PrivateTest faces at test time (never committed: FER's licence).

Faces are upscaled from 48x48 and placed at varying positions and sizes in 640x480 frames over a
soft, varying background, each held for a known time, so the expected events are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.vision.detect_haar import HaarDetector
from quantize.ferdata import LABELS, majority_labels

from .conftest import FER, need, write_video

WIDTH, HEIGHT = 640, 480
# Classes with enough PrivateTest faces; disgust and contempt have about 15 each with a majority.
CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "fear")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds into the video
    end: float
    label: str | None  # the face's majority label; None for a segment without a face
    box: tuple[int, int, int] | None  # x, y, side of the pasted face


def load_faces() -> tuple[np.ndarray, np.ndarray]:
    """PrivateTest faces and their FERPlus majority labels (-1: no majority)."""
    with np.load(need(FER / "test.npz")) as d:
        return d["images"], majority_labels(d["ferplus_votes_folder"].astype(np.float32))


def background(rng: np.random.Generator) -> np.ndarray:
    """A soft grey gradient with a little noise, different for each segment."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    a, b, c = rng.uniform(60, 170), rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)
    grey = a + b * xs + c * ys + rng.normal(0, 4, (HEIGHT, WIDTH))
    return np.asarray(np.clip(grey, 0, 255), np.uint8)


def paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int, side: int) -> None:
    canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)


def detectable(face: np.ndarray, detector: HaarDetector) -> bool:
    """Whether the unit's detector finds this face alone, 200 px wide, in the middle of a grey frame.

    The frontal cascade misses about a fifth of FER's tight, often turned or covered crops whatever
    we do; the video tests measure tracking over positions, sizes and cuts, not that.
    """
    canvas = np.full((HEIGHT, WIDTH), 110, np.uint8)
    paste(canvas, face, 220, 140, 200)
    return bool(detector.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)))


def pick_faces(per_class: int, seed: int = 4) -> list[tuple[np.ndarray, str]]:
    """``per_class`` detectable faces of each class, in an order where neighbours differ in label."""
    images, labels = load_faces()
    rng = np.random.default_rng(seed)
    detector = HaarDetector()
    chosen: dict[str, list[np.ndarray]] = {}
    for name in CLASSES:
        candidates = rng.permutation(np.flatnonzero(labels == LABELS.index(name)))
        found = (images[i] for i in candidates if detectable(images[i], detector))
        chosen[name] = [face for face, _ in zip(found, range(per_class), strict=False)]
    order: list[tuple[np.ndarray, str]] = []
    while any(chosen.values()):
        names = [n for n in CLASSES if chosen[n] and (not order or order[-1][1] != n)]
        if not names:
            break
        name = names[int(rng.integers(len(names)))]
        order.append((chosen[name].pop(), name))
    return order


def build_video(
    path: Path, faces: list[tuple[np.ndarray, str | None]], hold: float, fps: float = 15.0, seed: int = 7
) -> tuple[Path, list[Segment]]:
    """One segment per face (None: a segment without a face), each ``hold`` seconds long."""
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    segments: list[Segment] = []
    per_segment = round(hold * fps)
    for face, label in faces:
        back = background(rng)
        box = None
        start = len(frames) / fps
        if label is None:
            frames += [cv2.cvtColor(back, cv2.COLOR_GRAY2BGR)] * per_segment
        else:
            side = int(rng.integers(150, 301))
            x, y = int(rng.integers(4, WIDTH - side - 4)), int(rng.integers(4, HEIGHT - side - 4))
            box = (x, y, side)
            for _ in range(per_segment):
                # A little drift, as a person in front of the unit never holds perfectly still.
                canvas = back.copy()
                paste(canvas, face, x + int(rng.integers(-3, 4)), y + int(rng.integers(-3, 4)), side)
                frames.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
        segments.append(Segment(start, len(frames) / fps, label, box))
    return write_video(path, frames, fps), segments


@dataclass(frozen=True)
class Score:
    matched: int  # segments whose stable expression at the end is the face's label
    faces: int
    latencies: list[float]  # cut to the event naming the new face's label, where one came


def score(segments: list[Segment], emotions: list[tuple[float, str]]) -> Score:
    """``emotions``: (time, label) of each vision.emotion event, in order."""
    matched, latencies = 0, []
    faces = [s for s in segments if s.label is not None]
    for s in faces:
        before_end = [label for t, label in emotions if t < s.end]
        matched += bool(before_end) and before_end[-1] == s.label
        hits = [t for t, label in emotions if s.start <= t < s.end and label == s.label]
        if hits:
            latencies.append(hits[0] - s.start)
    return Score(matched, len(faces), latencies)
