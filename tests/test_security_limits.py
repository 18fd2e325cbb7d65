"""Security review M4 and L6 (issue 16) and the rate limits of issue 15: one address that guesses
or asks for codes too often is refused (429, Retry-After) without locking out anyone else."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from spake2.ed25519_basic import decodepoint  # type: ignore[import-untyped]

from appliance.events import EventBus
from appliance.identity import Identity
from appliance.pairing import service
from appliance.pairing.codes import CodeError, CodeGuard, CodeLocked
from appliance.pairing.handshake import Initiator
from appliance.pairing.service import b64, unb64
from tests.hostile import request_from
from tests.pairing_units import Unit, make_unit

MALLORY = "127.0.0.2"  # another machine on the LAN, as far as the units can tell


class Guesser:
    """A hostile unit that asks B to pair and then guesses codes, with real SPAKE2 messages."""

    def __init__(self, tmp: Path, b: Unit, source: str = MALLORY) -> None:
        self.me = Identity.load_or_create(tmp / f"mallory-{source}.key")
        self.b, self.source = b, source
        self.details = {
            "unit_id": self.me.unit_id,
            "name": "Mallory",
            "port": 9,
            "public_key": b64(self.me.public_key),
        }
        self.session, self.spake = "", b""

    def start(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        body = {k: self.details[k] for k in ("unit_id", "name", "port")}
        status, headers, answer = request_from(self.source, self.b.address, "POST", service.START_PATH, body)
        data = json.loads(answer)
        if status == 200:
            self.session, self.spake = data["session"], unb64(data["spake"], "spake")
        return status, headers, data

    def guess(self, code: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        initiator = Initiator(code, self.me.unit_id, self.b.me.unit_id)
        proof = initiator.prove(self.spake, self.details)
        body = {
            "session": self.session,
            "spake": b64(initiator.message),
            "details": self.details,
            "proof": proof,
        }
        status, headers, answer = request_from(self.source, self.b.address, "POST", service.FINISH_PATH, body)
        data = json.loads(answer)
        if "spake" in data:
            self.spake = unb64(data["spake"], "spake")
        return status, headers, data


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_m4_a_guessing_address_is_locked_out_and_the_right_unit_still_pairs(
    units: tuple[Unit, Unit], tmp_path: Path
) -> None:
    a, b = units
    browser, csrf = a.owner()
    assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
    code = b.code("pair")
    said = len(b.events.recent("pairing.code"))
    mallory = Guesser(tmp_path, b)
    # A second request does not replace the pairing in progress, nor make the unit say a new code.
    assert mallory.start()[0] == 200
    assert b.code("pair") == code and len(b.events.recent("pairing.code")) == said
    answers = [mallory.guess(_wrong(code)) for _ in range(30)]
    assert [s for s, _, _ in answers] == [403] * 4 + [429] * 26
    assert all(int(h["Retry-After"]) > 0 for _, h, _ in answers[4:])
    assert all(d["seconds"] > 0 for _, _, d in answers[4:])
    locked = b.events.recent("pairing.locked")
    assert len(locked) == 1 and locked[0].data["scope"] == "source", "said once, when the lock started"
    # Mallory cannot even ask for a code while locked; A, from its own address, pairs at once.
    assert mallory.start()[0] == 429
    r = browser.post("/api/pair/code", json={"code": code}, headers=csrf)
    assert r.status_code == 200, r.get_json()
    assert [p.name for p in b.store.peers()] == ["Asha"]


def test_issue15_thirty_wrong_codes_from_one_address_then_the_right_one_after_the_lock(
    tmp_path: Path,
) -> None:
    a, b = make_unit(tmp_path, "Asha"), make_unit(tmp_path, "Bela", lock_seconds=6)
    try:
        browser, csrf = a.owner()
        assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
        code = b.code("pair")
        answers = [
            browser.post("/api/pair/code", json={"code": _wrong(code)}, headers=csrf) for _ in range(30)
        ]
        assert [r.status_code for r in answers] == [403] * 4 + [429] * 26
        retry = int(answers[-1].headers["Retry-After"])
        assert 0 < retry <= 6
        time.sleep(retry + 0.5)
        # The lock is over: A asks again (the same code is still live) and the right code pairs.
        assert browser.post("/api/pair", json={"address": b.address}, headers=csrf).status_code == 202
        assert b.code("pair") == code
        r = browser.post("/api/pair/code", json={"code": code}, headers=csrf)
        assert r.status_code == 200, r.get_json()
        assert b.store.peer_key(a.me.unit_id) == a.me.public_key
    finally:
        a.close()
        b.close()


def _owner_client(unit: Unit, source: str) -> tuple[str, dict[str, str]]:
    _, headers, body = request_from(source, unit.address, "GET", "/api/owner")
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    return cookie, {"Cookie": cookie, "X-CSRF-Token": json.loads(body)["csrf"]}


def test_m4_owner_code_guessing_from_one_address_does_not_lock_out_the_owner(
    units: tuple[Unit, Unit],
) -> None:
    a, _ = units
    _, headers = _owner_client(a, MALLORY)
    assert request_from(MALLORY, a.address, "POST", "/api/owner/code", {}, headers)[0] == 202
    statuses = [
        request_from(
            MALLORY, a.address, "POST", "/api/owner/login", {"code": _wrong(a.code("owner"))}, headers
        )
        for _ in range(59)
    ]
    assert [s for s, _, _ in statuses] == [403] * 4 + [429] * 55
    assert int(statuses[-1][1]["Retry-After"]) > 0
    # The owner, at another address (the test client is 127.0.0.1), logs in with the code at once.
    browser, _ = a.owner()
    assert browser.get("/api/settings").status_code == 200


def test_issue15_code_requests_are_limited_per_address_and_said_once(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    _, headers = _owner_client(a, MALLORY)
    statuses = [request_from(MALLORY, a.address, "POST", "/api/owner/code", {}, headers) for _ in range(30)]
    assert [s for s, _, _ in statuses] == [202] * 5 + [429] * 25
    assert all(int(h["Retry-After"]) > 0 for _, h, _ in statuses[5:])
    # One code, said once (a request within 10 s of the last saying is not said again); one lock said.
    codes = [e for e in a.events.recent("pairing.code") if e.data["purpose"] == "owner"]
    assert len(codes) == 1
    assert len(a.events.recent("pairing.locked")) == 1
    # Another address still gets the code.
    _, others = _owner_client(a, "127.0.0.3")
    assert request_from("127.0.0.3", a.address, "POST", "/api/owner/code", {}, others)[0] == 202


def test_issue15_many_addresses_hit_the_overall_limit(tmp_path: Path) -> None:
    events = EventBus()
    guard = CodeGuard(events, "owner", max_wrong=5, lock_s=60)
    code = guard.issue("192.0.2.1")
    refused = 0
    for n in range(40):
        try:
            guard.check(_wrong(code), f"192.0.2.{n + 10}")
        except CodeLocked:
            refused += 1
        except CodeError:
            pass
    # 20 wrong codes from all addresses together lock everyone out and void the code.
    assert refused == 21
    assert [e.data["scope"] for e in events.recent("pairing.locked")] == ["all"]


def test_l6_parallel_guesses_are_compared_and_counted_one_at_a_time() -> None:
    guard = CodeGuard(EventBus(), "owner", max_wrong=5, lock_s=60)
    code = guard.issue("192.0.2.1")
    outcomes: list[str] = []
    go = threading.Barrier(40)

    def guess(n: int) -> None:
        go.wait()
        for _ in range(10):
            try:
                guard.check(code if n == 0 else _wrong(code), "192.0.2.9")
                outcomes.append("ok")
            except CodeLocked:
                outcomes.append("locked")
            except CodeError as e:
                outcomes.append("wrong" if "wrong" in str(e) else "expired")

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 400
    assert outcomes.count("ok") <= 1
    assert outcomes.count("wrong") <= 4


def test_deeply_nested_json_is_a_400(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    _, owner = _owner_client(a, "127.0.0.1")
    for path in (service.START_PATH, service.FINISH_PATH, "/api/owner/login"):
        status, _, body = request_from("127.0.0.1", a.address, "POST", path, b"[" * 60000, owner)
        assert status == 400, (path, body[:200])
        assert "JSON object" in json.loads(body)["error"]


def test_requests_and_wrong_codes_spread_over_days_never_lock_anyone_out() -> None:
    """The limits count events within their window only: an owner who logs in once an hour, or
    mistypes once a day, is never refused."""
    now = [1000.0]
    guard = CodeGuard(EventBus(), "owner", max_wrong=5, lock_s=300, max_requests=5, clock=lambda: now[0])
    tries_left = []
    for _ in range(12):
        code = guard.issue("192.0.2.1")  # raises CodeLocked if the old requests still counted
        with pytest.raises(CodeError) as wrong:
            guard.check(_wrong(code), "192.0.2.1")
        tries_left.append(str(wrong.value))
        now[0] += 3600
    assert tries_left == ["wrong code: 4 tries left"] * 12


def test_a_pairing_message_off_the_curve_is_a_wrong_code_not_a_crash(
    units: tuple[Unit, Unit], tmp_path: Path
) -> None:
    _, b = units
    mallory = Guesser(tmp_path, b)
    assert mallory.start()[0] == 200
    off_curve = next(p for p in (bytes([n]) * 32 for n in range(256)) if not _on_curve(p))
    body = {
        "session": mallory.session,
        "spake": b64(b"A" + off_curve),
        "details": mallory.details,
        "proof": "0" * 64,
    }
    status, _, answer = request_from(MALLORY, b.address, "POST", service.FINISH_PATH, body)
    assert status == 403, answer[:200]
    assert json.loads(answer)["error"] == "wrong code: 4 tries left"


def _on_curve(point: bytes) -> bool:
    try:
        decodepoint(point)
    except Exception:  # spake2 raises NotOnCurve or ValueError: either way, not a point
        return False
    return True
