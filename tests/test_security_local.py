"""Security review L3 (issue 16): pages elsewhere cannot drive the unit through a browser.

Runs a real unit process (tests/call_unit.py: the call blueprint on the unit's web app) and sends
what a hostile page could make a browser on the unit or the LAN send: a rebound host name, a
cross-site form, a foreign Origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.call.local import ask
from appliance.pairing import service
from tests.call_unit import Unit, free_port
from tests.hostile import request_from

LOCAL = {"X-Emocall-Local": "1"}


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    running = Unit("Asha", Path(tmp_path_factory.mktemp("sec_local")) / "a", free_port(), "127.0.0.1").start()
    yield running
    running.close()


def _send(
    unit: Unit, method: str, path: str, headers: dict[str, str], body: object = None
) -> tuple[int, str]:
    status, _, answer = request_from("127.0.0.1", unit.address, method, path, body, headers)
    return status, json.loads(answer or b"{}").get("error", "") if answer.startswith(
        b"{"
    ) else answer.decode()


def test_l3_the_local_control_api_needs_its_header_and_the_units_own_host(unit: Unit) -> None:
    # What `emocall call` / `emocall hangup` send works.
    assert ask(unit.port, "/api/hangup", {})["state"] == "idle"
    # A cross-site form from a page in a browser on the unit: no custom header possible.
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}
    for path in ("/api/hangup", "/api/call/answer", "/api/call"):
        status, error = _send(unit, "POST", path, form, b"to=Bela")
        assert status == 403, (path, status, error)
    # DNS rebinding: evil.example now resolves to 127.0.0.1, so the page is "same origin".
    rebound = {"Host": f"evil.example:{unit.port}", **LOCAL}
    for path in ("/api/hangup", "/api/call/answer"):
        status, error = _send(unit, "POST", path, rebound, {})
        assert status == 400 and "own name or address" in error, (path, status, error)
    assert _send(unit, "GET", "/api/call", rebound)[0] == 400
    # The unit's own names still work.
    for host in (f"127.0.0.1:{unit.port}", f"localhost:{unit.port}", f"[::1]:{unit.port}"):
        assert _send(unit, "GET", "/api/call", {"Host": host, **LOCAL})[0] == 200, host


def test_l3_pages_refuse_foreign_hosts_and_origins(unit: Unit) -> None:
    assert _send(unit, "GET", "/api/owner", {"Host": "rebind.example"})[0] == 400
    assert _send(unit, "GET", "/login", {"Host": "rebind.example"})[0] == 400
    # A change from another site, even with the right Host, is refused before anything happens.
    for foreign in ({"Origin": "http://evil.example"}, {"Origin": "null"}):  # null: a sandboxed page
        status, error = _send(unit, "POST", "/api/owner/code", foreign, {})
        assert status == 403 and "another web site" in error
    said = [e for e in unit.events if e["topic"] == "pairing.code"]
    assert said == []
    # The same request from the unit's own page goes through to the CSRF check.
    same = {"Origin": f"http://{unit.address}"}
    assert _send(unit, "POST", "/api/owner/code", same, {})[0] == 403  # no CSRF token yet


def test_l3_unit_to_unit_routes_refuse_browsers(unit: Unit) -> None:
    body = {"unit_id": "ab" * 16, "name": "Mallory", "port": 9}
    status, error = _send(unit, "POST", service.START_PATH, {"Origin": "http://evil.example"}, body)
    assert status == 403 and "web pages" in error
    status, error = _send(unit, "POST", "/api/call/signal", {"Origin": f"http://{unit.address}"}, {})
    assert status == 403 and "web pages" in error
    assert [e for e in unit.events if e["topic"] == "pairing.code"] == []
