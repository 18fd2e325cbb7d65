"""Pairing two units over real HTTP: codes, SPAKE2, pinning, wrong codes and lockout, unpairing."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from pathlib import Path

import pytest

from appliance.events import EventBus
from appliance.identity import Identity
from appliance.pairing.codes import CodeError, CodeExpired, CodeGuard, CodeLocked
from appliance.pairing.service import PairingError
from tests.pairing_units import Unit, make_unit


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


def test_a_second_unit_of_a_name_is_said_with_its_number_as_it_is_paired_and_unpaired(
    units: tuple[Unit, Unit], tmp_path: Path
) -> None:
    """Asha has a unit named bela already: the new Bela is "Bela (2)" from its first sentence
    ("Paired with Bela (2)."), as every later one says it, and so is its unpairing."""
    a, b = units
    first = Identity.load_or_create(tmp_path / "first-bela.key")
    a.store.add_peer(first.unit_id, "bela", "192.0.2.1:8080", first.public_key)
    browser, csrf = a.owner()
    assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
    assert browser.post("/api/pair/code", json={"code": b.code("pair")}, headers=csrf).status_code == 200
    assert [e.data["peer"] for e in a.events.recent("pairing.done")] == ["Bela (2)"]
    assert [e.data["peer"] for e in b.events.recent("pairing.done")] == ["Asha"]
    assert browser.delete(f"/api/peers/{b.me.unit_id}", headers=csrf).get_json()["unpaired"]
    assert [e.data["peer"] for e in a.events.recent("pairing.removed")] == ["Bela (2)"]


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


def test_a_pairing_request_ends_when_the_other_units_code_has(tmp_path: Path) -> None:
    """The code Bela said expired unused: the page kept saying "Type the code Bela is saying" (its
    field focused) for good. The request now ends with the code; the page asks for a new one."""
    a, b = make_unit(tmp_path, "Asha", code_seconds=1), make_unit(tmp_path, "Bela", code_seconds=1)
    try:
        browser, csrf = a.owner()
        assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
        assert "Type the code Bela is saying" in browser.get("/pair").get_data(as_text=True)
        time.sleep(1.2)
        assert "is saying" not in browser.get("/pair").get_data(as_text=True)
        r = browser.post("/api/pair/code", json={"code": b.code("pair")}, headers=csrf)
        assert r.status_code == 409 and "choose a unit" in r.get_json()["error"]
    finally:
        a.close()
        b.close()


def test_a_code_typed_after_it_expired_leaves_the_way_to_a_new_one(tmp_path: Path) -> None:
    """The request ended with the code, and with it the section that asked again: the page's only
    way to a new code ("Ask it for a code") had an empty address, to be typed or read out again."""
    a, b = make_unit(tmp_path, "Asha", code_seconds=1), make_unit(tmp_path, "Bela", code_seconds=1)
    try:
        browser, csrf = a.owner()
        token = csrf["X-CSRF-Token"]
        browser.post("/pair/request", data={"csrf": token, "address": b.address})
        time.sleep(1.2)
        late = browser.post("/pair/code", data={"csrf": token, "code": b.code("pair")})
        assert late.status_code == 422
        assert f'id="address" name="address" value="{b.address}"' in late.get_data(as_text=True)
    finally:
        a.close()
        b.close()


def test_a_form_posted_twice_says_what_the_first_post_did(units: tuple[Unit, Unit]) -> None:
    """A double click on Pair or on Unpair: the second post found nothing left to do and said so
    as an error ("Choose a unit to pair with first.", "not paired") over the first one's success."""
    a, b = units
    browser, csrf = a.owner()
    token = csrf["X-CSRF-Token"]
    browser.post("/api/pair", json={"address": b.address}, headers=csrf)
    code = b.code("pair")
    for _ in range(2):
        page = browser.post("/pair/code", data={"csrf": token, "code": code}, follow_redirects=True)
        assert page.status_code == 200 and "Paired with Bela." in page.get_data(as_text=True)
    unpair = {"csrf": token, "unit_id": b.me.unit_id, "confirm": "yes"}
    for _ in range(2):
        page = browser.post("/unpair", data=unpair, follow_redirects=True)
        assert page.status_code == 200 and "Unpaired Bela." in page.get_data(as_text=True)
    assert a.store.peers() == [] and b.store.peers() == []


def test_a_failed_attempt_leaves_a_newer_request_for_another_unit(tmp_path: Path) -> None:
    """The owner asks Cara for a code (a second tab) while the code typed for Bela is on its way;
    Bela's attempt then fails: Cara's request must stay (it was cleared whatever it held)."""
    a, b, c = (make_unit(tmp_path, n) for n in ("Asha", "Bela", "Cara"))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # Bela's address from now on: takes the connection, never answers
    try:
        browser, csrf = a.owner()
        browser.post("/api/pair", json={"address": b.address}, headers=csrf)
        a.parts.pairing._outgoing.address = f"127.0.0.1:{silent.getsockname()[1]}"  # type: ignore[union-attr]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            typed = pool.submit(a.parts.pairing.complete, b.code("pair"))
            time.sleep(0.5)
            assert browser.post("/api/pair", json={"address": c.address}, headers=csrf).status_code == 202
            with pytest.raises(PairingError):
                typed.result(15)
        assert a.parts.pairing.waiting_for() == "Cara"
    finally:
        silent.close()
        for unit in (a, b, c):
            unit.close()


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


def test_an_address_that_does_not_speak_http_is_no_unit_to_reach(units: tuple[Unit, Unit]) -> None:
    """Something else took the address (an SSH server, a printer): pairing there says the unit cannot
    be reached (502, not a bare 500), and unpairing a unit that was there removes it all the same."""
    a, b = units
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def answer() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    threading.Thread(target=answer, daemon=True).start()
    there = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        browser, csrf = a.owner()
        r = browser.post("/api/pair", json={"address": there}, headers=csrf)
        assert r.status_code == 502 and "cannot reach the unit" in r.get_json()["error"]
        a.store.add_peer(b.me.unit_id, "Bela", there, b.me.public_key)
        r = browser.delete(f"/api/peers/{b.me.unit_id}", headers=csrf)
        assert r.get_json() == {"unpaired": True, "told_other_unit": False}
        assert a.store.peers() == []
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        server.close()
