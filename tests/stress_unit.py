"""A unit exactly as ``emocall run`` runs it, as its own process, for the stress tests and
``benchmarks/call_stress.py``: real signal handling, speech, display and call engine.

Run as a module it is ``emocall`` with two differences. The logging: ``appliance`` loggers at DEBUG
(call states, what is said), everything else (aiortc, aioice) at INFO, so the tests read what
happens from the log without packet traces. And the wall clock can be set off, and stepped, from
the test (:meth:`RunningUnit.set_clock`): two units on one machine share its clock, where two Pis
without a real-time clock do not. :class:`RunningUnit` starts and drives one from a test.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from appliance import cli
from appliance.call.local import ask
from appliance.identity import Identity
from appliance.state import StateStore

ROOT = Path(__file__).resolve().parents[1]
EVENT = " appliance.events: "
CLOCK_FILE = "STRESS_UNIT_CLOCK_FILE"  # seconds this process's wall clock is off by
CLOCK_READ_S = 0.2


class RunningUnit:
    """One ``emocall run`` process on this machine's address; its log lines are kept in order."""

    def __init__(self, name: str, data_dir: Path, port: int, host: str) -> None:
        self.name, self.data_dir, self.port, self.host = name, data_dir, port, host
        data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity.load_or_create(data_dir / "identity.key")
        self.clock_file = data_dir / "clock-offset"
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def pair_with(self, other: RunningUnit, *, auto_answer: bool = True) -> None:
        """What pairing leaves behind: the other unit's key pinned here, and this unit's settings."""
        store = StateStore(self.data_dir / "state.db", defaults={"display_name": self.name})
        try:
            address = f"{other.host}:{other.port}"
            store.add_peer(other.identity.unit_id, other.name, address, other.identity.public_key)
            store.update_settings({"display_name": self.name, "auto_answer": auto_answer})
        finally:
            store.close()

    def start(self, **config: str) -> RunningUnit:
        """Start it with ``SECTION__KEY=value`` config overrides; returns once it has said that it
        is ready (so what it says later belongs to what the test does)."""
        env = {
            **os.environ,
            "EMOCALL_WEB__DISCOVERY": "false",
            "EMOCALL_CAMERA__SOURCE": "pattern",
            "EMOCALL_VISION__ENABLED": "false",
            "EMOCALL_DISPLAY__BACKEND": "off",
            "EMOCALL_BUTTON__ENABLED": "false",
            "EMOCALL_SPEECH__OUTPUT": "wav",
            # Twice the unit's rate: a stop waits for the sentence being said (the start-up one
            # takes about 10 s at 160 words a minute).
            "EMOCALL_SPEECH__RATE_WPM": "320",
            "EMOCALL_CALL__AUDIO_IN": "none",
            CLOCK_FILE: str(self.clock_file),
            **{f"EMOCALL_{key.upper()}": value for key, value in config.items()},
        }
        command = [sys.executable, "-m", "tests.stress_unit", "run", "--data-dir", str(self.data_dir)]
        command += ["--port", str(self.port), "--name", self.name]
        self.proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(f"saying: {re.escape(self.name)} is ready", timeout=60)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with (self.data_dir / "unit.log").open("a") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> int:
        """The index of the first log line from ``since`` that matches ``pattern`` (a regex)."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.lines)):
                    if found.search(self.lines[i]):
                        return i
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(f"{self.name}: no {pattern!r} in {timeout} s; log:\n{tail}")
                self._cond.wait(min(remaining, 0.5))

    def wait_state(self, message: str, timeout: float, since: int = 0) -> int:
        """Wait for the ``call.state`` event with this message (what the log says)."""
        return self.wait_for(re.escape(f"{EVENT}call.state: {message}"), timeout, since)

    def since(self, index: int) -> list[str]:
        with self._cond:
            return self.lines[index:]

    def said(self, since: int = 0) -> list[str]:
        """What the unit said aloud (the announcer's log lines), in order."""
        return [line.split("saying: ", 1)[1] for line in self.since(since) if " saying: " in line]

    def ask(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return ask(self.port, path, payload)

    def call(self, other: RunningUnit) -> None:
        self.ask("/api/call", {"to": other.name})

    def counts(self) -> tuple[int, int]:
        """Threads and open file descriptors of the process now."""
        return len(os.listdir(f"/proc/{self.pid}/task")), len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"{self.name}: no VmRSS")

    def set_clock(self, offset_s: float) -> None:
        """Set the unit's wall clock ``offset_s`` from this machine's; a running unit's clock steps
        there within CLOCK_READ_S (as a Pi's does when the network's time arrives)."""
        part = self.clock_file.with_name("clock-offset.part")
        part.write_text(f"{offset_s}\n")
        part.replace(self.clock_file)  # whole: a half-written file would read as no offset
        time.sleep(2 * CLOCK_READ_S)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as systemd stops the unit; the exit status (the process is killed if it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                return -9
        return self.proc.returncode


def shift_wall_clock(path: Path) -> None:
    """``time.time`` off by the seconds written in ``path`` (absent: none), read again every
    CLOCK_READ_S. The monotonic clock, which the timers use, does not move, as on a Pi."""
    real = time.time
    offset, read_at = 0.0, -CLOCK_READ_S

    def shifted() -> float:
        nonlocal offset, read_at
        if time.monotonic() - read_at >= CLOCK_READ_S:
            read_at = time.monotonic()
            try:
                offset = float(path.read_text())
            except (OSError, ValueError):
                offset = 0.0
        return real() + offset

    time.time = shifted


if __name__ == "__main__":
    if CLOCK_FILE in os.environ:
        shift_wall_clock(Path(os.environ[CLOCK_FILE]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("appliance").setLevel(logging.DEBUG)
    sys.exit(cli.main(sys.argv[1:]))
