"""Who may do what from a browser: owner presence, CSRF tokens, and the pages' security headers.

Looking at or changing anything needs the owner-presence session: the browser typed the code the
unit was saying, so someone stands at the unit. The session lives in Flask's signed cookie
(HttpOnly, SameSite=Strict) for ``session_hours``. Every state-changing request from a browser also
carries the session's CSRF token: a form field ``csrf`` or the ``X-CSRF-Token`` header. (The call
engine's own ``/api/call`` and ``/api/hangup`` answer only the unit itself, on loopback.)
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Response, abort, request, session

P = ParamSpec("P")
R = TypeVar("R")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
CHANGES = ("POST", "PUT", "PATCH", "DELETE")
LOGIN_FIRST = "enter the code the unit is saying first (POST /api/owner/code, then /api/owner/login)"


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def csrf_ok() -> bool:
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    token = session.get("csrf")
    return isinstance(token, str) and hmac.compare_digest(sent.encode(), token.encode())


def is_owner() -> bool:
    until = session.get("owner_until")
    return isinstance(until, int | float) and time.time() < until


def grant_owner(hours: float) -> None:
    session.clear()
    session.permanent = True
    session["owner_until"] = time.time() + hours * 3600
    csrf_token()


def source() -> str:
    """The address this request comes from: what code limits count per."""
    return request.remote_addr or ""


def is_local() -> bool:
    """A request from the unit itself (loopback): its command line and scripts."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def owner_only(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse (401/403) unless the owner-presence session is valid and, for changes, the CSRF token."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not is_owner():
            abort(401, LOGIN_FIRST)
        if request.method in CHANGES and not csrf_ok():
            abort(403, "the CSRF token is missing or wrong: reload the page")
        return view(*args, **kwargs)

    return wrapped


def csrf_only(view: Callable[P, R]) -> Callable[P, R]:
    """For the changes a visitor may make before being the owner (asking for a code)."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not csrf_ok():
            abort(403, "the CSRF token is missing or wrong: reload the page")
        return view(*args, **kwargs)

    return wrapped


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if response.mimetype == "text/html" or request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response
