"""`emocall demo`: two units calling each other on this machine, each its own `emocall run` process.

Unit A (Asha) and unit B (Bela) get their own data directory, identity and state store; each pins
the other's key in its store (what pairing does), B answers by itself. They listen on this machine's
own network address (aiortc never offers 127.0.0.1), A calls B through its local API, and what each
unit says is printed as it happens. Each unit sends a spoken greeting (espeak-ng) as its call audio;
the speakers and displays write to files in the data directories, named at the end.

Both units share their expressions (a real unit asks its owner first) and log their events at
DEBUG for this demo only: the demo prints them and keeps in ``unit.log`` only what a unit logs by
default, which names no person and no expression.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path

from appliance.call.lan import LanError, free_port, host_address
from appliance.call.local import LocalUnitError, ask
from appliance.identity import Identity
from appliance.speech import SpeechError
from appliance.speech.espeak import Espeak
from appliance.state import StateStore

READY_SECONDS = 90.0


class DemoError(Exception):
    """The demo cannot run here; the message says why."""


@dataclass
class DemoUnit:
    name: str
    source: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity.load_or_create(self.data_dir / "identity.key")

    def pin(self, other: DemoUnit, host: str, auto_answer: bool) -> None:
        store = StateStore(self.data_dir / "state.db", defaults={"display_name": self.name})
        try:
            store.add_peer(
                other.identity.unit_id, other.name, f"{host}:{other.port}", other.identity.public_key
            )
            # The owner's answer to "share my expressions?": yes, for the demo.
            store.update_settings(
                {"display_name": self.name, "auto_answer": auto_answer, "share_expressions": True}
            )
        finally:
            store.close()

    def start(self, greeting: Path) -> None:
        env = {
            **os.environ,
            "EMOCALL_WEB__DISCOVERY": "false",
            "EMOCALL_CALL__AUDIO_IN": "wav",
            "EMOCALL_CALL__AUDIO_FILE": str(greeting),
            "EMOCALL_SPEECH__OUTPUT": "wav",
            "EMOCALL_DISPLAY__BACKEND": "offscreen",
        }
        command = [sys.executable, "-m", "appliance.cli", "--debug", "appliance.events", "run"]
        command += ["--data-dir", str(self.data_dir)]
        command += ["--port", str(self.port), "--source", self.source, "--name", self.name]
        self.proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        """Print what the unit announces (its events); keep the rest, as a unit logs it, in unit.log."""
        assert self.proc is not None and self.proc.stderr is not None
        path = self.data_dir / "unit.log"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as log:
            for line in self.proc.stderr:
                if " appliance.events: " in line:
                    print(f"[{self.name}] {line.split(' appliance.events: ', 1)[1].rstrip()}", flush=True)
                if " DEBUG appliance.events: " not in line:
                    log.write(line)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DemoError(f"{self.name} stopped at start-up; see {self.data_dir / 'unit.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise DemoError(f"{self.name} did not start within {READY_SECONDS:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def write_greeting(path: Path, text: str) -> Path:
    try:
        pcm, rate = Espeak().synthesize(text)
    except SpeechError as e:
        raise DemoError(f"cannot make the call audio: {e}") from e
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def report_call(unit: DemoUnit, other: DemoUnit) -> None:
    """Say what has arrived so far, and keep the screen as it is now."""
    call = ask(unit.port, "/api/call")
    print(
        f"{unit.name} is {call['state']}: {call['frames_received']} frames and "
        f"{call['audio_seconds_received']} s of sound from {other.name} so far, "
        f"{call['emotions_received']} expressions"
    )
    screen = unit.data_dir / "display.png"
    if screen.exists():
        shutil.copyfile(screen, unit.data_dir / "display-in-call.png")


def run(source_a: str, source_b: str, seconds: float, base: Path | None) -> int:
    """Run the demo; returns the exit status."""
    os.umask(0o077)  # what the units and the demo write is for this user alone, as on a unit
    base = base or Path(tempfile.mkdtemp(prefix="emocall-demo-"))
    try:
        host = host_address()
        a = DemoUnit("Asha", source_a, free_port(), base / "asha")
        b = DemoUnit("Bela", source_b, free_port(), base / "bela")
        a.pin(b, host, auto_answer=False)
        b.pin(a, host, auto_answer=True)
        greetings = [write_greeting(base / f"{u.name}.wav", f"Hello, this is {u.name}.") for u in (a, b)]
    except (DemoError, LanError) as e:
        print(f"emocall demo: {e}", file=sys.stderr)
        return 1
    print(f"Two units on {host}: Asha on port {a.port} ({source_a}), Bela on port {b.port} ({source_b})")
    try:
        for unit, greeting in zip((a, b), greetings, strict=True):
            unit.start(greeting)
        for unit in (a, b):
            unit.wait_ready()
        print("Asha calls Bela (Bela answers by itself):")
        ask(a.port, "/api/call", {"to": "Bela"})
        time.sleep(seconds / 2)
        for unit, other in ((a, b), (b, a)):
            report_call(unit, other)
        time.sleep(seconds / 2)
        print("Asha hangs up:")
        ask(a.port, "/api/hangup", {})
        time.sleep(2)
    except (DemoError, LocalUnitError) as e:
        print(f"emocall demo: {e}", file=sys.stderr)
        return 1
    finally:
        for unit in (a, b):
            unit.stop()
    for unit in (a, b):
        files = ", ".join(str(unit.data_dir / f) for f in ("speaker.wav", "display-in-call.png", "unit.log"))
        print(f"{unit.name}: {files}")
    return 0
