"""`emocall demo`: two units calling each other on this machine, each its own `emocall run` process.

Unit A (Asha) and unit B (Bela) get their own data directory, identity and state store, and are
paired the way people do it (``demo_units.pair``): B shows and says a code, the demo reads it off
B's screen and types it on A's page. B answers by itself. They listen on this machine's own network
address (aiortc never offers 127.0.0.1), A calls B through its local API, and what each unit says is
printed as it happens. Each unit sends a spoken greeting (espeak-ng) as its call audio;
the speakers and displays write to files in the data directories, named at the end.

Both units share their expressions (a real unit asks its owner first) and log their events at
DEBUG for this demo only: the demo prints them and keeps in ``unit.log`` only what a unit logs by
default, which names no person and no expression.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path

from appliance.call.demo_units import DemoError, DemoUnit, pair, stop_all
from appliance.call.lan import LanError, free_port, host_address
from appliance.call.local import LocalUnitError, ask
from appliance.speech import SpeechError
from appliance.speech.espeak import Espeak


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
        print("Asha's owner pairs Asha with Bela:")
        pair(a, b, host)
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
        stop_all([a, b])
    for unit in (a, b):
        files = ", ".join(str(unit.data_dir / f) for f in ("speaker.wav", "display-in-call.png", "unit.log"))
        print(f"{unit.name}: {files}")
    return 0
