"""The server-rendered pages: status, pairing, settings, and the owner-presence login.

No script runs in the pages (the CSP allows none), so every result is announced by what a screen
reader reads on load: the page title starts with it, and focus lands on the message (or in the
code field when a code is awaited). A form that worked redirects back (post/redirect/get); one
that did not is shown again with what was typed, the bad fields marked and what to type instead.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from flask import (
    Blueprint,
    abort,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from appliance.web import owner, presence
from appliance.web.parts import UnitParts
from appliance.web.schemas import (
    CallRequest,
    OwnerLogin,
    PairCode,
    PairRequest,
    SettingsChange,
    parse,
    typed_address,
)
from appliance.web.wording import (
    CALL_STATES,
    PAGE_ERRORS,
    Outcome,
    duration,
    expression,
    problem,
    unit_details,
)

if TYPE_CHECKING:
    from appliance.web.api import StatusProvider

P = ParamSpec("P")
PageView = Callable[P, ResponseReturnValue]
# The languages the speech part has phrases for (appliance/words/phrases.py); others would speak English.
LANGUAGES = {"en": "English", "en-gb": "English (UK)", "hi": "Hindi", "bn": "Bengali"}
FLAGS = ("auto_answer", "share_expressions")  # checkboxes: absent from a form means off
PENDING = "pending_settings"  # a settings form sent after the login ended, kept for after the next login
LOGIN_ENDED = "Your login has ended. Ask the unit for a new code to log in again."
CHANGE_REFUSED = (
    "Your login has ended, so nothing was changed. Ask the unit for a code and type it below, "
    "then make the change again."
)
SETTINGS_KEPT = (
    "Your login has ended, so the settings were not saved. Ask the unit for a code and type it below: "
    "your changes are kept and shown again for you to save."
)
ASKED_AT = "pairing_address"  # the address of the unit asked for a code, to ask it again
LOGIN_SOON_S = 15 * 60
SETTLE_S = 5.0  # how long an action may take to change the call state before the page is shown


class LoggedOut(Exception):
    """A change sent without a live owner login; the login page says so (HTTP 401)."""


def owner_page(view: PageView[P]) -> PageView[P]:
    """Send a visitor to the login page (saying so when a login ended); refuse forms without CSRF token."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if not owner.is_owner():
            if request.method in owner.CHANGES:
                raise LoggedOut()
            if session.pop("owner_until", None) is not None:
                flash(LOGIN_ENDED, "info")
            return redirect(url_for("pages.login"))
        if request.method in owner.CHANGES and not owner.csrf_ok():
            abort(403, "The form has expired. Reload the page and try again.")
        return view(*args, **kwargs)

    return wrapped


def error_page(e: HTTPException) -> ResponseReturnValue:
    said = "There is no page at this address." if e.code == 404 else (e.description or e.name)
    outcome = Outcome(said, "error")
    return render_template("error.html", code=e.code, outcome=outcome), e.code or 500


def _form(*names: str) -> dict[str, str]:
    return {n: request.form.get(n, "") for n in names}


def _flashed() -> list[Outcome]:
    return [Outcome(str(m[1]), str(m[0])) for m in get_flashed_messages(with_categories=True)]


def _login_left() -> tuple[str, bool]:
    """How long the login lasts, and whether that is soon (under LOGIN_SOON_S): the header says so."""
    until = session.get("owner_until")
    if not (isinstance(until, int | float) and owner.is_owner()):
        return "", False
    return duration(until - time.time()), until - time.time() < LOGIN_SOON_S


def pages_blueprint(status: StatusProvider, parts: UnitParts) -> Blueprint:
    bp = Blueprint("pages", __name__)
    code_seconds = parts.owner_codes.ttl_s

    @bp.app_context_processor
    def common() -> dict[str, Any]:
        return {
            "csrf": owner.csrf_token,
            "unit_name": parts.store.settings().display_name,
            "is_owner": owner.is_owner,
            "flashed": _flashed,
            "login_left": _login_left,
            "code_lasts": duration(code_seconds),
        }

    _login_pages(bp, parts, code_seconds)

    def address(facts: dict[str, Any]) -> str:
        """Where other units reach this one (the app knows; a bare test app: where the browser came)."""
        return str(facts.get("address") or request.host)

    def render_status(outcome: Outcome | None = None) -> ResponseReturnValue:
        state = parts.call.state if parts.call else "unavailable"
        faces = [e for e in parts.events.recent() if e.topic in ("remote.emotion", "vision.emotion")]
        facts = status()
        return render_template(
            "status.html",
            outcome=outcome,
            address=address(facts),
            details=unit_details(facts),
            peers=parts.store.peers(),
            call_state=state,
            call_words=CALL_STATES.get(state, state),
            sharing=parts.store.settings().share_expressions,
            emotions=[expression(e) for e in faces[-5:]],
            checked=time.strftime("%H:%M:%S"),
        )

    @bp.get("/", endpoint="status")
    @owner_page
    def status_page() -> ResponseReturnValue:
        return render_status()

    @bp.post("/address")
    @owner_page
    def say_address() -> ResponseReturnValue:
        where = address(status())
        parts.events.publish("unit.address", "The unit's address was asked for", address=where)
        flash(f"The unit is saying its address, {where}, and shows it on its display.", "info")
        return redirect(url_for("pages.status"))

    @bp.post("/sharing")
    @owner_page
    def sharing() -> ResponseReturnValue:
        share = request.form.get("share") == "on"
        parts.change_settings({"share_expressions": share})
        flash(
            "Sharing your expressions again." if share else "Your expressions are no longer shared.", "info"
        )
        return redirect(url_for("pages.status"))

    _pair_pages(bp, parts, code_seconds)
    _settings_pages(bp, parts)
    _call_pages(bp, parts, render_status)
    return bp


def _login_pages(bp: Blueprint, parts: UnitParts, code_seconds: float) -> None:
    def render_login(outcome: Outcome | None = None, code: str = "", http: int = 200) -> ResponseReturnValue:
        awaiting = parts.owner_codes.waiting()
        # The unit's button as the other way in, offered to the browser it waits for (presence.py).
        button = awaiting and presence.button_answer(parts.presence, spend=False) in ("waiting", "present")
        page = render_template("login.html", outcome=outcome, awaiting=awaiting, code=code, button=button)
        return page, http

    @bp.app_errorhandler(LoggedOut)  # the privacy and Wi-Fi pages use owner_page too
    def logged_out(_: LoggedOut) -> ResponseReturnValue:
        if request.endpoint == "pages.settings_post":
            session[PENDING] = {k: v for k, v in request.form.items() if k != "csrf"}
            return render_login(Outcome(SETTINGS_KEPT, "error"), http=401)
        return render_login(Outcome(CHANGE_REFUSED, "error"), http=401)

    @bp.get("/login")
    def login() -> ResponseReturnValue:
        return render_login()

    @bp.post("/login/code")
    @owner.csrf_only
    def login_code() -> ResponseReturnValue:
        try:
            parts.owner_codes.issue(owner.source())
        except PAGE_ERRORS as e:
            return render_login(problem(e))
        button = "button" in presence.ask_for_button(parts.presence)
        flash(
            f"The unit is showing and saying a code now. It works for {duration(code_seconds)}."
            + (" Or press the unit's button once, then press “I pressed the button”." if button else ""),
            "info",
        )
        return redirect(url_for("pages.login"))

    @bp.post("/login/button")
    @owner.csrf_only
    def login_button() -> ResponseReturnValue:
        answer = presence.button_answer(parts.presence)
        if answer != "present":
            text = presence.NOT_YET[answer]
            return render_login(Outcome(text[0].upper() + text[1:] + ".", "error"), http=409)
        return welcome()

    @bp.post("/login/again")
    @owner.csrf_only
    def login_again() -> ResponseReturnValue:
        try:
            parts.owner_codes.repeat(owner.source())
        except PAGE_ERRORS as e:
            return render_login(problem(e, code_seconds=code_seconds))
        flash("The unit is saying the same code again.", "info")
        return redirect(url_for("pages.login"))

    @bp.post("/login")
    @owner.csrf_only
    def login_post() -> ResponseReturnValue:
        typed = request.form.get("code", "")
        try:
            parts.owner_codes.check(parse(OwnerLogin, {"code": typed}).code, owner.source())
        except PAGE_ERRORS as e:
            return render_login(problem(e, code_seconds=code_seconds), typed)
        return welcome()

    def welcome() -> ResponseReturnValue:
        """The owner is in (code or button): back to the kept settings form, or to the status page."""
        pending = session.get(PENDING)
        owner.grant_owner(parts.session_hours)
        if isinstance(pending, dict):
            session[PENDING] = pending
            return redirect(url_for("pages.settings"))
        flash(f"Welcome. You can now change this unit for {duration(parts.session_hours * 3600)}.", "info")
        return redirect(url_for("pages.status"))

    @bp.post("/logout")
    @owner_page
    def logout() -> ResponseReturnValue:
        owner.end_owner()
        flash("You are logged out. To change this unit again, ask it for a code.", "info")
        return redirect(url_for("pages.login"))


def _pair_pages(bp: Blueprint, parts: UnitParts, code_seconds: float) -> None:
    def render_pair(
        outcome: Outcome | None = None, form: dict[str, str] | None = None
    ) -> ResponseReturnValue:
        seen = parts.discovery.units() if parts.discovery else []
        paired = {p.unit_id for p in parts.store.peers()}
        return render_template(
            "pair.html",
            outcome=outcome,
            form=form or {},
            waiting_for=parts.pairing.waiting_for(),
            asked_at=session.get(ASKED_AT, ""),
            seen=[u for u in seen if u.unit_id not in paired],
            peers=parts.store.peers(),
        )

    @bp.get("/pair")
    @owner_page
    def pair() -> ResponseReturnValue:
        return render_pair()

    @bp.post("/pair/request")
    @owner_page
    def pair_request() -> ResponseReturnValue:
        form = _form("address")
        address = typed_address(form["address"])
        try:
            name = parts.pairing.request(parse(PairRequest, {"address": address}).address)
        except PAGE_ERRORS as e:
            return render_pair(problem(e, field_name="address", address=address), form)
        session[ASKED_AT] = address  # for "say the code again": asking again gets the same code
        flash(
            f"{name} is showing and saying a code. It works for {duration(code_seconds)}. Type it below.",
            "info",
        )
        return redirect(url_for("pages.pair"))

    @bp.post("/pair/code")
    @owner_page
    def pair_code() -> ResponseReturnValue:
        form = _form("code")
        peer = parts.pairing.waiting_for() or ""
        try:
            paired = parts.pairing.complete(parse(PairCode, form).code)
        except PAGE_ERRORS as e:
            return render_pair(problem(e, peer=peer, field_name="code", code_seconds=code_seconds), form)
        flash(f"Paired with {paired.name}.", "info")
        return redirect(url_for("pages.pair"))

    @bp.post("/unpair")
    @owner_page
    def unpair() -> ResponseReturnValue:
        peer = parts.store.peer(request.form.get("unit_id", ""))
        if peer is None:
            return render_pair(
                Outcome("That unit is not paired with this one: nothing was changed.", "error")
            )
        if request.form.get("confirm") != "yes":
            question = Outcome(
                f"Are you sure? {peer.name} and this unit will not be able to call each other until you "
                f"pair them again, which needs a new code from {peer.name}.",
                "question",
            )
            return render_template("unpair.html", outcome=question, peer=peer)
        try:
            told = parts.pairing.unpair(peer.unit_id)
        except PAGE_ERRORS as e:
            return render_pair(problem(e))
        flash(
            f"Unpaired {peer.name}."
            if told
            else f"Unpaired here. {peer.name} was not reachable and still lists this unit.",
            "info",
        )
        return redirect(url_for("pages.pair"))


def _settings_pages(bp: Blueprint, parts: UnitParts) -> None:
    def render_settings(
        outcome: Outcome | None = None, form: dict[str, str] | None = None
    ) -> ResponseReturnValue:
        values: dict[str, Any] = parts.store.settings().model_dump()
        if form is not None:
            values.update({k: v for k, v in form.items() if k in values})
            values.update({flag: flag in form for flag in FLAGS})
        return render_template("settings.html", outcome=outcome, s=values, languages=LANGUAGES)

    @bp.get("/settings")
    @owner_page
    def settings() -> ResponseReturnValue:
        pending = session.pop(PENDING, None)
        if isinstance(pending, dict):
            kept = Outcome(
                "Welcome back. Your changes from before you were logged out are filled in below but not "
                'saved yet: check them and press "Save settings".',
                "question",
            )
            return render_settings(kept, {str(k): str(v) for k, v in pending.items()})
        return render_settings()

    @bp.post("/settings")
    @owner_page
    def settings_post() -> ResponseReturnValue:
        form = {k: v for k, v in request.form.items() if k != "csrf"}
        change: dict[str, Any] = {**form, **{flag: flag in form for flag in FLAGS}}
        try:
            saved = parts.change_settings(parse(SettingsChange, change).model_dump(exclude_none=True))
        except PAGE_ERRORS as e:
            return render_settings(problem(e), form)
        said = "Settings saved."
        if saved.volume == 0:
            said += (
                " The volume is 0, so the unit says nothing aloud: not calls, and not the codes you need to "
                "log in. Turn the volume up to hear them."
            )
        flash(said, "info")
        return redirect(url_for("pages.settings"))


def _call_pages(
    bp: Blueprint, parts: UnitParts, render_status: Callable[[Outcome], ResponseReturnValue]
) -> None:
    def act(action: Callable[[Any], None], said: str) -> ResponseReturnValue:
        """Run a call action; show the status once the call state moved on (or SETTLE_S passed).

        The message is ``said``, or else the new call state: what the page shows is what happened.
        """
        if parts.call is None:
            return render_status(Outcome(CALL_STATES["unavailable"], "error"))
        before = parts.call.state
        try:
            action(parts.call)
        except PAGE_ERRORS as e:
            return render_status(problem(e))
        deadline = time.monotonic() + SETTLE_S
        while parts.call.state == before and time.monotonic() < deadline:
            time.sleep(0.05)
        now = parts.call.state
        if now == before and not said:
            said = "Still connecting: refresh the status in a moment to hear the call state."
        flash(said or CALL_STATES.get(now, now), "info")
        return redirect(url_for("pages.status"))

    @bp.post("/call")
    @owner_page
    def call() -> ResponseReturnValue:
        try:
            to = parse(CallRequest, {"to": request.form.get("to", "")}).to
        except PAGE_ERRORS as e:
            return render_status(problem(e))
        return act(lambda engine: engine.call(to), "")

    @bp.post("/answer")
    @owner_page
    def answer() -> ResponseReturnValue:
        return act(lambda engine: engine.answer(), "")

    @bp.post("/hangup")
    @owner_page
    def hangup() -> ResponseReturnValue:
        return act(lambda engine: engine.hangup(), "Hung up.")
