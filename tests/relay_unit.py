"""One unit's call stack with a relay, as its own process (tests/test_relay.py, benchmarks/relay.py).

What ``tests/call_unit.py`` builds (capture, state, identity, speaker, call engine, web app), wired
to the relay the way ``appliance/app.py`` wires it, driven through stdin with call_unit's commands
plus ``pair ADDRESS`` (ask a unit to pair: it says a code), ``code CODE`` (type the code it said)
and ``status`` (with the relay's state and the call's selected ICE candidate pair).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from appliance import config
from appliance.audio.wav import WavSpeaker
from appliance.call import CallError
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.camera import select
from appliance.camera.capture import Capture
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.pairing.service import PairingError
from appliance.relay.service import Relay
from appliance.state import StateStore
from appliance.web.api import create_app
from appliance.web.parts import UnitParts, build_parts
from appliance.web.server import WebServer

from .call_unit import ROOT, FrameCounter, StampSource, Unit, emit


def selected_pair(engine: CallEngine) -> dict[str, str]:
    """The ICE candidate types of the call's selected pair (aioice's nominated pair), if any."""
    session = engine.flow.session
    if session is None:
        return {}
    for transceiver in session.pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        pair = connection._nominated.get(1)
        if pair is not None:
            return {
                "local": pair.local_candidate.type,
                "remote": pair.remote_candidate.type,
                "remote_host": pair.remote_candidate.host,
            }
    return {}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--source", default="pattern", help="camera: pattern, stamp or a video file")
    p.add_argument("--audio-file", type=Path, help="WAV sent as call audio (else silence)")
    p.add_argument("--call", action="append", default=[], metavar="KEY=VALUE", help="[call] overrides")
    p.add_argument("--relay", action="append", default=[], metavar="KEY=VALUE", help="[relay] settings")
    args = p.parse_args()
    camera = (
        {"source": "pattern"}
        if args.source in ("pattern", "stamp")
        else {"source": "file", "file": args.source}
    )
    call: dict[str, Any] = dict(kv.split("=", 1) for kv in args.call)
    call.update(
        {"audio_in": "wav", "audio_file": str(args.audio_file)} if args.audio_file else {"audio_in": "none"}
    )
    overrides = {
        "camera": camera,
        "call": call,
        "web": {"discovery": False, "port": args.port},
        "relay": dict(kv.split("=", 1) for kv in args.relay),
    }
    cfg = config.load(None, overrides, environ={})

    events = EventBus()
    events.subscribe(lambda e: emit(e.topic, e.message, dict(e.data)))
    defaults = {"display_name": args.name, "auto_answer": True, "share_expressions": True}
    store = StateStore(args.data_dir / "state.db", events, defaults)
    me = Identity.load_or_create(args.data_dir / "identity.key")
    relay = Relay.open(cfg.relay, me, store, events)
    size = (cfg.camera.width, cfg.camera.height, cfg.camera.fps)
    opener = (lambda: StampSource(*size)) if args.source == "stamp" else select.opener(cfg.camera)
    capture = Capture(opener, events, width=size[0], height=size[1], fps=size[2]).start()
    speaker = WavSpeaker(args.data_dir / "speaker.wav")
    frames = FrameCounter(stamped=args.source == "stamp")
    engine = CallEngine(
        cfg.call,
        me,
        peers=store.peers,
        settings=store.settings,
        capture=capture,
        events=events,
        speaker=speaker,
        on_remote_frame=frames,
        dialer=relay.dialer if relay else None,
        ice_servers=relay.ice_servers if relay else None,
    ).start()
    parts = build_parts(cfg.web, me, store, events, call=engine, client=relay.peer_client if relay else None)
    blueprints = [create_blueprint(engine), *([relay.blueprint()] if relay else [])]
    app = create_app(lambda: {"name": args.name}, parts, blueprints)
    web = WebServer(app, cfg.web.host, args.port).start()
    parts.serve_on(web.port)
    if relay:
        relay.start(engine.loop, app)
    emit("unit.ready", f"{args.name} is ready", {"unit": me.unit_id})
    try:
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "quit":
                break
            try:
                run(command, rest, engine, parts, relay, frames)
            except (CallError, PairingError) as e:
                emit("error", str(e), {"command": command})
    finally:
        if relay:
            relay.close()
        engine.close()
        web.close()
        parts.close()
        capture.close()
        speaker.close()
        store.close()
    return 0


def run(
    command: str,
    rest: list[str],
    engine: CallEngine,
    parts: UnitParts,
    relay: Relay | None,
    frames: FrameCounter,
) -> None:
    if command == "emit":
        engine.events.publish("vision.emotion", rest[0], emotion=rest[0], confidence=float(rest[1]))
    elif command == "call":
        engine.call(rest[0])
    elif command == "hangup":
        engine.hangup()
    elif command in ("pair", "code"):
        # What the pairing page does, in a thread as a web request would be.
        threading.Thread(target=pairing_step, args=(parts, command, rest[0]), daemon=True).start()
    elif command == "status":
        status = engine.status()
        pair = asyncio.run_coroutine_threadsafe(_pair(engine), engine.loop).result(5)  # the loop owns aiortc
        status.update(frames_shown=frames.count, pair=pair)
        status["relay"] = relay.status() if relay else {}
        emit("status", "", status)


async def _pair(engine: CallEngine) -> dict[str, str]:
    return selected_pair(engine)


def pairing_step(parts: UnitParts, command: str, value: str) -> None:
    try:
        if command == "pair":
            emit("pair.asked", parts.pairing.request(value), {"address": value})
        else:
            peer = parts.pairing.complete(value)
            emit("pair.completed", peer.name, {"unit": peer.unit_id, "address": peer.address})
    except PairingError as e:
        emit("error", str(e), {"command": command, "status": e.status})


class RelayUnit(Unit):
    """A :class:`~tests.call_unit.Unit` whose process is this module, in its home's namespace."""

    def start(self, *args: str) -> RelayUnit:
        command = [sys.executable, "-m", "tests.relay_unit", "--data-dir", str(self.data_dir)]
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


if __name__ == "__main__":
    sys.exit(main())
