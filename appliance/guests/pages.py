"""The owner's page for guest invites (``/guests``): make one, see the open ones and their links.

A guest calls through the unit's relay (their browser is almost never on the unit's network), so the
link points at the relay's guest page, and a unit without a relay (``jid`` empty) says so instead of
offering a link that could never ring. The navigation shows "Guests" on units that have this page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from appliance.guests.invites import Invite, InviteError, Invites
from appliance.pairing.service import AGAIN_S
from appliance.web.page_access import form_values, owner_page
from appliance.web.wording import Outcome, page_status, relay_words

GUEST_PORT = 5281  # the relay's HTTPS port (Prosody's http_files and websocket, relay/setup)
# What the owner may choose on the page: how long an invite works.
VALID_FOR = {
    "3600": "1 hour",
    "86400": "1 day",
    "604800": "1 week",
    "2592000": "30 days",
    "31536000": "1 year",
}
KINDS = {"once": "For one call", "standing": "For any number of calls until it ends"}


def guest_link(token: str, jid: str) -> str:
    """The link a guest opens: the relay's guest page, with the invite in the fragment (never sent)."""
    return f"https://{jid.split('@', 1)[1]}:{GUEST_PORT}/guest/#{token}"


def guests_blueprint(
    invites: Invites,
    jid: str,
    relay: Callable[[], Mapping[str, Any]],
    withdrawn: Callable[[Invite], bool] = lambda invite: False,
) -> Blueprint:
    """``jid``: this unit's relay account ("" without a relay: no invite can be made then);
    ``relay``: the relay connection's state (``Relay.status``), said on the page while guests cannot
    reach the unit (an invite made then rings once it is back); ``withdrawn`` is told of each invite
    the owner withdraws, ends a call in progress with it and says True then."""
    bp = Blueprint("guests", __name__)
    # The invites made in the last AGAIN_S, by the form that made them (its CSRF token and fields):
    # the same form sent again (a double press, a reload) is shown the invite it made, not given a
    # second one, unknown to the owner, that rings the unit for as long.
    made: dict[tuple[str, ...], tuple[float, Invite]] = {}
    making = threading.Lock()

    def make(form: dict[str, str]) -> Invite:
        key = (request.form.get("csrf", ""), form["guest_name"].strip(), form["valid_for"], form["kind"])
        now = time.monotonic()
        with making:
            for old in [k for k, (at, _) in made.items() if now - at > AGAIN_S]:
                del made[old]
            if key in made and any(i.id == made[key][1].id for i in invites.listed()):
                return made[key][1]
            invite = invites.create(form["guest_name"], float(form["valid_for"]), form["kind"] == "once")
            made[key] = (now, invite)
            return invite

    @bp.app_context_processor
    def nav() -> dict[str, Any]:
        return {"guests_page": True}

    def render(outcome: Outcome | None = None, form: dict[str, str] | None = None) -> ResponseReturnValue:
        shown = [
            (i, guest_link(invites.token(i, jid), jid) if jid else "", _until(i)) for i in invites.listed()
        ]
        values = form or {"guest_name": "", "valid_for": "86400", "kind": "once"}
        state = relay()
        page = render_template(
            "guests.html",
            outcome=outcome,
            relay=jid,
            relay_down="" if not jid or state.get("state") == "connected" else relay_words(state),
            invites=shown,
            form=values,
            valid_for=VALID_FOR,
            kinds=KINDS,
        )
        return page, page_status(outcome)

    @bp.get("/guests")
    @owner_page
    def guests() -> ResponseReturnValue:
        return render()

    @bp.post("/guests")
    @owner_page
    def create() -> ResponseReturnValue:
        form = form_values("guest_name", "valid_for", "kind")
        if not jid:
            return render(Outcome(NO_RELAY, "error"), form)
        if form["valid_for"] not in VALID_FOR or form["kind"] not in KINDS:
            return render(Outcome("Choose how long the invite works and for how many calls.", "error"), form)
        try:
            invite = make(form)
        except InviteError as e:
            return render(Outcome(f"{e} Nothing was made.", "error", {"guest_name": str(e)}), form)
        flash(
            f"Invite for {invite.name} made. Send {invite.name} the link below, in a message or an e-mail; "
            f"it works until {_until(invite)}.",
            "info",
        )
        return redirect(url_for("guests.guests") + f"#invite-{invite.id}")

    @bp.post("/guests/revoke")
    @owner_page
    def revoke() -> ResponseReturnValue:
        invite = invites.revoke(request.form.get("invite", ""))
        if invite is None:
            flash("That invite had already ended. Nothing was changed.", "info")
        else:
            ended = f" The call with {invite.name} has ended." if withdrawn(invite) else ""
            flash(f"{invite.name}'s invite is withdrawn: the link no longer rings this unit.{ended}", "info")
        return redirect(url_for("guests.guests"))

    return bp


NO_RELAY = (
    "This unit has no relay, so a guest's browser cannot reach it and no invite was made. "
    "Guests call through a relay: ask whoever runs yours to add this unit (relay/unit add), then set "
    "[relay] jid in the unit's configuration."
)


def _until(invite: Invite) -> str:
    return time.strftime("%A %d %B %Y, %H:%M", time.localtime(invite.expires))
