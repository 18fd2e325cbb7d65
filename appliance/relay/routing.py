"""Which way a paired unit is reached: directly on this network, or through the relay.

A unit on one of this machine's own networks is called directly, as without a relay; one elsewhere
with a relay address through the relay. A unit paired at home and since moved away may still have
an address that looks local (two homes often use the same 192.168.1.0/24): it is tried there first
and, when nothing answers there, through the relay.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from appliance.call.signaling import HttpSignalling, Signal, SignallingError
from appliance.pairing.client import RELAY_PREFIX, UnitUnreachable
from appliance.state import Peer

log = logging.getLogger(__name__)

ROUTES = Path("/proc/net/route")


def routes(peer: Peer, jid: str | None) -> list[str]:
    """The addresses to try, in order: the LAN address when it is on this network, the relay address."""
    if peer.address.startswith(RELAY_PREFIX) or jid is None:
        return [peer.address]  # a unit paired through the relay and not yet heard from has no other
    relayed = RELAY_PREFIX + jid
    return [peer.address, relayed] if on_link(peer.address) else [relayed]


def on_link(address: str) -> bool:
    """Whether the host of ``address`` is on one of this machine's own networks (no router between)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    packed = int.from_bytes(ip.packed, "little")  # /proc/net/route writes addresses in host order
    for destination, gateway, mask in _route_table():
        if gateway == 0 and destination != 0 and packed & mask == destination:
            return True
    return False


def online() -> bool:
    """Whether this machine has a default route (a network that leads somewhere, as ``ip route``)."""
    return any(destination == mask == 0 for destination, _, mask in _route_table())


def _route_table() -> list[tuple[int, int, int]]:
    """(destination, gateway, mask) of each IPv4 route; none when the table cannot be read."""
    try:
        lines = ROUTES.read_text().splitlines()[1:]
    except OSError:
        return []
    rows = [line.split() for line in lines]
    return [(int(f[1], 16), int(f[2], 16), int(f[7], 16)) for f in rows if len(f) >= 8]


class FallbackSignalling:
    """Signalling over the first of several ways that reaches the other unit (see :func:`routes`)."""

    def __init__(self, ways: list[HttpSignalling]) -> None:
        self._ways = ways
        self._used = ways[0]

    async def connect(self) -> None:
        pass

    async def send(self, signal: Signal) -> None:
        for way in self._ways:
            self._used = way
            try:
                await way.send(signal)
                return
            except SignallingError as e:
                # Only "nothing answers there" moves on; a refusal from the unit itself is final.
                if way is self._ways[-1] or not isinstance(e.__cause__, UnitUnreachable):
                    raise
                # Fixed text at INFO: the error names the other person and where their unit is.
                log.info("the other unit does not answer on this network; trying the relay")
                log.debug("%s", e)

    async def receive(self) -> Signal:
        return await self._used.receive()

    async def close(self) -> None:
        for way in self._ways:
            await way.close()
