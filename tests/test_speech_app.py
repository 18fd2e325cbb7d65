"""The appliance as `emocall run` builds it: on start it says what works, and draws its display."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.app import Appliance
from appliance.audio.wav import read_wav

from .conftest import appliance_config
from .talking import wait_spoken
from .test_speech import rms


def test_the_unit_says_it_is_ready_and_what_works(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = appliance_config(data, "Kitchen", display={"backend": "offscreen", "snapshot_seconds": 0.2})
    unit = Appliance(cfg).start()
    try:
        assert unit.speech is not None and unit.display is not None
        announcer = unit.speech.announcer
        wait_spoken(announcer, 1, 20)
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


def test_the_owners_volume_applies_to_what_the_unit_says_from_then_on(tmp_path: Path) -> None:
    """The settings page's volume: the same sentence at 100 and then at 50 (an eighth of full scale,
    cubic, as PipeWire's percentages), changed while the unit runs."""
    data = tmp_path / "data"
    unit = Appliance(appliance_config(data, "Kitchen")).start()
    try:
        assert unit.speech is not None and unit.store is not None
        announcer = unit.speech.announcer
        assert announcer.wait_idle(20)
        played = []
        for volume in (100, 50):
            unit.store.update_settings({"volume": volume})
            announcer.say("Volume check.")
            assert announcer.wait_idle(15)
            played.append(unit.speech.speaker.played[-1])
    finally:
        unit.close()
    audio, rate = read_wav(data / "speaker.wav")
    loud, soft = (audio[round(p.start_s * rate) : round((p.start_s + p.duration_s) * rate)] for p in played)
    assert rms(soft) / rms(loud) == pytest.approx(1 / 8, rel=0.05)


def test_the_owners_name_for_the_unit_is_shown_and_said_at_the_next_start(tmp_path: Path) -> None:
    """[unit] name only seeds the name; once the owner renames the unit on the settings page, the
    screen shows the new name at once and the start-up sentence says it."""
    data = tmp_path / "data"
    cfg = appliance_config(data, "Kitchen", display={"backend": "offscreen", "snapshot_seconds": 0})
    unit = Appliance(cfg).start()
    try:
        assert unit.display is not None and unit.store is not None and unit.speech is not None
        assert unit.speech.announcer.wait_idle(20)
        assert unit.display.flush() and unit.display.scene.unit_name == "Kitchen"
        unit.store.update_settings({"display_name": "Hall"})
        assert unit.display.flush() and unit.display.scene.unit_name == "Hall"
    finally:
        unit.close()
    unit = Appliance(cfg).start()
    try:
        assert unit.display is not None and unit.speech is not None
        wait_spoken(unit.speech.announcer, 1, 20)
        assert unit.speech.announcer.spoken[0].item.text.startswith("Hall is ready.")
        assert unit.display.flush() and unit.display.scene.unit_name == "Hall"
    finally:
        unit.close()
