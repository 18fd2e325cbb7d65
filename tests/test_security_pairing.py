"""Security review L4 and M2 (issue 16): what another unit says about itself is checked."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import identity
from appliance.identity import Identity
from appliance.pairing import service
from appliance.pairing.discovery import Discovery, DiscoveryError
from appliance.state import StateStore
from tests.hostile import Answer, hostile_server, request_from
from tests.pairing_units import Unit, make_unit


def test_l4_a_hostile_name_from_the_asked_unit_is_refused(units: tuple[Unit, Unit], tmp_path: Path) -> None:
    a, _ = units
    liar = Identity.load_or_create(tmp_path / "liar.key")
    forged = "Bela\n2026-12-02 08:00:00 INFO appliance.app: owner logged in" + "x" * 5000
    answer = {
        "unit_id": liar.unit_id,
        "name": forged,
        "public_key": base64.b64encode(liar.public_key).decode(),
        "port": 8080,
        "session": "0" * 32,
        "spake": base64.b64encode(b"m" * 33).decode(),
    }
    browser, csrf = a.owner()
    with hostile_server(Answer(body=json.dumps(answer).encode())) as b:
        r = browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    assert r.status_code == 502 and "name" in r.get_json()["error"], r.get_json()
    assert a.parts.pairing.waiting_for() is None
    assert a.store.peers() == []
    # The same answer with a proper name is taken: only the name was wrong.
    with hostile_server(Answer(body=json.dumps({**answer, "name": "Bela"}).encode())) as b:
        r = browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    assert (r.status_code, r.get_json()) == (202, {"waiting_for": "Bela"})


def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_m2_an_mdns_announcement_alone_does_not_move_a_paired_unit(tmp_path: Path) -> None:
    """Real mDNS: a hostile announcement of B's (public) id is checked with a signed exchange and
    refused; B's own announcement of its new address is followed."""
    b = make_unit(tmp_path, "Bela")
    a_key = Identity.load_or_create(tmp_path / "Asha" / "identity.key")
    b.store.add_peer(a_key.unit_id, "Asha", "127.0.0.1:9", a_key.public_key)
    before = StateStore(tmp_path / "Asha" / "state.db")
    before.add_peer(b.me.unit_id, "Bela", "127.0.0.1:9", b.me.public_key)
    before.close()
    a = make_unit(tmp_path, "Asha", discovery=True)
    announcements: list[Discovery] = []
    try:
        with hostile_server() as mallory:
            port = int(mallory.address.rsplit(":", 1)[1])
            try:
                announcements.append(Discovery(b.me.unit_id, "Bela", "127.0.0.1").start(port))
            except DiscoveryError as e:
                pytest.fail(f"mDNS cannot run here: {e}")
            assert _until(lambda: bool(mallory.received), 20), "A never checked the announced address"
            hello = mallory.received[0]
            assert hello.path == "/api/peer/hello" and hello.headers[identity.RECIPIENT] == b.me.unit_id
            time.sleep(0.5)
        assert a.store.peer(b.me.unit_id).address == "127.0.0.1:9"  # type: ignore[union-attr]
        announcements.pop().close()
        # B really moved (to where its server is): it proves it there, and A follows.
        announcements.append(Discovery(b.me.unit_id, "Bela", "127.0.0.1").start(b.server.port))
        assert _until(lambda: a.store.peer(b.me.unit_id).address == b.address, 20)  # type: ignore[union-attr]
    finally:
        for d in announcements:
            d.close()
        a.close()
        b.close()


def test_a_call_that_cannot_reach_a_moved_unit_has_its_announcement_checked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """B moved, and A's one check of B's announcement failed (here: B did not know A yet; at home a
    Wi-Fi blip): A kept the old address, and nothing asked again while the announcement stayed the
    same, so every call from A failed. A call that cannot reach B has the announcement checked again,
    also within the 30 s in which a claimed address is otherwise checked once."""
    b = make_unit(tmp_path, "Bela")
    a_key = Identity.load_or_create(tmp_path / "Asha" / "identity.key")
    before = StateStore(tmp_path / "Asha" / "state.db")
    before.add_peer(b.me.unit_id, "Bela", "127.0.0.1:9", b.me.public_key)
    before.close()
    a = make_unit(tmp_path, "Asha", discovery=True)
    announced = None
    try:
        with caplog.at_level(logging.WARNING, logger="appliance.pairing.service"):
            try:
                announced = Discovery(b.me.unit_id, "Bela", "127.0.0.1").start(b.server.port)
            except DiscoveryError as e:
                pytest.fail(f"mDNS cannot run here: {e}")
            assert _until(lambda: "could not prove it is there" in caplog.text, 20)
        b.store.add_peer(a_key.unit_id, "Asha", "127.0.0.1:9", a_key.public_key)
        time.sleep(1)  # the announcement, unchanged, moves nothing by itself
        assert a.store.peer(b.me.unit_id).address == "127.0.0.1:9"  # type: ignore[union-attr]
        a.events.publish(
            "call.state", "the call to Bela failed", state="failed", cause="unreachable", unit_id=b.me.unit_id
        )
        assert _until(lambda: a.store.peer(b.me.unit_id).address == b.address, 20)  # type: ignore[union-attr]
    finally:
        if announced is not None:
            announced.close()
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b"<html>router login</html>"), (200, b"[1, 2]"), (401, b'{"error": "log in"}'), (404, b"{}")],
)
def test_something_not_a_unit_at_the_address_is_a_bad_gateway(
    units: tuple[Unit, Unit], status: int, body: bytes
) -> None:
    """Whatever a router or another server answers, the owner hears that no unit is there: never a
    200 with an error, nor its 401, which here would mean "log in first"."""
    a, _ = units
    browser, csrf = a.owner()
    with hostile_server(Answer(status=status, body=body)) as other:
        r = browser.post("/api/pair", json={"address": other.address}, headers=csrf)
    assert r.status_code == 502, r.get_json()
    assert other.address in r.get_json()["error"]
    assert browser.get("/api/owner").get_json()["owner"] is True


def test_an_address_that_is_not_ipv6_in_brackets_is_refused_plainly(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    r = browser.post("/api/pair", json={"address": "[1:2]:80"}, headers=csrf)
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["error"] == "address: not an address a unit can be reached at"


def _title(page: str) -> str:
    found = re.search(r"<title>(.*?)</title>", page, re.DOTALL)
    return html.unescape(found.group(1)) if found else ""


@pytest.mark.parametrize("seconds", [b"1" + b"0" * 400, b"1e400", b"-7", b"0", b"3601", b"true", b'"300"'])
def test_a_lockout_longer_than_a_unit_gives_is_not_believed(units: tuple[Unit, Unit], seconds: bytes) -> None:
    """Something at the typed address answers 429 with any "seconds": the page once failed (500) on
    a 401-digit number, and the API passed it on as Retry-After."""
    a, _ = units
    browser, csrf = a.owner()
    body = b'{"error": "too many code requests: try again later", "seconds": %s}' % seconds
    with hostile_server(Answer(status=429, body=body)) as other:
        page = browser.post("/pair/request", data={"csrf": csrf["X-CSRF-Token"], "address": other.address})
        api = browser.post("/api/pair", json={"address": other.address}, headers=csrf)
    assert page.status_code == 422
    assert _title(page.get_data(as_text=True)).startswith(
        f"Error: Something answered at {other.address}, but it is not an emocall unit."
    )
    assert api.status_code == 502 and "Retry-After" not in api.headers
    assert set(api.get_json()) == {"error"}


def test_another_unit_s_refusal_is_said_in_this_unit_s_words(units: tuple[Unit, Unit]) -> None:
    """What answers at a typed address may write anything in its refusal (up to 256 KiB, lines
    included): only how long it is locked goes on, and in this unit's own sentence."""
    a, _ = units
    browser, csrf = a.owner()
    said = "x" * 200_000 + "\n2026-12-02 08:00:00 INFO appliance.web: owner logged in"
    body = json.dumps({"error": f"too many code requests: {said}", "seconds": 300}).encode()
    with hostile_server(Answer(status=429, body=body)) as other:
        api = browser.post("/api/pair", json={"address": other.address}, headers=csrf)
        page = browser.post("/pair/request", data={"csrf": csrf["X-CSRF-Token"], "address": other.address})
    assert (api.status_code, api.headers["Retry-After"]) == (429, "300")
    assert api.get_json() == {
        "error": f"too many code requests: the unit at {other.address} refuses pairing for 300 seconds",
        "seconds": 300,
    }
    assert _title(page.get_data(as_text=True)).startswith(
        "Error: Too many code requests: pairing with the other unit is locked for 5 minutes."
    )
    assert "owner logged in" not in page.get_data(as_text=True)
    with hostile_server(Answer(status=409, body=json.dumps({"error": said}).encode())) as other:
        api = browser.post("/api/pair", json={"address": other.address}, headers=csrf)
    assert api.get_json() == {"error": f"the unit at {other.address} refused to pair (HTTP 409)"}


@pytest.mark.parametrize("name", ["Be\u0085la", "Be\u2028la", "Be\u2029la", "\u202ealeB", "Be\u200bla"])
def test_a_name_with_a_line_break_or_an_invisible_character_is_refused_from_either_side(
    units: tuple[Unit, Unit], tmp_path: Path, name: str
) -> None:
    a, b = units
    liar = Identity.load_or_create(tmp_path / "liar.key")
    asked = {"unit_id": liar.unit_id, "name": name, "port": 8080}
    status, _, body = request_from("127.0.0.1", b.address, "POST", service.START_PATH, asked)
    assert status == 422 and "name" in json.loads(body)["error"]
    assert b.events.recent("pairing.code") == []  # nothing was shown or said
    answer = {
        **asked,
        "public_key": base64.b64encode(liar.public_key).decode(),
        "session": "0" * 32,
        "spake": base64.b64encode(b"m" * 33).decode(),
    }
    browser, csrf = a.owner()
    with hostile_server(Answer(body=json.dumps(answer).encode())) as other:
        r = browser.post("/api/pair", json={"address": other.address}, headers=csrf)
    assert r.status_code == 502 and "name" in r.get_json()["error"]
    assert a.parts.pairing.waiting_for() is None


def test_a_flood_of_claims_for_one_unit_leaves_another_unit_s_move_followed(
    units: tuple[Unit, Unit], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A LAN host announces a paired unit's (public) id at 64 addresses: once those claims used up
    every unit's checks, and B's real move was not followed. Claims for many units are still
    bounded altogether."""
    a, b = units
    carol = Identity.load_or_create(tmp_path / "carol.key")
    a.store.add_peer(carol.unit_id, "Carol", "127.0.0.1:9", carol.public_key)
    a.store.add_peer(b.me.unit_id, "Bela", "127.0.0.1:9", b.me.public_key)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    with caplog.at_level(logging.WARNING, logger="appliance.pairing.service"):
        for port in range(20000, 20064):
            assert not a.parts.pairing.follow(carol.unit_id, f"127.0.0.1:{port}")
    assert len(_checks(caplog)) == service.MOVE_CLAIMS_PER_UNIT
    assert a.parts.pairing.follow(b.me.unit_id, b.address)
    assert a.store.peer(b.me.unit_id).address == b.address  # type: ignore[union-attr]

    caplog.clear()
    paired = [Identity.load_or_create(tmp_path / f"unit{n}.key") for n in range(20)]
    for unit in paired:
        a.store.add_peer(unit.unit_id, "Unit", "127.0.0.1:9", unit.public_key)
    with caplog.at_level(logging.WARNING, logger="appliance.pairing.service"):
        for port in range(20000, 20010):
            for unit in paired:
                a.parts.pairing.follow(unit.unit_id, f"127.0.0.1:{port}")
    # The window's claims so far: Carol's and B's real one.
    assert len(_checks(caplog)) == service.MOVE_CLAIMS - service.MOVE_CLAIMS_PER_UNIT - 1


def _checks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "could not prove it is there" in r.getMessage()]
