"""Units as `emocall run` processes on this machine, and the owner's browser that pairs them.

Used by `emocall demo` and the benchmarks (``benchmarks/soak.py``, ``benchmarks/memory.py``). Each
unit gets its own data directory, port, camera source and call audio; what it announces (its events,
logged at DEBUG for this purpose only) is printed as it happens, the rest goes to ``unit.log``.
Pairing goes the way people do it: the owner's browser logs in with the code the unit shows, asks
unit A to pair with unit B, reads the code B shows and says (the off-screen display's text,
``display.txt``, where a person would see it) and types it on A's page.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_SECONDS = 90.0
CODE_SECONDS = 20.0
CODE_LINE = re.compile(r"^(\d{6})$", re.MULTILINE)


def _say(line: str) -> None:
    # One write per line: the two units' relay threads print at once.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class DemoError(Exception):
    """The demo units cannot run or pair here; the message says why."""


@dataclass
class DemoUnit:
    name: str
    source: str
    port: int
    data_dir: Path
    # Flags before `run`: the events at DEBUG, for the printout.
    flags: Sequence[str] = ("--debug", "appliance.events")
    # Another checkout's `appliance` package to run instead of this one (benchmarks' baseline).
    tree: Path | None = None
    on_line: Callable[[str, str], None] = field(default=lambda name, text: _say(f"[{name}] {text}"))
    proc: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, call_audio: Path, env: dict[str, str] | None = None) -> None:
        environ = {
            **os.environ,
            "EMOCALL_WEB__DISCOVERY": "false",
            "EMOCALL_CALL__AUDIO_IN": "wav",
            "EMOCALL_CALL__AUDIO_FILE": str(call_audio),
            "EMOCALL_SPEECH__OUTPUT": "wav",
            "EMOCALL_DISPLAY__BACKEND": "offscreen",
            # Two units on one machine: the demo calls for them, and one GPIO pin cannot be both's.
            "EMOCALL_BUTTON__ENABLED": "false",
            **(env or {}),
        }
        if self.tree is not None:
            environ["PYTHONPATH"] = str(self.tree)
        command = [
            sys.executable,
            "-m",
            "appliance.cli",
            *self.flags,
            "run",
            "--data-dir",
            str(self.data_dir),
        ]
        command += ["--port", str(self.port), "--source", self.source, "--name", self.name]
        self.proc = subprocess.Popen(command, env=environ, cwd=self.tree, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._relay, name=f"{self.name}-log", daemon=True).start()

    def _relay(self) -> None:
        """Pass on what the unit announces; keep the rest, as a unit logs it, in unit.log."""
        assert self.proc is not None and self.proc.stderr is not None
        path = self.data_dir / "unit.log"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as log:
            for line in self.proc.stderr:
                if " appliance.events: " in line:
                    self.on_line(self.name, line.split(" appliance.events: ", 1)[1].rstrip())
                if " DEBUG appliance.events: " not in line:
                    log.write(line)
                    log.flush()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DemoError(f"{self.name} stopped at start-up; see {self.data_dir / 'unit.log'}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/api/status", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise DemoError(f"{self.name} did not start within {READY_SECONDS:.0f} s")

    def shown_code(self, before: str = "") -> str:
        """The six digits the unit shows (and says) once they differ from ``before``."""
        screen = self.data_dir / "display.txt"
        deadline = time.monotonic() + CODE_SECONDS
        while time.monotonic() < deadline:
            found = CODE_LINE.search(screen.read_text() if screen.exists() else "")
            if found and found.group(1) != before:
                return found.group(1)
            time.sleep(0.1)
        raise DemoError(f"{self.name} showed no code within {CODE_SECONDS:.0f} s (see {screen})")


def stop_all(units: Sequence[DemoUnit]) -> None:
    """SIGTERM every unit, then wait for each: each finishes the sentence it is saying, and they
    do so at once, not one after the other."""
    running = [u.proc for u in units if u.proc is not None and u.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class OwnerBrowser:
    """The owner's browser on one unit's page: a cookie, the CSRF token, JSON requests."""

    def __init__(self, unit: DemoUnit) -> None:
        self.unit = unit
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self._csrf = ""

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-CSRF-Token": self._csrf}
        req = urllib.request.Request(f"http://{self.unit.address}{path}", data, headers, method=method)
        try:
            with self._opener.open(req, timeout=15) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise DemoError(f"{self.unit.name} refused {method} {path}: {e.code} {e.read()[:200]!r}") from e
        except OSError as e:
            raise DemoError(f"{self.unit.name} does not answer {method} {path}: {e}") from e
        self._csrf = str(answer.get("csrf", self._csrf))
        return answer

    def log_in(self, before: str = "") -> str:
        """Ask for the owner code, read it off the unit's screen and type it; returns the code."""
        self.request("GET", "/api/owner")
        self.request("POST", "/api/owner/code", {})
        code = self.unit.shown_code(before)
        self.request("POST", "/api/owner/login", {"code": code})
        return code


def pair(a: DemoUnit, b: DemoUnit, host: str, say: Callable[[str], None] = print) -> None:
    """Pair A with B as their owner would; B answers calls by itself, both share expressions."""
    browser_b = OwnerBrowser(b)
    shown = browser_b.log_in()
    # The owner's answers to "answer by itself?" and "share my expressions?": yes, for the demo.
    browser_b.request("PATCH", "/api/settings", {"auto_answer": True, "share_expressions": True})
    browser_a = OwnerBrowser(a)
    browser_a.log_in()
    browser_a.request("PATCH", "/api/settings", {"auto_answer": False, "share_expressions": True})
    browser_a.request("POST", "/api/pair", {"address": f"{host}:{b.port}"})
    code = b.shown_code(before=shown)
    say(f"{b.name} shows and says the pairing code {' '.join(code)}; typed on {a.name}'s page")
    answer = browser_a.request("POST", "/api/pair/code", {"code": code})
    if not answer.get("paired"):
        raise DemoError(f"{a.name} did not accept {b.name}'s code: {answer}")
    say(f"{a.name} accepted the code: paired with {answer.get('name')}")
