"""A moving test pattern that says "no camera": the picture when no camera works."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.camera import Frame
from appliance.timing import Pacer


class PatternSource:
    name = "pattern"

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 15.0, text: str = "no camera"
    ) -> None:
        self.width, self.height, self.fps, self.text = width, height, fps, text
        self._index = 0
        self._pacer = Pacer(fps)  # left unread for a while (a paused capture): no catch-up burst
        self._bars = self._colour_bars()

    def _colour_bars(self) -> np.ndarray:
        colours = np.array(
            [
                [255, 255, 255],
                [0, 255, 255],
                [255, 255, 0],
                [0, 255, 0],
                [255, 0, 255],
                [0, 0, 255],
                [255, 0, 0],
            ],
            dtype=np.uint8,
        )
        columns = np.arange(self.width) * len(colours) // self.width
        return np.repeat(colours[columns][None], self.height, axis=0)

    def read(self) -> Frame:
        self._pacer.wait()
        image = np.roll(self._bars, (self._index * 4) % self.width, axis=1)
        scale = self.height / 160
        size, _ = cv2.getTextSize(self.text, cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
        origin = ((self.width - size[0]) // 2, (self.height + size[1]) // 2)
        cv2.rectangle(image, (0, origin[1] - size[1] - 20), (self.width, origin[1] + 20), (0, 0, 0), -1)
        cv2.putText(
            image, self.text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 3, cv2.LINE_AA
        )
        frame = Frame(image, self._index, self._index / self.fps)
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""
