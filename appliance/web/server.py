"""Serves a Flask app with werkzeug in a thread, with a matching close()."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)


class WebServerError(Exception):
    """The web server cannot listen (port taken, address not on this machine)."""


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        try:
            self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        except OSError as e:
            raise WebServerError(
                f"cannot listen on {host}:{port}: {e.strerror} (is another emocall running?)"
            ) from e
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)

    def start(self) -> WebServer:
        self._thread.start()
        log.info("web page on port %d", self.port)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
