"""The pages' markup as a screen reader meets it on load, without a browser: where the focus lands,
what describes a field, and that errors are sentences (the browser runs: tests/test_pages_a11y.py)."""

from __future__ import annotations

import concurrent.futures
import html
import re
import socket
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

from appliance.app import Appliance
from appliance.identity import Identity
from appliance.web.settings_pages import KEPT, PENDING
from tests.conftest import appliance_config
from tests.pairing_units import Unit, make_unit
from tests.test_hardening_button import Browser

HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _title(page: str) -> str:
    found = re.search(r"<title>(.*?)</title>", page, re.DOTALL)
    return html.unescape(found.group(1)) if found else ""


def _focus(page: str) -> str:
    """Where focus lands on load: the id of the one element with ``autofocus``."""
    found = re.findall(r'<(?:input|div)\b[^>]*\bid="([^"]+)"[^>]*\bautofocus\b', page)
    assert len(found) == 1, found
    return found[0]


def test_an_error_that_is_not_about_the_code_field_takes_the_focus(units: tuple[Unit, Unit]) -> None:
    """While a code is awaited the focus is in its field, described by the message; a refusal about
    something else (the button not pressed, a lockout) is on the message itself, or a screen reader
    would read the field alone and never the message (README, "The pages with a screen reader")."""
    a, b = units
    visitor = a.app.test_client()
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    asked = visitor.post("/login/code", data={"csrf": csrf}, follow_redirects=True).get_data(as_text=True)
    assert _focus(asked) == "code" and 'aria-describedby="result-text"' in asked
    early = visitor.post("/login/button", data={"csrf": csrf})
    assert early.status_code == 409 and _focus(early.get_data(as_text=True)) == "result"
    assert 'id="result" role="alert" aria-labelledby="result-text" tabindex="-1"' in early.get_data(
        as_text=True
    )
    wrong = f"{(int(a.code('owner')) + 1) % 10**6:06d}"
    pages = [
        visitor.post("/login", data={"csrf": csrf, "code": wrong}).get_data(as_text=True) for _ in range(5)
    ]
    assert _focus(pages[0]) == "code" and 'aria-describedby="code-error"' in pages[0]
    assert _title(pages[-1]).startswith("Error: Too many wrong codes") and _focus(pages[-1]) == "result"

    browser, headers = b.owner()
    token = headers["X-CSRF-Token"]
    browser.post("/pair/request", data={"csrf": token, "address": a.address})
    wrong = f"{(int(a.code('pair')) + 1) % 10**6:06d}"
    said = [
        browser.post("/pair/code", data={"csrf": token, "code": wrong}).get_data(as_text=True)
        for _ in range(5)
    ]
    assert _focus(said[0]) == "pair-code" and 'aria-invalid="true"' in said[0]
    assert _title(said[-1]).startswith("Error: Too many wrong codes") and _focus(said[-1]) == "result"


def test_a_page_older_than_the_login_is_said_plainly(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    visitor = a.app.test_client()
    visitor.get("/login")
    page = visitor.post("/login/code", data={"csrf": "from-an-old-page"})
    assert page.status_code == 403
    assert _title(page.get_data(as_text=True)).startswith(
        "Error: This page is out of date. Reload it and try again."
    )
    browser, _ = a.owner()
    for path in ("/pair/request", "/sharing"):  # the settings form is kept: the next test
        page = browser.post(path, data={"csrf": "from-an-old-page"})
        assert page.status_code == 403
        assert "This page is out of date. Reload it and try again." in _title(page.get_data(as_text=True))
    api = browser.patch("/api/settings", json={"volume": 5})  # the API names what is missing
    assert api.status_code == 403 and "CSRF token" in api.get_json()["error"]


def test_a_settings_form_from_before_a_new_login_is_kept_to_save(units: tuple[Unit, Unit]) -> None:
    """Another tab logs in anew (a new session, a new CSRF token): a settings form filled in a page
    opened before was refused as out of date, and what was typed in it was lost."""
    a, _ = units
    browser, headers = a.owner()
    old_page = {"csrf": headers["X-CSRF-Token"], "volume": "35", "display_name": "Kitchen"}
    fresh = browser.get("/api/owner").get_json()["csrf"]  # the other tab: a code, then the login
    assert browser.post("/api/owner/code", headers={"X-CSRF-Token": fresh}).status_code == 202
    login = browser.post("/api/owner/login", json={"code": a.code("owner")}, headers={"X-CSRF-Token": fresh})
    assert login.status_code == 200 and login.get_json()["csrf"] != old_page["csrf"]
    forged = {**old_page, "csrf": "a-token-this-browser-never-held"}  # a form from anywhere else
    assert browser.post("/settings", data=forged).status_code == 403
    page = browser.post("/settings", data={**old_page, "smuggled": "x" * 2000}, follow_redirects=True)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and str(escape(KEPT[True])) in text, text[-3000:]
    assert re.search(r'id="volume"[^>]*value="35"', text) and 'value="Kitchen"' in text
    assert a.store.settings().volume != 35  # shown again to save, not saved unasked
    with browser.session_transaction() as cookie:  # only the form's own fields ride in the cookie
        assert "smuggled" not in cookie[PENDING] and cookie[PENDING]["volume"] == "35"


def test_calling_a_unit_unpaired_meanwhile_is_said_without_its_id(tmp_path: Path) -> None:
    """The status page, loaded before the other unit unpaired this one, still offers to call it: its
    form sends the unit's id, which the call engine's refusal used to repeat."""
    unit = Appliance(appliance_config(tmp_path / "asha", "Asha", button={"enabled": False})).start()
    try:
        browser = Browser(unit.web.port)  # type: ignore[union-attr]
        browser.ask_for_code()
        status, answer = browser.send("POST", "/api/owner/login", {"code": _said_code(unit)})
        assert status == 200, answer
        status, page = browser.form("/call", {"to": "0123456789abcdef" * 2})
        assert status == 422
        assert _title(page).startswith(
            "Error: That unit is no longer paired with this one. \N{EN DASH} Status"
        )
        assert not HEX_ID.search(page.replace(browser.csrf, ""))
    finally:
        unit.close()


def test_call_pressed_twice_says_the_call_not_an_error(tmp_path: Path) -> None:
    """The second post of a double press found the first's call going: "Error: Already calling
    with Bela; hang up first." was what the owner heard, while the call rang."""
    unit = Appliance(appliance_config(tmp_path / "asha", "Asha", button={"enabled": False})).start()
    mute = socket.create_server(("127.0.0.1", 0))  # takes the call's connection and never answers
    try:
        bela, cara = (Identity.load_or_create(tmp_path / f"{n}.key") for n in ("bela", "cara"))
        assert unit.store is not None
        for peer, name in ((bela, "Bela"), (cara, "Cara")):
            unit.store.add_peer(peer.unit_id, name, f"127.0.0.1:{mute.getsockname()[1]}", peer.public_key)
        browser = Browser(unit.web.port)  # type: ignore[union-attr]
        browser.ask_for_code()
        status, answer = browser.send("POST", "/api/owner/login", {"code": _said_code(unit)})
        assert status == 200, answer
        pages = [browser.form("/call", {"to": "Bela"}) for _ in range(2)]
        assert [status for status, _ in pages] == [200, 200], pages[1][1]
        assert [_title(page).split(" \N{EN DASH} ")[0] for _, page in pages] == [
            "Calling. Waiting for the other unit to answer."
        ] * 2
        status, page = browser.form("/call", {"to": "Cara"})  # another unit, in the call: refused
        assert status == 422 and _title(page).startswith("Error: Already calling with Bela")
    finally:
        mute.close()
        unit.close()


def test_two_units_of_the_same_name_are_numbered_on_the_pages(tmp_path: Path) -> None:
    """Two paired units named Mum: the pages number them as the unit says them ("Mum (2) is
    calling."), in the order they were paired; two buttons both called "Call Mum" left a screen
    reader's user to guess."""
    unit = Appliance(appliance_config(tmp_path / "asha", "Asha", button={"enabled": False})).start()
    try:
        assert unit.store is not None
        for i, name in enumerate(("Mum", "Bela", "mum")):
            peer = Identity.load_or_create(tmp_path / f"{i}.key")
            unit.store.add_peer(peer.unit_id, name, f"192.0.2.{i + 1}:8080", peer.public_key)
        second = peer.unit_id
        browser = Browser(unit.web.port)  # type: ignore[union-attr]
        browser.ask_for_code()
        status, answer = browser.send("POST", "/api/owner/login", {"code": _said_code(unit)})
        assert status == 200, answer
        page = browser.form("/")[1]
        assert re.findall(r'aria-label="(Call [^"]*)"', page) == ["Call Bela", "Call Mum (1)", "Call mum (2)"]
        page = browser.form("/pair")[1]
        assert re.findall(r'aria-label="(Unpair [^"]*)"', page) == [
            "Unpair Bela",
            "Unpair Mum (1)",
            "Unpair mum (2)",
        ]
        status, page = browser.form("/unpair", {"unit_id": second})
        assert status == 200 and "Are you sure? mum (2) and this unit" in html.unescape(page)
        status, page = browser.form("/call", {"to": "MUM"})  # as `emocall call MUM` asks
        assert status == 422
        assert html.unescape(_title(page)).startswith(
            "Error: 2 paired units are named MUM: call Mum (1) or mum (2)."
        )
        status, page = browser.form("/call", {"to": "MUM (2)"})  # the name as the owner hears it
        assert status == 200, _title(page)
        calling = [e.data for e in unit.events.recent("call.state") if e.data.get("state") == "calling"]
        assert [(c["unit_id"], c["peer"]) for c in calling] == [(second, "mum (2)")], calling
    finally:
        unit.close()


def _said_code(unit: Appliance) -> str:
    return str(next(e.data["code"] for e in reversed(unit.events.recent("pairing.code"))))


class Languages(HTMLParser):
    """Each text of a page with the language a screen reader reads it in (the ``lang`` of the nearest
    element that has one), and the tag it is in."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.open: list[tuple[str, str]] = [("", "")]  # only what the page itself declares
        self.texts: list[tuple[str, str, str]] = []  # text, language, tag
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("input", "br", "meta", "link"):  # they hold no text and have no end tag
            self.open.append((tag, dict(attrs).get("lang") or self.open[-1][1]))

    def handle_endtag(self, tag: str) -> None:
        while len(self.open) > 1 and self.open.pop()[0] != tag:
            continue  # an element left open (a <p> or <li> the end of its parent closes)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append((data.strip(), self.open[-1][1], self.open[-1][0]))


def test_hindi_and_bengali_are_marked_as_such_for_a_screen_reader(tmp_path: Path) -> None:
    """The pages are in English; a screen reader read "हिन्दी" and a name in Bengali letters with
    its English voice (spelt out, or not at all). They are marked with their language."""
    unit = make_unit(tmp_path, "Asha")
    kitchen = "\u09b0\u09be\u09a8\u09cd\u09a8\u09be\u0998\u09b0"  # রান্নাঘর, "kitchen"
    other = Identity.load_or_create(tmp_path / "other.key")
    unit.store.add_peer(other.unit_id, kitchen, "127.0.0.1:9", other.public_key)
    try:
        browser, headers = unit.owner()
        settings = Languages(browser.get("/settings").get_data(as_text=True)).texts
        assert ("हिन्दी (Hindi)", "hi", "option") in settings
        assert ("বাংলা (Bengali)", "bn", "option") in settings
        assert ("English", "en", "option") in settings
        for page in ("/", "/pair"):
            texts = Languages(browser.get(page).get_data(as_text=True)).texts
            assert (kitchen, "bn", "bdi") in texts, texts
            assert ("Asha", "en", "strong") in texts  # a Latin name is the page's English
        # A sentence naming it, such as the result of unpairing it (not reachable at that address).
        form = {"csrf": headers["X-CSRF-Token"], "unit_id": other.unit_id, "confirm": "yes"}
        result = browser.post("/unpair", data=form)
        texts = Languages(browser.get(result.headers["Location"]).get_data(as_text=True)).texts
        assert ("Unpaired here.", "en", "p") in texts and (kitchen, "bn", "bdi") in texts, texts
    finally:
        unit.close()


def test_each_run_of_words_is_marked_with_its_own_script() -> None:
    from markupsafe import Markup

    from appliance.web.settings_pages import in_its_language

    assert in_its_language("आशा প্রিয়া।") == '<bdi lang="hi">आशा</bdi> <bdi lang="bn">প্রিয়া</bdi>।'
    assert in_its_language("। রান্না") == '। <bdi lang="bn">রান্না</bdi>'  # a full stop starts no word
    # Any script but Latin, each in its language: Telugu, Arabic letters (their comma is no word).
    assert in_its_language("Paired with రాము and روبینہ، here.") == (
        'Paired with <bdi lang="te">రాము</bdi> and <bdi lang="ur">روبینہ</bdi>، here.'
    )
    assert (
        in_its_language("Олександр Γιώργος") == '<bdi lang="ru">Олександр</bdi> <bdi lang="el">Γιώργος</bdi>'
    )
    # Two names in one right-to-left script, apart only by its comma, stay one run in their order;
    # an accent typed apart from its letter stays in the word.
    assert in_its_language("أحمد، علي.") == '<bdi lang="ur">أحمد، علي</bdi>.'
    assert in_its_language("Calling שרה כהן.") == 'Calling <bdi lang="he">שרה כהן</bdi>.'  # Hebrew's too
    assert in_its_language("Андреи\u0306!") == '<bdi lang="ru">Андреи\u0306</bdi>!'  # й as и + breve
    # Markup is text here: its tags are escaped, never marked inside (an attribute would break).
    tag = in_its_language(Markup('<a title="আশা">'))
    assert tag == '&lt;a title=&#34;<bdi lang="bn">আশা</bdi>&#34;&gt;'


def test_a_login_form_posted_twice_logs_in_once(units: tuple[Unit, Unit]) -> None:
    """A double click on "Log in" (or on "I pressed the button") sends the form twice with the
    cookie from before: the second post gets the session the first opened, not "the code has
    expired" (the code or the press is spent), and no second session is opened."""
    a, _ = units
    for proof in ("code", "button"):
        # As the unit's button sets it (appliance/controls/button.py); the code's browser waits not.
        a.parts.presence.has_button = proof == "button"
        visitor = a.app.test_client()
        csrf = visitor.get("/api/owner").get_json()["csrf"]
        visitor.post("/login/code", data={"csrf": csrf})
        path, form = ("/login", {"csrf": csrf, "code": a.code("owner")})
        if proof == "button":
            assert a.parts.presence.press()
            path, form = "/login/button", {"csrf": csrf}
        before = visitor.get_cookie("emocall_session")
        assert before is not None
        first = visitor.post(path, data=form)
        assert first.status_code == 302 and first.location.endswith("/"), proof
        opened = visitor.get_cookie("emocall_session")
        visitor.set_cookie("emocall_session", before.value)  # the second click's cookie
        second = visitor.post(path, data=form)
        assert second.status_code == 302 and second.location.endswith("/"), proof
        assert opened is not None and visitor.get_cookie("emocall_session").value == opened.value
        page = visitor.get("/", follow_redirects=True).get_data(as_text=True)
        assert _title(page).startswith("Welcome. You can now change this unit"), proof

        elsewhere = a.app.test_client()  # a copy of the cookie from before, on another machine
        elsewhere.set_cookie("emocall_session", before.value)
        taken = elsewhere.post(path, data=form, environ_base={"REMOTE_ADDR": "192.0.2.66"})
        assert taken.status_code in (409, 422), proof
        assert elsewhere.get("/api/owner").get_json()["owner"] is False, proof

        visitor.post("/logout", data={"csrf": visitor.get("/api/owner").get_json()["csrf"]})
        visitor.set_cookie("emocall_session", before.value)  # the same form, resent after the logout
        again = visitor.post(path, data=form)
        assert again.status_code in (409, 422), proof  # the code expired, the button not pressed
        assert _title(again.get_data(as_text=True)).startswith("Error: "), proof
        assert visitor.get("/api/owner").get_json()["owner"] is False


def test_a_login_does_not_depend_on_the_units_clock(
    units: tuple[Unit, Unit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi starts with the time it saved, hours or days behind, until network time sets it. The
    login cookie's Expires came from that clock (in a browser's past: dropped as it was set, so
    no login was possible on the setup hotspot), and a signature from before the clock was set
    back read as not yet made (logged out, the CSRF token gone)."""
    a, _ = units
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 2 * 86400)  # the unit two days behind
    browser, _ = a.owner()
    cookie = browser.get_cookie("emocall_session")
    assert cookie is not None and cookie.expires is None  # nothing timed by the unit's clock
    monkeypatch.setattr(time, "time", lambda: real() - 2 * 86400 - 60)  # set back a minute
    assert browser.get("/api/owner").get_json()["owner"] is True


def test_a_double_click_sent_before_the_first_answer_logs_in_once(
    units: tuple[Unit, Unit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a session writes to the card (tens of milliseconds or more on an SD card): the second
    post of a double click, sent meanwhile, found the code spent and said so."""
    a, _ = units
    visitor = a.app.test_client()
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    visitor.post("/login/code", data={"csrf": csrf})
    form = {"csrf": csrf, "code": a.code("owner")}
    before = visitor.get_cookie("emocall_session")
    assert before is not None
    opening = a.store.open_session

    def slow_card(hours: float) -> str:
        time.sleep(0.5)
        return opening(hours)

    monkeypatch.setattr(a.store, "open_session", slow_card)
    clicks = [a.app.test_client() for _ in range(2)]
    for click in clicks:
        click.set_cookie("emocall_session", before.value)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(clicks[0].post, "/login", data=form)
        time.sleep(0.15)
        second = pool.submit(clicks[1].post, "/login", data=form)
        answers = [first.result(10), second.result(10)]
    assert [r.status_code for r in answers] == [302, 302]
    assert clicks[1].get("/api/owner").get_json()["owner"] is True
