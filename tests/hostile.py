"""A hostile "unit" for the security tests: a real HTTP server that records what it is sent and
answers what the test tells it to (a huge body, a redirect, a fixed status)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    # MiB streamed after ``body`` in chunks of 64 KiB (an endless-looking answer).
    stream_mib: int = 0


@dataclass
class HostileServer:
    address: str
    received: list[Received]
    answer: Answer
    sent_bytes: list[int]


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            server.received.append(Received(self.command, self.path, dict(self.headers), body))
            answer = server.answer
            self.send_response(answer.status)
            total = len(answer.body) + answer.stream_mib * 2**20
            self.send_header("Content-Length", str(total))
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(answer.body)
                chunk = b"0" * 2**16
                for _ in range(answer.stream_mib * 16):
                    self.wfile.write(chunk)
                    server.sent_bytes[0] += len(chunk)
            except OSError:
                pass  # the client hung up, as it should on an oversized answer

        do_POST = do_GET = _any

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def hostile_server(answer: Answer | None = None, host: str = "127.0.0.1") -> Iterator[HostileServer]:
    state = HostileServer("", [], answer or Answer(), [0])
    httpd = ThreadingHTTPServer((host, 0), _handler(state))
    httpd.daemon_threads = True
    state.address = f"{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def request_from(
    source: str,
    address: str,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to ``address`` sent from the local address ``source`` (any 127.x.y.z works on
    loopback): another machine on the LAN, as far as the unit can tell."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        connection.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
