"""mDNS discovery: two units on this machine find each other (moves: tests/test_security_pairing.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zeroconf import ServiceInfo, Zeroconf

from appliance.pairing.discovery import MAX_SEEN, SERVICE, Discovery, DiscoveryError

ROOT = Path(__file__).resolve().parents[1]


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
        "\u200d \u0301": "",  # nothing a page or the voice can show: listed as a blank entry
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


LOOK_FOR_UNITS = """
import sys, time
from zeroconf import ServiceBrowser, Zeroconf
from appliance.pairing.discovery import SERVICE
zc, names = Zeroconf(), []
ServiceBrowser(zc, SERVICE, handlers=[lambda zeroconf, service_type, name, state_change: names.append(name)])
time.sleep(3)
for name in names:
    info = zc.get_service_info(SERVICE, name, 3000)
    print(name, info.parsed_addresses() if info else [])
zc.close()
"""


def test_a_unit_started_before_its_network_shows_and_advertises_the_address_it_gets(tmp_path: Path) -> None:
    """At first boot the unit starts before the owner has joined it to Wi-Fi (the setup hotspot),
    and a router may give it a new address: the display's address and the mDNS announcement follow
    (appliance/app.py, ADDRESS_SECONDS), so a helper reads, and another unit finds, the right one."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = f"emocall-addr-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        config = tmp_path / "config.toml"
        config.write_text(
            f'[unit]\nname = "Kitchen"\ndata_dir = "{tmp_path / "data"}"\n'
            '[camera]\nsource = "pattern"\n[web]\nhost = "0.0.0.0"\nport = 8080\n'
            '[speech]\noutput = "wav"\n[display]\nbackend = "offscreen"\n[button]\nenabled = false\n'
        )
        command = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "appliance.cli",
            "--config",
            str(config),
            "run",
        ]
        proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=ROOT)
        shown = tmp_path / "data" / "display.txt"
        _wait_for(lambda: "127.0.0.1:8080" in _read(shown), proc, shown)
        for step in (
            ["link", "add", "home0", "type", "veth", "peer", "name", "router0"],  # no dummy module here
            ["link", "set", "router0", "up"],
            ["link", "set", "home0", "up"],
            ["addr", "add", "10.77.0.5/24", "dev", "home0"],
            ["route", "add", "default", "via", "10.77.0.1"],
        ):
            subprocess.run(["ip", "-n", ns, *step], check=True)
        _wait_for(lambda: "10.77.0.5:8080" in _read(shown), proc, shown)
        look = ["ip", "netns", "exec", ns, sys.executable, "-c", LOOK_FOR_UNITS]
        found = subprocess.run(look, capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
        assert "'10.77.0.5'" in found, found
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], shown: Path) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert proc.poll() is None and time.monotonic() < deadline, _read(shown)
        time.sleep(0.3)
