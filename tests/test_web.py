"""Who may do what: owner presence, CSRF, signed unit-to-unit requests, validation, escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

from appliance import identity
from appliance.identity import Identity
from appliance.pairing import service
from appliance.web import openapi
from tests.hostile import request_from
from tests.pairing_units import Unit

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
