"""mDNS discovery: two units on this machine find each other (moves: tests/test_security_pairing.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from zeroconf import ServiceInfo, Zeroconf

from appliance.pairing.discovery import MAX_SEEN, SERVICE, Discovery, DiscoveryError


def test_units_find_each_other() -> None:
    a_id, b_id = os.urandom(16).hex(), os.urandom(16).hex()
    try:
        a = Discovery(a_id, "Asha", "127.0.0.1").start(18001)
        b = Discovery(b_id, "Bela <&>", "127.0.0.1").start(18002)
    except DiscoveryError as e:
        pytest.skip(f"no multicast here: {e}")
    try:
        deadline = time.monotonic() + 15
        # Other units on this machine may be advertising too: wait for these two.
        while time.monotonic() < deadline:
            if b_id in {u.unit_id for u in a.units()} and a_id in {u.unit_id for u in b.units()}:
                break
            time.sleep(0.2)
        seen_by_a = [u for u in a.units() if u.unit_id == b_id]
        seen_by_b = [u for u in b.units() if u.unit_id == a_id]
        assert [(u.name, u.address) for u in seen_by_a] == [("Bela <&>", "127.0.0.1:18002")]
        assert [(u.name, u.address) for u in seen_by_b] == [("Asha", "127.0.0.1:18001")]
        assert all(u.unit_id != a_id for u in a.units()), "a unit must not list itself"
    finally:
        a.close()
        b.close()


def listening(port: int) -> tuple[str, Discovery, Zeroconf]:
    """This unit's discovery on loopback (its id, the discovery) and another announcer beside it."""
    me = os.urandom(16).hex()
    try:
        mine = Discovery(me, "Asha", "127.0.0.1").start(port)
    except DiscoveryError as e:
        pytest.skip(f"no multicast here: {e}")
    return me, mine, Zeroconf(interfaces=["127.0.0.1"])


def test_an_odd_announcement_does_not_end_discovery() -> None:
    """Anyone on the LAN may announce the service: a TXT key that is not UTF-8 once killed the browser
    thread, and no unit announced afterwards was ever seen."""
    me, mine, other = listening(18003)

    def announce(instance: str, properties: dict[bytes, bytes]) -> None:
        other.register_service(
            ServiceInfo(
                SERVICE,
                f"{instance}.{SERVICE}",
                port=18004,
                properties=properties,
                server=f"{instance}.local.",
                addresses=[socket.inet_aton("127.0.0.1")],
            )
        )

    later = os.urandom(16).hex()
    try:
        announce(f"odd-{me[:8]}", {b"\xff\xfe": b"x", b"id": b"odd"})
        time.sleep(1)
        announce(f"later-{me[:8]}", {b"id": later.encode(), b"name": b"Bela"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and later not in {u.unit_id for u in mine.units()}:
            time.sleep(0.2)
        assert [u.name for u in mine.units() if u.unit_id == later] == ["Bela"]
    finally:
        other.close()
        mine.close()


def test_only_announcements_of_a_unit_id_and_name_are_listed_and_only_so_many() -> None:
    """Anyone on the LAN may announce any number of units, with any id and name: the list keeps
    the newest MAX_SEEN, and only those with a unit id and a name the settings would take."""
    me, mine, other = listening(18005)
    assert other.loop is not None
    registered: list[concurrent.futures.Future[Any]] = []

    def announce(instance: str, unit_id: str, name: str) -> None:
        info = ServiceInfo(
            SERVICE,
            f"{instance}-{me[:8]}.{SERVICE}",
            port=18006,
            properties={b"id": unit_id.encode(), b"name": name.encode()},
            server=f"{instance}-{me[:8]}.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
        )
        # All at once, not one after another (each announcement takes about half a second).
        coroutine = other.async_register_service(info, cooperating_responders=True)
        registered.append(asyncio.run_coroutine_threadsafe(coroutine, other.loop))

    bad = {
        "Short id": "0123",
        "Upper id": os.urandom(16).hex().upper(),
        "Bela\u202eevil": "",
        "Be\u0085la": "",
    }
    bad["x" * 41] = ""
    last = os.urandom(16).hex()
    try:
        for n in range(MAX_SEEN + 6):
            announce(f"flood{n}", os.urandom(16).hex(), f"Unit {n}")
        assert _until(lambda: len(mine.units()) == MAX_SEEN, 30), len(mine.units())
        time.sleep(1)  # the rest of the flood arrives
        for n, (name, unit_id) in enumerate(bad.items()):  # the newest now: kept if they were taken
            announce(f"bad{n}", unit_id or os.urandom(16).hex(), name)
        announce("last", last, "Last")
        for done in registered:
            done.result(timeout=30)
        assert _until(lambda: last in {u.unit_id for u in mine.units()}, 30)
        time.sleep(1)  # anything still on its way arrives
        names = [u.name for u in mine.units()]
        assert "Last" in names and len(names) == MAX_SEEN
        assert set(names).isdisjoint(bad)
    finally:
        other.close()
        mine.close()


def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)
    return check()
