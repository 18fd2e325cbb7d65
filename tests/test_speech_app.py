"""The appliance as `emocall run` builds it: on start it says what works, and draws its display."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from appliance import config
from appliance.app import Appliance
from appliance.audio.wav import read_wav

from .call_unit import free_port
from .test_speech import rms


def test_the_unit_says_it_is_ready_and_what_works(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = config.load(
        None,
        {
            "unit": {"data_dir": str(data), "name": "Kitchen"},
            "web": {"port": free_port(), "discovery": False},
            "camera": {"source": "pattern"},
            "speech": {"output": "wav"},
            "display": {"backend": "offscreen", "snapshot_seconds": 0.2},
        },
        environ={},
    )
    unit = Appliance(cfg).start()
    try:
        assert unit.speech is not None and unit.display is not None
        announcer = unit.speech.announcer
        deadline = time.monotonic() + 20
        while not announcer.spoken and time.monotonic() < deadline:
            time.sleep(0.05)
        assert announcer.wait_idle(15)
        first = announcer.spoken[0].item.text
        assert first.startswith("Kitchen is ready. Camera ready.")
        assert "Coral not found, using the processor." in first or "Using the Coral." in first
    finally:
        unit.close()
    audio, rate = read_wav(data / "speaker.wav")
    speech = audio[round(unit.speech.speaker.played[0].start_s * rate) :]
    assert rms(speech[: 2 * rate]) > 300
    image = cv2.imread(str(data / "display.png"))
    assert image is not None and np.all(image[: int(image.shape[0] * 0.16)] > 200, axis=-1).any()
