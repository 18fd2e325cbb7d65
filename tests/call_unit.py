"""One unit's call stack as its own process, for the two-unit tests and the benchmark.

It builds what ``emocall run`` builds for calls (capture, state store, identity, speaker, call
engine, the call blueprint on a web server) and is driven through stdin, one command a line:
``emit EMOTION CONFIDENCE``, ``call TARGET``, ``hangup``, ``status``, ``quit``. Every event on its bus
is printed to stdout as one JSON line (``{"topic", "message", "data", "t"}``), status replies too.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pytest

from appliance import config
from appliance.audio.wav import WavSpeaker
from appliance.call import CallError, lan
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine, tune_malloc
from appliance.call.lan import free_port
from appliance.camera import Frame, select
from appliance.camera.capture import Capture
from appliance.camera.pattern import PatternSource
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.state import StateStore
from appliance.web.api import create_app
from appliance.web.parts import build_parts
from appliance.web.server import WebServer

if TYPE_CHECKING:
    from appliance.relay.service import Relay

# What the two-unit tests (calls, button, speech) and benchmarks/call_cpu.py use from here.
__all__ = [
    "Link",
    "LinkUnavailable",
    "StampSource",
    "Unit",
    "free_port",
    "host_address",
    "paired_units",
    "write_tone",
]

ROOT = Path(__file__).resolve().parents[1]
_print_lock = threading.Lock()


def emit(topic: str, message: str, data: Any) -> None:
    line = json.dumps({"topic": topic, "message": message, "data": data, "t": time.monotonic()}, default=str)
    with _print_lock:
        print(line, flush=True)


STAMP_BITS, STAMP_BLOCK = 24, 26  # 24 blocks of 26x26 pixels across the top of a 640-wide frame


class StampSource:
    """The moving pattern with its capture time (ms, CLOCK_MONOTONIC, shared by every process on the
    machine) drawn across the top as black and white blocks that survive VP8: for frame latency."""

    name = "stamp"

    def __init__(self, width: int, height: int, fps: float) -> None:
        self._pattern = PatternSource(width, height, fps, text="latency")

    def read(self) -> Frame:
        frame = self._pattern.read()
        image = frame.image.copy()
        stamp = int(time.monotonic() * 1000) % (1 << STAMP_BITS)
        for bit in range(STAMP_BITS):
            image[:STAMP_BLOCK, bit * STAMP_BLOCK : (bit + 1) * STAMP_BLOCK] = 255 * ((stamp >> bit) & 1)
        return replace(frame, image=image)

    def close(self) -> None:
        pass


def frame_age_ms(image: np.ndarray) -> int:
    """Milliseconds since a :class:`StampSource` frame was captured."""
    centre = image[STAMP_BLOCK // 2 - 4 : STAMP_BLOCK // 2 + 4]
    stamp = 0
    for bit in range(STAMP_BITS):
        x = bit * STAMP_BLOCK + STAMP_BLOCK // 2
        stamp |= int(centre[:, x - 4 : x + 4].mean() > 128) << bit
    return (int(time.monotonic() * 1000) - stamp) % (1 << STAMP_BITS)


class FrameCounter:
    """The display's place: counts the remote frames and, for stamped video, their latency."""

    def __init__(self, stamped: bool) -> None:
        self.count = 0
        self.stamped = stamped
        self.ages: list[int] = []

    def __call__(self, image: np.ndarray) -> None:
        self.count += 1
        if self.stamped:
            self.ages.append(frame_age_ms(image))

    def latency(self) -> dict[str, float]:
        if not self.ages:
            return {}
        ages = np.array(self.ages[-300:])
        return {"p50_ms": float(np.percentile(ages, 50)), "p90_ms": float(np.percentile(ages, 90))}


def unit_arguments() -> argparse.ArgumentParser:
    """The command line every unit process here takes (relay_unit adds its own)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="pattern", help="camera: pattern, stamp (for latency) or a video file")
    p.add_argument("--audio-file", type=Path, help="WAV sent as call audio (else silence)")
    p.add_argument("--call", action="append", default=[], metavar="KEY=VALUE", help="[call] overrides")
    return p


def unit_config(args: argparse.Namespace, **sections: dict[str, Any]) -> config.Config:
    """The unit's config from its command line, with more ``sections`` (relay_unit's ``[relay]``)."""
    camera = (
        {"source": "pattern"}
        if args.source in ("pattern", "stamp")
        else {"source": "file", "file": args.source}
    )
    call: dict[str, Any] = dict(kv.split("=", 1) for kv in args.call)
    call.update(
        {"audio_in": "wav", "audio_file": str(args.audio_file)} if args.audio_file else {"audio_in": "none"}
    )
    web = {"discovery": False, "port": args.port}
    return config.load(None, {"camera": camera, "call": call, "web": web, **sections}, environ={})


@dataclass
class Stack:
    """What every unit process here builds before its call engine, in ``emocall run``'s order."""

    events: EventBus
    store: StateStore
    me: Identity
    capture: Capture
    speaker: WavSpeaker
    frames: FrameCounter

    @classmethod
    def open(cls, args: argparse.Namespace, cfg: config.Config) -> Stack:
        tune_malloc()  # as Appliance.start does, before any thread
        events = EventBus()
        events.subscribe(lambda e: emit(e.topic, e.message, dict(e.data)))
        # The owner's answer to "share my expressions?" is yes here: the tests send them.
        defaults = {"display_name": args.name, "auto_answer": True, "share_expressions": True}
        store = StateStore(args.data_dir / "state.db", events, defaults)
        me = Identity.load_or_create(args.data_dir / "identity.key")
        size = (cfg.camera.width, cfg.camera.height, cfg.camera.fps)
        opener = (lambda: StampSource(*size)) if args.source == "stamp" else select.opener(cfg.camera)
        capture = Capture(opener, events, width=size[0], height=size[1], fps=size[2]).start()
        speaker = WavSpeaker(args.data_dir / "speaker.wav")
        return cls(events, store, me, capture, speaker, FrameCounter(stamped=args.source == "stamp"))

    def engine(self, cfg: config.Config, relay: Relay | None = None) -> CallEngine:
        """The started call engine, signalling through ``relay`` when there is one (as Appliance)."""
        return CallEngine(
            cfg.call,
            self.me,
            peers=self.store.peers,
            settings=self.store.settings,
            capture=self.capture,
            events=self.events,
            speaker=self.speaker,
            on_remote_frame=self.frames,
            dialer=relay.dialer if relay else None,
            ice_servers=relay.ice_servers if relay else None,
        ).start()

    def close(self) -> None:
        self.capture.close()
        self.speaker.close()
        self.store.close()


def main() -> int:
    args = unit_arguments().parse_args()
    cfg = unit_config(args)
    stack = Stack.open(args, cfg)
    engine = stack.engine(cfg)
    parts = build_parts(cfg.web, stack.me, stack.store, stack.events, call=engine)
    app = create_app(lambda: {"name": args.name}, parts, [create_blueprint(engine)])
    web = WebServer(app, cfg.web.host, args.port).start()
    emit("unit.ready", f"{args.name} is ready", {"unit": stack.me.unit_id})
    try:
        serve(lambda command, rest: run(command, rest, engine, stack.store, stack.frames), CallError)
    finally:
        engine.close()
        web.close()
        parts.close()
        stack.close()
    return 0


def serve(handle: Callable[[str, list[str]], None], *errors: type[Exception]) -> None:
    """The test's commands, a line each on stdin, until "quit"; ``errors`` are told as events."""
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "quit":
            return
        try:
            handle(command, rest)
        except errors as e:
            emit("error", str(e), {"command": command})


def run(command: str, rest: list[str], engine: CallEngine, store: StateStore, frames: FrameCounter) -> None:
    if command == "emit":
        engine.events.publish("vision.emotion", rest[0], emotion=rest[0], confidence=float(rest[1]))
    elif command == "call":
        engine.call(rest[0])
    elif command == "hangup":
        engine.hangup()
    elif command == "status":
        emit("status", "", {**engine.status(), "frames_shown": frames.count, "latency": frames.latency()})
    elif command == "sharing":
        store.update_settings({"share_expressions": rest[0] == "on"})


def host_address() -> str:
    """This machine's address on its default route; skips the test where there is only loopback."""
    try:
        return lan.host_address()
    except lan.LanError as e:
        pytest.skip(str(e))


def paired_units(folder: Path) -> tuple[Unit, Unit]:
    """Asha and Bela, not yet started, on this machine's address, each paired with the other."""
    host = host_address()
    a = Unit("Asha", folder / "a", free_port(), host)
    b = Unit("Bela", folder / "b", free_port(), host)
    a.pair_with(b)
    b.pair_with(a)
    return a, b


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

    module = "tests.call_unit"  # what the process runs; relay_unit's RelayUnit runs its own

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

    def start(self, *args: str) -> Self:
        command = [sys.executable, "-m", self.module, "--data-dir", str(self.data_dir)]
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


class LinkUnavailable(Exception):
    """Network namespaces or packet dropping cannot be set up here (the message says why)."""


NFT_DROP = """table inet emocall_test {
  chain out {
    type filter hook output priority 0; policy accept;
    RULE
  }
}
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


def _out(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True, text=True).stdout


@dataclass
class Link:
    """Two network namespaces joined by a veth pair; ``drop`` loses packets between them."""

    ns: tuple[str, str]
    dev: tuple[str, str]
    ip: tuple[str, str]
    netem: bool = True

    @classmethod
    @contextmanager
    def create(cls, tag: str, subnet: str) -> Iterator[Link]:
        """Build the pair (as root); both namespaces are deleted on the way out, whatever happened."""
        if shutil.which("ip") is None or shutil.which("tc") is None:
            raise LinkUnavailable("needs iproute2 (ip, tc): apt-get install iproute2")
        link = cls((f"{tag}a", f"{tag}b"), (f"{tag}va", f"{tag}vb"), (f"{subnet}.1", f"{subnet}.2"))
        try:
            for ns in link.ns:
                _ip("netns", "add", ns)
            _ip("link", "add", link.dev[0], "type", "veth", "peer", "name", link.dev[1])
            for ns, dev, address in zip(link.ns, link.dev, link.ip, strict=True):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            link.netem = link._has_netem()
            if not link.netem and shutil.which("nft") is None:
                raise LinkUnavailable("the kernel has no netem and nft is missing: apt-get install nftables")
            yield link
        finally:
            for ns in link.ns:
                subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)

    def _has_netem(self) -> bool:
        probe = ["ip", "netns", "exec", self.ns[0], "tc", "qdisc", "add", "dev", self.dev[0], "root"]
        if subprocess.run([*probe, "netem", "loss", "0%"], capture_output=True, timeout=10).returncode:
            return False
        _ip("netns", "exec", self.ns[0], "tc", "qdisc", "del", "dev", self.dev[0], "root")
        return True

    def drop(self, percent: int) -> None:
        """Drop this share of what each namespace sends, at random (0 stops dropping).

        netem where the kernel has it; otherwise (this machine's kernel has no netem) an nftables
        rule that drops the same share at random."""
        for ns, dev in zip(self.ns, self.dev, strict=True):
            if self.netem:
                spec = ["replace", "dev", dev, "root", "netem", "loss", f"{percent}%"]
                _ip("netns", "exec", ns, "tc", "qdisc", *(spec if percent else ["del", "dev", dev, "root"]))
                continue
            in_ns = ["ip", "netns", "exec", ns, "nft"]
            subprocess.run(
                [*in_ns, "delete", "table", "inet", "emocall_test"], timeout=10, capture_output=True
            )
            if percent:
                rule = f"numgen random mod 100 < {percent} counter drop" if percent < 100 else "counter drop"
                rules = NFT_DROP.replace("RULE", rule)
                subprocess.run([*in_ns, "-f", "-"], input=rules, text=True, check=True, timeout=10)

    def dropped(self) -> int:
        """Packets dropped so far by :meth:`drop`, both namespaces together."""
        total = 0
        for ns, dev in zip(self.ns, self.dev, strict=True):
            if self.netem:
                out = _out("netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev)
                total += sum(int(m) for m in re.findall(r"dropped (\d+)", out))
            else:
                out = _out("netns", "exec", ns, "nft", "list", "table", "inet", "emocall_test")
                total += sum(int(m) for m in re.findall(r"counter packets (\d+)", out))
        return total


if __name__ == "__main__":
    sys.exit(main())
