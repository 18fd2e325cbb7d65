"""What the unit keeps, on the settings page (``_privacy.html``): its privacy controls and its backup.

Whether expressions are shared is asked until the owner answers (the answer goes to the status
page's sharing form); "forget everything" erases what the unit stored and starts it as new
(``appliance.app.Appliance.forget_everything``), after a ticked confirmation. The backup
(``appliance/backup.py``) is the unit's key, pairings and settings for after a new release is
flashed: a form, not a link, so that it carries the session's CSRF token, and never cached.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from appliance.backup import FILE_NAME, BackupError
from appliance.web import owner
from appliance.web.page_access import owner_page
from appliance.web.parts import UnitParts
from appliance.web.wording import Outcome

FORGOTTEN = "Everything this unit stored is being erased. You are logged out."
UNCONFIRMED = 'Nothing was erased: tick "Yes, erase everything" first, then press "Forget everything".'


def privacy_blueprint(parts: UnitParts) -> Blueprint:
    bp = Blueprint("privacy", __name__)

    @bp.app_context_processor
    def privacy_facts() -> dict[str, Any]:
        return {"sharing_answered": parts.store.sharing_answered}

    # Whether the card keeps it all (parts.forget's answer), once the erase was asked here: this
    # blueprint is made anew when the unit starts again as new.
    erasing: list[bool] = []

    def forgotten(card_kept: bool) -> ResponseReturnValue:
        return render_template("forgotten.html", outcome=Outcome(FORGOTTEN, "info"), card_kept=card_kept)

    @bp.post("/forget")
    def forget() -> ResponseReturnValue:
        if erasing:
            # The form sent again (a double press, a reload) while the unit erases: its login ended
            # with the erase, and "nothing was changed" would tell the owner to erase again.
            return forgotten(erasing[0])
        return confirmed_forget()

    @owner_page
    def confirmed_forget() -> ResponseReturnValue:
        if parts.forget is None:
            abort(503, "This unit cannot forget everything as it runs now: delete its data directory.")
        if request.form.get("confirm") != "yes":
            flash(UNCONFIRMED, "error")
            return redirect(url_for("pages.settings"))  # no #fragment: the message takes the focus
        erasing.append(parts.forget())
        owner.end_owner(erasing=True)  # what the login opened is being erased: no login left
        return forgotten(erasing[0])

    @bp.post("/backup")
    @owner_page
    def backup() -> ResponseReturnValue:
        if parts.backup is None:
            abort(503, "This unit cannot make a backup as it runs now: copy its data directory.")
        try:
            archive = parts.backup()
        except BackupError as e:
            flash(f"No backup was made: {e}.", "error")
            return redirect(url_for("pages.settings"))
        disposition = f'attachment; filename="{FILE_NAME}"'
        headers = {"Content-Disposition": disposition, "Cache-Control": "no-store"}
        return Response(archive, mimetype="application/x-tar", headers=headers)

    return bp
