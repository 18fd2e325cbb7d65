"""mDNS discovery: two units on this machine find each other (moves: tests/test_security_pairing.py)."""

from __future__ import annotations

import os
import socket
import time

import pytest
from zeroconf import ServiceInfo, Zeroconf

from appliance.pairing.discovery import SERVICE, Discovery, DiscoveryError


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


def test_an_odd_announcement_does_not_end_discovery() -> None:
    """Anyone on the LAN may announce the service: a TXT key that is not UTF-8 once killed the browser
    thread, and no unit announced afterwards was ever seen."""
    me = os.urandom(16).hex()
    try:
        mine = Discovery(me, "Asha", "127.0.0.1").start(18003)
    except DiscoveryError as e:
        pytest.skip(f"no multicast here: {e}")
    other = Zeroconf(interfaces=["127.0.0.1"])

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
