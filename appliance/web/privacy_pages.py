"""The owner's privacy controls, a block of their own on the settings page (``_privacy.html``).

Whether expressions are shared is asked until the owner answers (the answer goes to the status
page's sharing form); "forget everything" erases what the unit stored and starts it as new
(``appliance.app.Appliance.forget_everything``), after a ticked confirmation.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue

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

    return bp
