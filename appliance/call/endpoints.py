"""The call's HTTP endpoints, a Flask blueprint on the unit's local API.

``POST /api/call/signal`` is unit-to-unit: signed by the calling unit and verified against the key
pinned at pairing (:func:`~appliance.web.peer_api.verified_request`); the web app signs the answer.
Flask hands the message to the engine's loop and waits for the reply. ``/api/call`` (GET status,
POST ``{"to": NAME|ADDRESS}``), ``/api/hangup`` and ``/api/call/answer`` are for this unit's own
command line and scripts and answer only requests from the unit itself (loopback, with the
``X-Emocall-Local: 1`` header that :func:`appliance.call.local.ask` sends).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from appliance.call import CallError
from appliance.call.engine import CallEngine
from appliance.call.signaling import SIGNAL_PATH, Signal, SignallingError, parse_signal
from appliance.state import Peer
from appliance.web import owner
from appliance.web.peer_api import verified_request
from appliance.web.schemas import CallRequest, parse

log = logging.getLogger(__name__)

REPLY_MARGIN_SECONDS = 15.0


def _local_only(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if not owner.is_local_control():
            return jsonify({"error": "only this unit's own command line may do this"}), 403
        return view(*args, **kwargs)

    return wrapper


def answer_signal(
    engine: CallEngine, peer: Peer, message: Signal, sent: float | None = None, **told: float
) -> tuple[Response, int]:
    """Hand a checked caller's signalling message (sent at ``sent``, when its signature says) to the
    engine's loop and answer with its reply (409 for busy), and with ``told`` beside it (what a
    guest's page cannot know otherwise: the unit's call settings); a unit's and a guest's signal
    endpoints both answer through here."""
    try:
        future = engine.incoming_from(peer, message, sent)
        reply = future.result(engine.cfg.ring_seconds + REPLY_MARGIN_SECONDS)
    except (SignallingError, CallError) as e:
        return jsonify({"error": str(e)}), 400
    except concurrent.futures.TimeoutError:
        return jsonify({"error": "the call engine did not answer in time"}), 503
    except concurrent.futures.CancelledError:
        return jsonify({"error": "this unit is shutting down; call again later"}), 503
    return jsonify(reply.model_dump() | told), 409 if reply.kind == "busy" else 200


def create_blueprint(engine: CallEngine) -> Blueprint:
    bp = Blueprint("call", __name__)

    @bp.post(SIGNAL_PATH)
    def signal() -> ResponseReturnValue:
        signed = verified_request()  # 403 unless a paired unit signed it; the app signs the answer
        try:
            message = parse_signal(request.get_data())
            peer = engine.peer(signed.sender)
        except (SignallingError, CallError) as e:
            return jsonify({"error": str(e)}), 400
        return answer_signal(engine, peer, message, signed.time)

    @bp.get("/api/call")
    @_local_only
    def status() -> ResponseReturnValue:
        return jsonify(engine.status())

    @bp.post("/api/call")
    @_local_only
    def call() -> ResponseReturnValue:
        try:
            engine.call(parse(CallRequest).to)
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
