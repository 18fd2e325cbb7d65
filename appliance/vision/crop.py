"""The face crop exactly as the model card says: margins, square, size and channels, from the full frame."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from appliance.vision import Box, Classifier
from appliance.vision.card import ModelCard


def crop_face(image: np.ndarray, box: Box, card: ModelCard, margin: float | None = None) -> np.ndarray:
    """A uint8 ``height x width x channels`` crop of a BGR frame, ready for the classifier.

    ``margin``: one of the card's ``margins``; its calibrated ``margin`` if None.
    """
    margin = card.margin if margin is None else margin
    cx, cy = box.centre
    w, h = (max(box.w, box.h),) * 2 if card.square else (box.w, box.h)
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    x1, y1 = x0 + max(1, round(w)), y0 + max(1, round(h))
    ih, iw = image.shape[:2]
    region = image[max(y0, 0) : min(y1, ih), max(x0, 0) : min(x1, iw)]
    # A face at the frame's edge: repeat the border rather than shift the crop off the face.
    top, bottom, left, right = max(0, -y0), max(0, y1 - ih), max(0, -x0), max(0, x1 - iw)
    if top or bottom or left or right:
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
    if card.channels == 1:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    elif card.channels == 3:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2RGB)
    face = cv2.resize(region, (card.width, card.height), interpolation=cv2.INTER_AREA)
    return np.asarray(face, np.uint8).reshape(card.height, card.width, card.channels)


class TwoCuts:
    """A tracked face cut at the card's margins in turn, one cut and one classifier pass a frame; the
    answer is the mean of the newest answer of each cut, so a held face is read as its cuts averaged
    (what ``quantize.evaluate`` scores) at the per-face cost the card measures for one pass."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self._answers: deque[np.ndarray] = deque(maxlen=len(card.margins))
        self._turn = 0

    def classify(self, classifier: Classifier, image: np.ndarray, box: Box) -> np.ndarray:
        margin = self.card.margins[self._turn]
        self._turn = (self._turn + 1) % len(self.card.margins)
        self._answers.append(classifier.classify(crop_face(image, box, self.card, margin)))
        return np.asarray(np.mean(self._answers, axis=0), np.float32)

    def reset(self) -> None:
        """Forget the answers: the face left, or the next one is another face."""
        self._answers.clear()
        self._turn = 0
