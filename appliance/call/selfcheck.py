"""`emocall selftest`'s call part: the network address, the video encoder and the call audio source."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from appliance.call import CallError
from appliance.call.lan import host_address
from appliance.call.microphone import open_input
from appliance.config import CallConfig


def check(cfg: CallConfig) -> str:
    """What a call would use here; raises CallError (or LanError) saying what is missing."""
    address = host_address()
    codec = RTCRtpCodecParameters(mimeType=f"video/{cfg.codec}", clockRate=90000, payloadType=96)
    frame = av.VideoFrame.from_ndarray(np.zeros((cfg.height, cfg.width, 3), np.uint8), format="bgr24")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    start = time.perf_counter()
    try:
        payloads, _ = get_encoder(codec).encode(frame)
    except (ValueError, av.FFmpegError) as e:
        raise CallError(f"the {cfg.codec} encoder does not work: {e}") from e
    if not payloads:
        raise CallError(f"the {cfg.codec} encoder produced nothing")
    ms = (time.perf_counter() - start) * 1000
    source = open_input(cfg)
    source.close()
    return (
        f"{cfg.codec} {cfg.width}x{cfg.height} frame encoded in {ms:.0f} ms; address {address}; "
        f"call audio: {source.name}"
    )
