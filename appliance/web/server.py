"""Serves the Flask app with waitress (a production WSGI server) in a thread, with a matching close().

waitress reads each request whole in its one I/O thread before a worker runs it, so slow clients
hold a socket, never a worker; ``THREADS`` workers run the app. Limits: request bodies over
``MAX_BODY_BYTES`` and headers over ``MAX_HEADER_BYTES`` are refused (413/431) before the app sees
them, at most ``MAX_CONNECTIONS`` connections are open at once and a connection idle for
``IDLE_SECONDS`` is closed. Each request is logged as one plain line (no colour codes).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from waitress.server import create_server

log = logging.getLogger(__name__)
access_log = logging.getLogger("appliance.web.access")

THREADS = 4
MAX_BODY_BYTES = 64 * 1024  # also Flask's MAX_CONTENT_LENGTH (web/api.py)
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
IDLE_SECONDS = 15
# Well inside systemd's stop timeout (90 s): workers get this long to finish their request.
STOP_SECONDS = 5.0
# What the access log writes as an escape: anything but printable ASCII. A path in WSGI is its bytes
# as Latin-1, so each escape is one byte as sent, and no byte (%0A, %C2%85) can break a line.
UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebServerError(Exception):
    """The web server cannot listen (port taken, address not on this machine)."""


def with_access_log(app: Wsgi) -> Wsgi:
    """One plain line per request: client address, method, path (no query string) and status."""

    def logged(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            access_log.info(
                "%s %s %s %s",
                environ.get("REMOTE_ADDR", "-"),
                _printable(environ.get("REQUEST_METHOD", "-")),
                _printable(environ.get("PATH_INFO", "-")),
                status.split(" ", 1)[0],
            )
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def _printable(text: str) -> str:
    """``text`` with anything but printable ASCII escaped (``\\x0a``): a path is what the client
    sent, percent-decoded, so a ``%0A`` in it would otherwise start a forged line in the log."""
    return UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        try:
            self._server: Any = create_server(
                with_access_log(app),
                host=host,
                port=port,
                threads=THREADS,
                ident="emocall",
                max_request_body_size=MAX_BODY_BYTES,
                max_request_header_size=MAX_HEADER_BYTES,
                connection_limit=MAX_CONNECTIONS,
                channel_timeout=IDLE_SECONDS,
                cleanup_interval=max(1, IDLE_SECONDS // 3),
                expose_tracebacks=False,
            )
        except OSError as e:
            raise WebServerError(
                f"cannot listen on {host}:{port}: {e.strerror} (is another emocall running?)"
            ) from e
        except ValueError as e:  # waitress: a host name that does not resolve
            raise WebServerError(f"cannot listen on {host}:{port}: {e} (check [web] host)") from e
        self.port = int(self._server.effective_port)  # waitress gives it as a string
        self.host = str(self._server.effective_host)  # the address it listens on, a name resolved
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    def start(self) -> WebServer:
        self._thread.start()
        log.info("web page on port %d", self.port)
        return self

    def close(self) -> None:
        """Let running requests finish (up to ``STOP_SECONDS``), then close every socket."""
        # Workers end after their current request; the I/O loop still sends what they answered.
        self._server.task_dispatcher.shutdown(timeout=STOP_SECONDS)
        if self._thread.is_alive():
            try:
                # The I/O loop owns its sockets: close them from inside it; it ends when none is left.
                self._server.trigger.pull_trigger(self._close_all)
            except OSError as e:
                # Its wake-up pipe is gone (EBADF, seen once in CI): closing from here is all that is left.
                log.warning("the web server's loop cannot be woken (%s): closing its sockets directly", e)
                self._close_all()
            self._thread.join(timeout=STOP_SECONDS)
        else:
            self._close_all()

    def _close_all(self) -> None:
        for channel in list(self._server._map.values()):
            try:
                channel.close()
            except OSError as e:  # one descriptor already gone must not keep the others open
                log.warning("closing %r: %s", channel, e)
