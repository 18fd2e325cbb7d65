"""The call button on gpiozero's mock pins driving a real call engine: one unit in this process (with
the button, the announcer and the speaker's WAV), the other as its own process (``tests.call_unit``)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero import Button
from gpiozero.pins.mock import MockFactory

from appliance import config
from appliance.audio.wav import WavSpeaker, read_wav
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.camera import select
from appliance.camera.capture import Capture
from appliance.controls import button as call_button
from appliance.controls.button import CallButton, start_button
from appliance.controls.privacy import PrivacyGestures
from appliance.events import Event, EventBus
from appliance.identity import Identity
from appliance.speech.announcer import Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator
from appliance.state import Peer, StateStore
from appliance.web.api import create_app
from appliance.web.parts import build_parts
from appliance.web.presence import ButtonPresence
from appliance.web.server import WebServer
from appliance.words.phrases import Phrases

from .call_unit import Unit, free_port, host_address
from .talking import Talking
from .test_speech import rms

HOLD = 0.3


class ButtonUnit:
    """One unit built as ``emocall run`` builds it for calls, plus the button on a mock pin."""

    def __init__(
        self, name: str, data_dir: Path, host: str, choice_seconds: float = 0.8, forget_window: float = 15.0
    ) -> None:
        self.name, self.port, self.host = name, free_port(), host
        self.states: list[str] = []
        self._cond = threading.Condition()
        cfg = config.load(
            None,
            {"camera": {"source": "pattern"}, "call": {"audio_in": "none"}, "web": {"discovery": False}},
            environ={},
        )
        self.events = EventBus()
        self.store = StateStore(
            data_dir / "state.db",
            self.events,
            {"display_name": name, "auto_answer": False, "share_expressions": True},
        )
        self.identity = Identity.load_or_create(data_dir / "identity.key")
        self.capture = Capture(select.opener(cfg.camera), self.events, width=320, height=240).start()
        self.wav = data_dir / "speaker.wav"
        self.speaker = WavSpeaker(self.wav)
        self.announcer = Announcer(self.speaker, Espeak(rate_wpm=450), Phrases("en"))
        self.narrator = Narrator(self.events, self.announcer, sharing=True)
        # After the narrator: a state seen here has already been handed to the announcer, so
        # said() waits for its sentence instead of finding the announcer idle a moment early.
        self.events.subscribe(self._on_event)
        self.engine = CallEngine(
            cfg.call,
            self.identity,
            peers=self.store.peers,
            settings=self.store.settings,
            capture=self.capture,
            events=self.events,
            speaker=self.speaker,
            on_remote_frame=lambda image: None,
        ).start()
        self.parts = build_parts(cfg.web, self.identity, self.store, self.events, call=self.engine)
        app = create_app(lambda: {"name": name}, self.parts, [create_blueprint(self.engine)])
        self.web = WebServer(app, "0.0.0.0", self.port).start()
        self.pins = MockFactory()
        gpio = Button(17, pin_factory=self.pins, hold_time=HOLD, bounce_time=None)
        self.pin: Any = gpio.pin
        said = lambda: self.events.publish("unit.address", "asked", address=self.address)  # noqa: E731
        self.forgotten = 0  # times the privacy gesture asked to forget everything
        privacy = PrivacyGestures(
            self.announcer,
            sharing=lambda: self.store.settings().share_expressions,
            set_sharing=lambda on: self.store.update_settings({"share_expressions": on}),
            forget=self._forget,
            window_seconds=forget_window,
        )
        self.button = CallButton(
            gpio,
            self.engine,
            self.announcer,
            self.store.peers,
            events=self.events,
            choice_seconds=choice_seconds,
            say_address=said,
            privacy=privacy,
        )

    def _forget(self) -> None:
        self.forgotten += 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _on_event(self, event: Event) -> None:
        if event.topic == "call.state":
            with self._cond:
                self.states.append(str(event.data["state"]))
                self._cond.notify_all()

    def wait_state(self, state: str, timeout: float = 20) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.states and self.states[-1] == state, timeout), self.states

    def wait_states(self, count: int, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.states) >= count, timeout), self.states

    def press(self, seconds: float = 0.05) -> None:
        self.pin.drive_low()
        time.sleep(seconds)
        self.pin.drive_high()

    def said(self) -> list[str]:
        assert self.announcer.wait_idle(20)
        return [s.item.text for s in self.announcer.spoken]

    def close(self) -> None:
        for part in (self.button, self.engine, self.web, self.parts, self.narrator, self.announcer):
            part.close()
        self.capture.close()
        self.speaker.close()
        self.store.close()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[ButtonUnit]:
    made = ButtonUnit("Asha", tmp_path / "a", host_address())
    yield made
    made.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ButtonUnit, Unit]]:
    host = host_address()
    asha = ButtonUnit("Asha", tmp_path / "a", host)
    bela = Unit("Bela", tmp_path / "b", free_port(), host)  # answers by itself
    try:
        asha.store.add_peer(bela.identity.unit_id, bela.name, bela.address, bela.identity.public_key)
        bela.pair_with(asha)  # type: ignore[arg-type]  # same attributes as a Unit
        bela.start()
        yield asha, bela
    finally:
        bela.close()
        asha.close()


def test_press_calls_press_answers_long_press_hangs_up_each_state_spoken(
    pair: tuple[ButtonUnit, Unit],
) -> None:
    asha, bela = pair
    asha.press()  # one paired unit: a press calls it
    asha.wait_state("connected")
    asha.press(HOLD + 0.3)  # long press: hang up
    asha.wait_state("idle")
    bela.wait_for("call.state", 10, state="idle")

    asha.announcer.wait_idle(20)
    bela.send("call Asha")  # now the other way: it rings here
    asha.wait_state("ringing")
    asha.press()  # a press answers
    asha.wait_state("connected")
    asha.press()  # in a call: a press repeats the last expression (none yet)...
    time.sleep(1.0)  # ...once no second press came within double_seconds (0.8)
    asha.press(HOLD + 0.3)
    asha.wait_state("idle")

    assert asha.states == ["calling", "connected", "ended", "idle", "ringing", "connected", "ended", "idle"]
    said = asha.said()
    assert said == [
        "Calling Bela.",
        "Connected to Bela.",
        "Bela hears your expressions.",  # consent, said at connect
        "Call ended.",
        "Bela is calling. Press the button to answer.",
        "Answering.",
        "Connected to Bela.",
        "Bela hears your expressions.",
        "No expression yet.",
        "Call ended.",
    ]
    asha.speaker.close()
    audio, rate = read_wav(asha.wav)
    for played in asha.speaker.played:
        start = round(played.start_s * rate)
        assert rms(audio[start : start + round(played.duration_s * rate)]) > 300  # each one heard
    starts = [p.start_s for p in asha.speaker.played]
    assert np.all(np.diff(starts) > 0)


def test_a_press_while_an_older_sentence_plays_does_not_answer_a_ring_not_yet_said(
    pair: tuple[ButtonUnit, Unit],
) -> None:
    """A ring that starts while sentences from before it are said or wait (the address, a code, a
    missed call) is said after them: a press in that gap answered a call the owner had not heard
    of ("Answering."), and a hold declined it. Neither does now; once the ring is said, a press
    answers as ever."""
    asha, bela = pair
    long = "This sentence is as long as the address said slowly, " * 6
    asha.announcer.say("First.")
    asha.announcer.say(long)  # waits while "First." plays
    deadline = time.monotonic() + 5
    while not asha.announcer.speaking and time.monotonic() < deadline:
        time.sleep(0.01)
    bela.send("call Asha")
    asha.wait_state("ringing")
    asha.press()
    asha.press(HOLD + 0.3)
    assert asha.announcer.speaking and len(asha.announcer.spoken) < 2  # the long one not over yet
    assert asha.announcer.wait_idle(30)
    assert asha.engine.state == "ringing", asha.said()
    assert asha.said() == ["First.", long, "Bela is calling. Press the button to answer."]
    asha.press()
    asha.wait_state("connected")
    asha.press(HOLD + 0.3)
    asha.wait_state("idle")


def test_a_call_missed_while_away_is_said_at_the_next_press(
    pair: tuple[ButtonUnit, Unit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Missed call from Bela." was said once, as Bela gave up, and shown for 10 s: an owner in
    another room never learnt of it. The next press says it first, and then calls; not a press
    just as the caller gave up (the unit has just said it)."""
    monkeypatch.setattr(call_button, "JUST_SAID_SECONDS", 1.0)
    asha, bela = pair
    for press_after in (1.5, 0.0):  # back in the room later; then a press just as Bela gives up
        bela.send("call Asha")
        asha.wait_state("ringing")
        bela.send("hangup")
        asha.wait_state("idle")
        time.sleep(press_after)
        asha.press()  # to call Bela
        asha.wait_state("connected")
        asha.press(HOLD + 0.3)
        asha.wait_state("idle")
        bela.wait_for("call.state", 10, state="idle")
    said = [s for s in asha.said() if "Bela" in s and "hears" not in s and "Connected" not in s]
    assert said == [
        "Bela is calling. Press the button to answer.",
        "Missed call from Bela.",  # as Bela gave up
        "Missed call from Bela.",  # at the next press
        "Calling Bela.",
        "Bela is calling. Press the button to answer.",
        "Missed call from Bela.",
        "Calling Bela.",
    ], said


def test_a_missed_call_stays_missed_when_another_unit_of_the_same_name_calls(
    pair: tuple[ButtonUnit, Unit], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missed calls were remembered by name: a call with one "Bela" (a son's unit and his
    grandmother's, both named as the owner knows them) cleared the other's missed call."""
    monkeypatch.setattr(call_button, "JUST_SAID_SECONDS", 1.0)
    asha, bela = pair
    other = Unit("Bela", tmp_path / "b2", free_port(), host_address())
    try:
        asha.store.add_peer(other.identity.unit_id, other.name, other.address, other.identity.public_key)
        other.pair_with(asha)  # type: ignore[arg-type]  # same attributes as a Unit
        other.start()
        bela.send("call Asha")
        asha.wait_state("ringing")
        bela.send("hangup")  # missed
        asha.wait_state("idle")
        other.send("call Asha")
        asha.wait_state("ringing")
        assert asha.announcer.wait_idle(20)  # "Missed call from Bela (1).", then the ring
        asha.press()  # the other Bela's call is answered
        asha.wait_state("connected")
        asha.press(HOLD + 0.3)
        asha.wait_state("idle")
        other.wait_for("call.state", 10, state="idle")
        assert asha.announcer.wait_idle(20)
        asha.press()  # the missed call first, then the first of the two names
        asha.press(HOLD + 0.3)  # ends the choice: nobody is called
        assert asha.announcer.wait_idle(20)
    finally:
        other.close()
    assert [s for s in asha.said() if s.startswith("Missed")] == ["Missed call from Bela (1)."] * 2, (
        asha.said()
    )


def test_several_peers_are_offered_one_press_at_a_time(unit: ButtonUnit, tmp_path: Path) -> None:
    for i, name in enumerate(("Bela", "Chandra")):
        other = Identity.load_or_create(tmp_path / f"{name}.key")
        unit.store.add_peer(other.unit_id, name, f"192.0.2.{i + 1}:8080", other.public_key)
    unit.press()
    assert unit.announcer.wait_idle(10)
    unit.press()
    unit.wait_state("calling", timeout=10)  # the last name said, once the presses stop
    calling = [e for e in unit.events.recent("call.state") if e.data["state"] == "calling"]
    assert calling[0].data["peer"] == "Chandra"
    assert unit.said()[:3] == ["Bela?", "Chandra?", "Calling Chandra."]


@pytest.mark.parametrize("host", ["192.168.1.20", "127.0.0.1"])
def test_long_press_when_idle_says_the_address(tmp_path: Path, host: str) -> None:
    """Without a network the unit's address is loopback, which no other unit can use: said as
    no address ("127 dot 0 dot 0 dot 1" was read out)."""
    unit = ButtonUnit("Asha", tmp_path / "a", host)
    try:
        unit.press(HOLD + 0.3)
        time.sleep(0.2)
        assert unit.said() == [
            f"This unit's address is 192 dot 168 dot 1 dot 20, port {unit.port}."
            if host != "127.0.0.1"
            else "This unit has no address on a network right now."
        ]
        assert unit.states == []
    finally:
        unit.close()


def test_no_paired_unit_is_said(unit: ButtonUnit) -> None:
    unit.press()
    time.sleep(0.2)
    assert unit.said() == ["No paired unit. Pair one from the web page."]
    assert unit.states == []


def test_a_double_press_that_cannot_be_saved_is_said_and_logged(
    pair: tuple[ButtonUnit, Unit], caplog: pytest.LogCaptureFixture
) -> None:
    """The store cannot be written (here another program holds its database; a card that turned
    read-only fails the same way, in SQLite): the owner hears that the double press did not work,
    the log says why, and sharing stays as it was."""
    asha, _ = pair
    asha.press()
    asha.wait_state("connected")
    assert asha.announcer.wait_idle(20)
    holder = sqlite3.connect(asha.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        asha.press()
        time.sleep(0.15)
        asha.press()  # two quick presses: stop sharing, which cannot be stored
        deadline = time.monotonic() + 30
        while "button action failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert asha.said()[-1] == "That did not work."
    failed = [r for r in caplog.records if "button action failed" in r.getMessage()]
    assert [r.levelname for r in failed] == ["ERROR"] and "database is locked" in failed[0].getMessage()
    assert asha.store.settings().share_expressions  # nothing changed, and nothing said it did


@contextmanager
def silent_peers(unit: ButtonUnit, *names: str) -> Iterator[list[socket.socket]]:
    """Units paired with ``unit`` that take a call's request and never answer: the call rings there
    (it stays "calling"), and each one's listening socket shows whether the call went to it."""
    made = []
    try:
        for name in names:
            listener = socket.create_server(("127.0.0.1", 0))
            listener.settimeout(0.2)
            made.append(listener)
            other = Identity(Ed25519PrivateKey.generate())
            port = listener.getsockname()[1]
            unit.store.add_peer(other.unit_id, name, f"127.0.0.1:{port}", other.public_key)
        yield made
    finally:
        for listener in made:
            listener.close()


def dialled(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except TimeoutError:
        return False
    return True


def test_a_press_while_calling_says_it_still_rings_and_a_hold_stops_it(unit: ButtonUnit) -> None:
    with silent_peers(unit, "Bela"):
        unit.press()
        unit.wait_state("calling")
        assert unit.announcer.wait_idle(20)
        unit.press()  # nobody answers yet
        time.sleep(0.3)
        assert unit.said() == ["Calling Bela.", "Still calling Bela. Hold the button to stop calling."]
        unit.press(HOLD + 0.3)  # as the sentence says
        unit.wait_state("idle")
        assert unit.said()[-1] == "Call ended."


def test_a_press_as_a_call_is_closing_calls_back_once_the_unit_is_idle(unit: ButtonUnit) -> None:
    """The call has just ended (from the page here; the other unit's hang-up is the same) and its
    connection is still being closed (held open 0.3 s): a press then, to call back at once, is not
    lost. (A hang-up by the button itself would hold the press behind it until idle.)"""

    def press_while_ending(event: Event) -> None:
        if event.topic == "call.state" and event.data["state"] == "ended":
            unit.press()
            time.sleep(0.3)  # on the engine's loop: the unit stays "ended" meanwhile

    with silent_peers(unit, "Bela"):
        unit.press()
        unit.wait_state("calling")
        unsubscribe = unit.events.subscribe(press_while_ending)
        unit.engine.hangup()
        unit.wait_states(4)
        unsubscribe()
    assert unit.states[:4] == ["calling", "ended", "idle", "calling"]


def test_the_choice_waits_until_the_name_was_heard(unit: ButtonUnit) -> None:
    """A press while a long sentence plays: "Bela?" comes after it, and the owner still has the
    whole choice time after hearing it to press on to the next name."""
    with silent_peers(unit, "Bela", "Chandra") as (bela, chandra):
        unit.announcer.state("sharing_question")  # about 4 s at this rate
        unit.press()
        unit.wait_state("calling", timeout=30)
        called = next(e for e in unit.events.recent("call.state") if e.data["state"] == "calling")
        heard = next(s for s in unit.announcer.spoken if s.item.text == "Bela?")
        assert called.t - (heard.started_at + heard.seconds) >= 0.8 - 0.05
        assert dialled(bela) and not dialled(chandra)
        unit.press(HOLD + 0.3)
        unit.wait_state("idle")


def test_two_units_of_the_same_name_are_told_apart_and_the_one_named_is_called(unit: ButtonUnit) -> None:
    with silent_peers(unit, "Mum", "Mum") as (first, second):
        unit.press()
        assert unit.announcer.wait_idle(10)
        unit.press()
        unit.wait_state("calling", timeout=20)
        assert unit.said()[:3] == ["Mum, number 1?", "Mum, number 2?", "Calling Mum (2)."]
        assert dialled(second) and not dialled(first)
        unit.press(HOLD + 0.3)
        unit.wait_state("idle")


def test_a_choice_cancelled_with_a_hold_says_so_and_calls_nobody(unit: ButtonUnit, tmp_path: Path) -> None:
    for i, name in enumerate(("Bela", "Chandra")):
        other = Identity.load_or_create(tmp_path / f"{name}.key")
        unit.store.add_peer(other.unit_id, name, f"192.0.2.{i + 1}:8080", other.public_key)
    unit.press()
    time.sleep(0.1)
    unit.press(HOLD + 0.3)
    time.sleep(2)  # past the choice time
    assert unit.said() == ["Bela?", "Cancelled."]
    assert unit.states == []


def test_a_call_coming_in_during_a_choice_ends_the_choice(tmp_path: Path) -> None:
    """Bela calls while the owner is choosing whom to call, and the owner answers: the choice must
    not call out of the connected call when its time runs out ("The call failed.")."""
    host = host_address()
    asha = ButtonUnit("Asha", tmp_path / "a", host, choice_seconds=4)
    bela = Unit("Bela", tmp_path / "b", free_port(), host)
    try:
        asha.store.add_peer(bela.identity.unit_id, bela.name, bela.address, bela.identity.public_key)
        bela.pair_with(asha)  # type: ignore[arg-type]  # same attributes as a Unit
        bela.start()
        other = Identity.load_or_create(tmp_path / "chandra.key")
        asha.store.add_peer(other.unit_id, "Chandra", "192.0.2.1:8080", other.public_key)
        asha.press()
        assert asha.announcer.wait_idle(10)  # "Bela?": the choice runs
        bela.send("call Asha")
        asha.wait_state("ringing")
        # "Bela?", if the button's worker said it only now, and the ring: a press before the ring
        # is said is no answer (-k not_yet_said).
        assert asha.announcer.wait_idle(20)
        asha.press()  # answers
        asha.wait_state("connected")
        assert asha.announcer.wait_idle(20)  # the choice's time runs from the first quiet moment
        time.sleep(5.5)  # and is over
        assert asha.states == ["ringing", "connected"]
        assert "The call failed." not in asha.said()
        asha.press(HOLD + 0.3)
        asha.wait_state("idle")
    finally:
        bela.close()
        asha.close()


def test_a_button_that_cannot_be_opened_is_said_even_when_quiet(tmp_path: Path) -> None:
    """This machine has no GPIO: the button switched on in the configuration cannot be opened, and
    the owner hears it at the quietest level, with what still works, rather than pressing a dead
    button in silence."""
    unit = Talking(tmp_path / "speaker.wav", "quiet")
    events = unit.events
    try:
        events.publish("unit.ready", "ready", name="Asha")
        unit.wait_spoken(1)  # the start-up sentence is said
        cfg = config.load(None, {}, environ={})
        assert cfg.button.enabled
        button = start_button(cfg.button, CallEngineless(), unit.announcer, list, events=events)
        assert button is None
        said = unit.said()
    finally:
        unit.close()
    assert said == [
        "Asha is ready.",
        "The button is not working. Calls can still be made, answered and ended on the web page.",
    ]
    assert "no GPIO for the button on pin 17" in events.recent("button.unavailable")[0].data["reason"]


class CallEngineless:
    """A unit whose call engine is never reached: the button does not open."""

    state = "idle"
    has_button = False

    def call(self, unit_id_or_name: str) -> None:
        raise AssertionError("no press can reach the engine")

    def answer(self) -> None:
        raise AssertionError("no press can reach the engine")

    def hangup(self) -> None:
        raise AssertionError("no press can reach the engine")

    def wait_closed(self, timeout: float) -> None:
        raise AssertionError("no press can reach the engine")


class ClosingForLong:
    """A call engine whose lost call takes longer to close than a press waits (a relay's TURN)."""

    has_button = True

    def __init__(self, state: str = "lost") -> None:
        self.state = state
        self.reached: list[str] = []

    def call(self, unit_id_or_name: str) -> None:
        self.reached.append("call")

    def answer(self) -> None:
        self.reached.append("answer")

    def hangup(self) -> None:
        self.reached.append("hangup")

    def wait_closed(self, timeout: float) -> None:
        time.sleep(timeout)


def test_a_press_while_the_last_call_closes_for_long_is_said_not_dropped(tmp_path: Path) -> None:
    """A press waits up to 3 s for a call just over to close; past that it matched nothing and the
    user heard nothing, against "a press must never end in silence"."""
    speaker = WavSpeaker(tmp_path / "speaker.wav")
    announcer = Announcer(speaker, Espeak(rate_wpm=450), Phrases("en"))
    pins = MockFactory()
    gpio = Button(17, pin_factory=pins, hold_time=HOLD, bounce_time=None)
    calls = ClosingForLong()
    button = CallButton(gpio, calls, announcer, list, events=EventBus())
    try:
        gpio.pin.drive_low()
        time.sleep(0.05)
        gpio.pin.drive_high()
        time.sleep(3.3)
        assert announcer.wait_idle(20)
        said = [s.item.text for s in announcer.spoken]
    finally:
        button.close()
        announcer.close()
        speaker.close()
    assert said == ["The last call is still closing. Press again in a moment."] and calls.reached == []


def test_a_press_let_go_as_the_hold_time_runs_out_is_one_press(tmp_path: Path) -> None:
    """gpiozero's hold thread can fire just after the release: the press was answered as a press and
    then as a hold too, so a ringing call was answered and declined at once."""
    speaker = WavSpeaker(tmp_path / "speaker.wav")
    announcer = Announcer(speaker, Espeak(rate_wpm=450), Phrases("en"))
    gpio = Button(17, pin_factory=MockFactory(), hold_time=HOLD, bounce_time=None)
    calls = ClosingForLong("ringing")
    button = CallButton(gpio, calls, announcer, list, events=EventBus())
    try:
        gpio.pin.drive_low()
        time.sleep(0.05)
        gpio.pin.drive_high()  # let go...
        gpio.when_held()  # ...as gpiozero's hold thread, timed out a moment before, calls back
        time.sleep(0.5)
    finally:
        button.close()
        announcer.close()
        speaker.close()
    assert calls.reached == ["answer"]


@contextmanager
def bare_button(
    tmp_path: Path, calls: ClosingForLong, peers: list[Peer] | None = None, held: bool = False, **options: Any
) -> Iterator[tuple[Any, Announcer, EventBus]]:
    """The button on a mock pin with the real announcer (into a WAV), over ``calls``; ``held``:
    down already as the unit starts."""
    speaker = WavSpeaker(tmp_path / "speaker.wav")
    announcer = Announcer(speaker, Espeak(rate_wpm=450), Phrases("en"))
    events = EventBus()
    gpio = Button(17, pin_factory=MockFactory(), hold_time=HOLD, bounce_time=None)
    if held:
        gpio.pin.drive_low()
    button = CallButton(gpio, calls, announcer, lambda: list(peers or []), events=events, **options)
    try:
        yield gpio, announcer, events
    finally:
        button.close()
        announcer.close()
        speaker.close()


def tap(gpio: Any, seconds: float = 0.05) -> None:
    gpio.pin.drive_low()
    time.sleep(seconds)
    gpio.pin.drive_high()


def said_by(announcer: Announcer) -> list[str]:
    assert announcer.wait_idle(20)
    return [s.item.text for s in announcer.spoken]


def test_a_press_a_waiting_page_takes_ends_the_choice_instead_of_calling(tmp_path: Path) -> None:
    """The user hears "Bela?", then that a web page waits for the button, and presses: the page
    took the press, and the choice's timer still called Bela."""
    calls = ClosingForLong("idle")
    presence = ButtonPresence()
    peers = [
        Peer(f"{i}" * 32, name, "192.0.2.1:8080", b"k" * 32, i) for i, name in enumerate(("Bela", "Chandra"))
    ]
    with bare_button(tmp_path, calls, peers, choice_seconds=0.3, presence=presence) as (gpio, announcer, _):
        tap(gpio)
        assert announcer.wait_idle(10)
        presence.ask("page")
        tap(gpio)
        time.sleep(1.0)  # past the choice time
        said = said_by(announcer)
    assert presence.answer("page") == "present"
    assert calls.reached == [] and said == ["Bela?", "Cancelled."]


def test_once_forgetting_has_begun_a_press_says_so_and_calls_nobody(tmp_path: Path) -> None:
    """The natural reaction to "Forgetting everything" is a press to stop it: it called the one
    paired unit, which was then told it is forgotten."""
    calls = ClosingForLong("idle")
    with bare_button(tmp_path, calls, [Peer("1" * 32, "Bela", "192.0.2.1:8080", b"k" * 32, 0)]) as (
        gpio,
        announcer,
        events,
    ):
        events.publish("unit.forgetting", "forgetting everything this unit stored")
        tap(gpio)
        tap(gpio, HOLD + 0.3)
        said = said_by(announcer)
    assert calls.reached == []
    assert said == ["Forgetting everything: paired units, settings, identity and recordings."] * 2


def test_a_hold_as_a_call_closes_waits_for_idle_then_says_the_address(tmp_path: Path) -> None:
    """A hold right after "The call failed." matched nothing and the user heard nothing."""
    calls = ClosingForLong("failed")
    asked: list[str] = []

    def closed(timeout: float) -> None:
        calls.state = "idle"

    calls.wait_closed = closed  # type: ignore[method-assign]
    with bare_button(tmp_path, calls, say_address=lambda: asked.append("address")) as (gpio, *_):
        tap(gpio, HOLD + 0.3)
        time.sleep(0.3)
    assert asked == ["address"]


def test_a_button_down_as_the_unit_starts_is_not_a_press_when_let_go(tmp_path: Path) -> None:
    """A restart while the button was held: gpiozero saw no press, only the release, which counted
    as one and called the one paired unit."""
    calls = ClosingForLong("idle")
    bela = Peer("1" * 32, "Bela", "192.0.2.1:8080", b"k" * 32, 0)
    with bare_button(tmp_path, calls, [bela], held=True) as (gpio, announcer, _):
        gpio.pin.drive_high()  # let go before the hold time
        time.sleep(0.3)
        assert said_by(announcer) == []
        tap(gpio)  # the next press is one
        time.sleep(0.3)
    assert calls.reached == ["call"]
