"""Pairing two units over real HTTP: codes, SPAKE2, pinning, wrong codes and lockout, unpairing."""

from __future__ import annotations

import pytest

from appliance.events import EventBus
from appliance.pairing.codes import CodeError, CodeExpired, CodeGuard, CodeLocked
from tests.pairing_units import Unit


def test_pair_then_unpair_both_sides(units: tuple[Unit, Unit]) -> None:
    a, b = units
    browser, csrf = a.owner()
    r = browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    assert (r.status_code, r.get_json()) == (202, {"waiting_for": "Bela"})
    code = b.code("pair")
    assert len(code) == 6 and code.isdigit()
    r = browser.post("/api/pair/code", json={"code": code}, headers=csrf)
    assert r.status_code == 200, r.get_json()
    assert a.store.peer_key(b.me.unit_id) == b.me.public_key
    assert b.store.peer_key(a.me.unit_id) == a.me.public_key
    assert b.store.peer(a.me.unit_id).address == f"127.0.0.1:{a.server.port}"  # type: ignore[union-attr]
    assert [e.data["peer"] for e in a.events.recent("pairing.done")] == ["Bela"]
    assert [e.data["peer"] for e in b.events.recent("pairing.done")] == ["Asha"]
    assert browser.get("/api/peers").get_json()[0]["name"] == "Bela"

    r = browser.delete(f"/api/peers/{b.me.unit_id}", headers=csrf)
    assert r.get_json() == {"unpaired": True, "told_other_unit": True}
    assert a.store.peers() == [] and b.store.peers() == []


def test_unpair_when_the_other_unit_is_off_removes_it_here(units: tuple[Unit, Unit]) -> None:
    a, b = units
    a.store.add_peer(b.me.unit_id, "Bela", b.address, b.me.public_key)
    b.server.close()
    browser, csrf = a.owner()
    r = browser.delete(f"/api/peers/{b.me.unit_id}", headers=csrf)
    assert r.get_json() == {"unpaired": True, "told_other_unit": False}
    assert a.store.peers() == []


def test_wrong_codes_lock_pairing_and_the_sixth_is_refused(units: tuple[Unit, Unit]) -> None:
    a, b = units
    browser, csrf = a.owner()
    assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
    right = b.code("pair")
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    answers = [browser.post("/api/pair/code", json={"code": wrong}, headers=csrf) for _ in range(5)]
    assert [r.status_code for r in answers] == [403, 403, 403, 403, 429]
    assert "4 tries left" in answers[0].get_json()["error"]
    locked = b.events.recent("pairing.locked")
    assert len(locked) == 1 and locked[0].data["seconds"] == 300
    assert "locked for 5 minutes" in locked[0].message
    # The sixth try, even with the right code, and any new request are refused while locked.
    sixth = browser.post("/api/pair/code", json={"code": right}, headers=csrf)
    assert sixth.status_code == 429 and "too many wrong codes" in sixth.get_json()["error"]
    again = browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    assert again.status_code == 429 and again.get_json()["seconds"] > 0
    assert a.store.peers() == [] and b.store.peers() == []


def test_a_wrong_code_can_be_corrected(units: tuple[Unit, Unit]) -> None:
    a, b = units
    browser, csrf = a.owner()
    browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    right = b.code("pair")
    assert (
        browser.post(
            "/api/pair/code", json={"code": "000000" if right != "000000" else "111111"}, headers=csrf
        ).status_code
        == 403
    )
    assert browser.post("/api/pair/code", json={"code": right}, headers=csrf).status_code == 200
    assert b.store.peer_key(a.me.unit_id) == a.me.public_key


def test_codes_expire_and_are_single_use() -> None:
    now = [0.0]
    guard = CodeGuard(EventBus(), "owner", ttl_s=120, clock=lambda: now[0])
    code = guard.issue("192.0.2.1")
    guard.check(code, "192.0.2.1")
    with pytest.raises(CodeExpired):
        guard.check(code, "192.0.2.1")
    code = guard.issue("192.0.2.1")
    now[0] = 121
    with pytest.raises(CodeExpired):
        guard.check(code, "192.0.2.1")


def test_owner_codes_lock_too() -> None:
    events = EventBus()
    guard = CodeGuard(events, "owner", max_wrong=2, lock_s=30)
    code = guard.issue("192.0.2.1")
    with pytest.raises(CodeError, match="1 try left"):
        guard.check("x", "192.0.2.1")
    with pytest.raises(CodeLocked):
        guard.check("y", "192.0.2.1")
    with pytest.raises(CodeLocked):
        guard.check(code, "192.0.2.1")
    assert events.recent("pairing.locked")[0].message == (
        "Too many wrong codes from one address. Settings locked for 30 seconds for that address."
    )
