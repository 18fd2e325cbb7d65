"""The unit as a systemd service: READY=1, watchdog pings and the spoken restart (appliance/service.py).

A real datagram socket stands in for systemd's $NOTIFY_SOCKET; the end-to-end test runs `emocall run`
with it, as systemd would, and reads what the unit tells it.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import platform
from appliance.service import LAST_STOP, ServiceManager, restarted_after_fault
from tests.conftest import appliance_config
from tests.fake_coral import edgetpu_card, fake_libedgetpu, fake_usb_devices


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def messages(sock: socket.socket, until: str, seconds: float) -> list[str]:
    """Every message received until one contains ``until`` (or the time is up)."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            break
    return got


def test_ready_and_watchdog_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    manager = ServiceManager.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert manager.watchdog_seconds == pytest.approx(0.2)
    manager.ready("Asha is ready")
    assert sock.recv(4096) == b"READY=1\nSTATUS=Asha is ready"
    manager.watchdog(lambda: True)  # within half the interval of READY: not yet
    time.sleep(0.15)
    manager.watchdog(lambda: True)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_an_unhealthy_unit_starves_the_watchdog(
    notify_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = notify_socket
    manager = ServiceManager(path, 0.02)
    time.sleep(0.02)
    manager.watchdog(lambda: False)
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    assert "systemd restarts it" in caplog.text


def test_outside_systemd_nothing_is_sent() -> None:
    manager = ServiceManager.from_environment({})
    assert manager.watchdog_seconds is None
    assert manager.notify("READY=1") is False
    manager.watchdog(lambda: pytest.fail("no health check without a watchdog"))  # type: ignore[no-any-return]


def test_a_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert ServiceManager.from_environment(env).watchdog_seconds is None


def test_an_unreachable_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert ServiceManager(str(tmp_path / "gone"), None).notify("READY=1") is False
    assert "cannot tell systemd 'READY'" in caplog.text


@pytest.mark.parametrize(
    ("result", "said"), [("watchdog", "watchdog"), ("core-dump", "core-dump"), ("success", None)]
)
def test_the_last_stop_is_read_once(tmp_path: Path, result: str, said: str | None) -> None:
    (tmp_path / LAST_STOP).write_text(result + "\n")
    assert restarted_after_fault(tmp_path) == said
    assert not (tmp_path / LAST_STOP).exists()
    assert restarted_after_fault(tmp_path) is None
    assert restarted_after_fault(None) is None  # outside systemd: no runtime directory


def test_emocall_run_tells_systemd_it_is_ready_pings_and_says_the_restart(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """`emocall run` as systemd runs it: READY=1, then WATCHDOG=1; an earlier watchdog kill is said."""
    sock, path = notify_socket
    data, runtime = tmp_path / "state", tmp_path / "run"
    data.mkdir()
    runtime.mkdir()
    # What the unit's ExecStopPost leaves after a watchdog kill, in the service's runtime directory.
    (runtime / LAST_STOP).write_text("watchdog\n")
    env = {
        **os.environ,
        "RUNTIME_DIRECTORY": str(runtime),
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "2000000",
        "EMOCALL_SPEECH__OUTPUT": "wav",
        "EMOCALL_DISPLAY__BACKEND": "off",
        "EMOCALL_WEB__DISCOVERY": "false",
        "EMOCALL_VISION__ENABLED": "false",
    }
    env.pop("WATCHDOG_PID", None)
    argv = [
        sys.executable,
        "-m",
        "appliance.cli",
        "-v",
        "run",
        "--data-dir",
        str(data),
        "--port",
        str(free_port()),
    ]
    proc = subprocess.Popen(
        [*argv, "--source", "pattern"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        got = messages(sock, "READY=1", 120)
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        assert any(m.startswith("READY=1") for m in got), got
        assert proc.poll() is None
        pings = messages(sock, "WATCHDOG=1", 5)
        assert "WATCHDOG=1" in pings
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert "unit.restarted" in out
    assert not (runtime / LAST_STOP).exists()


class WatchdogPings:
    """When each WATCHDOG=1 arrives, read in a thread of its own until :meth:`stop`."""

    def __init__(self, sock: socket.socket) -> None:
        self.times: list[float] = []
        self._sock, self._done = sock, threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self._sock.settimeout(0.2)
        while not self._done.is_set():
            try:
                message = self._sock.recv(4096)
            except TimeoutError:
                continue
            if message == b"WATCHDOG=1":
                self.times.append(time.monotonic())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def test_forget_everything_keeps_the_watchdog_fed_while_the_unit_starts_again(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Forget everything" closes every part and starts them again; a Coral that answers late (a hung
    one takes the probe's 30 s, twice) makes that take longer than systemd's watchdog waits, which
    would kill the unit halfway. systemd hears from the unit all along."""
    from appliance.app import Appliance

    watchdog = 4.0  # the unit's 30 s, scaled to a Coral that takes 6 s instead of 30
    sock, path = notify_socket
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))  # this test's own Coral lock
    monkeypatch.setenv(platform.EDGETPU_LIBRARY_ENV, str(fake_libedgetpu(tmp_path / "lib")))
    monkeypatch.setenv("FAKE_EDGETPU_HANG", "6")
    monkeypatch.setenv("FAKE_EDGETPU_BROKEN", "1")  # then it fails: the unit runs on the processor
    monkeypatch.setattr(platform, "SYS_USB", fake_usb_devices(tmp_path / "usb"))
    card = edgetpu_card(tmp_path / "models")
    speech = {"rate_wpm": 450}  # the start-up sentence and "Forgetting everything" said quickly
    cfg = appliance_config(tmp_path / "data", "Asha", vision={"model_card": str(card)}, speech=speech)
    unit = Appliance(cfg).start()
    manager = ServiceManager(path, watchdog)
    pings = WatchdogPings(sock)

    def forget_then_stop() -> None:
        unit.forget_everything()
        deadline = time.monotonic() + 120
        while not unit.events.recent("unit.forgotten") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(watchdog)  # and on a while as the new unit
        unit.stop()

    manager.ready("Asha is ready")
    ready = time.monotonic()
    threading.Thread(target=forget_then_stop, name="forget", daemon=True).start()
    try:
        unit.wait(lambda: manager.watchdog(unit.responsive))
    finally:
        stopped = time.monotonic()
        unit.close()
        pings.stop()
    assert unit.events.recent("unit.forgotten")
    assert unit.vision is not None and "Edge TPU cannot run" in unit.vision.status()["reasons"]["classifier"]
    times = [ready, *pings.times, stopped]
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    assert max(gaps) < watchdog, gaps
