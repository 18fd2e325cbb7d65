"""The large-type display checked by the pixels of its PNG snapshots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import DisplayConfig
from appliance.display import DisplayError, view
from appliance.display.layout import BOTTOM, TOP
from appliance.display.offscreen import OffscreenScreen
from appliance.display.select import open_screen
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.words.phrases import Phrases

W, H = 800, 480
BLUE_BGR = (200, 60, 10)


class Shown:
    def __init__(self, tmp_path: Path) -> None:
        self.events = EventBus()
        self.screen = OffscreenScreen((W, H))
        self.display = Display(self.screen, self.events, Phrases("en"), unit_name="Kitchen", fps=30)
        self.dir = tmp_path
        self.n = 0

    def png(self) -> np.ndarray:
        assert self.display.flush()
        self.n += 1
        path = self.screen.snapshot(self.dir / f"shot{self.n}.png")
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (H, W, 3)
        return image


@pytest.fixture
def shown(tmp_path: Path) -> Iterator[Shown]:
    made = Shown(tmp_path)
    yield made
    made.display.close()


def yellow(region: np.ndarray) -> np.ndarray:
    b, g, r = (region[..., i].astype(int) for i in range(3))
    return (r > 200) & (g > 200) & (b < 80)


def white(region: np.ndarray) -> np.ndarray:
    return np.all(region > 200, axis=-1)


def bands(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    top, bottom = int(H * TOP), int(H * BOTTOM)
    return image[:top], image[top : H - bottom], image[H - bottom :]


def test_remote_emotion_fills_the_bottom_in_large_yellow_type(shown: Shown) -> None:
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.display.set_remote_frame(np.full((240, 320, 3), BLUE_BGR, np.uint8))
    shown.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    top, middle, bottom = bands(shown.png())
    text = yellow(bottom)
    assert text.mean() > 0.08  # the word is there, and big
    rows = np.flatnonzero(text.any(axis=1))
    assert rows[-1] - rows[0] > 0.22 * H  # letters over a fifth of the screen's height
    background = bottom[~text]
    assert np.mean(np.all(background < 60, axis=-1) | yellow(background[None])[0]) > 0.9  # on black
    assert white(top).mean() > 0.03  # the state line
    assert yellow(top).mean() == 0 and yellow(middle).mean() < 0.001
    video = middle[:, W // 2 - 100 : W // 2 + 100]
    assert np.abs(video.reshape(-1, 3).mean(axis=0) - BLUE_BGR).max() < 10  # the remote picture


def test_each_emotion_has_its_own_word_and_no_emotion_shows_none(shown: Shown) -> None:
    masks = []
    for label in ("happiness", "sadness", "surprise"):
        shown.events.publish("remote.emotion", label, peer="Asha", emotion=label, confidence=0.9)
        masks.append(yellow(bands(shown.png())[2]))
    assert all(not np.array_equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :])
    shown.events.publish("call.state", "ended", state="ended", peer="Asha", reason="")
    _, middle, bottom = bands(shown.png())
    assert yellow(bottom).sum() == 0  # the expression goes with the call...
    assert middle.max() < 30  # ...and so does the video


def test_the_state_line_changes_with_the_call(shown: Shown) -> None:
    states = {}
    for state in ("ringing", "connected", "reconnecting"):
        shown.events.publish("call.state", state, state=state, peer="Asha", reason="")
        states[state] = white(bands(shown.png())[0])
        assert states[state].mean() > 0.02
    assert not np.array_equal(states["ringing"], states["connected"])
    assert not np.array_equal(states["connected"], states["reconnecting"])


def test_a_pairing_code_is_shown_large(shown: Shown) -> None:
    shown.events.publish("pairing.code", "code", code="482193", purpose="pair")
    _, _, bottom = bands(shown.png())
    columns = np.flatnonzero(yellow(bottom).any(axis=0))
    assert columns[-1] - columns[0] > 0.4 * W  # six digits, each as tall as the band allows
    shown.events.publish("pairing.done", "paired", peer="Asha")
    assert yellow(bands(shown.png())[2]).sum() == 0


def test_remote_without_a_face_is_shown_in_grey_not_yellow(shown: Shown) -> None:
    shown.events.publish("remote.no_face", "no face", peer="Asha")
    _, _, bottom = bands(shown.png())
    grey = np.all((bottom > 150) & (bottom < 190), axis=-1)
    assert grey.mean() > 0.02 and yellow(bottom).sum() == 0


def test_periodic_snapshots_and_selection(tmp_path: Path) -> None:
    cfg = DisplayConfig(backend="offscreen", width=320, height=240, snapshot_seconds=0.01)
    screen = open_screen(cfg, tmp_path)
    assert screen.name == "offscreen" and screen.size == (320, 240)
    display = Display(screen, EventBus(), Phrases("en"), fps=30)
    assert display.flush()
    display.close()
    image = cv2.imread(str(tmp_path / "display.png"))
    assert image is not None and image.shape == (240, 320, 3)
    assert white(image[: int(240 * TOP)]).any()  # "Ready"


def test_snapshot_before_anything_is_drawn_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DisplayError, match="nothing has been drawn"):
        OffscreenScreen((100, 100)).snapshot(tmp_path / "x.png")


def test_a_language_without_a_font_falls_back_to_english(tmp_path: Path) -> None:
    screen = OffscreenScreen((W, H))
    display = Display(screen, EventBus(), Phrases("hi"), fps=30)
    try:
        assert display.scene.state == "Ready"
    finally:
        display.close()


def test_offscreen_display_writes_what_it_says_beside_the_snapshot(tmp_path: Path) -> None:
    events = EventBus()
    screen = OffscreenScreen((W, H), tmp_path / "display.png")
    display = Display(screen, events, Phrases("en"), unit_name="Kitchen", fps=30)
    try:
        events.publish("pairing.code", "New pairing code on the display", code="042917", purpose="pair")
        assert display.flush()
        lines = (tmp_path / "display.txt").read_text().splitlines()
        assert lines[0] == "Kitchen"
        assert lines[-1] == "042917"
        events.publish("remote.emotion", "Asha: happiness", peer="Asha", emotion="happiness", confidence=0.9)
        assert display.flush()
        assert (tmp_path / "display.txt").read_text().splitlines()[-1] == "Happy"
    finally:
        display.close()


def test_codes_say_how_long_they_work_and_leave_the_screen_when_used_or_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = EventBus()
    screen = OffscreenScreen((W, H), tmp_path / "display.png")
    display = Display(screen, events, Phrases("en"), unit_name="Kitchen", fps=30)

    def lines() -> list[str]:
        assert display.flush()
        return (tmp_path / "display.txt").read_text().splitlines()

    try:
        events.publish("unit.ready", "ready", name="Kitchen", address="192.168.1.20:8080")
        assert lines() == ["Kitchen", "Ready. Address 192.168.1.20:8080"]
        events.publish("pairing.code", "code", code="042917", purpose="owner", seconds=120)
        assert lines()[1:] == ["Owner code: 0 4 2 9 1 7. It works for 2 minutes.", "042917"]
        events.publish("pairing.code_used", "used", purpose="owner")
        assert lines() == ["Kitchen", "Ready. Address 192.168.1.20:8080"]
        events.publish("pairing.code", "code", code="123456", purpose="pair", seconds=0.3)
        assert lines()[-1] == "123456"
        deadline = time.monotonic() + 10
        while lines()[-1] == "123456" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines() == ["Kitchen", "Ready. Address 192.168.1.20:8080"]
        events.publish("pairing.locked", "locked", seconds=300, purpose="owner")
        assert lines()[1] == "Too many wrong codes: logging in to this unit is locked for 5 minutes."
        # Passing messages give the line back to the address: after pairing, after a lockout.
        monkeypatch.setattr(view, "SAID_S", 2.0)
        events.publish("pairing.done", "paired", peer="Asha")
        assert lines()[1] == "Paired with Asha."
        events.publish("pairing.locked", "locked", seconds=0.5, purpose="pair")
        deadline = time.monotonic() + 10
        while lines()[1] != "Ready. Address 192.168.1.20:8080" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines() == ["Kitchen", "Ready. Address 192.168.1.20:8080"]
    finally:
        display.close()
