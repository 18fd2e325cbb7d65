"""Owner presence by the unit's button: a whole unit (as `emocall run` builds it) on gpiozero's mock
pins, and browsers talking to its web server over HTTP."""

from __future__ import annotations

import http.cookiejar
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from appliance import selftest
from appliance.app import Appliance
from appliance.config import WebConfig
from appliance.identity import Identity
from tests.conftest import appliance_config
from tests.pairing_units import Unit
from tests.talking import wait_spoken


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.csrf = ""

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-CSRF-Token": self.csrf}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data, headers, method=method)
        try:
            with self._opener.open(request, timeout=10) as r:
                status, answer = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            status, answer = e.code, json.loads(e.read())
        self.csrf = answer.get("csrf", self.csrf) if isinstance(answer, dict) else self.csrf
        return status, answer

    def form(self, path: str, fields: dict[str, str] | None = None) -> tuple[int, str]:
        """GET a page, or POST a form (with the CSRF field) and follow the redirect, as a browser does."""
        status, _, body = self.fetch(path, fields)
        return status, body.decode()

    def fetch(self, path: str, fields: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
        """As :meth:`form`, with the answer's headers and its bytes as they came (a download)."""
        data = None if fields is None else urllib.parse.urlencode({"csrf": self.csrf, **fields}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data)
        try:
            with self._opener.open(request, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def ask_for_code(self) -> list[str]:
        self.send("GET", "/api/owner")
        status, answer = self.send("POST", "/api/owner/code", {})
        assert status == 202, answer
        return list(answer["waiting_for"])

    def after_press(self, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        """POST /api/owner/button until it stops waiting (the press is handled on a worker thread)."""
        deadline = time.monotonic() + timeout
        while True:
            status, answer = self.send("POST", "/api/owner/button", {})
            if answer.get("waiting") != "waiting" or time.monotonic() > deadline:
                return status, answer
            time.sleep(0.1)


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Appliance]:
    factory, Device.pin_factory = Device.pin_factory, MockFactory()
    appliance = Appliance(
        appliance_config(tmp_path / "asha", "Asha", button={"enabled": True, "hold_seconds": 0.3})
    ).start()
    try:
        yield appliance
    finally:
        try:
            appliance.close()
        finally:  # the mock pins must not outlive a failed close: later tests look for real ones
            Device.pin_factory.close()
            Device.pin_factory = factory


def press(unit: Appliance) -> None:
    assert unit.button is not None, "the unit found no button on the mock pins"
    pin = unit.button._button.pin
    pin.drive_low()
    time.sleep(0.05)
    pin.drive_high()


def said(unit: Appliance) -> list[str]:
    """What the unit said once it is quiet, but its start-up sentence (said whenever it settles)."""
    assert unit.speech is not None and unit.speech.announcer.wait_idle(60)
    return [s.item.text for s in unit.speech.announcer.spoken if not s.item.text.startswith("Asha is ready")]


def test_a_button_press_gives_the_waiting_page_the_owner_session(unit: Appliance) -> None:
    """The owner hears that a press lets the page in, and that it did: a press meant for a call
    cannot let a stranger's page in unheard."""
    assert unit.web is not None
    owner, stranger = Browser(unit.web.port), Browser(unit.web.port)
    assert owner.send("GET", "/api/settings")[0] == 401
    assert owner.ask_for_code() == ["code", "button"]
    status, answer = owner.send("POST", "/api/owner/button", {})
    assert (status, answer["waiting"]) == (409, "waiting") and "not been pressed" in answer["error"]
    press(unit)
    status, answer = owner.after_press()
    assert status == 200 and answer["owner"] is True, answer
    assert owner.send("GET", "/api/owner")[1]["owner"] is True
    status, settings = owner.send("GET", "/api/settings")
    assert status == 200 and settings["display_name"] == "Asha"
    # A browser that never asked gets nothing from the press, and the press is spent.
    stranger.send("GET", "/api/owner")
    assert stranger.send("POST", "/api/owner/button", {})[0] == 409
    assert stranger.send("GET", "/api/settings")[0] == 401
    assert [e.topic for e in unit.events.recent("owner.present")] == ["owner.present"]
    code, *then = said(unit)
    assert code.startswith("Owner code:")
    assert then == [
        "Or press the button once to let that web page in.",
        "A web page can now change this unit's settings.",
    ]


def test_a_closed_button_is_offered_no_more(unit: Appliance) -> None:
    """Once the button is closed (the unit shutting down), a page asking to let the owner in is
    offered the code alone, and the call engine (whose ring names the button) is told it is gone."""
    assert unit.web is not None and unit.button is not None and unit.call is not None
    assert Browser(unit.web.port).ask_for_code() == ["code", "button"]
    unit.button.close()
    assert Browser(unit.web.port).ask_for_code() == ["code"]
    assert unit.call.has_button is False


def test_two_pages_waiting_at_once_are_both_refused(unit: Appliance) -> None:
    assert unit.web is not None
    first, second = Browser(unit.web.port), Browser(unit.web.port)
    first.ask_for_code()
    second.ask_for_code()
    press(unit)
    for browser in (first, second):
        status, answer = browser.after_press()
        assert (status, answer["waiting"]) == (409, "contested"), answer
        assert browser.send("GET", "/api/settings")[0] == 401
    assert unit.call is not None and unit.call.state == "idle"  # the press placed no call either
    assert said(unit)[-1] == "Two web pages asked at once, so neither was let in. Type the code instead."


def test_in_a_call_a_page_is_offered_the_code_alone_and_a_call_ends_every_wait(unit: Appliance) -> None:
    """A page asking while a call is under way was offered the button, though a press then is for
    the call ("Or press the button once..." said over it), and a page waiting as a call began took
    the owner's first press after it, meant to call back."""
    assert unit.web is not None and unit.call is not None and unit.store is not None
    mute = socket.create_server(("127.0.0.1", 0))  # takes the call's connection, never answers
    bela = Identity.load_or_create(unit.config.unit.data_dir / "bela.key")
    unit.store.add_peer(bela.unit_id, "Bela", f"127.0.0.1:{mute.getsockname()[1]}", bela.public_key)
    early, late = Browser(unit.web.port), Browser(unit.web.port)
    try:
        assert early.ask_for_code() == ["code", "button"]  # idle: the button too
        unit.call.call("Bela")
        assert late.ask_for_code() == ["code"]  # calling: the code alone
        unit.call.hangup()
        deadline = time.monotonic() + 10
        while unit.call.state != "idle":
            assert time.monotonic() < deadline, unit.call.state
            time.sleep(0.1)
    finally:
        mute.close()
    status, answer = early.send("POST", "/api/owner/button", {})
    assert (status, answer["waiting"]) == (409, "expired"), answer  # its wait ended with the call
    assert not [s for s in said(unit) if s.startswith("Or press the button")][1:]  # once, idle


def test_without_a_button_only_the_code_is_offered(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser = Browser(a.server.port)
    assert browser.ask_for_code() == ["code"]
    assert browser.send("POST", "/api/owner/button", {})[1]["waiting"] == "expired"


def test_the_login_page_offers_the_button_and_lets_the_owner_in(unit: Appliance) -> None:
    assert unit.web is not None
    browser = Browser(unit.web.port)
    browser.send("GET", "/api/owner")  # the CSRF token the page's forms carry
    status, page = browser.form("/login/code", {})
    assert status == 200 and "press the unit's button once" in page and "I pressed the button" in page
    status, page = browser.form("/login/button", {})
    assert status == 409 and "has not been pressed yet" in page
    press(unit)
    time.sleep(1)  # the press is handled on the button's worker thread
    status, page = browser.form("/login/button", {})
    assert status == 200 and "Welcome" in page, page[-2000:]
    assert browser.send("GET", "/api/settings")[0] == 200


def test_the_selftest_asks_the_running_unit_about_the_button_it_holds(unit: Appliance) -> None:
    """The running unit holds the pin, which a second opener cannot have: the selftest reports what
    the unit found."""
    assert unit.web is not None
    report = selftest.check_button(unit.config.model_copy(update={"web": WebConfig(port=unit.web.port)}))
    assert report.ok and report.detail == "the running unit uses pin 17", report


def test_the_selftest_takes_the_camera_as_the_running_unit_gets_it_while_a_call_holds_it(
    unit: Appliance,
) -> None:
    """The unit runs its camera while a call is in progress: the selftest opened it again then (a
    Pi camera reads "in use": a NO for a camera that works). Out of a call it opens it itself."""
    assert unit.web is not None and unit.store is not None and unit.call is not None
    cfg = unit.config.model_copy(update={"web": WebConfig(port=unit.web.port)})
    idle = selftest.run(cfg)
    assert idle[0].detail.startswith("delivered a "), idle[0]  # opened here
    with socket.create_server(("127.0.0.1", 0)) as bela:  # takes the call's request, never answers
        other = Identity(Ed25519PrivateKey.generate())
        unit.store.add_peer(other.unit_id, "Bela", f"127.0.0.1:{bela.getsockname()[1]}", other.public_key)
        unit.call.call("Bela")
        try:
            camera, _, vision = selftest.run(cfg)[:3]
        finally:
            unit.call.hangup()
    assert camera.ok and camera.detail == "the running unit's camera (pattern) delivers frames", camera
    assert vision.ok and vision.detail.startswith("the test pattern (the running unit's call holds")


BUTTON_DEAD = "The button is not working. Calls can still be made, answered and ended on the web page."


def test_a_unit_with_a_working_button_asks_about_sharing_with_it(unit: Appliance) -> None:
    """The start-up question names the button where it works (without one: the page alone, below)."""
    assert unit.speech is not None
    wait_spoken(unit.speech.announcer, 1, 30)
    start = unit.speech.announcer.spoken[0].item.text
    assert start.endswith("press the button twice during a call, or use the settings page."), start


def test_a_unit_whose_button_cannot_be_opened_says_so_at_start_and_shows_it(tmp_path: Path) -> None:
    """This machine has no GPIO: the unit starts without its button, says so in its start-up
    sentence with what still works, shows it, and the selftest reports it."""
    cfg = appliance_config(
        tmp_path / "asha",
        "Asha",
        display={"backend": "offscreen", "snapshot_seconds": 0.2},
        button={"enabled": True},
    )
    unit = Appliance(cfg).start()
    try:
        assert unit.button is None and unit.web is not None and unit.display is not None
        assert unit.speech is not None
        announcer = unit.speech.announcer
        wait_spoken(announcer, 1, 30)
        assert announcer.wait_idle(30)
        start = announcer.spoken[0].item.text
        assert unit.display.flush()
        shown = (tmp_path / "asha" / "display.txt").read_text().splitlines()
        report = selftest.check_button(cfg.model_copy(update={"web": WebConfig(port=unit.web.port)}))
    finally:
        unit.close()
    assert start.startswith("Asha is ready.") and BUTTON_DEAD in start, start
    assert start.endswith("To share them, use the settings page."), start  # not the dead button
    assert BUTTON_DEAD in shown
    assert not report.ok and report.detail == "the running unit could not open pin 17: see its log"
    alone = selftest.check_button(cfg)  # no unit answers: the selftest opens the pin itself
    assert not alone.ok and "no GPIO for the button on pin 17" in alone.detail
