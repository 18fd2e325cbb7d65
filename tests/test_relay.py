"""Calls between homes through a relay: real Prosody and coturn, two homes behind NAT routers.

Needs root (CI runs as root) and Debian's prosody and coturn (``bash .ci/setup --tests``). One
topology serves the whole module (building it and starting the servers takes a few seconds); home
2's router is switched between a cone and a symmetric NAT by the tests that need one or the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .call_unit import write_tone
from .relay_net import DOMAIN, SERVER_IP, Topology, TopologyUnavailable, topology
from .relay_unit import RelayUnit

pytestmark = pytest.mark.netns


@dataclass
class Homes:
    net: Topology
    a: RelayUnit
    b: RelayUnit
    jids: dict[str, str]
    folder: Path


def relay_args(net: Topology, folder: Path, name: str) -> list[str]:
    jid, password = net.relay.add_unit(name)
    secret = folder / f"{name}.password"
    secret.write_text(password)
    settings = {
        "jid": jid,
        "password_file": secret,
        "server": f"{SERVER_IP}:5222",
        "ca_file": net.relay.ca,
        "unreachable_seconds": 4,
        "retry_max_seconds": 1,
    }
    return [arg for key, value in settings.items() for arg in ("--relay", f"{key}={value}")]


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homes]:
    folder = tmp_path_factory.mktemp("relay")
    try:
        with topology(folder / "relay") as net:
            units: list[RelayUnit] = []
            try:
                for i, (name, hz) in enumerate((("asha", 440.0), ("bela", 660.0))):
                    unit = RelayUnit(name.title(), folder / name, 8080, net.unit_ip(i), netns=net.home(i))
                    tone = write_tone(folder / f"{name}.wav", hz, seconds=3.0)
                    args = relay_args(net, folder, name)
                    units.append(
                        unit.start(*args, "--audio-file", str(tone), "--call", "reconnect_seconds=10")
                    )
                for unit in units:
                    unit.wait_for("relay.state", 30, state="connected")
                yield Homes(net, units[0], units[1], {"a": f"asha@{DOMAIN}", "b": f"bela@{DOMAIN}"}, folder)
            finally:
                for unit in units:
                    unit.close()
    except TopologyUnavailable as e:
        pytest.skip(str(e))


def pair(homes: Homes) -> None:
    a, b = homes.a, homes.b
    since_a, since_b = a.mark(), b.mark()
    a.send(f"pair xmpp:{homes.jids['b']}")
    code = b.wait_for("pairing.code", 15, since_b)["data"]["code"]
    a.wait_for("pair.asked", 15, since_a)
    a.send(f"code {code}")
    a.wait_for("pairing.done", 15, since_a)
    b.wait_for("pairing.done", 15, since_b)


def call(caller: RelayUnit, callee: RelayUnit, target: str) -> float:
    since_a, since_b = caller.mark(), callee.mark()
    start = time.monotonic()
    caller.send(f"call {target}")
    try:
        up = caller.wait_for("call.state", 30, since_a, state="connected")
        callee.wait_for("call.state", 30, since_b, state="connected")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{caller.events[since_a:]}\n{callee.events[since_b:]}") from e
    return float(up["t"]) - start


def hang_up(caller: RelayUnit, callee: RelayUnit) -> None:
    since_a, since_b = caller.mark(), callee.mark()
    caller.send("hangup")
    caller.wait_for("call.state", 10, since_a, state="idle")
    callee.wait_for("call.state", 10, since_b, state="idle")


def test_pair_across_homes_through_the_relay(homes: Homes) -> None:
    pair(homes)
    # Each side now reaches the other at its relay address; presence is a mutual subscription.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if homes.a.status()["relay"]["state"] == "connected":
            break
        time.sleep(0.5)


def test_call_both_ways_through_a_cone_nat_punches_a_hole(homes: Homes) -> None:
    a, b = homes.a, homes.b
    homes.net.set_symmetric(False)
    call(a, b, "Bela")
    status = a.wait_status("frames_shown", 30, 20)
    b.wait_status("frames_shown", 30, 20)
    pair_types = status["pair"]
    assert "relay" not in (pair_types["local"], pair_types["remote"]), pair_types
    assert pair_types["remote"] in ("srflx", "prflx"), pair_types
    since = b.mark()
    for emotion in ("happiness", "sadness", "surprise"):
        a.send(f"emit {emotion} 0.8")
        time.sleep(0.1)
    b.wait_for("remote.emotion", 10, since, emotion="surprise")
    assert [e["data"]["emotion"] for e in b.topics("remote.emotion", since)] == [
        "happiness",
        "sadness",
        "surprise",
    ]
    assert a.wait_status("audio_seconds_received", 1.0, 10)["audio_seconds_received"] >= 1.0
    hang_up(a, b)
    call(b, a, "Asha")
    b.wait_status("frames_shown", 30, 20)
    hang_up(b, a)


def test_a_symmetric_nat_is_crossed_through_turn(homes: Homes) -> None:
    a, b = homes.a, homes.b
    homes.net.set_symmetric(True)
    try:
        call(a, b, "Bela")
        status = a.wait_status("frames_shown", 30, 20)
        assert "relay" in (status["pair"]["local"], status["pair"]["remote"]), status["pair"]
        assert b.wait_status("audio_seconds_received", 1.0, 10)["audio_seconds_received"] >= 1.0
        hang_up(a, b)
    finally:
        homes.net.set_symmetric(False)
