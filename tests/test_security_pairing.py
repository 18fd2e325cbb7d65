"""Security review L4 and M2 (issue 16): what another unit says about itself is checked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from appliance.identity import Identity
from tests.hostile import Answer, hostile_server
from tests.pairing_units import Unit


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
