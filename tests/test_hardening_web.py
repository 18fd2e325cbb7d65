"""The production web server: slow clients, size limits, headers, plain access logs, clean shutdown."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from appliance.web import server
from tests.pairing_units import Unit, make_unit

SLOW_CLIENTS = 20
REQUESTS_EACH = 10
ANSWER_WITHIN_S = 1.0


@pytest.fixture
def unit(tmp_path: Path) -> Unit:
    u = make_unit(tmp_path, "Asha")
    yield u
    u.close()


def _get(unit: Unit, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", unit.server.port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _slow_requests(port: int, answers: list[int]) -> None:
    """A client on a slow link: each request's bytes trickle in over about 0.3 s."""
    request = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for _ in range(REQUESTS_EACH):
            for i in range(0, len(request), 12):
                sock.sendall(request[i : i + 12])
                time.sleep(0.05)
            status = int(reader.readline().split()[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            answers.append(status)


def test_slow_clients_leave_the_page_answering_others(unit: Unit) -> None:
    answers: list[int] = []
    clients = [
        threading.Thread(target=_slow_requests, args=(unit.server.port, answers)) for _ in range(SLOW_CLIENTS)
    ]
    for c in clients:
        c.start()
    waits = []
    while any(c.is_alive() for c in clients):
        start = time.monotonic()
        assert _get(unit, "/login").status == 200
        waits.append(time.monotonic() - start)
        time.sleep(0.1)
    for c in clients:
        c.join()
    assert answers == [200] * (SLOW_CLIENTS * REQUESTS_EACH)
    assert len(waits) >= 5 and max(waits) < ANSWER_WITHIN_S, waits
    print(f"{len(answers)} slow requests; the page answered {len(waits)} times, worst {max(waits):.3f} s")


def test_a_body_over_the_limit_is_refused(unit: Unit) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", unit.server.port, timeout=5)
    body = b"{" + b" " * server.MAX_BODY_BYTES + b"}"
    conn.request("POST", "/api/pair", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert _get(unit, "/api/status").status == 200


def test_server_header_is_ours_and_security_headers_stay(unit: Unit) -> None:
    response = _get(unit, "/login")
    assert response.getheader("Server") == "emocall"
    assert "werkzeug" not in str(response.headers).lower()
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "default-src 'none'" in (response.getheader("Content-Security-Policy") or "")


def test_access_log_is_one_plain_line(unit: Unit, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.web.access"):
        _get(unit, "/api/status?x=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.web.access"]
    assert lines == ["127.0.0.1 GET /api/status 200"]


def test_close_ends_open_connections_quickly(unit: Unit) -> None:
    idle = [socket.create_connection(("127.0.0.1", unit.server.port)) for _ in range(5)]
    start = time.monotonic()
    unit.server.close()
    assert time.monotonic() - start < server.STOP_SECONDS
    for sock in idle:
        sock.settimeout(2)
        # Closed by the server: an accepted connection ends (EOF), one still in the listen backlog
        # is reset when the listening socket closes. Both are closed; a hang would time out here.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", unit.server.port), timeout=1)


def test_close_still_closes_every_socket_when_the_loop_cannot_be_woken(
    unit: Unit, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen once in CI: waitress's wake-up pipe was already closed (EBADF) when the unit stopped."""
    idle = [socket.create_connection(("127.0.0.1", unit.server.port)) for _ in range(3)]
    deadline = time.monotonic() + 5
    # All accepted first: a descriptor the server opens later could take the pipe's number.
    while len(unit.server._server.active_channels) < len(idle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(unit.server._server.active_channels) >= len(idle), "the server never accepted them"
    os.close(unit.server._server.trigger.trigger)
    with caplog.at_level(logging.WARNING, logger="appliance.web.server"):
        unit.server.close()
    assert "cannot be woken" in caplog.text
    for sock in idle:
        sock.settimeout(2)
        assert sock.recv(1) == b""
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", unit.server.port), timeout=1)


def test_a_taken_port_says_so(unit: Unit) -> None:
    assert isinstance(unit.server.port, int)  # pairing signs it: "8080" would not match 8080
    with pytest.raises(server.WebServerError, match="is another emocall running"):
        server.WebServer(unit.app, "127.0.0.1", unit.server.port)
