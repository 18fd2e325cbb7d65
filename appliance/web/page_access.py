"""Who may use a page: the owner, logged in with the code the unit says (``owner.py``).

Other blueprints' pages (privacy, Wi-Fi) use :func:`owner_page` too; a change sent without a live
login raises :class:`LoggedOut`, which the pages answer with the login page (HTTP 401).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

from flask import flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from appliance.web import owner

P = ParamSpec("P")
PageView = Callable[P, ResponseReturnValue]
LOGIN_ENDED = "Your login has ended. Ask the unit for a new code to log in again."


class LoggedOut(Exception):
    """A change sent without a live owner login; the login page says so (HTTP 401)."""


def owner_page(view: PageView[P]) -> PageView[P]:
    """Send a visitor to the login page (saying so when a login ended); refuse forms without CSRF token."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if not owner.is_owner():
            if request.method in owner.CHANGES:
                raise LoggedOut()
            if session.pop(owner.WAS_OWNER, None) is not None:
                flash(LOGIN_ENDED, "info")
            return redirect(url_for("pages.login"))
        if request.method in owner.CHANGES and not owner.csrf_ok():
            owner.refuse_stale()
        return view(*args, **kwargs)

    return wrapped


def form_values(*names: str) -> dict[str, str]:
    """The named fields of the posted form, as typed (kept when the form is shown again)."""
    return {n: request.form.get(n, "") for n in names}
