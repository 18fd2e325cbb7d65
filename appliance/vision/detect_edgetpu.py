"""Face detection on the Coral Edge TPU: Coral's SSD MobileNet v2 face model (Pi-only).

The image build downloads the model; ``vision.detector_model`` names its path. Needs the device and
libedgetpu, so it cannot run on a development machine; :mod:`appliance.vision.select` falls back
to Haar when it fails, and says why.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.vision import Box, VisionError
from appliance.vision.litert import edgetpu_interpreter


class EdgeTpuDetector:
    name = "edgetpu"

    def __init__(self, model: Path, threshold: float = 0.5) -> None:
        if not model.is_file():
            raise VisionError(f"Edge TPU face model {model} is missing: set vision.detector_model")
        self._interpreter = edgetpu_interpreter(model)
        details = self._interpreter.get_input_details()[0]
        self._index = details["index"]
        self._height, self._width = (int(d) for d in details["shape"][1:3])
        self.threshold = threshold

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Box]:
        """Always searches the whole frame: on the TPU that is as cheap as a local search."""
        ih, iw = image.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(image, (self._width, self._height)), cv2.COLOR_BGR2RGB)
        self._interpreter.set_tensor(self._index, rgb[np.newaxis])
        self._interpreter.invoke()
        # The SSD post-processing op's outputs: boxes (ymin, xmin, ymax, xmax in 0-1), classes, scores.
        out = self._interpreter.get_output_details()
        boxes = self._interpreter.get_tensor(out[0]["index"])[0]
        scores = self._interpreter.get_tensor(out[2]["index"])[0]
        return [
            Box(x0 * iw, y0 * ih, (x1 - x0) * iw, (y1 - y0) * ih)
            for (y0, x0, y1, x1), score in zip(boxes, scores, strict=False)
            if score >= self.threshold
        ]

    def close(self) -> None:
        self._interpreter = None
