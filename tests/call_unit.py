"""One unit's call stack as its own process, for the two-unit tests and the benchmark.

It builds what ``emocall run`` builds for calls (capture, state store, identity, speaker, call
engine, the call blueprint on a web server) and is driven through stdin, one command a line:
``emit EMOTION CONFIDENCE``, ``call TARGET``, ``hangup``, ``status``, ``quit``. Every event on its bus
is printed to stdout as one JSON line (``{"topic", "message", "data", "t"}``), status replies too.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance import config
from appliance.audio.wav import WavSpeaker
from appliance.call import CallError
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.camera import select
from appliance.camera.capture import Capture
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.state import StateStore
from appliance.web.api import create_app
from appliance.web.parts import build_parts
from appliance.web.server import WebServer

ROOT = Path(__file__).resolve().parents[1]
_print_lock = threading.Lock()


def emit(topic: str, message: str, data: Any) -> None:
    line = json.dumps({"topic": topic, "message": message, "data": data, "t": time.monotonic()}, default=str)
    with _print_lock:
        print(line, flush=True)


class FrameCounter:
    """The display's place: counts the remote frames and keeps the newest one's mean colour."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: list[float] = []

    def __call__(self, image: np.ndarray) -> None:
        self.count += 1
        if self.count % 15 == 1:
            self.mean = [round(float(v), 1) for v in image.reshape(-1, 3).mean(axis=0)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="pattern", help="camera: pattern or a video file")
    p.add_argument("--audio-file", type=Path, help="WAV sent as call audio (else silence)")
    p.add_argument("--call", action="append", default=[], metavar="KEY=VALUE", help="[call] overrides")
    args = p.parse_args()
    camera = {"source": "pattern"} if args.source == "pattern" else {"source": "file", "file": args.source}
    call: dict[str, Any] = dict(kv.split("=", 1) for kv in args.call)
    call.update(
        {"audio_in": "wav", "audio_file": str(args.audio_file)} if args.audio_file else {"audio_in": "none"}
    )
    web = {"discovery": False, "port": args.port}
    cfg = config.load(None, {"camera": camera, "call": call, "web": web}, environ={})

    events = EventBus()
    events.subscribe(lambda e: emit(e.topic, e.message, dict(e.data)))
    store = StateStore(args.data_dir / "state.db", events, {"display_name": args.name, "auto_answer": True})
    me = Identity.load_or_create(args.data_dir / "identity.key")
    capture = Capture(
        select.opener(cfg.camera), events, width=cfg.camera.width, height=cfg.camera.height
    ).start()
    speaker = WavSpeaker(args.data_dir / "speaker.wav")
    frames = FrameCounter()
    engine = CallEngine(
        cfg.call,
        me,
        peers=store.peers,
        settings=store.settings,
        capture=capture,
        events=events,
        speaker=speaker,
        on_remote_frame=frames,
    ).start()
    parts = build_parts(cfg.web, me, store, events, call=engine)
    app = create_app(lambda: {"name": args.name}, parts, [create_blueprint(engine)])
    web = WebServer(app, cfg.web.host, args.port).start()
    emit("unit.ready", f"{args.name} is ready", {"unit": me.unit_id})
    try:
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "quit":
                break
            try:
                run(command, rest, engine, store, frames)
            except CallError as e:
                emit("error", str(e), {})
    finally:
        engine.close()
        web.close()
        parts.close()
        capture.close()
        speaker.close()
        store.close()
    return 0


def run(command: str, rest: list[str], engine: CallEngine, store: StateStore, frames: FrameCounter) -> None:
    if command == "emit":
        engine.events.publish("vision.emotion", rest[0], emotion=rest[0], confidence=float(rest[1]))
    elif command == "call":
        engine.call(rest[0])
    elif command == "hangup":
        engine.hangup()
    elif command == "status":
        emit("status", "", {**engine.status(), "frames_shown": frames.count, "frame_mean": frames.mean})
    elif command == "sharing":
        store.update_settings({"share_expressions": rest[0] == "on"})


if __name__ == "__main__":
    sys.exit(main())


def host_address() -> str:
    """This machine's address on its default route (aiortc never offers 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = str(s.getsockname()[0])
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("no network interface besides loopback: aiortc needs one for host candidates")
    return address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def write_tone(path: Path, hz: float, seconds: float = 2.0, rate: int = 48000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


class Unit:
    """Drives one unit process from a test: commands in, events out (kept in order)."""

    def __init__(self, name: str, data_dir: Path, port: int, host: str, netns: str | None = None) -> None:
        self.name, self.data_dir, self.port, self.host, self.netns = name, data_dir, port, host, netns
        data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity.load_or_create(data_dir / "identity.key")
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pair_with(self, other: Unit) -> None:
        store = StateStore(self.data_dir / "state.db")
        try:
            store.add_peer(other.identity.unit_id, other.name, other.address, other.identity.public_key)
        finally:
            store.close()

    def start(self, *args: str) -> Unit:
        command = [sys.executable, "-m", "tests.call_unit", "--data-dir", str(self.data_dir)]
        command += ["--name", self.name, "--port", str(self.port), *args]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        with (self.data_dir / "unit.log").open("w") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
            )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("unit.ready", timeout=30)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait_for(self, topic: str, timeout: float, since: int = 0, **data: Any) -> dict[str, Any]:
        """The first event from index ``since`` with this topic and data; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event["topic"] == topic and all(event["data"].get(k) == v for k, v in data.items()):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise AssertionError(f"{self.name}: no {topic} {data} in {timeout} s; log:\n{self.log()}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def status(self) -> dict[str, Any]:
        since = self.mark()
        self.send("status")
        return self.wait_for("status", 10, since)["data"]

    def wait_status(self, key: str, at_least: float, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (status := self.status())[key] < at_least:
            assert time.monotonic() < deadline, f"{self.name}: {key} stayed below {at_least}: {status}"
            time.sleep(0.3)
        return status

    def topics(self, prefix: str, since: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events[since:] if e["topic"].startswith(prefix)]

    def log(self) -> str:
        return (self.data_dir / "unit.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.send("quit")
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=5)
