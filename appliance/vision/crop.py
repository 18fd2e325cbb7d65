"""The face crop exactly as the model card says: margin, square, size and channels, from the full frame."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.vision import Box
from appliance.vision.card import ModelCard


def crop_face(image: np.ndarray, box: Box, card: ModelCard) -> np.ndarray:
    """A uint8 ``height x width x channels`` crop of a BGR frame, ready for the classifier."""
    cx, cy = box.centre
    w, h = (max(box.w, box.h),) * 2 if card.square else (box.w, box.h)
    w, h = w * (1 + 2 * card.margin), h * (1 + 2 * card.margin)
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
