"""The large-type display checked by the pixels of its PNG snapshots."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pygame
import pytest
from PIL import Image, ImageDraw, ImageFont, features

from appliance import config, selftest
from appliance.call import MISSED, NOT_ANSWERED, UNAVAILABLE
from appliance.config import DisplayConfig
from appliance.display import DisplayError, view
from appliance.display.fonts import BUILT_IN, Fonts, fontconfig_choice, for_language, letters
from appliance.display.layout import BOTTOM, FAULTS, MARGIN, TOP, draw
from appliance.display.offscreen import OffscreenScreen
from appliance.display.select import open_screen
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.words import scripts
from appliance.words.phrases import Phrases

W, H = 800, 480
BLUE_BGR = (200, 60, 10)


class Shown:
    """A display drawn off screen: its picture (a PNG per look) and its text (display.txt, a line
    per element), which the test reads."""

    def __init__(self, tmp_path: Path, language: str = "en", size: tuple[int, int] = (W, H)) -> None:
        self.events = EventBus()
        self.screen = OffscreenScreen(size, tmp_path / "display.png")
        self.display = Display(self.screen, self.events, Phrases(language), unit_name="Kitchen", fps=30)
        self.dir, self.size = tmp_path, size
        self.text = tmp_path / "display.txt"
        self.n = 0

    def png(self, path: Path | None = None) -> np.ndarray:
        assert self.display.flush()
        self.n += 1
        image = cv2.imread(str(self.screen.snapshot(path or self.dir / f"shot{self.n}.png")))
        assert image is not None and image.shape == (self.size[1], self.size[0], 3)
        return image

    def lines(self) -> list[str]:
        assert self.display.flush()
        return self.text.read_text(encoding="utf-8").splitlines()

    def wait_for(self, line: str, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while self.lines()[1] != line and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lines()


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


@pytest.fixture
def no_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fontconfig that knows no font, as on a machine without the script's fonts (the unit asks
    fontconfig once per language: its answers are forgotten before and after)."""
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        f"<fontconfig><dir>{tmp_path}/none</dir><cachedir>{tmp_path}/cache</cachedir></fontconfig>"
    )
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    fontconfig_choice.cache_clear()
    yield
    fontconfig_choice.cache_clear()


def test_a_language_without_a_font_falls_back_to_english(no_fonts: None) -> None:
    screen = OffscreenScreen((W, H))
    display = Display(screen, EventBus(), Phrases("hi"), fps=30)
    try:
        assert display.scene.state == "Starting"
    finally:
        display.close()


def test_the_screen_says_ready_only_once_the_unit_is() -> None:
    """It showed "Ready" from the moment it opened: a unit whose start then failed, restarted
    every few seconds by systemd, showed "Ready" all along to whoever helps its owner."""
    events = EventBus()
    display = Display(OffscreenScreen((W, H)), events, Phrases("en"), fps=30)
    try:
        assert display.scene.state == "Starting"
        events.publish("unit.ready", "ready", name="Asha", address="192.0.2.5:8080")
        assert display.scene.state == "Ready. Address 192.0.2.5:8080"
    finally:
        display.close()


def ink(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def overlap(shown: np.ndarray, reference: np.ndarray) -> float:
    """Intersection over union of two letter shapes, the reference scaled to the shown one."""
    h, w = shown.shape
    scaled = cv2.resize(reference.astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA) > 0
    return float((shown & scaled).sum() / (shown | scaled).sum())


def shaped(text: str, path: Path) -> np.ndarray:
    """``text``'s ink as HarfBuzz lays it out in the font at ``path`` (Pillow's raqm layout, which
    without libraqm falls back to letter by letter, silently)."""
    assert features.check("raqm"), "Pillow without raqm: the reference would not be shaped"
    font = ImageFont.truetype(str(path), 160, layout_engine=ImageFont.Layout.RAQM)
    canvas = Image.new("L", (1600, 480))
    ImageDraw.Draw(canvas).text((20, 80), text, font=font, fill=255)
    return ink(np.asarray(canvas) > 128)


def script_font(language: str) -> Path:
    path = fontconfig_choice(language)
    assert path is not None and "lohit" in str(path).lower(), (
        f"no {language} font: bash .ci/setup installs it"
    )
    return path


@pytest.mark.parametrize(("language", "label"), [("hi", "disgust"), ("hi", "contempt"), ("bn", "sadness")])
def test_hindi_and_bengali_are_drawn_as_harfbuzz_shapes_them(
    tmp_path: Path, language: str, label: str
) -> None:
    """घिन and বিষণ্ণ have a vowel sign drawn before the consonant it follows, तिरस्कार and বিষণ্ণ
    conjuncts: the reference is Pillow's raqm layout (HarfBuzz) in the same font."""
    events, screen = EventBus(), OffscreenScreen((W, H))
    display = Display(screen, events, Phrases(language), fps=30)
    try:
        events.publish("remote.emotion", label, peer="Asha", emotion=label, confidence=0.9)
        assert display.flush()
        shown = ink(yellow(cv2.imread(str(screen.snapshot(tmp_path / "shot.png")))[H - int(H * BOTTOM) :]))
    finally:
        display.close()
    word, path = Phrases(language).word(label), script_font(language)
    unshaped = pygame.font.Font(str(path), 160).render(word, True, (255, 255, 255), (0, 0, 0))
    assert overlap(shown, shaped(word, path)) > 0.85
    assert overlap(shown, ink(pygame.surfarray.array2d(unshaped).T != 0)) < 0.5  # letter by letter


def drawn(fonts: Fonts, text: str) -> bytes:
    return pygame.image.tobytes(fonts.render(text, 400, 60, (255, 255, 255)), "RGB")


def test_every_letter_comes_from_a_font_that_has_it_not_as_a_box() -> None:
    """Lohit Bengali has no Latin letters: "Asha" in a Bengali line is the built-in font's, as in
    English; a Hindi name in a Bengali line is Lohit Devanagari's, shaped as in Hindi."""
    assert "A" not in letters(script_font("bn"))
    bengali, _ = for_language(Phrases("bn"), None)
    english, _ = for_language(Phrases("en"), None)
    hindi, _ = for_language(Phrases("hi"), None)
    only_bengali = Fonts(bengali.faces[:1])  # one font for everything: boxes for what it lacks
    assert drawn(bengali, "Asha") == drawn(english, "Asha") != drawn(only_bengali, "Asha")
    assert drawn(bengali, "आशा") == drawn(hindi, "आशा") != drawn(only_bengali, "आशा")
    assert drawn(english, "Ready") == drawn(Fonts(english.faces[:1]), "Ready")  # English as before


def test_a_configured_font_without_latin_letters_still_writes_english() -> None:
    fonts, phrases = for_language(Phrases("en"), script_font("bn"))
    assert phrases.language == "en" and fonts.path == script_font("bn")
    assert drawn(fonts, "Ready") == drawn(for_language(Phrases("en"), None)[0], "Ready")


def test_the_language_can_change_while_the_unit_runs(tmp_path: Path) -> None:
    events, screen = EventBus(), OffscreenScreen((W, H), tmp_path / "display.png")
    display = Display(screen, events, Phrases("en"), fps=30)
    try:
        events.publish("unit.ready", "ready", name="Kitchen", address="192.168.1.20:8080")
        events.publish("settings.changed", "settings", settings={"voice_language": "bn"})
        assert display.flush()
        assert display.scene.state == Phrases("bn").say("idle_address", address="192.168.1.20:8080")
        shown = cv2.imread(str(screen.snapshot(tmp_path / "bn.png")))
        bengali, _ = for_language(Phrases("bn"), None)
        expected = pygame.surfarray.array3d(draw(display.scene, (W, H), bengali)).transpose(1, 0, 2)[
            ..., ::-1
        ]
        assert np.array_equal(shown, expected)  # the address's digits too in the Bengali font
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
        events.publish("pairing.code_used", "used", purpose="pair")  # the code held the large type
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


def test_selftest_names_each_language_s_font() -> None:
    cfg = config.load(None, {"display": {"backend": "offscreen"}}, environ={})
    report = selftest.check_display(cfg)
    assert report.ok, report.detail
    assert "hi Lohit-Devanagari.ttf, bn Lohit-Bengali.ttf" in report.detail


def test_selftest_fails_where_no_font_has_a_language_s_letters(no_fonts: None) -> None:
    cfg = config.load(None, {"display": {"backend": "offscreen"}}, environ={})
    report = selftest.check_display(cfg)
    assert not report.ok and "no font has the letters of hi, bn: shown in English" in report.detail


@pytest.fixture
def said(tmp_path: Path) -> Iterator[Shown]:
    made = Shown(tmp_path)
    yield made
    made.display.close()


def test_the_ring_line_follows_auto_answer_the_button_and_guests_as_speech_does(said: Shown) -> None:
    def ring(**data: object) -> str:
        said.events.publish("call.state", "ringing", state="ringing", peer="Priya", reason="", **data)
        return said.lines()[1]

    assert ring(button=True) == "Priya is calling. Press the button to answer."
    assert ring() == "Priya is calling. Answer on the web page."  # no button, or a dead one
    assert ring(auto_answer=True) == "Priya is calling."  # it answers by itself
    assert ring(guest=True, button=True) == "Priya is calling from a browser. Press the button to answer."
    assert ring(guest=True) == "Priya is calling from a browser. Answer on the web page."
    assert ring(guest=True, auto_answer=True) == "Priya is calling from a browser."


def test_an_unpairing_and_an_unanswered_call_are_shown(said: Shown, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view, "SAID_S", 0.5)
    idle = "Ready. Address 192.168.1.20:8080"
    said.events.publish("unit.ready", "ready", name="Kitchen", address="192.168.1.20:8080")
    said.events.publish("pairing.removed", "No longer paired with Bela", peer="Bela")
    assert said.lines()[1] == "No longer paired with Bela."
    assert said.wait_for(idle)[1] == idle  # a passing message, like "Paired with Bela."
    said.events.publish("call.state", "calling", state="calling", peer="Asha", reason="")
    said.events.publish("call.state", "ended", state="ended", peer="Asha", reason=NOT_ANSWERED)
    assert said.lines()[1] == "Asha did not answer."
    # In a call the passing message gives the line back to the call, not to the idle line.
    said.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    said.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    said.events.publish("pairing.removed", "No longer paired with Bela", peer="Bela")
    assert said.lines()[1:] == ["No longer paired with Bela.", "Happy"]
    assert said.wait_for("Connected to Asha.")[1:] == ["Connected to Asha.", "Happy"]


def test_a_calls_last_words_stay_after_it_is_over(said: Shown, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine goes idle at once after a call ends: the reason ("Missed call from Asha.") stays
    for a while, for the helper who comes to look, then the idle line is back."""
    monkeypatch.setattr(view, "SAID_S", 1.0)
    idle = "Ready. Address 192.168.1.20:8080"
    said.events.publish("unit.ready", "ready", name="Kitchen", address="192.168.1.20:8080")
    said.events.publish("call.state", "ringing", state="ringing", peer="Asha", reason="")
    said.events.publish("call.state", "ended", state="ended", peer="Asha", reason=MISSED)
    said.events.publish("call.state", "idle", state="idle", peer="", reason="")
    assert said.lines()[1] == "Missed call from Asha."
    assert said.wait_for(idle)[1] == idle


def test_expressions_that_cannot_be_described_are_shown_as_such(said: Shown) -> None:
    said.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    said.events.publish("remote.sharing", "paused", peer="Asha", paused=True, reason=UNAVAILABLE)
    assert said.lines()[2] == "Asha's expressions cannot be described right now."
    said.events.publish("remote.sharing", "paused", peer="Asha", paused=True)
    assert said.lines()[2] == Phrases("en").say("sharing_paused", peer="Asha")
    said.events.publish("remote.sharing", "shared", peer="Asha", paused=False)
    assert len(said.lines()) == 2


RACHEL = "\u09b0\u200d\u09cd\u09af\u09be\u099a\u09c7\u09b2"  # "Rachel" in Bengali: the ZWJ keeps র whole
KSHAMA = "\u0915\u094d\u200d\u0937\u092e\u093e"  # क्‍षमा: the ZWJ asks for a half क, not the conjunct


def test_names_keep_their_joiners_and_an_address_is_shown_whole(tmp_path: Path) -> None:
    shown = Shown(tmp_path, "bn")
    rachel = RACHEL
    ipv6 = "[2001:db8:85a3:1234:8a2e:370:7334:abcd]:8080"
    try:
        shown.events.publish("unit.ready", "ready", name="Kitchen", address=ipv6)
        assert shown.lines()[1] == Phrases("bn").say("idle_address", address=ipv6)
        assert shown.lines()[1].endswith(f"{ipv6}")  # the port too, past a name's 40 characters
        shown.events.publish("pairing.done", "paired", peer=rachel + "\u202e\u200b")
        assert shown.lines()[1] == f"যুক্ত করা হয়েছে: {rachel}।"
    finally:
        shown.display.close()


LONG_NAME = "Grandmother Asha Chatterjee of Kolkata H"  # 40 characters, the longest a name may be


def ink_lines(mask: np.ndarray) -> list[int]:
    """The heights of the lines of ink in ``mask``: rows of ink between empty rows. A mark above a
    line with a gap under it (the candrabindu of कॉल) counts with the line below it."""
    rows = np.flatnonzero(mask.any(axis=1))
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    lines: list[int] = []
    start = None  # where the line being measured begins: at a mark above it, if it has one
    for run in runs:
        start = run[0] if start is None else start
        if run[-1] - run[0] + 1 >= mask.shape[0] // 40:  # a line of letters is not this short
            lines.append(int(run[-1] - start + 1))
            start = None
    return lines


@pytest.mark.parametrize("size", [(800, 480), (480, 320)])
@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_long_state_line_is_wrapped_at_a_readable_size_within_the_margins(
    tmp_path: Path, language: str, size: tuple[int, int]
) -> None:
    """A caller's long name and the lockout message: on one line their letters were 8 to 15 px
    tall, and a few px past the margin; now they go on to more lines, where nothing else is."""
    width, height = size
    shown = Shown(tmp_path, language, size)
    margin = int(width * MARGIN)
    try:
        events: list[tuple[str, dict[str, object]]] = [
            ("call.state", {"state": "ringing", "peer": LONG_NAME, "reason": ""}),
            ("pairing.locked", {"seconds": 900, "purpose": "owner"}),
        ]
        for topic, data in events:
            shown.events.publish(topic, topic, **data)
            text = white(shown.png(tmp_path / f"{topic}.png"))  # the state line; the unit name is grey
            columns, lines = np.flatnonzero(text.any(axis=0)), ink_lines(text)
            assert len(lines) >= 2 and min(lines) >= height // 20, (shown.lines()[1], lines)
            assert margin <= columns[0] and columns[-1] < width - width // 4 - margin
            assert np.flatnonzero(text.any(axis=1))[-1] < height - margin
    finally:
        shown.display.close()


@pytest.mark.parametrize("size", [(800, 480), (480, 320)])
@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_long_ring_line_stays_readable_above_a_fault_line(
    tmp_path: Path, language: str, size: tuple[int, int]
) -> None:
    """With a part not working, the state line was kept to the top band: a long caller's name
    ringing was squeezed into it at half the size (letters 25 px tall on an 800x480 screen, 12 to
    16 on a 480x320 one). The ring line goes on down as without a fault, and the fault's line moves
    under it, above the bottom third."""
    ring_lines = {}
    for fault in (False, True):
        shown = Shown(tmp_path / str(fault), language, size)
        try:
            if fault:
                shown.events.publish("audio.unavailable", "speaker", error="no card")
            shown.events.publish("call.state", "ringing", state="ringing", peer=LONG_NAME, reason="")
            picture = shown.png(tmp_path / f"ringing-{fault}.png")
        finally:
            shown.display.close()
        ring, faults = white(picture), yellow(picture)
        ring_lines[fault] = ink_lines(ring)
    assert min(ring_lines[True]) >= 0.9 * min(ring_lines[False]), ring_lines
    rows = np.flatnonzero(faults.any(axis=1))
    assert np.flatnonzero(ring.any(axis=1))[-1] < rows[0] and rows[-1] < size[1] - int(size[1] * BOTTOM)


@pytest.mark.parametrize(
    ("language", "name", "script"),
    [("hi", RACHEL, "bn"), ("en", RACHEL, "bn"), ("bn", KSHAMA, "hi"), ("bn", "Jose\u0301", "en")],
)
def test_a_name_in_another_script_with_a_joiner_or_a_mark_is_drawn_as_its_script_draws_it(
    tmp_path: Path, language: str, name: str, script: str
) -> None:
    """A joiner or a combining mark that the unit's own font has went into a run of its own,
    apart from its letter: SDL_ttf refused to draw it ("Text has zero width") and the screen kept
    its last picture for the whole call. It goes with the letter before it: the name is drawn as a
    unit in the name's language draws it."""
    shown = Shown(tmp_path, language)
    try:
        shown.events.publish("call.state", "ringing", state="ringing", peer=name, reason="", button=True)
        assert shown.lines()[1] == Phrases(language).say("ringing", peer=name)
    finally:
        shown.display.close()
    fonts, own = for_language(Phrases(language), None)[0], for_language(Phrases(script), None)[0]
    assert len(fonts._runs(name)) == 1, fonts._runs(name)
    assert drawn(fonts, name) == drawn(own, name)


# A name in each Indian script no language of the unit writes in, each with a conjunct or a vowel
# sign drawn before its consonant: drawn letter by letter, these come apart.
OTHER_SCRIPTS = {
    "pa": "ਪ੍ਰਿਯਾ",  # Priya
    "gu": "લક્ષ્મી",  # Lakshmi
    "or": "ଲକ୍ଷ୍ମୀ",  # Lakshmi
    "ta": "செல்வி",  # Selvi
    "te": "లక్ష్మి",  # Lakshmi
    "kn": "ಲಕ್ಷ್ಮಿ",  # Lakshmi
    "ml": "ലക്ഷ്മി",  # Lakshmi
    "si": "\u0dc1\u0dca\u200d\u0dbb\u0dd2\u0dba\u0dcf",  # Shriya, its sh and r joined (ZWJ)
}
# Names in scripts the image has a font for besides: drawn letter by letter by pygame's own shaping,
# they look much the same (what the test shows there is that they are not boxes).
NEIGHBOURS = {
    "th": "\u0e19\u0e49\u0e33\u0e1d\u0e19",  # Namfon, a tone mark over a vowel sign
    "my": "\u1000\u103c\u100a\u103a",  # Kyi, its medial r drawn around its consonant
}


@pytest.mark.parametrize("script", [*OTHER_SCRIPTS, *NEIGHBOURS])
def test_a_name_in_another_indian_script_is_drawn_in_its_font_not_as_boxes(script: str) -> None:
    """A name in Telugu, Tamil or another script that no language of the unit writes in was drawn
    in the first face, which lacks its letters: boxes (Sinhala, Thai and Burmese too, with no font
    for them on the image). The first letter no face has brings in fontconfig's font for its
    script, shaped for it as HarfBuzz shapes it (the reference: Pillow's raqm layout in the same
    font), not letter by letter."""
    english, _ = for_language(Phrases("en"), None)
    boxes, name = Fonts(english.faces[:1]), {**OTHER_SCRIPTS, **NEIGHBOURS}[script]
    shown = drawn(english, name)
    face = english.faces[-1]
    assert face.script == scripts.SCRIPTS[script][0] and name[0] in face.letters
    assert shown == drawn(Fonts([face]), name) != drawn(boxes, name)
    assert [run.text for run in english._runs(f"Calling {name}.")] == ["Calling ", name, "."]
    assert face.path is not None
    on_screen = ink(pygame.surfarray.pixels_red(english.render(name, 1600, 320, (255, 255, 255))).T > 128)
    unshaped = pygame.font.Font(str(face.path), 160).render(name, True, (255, 255, 255), (0, 0, 0))
    assert overlap(on_screen, shaped(name, face.path)) > 0.85
    if script in OTHER_SCRIPTS:
        assert overlap(on_screen, ink(pygame.surfarray.array2d(unshaped).T != 0)) < 0.5


URDU = "عائشہ خان"  # Ayesha Khan: its letters join, and it ends in Urdu's own heh (U+06C1)
HEBREW = "שרה כהן"  # Sarah Cohen


@pytest.mark.parametrize(
    ("text", "script", "font"),
    [pytest.param(URDU, "Arab", "amiri", id="urdu"), pytest.param(HEBREW, "Hebr", "dejavu", id="hebrew")],
)
def test_a_name_written_right_to_left_is_drawn_so_and_joined_not_as_boxes(
    text: str, script: str, font: str
) -> None:
    """Urdu's Arabic letters were boxes (no face was looked for a script written right to left), or
    pygame's built-in font's few Arabic letters, unjoined: a name came apart between two fonts. A
    name is drawn in fontconfig's font for Urdu (Amiri, on the image too), shaped right to left as
    HarfBuzz shapes it (the reference: Pillow's raqm layout, with FriBidi, in the same font). A
    Hebrew name was boxes until 2026-12-07: it is drawn so too, in fontconfig's font for Hebrew
    (DejaVu Sans, on the image too)."""
    english, _ = for_language(Phrases("en"), None)
    assert [run.text for run in english._runs(f"Calling {text}.")] == ["Calling ", text, "."]
    face = english.faces[-1]
    assert face.script == script and face.path is not None and font in str(face.path).lower(), (
        f"no font for {script}: bash .ci/setup installs it"
    )
    assert features.check("fribidi"), "Pillow without FriBidi: the reference would be laid out left to right"
    on_screen = ink(pygame.surfarray.pixels_red(english.render(text, 1600, 320, (255, 255, 255))).T > 128)
    left_to_right = pygame.font.Font(str(face.path), 160)
    left_to_right.set_script(script)
    unturned = left_to_right.render(text, True, (255, 255, 255), (0, 0, 0))
    assert overlap(on_screen, shaped(text, face.path)) > 0.85
    assert overlap(on_screen, ink(pygame.surfarray.array2d(unturned).T != 0)) < 0.5
    assert drawn(english, text) != drawn(Fonts(english.faces[:1]), text)  # not the first face's boxes


def test_a_name_written_right_to_left_is_drawn_in_its_own_scripts_font_after_another() -> None:
    """DejaVu Sans, Hebrew's font, has Arabic letters but not Urdu's own heh: after a Hebrew name,
    an Urdu one was drawn in it, but for its last letter in Amiri, the name in two fonts."""
    english, _ = for_language(Phrases("en"), None)
    english._runs(HEBREW)
    runs = english._runs(URDU)
    assert len({run.face for run in runs}) == 1 and english.faces[runs[0].face].script == "Arab", runs
    # A letter of no script in the table (Arabic's presentation forms) goes to a face written right
    # to left that has it, not to the first that has it (pygame's built-in font, unjoined).
    assert english.faces[english._face_of("\ufe9e")].right_to_left


SARAH, COHEN = HEBREW.split()
AYESHA, KHAN, ALI = "عائشہ", "خان", "علی"


@pytest.mark.parametrize(
    ("line", "left_to_right"),
    [
        (f"Calling {URDU}.", ["Calling", KHAN, AYESHA, "."]),  # the name's first word on the right
        (f"{URDU} looks happy.", [KHAN, AYESHA, "looks"]),  # the space after it kept before "looks"
        (f"{AYESHA}, {KHAN} is calling.", [KHAN, ",", AYESHA, "is"]),  # the comma turned with them
        (f"Calling {ALI} 12 {KHAN}.", ["Calling", KHAN, "12", ALI]),  # a number in the name: as written
        (f"{ALI} \u06f1\u06f9\u06f4\u06f7 is calling.", ["\u06f1\u06f9\u06f4\u06f7", "is"]),  # 1947, not 7491
        (f"Calling {HEBREW}.", ["Calling", COHEN, SARAH, "."]),  # Hebrew's words as Urdu's
    ],
)
def test_words_written_right_to_left_are_seen_in_the_order_they_are_read(
    line: str, left_to_right: list[str]
) -> None:
    """The order of the words on the screen, left to right, is the Unicode bidirectional algorithm's
    for a line written left to right (python-bidi's ``get_display`` gives the same for these lines),
    each word found in the line by its own picture. Not for a number after a name written right to
    left (the last line): the algorithm puts it before the name, the screen after it; its digits
    are in their order. Each word's own picture is drawn in its font by pygame alone, right to left
    for Urdu's or Hebrew's letters, left to right for the rest."""
    english, _ = for_language(Phrases("en"), None)
    drawn = pygame.surfarray.array_red(english._line(line, 60, (255, 255, 255))).T.astype(np.float32)
    # Room above and below: a word's picture has its font's blank rows, which the line of a shorter
    # font (DejaVu Sans's, against Amiri's) may not have where that word sits low in it.
    drawn = np.pad(drawn, ((20, 20), (0, 0)))
    right_to_left = english.faces[-1]  # the line's one face for a script written right to left
    found = []
    for word in left_to_right:
        in_it = scripts.language_of(word[0]) in scripts.RIGHT_TO_LEFT
        font = pygame.font.Font(str(right_to_left.path if in_it else BUILT_IN), 60)
        font.set_script(right_to_left.script if in_it else "Latn")
        if unicodedata.bidirectional(word[0]) in ("R", "AL"):
            font.set_direction(pygame.DIRECTION_RTL)
        picture = pygame.surfarray.array_red(font.render(word, True, (255, 255, 255), (0, 0, 0))).T
        _, likeness, _, (x, _) = cv2.minMaxLoc(
            cv2.matchTemplate(drawn, picture.astype(np.float32), cv2.TM_CCORR_NORMED)
        )
        assert likeness > 0.98, (word, likeness)
        found.append(x)
    assert found == sorted(found), dict(zip(left_to_right, found, strict=True))


def test_a_line_that_begins_with_a_joiner_in_another_face_is_drawn() -> None:
    """A joiner that begins a line has no letter before it to go with: alone in its face it has no
    width, which SDL_ttf refuses to draw; the rest of the line is drawn."""
    english, _ = for_language(Phrases("en"), None)
    assert drawn(english, "\u200d\u0986\u09b6\u09be") == drawn(english, "\u0986\u09b6\u09be")


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_codes_digits_are_never_cut_onto_two_lines(language: str) -> None:
    """A code is said digit by digit, so it is written with spaces between its digits: a line cut
    there showed "4 8 2" and "9 1 3", two numbers, in a narrow state band."""
    fonts, phrases = for_language(Phrases(language), None)
    said = phrases.code("owner", "482913", 300)
    for width in range(100, 800, 10):
        lines = fonts._wrap(said, 40, width)
        assert any("4 8 2 9 1 3" in line for line in lines), (width, lines)


def test_a_part_that_does_not_work_stays_on_screen_until_it_works_again(shown: Shown) -> None:
    # The owner heard it once (with the speaker broken, not at all): a helper who comes later reads it.
    shown.events.publish("audio.unavailable", "speaker", error="no card")
    shown.events.publish("camera.lost", "camera")
    assert shown.lines()[2] == "The speaker is not working. Camera lost."
    _, middle, _ = bands(shown.png())
    assert yellow(middle[: int(H * FAULTS)]).mean() > 0.01  # in its band under the state line
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.display.set_remote_frame(np.full((240, 320, 3), BLUE_BGR, np.uint8))
    _, middle, _ = bands(shown.png())
    assert yellow(middle[: int(H * FAULTS)]).mean() > 0.01  # a call does not hide it...
    video = middle[int(H * FAULTS) + 5 :, W // 2 - 100 : W // 2 + 100]
    assert np.abs(video.reshape(-1, 3).mean(axis=0) - BLUE_BGR).max() < 10  # ...nor it the video
    shown.events.publish("audio.recovered", "speaker")
    assert shown.lines()[2] == "Camera lost."
    shown.events.publish("settings.changed", "settings", settings={"voice_language": "hi"})
    assert shown.lines()[2] == Phrases("hi").say("camera_lost")
    shown.events.publish("camera.recovered", "camera")
    assert len(shown.lines()) == 2  # the name and the call's line: nothing is wrong any more


def test_a_microphone_or_a_button_that_does_not_work_stays_on_screen(shown: Shown) -> None:
    """A call without a microphone is silent at the other end, a dead button does nothing: both
    are shown until they work again (a button that did not open at start-up, until the next)."""
    shown.events.publish("microphone.unavailable", "microphone", reason="no sound card")
    shown.events.publish("button.unavailable", "button", reason="no GPIO")
    button = "The button is not working. Calls can still be made, answered and ended on the web page."
    assert shown.lines()[2] == f"The microphone is not working. {button}"
    shown.events.publish("call.state", "ended", state="ended", peer="Asha", reason="")
    assert shown.lines()[2] == f"The microphone is not working. {button}"  # the call's end keeps it
    shown.events.publish("microphone.recovered", "microphone")
    assert shown.lines()[2] == button


def test_the_relay_line_says_what_the_owner_heard(shown: Shown) -> None:
    """A refused account and one another unit took are not mended by waiting: the screen said
    "not possible right now" for both, while the owner heard whom to ask."""
    shown.events.publish("relay.unreachable", "down", state="replaced")
    assert shown.lines()[2] == Phrases("en").say("relay_replaced")
    shown.events.publish("relay.unreachable", "down", state="refused")
    assert shown.lines()[2] == Phrases("en").say("relay_refused")
    shown.events.publish("relay.back", "back")
    assert len(shown.lines()) == 2


def test_a_fault_said_before_the_display_opened_is_shown(tmp_path: Path) -> None:
    """The speaker is opened (and found missing) before the display: its fault was never shown."""
    events = EventBus()
    events.publish("audio.unavailable", "speaker", error="no card")
    events.publish("camera.lost", "camera")
    events.publish("camera.recovered", "camera")
    display = Display(OffscreenScreen((W, H), tmp_path / "display.png"), events, Phrases("en"), fps=30)
    try:
        assert display.flush()
        assert (tmp_path / "display.txt").read_text().splitlines()[2] == "The speaker is not working."
    finally:
        display.close()


def test_a_code_shown_in_a_call_gives_the_expression_back(shown: Shown) -> None:
    """A code (a page asking to log in) takes the large type in a call; once used, the other
    person's expression is back, not the code's digits for the rest of the call."""
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    shown.events.publish("pairing.code", "code", code="042917", purpose="owner", seconds=120)
    assert shown.lines()[-1] == "042917"
    shown.events.publish("pairing.code_used", "used", purpose="owner")
    assert shown.lines()[1:] == ["Connected to Asha.", "Happy"]
    shown.events.publish("call.state", "ended", state="ended", peer="Asha", reason="")
    shown.events.publish("call.state", "connected", state="connected", peer="Bela", reason="")
    shown.events.publish("pairing.code", "code", code="042917", purpose="owner", seconds=120)
    shown.events.publish("pairing.code_used", "used", purpose="owner")
    assert shown.lines()[1:] == ["Connected to Bela."]  # nothing of Asha's call


def test_a_code_in_a_call_keeps_the_large_type_until_it_goes(shown: Shown) -> None:
    """The other person's next expression (seconds later) took the code's digits off the large
    type, and the owner was left to read them from the small line."""
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.events.publish("pairing.code", "code", code="042917", purpose="owner", seconds=120)
    shown.events.publish("remote.emotion", "sad", peer="Asha", emotion="sadness", confidence=0.9)
    shown.events.publish("remote.no_face", "no face", peer="Asha")
    assert shown.lines()[-1] == "042917"
    shown.events.publish("pairing.code_used", "used", purpose="owner")
    assert shown.lines()[1:] == ["Connected to Asha.", "No face"]  # the newest, once the code went


def test_a_code_used_leaves_another_purposes_code_on_screen(shown: Shown) -> None:
    """The owner code was typed while the pairing code was shown: the pairing code, still good,
    went off the screen."""
    shown.events.publish("pairing.code", "code", code="111111", purpose="owner", seconds=120)
    shown.events.publish("pairing.code", "code", code="222222", purpose="pair", seconds=120)
    shown.events.publish("pairing.code_used", "used", purpose="owner")
    assert shown.lines()[-1] == "222222"
    shown.events.publish("pairing.code_used", "used", purpose="pair")
    assert "222222" not in shown.lines()


def test_a_video_frame_or_an_expression_after_the_call_ended_is_not_shown(shown: Shown) -> None:
    """A frame decoded while the call's connection closes came after "ended": it stayed on the
    idle screen until the next call; so did a guest's face analysed on its own thread then."""
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.events.publish("call.state", "ended", state="ended", peer="Asha", reason="")
    shown.display.set_remote_frame(np.full((240, 320, 3), BLUE_BGR, np.uint8))
    shown.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert shown.display.flush() and shown.display.scene.frame is None and shown.display.scene.big == ""


def test_a_code_from_before_a_call_and_a_lockout_in_one_leave_the_call_on_screen(
    shown: Shown, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code shown in idle stayed in large type through the call that rang then (its expiry no
    longer found it shown); a lockout in a call hid the call's line and the other person's
    expression for the lock's five minutes."""
    monkeypatch.setattr(view, "SAID_S", 0.3)
    shown.events.publish("pairing.code", "code", code="123456", purpose="owner", seconds=60)
    shown.events.publish("call.state", "ringing", state="ringing", peer="Asha", reason="")
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    assert shown.lines()[1:] == ["Connected to Asha."]
    shown.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    shown.events.publish("pairing.locked", "locked", purpose="owner", seconds=300)
    assert shown.lines()[2] == "Happy"
    assert shown.wait_for("Connected to Asha.", timeout=5)[1:] == ["Connected to Asha.", "Happy"]


def test_a_code_asked_for_in_a_call_stays_through_a_blip(
    shown: Shown, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner reads a code's digits during a call: a reconnecting-connected flip took them off
    the screen (or left the digits under another line for good)."""
    monkeypatch.setattr(view, "SAID_S", 0.3)
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    shown.events.publish("pairing.code", "code", code="042917", purpose="owner", seconds=1)
    shown.events.publish("call.state", "reconnecting", state="reconnecting", peer="Asha", reason="")
    shown.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    assert shown.lines()[-1] == "042917"
    assert shown.wait_for("Connected to Asha.", timeout=5)[1:] == ["Connected to Asha."]
