"""The call's HTTP endpoints, a Flask blueprint on the unit's local API.

``POST /api/call/signal`` is unit-to-unit: signed by the calling unit, verified against the key
pinned at pairing, answered with a signed reply. Flask hands the message to the engine's loop and
waits for the reply. ``/api/call`` (GET status, POST ``{"to": NAME|ADDRESS}``), ``/api/hangup`` and
``/api/call/answer`` are for this unit's own command line and scripts and
answer only requests from the unit itself (loopback).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from appliance import identity
from appliance.call import CallError
from appliance.call.engine import CallEngine
from appliance.call.signaling import SIGNAL_PATH, SignallingError, parse_signal
from appliance.identity import RequestVerifier, TrustError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1")
REPLY_MARGIN_SECONDS = 15.0


def _local_only(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if request.remote_addr not in LOOPBACK:
            return jsonify({"error": "only this unit's own command line may do this"}), 403
        return view(*args, **kwargs)

    return wrapper


def create_blueprint(engine: CallEngine, verifier: RequestVerifier) -> Blueprint:
    bp = Blueprint("call", __name__)

    @bp.post(SIGNAL_PATH)
    def signal() -> ResponseReturnValue:
        body = request.get_data()
        try:
            unit = verifier.verify(dict(request.headers), "POST", SIGNAL_PATH, body)
        except TrustError as e:
            log.warning("refused a signalling request from %s: %s", request.remote_addr, e)
            return jsonify({"error": f"not a paired unit: {e}"}), 403
        try:
            message = parse_signal(body)
            reply = engine.incoming(unit, message).result(engine.cfg.ring_seconds + REPLY_MARGIN_SECONDS)
        except (SignallingError, CallError) as e:
            return jsonify({"error": str(e)}), 400
        except concurrent.futures.TimeoutError:
            return jsonify({"error": "the call engine did not answer in time"}), 503
        payload = reply.model_dump_json().encode()
        headers = identity.sign_response(engine.me, request.headers[identity.NONCE], payload)
        status = 409 if reply.kind == "busy" else 200
        return Response(payload, status, headers, mimetype="application/json")

    @bp.get("/api/call")
    @_local_only
    def status() -> ResponseReturnValue:
        return jsonify(engine.status())

    @bp.post("/api/call")
    @_local_only
    def call() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        target = body.get("to") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target.strip():
            return jsonify({"error": 'send {"to": "NAME or ADDRESS of a paired unit"}'}), 400
        try:
            engine.call(target)
        except CallError as e:
            return jsonify({"error": str(e)}), 409
        return jsonify(engine.status()), 202

    @bp.post("/api/hangup")
    @_local_only
    def hangup() -> ResponseReturnValue:
        engine.hangup()
        return jsonify(engine.status())

    @bp.post("/api/call/answer")
    @_local_only
    def answer() -> ResponseReturnValue:
        engine.answer()
        return jsonify(engine.status())

    return bp
