"""Security review findings M1, L1, L2 and L5 (issue 16): each attack is run and must fail now."""

from __future__ import annotations

import json
import logging
import re
import time
import tracemalloc
from pathlib import Path

import pytest

from appliance import identity
from appliance.identity import Identity, RequestVerifier, TrustError
from appliance.pairing import service
from appliance.pairing.client import MAX_ANSWER, PeerClient, UnitRefused
from appliance.state import StateStore
from tests.hostile import Answer, hostile_server, request_from
from tests.pairing_units import Unit, make_unit


def test_m1_a_request_passed_on_by_a_paired_unit_is_refused(units: tuple[Unit, Unit]) -> None:
    """A unpairs C (hostile, paired with A); C replays A's signed unpair to B, which must keep A."""
    a, b = units
    a.store.add_peer(b.me.unit_id, "Bela", b.address, b.me.public_key)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    carol = Identity.load_or_create(a.store.path.parent / "carol.key")
    with hostile_server() as c:
        a.store.add_peer(carol.unit_id, "Carol", c.address, carol.public_key)
        a.parts.pairing.unpair(carol.unit_id)  # A's real unpair, sent to C
        sent = c.received[0]
    assert sent.path == service.UNPAIR_PATH
    status, headers, body = request_from("127.0.0.1", b.address, "POST", sent.path, sent.body, sent.headers)
    assert status == 403 and "signed for unit" in json.loads(body)["error"], body
    assert [p.unit_id for p in b.store.peers()] == [a.me.unit_id]
    assert identity.SIGNATURE not in headers
    # The recipient header is not what protects B: naming B in it breaks the signature instead.
    forwarded = {**sent.headers, identity.RECIPIENT: b.me.unit_id}
    status, _, body = request_from("127.0.0.1", b.address, "POST", sent.path, sent.body, forwarded)
    assert status == 403 and "signature" in json.loads(body)["error"]
    assert [p.unit_id for p in b.store.peers()] == [a.me.unit_id]


def test_l1_an_oversized_answer_is_not_read(tmp_path: Path) -> None:
    me = Identity.load_or_create(tmp_path / "me.key")
    with hostile_server(Answer(body=b'{"x": "', stream_mib=400)) as big:
        tracemalloc.start()
        try:
            with pytest.raises(UnitRefused, match="larger than any unit sends"):
                PeerClient(me).post(big.address, service.START_PATH, {})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # Before the fix the whole 400 MiB were read into memory; now one capped read (and the test's
    # own server thread) is all.
    assert peak < 8 * MAX_ANSWER, f"reading the answer took {peak} bytes"
    assert big.sent_bytes[0] < 400 * 2**20


def test_l1_a_redirect_is_not_followed(tmp_path: Path) -> None:
    me = Identity.load_or_create(tmp_path / "me.key")
    with hostile_server() as elsewhere:
        moved = Answer(status=307, headers={"Location": f"http://{elsewhere.address}/steal"})
        with hostile_server(moved) as redirecting:
            with pytest.raises(UnitRefused, match="elsewhere") as refused:
                PeerClient(me).post(redirecting.address, service.START_PATH, {"a": 1})
            assert len(redirecting.received) == 1
        assert elsewhere.received == []
    assert refused.value.status == 502


def test_l2_unverified_requests_get_no_signature_and_signatures_cover_path_and_status(
    units: tuple[Unit, Unit],
) -> None:
    a, b = units
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    # Anyone sending a nonce header used to get a signed answer: now only verified requests do.
    status, headers, _ = request_from(
        "127.0.0.1", b.address, "POST", "/api/status", b"", {identity.NONCE: "0" * 32}
    )
    assert identity.SIGNATURE not in headers
    status, headers, _ = request_from(
        "127.0.0.1", b.address, "POST", service.START_PATH, b"{}", {identity.NONCE: "0" * 32}
    )
    assert status == 422 and identity.SIGNATURE not in headers
    # A real signed answer verifies for its own exchange and status only.
    signed = identity.sign_request(a.me, b.me.unit_id, "POST", service.UNPAIR_PATH, b"{}")
    status, headers, body = request_from(
        "127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", signed.headers
    )
    assert status == 200
    identity.verify_response(b.me.public_key, signed.exchange, 200, headers, body)
    with pytest.raises(TrustError):
        identity.verify_response(b.me.public_key, signed.exchange, 500, headers, body)
    elsewhere = identity.Exchange(
        a.me.unit_id, b.me.unit_id, "POST", "/api/call/signal", signed.exchange.nonce, signed.exchange.time
    )
    with pytest.raises(TrustError):
        identity.verify_response(b.me.public_key, elsewhere, 200, headers, body)


@pytest.mark.parametrize("status", [200, 409, 500, 503])
def test_l2_the_client_checks_the_signature_whatever_the_status(tmp_path: Path, status: int) -> None:
    me = Identity.load_or_create(tmp_path / "me.key")
    them = Identity.load_or_create(tmp_path / "them.key")
    lie = json.dumps({"kind": "answer", "sdp": "v=0", "error": "call 0900 now"}).encode()
    with hostile_server(Answer(status=status, body=lie)) as mitm, pytest.raises(UnitRefused) as refused:
        PeerClient(me).post(mitm.address, "/api/call/signal", {}, peer_key=them.public_key)
    assert "0900" not in str(refused.value) and "kind" not in refused.value.body


def test_l5_malformed_times_and_nonces_are_refused_before_any_work(tmp_path: Path) -> None:
    a, b = Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")
    verifier = RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id)
    good = identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers
    for name, value in [
        (identity.TIME, "nan"),
        (identity.TIME, "inf"),
        (identity.TIME, "1e12"),
        (identity.TIME, str(time.time())),
        (identity.NONCE, "n" * 8192),
        (identity.NONCE, "short"),
        (identity.UNIT, a.unit_id + "x"),
    ]:
        with pytest.raises(TrustError, match="not well-formed"):
            verifier.verify({**good, name: value}, "POST", "/x", b"")
    assert verifier.verify(good, "POST", "/x", b"").sender == a.unit_id


def test_l5_the_nonce_cache_is_bounded_and_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")
    c = Identity.load_or_create(tmp_path / "c.key")
    keys = {a.unit_id: a.public_key, c.unit_id: c.public_key}
    verifier = RequestVerifier(keys.get, b.unit_id, max_skew_s=60, max_nonces=50)
    for _ in range(50):
        verifier.verify(identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers, "POST", "/x", b"")
    with pytest.raises(TrustError, match="too many"):
        verifier.verify(identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers, "POST", "/x", b"")
    # One busy unit does not crowd out another.
    verifier.verify(identity.sign_request(c, b.unit_id, "POST", "/x", b"").headers, "POST", "/x", b"")
    # Two skew windows later the old nonces are gone and A is heard again.
    later = time.time() + 121
    monkeypatch.setattr(identity.time, "time", lambda: later)
    verifier.verify(identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers, "POST", "/x", b"")


def test_l5_a_request_is_not_taken_again_after_a_restart_with_the_clock_set_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi without network time starts again up to an hour behind (its clock saved hourly): the
    nonces lived in memory only, so a signed unpair or offer captured in that hour was taken again,
    once, while the clock passed its time."""
    a, b = Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")
    store = StateStore(tmp_path / "state.db")
    try:
        store.add_peer(a.unit_id, "Asha", "192.0.2.2:8080", a.public_key)
        signed = identity.sign_request(a, b.unit_id, "POST", "/api/peer/unpair", b"{}").headers
        verify = RequestVerifier(store.peer_key, b.unit_id, kept=store.first_nonce).verify
        assert verify(signed, "POST", "/api/peer/unpair", b"{}").sender == a.unit_id
        # A power cut: the process starts again, its clock 50 minutes behind, and runs until it
        # reads the request's time once more.
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3000)
        store.close()
        store = StateStore(tmp_path / "state.db")  # the old rows are not pruned by the earlier clock
        monkeypatch.setattr(time, "time", real)
        again = RequestVerifier(store.peer_key, b.unit_id, kept=store.first_nonce)
        with pytest.raises(TrustError, match="replay refused"):
            again.verify(signed, "POST", "/api/peer/unpair", b"{}")
        fresh = identity.sign_request(a, b.unit_id, "POST", "/api/peer/unpair", b"{}").headers
        assert again.verify(fresh, "POST", "/api/peer/unpair", b"{}").sender == a.unit_id
    finally:
        store.close()


def test_l5_a_unit_whose_card_takes_no_more_writes_still_takes_signed_requests(
    units: tuple[Unit, Unit],
) -> None:
    """Keeping a request's nonce is a write: on a card gone read-only or full, every call and hello
    from a paired unit was refused (unsigned 503: "it may no longer be paired"), where such a unit
    must stay reachable while someone replaces its card."""
    a, b = units
    a.store.add_peer(b.me.unit_id, "Bela", b.address, b.me.public_key)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    b.store._db.execute("PRAGMA query_only = 1")  # every write refused
    answer = PeerClient(a.me).post(b.address, service.HELLO_PATH, {}, peer_key=b.me.public_key)
    assert answer["unit_id"] == b.me.unit_id, answer


def test_m1_each_unit_answers_only_what_was_signed_for_it(tmp_path: Path) -> None:
    """Three real units: A's request to C, replayed to B over HTTP, never changes B (any path)."""
    a, b, c = (make_unit(tmp_path, n) for n in ("Asha", "Bela", "Cara"))
    try:
        for x, y in [(a, b), (a, c), (b, a), (c, a)]:
            x.store.add_peer(y.me.unit_id, y.name, y.address, y.me.public_key)
        to_c = identity.sign_request(a.me, c.me.unit_id, "POST", service.UNPAIR_PATH, b"{}")
        status, _, _ = request_from("127.0.0.1", b.address, "POST", service.UNPAIR_PATH, b"{}", to_c.headers)
        assert status == 403 and len(b.store.peers()) == 1
        # Sent where it was meant to go, it works (and only once).
        status, headers, body = request_from(
            "127.0.0.1", c.address, "POST", service.UNPAIR_PATH, b"{}", to_c.headers
        )
        assert status == 200 and c.store.peers() == []
        identity.verify_response(c.me.public_key, to_c.exchange, status, headers, body)
    finally:
        for unit in (a, b, c):
            unit.close()


def test_l5_a_clock_stepping_back_does_not_lock_a_unit_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi's clock steps back at its first sync when it booted ahead: the nonces from before the
    step expire only when the clock is there again, yet the ones after it expire as they should."""
    a, b = Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")
    verifier = RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id, max_skew_s=60, max_nonces=20)
    clock = [time.time()]
    monkeypatch.setattr(identity.time, "time", lambda: clock[0])

    def send() -> None:
        verifier.verify(identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers, "POST", "/x", b"")

    for _ in range(5):
        send()
    clock[0] -= 2 * 86400  # both units' clocks step back two days
    for _ in range(100):  # one request every 10 s for 1000 s: never more than 13 fresh at once
        send()
        clock[0] += 10


def test_l5_a_unit_whose_clock_is_elsewhere_is_asked_again_in_its_own_time(
    units: tuple[Unit, Unit], caplog: pytest.LogCaptureFixture
) -> None:
    """A Pi has no real-time clock: in a home without internet two units can start hours apart
    after a power cut. What A knows of B's clock is an hour out: B refuses A's first request for its
    time alone, signed, with B's time; A learns it and asks once more, stamped in B's clock."""
    a, b = units
    a.store.add_peer(b.me.unit_id, "Bela", b.address, b.me.public_key)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    a.me.clocks.learn(b.me.unit_id, time.time() - 3600)
    with caplog.at_level(logging.INFO):
        answer = PeerClient(a.me).post(b.address, service.HELLO_PATH, {}, peer_key=b.me.public_key)
    assert answer == {"unit_id": b.me.unit_id}
    assert abs(a.me.clocks.now(b.me.unit_id) - time.time()) < 1
    assert re.search(r"request's time is 360[01] s behind this unit's clock", caplog.text)
    assert f"unit {b.me.unit_id}'s clock is" in caplog.text

    # The refusal is the one signed for a request that failed: its time is B's, to the millisecond.
    a.me.clocks.learn(b.me.unit_id, time.time() + 600)
    stale = identity.sign_request(a.me, b.me.unit_id, "POST", service.HELLO_PATH, b"{}")
    status, headers, body = request_from(
        "127.0.0.1", b.address, "POST", service.HELLO_PATH, b"{}", stale.headers
    )
    assert status == 403 and json.loads(body)["reason"] == "clock", body
    their_time = identity.verify_response(b.me.public_key, stale.exchange, status, headers, body)
    assert abs(their_time - time.time()) < 1
    # Signed by another key, the same stale request gets no signature: B signs only what A signed.
    forged = {
        **stale.headers,
        identity.SIGNATURE: identity.sign_request(b.me, b.me.unit_id, "POST", "/", b"").headers[
            identity.SIGNATURE
        ],
    }
    status, headers, body = request_from("127.0.0.1", b.address, "POST", service.HELLO_PATH, b"{}", forged)
    assert status == 403 and "signature" in json.loads(body)["error"] and identity.SIGNATURE not in headers


def test_l2_the_answers_time_is_signed(tmp_path: Path) -> None:
    a, b = Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")
    asked = identity.sign_request(a, b.unit_id, "POST", "/x", b"{}").exchange
    headers = identity.sign_response(b, asked, 200, b"answer")
    assert abs(identity.verify_response(b.public_key, asked, 200, headers, b"answer") - time.time()) < 1
    for moved in (f"{float(headers[identity.TIME]) + 3600:.3f}", "1e12", "nan"):
        with pytest.raises(TrustError):
            identity.verify_response(b.public_key, asked, 200, {**headers, identity.TIME: moved}, b"answer")
