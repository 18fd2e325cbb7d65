"""What the unit keeps, on the settings page (``_privacy.html``): its privacy controls and its backup.

Whether expressions are shared is asked until the owner answers (the answer goes to the status
page's sharing form); "forget everything" erases what the unit stored and starts it as new
(``appliance.app.Appliance.forget_everything``), after a ticked confirmation. The backup
(``appliance/backup.py``) is the unit's key, pairings and settings for after a new release is
flashed: a form, not a link, so that it carries the session's CSRF token, and never cached.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from flask.typing import ResponseReturnValue

from appliance.backup import FILE_NAME, BackupError
from appliance.web.page_access import owner_page
from appliance.web.parts import UnitParts


def privacy_blueprint(parts: UnitParts) -> Blueprint:
    bp = Blueprint("privacy", __name__)

    @bp.app_context_processor
    def privacy_facts() -> dict[str, Any]:
        return {"sharing_answered": parts.store.sharing_answered}

    @bp.post("/forget")
    @owner_page
    def forget() -> ResponseReturnValue:
        if parts.forget is None:
            abort(503, "This unit cannot forget everything as it runs now: delete its data directory.")
        if request.form.get("confirm") != "yes":
            abort(400, 'Tick "Yes, erase everything" first, then press the button again.')
        return render_template("forgotten.html", outcome=None, card_kept=parts.forget())

    @bp.post("/backup")
    @owner_page
    def backup() -> ResponseReturnValue:
        if parts.backup is None:
            abort(503, "This unit cannot make a backup as it runs now: copy its data directory.")
        try:
            archive = parts.backup()
        except BackupError as e:
            abort(503, f"No backup was made: {e}.")
        disposition = f'attachment; filename="{FILE_NAME}"'
        headers = {"Content-Disposition": disposition, "Cache-Control": "no-store"}
        return Response(archive, mimetype="application/x-tar", headers=headers)

    return bp
