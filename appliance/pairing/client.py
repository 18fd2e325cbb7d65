"""JSON over HTTP to another unit, signed with this unit's key when it goes to a paired unit.

The answer is read up to :data:`MAX_ANSWER` bytes only, and redirects are not followed (a unit never
sends one): what comes back is either the unit's answer or an error, and for a paired unit its
signature is checked whatever the status, and the time it carries kept as that unit's clock (see
:mod:`appliance.identity`). A request refused for its time alone is sent once more, stamped anew.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from appliance import identity
from appliance.identity import Identity, TrustError, unit_id_of
from appliance.relay import address as relay_address

log = logging.getLogger(__name__)

# host:port where host is a name, an IPv4 address or a bracketed IPv6 address.
ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):\d{1,5}$")
# The largest answer read: an SDP answer is about 5 KiB, pairing answers far less.
MAX_ANSWER = 256 * 1024
# A unit in another home: "xmpp:" and its account on a relay; the same signed bytes go through it.
RELAY_PREFIX = "xmpp:"
# Its pattern goes into the pairing page's schema; valid_address also asks slixmpp (bare_jid).
RELAY_ADDRESS = re.compile(f"^xmpp:{relay_address.BARE_JID}$")
RelayPost = Callable[[str, str, bytes, dict[str, str], float], tuple[int, bytes, dict[str, str]]]
"""(jid, path, body, headers, timeout) -> (status, body, headers) of one POST carried by the relay;
raises UnitUnreachable when it cannot be delivered (``appliance.relay``)."""


class UnitUnreachable(Exception):
    """The other unit did not answer (switched off, wrong address, another network)."""


class UnitRefused(Exception):
    """The other unit answered with an error; ``status`` and ``body`` say which."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error", f"the other unit answered HTTP {status}")))
        self.status = status
        self.body = body


class Unusable(UnitRefused):
    """An answer this unit cannot use (too large, a redirect, not JSON, not signed): the message is
    this unit's own, where a plain UnitRefused carries whatever the other side wrote."""


def valid_address(address: str) -> bool:
    if RELAY_ADDRESS.match(address):
        return relay_address.normalised(address[len(RELAY_PREFIX) :]) is not None
    if not ADDRESS.match(address):
        return False
    host, port = address.rsplit(":", 1)
    return 0 < int(port) < 65536 and (not host.startswith("[") or _ipv6(host[1:-1]))


def _ipv6(text: str) -> bool:
    # The pattern lets through any hex and colons; urllib refuses what is not an address with a
    # ValueError at the request, so it is checked here, where it gets its plain answer.
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as the error it is, never as a request to somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class PeerClient:
    def __init__(self, me: Identity, timeout_s: float = 5.0, relay: RelayPost | None = None) -> None:
        self._me = me
        self._timeout_s = timeout_s
        self._relay = relay
        # No proxy from the environment either: units talk to each other directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def post(
        self, address: str, path: str, payload: dict[str, Any], peer_key: bytes | None = None
    ) -> dict[str, Any]:
        """POST ``payload``; signed and with the answer's signature checked when ``peer_key`` is given."""
        if not valid_address(address):
            raise UnitUnreachable(f"{address!r} is not an address like 192.168.1.20:8080")
        body = json.dumps(payload).encode()
        if peer_key is None:
            status, answer, _ = self._send(address, path, body, {"Content-Type": "application/json"})
            return _decode(status, answer, address)
        try:
            return _decode(*self._signed(address, path, body, peer_key), address)
        except UnitRefused as e:
            if e.status != 403 or e.body.get("reason") != "clock":
                raise
        # The first request to a unit whose clock is elsewhere: its time has been learned.
        return _decode(*self._signed(address, path, body, peer_key), address)

    def _signed(self, address: str, path: str, body: bytes, peer_key: bytes) -> tuple[int, bytes]:
        unit = unit_id_of(peer_key)
        signed = identity.sign_request(self._me, unit, "POST", path, body)
        headers = {"Content-Type": "application/json", **signed.headers}
        status, answer, answer_headers = self._send(address, path, body, headers)
        try:
            their_time = identity.verify_response(peer_key, signed.exchange, status, answer_headers, answer)
        except TrustError as e:
            raise _unsigned(address, status) from e
        self._me.clocks.learn(unit, their_time)
        return status, answer

    def _send(
        self, address: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        if address.startswith(RELAY_PREFIX):
            if self._relay is None:
                raise UnitUnreachable(
                    f"{address} is in another home: set this unit's [relay] jid to reach it"
                )
            return self._relay(address[len(RELAY_PREFIX) :], path, body, headers, self._timeout_s)
        request = urllib.request.Request(f"http://{address}{path}", data=body, headers=headers, method="POST")
        # HTTPException: something at the address that does not speak HTTP (an SSH server, a printer
        # that took the unit's old address) or broke off its answer; it is no unit to reach there.
        try:
            try:
                with self._opener.open(request, timeout=self._timeout_s) as response:
                    return response.status, _read(response, address), dict(response.headers)
            except urllib.error.HTTPError as e:
                with e:
                    return e.code, _read(e, address), dict(e.headers)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise UnitUnreachable(f"cannot reach the unit at {address}: {e}") from e


def _read(response: Any, address: str) -> bytes:
    answer: bytes = response.read(MAX_ANSWER + 1)
    if len(answer) > MAX_ANSWER:
        raise Unusable(502, {"error": f"the answer from {address} is larger than any unit sends"})
    return answer


def _unsigned(address: str, status: int) -> Unusable:
    """An answer the unit asked did not sign: only that it was not a trusted success is known."""
    if status >= 400:
        # Its body cannot be trusted, so it is not passed on; a refusal it is either way.
        refused = f"the unit at {address} refused (HTTP {status}); it may no longer be paired with this one"
        return Unusable(status, {"error": refused})
    return Unusable(502, {"error": f"the answer from {address} is not signed by that unit"})


def _decode(status: int, answer: bytes, address: str) -> dict[str, Any]:
    if 300 <= status < 400:
        raise Unusable(
            502, {"error": f"{address} sent this unit elsewhere (HTTP {status}): not an emocall unit"}
        )
    try:
        data = json.loads(answer)
    except (ValueError, RecursionError) as e:
        raise Unusable(502, {"error": f"{address} is not an emocall unit (HTTP {status})"}) from e
    if not isinstance(data, dict):
        raise Unusable(502, {"error": f"{address} answered something that is not an emocall reply"})
    if status >= 400:
        raise UnitRefused(status, data)
    return data
