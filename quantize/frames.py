"""Test faces as the unit sees them: pasted into a 640x480 frame, found by the runtime's detector, cropped.

``runtime_crops`` runs the appliance's own ``HaarDetector`` (its config defaults) and ``crop_face``
(at each of the card's margins) on each frame; ``vp8_round_trip`` first sends the frames through the
call's own VP8 encoder and decoder (aiortc's, which drive libvpx through PyAV) at the call's bitrate.
``calibrate_margin`` measures the crop margin that makes the runtime crop match the FER2013 crop;
``training_cuts`` cuts training faces the same way, for ``quantize.train --runtime-share``.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable, Iterator, Sequence

# aiortc before TensorFlow: its libsrtp crashes the process when loaded after TensorFlow's libraries.
import aiortc.codecs.vpx as vpx  # isort: skip
import av
import cv2
import numpy as np
from aiortc.jitterbuffer import JitterFrame

from appliance.config import CallConfig
from appliance.vision import Box
from appliance.vision.card import ModelCard
from appliance.vision.crop import crop_face
from appliance.vision.detect_haar import HaarDetector
from appliance.vision.tracking import pick

FRAME_W, FRAME_H = 640, 480
FACE_PX = 200  # a face at about arm's length from the unit's camera
CALL_FPS = round(CallConfig().fps)  # the call's default frame rate
TRAIN_FACE_PX = (120, 280)  # faces from 1/4 to 3/5 of the frame height: the detector's box jitter varies
HOLD_FRAMES = 5  # frames each face is sent for (1/3 s); the last one is analysed, the encoder has settled


def frame_with_face(face48: np.ndarray, size: int = FACE_PX, at: tuple[int, int] | None = None) -> np.ndarray:
    """A BGR 640x480 frame: a lit wall (vertical gradient), the face scaled to ``size`` px.

    ``at``: the face's top left corner; the middle of the frame if None.
    """
    wall = np.linspace(150, 90, FRAME_H, dtype=np.float32)[:, None].repeat(FRAME_W, axis=1)
    frame = wall.astype(np.uint8)
    x0, y0 = at or ((FRAME_W - size) // 2, (FRAME_H - size) // 2)
    frame[y0 : y0 + size, x0 : x0 + size] = cv2.resize(face48, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def chosen_face(detector: HaarDetector, frame: np.ndarray) -> Box | None:
    """The face the unit would analyse: the runtime tracker's choice among the detections."""
    boxes = detector.detect(frame)
    return pick(boxes, frame.shape[1], frame.shape[0]) if boxes else None


class FramesError(Exception):
    """The video path lost a frame."""


def runtime_crops(
    frames: Iterable[np.ndarray], card: ModelCard, margins: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """48x48 crops as the unit makes them, one per margin (``frames x margins x 48 x 48``; the card's
    ``margins`` if None), and a mask of the frames where a face was found."""
    detector = HaarDetector()
    margins = card.margins if margins is None else margins
    crops, found = [], []
    blank = np.zeros((len(margins), card.height, card.width), np.uint8)
    for frame in frames:
        box = chosen_face(detector, frame)
        found.append(box is not None)
        crops.append(np.stack([crop_face(frame, box, card, m)[..., 0] for m in margins]) if box else blank)
    return np.stack(crops), np.array(found)


def training_cuts(faces48: np.ndarray, card: ModelCard, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training faces cut as the unit cuts them, and which were found.

    Each face is pasted at a random size and place into a frame, then found and cropped by
    ``runtime_crops``: the Haar box sits a little off the FER2013 crop, differently for each face
    (on PrivateTest this cost fear 0.70 -> 0.58 with the model trained on the FER2013 crops alone).
    """
    rng = np.random.default_rng(seed)

    def scenes() -> Iterator[np.ndarray]:
        for face in faces48:
            size = int(rng.integers(TRAIN_FACE_PX[0], TRAIN_FACE_PX[1] + 1))
            at = (int(rng.integers(0, FRAME_W - size + 1)), int(rng.integers(0, FRAME_H - size + 1)))
            yield frame_with_face(face, size, at)

    crops, found = runtime_crops(scenes(), card, (card.margin,))
    return crops[:, 0], found


def calibrate_margin(faces48: np.ndarray, size: int = FACE_PX) -> tuple[float, float]:
    """The margin at which the runtime crop is the FER2013 crop (median over faces), and the share found.

    The pasted face is ``size`` px; the runtime's box is ``w``; the crop is ``w (1 + 2 margin)``.
    """
    detector = HaarDetector()
    widths = [b.w for f in faces48 if (b := chosen_face(detector, frame_with_face(f, size)))]
    return margin_for(widths, size), len(widths) / len(faces48)


def margin_for(widths: Sequence[float], size: int = FACE_PX) -> float:
    """The margin at which boxes of these widths (median) crop a face pasted at ``size`` px."""
    return round((size / float(np.median(widths)) - 1.0) / 2.0, 3)


def vp8_round_trip(frames: Iterable[np.ndarray], hold: int = HOLD_FRAMES) -> Iterator[np.ndarray]:
    """Each frame as the other unit decodes it after ``hold`` frames of it went through the call's VP8.

    One continuous stream, as in a call: aiortc's ``Vp8Encoder`` at its starting bitrate (what a call
    sends before congestion control moves it), RTP payloads depayloaded and decoded by ``Vp8Decoder``.
    """
    encoder, decoder = vpx.Vp8Encoder(), vpx.Vp8Decoder()
    time_base = fractions.Fraction(1, CALL_FPS)
    pts = 0
    for frame in frames:
        decoded = None
        for _ in range(hold):
            video = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video.pts, video.time_base = pts, time_base
            pts += 1
            payloads, timestamp = encoder.encode(video)
            data = b"".join(vpx.vp8_depayload(p) for p in payloads)
            for out in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
                decoded = out
        if decoded is None:
            raise FramesError(f"the VP8 decoder returned no frame for {hold} frames sent")
        yield decoded.to_ndarray(format="bgr24")


def bitrate() -> int:
    """The bitrate the call's VP8 encoder starts at (aiortc's default)."""
    return vpx.DEFAULT_BITRATE
