"""The server-rendered pages' blueprint: the owner-presence login, status and calls here; pairing
(``pairing_pages.py``) and settings (``settings_pages.py``) added to it.

No script runs in the pages (the CSP allows none), so every result is announced by what a screen
reader reads on load: the page title starts with it, and focus lands on the message (or in the
code field when a code is awaited). A form that worked redirects back (post/redirect/get); one
that did not is shown again with what was typed, the bad fields marked and what to type instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from appliance.call import CALL_OVER, IN_PROGRESS
from appliance.state import as_heard
from appliance.web import owner, presence
from appliance.web.page_access import LoggedOut, owner_page
from appliance.web.pairing_pages import add_pairing_pages
from appliance.web.parts import UnitParts
from appliance.web.schemas import CallRequest, OwnerLogin, parse
from appliance.web.settings_pages import PENDING, PENDING_STALE, add_settings_pages, kept_settings
from appliance.web.wording import (
    CALL_STATES,
    PAGE_ERRORS,
    Outcome,
    duration,
    expression,
    page_status,
    problem,
    time_left,
    unit_details,
)

if TYPE_CHECKING:
    from appliance.web.api import StatusProvider

CHANGE_REFUSED = (
    "Your login has ended, so nothing was changed. Ask the unit for a code and type it below, "
    "then make the change again."
)
SETTINGS_KEPT = (
    "Your login has ended, so the settings were not saved. Ask the unit for a code and type it below: "
    "your changes are kept and shown again for you to save."
)
LOGIN_SOON_S = 15 * 60
SETTLE_S = 5.0  # how long an action may take to change the call state before the page is shown


def _flashed() -> list[Outcome]:
    return [Outcome(str(m[1]), str(m[0])) for m in get_flashed_messages(with_categories=True)]


def _login_left() -> tuple[str, bool]:
    """How long the login lasts, and whether that is soon (under LOGIN_SOON_S): the header says so."""
    left = owner.login_left()
    return (duration(left), left < LOGIN_SOON_S) if left > 0 else ("", False)


def pages_blueprint(status: StatusProvider, parts: UnitParts) -> Blueprint:
    bp = Blueprint("pages", __name__)
    code_seconds = parts.owner_codes.ttl_s
    code_lasts = duration(code_seconds)

    @bp.app_context_processor
    def common() -> dict[str, Any]:
        return {
            "csrf": owner.csrf_token,
            "unit_name": parts.store.settings().display_name,
            "is_owner": owner.is_owner,
            "flashed": _flashed,
            "login_left": _login_left,
            "code_lasts": code_lasts,
        }

    _login_pages(bp, parts, code_seconds)

    def address(facts: dict[str, Any]) -> str:
        """Where other units reach this one (the app knows; a bare test app: where the browser came)."""
        return str(facts.get("address") or request.host)

    def render_status(outcome: Outcome | None = None) -> ResponseReturnValue:
        state = parts.call.state if parts.call else "unavailable"
        faces = [e for e in parts.events.recent() if e.topic in ("remote.emotion", "vision.emotion")]
        facts = status()
        page = render_template(
            "status.html",
            outcome=outcome,
            address=address(facts),
            details=unit_details(facts),
            peers=as_heard(parts.store.peers()),
            call_state=state,
            in_progress=IN_PROGRESS,
            call_words=CALL_STATES.get(state, state),
            sharing=parts.store.settings().share_expressions,
            emotions=[expression(e) for e in faces[-5:]],
            checked=time.strftime("%H:%M:%S"),
        )
        return page, page_status(outcome)

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
        first = not parts.store.sharing_answered()
        parts.change_settings({"share_expressions": share})
        if first:  # the question answered: nothing was shared before
            said = "Your expressions will be shared in calls." if share else "Your expressions stay private."
        else:
            said = "Sharing your expressions again." if share else "Your expressions are no longer shared."
        flash(said, "info")
        # Back where it was asked: the settings page asks the question, the status page switches.
        back = "pages.settings" if request.form.get("back") == "settings" else "pages.status"
        return redirect(url_for(back))

    add_pairing_pages(bp, parts, code_seconds)
    add_settings_pages(bp, parts)
    _call_pages(bp, parts, render_status)
    return bp


def _login_pages(bp: Blueprint, parts: UnitParts, code_seconds: float) -> None:
    def render_login(
        outcome: Outcome | None = None, code: str = "", http: int | None = None
    ) -> ResponseReturnValue:
        awaiting = parts.owner_codes.waiting()
        # The unit's button as the other way in, offered to the browser it waits for (presence.py).
        button = awaiting and presence.button_answer(parts.presence, spend=False) in ("waiting", "present")
        page = render_template("login.html", outcome=outcome, awaiting=awaiting, code=code, button=button)
        return page, http or page_status(outcome)

    @bp.app_errorhandler(LoggedOut)  # the privacy and Wi-Fi pages use owner_page too
    def logged_out(_: LoggedOut) -> ResponseReturnValue:
        if request.endpoint == "pages.settings_post":
            session[PENDING] = kept_settings()
            session.pop(PENDING_STALE, None)
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
        left = time_left(parts.owner_codes.seconds_left())
        flash(
            f"The unit is showing and saying a code now. It works for {left}."
            + (" Or press the unit's button once, then press “I pressed the button”." if button else ""),
            "info",
        )
        return redirect(url_for("pages.login"))

    @bp.post("/login/button")
    @owner.csrf_only
    def login_button() -> ResponseReturnValue:
        def pressed() -> ResponseReturnValue | None:
            answer = presence.button_answer(parts.presence)
            if answer == "present":
                return None
            text = presence.NOT_YET[answer]
            return render_login(Outcome(text[0].upper() + text[1:] + ".", "error"), http=409)

        return welcome("button", pressed)

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

        def right_code() -> ResponseReturnValue | None:
            try:
                parts.owner_codes.check(parse(OwnerLogin, {"code": typed}).code, owner.source())
            except PAGE_ERRORS as e:
                return render_login(problem(e, code_seconds=code_seconds), typed)
            return None

        return welcome(typed.strip(), right_code)

    logins = owner.RecentLogins()

    def welcome(proof: str, refused: Callable[[], ResponseReturnValue | None]) -> ResponseReturnValue:
        """The owner is in, once ``refused`` (the code or button check) has no answer of its own, or
        this form already logged in with ``proof`` (posted twice): back to the kept settings form,
        or to the status page."""
        pending = session.get(PENDING)
        refusal = logins.enter(proof, refused)
        if refusal is not None:
            return refusal
        if isinstance(pending, dict):
            session[PENDING] = pending
            return redirect(url_for("pages.settings"))
        flash(f"Welcome. You can now change this unit for {duration(parts.session_hours * 3600)}.", "info")
        return redirect(url_for("pages.status"))

    @bp.post("/logout")
    @owner.csrf_only  # not owner_page: a login that has already ended is logged out all the same
    def logout() -> ResponseReturnValue:
        owner.end_owner()
        flash("You are logged out. To change this unit again, ask it for a code.", "info")
        return redirect(url_for("pages.login"))


def _call_pages(
    bp: Blueprint, parts: UnitParts, render_status: Callable[[Outcome], ResponseReturnValue]
) -> None:
    def act(
        action: Callable[[Any], None], said: str, applies: tuple[str, ...] | None = None
    ) -> ResponseReturnValue:
        """Run a call action; show the status once the call state moved on (or SETTLE_S passed).

        The message is ``said``, or else the new call state: what the page shows is what happened.
        In a state not in ``applies`` (the caller gave up before Answer was pressed) nothing is done
        and the page says the state at once.
        """
        if parts.call is None:
            return render_status(Outcome(CALL_STATES["unavailable"], "error"))
        before = parts.call.state
        if applies is not None and before not in applies:
            flash(CALL_STATES.get(before, before), "info")
            return redirect(url_for("pages.status"))
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
        # Sent twice (a double press, a reload), the second found the call going and said "Error:
        # Already calling" over the call the first had placed: in a call with that unit, the page
        # says its state (a call from it that rings here is answered); a call to another unit
        # meanwhile is still refused, saying why.
        same = parts.call is not None and parts.call.in_call_with(to)
        return act(lambda engine: engine.call(to), "", applies=(*CALL_OVER, "ringing") if same else None)

    @bp.post("/answer")
    @owner_page
    def answer() -> ResponseReturnValue:
        return act(lambda engine: engine.answer(), "", applies=("ringing",))

    @bp.post("/hangup")
    @owner_page
    def hangup() -> ResponseReturnValue:
        return act(lambda engine: engine.hangup(), "Hung up.", applies=IN_PROGRESS)
