"""`emocall call` and `emocall hangup`: ask the unit running on this machine, through its local API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 10.0


class LocalUnitError(Exception):
    """The running unit cannot be asked or refused; the message says what to do."""


def unit_host(listen: str) -> str:
    """Where this machine's unit answers, given its ``[web] host``: loopback where it listens on
    every address, else the one address (or name) it listens on."""
    return "127.0.0.1" if listen == "0.0.0.0" else listen  # noqa: S104


def ask(
    port: int, path: str, payload: dict[str, Any] | None = None, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """POST ``payload`` (GET without one) to this machine's unit at ``host`` (:func:`unit_host`);
    its JSON answer, or LocalUnitError."""
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}{path}",
        body,
        # The unit answers its local control API only with this header (no web page can send it).
        {"Content-Type": "application/json", "X-Emocall-Local": "1"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return _decode(response.read())
    except urllib.error.HTTPError as e:
        raise LocalUnitError(str(_decode(e.read()).get("error", f"HTTP {e.code}"))) from e
    except OSError as e:
        raise LocalUnitError(
            f"no unit answers on port {port} ({e}): is `emocall run` running? (--port P if not 8080)"
        ) from e


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"error": "the unit answered something that is not JSON"}
