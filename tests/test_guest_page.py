"""The guest's page (relay/guest/) in Debian's Chromium, without root or servers.

Playwright serves the page's files as the relay would (https://relay.test/guest/) and stands in for
the relay's XMPP-over-WebSocket endpoint, speaking its side of the exchange the page starts (RFC
7395 framing, anonymous sign-in, bind, XEP-0215) and answering the page's request to the unit with
what the unit answers (appliance/guests/calls.py). The whole call, with the real Prosody, coturn
and unit: tests/test_guest_call.py (root, network namespaces).
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance.config import GUEST_HEARTBEAT_SECONDS
from appliance.events import EventBus
from appliance.guests.invites import Invites
from appliance.identity import Identity
from appliance.state import StateStore
from appliance.words.scripts import SCRIPTS
from tests.test_browser import ARGS, CHROMIUM

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

GUEST = Path(__file__).resolve().parents[1] / "relay" / "guest"
PAGE = "https://relay.test/guest/"
JID = "asha-0a1b2c3d4e@relay.test"
HOST = "guests.relay.test"  # the relay's host for anonymous guest accounts
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
WITHDRAWN = "This invite was withdrawn. Ask Asha for a new link."


@pytest.fixture
def token(tmp_path: Path) -> Iterator[str]:
    """A real invite for Priya from the unit Asha (as the owner's /guests page makes it)."""
    store = StateStore(tmp_path / "state.db", EventBus(), {"display_name": "Asha"})
    invites = Invites(Identity.load_or_create(tmp_path / "identity.key"), store)
    yield invites.token(invites.create("Priya", 3600, once=True), JID)
    store.close()


def _files(route: Any) -> None:
    name = route.request.url.split("?", 1)[0].removeprefix(PAGE) or "index.html"
    path = GUEST / name
    if path.parent != GUEST or not path.is_file():
        route.fulfill(status=404, body="")
        return
    route.fulfill(status=200, body=path.read_bytes(), content_type=TYPES.get(path.suffix, "text/plain"))


# What Prosody answers for a unit that is not connected.
UNAVAILABLE = (
    '<iq xmlns="jabber:client" type="error" id="{}"><error type="cancel">'
    '<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
)
# What the relay answers an address that asked for too many TURN credentials: its rule's own text.
FIREWALL = (GUEST.parent / "guests.pfw").read_text()
TOO_MANY = (
    '<iq xmlns="jabber:client" type="error" id="{}"><error type="wait">'
    '<resource-constraint xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
    '<text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">'
    + re.findall(r"LIMIT: credentials on .*\nBOUNCE=resource-constraint \((.+)\)", FIREWALL)[0]
    + "</text></error></iq>"
)
# What a unit answers a request for a path it does not let through the relay.
BAD_REQUEST = (
    '<iq xmlns="jabber:client" type="error" id="{}"><error type="modify">'
    '<bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
)


class Relay:
    """The relay's side of the page's XMPP exchange; the unit's answer to the call is ``answer``."""

    def __init__(self, status: int, answer: dict[str, Any], rings: bool = False, drops: bool = False) -> None:
        self.status, self.answer = status, answer
        self.rings = rings  # the unit does not answer the offer yet (a bye, at once): the call rings
        self.drops = drops  # the page's connection is cut once its first request is sent
        self.gone = False  # the unit is not connected: the relay answers its error to what goes to it
        self.forgot = False  # the unit restarted: it does not know the page's call
        self.over = False  # the unit's decline of the call was lost on the way
        self.silent = False  # the unit's link went: what goes to it is not answered
        self.stalled = False  # the phone's link went: nothing is answered
        self.older = False  # a unit of an earlier release, which cannot be asked about its call
        self.requests: list[str] = []  # the call's signals
        self.checks = 0  # the page's questions whether the unit still has its call
        self.pings = 0  # the page's pings to the relay itself
        self.turn_seconds: float | None = None  # TURN credentials given, lasting this long (none: no TURN)
        self.too_many = False  # the relay refuses the page's address more TURN credentials
        self.services = 0  # the page's asks for STUN/TURN servers

    def __call__(self, ws: Any) -> None:
        ws.on_message(lambda message: self._heard(ws, str(message)))

    def _heard(self, ws: Any, xml: str) -> None:
        stanza_id = re.search(r' id="([^"]+)"', xml)
        iq = f'<iq xmlns="jabber:client" type="result" id="{stanza_id.group(1) if stanza_id else ""}"'
        if "urn:xmpp:ping" in xml:
            self.pings += 1
            if not self.stalled:
                ws.send(f"{iq}/>")
        elif xml.startswith("<open"):
            ws.send(f'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" from="{HOST}" version="1.0"/>')
            ws.send('<stream:features xmlns:stream="http://etherx.jabber.org/streams"/>')
        elif xml.startswith("<auth"):
            ws.send('<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>')
        elif "urn:ietf:params:xml:ns:xmpp-bind" in xml:
            bound = f"<jid>x@{HOST}/1</jid>"
            ws.send(f'{iq}><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">{bound}</bind></iq>')
        elif "urn:xmpp:extdisco:2" in xml:
            self.services += 1
            if self.too_many:
                ws.send(TOO_MANY.format(stanza_id.group(1) if stanza_id else ""))
            else:
                ws.send(f'{iq}><services xmlns="urn:xmpp:extdisco:2">{self._turn()}</services></iq>')
        elif "urn:emocall:relay:1" in xml:
            exchange = json.loads(_request_body(xml))
            check = exchange["path"] == "/api/guest/call"
            bye = not check and json.loads(base64.b64decode(exchange["body"]))["signal"]["kind"] == "bye"
            if check:
                self.checks += 1
            else:
                self.requests.append(xml)
            if self.silent or self.stalled:
                return
            if self.gone or (check and self.older):
                refusal = UNAVAILABLE if self.gone else BAD_REQUEST
                ws.send(refusal.format(stanza_id.group(1) if stanza_id else ""))
            elif check:
                self._respond(ws, iq, 200, {"known": not self.forgot, "over": self.over})
            elif self.drops and len(self.requests) == 1:
                ws.close()
            elif bye or not self.rings:
                self._respond(ws, iq, self.status, self.answer)

    def _turn(self) -> str:
        """A TURN server (over TCP to a port nobody listens on: refused at once) and its TURN REST
        credentials, named "expiry second" as the relay's Prosody names them."""
        if self.turn_seconds is None:
            return ""
        user = int(time.time() + self.turn_seconds)
        return (
            f'<service type="turn" host="127.0.0.1" port="9" transport="tcp" username="{user}" password="p"/>'
        )

    @staticmethod
    def _respond(ws: Any, iq: str, status: int, answer: dict[str, Any]) -> None:
        body = base64.b64encode(json.dumps(answer).encode()).decode()
        response = json.dumps({"status": status, "headers": {}, "body": body})
        ws.send(f'{iq}><response xmlns="urn:emocall:relay:1">{response}</response></iq>')


def _guest_page(
    pw: Any, relay: Relay, token: str, clock_ahead: float = 0, fake_clock: bool = False
) -> tuple[Any, Any]:
    """The page in Chromium, the phone's clock ``clock_ahead`` seconds ahead of this machine's, or
    (``fake_clock``) its timers run on by the test."""
    args = [*ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    page = browser.new_page()
    if fake_clock:
        page.clock.install()
    if clock_ahead:
        page.add_init_script(f"{{ const now = Date.now; Date.now = () => now() + {clock_ahead * 1000}; }}")
    page.set_default_timeout(15_000)
    page.route(f"{PAGE}**", _files)
    page.route_web_socket("wss://relay.test/guest-xmpp", relay)
    page.goto(f"{PAGE}#{token}")
    return browser, page


def test_the_example_names_the_guest_in_the_unit_s_words(token: str) -> None:
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, Relay(200, {}), token)
        try:
            note = page.locator("#describe-note")
            sync_api.expect(note).to_contain_text('(for example "Priya looks happy")')
        finally:
            browser.close()


def test_names_in_hindi_or_bengali_letters_are_marked_with_their_language(tmp_path: Path) -> None:
    """A screen reader reads the English page's names with its English voice, which spells out or
    skips Devanagari and Bengali letters, unless they are marked (the unit's own pages mark them)."""
    store = StateStore(tmp_path / "state.db", EventBus(), {"display_name": "आशा"})
    invites = Invites(Identity.load_or_create(tmp_path / "identity.key"), store)
    token = invites.token(invites.create("প্রিয়া", 3600, once=True), JID)
    store.close()
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, Relay(200, {}), token)
        try:
            expect = sync_api.expect
            expect(page.locator("#status")).to_have_text('Hello প্রিয়া. Press "Call आशा" when you are ready.')
            for where in ("#status", "#heading", "#call"):
                expect(page.locator(f"{where} bdi[lang=hi]")).to_have_text("आशा")
            expect(page.locator("#status bdi[lang=bn]")).to_have_text("প্রিয়া")
            expect(page.locator("#example bdi[lang=bn]")).to_have_text("প্রিয়া")
            expect(page.get_by_role("button", name="Call आशा")).to_be_visible()
        finally:
            browser.close()


def test_the_guest_pages_heartbeat_is_the_one_the_units_settings_allow_for() -> None:
    """A unit refuses a peer_timeout_seconds shorter than two of the page's heartbeats."""
    beat = re.search(r"const HEARTBEAT_MS = (\d+);", (GUEST / "guest.js").read_text())
    assert beat is not None and int(beat.group(1)) == GUEST_HEARTBEAT_SECONDS * 1000


def test_the_guest_pages_scripts_are_the_units_own() -> None:
    """The guest's page marks names by the same table as the unit's pages (its own copy in
    JavaScript: a script added to one and not the other was marked on one page only)."""
    source = (GUEST / "guest.js").read_text()
    table = source[source.index("const SCRIPTS = [") : source.index("];", source.index("const SCRIPTS = ["))]
    found = dict(re.findall(r"\['([a-z]+)', /\[([^\]]+)\]/\]", table))
    wanted = {
        lang: "".join(f"\\u{ord(c):04X}" if c != "-" else c for c in letters)
        for lang, (_, letters) in SCRIPTS.items()
    }
    assert found == wanted


def test_an_invite_the_unit_refuses_after_call_keeps_the_focus_on_the_sentence(token: str) -> None:
    """The unit refuses the invite (withdrawn) while "Cancel the call" has the focus: that button
    is hidden with its section, and the focus goes to the sentence, not to the top of the page."""
    relay = Relay(403, {"error": WITHDRAWN})
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token)
        try:
            page.get_by_role("button", name="Call Asha").click()
            problem = page.get_by_role("alert")
            sync_api.expect(problem).to_have_text(WITHDRAWN)
            sync_api.expect(problem).to_be_focused()
            sync_api.expect(page.get_by_role("button", name="Cancel the call")).to_be_hidden()
            assert len(relay.requests) == 1
        finally:
            browser.close()


def test_the_describe_choice_is_fixed_while_the_call_rings(token: str) -> None:
    """The choice goes to the unit with the call's offer: unticked while the call rang, the page
    showed "not described" while the owner heard "Priya looks sad"."""
    relay = Relay(200, {}, rings=True)
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token)
        try:
            choice = page.locator("#describe")
            sync_api.expect(choice).to_be_enabled()
            page.get_by_role("button", name="Call Asha").click()
            for _ in range(100):  # until the offer is with the unit, which rings
                if relay.requests:
                    break
                page.wait_for_timeout(100)
            assert relay.requests
            sync_api.expect(choice).to_be_disabled()
            page.get_by_role("button", name="Cancel the call").click()
            sync_api.expect(choice).to_be_enabled()  # a new call may choose again
        finally:
            browser.close()


def _offer_sent(page: Any, relay: Relay) -> None:
    for _ in range(100):  # until the offer is with the unit, which rings
        if relay.requests:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the page sent no offer")


def test_cancelling_a_ringing_call_sends_a_bye_numbered_as_its_offer(token: str) -> None:
    """The bye carried no number, so a bye that overtook its offer on the relay could not stop it:
    the owner was rung for a page that had gone, and a one-time invite used up."""
    relay = Relay(200, {}, rings=True)
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token)
        try:
            page.get_by_role("button", name="Call Asha").click()
            _offer_sent(page, relay)
            page.get_by_role("button", name="Cancel the call").click()
            _second_request(page, relay)
        finally:
            browser.close()
    assert _signals(relay) == [("offer", 1), ("bye", 1)]


@contextmanager
def _ringing(relay: Relay, token: str) -> Iterator[Any]:
    """The page on Playwright's clock (run on by the test), its offer with the unit, which rings."""
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token, fake_clock=True)
        try:
            page.get_by_role("button", name="Call Asha").click()
            _offer_sent(page, relay)
            yield page
        finally:
            browser.close()


def test_the_first_ring_check_waits_ten_seconds_from_the_offer(token: str) -> None:
    """While the unit rings, the page asks it first 10 s after the offer (RING_CHECK_MS): not at
    once, when the relay may still carry the offer behind the check. Playwright's clock flows on
    its own too, by the second or two the offer takes: 7 s run on is short of 10, 10.5 s past it."""
    relay = Relay(200, {}, rings=True)
    with _ringing(relay, token) as page:
        page.clock.run_for(7_000)
        page.wait_for_timeout(500)
        assert relay.checks == 0
        page.clock.run_for(3_500)
        _until(page, lambda: relay.checks == 1)


def _answered_then(page: Any, relay: Relay, change: str) -> None:
    """The unit answers the page's first check whether it still has the call (10 s in); then
    ``change`` (a flag of the stand-in relay) comes about, the second check fails, and 3 s later
    the page asks once more."""
    calling = "Calling Asha. Waiting for an answer…"
    page.clock.run_for(10_000)
    _until(page, lambda: relay.checks == 1)
    sync_api.expect(page.get_by_role("status")).to_have_text(calling)
    setattr(relay, change, True)
    page.clock.run_for(10_000)
    _until(page, lambda: relay.checks == 2)
    sync_api.expect(page.get_by_role("status")).to_have_text(calling)  # one is not enough
    page.clock.run_for(3_000)


def test_a_unit_that_goes_off_the_relay_while_it_rings_gets_the_bye_once_it_is_back(token: str) -> None:
    """While the unit rings, the page asks it every 10 s (Playwright's clock, run on here) whether
    it still has the call. The unit answers; then it goes off the relay, which answers each check
    with its error: after two in a row (3 s apart) the page says the unit cannot be reached, not
    after 130 s. Its bye gets the same error, and goes again every 10 s until the unit, back,
    answers it; then no more."""
    relay = Relay(200, {}, rings=True)
    with _ringing(relay, token) as page:
        _answered_then(page, relay, "gone")
        sync_api.expect(page.get_by_role("status")).to_have_text(
            "Asha's unit cannot be reached now: it may be switched off. Try again later."
        )
        _until(page, lambda: len(relay.requests) == 2)  # the bye, refused: the unit is not there
        relay.gone = False
        page.clock.run_for(10_000)
        _until(page, lambda: len(relay.requests) == 3)  # again, and answered
        page.clock.run_for(30_000)
        page.wait_for_timeout(500)
    assert _signals(relay) == [("offer", 1), ("bye", 1), ("bye", 1)]
    assert relay.checks == 3


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("forgot", "Asha's unit stopped ringing: it may have restarted. Press Call to call again."),
        ("over", "Asha did not answer."),
    ],
)
def test_a_unit_that_no_longer_rings_for_the_page_ends_its_wait(token: str, change: str, said: str) -> None:
    """A unit that restarts mid-ring is back on the relay in seconds and rings no more; a unit's
    decline can be lost with a relay connection that drops as it goes. Either way the page waited
    130 s for an answer that never came. The unit's answer to the check, that it does not know the
    call or that the call is over, twice in a row, ends the wait with why."""
    relay = Relay(200, {}, rings=True)
    with _ringing(relay, token) as page:
        _answered_then(page, relay, change)
        sync_api.expect(page.get_by_role("status")).to_have_text(said)
        sync_api.expect(page.get_by_role("button", name="Call Asha")).to_be_enabled()
        _until(page, lambda: len(relay.requests) == 2)
        page.clock.run_for(30_000)
        page.wait_for_timeout(500)
    assert relay.checks == 3
    # The bye all the same, answered at once: the check's answer may have overtaken an offer that
    # then does not ring.
    assert _signals(relay) == [("offer", 1), ("bye", 1)]


def test_a_unit_that_cannot_be_asked_rings_on(token: str) -> None:
    """A unit of an earlier release refuses the check as a path it does not know ("bad request"):
    not a unit gone, so the page waits for its answer to the offer."""
    relay = Relay(200, {}, rings=True)
    relay.older = True
    with _ringing(relay, token) as page:
        for checks in range(1, 4):
            page.clock.run_for(10_000)
            _until(page, lambda: relay.checks == checks)  # noqa: B023 (read before the next)
        page.wait_for_timeout(300)
        sync_api.expect(page.get_by_role("status")).to_have_text("Calling Asha. Waiting for an answer…")
    assert _signals(relay) == [("offer", 1)]


@pytest.mark.parametrize(
    ("link", "said"),
    [
        ("stalled", "Your internet connection stopped while the call rang. Check it, then press Call again."),
        ("silent", "Asha's unit cannot be reached now: it may be switched off. Try again later."),
    ],
)
def test_a_ring_check_nobody_answers_blames_the_link_that_went(token: str, link: str, said: str) -> None:
    """The page's check whether the unit still has the call goes unanswered, twice: the phone's own
    link stalled, or the unit's (its relay connection looks open for minutes). The page pings the
    relay itself, which answers at once when the phone's link works: a phone that lost its own
    connection was told the unit could not be reached."""
    relay = Relay(200, {}, rings=True)
    with _ringing(relay, token) as page:
        setattr(relay, link, True)
        for checks in (1, 2):
            page.clock.run_for(10_000 if checks == 1 else 3_000)
            _until(page, lambda: relay.checks == checks)  # noqa: B023 (read before the next)
            page.clock.run_for(5_000)  # no answer
            _until(page, lambda: relay.pings == checks)  # noqa: B023
            page.clock.run_for(5_000)  # the relay's answer, or none
            if checks == 1:  # one is not enough
                sync_api.expect(page.get_by_role("status")).to_have_text(
                    "Calling Asha. Waiting for an answer…"
                )
        sync_api.expect(page.get_by_role("status")).to_have_text(said)


def _until(page: Any, done: Callable[[], bool]) -> None:
    for _ in range(50):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError("not in 5 s")


def _second_request(page: Any, relay: Relay) -> None:
    for _ in range(50):  # the bye, after the offer
        if len(relay.requests) == 2:
            return
        page.wait_for_timeout(100)


def _signals(relay: Relay) -> list[tuple[str, int]]:
    """Each request's signal to the unit: its kind and number."""
    bodies = [json.loads(base64.b64decode(json.loads(_request_body(r))["body"])) for r in relay.requests]
    return [(b["signal"]["kind"], b["signal"]["number"]) for b in bodies]


def _request_body(xml: str) -> str:
    """The relay request's JSON (an iq's <request> text)."""
    found = re.search(r"<request[^>]*>(.*)</request>", xml, re.DOTALL)
    assert found is not None, xml
    return html.unescape(found.group(1))


def test_a_new_link_opened_in_the_same_tab_is_read(token: str) -> None:
    """Only the fragment changes (no reload), so the page stayed on the old link's sentence, with no
    Call button, though the new link was good."""
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, Relay(200, {}), "not-an-invite")
        try:
            sync_api.expect(page.get_by_role("alert")).to_contain_text("not a valid invite")
            page.evaluate("(token) => { location.hash = token; }", token)
            sync_api.expect(page.get_by_role("button", name="Call Asha")).to_be_visible()
        finally:
            browser.close()


@pytest.mark.parametrize(("ahead_hours", "expired"), [(3, False), (49, True)])
def test_the_phone_s_clock_turns_away_only_an_invite_long_expired(
    token: str, ahead_hours: float, expired: bool
) -> None:
    """The invite is good for an hour by the unit's clock. A phone three hours ahead (set by hand,
    in another time zone) said it had expired and showed no Call button; the unit decides, and the
    page says so at once only for an invite that ended more than a day ago by the phone's clock."""
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, Relay(403, {"error": "unused"}), token, ahead_hours * 3600)
        try:
            if expired:
                sync_api.expect(page.get_by_role("alert")).to_have_text(
                    "This invite has expired. Ask Asha for a new link."
                )
                sync_api.expect(page.get_by_role("button", name="Call Asha")).to_be_hidden()
            else:
                sync_api.expect(page.get_by_role("button", name="Call Asha")).to_be_visible()
                sync_api.expect(page.get_by_role("alert")).to_be_hidden()
        finally:
            browser.close()


def test_a_browser_without_webrtc_is_told_to_use_another(token: str) -> None:
    """A messaging app's own browser without WebRTC showed the browser's raw error after Call, and
    "Try again", which could never help."""
    with sync_api.sync_playwright() as pw:
        args = [*ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page = browser.new_page()
            page.add_init_script("delete window.RTCPeerConnection;")
            page.route(f"{PAGE}**", _files)
            page.goto(f"{PAGE}#{token}")
            problem = page.get_by_role("alert")
            sync_api.expect(problem).to_have_text(
                "This browser cannot make video calls. Open the link in Chrome, Firefox or Safari."
            )
            sync_api.expect(page.get_by_role("button", name="Call Asha")).to_be_hidden()
        finally:
            browser.close()


def test_a_call_cut_off_while_it_rings_stops_the_ring(token: str) -> None:
    """The relay's connection dropped while the call rang (a phone moving off Wi-Fi): the page said
    the call did not work, and the unit rang on for nobody, answered the next try "busy" and used
    up the one-time invite. Now the page sends the bye on a connection of its own."""
    relay = Relay(200, {}, rings=True, drops=True)
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token)
        try:
            page.get_by_role("button", name="Call Asha").click()
            sync_api.expect(page.get_by_role("status")).to_contain_text("did not work")
            _second_request(page, relay)
        finally:
            browser.close()
    assert _signals(relay) == [("offer", 1), ("bye", 1)]


BUSY = "Asha is in another call. Try again later."


def _call_busy(page: Any, relay: Relay) -> None:
    """One more call, which the unit answers busy."""
    offers = len(relay.requests)
    page.get_by_role("button", name="Call Asha").click()
    _until(page, lambda: len(relay.requests) == offers + 1)
    sync_api.expect(page.get_by_role("status")).to_have_text(BUSY)


@pytest.mark.parametrize(("ahead", "asks"), [(0, 2), (7200, 4)], ids=["clock", "clock_ahead"])
def test_the_page_keeps_its_turn_credentials_for_the_next_offers(token: str, ahead: float, asks: int) -> None:
    """Each offer asked the relay for TURN credentials, and the relay gives one address only a few
    (tests/test_relay.py -k four_turn_credentials): calls (re-offers alike) ask once in three offers,
    their credentials lasting an hour (one credential holds coturn's 12 allocations, 3 an offer). A
    phone's clock two hours ahead reads them as ended: it asks each time."""
    relay = Relay(200, {"kind": "busy"})
    relay.turn_seconds = 3600
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token, clock_ahead=ahead)
        try:
            for _ in range(4):
                _call_busy(page, relay)
            assert relay.services == asks
        finally:
            browser.close()


def test_credentials_past_half_their_life_are_asked_again_and_kept_when_refused(token: str) -> None:
    """Past half their life (10 s of 20 here) the page asks again; the relay refusing (too many from
    this address), it calls on those it kept while they have not ended, and once they have (the
    phone's clock run on), it says why there is no call."""
    relay = Relay(200, {"kind": "busy"})
    relay.turn_seconds = 20
    with sync_api.sync_playwright() as pw:
        browser, page = _guest_page(pw, relay, token)
        try:
            _call_busy(page, relay)
            time.sleep(10.5)
            _call_busy(page, relay)
            assert relay.services == 2
            relay.too_many = True
            time.sleep(10.5)
            _call_busy(page, relay)  # on the credentials kept
            assert relay.services == 3
            page.evaluate("() => { const now = Date.now; Date.now = () => now() + 30000; }")
            page.get_by_role("button", name="Call Asha").click()
            said = (
                "The call to Asha did not work: the relay takes no more calls from your network for a "
                "few minutes. Try again."
            )
            sync_api.expect(page.get_by_role("status")).to_have_text(said)
            assert relay.services == 4 and len(relay.requests) == 3
        finally:
            browser.close()
