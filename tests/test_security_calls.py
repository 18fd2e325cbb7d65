"""Security in calls between real unit processes (tests/call_unit.py): M1 with the call offer
(issue 16), and a flood of pair requests during a call (issue 15)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.call.signaling import SIGNAL_PATH
from appliance.identity import Identity
from appliance.pairing import service
from appliance.state import StateStore
from tests.call_unit import Unit, paired_units
from tests.hostile import hostile_server, request_from


@pytest.fixture
def units(tmp_path: Path) -> Iterator[tuple[Unit, Unit]]:
    a, b = paired_units(tmp_path)
    yield a, b
    a.close()
    b.close()


def test_m1_an_offer_passed_on_by_a_paired_unit_does_not_ring(
    units: tuple[Unit, Unit], tmp_path: Path
) -> None:
    """A calls Carol (hostile, paired with A); Carol replays A's signed offer to B: B must not ring."""
    a, b = units
    carol = Identity.load_or_create(tmp_path / "carol.key")
    with hostile_server(host=a.host) as c:
        store = StateStore(a.data_dir / "state.db")
        store.add_peer(carol.unit_id, "Carol", c.address, carol.public_key)
        store.close()
        a.start()
        b.start()
        a.send("call Carol")
        a.wait_for("call.state", 20, state="failed")
        offer = next(r for r in c.received if r.path == SIGNAL_PATH)
    assert json.loads(offer.body)["kind"] == "offer"
    status, _, body = request_from(b.host, b.address, "POST", SIGNAL_PATH, offer.body, offer.headers)
    assert status == 403 and "signed for unit" in json.loads(body)["error"]
    assert b.status()["state"] == "idle"
    assert b.topics("call.state") == []


def test_issue15_a_flood_of_pair_requests_does_not_stop_a_call(units: tuple[Unit, Unit]) -> None:
    a, b = units
    a.start()
    b.start()
    a.send("call Bela")
    b.wait_for("call.state", 30, state="connected")
    since = b.mark()
    frames = b.wait_status("frames_shown", 1, timeout=15)["frames_shown"]
    statuses: list[int] = []

    def flood(n: int) -> None:
        body = {"unit_id": f"{n:032x}", "name": f"Flood {n}", "port": 9}
        for _ in range(10):
            statuses.append(
                request_from(f"127.0.0.{n + 2}", f"127.0.0.1:{b.port}", "POST", service.START_PATH, body)[0]
            )

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 200 and set(statuses) <= {200, 429}
    # 5 code requests per address, 24 from all together: the rest are refused.
    assert statuses.count(200) <= 24 and statuses.count(429) >= 176
    # The call goes on: no state change, video still arriving; the unit said one code and one lock.
    b.wait_status("frames_shown", frames + 15, timeout=15)
    assert b.status()["state"] == "connected"
    assert b.topics("call.", since) == [] and a.status()["state"] == "connected"
    assert len(b.topics("pairing.code", since)) == 1
    assert len(b.topics("pairing.locked", since)) <= 2  # at most once per scope (address, everyone)
