"""JSON over HTTP to another unit, signed with this unit's key when it goes to a paired unit."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from typing import Any

from appliance import identity
from appliance.identity import Identity, TrustError

log = logging.getLogger(__name__)

# host:port where host is a name, an IPv4 address or a bracketed IPv6 address.
ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):\d{1,5}$")


class UnitUnreachable(Exception):
    """The other unit did not answer (switched off, wrong address, another network)."""


class UnitRefused(Exception):
    """The other unit answered with an error; ``status`` and ``body`` say which."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error", f"the other unit answered HTTP {status}")))
        self.status = status
        self.body = body


def valid_address(address: str) -> bool:
    return bool(ADDRESS.match(address)) and 0 < int(address.rsplit(":", 1)[1]) < 65536


class PeerClient:
    def __init__(self, me: Identity, timeout_s: float = 5.0) -> None:
        self._me = me
        self._timeout_s = timeout_s

    def post(
        self, address: str, path: str, payload: dict[str, Any], peer_key: bytes | None = None
    ) -> dict[str, Any]:
        """POST ``payload``; signed and with the answer's signature checked when ``peer_key`` is given."""
        if not valid_address(address):
            raise UnitUnreachable(f"{address!r} is not an address like 192.168.1.20:8080")
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if peer_key is not None:
            headers.update(identity.sign_request(self._me, "POST", path, body))
        request = urllib.request.Request(f"http://{address}{path}", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                status, answer, answer_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as e:
            status, answer, answer_headers = e.code, e.read(), dict(e.headers)
        except (OSError, ValueError) as e:
            raise UnitUnreachable(f"cannot reach the unit at {address}: {e}") from e
        if peer_key is not None and status < 500:
            try:
                identity.verify_response(peer_key, headers[identity.NONCE], answer_headers, answer)
            except TrustError as e:
                raise UnitRefused(
                    403, {"error": f"the answer from {address} is not signed by that unit"}
                ) from e
        return _decode(status, answer, address)


def _decode(status: int, answer: bytes, address: str) -> dict[str, Any]:
    try:
        data = json.loads(answer)
    except ValueError as e:
        raise UnitRefused(status, {"error": f"{address} is not an emocall unit (HTTP {status})"}) from e
    if not isinstance(data, dict):
        raise UnitRefused(status, {"error": f"{address} answered something that is not an emocall reply"})
    if status >= 400:
        raise UnitRefused(status, data)
    return data
