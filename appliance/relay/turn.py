"""STUN and TURN servers with time-limited credentials, asked from the relay (XEP-0215).

Prosody's ``mod_external_services`` answers ``<services xmlns="urn:xmpp:extdisco:2"/>`` with
coturn's address and a username and password made from the secret it shares with coturn
(``use-auth-secret``), valid until ``expires``. aiortc uses one STUN and one TURN server, so the
list given to it holds the first of each that it can use (TURN over UDP before TCP).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from aiortc import RTCIceServer

NS = "urn:xmpp:extdisco:2"
DEFAULT_TTL_S = 3600.0


class TurnError(Exception):
    """The relay's answer lists no STUN or TURN server this unit can use."""


@dataclass(frozen=True)
class IceServers:
    servers: list[RTCIceServer]
    expires: float  # time.time() after which the credentials no longer work

    def fresh(self, margin_s: float) -> bool:
        return time.time() + margin_s < self.expires


def query() -> Element:
    return Element(f"{{{NS}}}services")


def parse(services: Element | None) -> IceServers:
    """The ICE servers in a XEP-0215 answer; raises :class:`TurnError` when none is usable."""
    stun: list[RTCIceServer] = []
    turn: list[tuple[int, float, RTCIceServer]] = []
    for item in services.findall(f"{{{NS}}}service") if services is not None else []:
        kind, transport = item.get("type", ""), item.get("transport", "udp")
        host, port = item.get("host", ""), item.get("port", "")
        if not host or not port.isdigit():
            continue
        if kind == "stun" and transport == "udp":
            stun.append(RTCIceServer(f"stun:{host}:{port}"))
        elif kind == "turn" and item.get("username") and item.get("password"):
            url = f"turn:{host}:{port}?transport={transport}"
            server = RTCIceServer(url, username=item.get("username"), credential=item.get("password"))
            turn.append((0 if transport == "udp" else 1, _expiry(item.get("expires")), server))
    if not turn:
        raise TurnError("the relay offers no TURN server with credentials (check mod_external_services)")
    _, expires, chosen = min(turn, key=lambda t: t[0])  # aiortc uses one: UDP when there is one
    return IceServers([*stun[:1], chosen], expires)


def _expiry(text: str | None) -> float:
    if not text:
        return time.time() + DEFAULT_TTL_S
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + DEFAULT_TTL_S
