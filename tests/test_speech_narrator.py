"""Events in, sentences out: what the unit says when things happen, heard in the WAV output."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance import cli
from appliance.audio.wav import read_wav
from appliance.call import MISSED, NOT_ANSWERED, UNAVAILABLE
from appliance.camera import CameraError, Frame
from appliance.camera.capture import Capture
from appliance.camera.pattern import PatternSource
from appliance.events import EventBus
from appliance.speech import narrator
from appliance.speech.narrator import Narrator
from appliance.state import STATE_FILE, StateStore

from .talking import Talking
from .test_speech import rms

PRIVATE = "Your expressions are not shared."  # said at connect until the owner shares them
UNPAIRED = "No longer paired with Bela."


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Talking]:
    made = Talking(tmp_path / "out.wav")
    yield made
    made.close()


def test_hands_free_start_says_what_works(unit: Talking) -> None:
    unit.events.publish("camera.ready", "camera ready", backend="file")
    unit.events.publish("vision.backend", "using cpu", backend="cpu", reason="no Coral found", coral="absent")
    unit.events.publish("unit.ready", "ready", name="Kitchen")
    unit.wait_spoken(1)
    unit.events.publish("camera.lost", "camera lost", reason="unplugged")
    assert unit.said() == [
        "Kitchen is ready. Camera ready. Coral not found, using the processor.",
        "Camera lost.",
    ]
    unit.close()
    audio, rate = read_wav(unit.path)
    first = unit.speaker.played[0]
    start = round(first.start_s * rate)
    assert rms(audio[start : start + round(first.duration_s * rate)]) > 500
    assert first.duration_s > 1.8  # the whole sentence, not the first words


def test_start_without_a_camera_says_so(unit: Talking) -> None:
    unit.events.publish("camera.lost", "camera unavailable", reason="no device")
    unit.events.publish("vision.backend", "coral", backend="edgetpu", reason="", coral="used")
    unit.events.publish("unit.ready", "ready", name="Hall")
    unit.wait_spoken(1)
    assert unit.said() == ["Hall is ready. Camera lost. Using the Coral."]


@pytest.mark.parametrize(
    ("coral", "said"),
    [
        ("failed", "The Coral is not working, using the processor."),
        ("unasked", "Using the processor."),
        ("busy", "Using the processor."),  # emocall selftest or watch has it for a moment
    ],
)
def test_a_coral_that_fails_or_was_not_asked_for_is_not_said_missing(
    unit: Talking, coral: str, said: str
) -> None:
    """Every start on the processor said "Coral not found": for a Coral plugged in but hung or
    crashed, and for a unit set to use the processor."""
    unit.events.publish("vision.backend", "using cpu", backend="cpu", reason="", coral=coral)
    unit.events.publish("unit.ready", "ready", name="Hall")
    unit.wait_spoken(1)
    assert unit.said() == [f"Hall is ready. {said}"]


@pytest.mark.parametrize(
    ("button", "how"),
    [
        (True, "To share them, press the button twice during a call, or use the settings page."),
        (False, "To share them, use the settings page."),
    ],
)
def test_the_sharing_question_names_the_button_only_where_one_works(
    unit: Talking, button: bool, how: str
) -> None:
    unit.events.publish("unit.ready", "ready", name="Hall", ask_sharing=True, button=button)
    unit.wait_spoken(1)
    assert unit.said() == [f"Hall is ready. Your expressions are not shared until you choose. {how}"]


class Webcam(PatternSource):
    """A camera on a USB lead: it neither opens nor delivers while unplugged."""

    name = "opencv"

    def __init__(self, plugged: list[bool]) -> None:
        super().__init__(160, 120, 15, text="camera")
        self.plugged = plugged

    def read(self) -> Frame:
        if not self.plugged[0]:
            raise CameraError("webcam stopped delivering frames")
        return super().read()


def test_a_camera_back_for_the_next_call_is_said(unit: Talking) -> None:
    """Unplugged in a call, plugged in between calls: the next call says it is back."""
    plugged = [True]

    def opener() -> Webcam:
        if not plugged[0]:
            raise CameraError("no webcam")
        return Webcam(plugged)

    capture = Capture(opener, unit.events, retry_seconds=60, width=160, height=120).start()
    try:
        unit.events.publish("unit.ready", "ready", name="Hall")
        unit.wait_spoken(1)
        plugged[0] = False
        unit.wait_spoken(2)
        capture.pause()  # the call ends
        time.sleep(0.3)  # it stops after the frame being read, and keeps no frame for the next call
        assert capture.latest() is None and capture.wait_newer(-1, timeout=1) is None
        plugged[0] = True
        capture.resume()  # the next call
        unit.wait_spoken(3)
        assert unit.said() == ["Hall is ready. Camera ready.", "Camera lost.", "Camera back."]
    finally:
        capture.close()


def test_a_camera_back_before_start_up_is_said_as_ready(unit: Talking) -> None:
    """A slow USB camera found on the second try: start-up says how it is now, once."""
    unit.events.publish("camera.lost", "camera unavailable", reason="no webcam")
    unit.events.publish("camera.recovered", "camera ready", backend="opencv")
    unit.events.publish("unit.ready", "ready", name="Hall")
    unit.wait_spoken(1)
    assert unit.said() == ["Hall is ready. Camera ready."]


def test_a_call_is_spoken_from_ring_to_end(unit: Talking) -> None:
    for state in ("ringing", "connected"):
        unit.events.publish("call.state", state, state=state, peer="Asha", reason="", button=True)
    assert unit.announcer.wait_idle(10)
    unit.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert unit.announcer.wait_idle(10)  # an expression still waiting when the call ends is not said
    unit.events.publish("call.state", "ended", state="ended", peer="Asha", reason="")
    unit.events.publish("call.state", "idle", state="idle", peer="", reason="")
    assert unit.said() == [
        "Asha is calling. Press the button to answer.",
        "Connected to Asha.",
        PRIVATE,  # consent: this unit's owner has not said yes to sharing
        "Asha looks happy.",
        "Call ended.",
    ]
    # A guest's face analysed as the call ended (on its own thread) is not said after "Call ended."
    unit.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert unit.said()[-1] == "Call ended."
    unit.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    unit.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert unit.said()[-1] == "Asha looks happy."  # a new call: the same expression is news again


def test_repeat_says_what_the_screen_shows_once_the_expression_is_gone(unit: Talking) -> None:
    """The button's repeat after the other person left the camera or paused sharing says so (the
    screen shows "No face" or "paused"), not the expression they had before."""
    events, announcer = unit.events, unit.announcer
    events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert announcer.wait_idle(10)
    events.publish("remote.no_face", "Asha: no face in view", peer="Asha")
    announcer.repeat_last()
    # Back in view with the same expression: it is said again, after the repeat.
    events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert announcer.wait_idle(10)
    events.publish("remote.sharing", "Asha paused sharing", peer="Asha", paused=True)
    announcer.repeat_last()
    events.publish("remote.sharing", "Asha resumed sharing", peer="Asha", paused=False)
    announcer.repeat_last()
    assert unit.said()[2:] == [
        "Asha looks happy.",
        "Asha's face is not in view.",
        "Asha looks happy.",
        "Asha paused sharing expressions.",
        "Asha paused sharing expressions.",  # the repeat
        "Asha is sharing expressions again.",
        "No expression yet.",
    ]


def test_an_unpairing_and_an_unanswered_call_are_said(unit: Talking) -> None:
    unit.events.publish("pairing.removed", "No longer paired with Bela", peer="Bela")
    for state, reason in [
        ("calling", ""),
        ("ended", NOT_ANSWERED),
        ("idle", ""),
        ("calling", ""),
        ("ended", "hung up here"),
    ]:
        unit.events.publish(
            "call.state", state, state=state, peer="" if state == "idle" else "Asha", reason=reason
        )
    unit.events.publish("call.state", "ringing", state="ringing", peer="Asha", reason="", button=True)
    unit.events.publish("call.state", "ended", state="ended", peer="Asha", reason=MISSED)
    assert unit.said() == [
        "No longer paired with Bela.",
        "Calling Asha.",
        "Asha did not answer.",
        "Calling Asha.",
        "Call ended.",  # the owner gave up waiting
        "Asha is calling. Press the button to answer.",
        "Missed call from Asha.",  # let ring out: the owner may have been in another room
    ]


def test_pairing_and_sharing_are_said(unit: Talking) -> None:
    unit.events.publish("pairing.code", "code", code="482193", purpose="pair", seconds=120)
    unit.events.publish("pairing.done", "paired", peer="Asha")
    unit.events.publish("pairing.locked", "locked", seconds=300, purpose="pair")
    unit.events.publish("pairing.locked", "locked", seconds=60, purpose="owner")
    unit.events.publish("unit.address", "address", address="192.168.1.20:8080")
    unit.events.publish("remote.sharing", "paused", peer="Asha", paused=True)
    assert unit.said() == [
        "Pairing code: 4 8 2 1 9 3. It works for 2 minutes.",
        "Paired with Asha.",
        "Too many wrong codes: pairing is locked for 5 minutes.",
        "Too many wrong codes: logging in to this unit is locked for 1 minute.",
        "This unit's address is 192 dot 168 dot 1 dot 20, port 8080.",
        "Asha paused sharing expressions.",
    ]


def test_a_ring_said_again_never_piles_up(unit: Talking) -> None:
    """The engine's ``call.ring`` is said short, only when nothing else is being said (never queued
    behind a long sentence), and only while the call rings."""
    unit.events.publish("call.state", "ringing", state="ringing", peer="Asha", reason="", button=True)
    for _ in range(3):  # while the first sentence is said
        unit.events.publish("call.ring", "still ringing", peer="Asha", guest=False)
    assert unit.announcer.wait_idle(10)
    unit.events.publish("call.ring", "still ringing", peer="Asha", guest=False)
    assert unit.announcer.wait_idle(10)
    unit.events.publish("call.state", "ended", state="ended", peer="Asha", reason=MISSED)
    assert unit.announcer.wait_idle(10)
    unit.events.publish("call.ring", "still ringing", peer="Asha", guest=False)  # late: no ring now
    assert unit.said() == [
        "Asha is calling. Press the button to answer.",
        "Asha is calling.",
        "Missed call from Asha.",
    ]


def test_expressions_that_cannot_be_described_are_said_and_repeated(unit: Talking) -> None:
    """The other unit cannot describe Asha's face: said, and the button's repeat says the same."""
    unit.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    unit.events.publish("remote.sharing", "paused", peer="Asha", paused=True, reason=UNAVAILABLE)
    assert unit.announcer.wait_idle(10)
    unit.announcer.repeat_last()
    assert unit.said()[-2:] == ["Asha's expressions cannot be described right now."] * 2


def test_sharing_switched_on_in_a_guests_call_is_not_said_to_reach_the_guest(unit: Talking) -> None:
    """A guest never receives the owner's expressions: switching sharing on during a guest's call
    says so, not "Your expressions are shared again."."""
    unit.events.publish("call.state", "connected", state="connected", peer="Priya", reason="", guest=True)
    on = {"share_expressions": True}
    unit.events.publish("settings.changed", "saved", changed=["share_expressions"], settings=on)
    assert unit.said() == [
        "Connected to Priya.",
        PRIVATE,
        "Your expressions will be shared in calls with units. A guest never receives them.",
    ]


def test_expressions_are_not_said_to_be_shared_while_they_cannot_be_described(tmp_path: Path) -> None:
    """With the camera lost, a call said "Bela hears your expressions." while the engine told Bela
    they could not be described; switching sharing on with expressions unavailable said "shared
    again" just before "not shared"."""
    unit = Talking(tmp_path / "out.wav", sharing=True)
    try:
        unit.events.publish("camera.lost", "camera lost", reason="unplugged")
        unit.events.publish("call.state", "connected", state="connected", peer="Bela", reason="")
        off = {"share_expressions": False}
        unit.events.publish("settings.changed", "saved", changed=["share_expressions"], settings=off)
        on = {"share_expressions": True}
        unit.events.publish("settings.changed", "saved", changed=["share_expressions"], settings=on)
        assert unit.said()[-4:] == [
            "Connected to Bela.",
            PRIVATE,
            "Your expressions are no longer shared.",
            "Sharing is on, but your expressions cannot be recognised right now.",
        ]
    finally:
        unit.close()


def test_a_spoken_code_is_heard_but_never_logged(unit: Talking, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="appliance.speech.announcer"):
        unit.events.publish("pairing.code", "code", code="482913", purpose="owner", seconds=60)
        unit.events.publish("unit.ready", "ready", name="Kitchen")
        said = unit.said()
    assert said == ["Owner code: 4 8 2 9 1 3. It works for 1 minute.", "Kitchen is ready."]
    unit.close()
    first = unit.speaker.played[0]
    audio, rate = read_wav(unit.path)
    start = round(first.start_s * rate)
    assert rms(audio[start : start + round(first.duration_s * rate)]) > 500  # the code is heard
    assert "4 8 2 9 1 3" not in caplog.text and "482913" not in caplog.text
    assert "saying: (a code)" in caplog.text and "saying: Kitchen is ready." in caplog.text


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("quiet", ["Connected to Asha.", PRIVATE]),
        ("normal", ["Camera lost.", "Connected to Asha.", PRIVATE, UNPAIRED]),
        ("verbose", ["Camera lost.", "Your face is not visible.", "Connected to Asha.", PRIVATE, UNPAIRED]),
    ],
)
def test_spoken_events_follow_the_level(tmp_path: Path, level: str, expected: list[str]) -> None:
    unit = Talking(tmp_path / "out.wav", level)
    unit.narrator._started = True  # past start-up: device events are said on their own
    unit.events.publish("camera.lost", "lost", reason="x")
    unit.events.publish("vision.no_face", "no face")
    unit.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    unit.events.publish("pairing.removed", "No longer paired with Bela", peer="Bela")
    try:
        assert unit.said() == expected
    finally:
        unit.close()


def test_settings_change_language_and_mode(unit: Talking) -> None:
    settings = {"announcements": "speech", "voice_language": "hi", "verbosity": "full"}
    unit.events.publish("settings.changed", "saved", changed=["voice_language"], settings=settings)
    unit.events.publish("remote.emotion", "sad", peer="Asha", emotion="sadness", confidence=0.9)
    assert unit.said() == ["Asha के चेहरे पर उदासी है।"]
    settings = {"announcements": "tones", "voice_language": "en", "verbosity": "short"}
    unit.events.publish("settings.changed", "saved", changed=["announcements"], settings=settings)
    unit.events.publish("remote.emotion", "happy", peer="Asha", emotion="happiness", confidence=0.9)
    assert unit.announcer.wait_idle(5)
    last = unit.announcer.spoken[-1]
    assert last.item.label == "happiness" and last.seconds < 0.4  # a chime, no words
    assert unit.announcer.phrases.emotion("Asha", "happiness") == "Asha: Happy."


def test_emocall_say_writes_speech_to_a_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "say.wav"
    assert cli.main(["say", "Asha looks surprised", "--lang", "en", "--wav", str(out)]) == 0
    assert "into" in capsys.readouterr().out
    audio, rate = read_wav(out)
    assert rate == 48000 and audio.size / rate > 1.0
    assert np.abs(audio).max() > 5000
    assert cli.main(["say", "x", "--lang", "qqq", "--wav", str(out)]) == 1
    assert "espeak-ng --voices" in capsys.readouterr().err


def test_emocall_say_plays_at_the_owners_volume(tmp_path: Path) -> None:
    """The hotspot's and the cannot-start sentences use ``say``: at the volume the owner chose (50),
    read from the unit's store, against a new unit's default (80): cubic, as PipeWire's percentages."""
    data = tmp_path / "unit"
    store = StateStore(data / STATE_FILE, EventBus(), {"display_name": "Kitchen"})
    store.update_settings({"volume": 50})
    store.close()
    full, half = tmp_path / "full.wav", tmp_path / "half.wav"
    assert (
        cli.main(["say", "Joined the network.", "--wav", str(full), "--data-dir", str(tmp_path / "new")]) == 0
    )
    assert cli.main(["say", "Joined the network.", "--wav", str(half), "--data-dir", str(data)]) == 0
    (loud, _), (soft, _) = read_wav(full), read_wav(half)
    assert rms(soft) / rms(loud) == pytest.approx((50 / 80) ** 3, rel=0.05)


def test_forgetting_on_a_read_only_card_says_the_card_still_holds_it(tmp_path: Path) -> None:
    """Only the copy in memory was erased (appliance/card.py): "Everything is forgotten" would be
    untrue, and is said at every level only where it is true."""
    unit = Talking(tmp_path / "out.wav", "quiet")
    try:
        unit.events.publish("unit.forgotten", "erased from memory", card_kept=True)
        unit.events.publish("unit.forgotten", "erased", card_kept=False)
        assert unit.said() == [
            "This unit starts as new for now, but nothing can be written on its memory card, so"
            " everything comes back when the unit is switched on again. Ask someone who helps you to"
            " replace the card.",
            "Everything is forgotten. This unit starts as new.",
        ]
    finally:
        unit.close()


def test_a_speaker_down_before_the_narrator_began_still_holds_the_start_up_sentence(unit: Talking) -> None:
    """The mixer tries the speaker as it opens, before the narrator subscribes, and tells an outage
    once: the start-up sentence was made for a speaker that works, dropped, and never said."""
    unit.narrator.close()
    unit.events.publish("audio.unavailable", "no speaker", reason="aplay cannot play: Connection refused")
    unit.narrator = Narrator(unit.events, unit.announcer, "normal", settle_s=0.05)
    unit.events.publish("camera.ready", "camera ready", backend="file")
    unit.events.publish("unit.ready", "ready", name="Kitchen")
    time.sleep(0.5)  # past the settling time: the sentence is due
    unit.events.publish("audio.recovered", "the speaker works again")
    unit.wait_spoken(2)
    assert unit.said() == ["The speaker works again.", "Kitchen is ready. Camera ready."]


def test_the_start_up_sentence_waits_for_a_speaker_not_playing_yet(unit: Talking) -> None:
    """The audio server comes up after the unit: the start-up sentence, made while the speaker was
    down, was dropped, and the owner heard only "The speaker works again." without ever hearing
    that the unit was ready (or the sharing question)."""
    unit.events.publish("audio.unavailable", "no speaker", reason="aplay cannot play: Connection refused")
    unit.events.publish("camera.ready", "camera ready", backend="file")
    unit.events.publish("unit.ready", "ready", name="Kitchen")
    time.sleep(0.5)  # past the settling time: the sentence is due
    unit.events.publish("audio.recovered", "the speaker works again")
    unit.wait_spoken(3)
    assert unit.said()[1:] == ["The speaker works again.", "Kitchen is ready. Camera ready."]


def test_a_caller_told_busy_while_idle_is_said_once_the_unit_stays_idle(
    unit: Talking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two guests at once: the one told busy as the other's call was about to ring here was said
    only after a call had ended, and if that call never rang, after the next one."""
    monkeypatch.setattr(narrator, "TRIED_IDLE_SECONDS", 1.0)
    unit.events.publish("call.tried", "a call came while busy", peer="Priya", guest=True)
    unit.events.publish("call.state", "ringing", state="ringing", peer="Chen", reason="", button=True)
    time.sleep(narrator.TRIED_IDLE_SECONDS + 0.5)  # the line was taken: said after that call
    unit.events.publish("call.state", "ended", state="ended", peer="Chen", reason=MISSED)
    unit.events.publish("call.state", "idle", state="idle", peer="", reason="")
    unit.events.publish("call.tried", "a call came while busy", peer="Dev", guest=True)
    time.sleep(narrator.TRIED_IDLE_SECONDS + 0.5)  # the line stayed free: said now
    assert unit.said() == [
        "Chen is calling. Press the button to answer.",
        "Missed call from Chen.",
        "While you were busy, Priya tried to call.",
        "While you were busy, Dev tried to call.",
    ]
