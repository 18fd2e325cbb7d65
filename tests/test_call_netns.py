"""Two units in two network namespaces joined by a veth pair: packet loss, a partition, kill -9.

Needs root (CI runs as root); skipped with the reason otherwise. The namespaces are deleted even
when a test fails. Traffic stays on the veth pair between the two namespaces.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .call_unit import Link, LinkUnavailable, Unit

pytestmark = pytest.mark.netns

PARTITION_SECONDS = 10


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.skip("needs root to build network namespaces (CI runs as root)")
    try:
        with Link.create(f"ec{os.getpid() % 100000}", f"10.213.{os.getpid() % 250}") as link:
            yield link
    except LinkUnavailable as e:
        pytest.skip(str(e))


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
    assert link.dropped() > 0, "nothing was dropped: the loss was not applied"


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


def test_a_hang_up_during_a_partition_is_not_undone_when_the_network_returns(
    link: Link, units: tuple[Unit, Unit]
) -> None:
    a, b = units
    since_a, since_b = a.mark(), b.mark()
    link.drop(100)
    b.wait_for("call.state", 8, since_b, state="reconnecting")
    b.send("hangup")  # the bye cannot reach Asha now
    b.wait_for("call.state", 10, since_b, state="idle")
    link.drop(0)
    a.wait_for("call.state", 10, since_a, state="ended", reason="remote hang-up")
    a.wait_for("call.state", 5, since_a, state="idle")
    assert "connected" not in [e["data"]["state"] for e in b.topics("call.state", since_b)]
