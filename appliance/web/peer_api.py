"""Unit-to-unit endpoints: the pairing handshake (open, guarded by the code) and signed requests.

Any blueprint with unit-to-unit handlers (the call signalling too) calls :func:`verified_peer`
(or :func:`verified_request`) first; once it has succeeded, the answer is signed by this unit (see
:func:`sign_answer`), so the caller can check nobody swapped it. Requests that were not verified get
no signature: a signature is never handed out for a request this unit has not checked. The one
refusal signed is for a request signed right but stamped outside the window: it answers 403 with
``"reason": "clock"``, and its signed time is what the asking unit stamps its next request by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, Response, abort, current_app, g, jsonify, make_response, request
from flask.typing import ResponseReturnValue

from appliance import identity
from appliance.identity import ClockSkew, Identity, RequestVerifier, TrustError
from appliance.pairing import service
from appliance.pairing.messages import PeerFinish, PeerStart
from appliance.pairing.service import Pairing
from appliance.state import StateStore
from appliance.web.schemas import parse

log = logging.getLogger(__name__)

EXTENSION = "emocall.trust"
# The WSGI environ key under which the relay names the account a request came through.
RELAY_SENDER = "emocall.relay_sender"
VERIFIED = "emocall_exchange"  # where verified_peer leaves the request it verified, in flask.g


@dataclass(frozen=True)
class Trust:
    me: Identity
    verifier: RequestVerifier


def verified_peer() -> str:
    """The paired unit that signed this request; answers 403 (and changes nothing) otherwise."""
    return verified_request().sender


def verified_request() -> identity.Exchange:
    """This request as the paired unit that signed it sent it; answers 403 (and changes nothing)
    otherwise."""
    trust: Trust = current_app.extensions[EXTENSION]
    try:
        exchange = trust.verifier.verify(
            dict(request.headers), request.method, request.path, request.get_data()
        )
    except ClockSkew as e:
        # A paired unit whose clock this unit's answers have not yet taught, or a request that
        # waited (this unit paused): the signed refusal tells it this unit's time.
        log.info("refused a request from unit %s: %s", e.exchange.sender, e)
        setattr(g, VERIFIED, e.exchange)
        abort(make_response(jsonify({"error": f"refused: {e}", "reason": "clock"}), 403))
    except TrustError as e:
        abort(403, f"refused: {e}")
    setattr(g, VERIFIED, exchange)
    return exchange


def sign_answer(response: Response) -> Response:
    """Sign the answer to a verified request, errors included, over the exchange, status and body."""
    exchange: identity.Exchange | None = g.get(VERIFIED)
    if exchange is not None and not response.direct_passthrough:
        trust: Trust = current_app.extensions[EXTENSION]
        response.headers.update(
            identity.sign_response(trust.me, exchange, response.status_code, response.get_data())
        )
    return response


def _host() -> str:
    host = request.remote_addr or ""
    return f"[{host}]" if ":" in host else host


def _source() -> str:
    """Whom the code limits count: the relay account a request came through, else its address (every
    request through the relay comes from the same nowhere address)."""
    sender = request.environ.get(RELAY_SENDER)
    return f"xmpp:{sender}" if isinstance(sender, str) and sender else _host()


def peer_blueprint(pairing: Pairing, store: StateStore) -> Blueprint:
    bp = Blueprint("peer", __name__)

    @bp.post(service.START_PATH)
    def pair_start() -> ResponseReturnValue:
        body = parse(PeerStart)
        return jsonify(pairing.start(body.unit_id, body.name, _host(), body.port, _source()))

    @bp.post(service.FINISH_PATH)
    def pair_finish() -> ResponseReturnValue:
        body = parse(PeerFinish)
        details = body.details.model_dump()
        return jsonify(pairing.finish(body.session, body.spake, details, body.proof, _source()))

    @bp.post(service.HELLO_PATH)
    def hello() -> ResponseReturnValue:
        """A paired unit checks, before it believes an mDNS announcement, that this unit is here."""
        verified_peer()
        return jsonify({"unit_id": pairing.details()["unit_id"]})

    @bp.post(service.UNPAIR_PATH)
    def unpair() -> ResponseReturnValue:
        peer = store.peer(verified_peer())
        if peer is not None:
            pairing.forget(peer)
        return jsonify({"unpaired": True})

    return bp
