"""The pages as a blind owner uses them: every result announced, plain errors, pairing by address alone.

Two ``emocall run`` processes and Debian's Chromium (Playwright, as tests/test_browser.py). After every
form post the test reads what a screen reader reads first: the page title, and the focused element
with its role, name and description (the message, or the code field when a code is awaited). Every
page is audited with axe-core at all levels (WCAG A, AA and AAA, and best practice; any impact
fails), and must reflow at 320 px, also with the increased text spacing of WCAG 1.4.12. Codes and
addresses come only from what the units show (the off-screen display's text).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.web.address import unit_address
from appliance.web.schemas import typed_address
from appliance.web.wording import unit_details
from tests.pairing_units import Unit, make_unit
from tests.test_browser import ARGS, CHROMIUM, Process, two_units  # noqa: F401 (a fixture)

sync_api = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

AXE_ALL_LEVELS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag2aaa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"],
    },
    "resultTypes": ["violations"],
}
# WCAG 1.4.12's test values; the CSP allows no inline style, so the context bypasses it for this.
TEXT_SPACING = (
    "* { line-height: 1.5 !important; letter-spacing: 0.12em !important; word-spacing: 0.16em !important; }"
    " p { margin-bottom: 2em !important; }"
)
# Every element inside the viewport, and none clipping its content (the skip link hides off-screen
# on purpose until focused).
OVERFLOW = """() => {
  const page = document.documentElement, width = page.clientWidth, bad = [];
  if (page.scrollWidth > width) bad.push(`the page scrolls sideways (${page.scrollWidth} px)`);
  for (const el of document.body.querySelectorAll('*:not(.skip)')) {
    const r = el.getBoundingClientRect(), what = `${el.tagName} "${el.textContent.trim().slice(0, 30)}"`;
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -1 || r.right > width + 1) bad.push(`${what} at ${r.left}..${r.right} px`);
    const clips = getComputedStyle(el).overflowX !== 'visible';
    if (clips && el.scrollWidth > el.clientWidth + 1) bad.push(`${what} is clipped`);
  }
  return bad;
}"""
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


class Owner:
    """One browser tab and what it checks after every step."""

    def __init__(self, page: Any, unit: Process, failures: list[str]) -> None:
        self.page, self.unit, self.failures = page, unit, failures
        self.axe = axe_module.Axe()
        self.expect = sync_api.expect

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.unit.url}{path}")

    def said(self, title: str, role: str, name: str, description: str = "") -> Any:
        """The page title starts with ``title``; focus is on a ``role`` element named ``name``."""
        self.expect(self.page).to_have_title(re.compile("^" + re.escape(title)))
        focused = self.page.locator("*:focus")
        self.expect(focused).to_have_count(1)
        self.expect(focused).to_have_role(role)
        self.expect(focused).to_have_accessible_name(name)
        if description:
            self.expect(focused).to_have_accessible_description(re.compile(re.escape(description)))
        return focused

    def result(self, text: str, kind: str = "status") -> None:
        """The message is the title's start and has the focus."""
        title = ("Error: " if kind == "alert" else "") + text
        self.said(title, kind, text)

    def invalid(self, label: str, error: str, kept: str) -> None:
        """The field is marked invalid, described by its error, and still holds what was typed."""
        field = self.page.get_by_label(label, exact=True)
        self.expect(field).to_have_attribute("aria-invalid", "true")
        self.expect(field).to_have_accessible_description(re.compile(re.escape(error)))
        self.expect(field).to_have_value(kept)

    def audit(self, what: str) -> None:
        """axe-core at all levels, then reflow at 320 px, and with text spacing at 320 and 390 px."""
        found = self.axe.run(self.page, options=AXE_ALL_LEVELS).response["violations"]
        self.failures += [f"{what}: axe {v['id']} ({v['impact']}): {v['help']}" for v in found]
        size = self.page.viewport_size
        for width, spacing in ((320, False), (320, True), (390, True)):
            self.page.set_viewport_size({"width": width, "height": 640})
            tag = self.page.add_style_tag(content=TEXT_SPACING) if spacing else None
            bad = self.page.evaluate(OVERFLOW)
            self.failures += [f"{what} at {width} px{' spaced' if spacing else ''}: {b}" for b in bad[:5]]
            if tag is not None:
                tag.evaluate("t => t.remove()")
        self.page.set_viewport_size(size)

    def click(self, name: str) -> None:
        self.page.get_by_role("button", name=name, exact=True).click()

    def fill(self, label: str, text: str) -> None:
        self.page.get_by_label(label, exact=True).fill(text)


def _shown(unit: Process) -> list[str]:
    return unit.screen.read_text().splitlines() if unit.screen.exists() else []


def _address_shown(unit: Process, timeout: float = 15) -> str:
    """The address on the unit's idle line ("Ready. Address 192.168.1.20:8080")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"Address (\S+:\d+)$", "\n".join(_shown(unit)), re.MULTILINE)
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"{unit.name} shows no address: {_shown(unit)}")


def _code_gone(unit: Process, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while re.search(r"^\d{6}$", "\n".join(_shown(unit)), re.MULTILINE):
        assert time.monotonic() < deadline, f"{unit.name} still shows a code: {_shown(unit)}"
        time.sleep(0.1)


def _log_in(me: Owner) -> None:
    """Ask for a code, type a wrong one, hear it again, type the right one: each step announced."""
    a = me.unit
    me.goto("/")
    me.expect(me.page).to_have_title(f"Enter the code \N{EN DASH} {a.name} \N{EN DASH} emocall")
    me.audit("login page")
    before = a.shown_code()
    me.click("Ask the unit for a code")
    code = a.next_code(before)
    told = "The unit is showing and saying a code now. It works for 2 minutes."
    me.said(told, "textbox", "Code (six digits)", description=told)
    assert "It works for 2 minutes." in _shown(a)[1]
    me.audit("login page, code awaited")

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    me.fill("Code (six digits)", wrong)
    me.click("Log in")
    error = "That is not the code the unit is saying: 4 tries left. Type the six digits again."
    me.said("Error: " + error, "textbox", "Code (six digits)", description=error)
    me.invalid("Code (six digits)", error, wrong)
    me.audit("login page, wrong code")

    me.click("Say the code again")
    me.said("The unit is saying the same code again.", "textbox", "Code (six digits)")
    assert a.shown_code() == code
    me.fill("Code (six digits)", code)
    me.click("Log in")
    me.result("Welcome. You can now change this unit for 12 hours.")
    _code_gone(a)


def _status_page(me: Owner) -> None:
    a = me.unit
    me.audit("status page")
    text = me.page.locator("main").inner_text()
    assert "{" not in text and not HEX_ID.search(text), text
    assert text.count("No call.") == 1, text
    shown = _address_shown(a)
    me.expect(me.page.locator("dd.address")).to_have_text(shown)
    me.click("Say the address aloud")
    me.result(f"The unit is saying its address, {shown}, and shows it on its display.")


def _pair_by_address(me: Owner, b: Process) -> None:
    """Only what B shows: its address on its idle line, then its code."""
    label = "The other unit's address"
    me.goto("/pair")
    me.audit("pairing page")
    for typed, error in (
        (
            "porch:port",
            "Type the other unit's address as its display shows it, for example 192.168.1.20:8080.",
        ),
        ("127.0.0.1:1", "No unit answered at 127.0.0.1:1. Check the address on the other unit's display"),
    ):
        me.fill(label, typed)
        me.click("Ask it for a code")
        focused = me.said("Error: ", "alert", me.page.locator("#result-text").inner_text())
        me.expect(focused).to_contain_text(error)
        me.invalid(label, error, typed)
    me.audit("pairing page, address refused")

    before = b.shown_code()
    me.fill(label, f"http://{_address_shown(b)}/")  # as people type it
    me.click("Ask it for a code")
    told = f"{b.name} is showing and saying a code. It works for 2 minutes. Type it below."
    code_label = f"Code shown and said by {b.name} (six digits)"
    me.said(told, "textbox", code_label, description=told)
    code = b.next_code(before)
    me.audit("pairing page, code awaited")

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    me.fill(code_label, wrong)
    me.click("Pair")
    error = f"That is not the code {b.name} is saying: 4 tries left. Type the six digits again."
    me.said("Error: " + error, "textbox", code_label, description=error)
    me.invalid(code_label, error, wrong)
    me.click(f"Ask {b.name} to say the code again")
    me.said(told, "textbox", code_label)
    assert b.shown_code() == code
    me.fill(code_label, code)
    me.click("Pair")
    me.result(f"Paired with {b.name}.")
    _code_gone(b)
    me.audit("pairing page, paired")


def _call(me: Owner, them: Owner) -> None:
    """The status page after each call action shows the state the action led to, said once."""
    a, b = me.unit, them.unit
    me.goto("/")
    me.click(f"Call {b.name}")
    me.result("Calling. Waiting for the other unit to answer.")
    before = b.shown_code()
    them.goto("/")
    them.click("Ask the unit for a code")
    them.fill("Code (six digits)", b.next_code(before))
    them.click("Log in")
    main = them.page.locator("main")
    them.expect(main).to_contain_text("Someone is calling. Press Answer to talk.")
    them.click("Answer")
    if them.page.title().startswith("Still connecting"):  # a loaded machine: over 5 s to connect
        them.result("Still connecting: refresh the status in a moment to hear the call state.")
        for _ in range(30):
            them.page.get_by_role("link", name="refresh the status").click()
            if "In a call." in them.page.locator("main").inner_text():
                break
            time.sleep(0.5)
    else:
        them.result("In a call.")
    them.expect(main).to_contain_text("In a call.")
    them.expect(them.page.get_by_role("button", name="Answer")).to_have_count(0)
    them.audit("status page, in a call")
    me.page.get_by_role("link", name="refresh the status").click()
    me.expect(me.page.locator("main")).to_contain_text("In a call.")
    them.click("Hang up")
    them.result("Hung up.")
    them.expect(them.page.get_by_role("button", name="Hang up")).to_have_count(0)
    assert a.proc.poll() is None


def _settings(me: Owner) -> None:
    me.goto("/settings")
    me.audit("settings page")
    me.page.get_by_label("Tones", exact=True).check()
    me.fill("Name of this unit (the other unit says it)", "")
    me.fill("Volume (percent)", "500")
    me.click("Save settings")
    summary = "Nothing was changed: 2 answers need changing: Name of this unit, Volume."
    me.said("Error: " + summary, "alert", summary)
    me.invalid("Name of this unit (the other unit says it)", "Type a name of 1 to 40 letters", "")
    me.invalid("Volume (percent)", "Type a whole number from 0 (silent) to 100 (loudest).", "500")
    me.expect(me.page.get_by_label("Tones", exact=True)).to_be_checked()  # the other changes are kept
    me.audit("settings page, two fields refused")

    me.fill("Name of this unit (the other unit says it)", me.unit.name)
    me.fill("Volume (percent)", "0")
    me.click("Save settings")
    me.result(
        "Settings saved. The volume is 0, so the unit says nothing aloud: not calls, and not the codes "
        "you need to log in. Turn the volume up to hear them."
    )
    me.expect(me.page.get_by_label("Tones", exact=True)).to_be_checked()


def _unpair(me: Owner, b: Process) -> None:
    me.goto("/pair")
    me.click(f"Unpair {b.name}")
    question = (
        f"Are you sure? {b.name} and this unit will not be able to call each other until you pair them "
        f"again, which needs a new code from {b.name}."
    )
    me.result(question)
    me.audit("unpair question")
    me.page.get_by_role("link", name=f"No, keep {b.name} paired").click()
    me.expect(me.page.get_by_role("button", name=f"Unpair {b.name}")).to_be_visible()
    me.click(f"Unpair {b.name}")
    me.click(f"Yes, unpair {b.name}")
    me.result(f"Unpaired {b.name}.")


def _session_end(me: Owner, other: Owner) -> None:
    """A form sent after the login ended is kept; logging out is said."""
    me.goto("/settings")
    other.goto("/")
    other.click("Log out")
    other.result("You are logged out. To change this unit again, ask it for a code.")
    me.fill("Volume (percent)", "35")
    me.click("Save settings")
    kept = (
        "Your login has ended, so the settings were not saved. Ask the unit for a code and type it below: "
        "your changes are kept and shown again for you to save."
    )
    me.result(kept, "alert")
    me.audit("login page, login ended")
    before = me.unit.shown_code()
    me.click("Ask the unit for a code")
    me.fill("Code (six digits)", me.unit.next_code(before))
    me.click("Log in")
    me.result(
        "Welcome back. Your changes from before you were logged out are filled in below but not saved "
        'yet: check them and press "Save settings".'
    )
    me.expect(me.page.get_by_label("Volume (percent)")).to_have_value("35")
    me.goto("/nowhere")
    me.result("There is no page at this address.", "alert")
    me.audit("error page")


def test_every_result_is_announced_and_pairing_by_address_needs_only_the_units(
    request: pytest.FixtureRequest,
) -> None:
    a, b = request.getfixturevalue("two_units")
    failures: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
            context.set_default_timeout(15_000)
            me = Owner(context.new_page(), a, failures)
            _log_in(me)
            _status_page(me)
            _pair_by_address(me, b)
            them = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
            them.set_default_timeout(15_000)
            _call(me, Owner(them.new_page(), b, failures))
            _settings(me)
            _unpair(me, b)
            _session_end(me, Owner(context.new_page(), a, failures))
        finally:
            browser.close()
    assert failures == []


@pytest.mark.parametrize(
    ("typed", "address"),
    [
        ("192.168.1.20", "192.168.1.20:8080"),
        ("http://porch.local/", "porch.local:8080"),
        ("HTTP://10.0.0.5:8081/pair", "10.0.0.5:8081"),
        (" [fd00::2] ", "[fd00::2]:8080"),
        ("[fd00::2]:9000", "[fd00::2]:9000"),
        ("$(reboot):80", "$(reboot):80"),  # left as typed, for the schema to refuse
    ],
)
def test_addresses_are_taken_as_people_type_them(typed: str, address: str) -> None:
    assert typed_address(typed) == address


def _title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    return found.group(1) if found else ""


def test_lockouts_say_what_is_locked_and_for_how_many_minutes(units: tuple[Unit, Unit]) -> None:
    a, b = units
    visitor = a.app.test_client()
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    visitor.post("/login/code", data={"csrf": csrf})
    wrong = f"{(int(a.code('owner')) + 1) % 10**6:06d}"
    pages = [
        visitor.post("/login", data={"csrf": csrf, "code": wrong}).get_data(as_text=True) for _ in range(5)
    ]
    assert _title(pages[0]).startswith("Error: That is not the code the unit is saying: 4 tries left.")
    locked = "Too many wrong codes: logging in to this unit is locked for 5 minutes. Try again after that."
    assert _title(pages[-1]).startswith(f"Error: {locked}")
    assert a.events.recent("pairing.locked")[-1].data["purpose"] == "owner"

    browser, headers = b.owner()  # A refuses this address its owner codes now: pair from B instead
    token = headers["X-CSRF-Token"]
    browser.post("/pair/request", data={"csrf": token, "address": f"http://{a.address}/"})
    wrong = f"{(int(a.code('pair')) + 1) % 10**6:06d}"
    said = [
        browser.post("/pair/code", data={"csrf": token, "code": wrong}).get_data(as_text=True)
        for _ in range(5)
    ]
    assert "That is not the code Asha is saying: 4 tries left." in _title(said[0])
    assert _title(said[-1]).startswith(
        "Error: Too many wrong codes: pairing with Asha is locked for 5 minutes. Try again after that."
    )


def test_status_details_are_words(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    a.events.publish("remote.emotion", "Bela: happiness", peer="Bela", emotion="happiness", confidence=0.9)
    a.events.publish("vision.emotion", "expression: sadness (80%)", emotion="sadness", confidence=0.8)
    browser, _ = a.owner()
    html = browser.get("/").get_data(as_text=True)
    assert "<li>Your expression: Sad.</li>" in html and "<li>Bela looks happy.</li>" in html
    assert not HEX_ID.search(html.replace(browser.get("/api/owner").get_json()["csrf"], ""))
    status = {
        "camera": "pattern",
        "vision": {
            "available": True,
            "detector": "yunet",
            "classifier": "cpu",
            "reasons": {"classifier": "no Edge TPU found", "detector": "configured"},
        },
        "call": "idle",
        "unit_id": "0" * 32,
    }
    assert unit_details(status) == [
        ("Camera", "A test picture (no camera is working)"),
        ("Expressions", "Recognised on the processor (no Edge TPU found)."),
        ("Faces found by", "yunet"),
    ]
    off = unit_details({"vision": {"available": False, "reason": "the model file is missing"}})
    assert off == [("Expressions", "Not recognised: the model file is missing.")]
    # The unit's status says whether it holds a working button: words, never "Button: True".
    assert unit_details({"button": True, "flag": False}) == [("Call button", "Working.")]
    assert unit_details({"button": False})[0][1].startswith("None working")
    # The relay's state as a nested mapping was left out of the page: now in words.
    assert unit_details({"relay": {"state": "off"}}) == [
        ("Calls outside the home", "No relay: calls stay in the home.")
    ]
    assert unit_details({"relay": {"state": "connecting", "online": []}})[0][1].startswith(
        "This unit is not connected"
    )


def test_a_login_about_to_end_is_said_on_every_page(tmp_path: Path) -> None:
    unit = make_unit(tmp_path, "Asha", session_hours=0.2)
    try:
        browser, _ = unit.owner()
        for path in ("/", "/pair", "/settings"):
            html = browser.get(path).get_data(as_text=True)
            assert "<strong>Your login ends in 12 minutes.</strong> Save your changes now" in html, path
    finally:
        unit.close()


def test_a_change_without_a_login_gets_the_login_page_on_every_blueprint(
    units: tuple[Unit, Unit],
) -> None:
    a, _ = units
    visitor = a.app.test_client()
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    for path in [r.rule for r in a.app.url_map.iter_rules() if "POST" in (r.methods or ())]:
        # Logging out needs no login: one that has already ended is logged out all the same.
        if path.startswith(("/api/", "/login", "/logout")) or "<" in path:
            continue
        page = visitor.post(path, data={"csrf": csrf})
        assert page.status_code == 401, path
        assert _title(page.get_data(as_text=True)).startswith("Error: Your login has ended"), path


def test_the_address_shown_is_one_of_this_machine() -> None:
    host, port = unit_address("0.0.0.0", 8080).rsplit(":", 1)
    assert port == "8080"
    with socket.socket() as s:
        s.bind((host, 0))  # only an address of this machine can be bound
    assert unit_address("127.0.0.1", 5000) == "127.0.0.1:5000"
