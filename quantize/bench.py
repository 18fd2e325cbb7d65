"""Per-face inference time on one thread with LiteRT: ours against the `fer` tflite, same run.

    python -m quantize.bench [--runs 2000]

Both models get real PrivateTest faces (each its own preprocessing, included in the time); prints
the median and p90 per face and the ratio ours / peer.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantize import ferdata, peer
from quantize.evaluate import MODELS
from quantize.tflite_run import TfliteClassifier, ours_prep


def time_per_face(
    clf: TfliteClassifier, faces: np.ndarray, prep: Callable[[np.ndarray], np.ndarray], runs: int
) -> np.ndarray:
    for face in faces[:50]:  # warm-up: XNNPACK packs weights on first invoke
        clf.invoke(prep(face))
    times = np.empty(runs)
    for i in range(runs):
        face = faces[i % len(faces)]
        start = time.perf_counter()
        clf.invoke(prep(face))
        times[i] = time.perf_counter() - start
    return times * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=MODELS)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args(argv)
    card = json.loads((args.models / "emotion.json").read_text())
    faces = ferdata.load_split("test").images[:500]
    ours = time_per_face(TfliteClassifier(args.models / card["file"]), faces, ours_prep, args.runs)
    fer = time_per_face(TfliteClassifier(peer.fer_tflite()), faces, peer.preprocess, args.runs)
    for name, t in (("ours (int8, 48x48)", ours), ("fer peer (64x64)", fer)):
        print(f"{name:<20} median {np.median(t):.3f} ms  p90 {np.percentile(t, 90):.3f} ms per face")
    print(f"ratio ours/peer (median): {np.median(ours) / np.median(fer):.2f}x (budget <= 4x)")


if __name__ == "__main__":
    main()
