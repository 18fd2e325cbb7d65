"""Expression classifier on the processor: LiteRT with XNNPACK, thread count from config."""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.vision.card import ModelCard, ModelError
from appliance.vision.litert import Tensors, cpu_interpreter


class LiteRtClassifier:
    """Runs the card's model in a LiteRT interpreter; the Edge TPU backend reuses it."""

    def __init__(self, name: str, interpreter: Any, card: ModelCard) -> None:
        self.name = name
        self._tensors = Tensors(interpreter)
        expected = (1, card.height, card.width, card.channels)
        if self._tensors.shape != expected:
            raise ModelError(f"model input is {self._tensors.shape} but card {card.path} says {expected}")
        outputs = int(np.prod(self._tensors.output["shape"]))
        if outputs != len(card.labels):
            raise ModelError(
                f"model gives {outputs} outputs but card {card.path} has {len(card.labels)} labels"
            )

    def classify(self, face: np.ndarray) -> np.ndarray:
        return as_probabilities(self._tensors.run(face).reshape(-1))

    def close(self) -> None:
        self._tensors.interpreter = None


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """Softmax outputs pass through; logits (a model exported without softmax) are normalised."""
    if values.min() >= 0 and abs(float(values.sum()) - 1.0) < 0.05:
        return values.astype(np.float32)
    e = np.exp(values - values.max())
    return np.asarray(e / e.sum(), np.float32)


def open_cpu(card: ModelCard, threads: int) -> LiteRtClassifier:
    return LiteRtClassifier("cpu", cpu_interpreter(card.model_path(), threads), card)
