"""The web app: the JSON API (status, owner login, pairing, settings) and its wiring.

``create_app`` builds one Flask app from the unit's parts: this JSON API, the pages
(``pages.py``), the unit-to-unit endpoints (``peer_api.py``) and any extra blueprints (the call
signalling, with ``/api/call`` and ``/api/hangup`` for the unit's own command line). The OpenAPI
description is served at ``/api/openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Flask, jsonify, request, session
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from appliance import __version__
from appliance.identity import RequestVerifier
from appliance.pairing.codes import CodeError, CodeLocked
from appliance.pairing.service import PairingError
from appliance.state import SettingsError, StateError, StateUnreadable
from appliance.web import openapi, owner, pages, peer_api, presence, privacy_pages
from appliance.web.parts import UnitParts
from appliance.web.schemas import (
    BadRequest,
    OwnerLogin,
    PairCode,
    PairRequest,
    SettingsChange,
    parse,
)
from appliance.web.server import MAX_BODY_BYTES
from appliance.web.wording import error_page

StatusProvider = Callable[[], dict[str, Any]]

log = logging.getLogger(__name__)


def create_app(status: StatusProvider, parts: UnitParts, blueprints: Sequence[Blueprint] = ()) -> Flask:
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # what waitress lets through, for apps served otherwise too
        MAX_FORM_MEMORY_SIZE=16 * 1024,
        SECRET_KEY=parts.store.session_secret(),
        SESSION_COOKIE_NAME="emocall_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.config[owner.HOSTS] = owner.own_names(parts.me.unit_id)
    app.before_request(owner.guard_request)
    app.session_interface = owner.OwnerCookie()
    app.extensions[owner.EXTENSION] = owner.OwnerSessions(parts.store, parts.session_hours)
    app.extensions[peer_api.EXTENSION] = peer_api.Trust(
        parts.me, RequestVerifier(parts.store.peer_key, parts.me.unit_id, kept=parts.store.first_nonce)
    )
    app.register_blueprint(api_blueprint(status, parts))
    app.register_blueprint(peer_api.peer_blueprint(parts.pairing, parts.store))
    app.register_blueprint(pages.pages_blueprint(status, parts))
    app.register_blueprint(privacy_pages.privacy_blueprint(parts))
    for bp in blueprints:
        app.register_blueprint(bp)
    app.after_request(peer_api.sign_answer)
    app.after_request(owner.security_headers)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(e: BadRequest) -> ResponseReturnValue:
        return jsonify({"error": str(e)}), e.status

    @app.errorhandler(PairingError)
    def pairing_error(e: PairingError) -> ResponseReturnValue:
        return jsonify({**e.details, "error": str(e)}), e.status, _retry_after(e.details.get("seconds"))

    @app.errorhandler(CodeLocked)
    def code_locked(e: CodeLocked) -> ResponseReturnValue:
        return jsonify({"error": str(e), "seconds": e.seconds}), 429, _retry_after(e.seconds)

    @app.errorhandler(CodeError)
    def code_error(e: CodeError) -> ResponseReturnValue:
        return jsonify({"error": str(e)}), 403

    @app.errorhandler(SettingsError)
    def settings_error(e: SettingsError) -> ResponseReturnValue:
        return jsonify({"error": str(e)}), 422

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        if request.path.startswith("/api/"):
            return jsonify({"error": e.description or e.name}), e.code or 500
        return error_page(e)

    @app.errorhandler(StateError)
    def state_error(e: StateError) -> ResponseReturnValue:
        """A full or damaged memory card: said as such, not a bare "Internal Server Error"."""
        log.error("%s", e)
        cannot = "read its memory card" if isinstance(e, StateUnreadable) else "save changes"
        return http_error(ServiceUnavailable(f"This unit cannot {cannot} now: {e}"))


def _retry_after(seconds: object) -> dict[str, str]:
    """A refusal for a while (429) says how long in the standard header too."""
    return {"Retry-After": str(seconds)} if isinstance(seconds, int) else {}


def _for_the_lan(status: dict[str, Any]) -> dict[str, Any]:
    """The status for anyone on the LAN: what was said and felt lately is for the owner (and the unit
    itself), and of the relay only its connection state: its accounts (this unit's, and the paired
    units' online) are known only to those given them, so a guest account cannot ask after them."""
    shown = {k: v for k, v in status.items() if k != "events"}
    relay = shown.get("relay")
    if isinstance(relay, dict):
        shown["relay"] = {k: v for k, v in relay.items() if k == "state"}
    return shown


def api_blueprint(status: StatusProvider, parts: UnitParts) -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api")
    owner_api = owner.owner_only

    @bp.get("/status")
    def get_status() -> ResponseReturnValue:
        data = status()
        if not (owner.is_owner() or owner.is_local()):
            data = _for_the_lan(data)
        return jsonify({"version": __version__, "unit_id": parts.me.unit_id, **data})

    @bp.get("/openapi.json")
    def get_openapi() -> ResponseReturnValue:
        return jsonify(openapi.document(__version__))

    @bp.get("/owner")
    def get_owner() -> ResponseReturnValue:
        return jsonify({"owner": owner.is_owner(), "csrf": owner.csrf_token()})

    @bp.post("/owner/code")
    @owner.csrf_only
    def post_owner_code() -> ResponseReturnValue:
        parts.owner_codes.issue(owner.source())
        return jsonify({"said": True, "waiting_for": presence.ask_for_button(parts.presence)}), 202

    @bp.post("/owner/button")
    @owner.csrf_only
    def post_owner_button() -> ResponseReturnValue:
        answer = presence.button_answer(parts.presence)
        if answer != "present":
            return jsonify({"owner": False, "waiting": answer, "error": presence.NOT_YET[answer]}), 409
        owner.grant_owner()
        return jsonify({"owner": True, "csrf": session["csrf"]})

    @bp.post("/owner/login")
    @owner.csrf_only
    def post_owner_login() -> ResponseReturnValue:
        parts.owner_codes.check(parse(OwnerLogin).code, owner.source())
        owner.grant_owner()
        return jsonify({"owner": True, "csrf": session["csrf"]})

    @bp.post("/owner/logout")
    @owner_api
    def post_owner_logout() -> ResponseReturnValue:
        owner.end_owner()
        return jsonify({"owner": False})

    @bp.get("/settings")
    @owner_api
    def get_settings() -> ResponseReturnValue:
        return jsonify(parts.store.settings().model_dump())

    @bp.patch("/settings")
    @owner_api
    def patch_settings() -> ResponseReturnValue:
        change = parse(SettingsChange).model_dump(exclude_none=True)
        return jsonify(parts.change_settings(change).model_dump())

    @bp.get("/peers")
    @owner_api
    def get_peers() -> ResponseReturnValue:
        return jsonify(
            [{"unit_id": p.unit_id, "name": p.name, "address": p.address} for p in parts.store.peers()]
        )

    @bp.delete("/peers/<unit_id>")
    @owner_api
    def delete_peer(unit_id: str) -> ResponseReturnValue:
        return jsonify({"unpaired": True, "told_other_unit": parts.pairing.unpair(unit_id)})

    @bp.get("/discovered")
    @owner_api
    def get_discovered() -> ResponseReturnValue:
        units = parts.discovery.units() if parts.discovery else []
        return jsonify([{"unit_id": u.unit_id, "name": u.name, "address": u.address} for u in units])

    @bp.post("/pair")
    @owner_api
    def post_pair() -> ResponseReturnValue:
        name = parts.pairing.request(parse(PairRequest).address)
        return jsonify({"waiting_for": name}), 202

    @bp.post("/pair/code")
    @owner_api
    def post_pair_code() -> ResponseReturnValue:
        peer = parts.pairing.complete(parse(PairCode).code)
        return jsonify({"paired": True, "unit_id": peer.unit_id, "name": peer.name})

    return bp
