"""Which way a paired unit is reached: directly on this network, or through the relay.

A unit on one of this machine's own networks is called directly, as without a relay; one elsewhere
with a relay address through the relay. A unit paired at home and since moved away may still have
an address that looks local (two homes often use the same 192.168.1.0/24): it is tried there first
and, when no unit answers there as that one, through the relay. "No unit there" is nothing taking a
connection within ``LAN_CONNECT_SECONDS`` (a device that drops it would otherwise hold the call for
the whole ring time), or an answer the unit did not sign (another device, or another home's unit,
took the old address: its refusal is not the paired unit's, and "pair again" would be wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path

from appliance.call.signaling import HttpSignalling, Signal, SignallingError
from appliance.pairing.client import RELAY_PREFIX, UnitUnreachable, Unusable
from appliance.state import Peer

log = logging.getLogger(__name__)

ROUTES = Path("/proc/net/route")
# A unit on this network takes a connection in milliseconds; the relay is tried after this.
LAN_CONNECT_SECONDS = 3.0


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

    def __init__(self, ways: list[HttpSignalling], timeout: float = LAN_CONNECT_SECONDS) -> None:
        self._ways = ways
        self._used = ways[0]
        self._probe_s = min(LAN_CONNECT_SECONDS, timeout)  # within the caller's own wait

    async def connect(self) -> None:
        pass

    async def send(self, signal: Signal) -> None:
        refused: SignallingError | None = None  # an unsigned refusal on this network
        for way in self._ways:
            self._used = way
            last = way is self._ways[-1]
            try:
                if not last:
                    await _takes_connections(way.address, self._probe_s)
                await way.send(signal)
                return
            except SignallingError as e:
                # The paired unit itself may have refused unsigned (it unpaired this one): when the
                # relay then cannot reach it at all, that refusal is the answer, not "unreachable".
                if last and refused is not None and isinstance(e.__cause__, UnitUnreachable):
                    raise refused from refused.__cause__
                # Only "no unit there" moves on; a refusal the unit signed (busy, declined) is final.
                if last or not isinstance(e.__cause__, UnitUnreachable | Unusable):
                    raise
                if isinstance(e.__cause__, Unusable):
                    refused = e
                # Fixed text at INFO: the error names the other person and where their unit is.
                log.info("the other unit is not found on this network; trying the relay")
                log.debug("%s", e)

    async def receive(self) -> Signal:
        return await self._used.receive()

    async def close(self) -> None:
        for way in self._ways:
            await way.close()


async def _takes_connections(address: str, seconds: float) -> None:
    """Raises SignallingError (from UnitUnreachable) unless ``address`` takes a TCP connection
    within ``seconds``."""
    host, port = address.rsplit(":", 1)
    try:
        opening = asyncio.open_connection(host.strip("[]"), int(port))
        _, writer = await asyncio.wait_for(opening, seconds)
    except (OSError, TimeoutError, ValueError) as e:
        nobody = UnitUnreachable(f"nothing takes a connection at {address}: {e or 'no answer'}")
        raise SignallingError(f"cannot reach the unit on this network: {nobody}") from nobody
    writer.close()
    with contextlib.suppress(OSError):  # taken is all it had to show
        await writer.wait_closed()
