"""The peer: the `fer` package's pipeline on the benchmark's frames, one core. Runs in .venv-peer.

    .venv-peer/bin/python benchmarks/fer_peer.py FRAMES.npy

Prints one JSON line: frames, fps (wall clock), cpu_fps (CPU time) and how many frames had a face.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from fer.fer import FER  # noqa: E402


def main() -> None:
    cv2.setNumThreads(1)
    frames = np.load(sys.argv[1])
    detector = FER(mtcnn=False)
    detector.detect_emotions(frames[0])  # loads the model: not part of the timing
    start, cpu = time.perf_counter(), time.process_time()
    faces = sum(1 for frame in frames if detector.detect_emotions(frame))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = len(frames)
    print(json.dumps({"frames": n, "fps": n / seconds, "cpu_fps": n / cpu, "faces": faces}))


if __name__ == "__main__":
    main()
