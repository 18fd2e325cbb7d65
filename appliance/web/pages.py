"""The server-rendered pages: status, pairing, settings, and the owner-presence login.

Forms post here and redirect back (post/redirect/get), with the outcome shown as a message that
screen readers announce. No script runs in the pages; every action is a labelled form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from appliance.call import CallError
from appliance.pairing.codes import CodeError
from appliance.pairing.service import PairingError
from appliance.state import SettingsError
from appliance.web import owner
from appliance.web.parts import CallControl, UnitParts
from appliance.web.schemas import (
    BadRequest,
    CallRequest,
    OwnerLogin,
    PairCode,
    PairRequest,
    SettingsChange,
    parse,
)

if TYPE_CHECKING:
    from appliance.web.api import StatusProvider

P = ParamSpec("P")
PageView = Callable[P, ResponseReturnValue]
PAGE_ERRORS = (BadRequest, PairingError, CodeError, SettingsError, CallError)
# The languages the speech part has phrases for (appliance/words/phrases.py); others would speak English.
LANGUAGES = {"en": "English", "en-gb": "English (UK)", "hi": "Hindi", "bn": "Bengali"}


def owner_page(view: PageView[P]) -> PageView[P]:
    """Send a visitor to the login page; refuse a form without the CSRF token."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if not owner.is_owner():
            if request.method in owner.CHANGES:
                abort(401, "Only the owner may do this. Enter the code the unit is saying first.")
            return redirect(url_for("pages.login"))
        if request.method in owner.CHANGES and not owner.csrf_ok():
            abort(403, "The form has expired. Reload the page and try again.")
        return view(*args, **kwargs)

    return wrapped


def _act(action: Callable[[], str], back: str) -> ResponseReturnValue:
    """Run a form's action; show its outcome (or what went wrong) on the page it came from."""
    try:
        flash(action(), "info")
    except PAGE_ERRORS as e:
        flash(_sentence(str(e)), "error")
    return redirect(url_for(back))


def _then(action: Callable[[], None], outcome: str) -> Callable[[], str]:
    def run() -> str:
        action()
        return outcome

    return run


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def error_page(e: HTTPException) -> ResponseReturnValue:
    return render_template("error.html", code=e.code, message=e.description), e.code or 500


def settings_form(form: dict[str, Any]) -> dict[str, Any]:
    """A settings form as a change: unticked checkboxes are absent from the form, so they mean off."""
    change: dict[str, Any] = {k: v for k, v in form.items() if k != "csrf"}
    for flag in ("auto_answer", "share_expressions"):
        change[flag] = flag in form
    return parse(SettingsChange, change).model_dump(exclude_none=True)


def pages_blueprint(status: StatusProvider, parts: UnitParts) -> Blueprint:
    bp = Blueprint("pages", __name__)

    @bp.app_context_processor
    def common() -> dict[str, Any]:
        return {
            "csrf": owner.csrf_token,
            "unit_name": parts.store.settings().display_name,
            "is_owner": owner.is_owner,
        }

    @bp.get("/login")
    def login() -> ResponseReturnValue:
        return render_template("login.html")

    @bp.post("/login/code")
    @owner.csrf_only
    def login_code() -> ResponseReturnValue:
        def ask() -> str:
            parts.owner_codes.issue()
            return "The unit is showing and saying a code now."

        return _act(ask, "pages.login")

    @bp.post("/login")
    @owner.csrf_only
    def login_post() -> ResponseReturnValue:
        try:
            parts.owner_codes.check(parse(OwnerLogin, {"code": request.form.get("code", "")}).code)
        except PAGE_ERRORS as e:
            flash(_sentence(str(e)), "error")
            return redirect(url_for("pages.login"))
        owner.grant_owner(parts.session_hours)
        flash("Welcome. You can now change this unit's settings.", "info")
        return redirect(url_for("pages.status"))

    @bp.post("/logout")
    @owner_page
    def logout() -> ResponseReturnValue:
        session.clear()
        return redirect(url_for("pages.login"))

    @bp.get("/", endpoint="status")
    @owner_page
    def status_page() -> ResponseReturnValue:
        state = parts.call.state if parts.call else "unavailable"
        emotions = [e for e in parts.events.recent() if e.topic in ("remote.emotion", "vision.emotion")][-5:]
        return render_template(
            "status.html",
            status=status(),
            unit_id=parts.me.unit_id,
            peers=parts.store.peers(),
            call_state=state,
            sharing=parts.store.settings().share_expressions,
            emotions=emotions,
        )

    @bp.get("/pair")
    @owner_page
    def pair() -> ResponseReturnValue:
        seen = parts.discovery.units() if parts.discovery else []
        paired = {p.unit_id for p in parts.store.peers()}
        return render_template(
            "pair.html",
            waiting_for=parts.pairing.waiting_for(),
            seen=[u for u in seen if u.unit_id not in paired],
            peers=parts.store.peers(),
        )

    @bp.post("/pair/request")
    @owner_page
    def pair_request() -> ResponseReturnValue:
        def ask() -> str:
            name = parts.pairing.request(
                parse(PairRequest, {"address": request.form.get("address", "")}).address
            )
            return f"{name} is showing and saying a code. Type it below."

        return _act(ask, "pages.pair")

    @bp.post("/pair/code")
    @owner_page
    def pair_code() -> ResponseReturnValue:
        def complete() -> str:
            peer = parts.pairing.complete(parse(PairCode, {"code": request.form.get("code", "")}).code)
            return f"Paired with {peer.name}."

        return _act(complete, "pages.pair")

    @bp.post("/unpair")
    @owner_page
    def unpair() -> ResponseReturnValue:
        def forget() -> str:
            told = parts.pairing.unpair(request.form.get("unit_id", ""))
            return (
                "Unpaired."
                if told
                else "Unpaired here. The other unit was not reachable and still lists this one."
            )

        return _act(forget, "pages.pair")

    @bp.post("/sharing")
    @owner_page
    def sharing() -> ResponseReturnValue:
        def switch() -> str:
            share = request.form.get("share") == "on"
            parts.change_settings({"share_expressions": share})
            return "Sharing your expressions again." if share else "Your expressions are no longer shared."

        return _act(switch, "pages.status")

    @bp.get("/settings")
    @owner_page
    def settings() -> ResponseReturnValue:
        return render_template("settings.html", s=parts.store.settings(), languages=LANGUAGES)

    @bp.post("/settings")
    @owner_page
    def settings_post() -> ResponseReturnValue:
        def save() -> str:
            parts.change_settings(settings_form(request.form.to_dict()))
            return "Settings saved."

        return _act(save, "pages.settings")

    _call_pages(bp, parts)
    return bp


def _call_pages(bp: Blueprint, parts: UnitParts) -> None:
    def engine() -> CallControl:
        if parts.call is None:
            raise PairingError("calling is not available on this unit")
        return parts.call

    @bp.post("/call")
    @owner_page
    def call() -> ResponseReturnValue:
        def start() -> str:
            engine().call(parse(CallRequest, {"to": request.form.get("to", "")}).to)
            return "Calling."

        return _act(start, "pages.status")

    @bp.post("/answer")
    @owner_page
    def answer() -> ResponseReturnValue:
        return _act(_then(lambda: engine().answer(), "Answered."), "pages.status")

    @bp.post("/hangup")
    @owner_page
    def hangup() -> ResponseReturnValue:
        return _act(_then(lambda: engine().hangup(), "Call ended."), "pages.status")
