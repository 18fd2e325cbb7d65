"""Who may do what: owner presence, CSRF, signed unit-to-unit requests, validation, escaping."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from appliance import config, identity
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.pairing import service
from appliance.state import NAME_PATTERN, NAME_RULE, NOTHING_SHOWS, StateStore
from appliance.web import openapi
from appliance.web.api import create_app
from appliance.web.schemas import OwnerLogin, parse
from appliance.web.wording import time_left
from tests.hostile import request_from
from tests.pairing_units import Unit, make_unit

ROOT = Path(__file__).resolve().parents[1]
# 40 characters, the longest name allowed.
HOSTILE = "<script>x()</script>\"O'N$(rm -rf ~)&`ls`"


def test_unpaired_caller_gets_403_and_nothing_changes(units: tuple[Unit, Unit], tmp_path: Path) -> None:
    a, b = units
    stranger = Identity.load_or_create(tmp_path / "stranger.key")
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    signed = identity.sign_request(stranger, b.me.unit_id, "POST", service.UNPAIR_PATH, b"{}")
    status, headers, body = request_from(
        "127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", signed.headers
    )
    assert status == 403 and "not paired" in json.loads(body)["error"]
    assert [p.unit_id for p in b.store.peers()] == [a.me.unit_id]
    # A request B could not verify gets no signature: B signs nothing a stranger chose.
    assert identity.SIGNATURE not in headers


def test_replayed_request_is_refused(units: tuple[Unit, Unit]) -> None:
    a, b = units
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    signed = identity.sign_request(a.me, b.me.unit_id, "POST", service.UNPAIR_PATH, b"{}")
    headers = signed.headers
    status, answer_headers, answer = request_from(
        "127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", headers
    )
    assert status == 200 and b.store.peers() == []
    identity.verify_response(b.me.public_key, signed.exchange, status, answer_headers, answer)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    status, _, body = request_from("127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", headers)
    assert status == 403 and "replay" in json.loads(body)["error"]
    assert [p.unit_id for p in b.store.peers()] == [a.me.unit_id]


def test_forged_signature_is_refused(units: tuple[Unit, Unit], tmp_path: Path) -> None:
    a, b = units
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    forger = Identity.load_or_create(tmp_path / "forger.key")
    headers = identity.sign_request(forger, b.me.unit_id, "POST", service.UNPAIR_PATH, b"{}").headers
    headers[identity.UNIT] = a.me.unit_id
    status, _, body = request_from("127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", headers)
    assert status == 403 and "signature" in json.loads(body)["error"]
    assert len(b.store.peers()) == 1


def test_page_and_api_actions_need_the_owner_session(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    visitor = a.app.test_client()
    page = visitor.get("/settings")
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    refused = [
        visitor.post("/settings", data={"csrf": csrf, "volume": "5", "display_name": "Mallory"}),
        visitor.patch("/api/settings", json={"volume": 5}, headers={"X-CSRF-Token": csrf}),
        visitor.post("/pair/request", data={"csrf": csrf, "address": "127.0.0.1:1"}),
        visitor.post("/unpair", data={"csrf": csrf, "unit_id": "0" * 32}),
        visitor.get("/api/peers"),
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert "code the unit is saying" in refused[0].get_data(as_text=True)
    assert a.store.settings().volume == 80 and a.store.settings().display_name == "Asha"


def test_owner_changes_need_the_csrf_token(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    assert browser.patch("/api/settings", json={"volume": 5}).status_code == 403
    # Neither saved nor kept to save (only this browser's page of its last login is kept: -k new_login).
    assert browser.post("/settings", data={"volume": "5", "display_name": "X"}).status_code == 403
    assert (
        browser.patch("/api/settings", json={"volume": 5}, headers={"X-CSRF-Token": "wrong"}).status_code
        == 403
    )
    assert a.store.settings().volume == 80
    r = browser.post(
        "/settings",
        data={
            "csrf": csrf["X-CSRF-Token"],
            "display_name": "Asha",
            "volume": "35",
            "announcements": "both",
            "verbosity": "short",
            "voice_language": "de",
        },
    )
    assert r.status_code == 302
    s = a.store.settings()
    assert (s.volume, s.announcements, s.voice_language, s.auto_answer, s.share_expressions) == (
        35,
        "both",
        "de",
        False,
        False,
    )
    assert "Settings saved." in browser.get("/settings").get_data(as_text=True)


def test_page_forms_with_bad_input_say_what_is_wrong(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    token = csrf["X-CSRF-Token"]
    cases = [
        ("/settings", {"csrf": token, "volume": "loud", "display_name": ""}, "volume"),
        ("/settings", {"csrf": token, "announcements": "shout"}, "announcements"),
        ("/pair/request", {"csrf": token, "address": "$(reboot):80"}, "address"),
        ("/pair/code", {"csrf": token, "code": "12"}, "code"),
        ("/unpair", {"csrf": token, "unit_id": "<b>"}, "not paired"),
        ("/call", {"csrf": token, "to": "Bela"}, "calling is not available"),
    ]
    for path, form, words in cases:
        page = browser.post(path, data=form, follow_redirects=True)
        assert page.status_code == 422, path  # the refusal in the HTTP status too, not only in words
        alert = re.search(r'role="alert"[^>]*>\s*<p id="result-text">(.*?)</p>', page.get_data(as_text=True))
        assert alert and words in alert.group(1).lower(), (path, page.get_data(as_text=True)[-800:])
    assert a.store.settings() == a.store.settings().model_validate({"display_name": "Asha"})


def test_sharing_can_be_paused_from_the_status_page(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    a.store.update_settings({"share_expressions": True})  # the owner said yes before (off by default)
    browser, csrf = a.owner()
    r = browser.post("/sharing", data={"csrf": csrf["X-CSRF-Token"], "share": "off"}, follow_redirects=True)
    assert "Your expressions are no longer shared." in r.get_data(as_text=True)
    assert a.store.settings().share_expressions is False
    assert a.events.recent("settings.changed")[-1].data["changed"] == ["share_expressions"]


def test_wrong_owner_code_is_refused(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    visitor = a.app.test_client()
    csrf = {"X-CSRF-Token": visitor.get("/api/owner").get_json()["csrf"]}
    visitor.post("/api/owner/code", headers=csrf)
    wrong = f"{(int(a.code('owner')) + 1) % 10**6:06d}"
    r = visitor.post("/api/owner/login", json={"code": wrong}, headers=csrf)
    assert r.status_code == 403 and "tries left" in r.get_json()["error"]
    assert visitor.get("/api/settings").status_code == 401


def test_bad_bodies_get_clear_4xx(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    cases = [
        (browser.patch("/api/settings", data="not json", headers=csrf), 400, "JSON object"),
        (browser.patch("/api/settings", json=[1, 2], headers=csrf), 400, "JSON object"),
        (browser.patch("/api/settings", json={"volume": 101}, headers=csrf), 422, "volume"),
        (browser.patch("/api/settings", json={"volume": "loud"}, headers=csrf), 422, "volume"),
        (browser.patch("/api/settings", json={"colour": "red"}, headers=csrf), 422, "colour"),
        (browser.patch("/api/settings", json={"display_name": "a\x07b"}, headers=csrf), 422, "display_name"),
        (browser.post("/api/pair", json={"address": "http://evil/"}, headers=csrf), 422, "address"),
        (browser.post("/api/pair", json={"address": "127.0.0.1:1"}, headers=csrf), 502, "cannot reach"),
        (browser.post("/api/pair/code", json={"code": "12345"}, headers=csrf), 422, "code"),
        (browser.post("/api/pair/code", json={"code": "123456"}, headers=csrf), 409, "choose a unit"),
        (browser.delete(f"/api/peers/{'0' * 32}", headers=csrf), 404, "not paired"),
        (
            browser.patch(
                "/api/settings", data=b"x" * 70_000, headers={**csrf, "Content-Type": "application/json"}
            ),
            413,
            "",
        ),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (response.get_json(), status)
        assert words in response.get_json()["error"]
    assert a.store.settings().volume == 80


def test_hostile_unit_name_is_shown_escaped(units: tuple[Unit, Unit]) -> None:
    a, b = units
    b.store.update_settings({"display_name": HOSTILE})
    browser, csrf = a.owner()
    browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    assert browser.post("/api/pair/code", json={"code": b.code("pair")}, headers=csrf).status_code == 200
    assert a.store.peers()[0].name == HOSTILE
    for path in ("/", "/pair"):
        html = browser.get(path).get_data(as_text=True)
        assert "&lt;script&gt;x()&lt;/script&gt;&#34;O&#39;N$(rm -rf ~)&amp;`ls`" in html
        assert "<script>" not in html


def test_no_shell_anywhere_in_the_appliance() -> None:
    # Names come from the other unit: nothing may pass them through a shell.
    shells = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput")
    offenders = [str(p) for p in (ROOT / "appliance").rglob("*.py") if shells.search(p.read_text())]
    assert offenders == []


def test_status_hides_recent_events_from_the_lan(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    a.events.publish("remote.emotion", "Bela looks sad", peer="Bela", emotion="sadness", confidence=0.9)
    lan = a.app.test_client().get("/api/status", environ_base={"REMOTE_ADDR": "192.0.2.9"}).get_json()
    assert lan["name"] == "Asha" and "events" not in lan
    browser, _ = a.owner()
    assert "events" in browser.get("/api/status", environ_base={"REMOTE_ADDR": "192.0.2.9"}).get_json()


def test_pages_send_security_headers_and_limit_sizes(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    r = a.app.test_client().get("/login")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert (r.headers["X-Frame-Options"], r.headers["X-Content-Type-Options"]) == ("DENY", "nosniff")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert a.app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


def test_openapi_describes_every_api_route(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    doc = a.app.test_client().get("/api/openapi.json").get_json()
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    mine = {op.path for op in openapi.OPERATIONS}
    served = {
        (m, re.sub(r"<(\w+)>", r"{\1}", r.rule))
        for r in a.app.url_map.iter_rules()
        if r.rule.startswith("/api/")
        for m in (r.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert {s for s in served if s[1] in mine} <= described
    assert served - described == set(), "an /api route is missing from openapi.OPERATIONS"


def test_json_bodies_are_strict_and_forms_still_take_their_strings(units: tuple[Unit, Unit]) -> None:
    """JSON has numbers and booleans: a string or a number for one is named (422), not guessed at
    ("yes" was True). A page's form sends only strings, which are converted as before."""
    a, _ = units
    browser, csrf = a.owner()
    for body in ({"volume": "50"}, {"volume": True}, {"auto_answer": "yes"}, {"share_expressions": 1}):
        r = browser.patch("/api/settings", json=body, headers=csrf)
        assert r.status_code == 422 and next(iter(body)) in r.get_json()["error"], (body, r.get_json())
    assert a.store.settings() == a.store.settings().model_validate({"display_name": "Asha"})
    start = {"unit_id": "0" * 32, "name": "Mallory", "port": "8080"}
    status, _, answer = request_from("127.0.0.1", a.address, "POST", service.START_PATH, start)
    assert status == 422 and "port" in json.loads(answer)["error"]
    form = {"csrf": csrf["X-CSRF-Token"], "display_name": "Asha", "volume": "50", "auto_answer": "on"}
    assert browser.post("/settings", data=form).status_code == 302
    assert (a.store.settings().volume, a.store.settings().auto_answer) == (50, True)
    r = browser.patch("/api/settings", json={"volume": 60, "auto_answer": False}, headers=csrf)
    assert r.status_code == 200 and (r.get_json()["volume"], r.get_json()["auto_answer"]) == (60, False)


def test_status_names_relay_accounts_only_to_the_owner_and_the_unit(units: tuple[Unit, Unit]) -> None:
    """Every unit's relay account has a random part so that only those given it can ask after it
    (README, "Guests in a browser"): the open status must not hand it, or the paired units', out."""
    a, _ = units
    relay = {
        "state": "connected",
        "jid": "asha-0a1b2c3d4e@relay.test",
        "online": ["bela-5f6e7d8c9b@relay.test"],
    }
    app = create_app(lambda: {"name": "Asha", "relay": relay}, a.parts)
    lan = app.test_client().get("/api/status", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert lan.get_json()["relay"] == {"state": "connected"}
    assert "asha-0a1b2c3d4e" not in lan.get_data(as_text=True) and "bela-" not in lan.get_data(as_text=True)
    here = app.test_client().get("/api/status", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert here.get_json()["relay"] == relay  # emocall selftest asks from the unit itself
    owner = app.test_client()
    csrf = owner.get("/api/owner").get_json()["csrf"]
    owner.post("/api/owner/code", headers={"X-CSRF-Token": csrf}, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    login = {"code": a.code("owner")}
    assert owner.post("/api/owner/login", json=login, headers={"X-CSRF-Token": csrf}).status_code == 200
    mine = owner.get("/api/status", environ_base={"REMOTE_ADDR": "192.0.2.9"}).get_json()
    assert mine["relay"] == relay


def test_a_path_cannot_forge_a_line_in_the_access_log(
    units: tuple[Unit, Unit], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = units
    forged = "/x%0A192.0.2.9%20POST%20/api/owner/login%20200%0D%1B[2J%C2%85"
    with caplog.at_level(logging.INFO, logger="appliance.web.access"):
        status, _, _ = request_from("127.0.0.1", a.address, "GET", forged)
    assert status == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.web.access"]
    assert lines == ["127.0.0.1 GET /x\\x0a192.0.2.9 POST /api/owner/login 200\\x0d\\x1b[2J\\xc2\\x85 404"]


def test_names_refuse_controls_line_breaks_and_invisible_format_characters() -> None:
    """Unicode's categories Cc, Zl, Zp and Cf are refused (a bidi override reorders what is shown, a
    line separator starts a new line in a log), but ZWNJ and ZWJ, which Hindi and Bengali need."""
    name = re.compile(NAME_PATTERN)
    refused = {"Cc", "Zl", "Zp", "Cf"}
    wrong = [
        f"U+{c:04X}"
        for c in range(sys.maxunicode + 1)
        if c < 0xD800 or c > 0xDFFF  # lone surrogates are not text
        if bool(name.fullmatch(chr(c)))
        == (unicodedata.category(chr(c)) in refused and c not in (0x200C, 0x200D))
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("display_name", "status"),
    [
        ("Be\u0085la", 422),
        ("Be\u2028la", 422),
        ("\u202ealeB", 422),
        ("Be\u200bla", 422),
        ("Be\u2066la", 422),
        ("\u0915\u094d\u200d\u0937\u092e\u093e", 200),  # क्‍षमा: a ZWJ keeps the half form
        ("\u09b0\u200c\u09cd\u09af\u09be\u09ac", 200),  # Bengali with a ZWNJ
        ("Zoë O'Neil", 200),
        ("\U0001f33b", 200),  # a sunflower: a symbol shows, though no letter (it was refused for a day)
        ("\u2605 \u260e", 200),
    ],
)
def test_the_settings_take_a_name_by_the_same_rule(
    units: tuple[Unit, Unit], display_name: str, status: int
) -> None:
    a, _ = units
    browser, csrf = a.owner()
    r = browser.patch("/api/settings", json={"display_name": display_name}, headers=csrf)
    assert r.status_code == status, r.get_json()
    assert a.store.settings().display_name == (display_name if status == 200 else "Asha")
    if status == 422:  # what the rule means, not its list of code points
        assert NAME_RULE in r.get_json()["error"] and "\\u" not in r.get_json()["error"]


@pytest.mark.parametrize("blank", ["\u200d", "\u200c \u200d", "\u3164", "\u2800", "\u0301"])
def test_a_name_of_nothing_that_shows_is_refused(units: tuple[Unit, Unit], blank: str) -> None:
    """A joiner, a Hangul filler, a braille blank or a lone combining mark passed the rule, and the
    unit's name was read and shown as nothing in every page title and sentence."""
    a, _ = units
    browser, csrf = a.owner()
    r = browser.patch("/api/settings", json={"display_name": blank}, headers=csrf)
    assert r.status_code == 422 and NOTHING_SHOWS in r.get_json()["error"]
    assert a.store.settings().display_name == "Asha"


def test_a_stored_name_an_older_release_allowed_costs_only_the_name(tmp_path: Path) -> None:
    """A release with a looser name rule stored a name with a bidi mark: the unit starts with its
    other settings as the owner left them, the name falling back to the configured one."""
    path = tmp_path / "state.db"
    store = StateStore(path, EventBus(), {"display_name": "Asha"})
    store.update_settings({"auto_answer": True, "volume": 30})
    store.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE settings SET value = ? WHERE key = 'display_name'", (json.dumps("\u200fBela"),))
    db.close()
    store = StateStore(path, EventBus(), {"display_name": "Asha"})
    try:
        settings = store.settings()
        assert (settings.display_name, settings.auto_answer, settings.volume) == ("Asha", True, 30)
    finally:
        store.close()


def test_a_configured_name_is_held_to_the_same_rule() -> None:
    with pytest.raises(config.ConfigError, match=r"unit\.name: a name cannot hold a control character"):
        config.load(None, {"unit": {"name": "Be\u2028la"}}, environ={})


def test_a_card_that_takes_no_more_writes_is_said_on_the_page_and_in_the_api(
    units: tuple[Unit, Unit],
) -> None:
    """A settings save on a full card answered a bare 500 ("Internal Server Error")."""
    a, _ = units
    browser, csrf = a.owner()
    a.store._db.execute("PRAGMA query_only = 1")  # every write refused, as on a card that is full
    r = browser.patch("/api/settings", json={"display_name": "Kitchen"}, headers=csrf)
    assert r.status_code == 503 and "cannot save changes now" in r.get_json()["error"], r.get_json()
    form = {"csrf": csrf["X-CSRF-Token"], "display_name": "Kitchen"}
    page = browser.post("/settings", data=form)
    assert page.status_code == 503 and "cannot save changes now" in page.get_data(as_text=True)


class _FailingReads:
    """A database connection on a card that stopped answering: every statement fails."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, *_: object) -> sqlite3.Cursor:
        raise sqlite3.DatabaseError("disk I/O error")

    def close(self) -> None:
        self.db.close()


def test_a_card_that_cannot_be_read_is_said_on_the_page_and_in_the_api(units: tuple[Unit, Unit]) -> None:
    """A read on a failing card (the login checked on every request, the paired units) answered a
    bare 500 on every page."""
    a, _ = units
    browser, _ = a.owner()
    a.store._db = _FailingReads(a.store._db)  # type: ignore[assignment]
    r = browser.get("/api/settings")
    assert r.status_code == 503, r.get_data(as_text=True)
    assert "cannot read its memory card now" in r.get_json()["error"]
    page = browser.get("/")
    assert page.status_code == 503 and "cannot read its memory card now" in page.get_data(as_text=True)


def test_the_sharing_question_answered_on_settings_stays_there_and_is_no_change_back(
    units: tuple[Unit, Unit],
) -> None:
    """The settings page asks whether to share; its answer landed on the status page, which said
    "Sharing your expressions again." (or "no longer shared") though nothing had been shared."""
    a, _ = units
    browser, csrf = a.owner()
    token = csrf["X-CSRF-Token"]
    page = browser.post(
        "/sharing", data={"csrf": token, "share": "on", "back": "settings"}, follow_redirects=True
    )
    text = page.get_data(as_text=True)
    assert "<h1>Settings</h1>" in text and "Your expressions will be shared in calls." in text
    page = browser.post("/sharing", data={"csrf": token, "share": "off"}, follow_redirects=True)
    assert "Your expressions are no longer shared." in page.get_data(as_text=True)  # now a change back


def test_a_code_asked_for_again_is_said_with_the_time_it_has_left(tmp_path: Path) -> None:
    """Asked again (not heard the first time), the live code is given again: the page said it
    worked for the whole two minutes while it had seconds left."""
    a = make_unit(tmp_path, "Asha", code_seconds=5)
    try:
        browser = a.app.test_client()
        token = browser.get("/api/owner").get_json()["csrf"]
        page = browser.post("/login/code", data={"csrf": token}, follow_redirects=True)
        assert "It works for 5 seconds." in page.get_data(as_text=True)
        time.sleep(2.2)
        page = browser.post("/login/code", data={"csrf": token}, follow_redirects=True)
        assert "It works for 3 seconds." in page.get_data(as_text=True)
    finally:
        a.close()
    # Never more than it has: 95 s left is not "2 minutes".
    assert (time_left(95), time_left(119.8), time_left(185), time_left(1)) == (
        "95 seconds",
        "2 minutes",
        "3 minutes",
        "1 second",
    )


def test_a_code_typed_with_hindi_bengali_or_full_width_digits_is_the_code(tmp_path: Path) -> None:
    """A Hindi or Bengali keyboard types its own digits: "४८२१९३" passed the form's pattern and then
    counted as a wrong code (five of them locked the login out), and as a wrong code at the other
    unit when pairing."""
    a, b = make_unit(tmp_path, "Asha"), make_unit(tmp_path, "Bela")
    try:
        visitor = a.app.test_client()
        token = visitor.get("/api/owner").get_json()["csrf"]
        visitor.post("/login/code", data={"csrf": token})
        devanagari = "".join(chr(0x966 + int(d)) for d in a.code("owner"))
        assert visitor.post("/login", data={"csrf": token, "code": devanagari}).status_code == 302
        assert visitor.get("/api/owner").get_json()["owner"] is True

        browser, headers = b.owner()
        browser.post("/pair/request", data={"csrf": headers["X-CSRF-Token"], "address": a.address})
        bengali = "".join(chr(0x9E6 + int(d)) for d in a.code("pair"))
        page = browser.post("/pair/code", data={"csrf": headers["X-CSRF-Token"], "code": bengali})
        assert page.status_code == 302, page.get_data(as_text=True)
        assert [p.name for p in b.store.peers()] == ["Asha"]
        assert (
            parse(OwnerLogin, {"code": " \uff14\uff18\uff12\uff11\uff19\uff13 "}).code == "482193"
        )  # full width
        assert parse(OwnerLogin, {"code": "٤٨٢١٩٣"}).code == "482193"  # Arabic-Indic
    finally:
        a.close()
        b.close()
