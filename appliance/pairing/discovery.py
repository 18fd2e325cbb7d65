"""Finding other units on the LAN: mDNS/DNS-SD service ``_emocall._tcp`` (zeroconf).

Each unit advertises its unit id and display name in the TXT record and browses for the others;
the pairing page lists what it sees. The instance name is derived from the unit id, because the
display name may hold characters DNS-SD handles badly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import ifaddr
from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from appliance.state import valid_name

log = logging.getLogger(__name__)

SERVICE = "_emocall._tcp.local."
# The most units listed at once: a LAN host can announce any number of them.
MAX_SEEN = 64
UNIT_ID = re.compile(r"[0-9a-f]{32}")


class DiscoveryError(Exception):
    """mDNS cannot run here (no multicast-capable interface)."""


@dataclass(frozen=True)
class SeenUnit:
    unit_id: str
    name: str
    address: str


def _addresses(host: str) -> list[str]:
    """The IPv4 addresses to advertise for a web server listening on ``host``."""
    if host not in ("0.0.0.0", ""):  # noqa: S104
        return [host]
    found = [ip.ip for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)]
    # Loopback is useless to another unit unless nothing else is up (two units on one machine).
    return [a for a in found if not a.startswith("127.")] or found


class Discovery:
    def __init__(
        self, unit_id: str, name: str, host: str, on_seen: Callable[[SeenUnit], None] | None = None
    ) -> None:
        """``on_seen`` is called (in zeroconf's thread) for every unit found or updated."""
        self._unit_id = unit_id
        self._on_seen = on_seen
        self._name = name
        self._host = host
        self._port = 0
        self._lock = threading.Lock()
        self._seen: dict[str, SeenUnit] = {}
        self._info: ServiceInfo | None = None
        try:
            self._zc = Zeroconf()
        except OSError as e:
            raise DiscoveryError(f"mDNS cannot start: {e} (is there a network interface?)") from e
        self._browser: ServiceBrowser | None = None

    def _service_info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE,
            f"emocall-{self._unit_id[:12]}.{SERVICE}",
            port=self._port,
            properties={"id": self._unit_id, "name": self._name},
            server=f"emocall-{self._unit_id[:12]}.local.",
            addresses=[socket.inet_aton(a) for a in _addresses(self._host)],
        )

    def start(self, port: int) -> Discovery:
        """Advertise this unit's web port and start looking for the others."""
        self._port = port
        self._info = self._service_info()
        # Registering probes the network for about 1.5 s: let zeroconf's own loop do it, so the
        # unit's start-up does not wait for it.
        if self._zc.loop is None:
            raise DiscoveryError("mDNS is not running: pair this unit by address")
        registering = asyncio.run_coroutine_threadsafe(
            self._zc.async_register_service(self._info, allow_name_change=True), self._zc.loop
        )
        registering.add_done_callback(self._registered)
        self._browser = ServiceBrowser(self._zc, SERVICE, handlers=[self._on_change])
        return self

    def _registered(self, done: concurrent.futures.Future[Awaitable[None]]) -> None:
        try:
            done.result()
        except Exception as e:
            log.warning("cannot advertise this unit on mDNS (%s); pair it by address", e)
            return
        log.info("advertising %s on mDNS", self._unit_id)

    def rename(self, name: str) -> None:
        """Advertise a new display name."""
        self._name = name
        if self._info is not None:
            self._info = self._service_info()
            self._zc.update_service(self._info)

    def units(self) -> list[SeenUnit]:
        with self._lock:
            return sorted(self._seen.values(), key=lambda u: u.name.casefold())

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # zeroconf's browser thread calls this and dies with whatever it raises: one odd announcement
        # on the LAN (anyone may send one) must not end discovery for good.
        try:
            self._note_change(zeroconf, service_type, name, state_change)
        except Exception:
            log.exception("ignoring the mDNS announcement %r", name)

    def _note_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                self._seen.pop(name, None)
            return
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        seen = _seen_unit(info) if info else None
        if seen is None or seen.unit_id == self._unit_id:
            return
        with self._lock:
            self._seen.pop(name, None)  # an update counts as the newest
            self._seen[name] = seen
            while len(self._seen) > MAX_SEEN:
                # Anyone on the LAN can announce units without end: the oldest seen make way.
                del self._seen[next(iter(self._seen))]
        if self._on_seen is not None:
            self._on_seen(seen)

    def restart(self) -> None:
        """Advertise and look again on the machine's interfaces as they are now (it joined a
        network, its address changed): zeroconf sends only on the interfaces it found at its start."""
        try:
            fresh = Zeroconf()
        except OSError as e:
            log.warning("mDNS cannot start again (%s); pair this unit by address", e)
            return
        self.close()
        self._zc, self._browser = fresh, None
        with self._lock:
            self._seen.clear()
        if self._port:
            self.start(self._port)

    def close(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
        self._zc.unregister_all_services()
        self._zc.close()


def _seen_unit(info: ServiceInfo) -> SeenUnit | None:
    """The unit an announcement describes; None unless its id and name are as a unit sends them (a
    unit id, a name the settings would take), since the pairing page lists and says the name."""
    props = {
        k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
        for k, v in info.properties.items()
        if v is not None
    }
    addresses = info.parsed_addresses()
    unit_id, name = props.get("id", ""), props.get("name", "")
    if not (UNIT_ID.fullmatch(unit_id) and valid_name(name)):
        return None
    if not addresses or info.port is None:
        return None
    host = addresses[0] if ":" not in addresses[0] else f"[{addresses[0]}]"
    return SeenUnit(unit_id, name, f"{host}:{info.port}")
