"""One unit's call stack with a relay, as its own process (tests/test_relay.py, benchmarks/relay.py).

What ``tests/call_unit.py`` builds (capture, state, identity, speaker, call engine, web app), wired
to the relay the way ``appliance/app.py`` wires it, driven through stdin with call_unit's commands
plus ``pair ADDRESS`` (ask a unit to pair: it says a code), ``code CODE`` (type the code it said)
and ``status`` (with the relay's state and the call's selected ICE candidate pair).
"""

from __future__ import annotations

import asyncio
import sys
import threading

from appliance.call import CallError
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine
from appliance.pairing.service import PairingError
from appliance.relay.service import Relay
from appliance.web.api import create_app
from appliance.web.parts import UnitParts, build_parts
from appliance.web.server import WebServer

from .call_unit import FrameCounter, Stack, Unit, emit, serve, unit_arguments, unit_config


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
    p = unit_arguments()
    p.add_argument("--relay", action="append", default=[], metavar="KEY=VALUE", help="[relay] settings")
    args = p.parse_args()
    cfg = unit_config(args, relay=dict(kv.split("=", 1) for kv in args.relay))
    stack = Stack.open(args, cfg)
    relay = Relay.open(cfg.relay, stack.me, stack.store, stack.events)
    engine = stack.engine(cfg, relay)
    client = relay.peer_client if relay else None
    parts = build_parts(cfg.web, stack.me, stack.store, stack.events, call=engine, client=client)
    blueprints = [create_blueprint(engine), *([relay.blueprint()] if relay else [])]
    app = create_app(lambda: {"name": args.name}, parts, blueprints)
    web = WebServer(app, cfg.web.host, args.port).start()
    parts.serve_on(web.port)
    if relay:
        relay.start(engine.loop, app)
    emit("unit.ready", f"{args.name} is ready", {"unit": stack.me.unit_id})
    try:
        serve(lambda cmd, rest: run(cmd, rest, engine, parts, relay, stack.frames), CallError, PairingError)
    finally:
        if relay:
            relay.close()
        engine.close()
        web.close()
        parts.close()
        stack.close()
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

    module = "tests.relay_unit"


if __name__ == "__main__":
    sys.exit(main())
