"""Security review L4 and M2 (issue 16): what another unit says about itself is checked."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import identity
from appliance.identity import Identity
from appliance.pairing.discovery import Discovery, DiscoveryError
from appliance.state import StateStore
from tests.hostile import Answer, hostile_server
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
    assert r.status_code == 502, r.get_json()
    assert "is not an address like" in r.get_json()["error"]
