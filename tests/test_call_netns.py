"""Two units in two network namespaces joined by a veth pair: packet loss, a partition, kill -9.

Needs root (CI runs as root); skipped with the reason otherwise. The namespaces are deleted even
when a test fails. Traffic stays on the veth pair between the two namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .call_unit import Unit

pytestmark = pytest.mark.netns

PARTITION_SECONDS = 10


@dataclass
class Link:
    ns: tuple[str, str]
    dev: tuple[str, str]
    ip: tuple[str, str]
    netem: bool = True

    def drop(self, percent: int) -> None:
        """Drop this share of what each namespace sends, at random (0 stops dropping).

        netem where the kernel has it; otherwise (this machine's kernel has no netem) an nftables
        rule that drops the same share at random."""
        for ns, dev in zip(self.ns, self.dev, strict=True):
            if self.netem:
                spec = ["replace", "dev", dev, "root", "netem", "loss", f"{percent}%"]
                ip_run(
                    "netns", "exec", ns, "tc", "qdisc", *(spec if percent else ["del", "dev", dev, "root"])
                )
                continue
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "emocall_test"],
                timeout=10,
                capture_output=True,
            )
            if percent:
                rule = f"numgen random mod 100 < {percent} drop" if percent < 100 else "drop"
                rules = NFT_DROP.replace("RULE", rule)
                subprocess.run(
                    ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                    input=rules,
                    text=True,
                    check=True,
                    timeout=10,
                )


NFT_DROP = """table inet emocall_test {
  chain out {
    type filter hook output priority 0; policy accept;
    RULE
  }
}
"""


def has_netem(ns: str, dev: str) -> bool:
    probe = subprocess.run(
        ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "0%"],
        capture_output=True,
        timeout=10,
    )
    if probe.returncode == 0:
        ip_run("netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root")
    return probe.returncode == 0


def ip_run(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.skip("needs root to build network namespaces (CI runs as root)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("needs iproute2 (ip, tc): apt-get install iproute2")
    tag = f"ec{os.getpid() % 100000}"
    subnet = f"10.213.{os.getpid() % 250}"
    link = Link((f"{tag}a", f"{tag}b"), (f"{tag}va", f"{tag}vb"), (f"{subnet}.1", f"{subnet}.2"))
    try:
        for ns in link.ns:
            ip_run("netns", "add", ns)
        ip_run("link", "add", link.dev[0], "type", "veth", "peer", "name", link.dev[1])
        for ns, dev, address in zip(link.ns, link.dev, link.ip, strict=True):
            ip_run("link", "set", dev, "netns", ns)
            ip_run("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            ip_run("-n", ns, "link", "set", dev, "up")
            ip_run("-n", ns, "link", "set", "lo", "up")
        link.netem = has_netem(link.ns[0], link.dev[0])
        if not link.netem and shutil.which("nft") is None:
            pytest.skip("the kernel has no netem and nft is missing: apt-get install nftables")
        yield link
    finally:
        for ns in link.ns:
            subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)


def connected_units(link: Link, tmp_path: Path, *args: str) -> tuple[Unit, Unit]:
    a = Unit("Asha", tmp_path / "a", 8080, link.ip[0], netns=link.ns[0])
    b = Unit("Bela", tmp_path / "b", 8080, link.ip[1], netns=link.ns[1])
    a.pair_with(b)
    b.pair_with(a)
    a.start(*args)
    b.start(*args)
    a.send("call Bela")
    a.wait_for("call.state", 20, state="connected")
    b.wait_for("call.state", 20, state="connected")
    return a, b


@pytest.fixture
def units(link: Link, tmp_path: Path) -> Iterator[tuple[Unit, Unit]]:
    pair: list[Unit] = []
    try:
        pair += connected_units(link, tmp_path, "--call", "reconnect_seconds=20")
        yield pair[0], pair[1]
    finally:
        for unit in pair:
            unit.close()


def test_emotion_events_arrive_in_order_through_10_percent_loss(link: Link, units: tuple[Unit, Unit]) -> None:
    a, b = units
    link.drop(10)
    sequence = ["happiness", "surprise", "neutral", "sadness", "anger", "fear", "disgust", "contempt"] * 3
    since = b.mark()
    for emotion in sequence:
        a.send(f"emit {emotion} 0.7")
        time.sleep(0.05)
    b.wait_for("remote.emotion", 20, since, emotion="contempt")
    deadline = time.monotonic() + 20
    while len(b.topics("remote.emotion", since)) < len(sequence) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e["data"]["emotion"] for e in b.topics("remote.emotion", since)] == sequence
    assert a.status()["state"] == "connected"


def test_a_partition_of_10_seconds_recovers_by_itself(link: Link, units: tuple[Unit, Unit]) -> None:
    a, b = units
    since_a, since_b = a.mark(), b.mark()
    link.drop(100)
    cut = time.monotonic()
    lost = a.wait_for("call.state", 8, since_a, state="reconnecting")
    b.wait_for("call.state", 8, since_b, state="reconnecting")
    assert lost["t"] - cut <= 5.0
    time.sleep(max(0.0, cut + PARTITION_SECONDS - time.monotonic()))
    link.drop(0)
    back = time.monotonic()
    up = a.wait_for("call.state", 10, since_a, state="connected")
    b.wait_for("call.state", 10, since_b, state="connected")
    assert up["t"] - back <= 5.0, f"the call took {up['t'] - back:.1f} s to come back"
    since = b.mark()
    a.send("emit happiness 0.9")
    b.wait_for("remote.emotion", 10, since, emotion="happiness")


def test_kill_9_of_one_unit_is_detected_within_5_seconds(link: Link, tmp_path: Path) -> None:
    a, b = connected_units(link, tmp_path, "--call", "reconnect_seconds=3")
    try:
        since = a.mark()
        assert b.proc is not None
        b.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        lost = a.wait_for("call.state", 8, since, state="reconnecting")
        assert lost["t"] - killed <= 5.0, f"detected after {lost['t'] - killed:.1f} s"
        a.wait_for("call.state", 10, since, state="lost")
        a.wait_for("call.state", 5, since, state="idle")
        assert a.status()["sessions_open"] == 0
    finally:
        a.close()
        b.close()
