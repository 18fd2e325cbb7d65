"""Runs a .tflite classifier on single faces with LiteRT, quantisation taken from the interpreter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class TfliteClassifier:
    def __init__(self, path: Path, threads: int = 1) -> None:
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] == np.float32:
            return x.astype(np.float32)
        info = np.iinfo(self.inp["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One face, already shaped like the input; returns float probabilities."""
        self.interpreter.set_tensor(self.inp["index"], self._quantise(x))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])[0]
        scale, zero = self.out["quantization"]
        return (y.astype(np.float32) - zero) * scale if self.out["dtype"] != np.float32 else y

    def predict(self, faces: np.ndarray, prep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.stack([self.invoke(prep(f)) for f in faces])


def ours_prep(face48: np.ndarray) -> np.ndarray:
    return face48.astype(np.float32)[None, :, :, None]
