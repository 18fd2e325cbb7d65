"""Runs a .tflite classifier on single faces, with the appliance's own LiteRT wrapper.

Evaluation and benchmarks go through the same quantisation code as the unit does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.vision.litert import Tensors, cpu_interpreter


class TfliteClassifier:
    def __init__(self, path: Path, threads: int = 1) -> None:
        self.tensors = Tensors(cpu_interpreter(path, threads))

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One face, already shaped like the input; returns float outputs."""
        return self.tensors.run(x).reshape(-1)

    def predict(self, faces: np.ndarray, prep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.stack([self.invoke(prep(f)) for f in faces])


def ours_prep(face48: np.ndarray) -> np.ndarray:
    return face48.astype(np.float32)[..., None]
