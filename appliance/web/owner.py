"""Who may do what from a browser: owner presence, CSRF tokens, and the pages' security headers.

Looking at or changing anything needs the owner-presence session: the browser typed the code the
unit was saying, so someone stands at the unit. The session is a row in the state store
(:meth:`~appliance.state.StateStore.open_session`, checked on every request, ended at logout, never
longer than ``session_hours``); Flask's signed cookie (HttpOnly, SameSite=Strict, Secure when the
page came over HTTPS) only carries its random token, so a copied cookie dies with the logout.
Every state-changing request from a browser also carries the session's CSRF token: a form field
``csrf`` or the ``X-CSRF-Token`` header.

Against pages elsewhere that make a browser send requests here (DNS rebinding, cross-site forms),
:func:`guard_request` refuses a ``Host`` that is not one of this unit's names or an address, a
foreign ``Origin`` on changes, and any ``Origin`` on the unit-to-unit routes (units send none). The
call engine's own ``/api/call``, ``/api/hangup`` and ``/api/call/answer`` answer only the unit itself
(:func:`is_local_control`: loopback and the ``X-Emocall-Local`` header, which no page can add
without the browser asking this unit first).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, ParamSpec, TypeVar

from flask import Flask, Request, Response, abort, current_app, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature
from werkzeug.exceptions import Forbidden

from appliance.pairing.service import AGAIN_S
from appliance.state import StateError, StateStore

P = ParamSpec("P")
R = TypeVar("R")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
CHANGES = ("POST", "PUT", "PATCH", "DELETE")
LOGIN_FIRST = "enter the code the unit is saying first (POST /api/owner/code, then /api/owner/login)"
# A change without the session's CSRF token: the API names the token, a page says what to do (the
# owner's browser sent a form from a page older than the session, or from before a restart).
CSRF_REFUSED = "the CSRF token is missing or wrong: reload the page"
STALE_PAGE = "This page is out of date. Reload it and try again."
EXTENSION = "emocall.sessions"
HOSTS = "EMOCALL_HOSTS"  # app.config: this unit's own host names (besides any IP address)
LOCAL_HEADER = "X-Emocall-Local"
LISTENING = "emocall.listening"  # app.config: the one address the web server listens on, if one
PEER_PATHS = ("/api/peer/", "/api/call/signal")
SESSION_KEY = "owner"  # the cookie's key for the session token
CSRF_BEFORE = "csrf_before"  # the CSRF token this browser held before its latest login
WAS_OWNER = "was_owner"  # the cookie's mark of a login, kept after it ends


@dataclass(frozen=True)
class OwnerSessions:
    """Where owner sessions live and how long one may last (``[web] session_hours``)."""

    store: StateStore
    hours: float


class OwnerCookie(SecureCookieSessionInterface):
    """Flask's signed session cookie, marked Secure whenever the page was served over HTTPS, with no
    time of its own. A Pi has no clock that runs while it is off: the unit may be hours or days
    behind the browser until network time arrives (or for good, without internet), and an Expires
    from its clock would be in the browser's past (the cookie dropped as it is set: no login
    possible), a signature's age below zero after the clock is set back refused. How long a login
    lasts is the session row's to say (:func:`is_owner`)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> None:
        return None  # a browser-session cookie: nothing in it is timed by the unit's clock

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        try:  # signed, not timed (no max_age): see the class's docstring
            return self.session_class(serializer.loads(request.cookies.get(self.get_cookie_name(app), "")))
        except BadSignature:
            return self.session_class()


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def held_before() -> bool:
    """Whether the form's CSRF token is the one this browser held before its latest login: a page
    of its own from then (another tab logged in anew), not a form from anywhere else."""
    sent = request.form.get("csrf") or ""
    before = session.get(CSRF_BEFORE)
    return bool(sent) and isinstance(before, str) and hmac.compare_digest(sent.encode(), before.encode())


def csrf_ok() -> bool:
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    token = session.get("csrf")
    return isinstance(token, str) and hmac.compare_digest(sent.encode(), token.encode())


def _sessions() -> OwnerSessions:
    sessions: OwnerSessions = current_app.extensions[EXTENSION]
    return sessions


def login_left() -> float:
    """How many seconds this browser's owner session has left (0: none), asked of the store once
    per request."""
    if "emocall_login_left" not in g:
        # 0 until the store says: a read that fails is answered 503, and the error page, asking
        # again, is drawn for a visitor instead of failing on the same read.
        g.emocall_login_left = 0.0
        token, sessions = session.get(SESSION_KEY), _sessions()
        if isinstance(token, str):
            g.emocall_login_left = sessions.store.session_left(token, sessions.hours)
    return float(g.emocall_login_left)


def is_owner() -> bool:
    """Whether this browser's session is open on the unit now."""
    return login_left() > 0


def grant_owner() -> None:
    """Make this browser the owner for ``session_hours``, in a new session. The token it held
    before is remembered (``held_before``): a settings form from a page of the last login is kept."""
    before = session.get("csrf")
    end_owner()
    if isinstance(before, str):
        session[CSRF_BEFORE] = before
    sessions = _sessions()
    session[SESSION_KEY] = sessions.store.open_session(sessions.hours)
    session[WAS_OWNER] = True  # a page after the login's end says it ended (page_access.py)
    g.emocall_login_left = sessions.hours * 3600
    csrf_token()


def end_owner(*, erasing: bool = False) -> None:
    """Log out: the session ends on the unit, so every copy of the cookie stops working.

    ``erasing``: the store is being erased ("forget everything"), sessions with it, so a write the
    card refuses now does not keep the owner's login (nor tell them the erase failed)."""
    token = session.get(SESSION_KEY)
    if isinstance(token, str):
        try:
            _sessions().store.close_session(token)
        except StateError:
            if not erasing:
                raise
    session.clear()
    g.emocall_login_left = 0.0


class RecentLogins:
    """The logins of the last AGAIN_S, by the CSRF token of the form that made them, what it
    proved (the code typed, or "button") and the address it came from: the same login form posted
    again (a double click, a resent form) gets the session the first post opened, once. Its code or
    button press is spent by then, so the second post would otherwise say the code has expired to
    an owner who is logged in, or not (a browser that dropped the first answer keeps the cookie from
    before it). A copy of that cookie elsewhere gets nothing: another address is another key."""

    def __init__(self) -> None:
        # One login at a time: the second post of a double click, sent before the first is
        # answered, waits for the first's session (opening one writes to the card) instead of
        # finding the proof spent.
        self._serial = threading.Lock()
        self._opened: dict[tuple[str, str, str], tuple[float, dict[str, object]]] = {}

    def enter(
        self, proof: str, refused: Callable[[], ResponseReturnValue | None]
    ) -> ResponseReturnValue | None:
        """Log this browser in: with the session this form opened with ``proof``, if that is recent
        and open, else once ``refused`` (the check of the proof) has no answer of its own, which is
        then returned."""
        key = (csrf_token(), proof, source())
        with self._serial:
            now = time.monotonic()
            self._opened = {k: v for k, v in self._opened.items() if v[0] > now}
            opened = self._opened.pop(key, None)
            if opened is not None and self._resume(opened[1]):
                return None
            refusal = refused()
            if refusal is not None:
                return refusal
            grant_owner()
            self._opened[key] = (now + AGAIN_S, dict(session))
        return None

    @staticmethod
    def _resume(cookie: dict[str, object]) -> bool:
        token, sessions = cookie.get(SESSION_KEY), _sessions()
        left = sessions.store.session_left(token, sessions.hours) if isinstance(token, str) else 0.0
        if left <= 0:
            return False  # logged out since: the proof is spent, so the form says so
        session.clear()
        session.update(cookie)
        g.emocall_login_left = left
        return True


def source() -> str:
    """The address this request comes from: what code limits count per."""
    return request.remote_addr or ""


def own_names(unit_id: str) -> frozenset[str]:
    """The names this unit answers to: localhost, the machine's name and its mDNS name."""
    machine = socket.gethostname().lower()
    return frozenset({"localhost", machine, f"{machine}.local", f"emocall-{unit_id[:12]}.local"})


def _own_host(host: str) -> bool:
    name = host.lower()
    if name.startswith("["):  # an IPv6 address, [::1]:8080
        return True
    name = name.rsplit(":", 1)[0] if ":" in name else name
    try:
        ipaddress.ip_address(name)
        return True  # an address typed by hand: rebinding needs a name
    except ValueError:
        hosts: frozenset[str] = current_app.config[HOSTS]
        return name.rstrip(".") in hosts


def guard_request() -> None:
    """Refuse what a web page elsewhere could make a browser send here (see the module docstring)."""
    origin = request.headers.get("Origin")
    if request.path.startswith(PEER_PATHS):
        if origin is not None:
            abort(403, "unit-to-unit requests do not come from web pages")
        return
    if not _own_host(request.host):
        abort(400, "this unit answers only to its own name or address: open it as http://ADDRESS:PORT/")
    if origin is not None and request.method in CHANGES and origin != f"{request.scheme}://{request.host}":
        abort(403, "a request from another web site was refused")


def is_local_control() -> bool:
    """A request from this unit's own command line: loopback and the local-control header."""
    return is_local() and request.headers.get(LOCAL_HEADER) == "1"


def is_local() -> bool:
    """A request from the unit itself: its command line and scripts. From loopback; or, where the
    unit listens on one LAN address (``[web] host``) and so not on loopback, from that address,
    which only this machine can send from (Linux drops a packet that comes in from outside with
    one of the machine's own addresses as its source)."""
    remote = request.remote_addr or ""
    try:
        if ipaddress.ip_address(remote).is_loopback:
            return True
        # 0.0.0.0 (every address) is also what a request through the relay has for its remote.
        listening = ipaddress.ip_address(current_app.config.get(LISTENING, ""))
    except ValueError:
        return False
    return not listening.is_unspecified and remote == str(listening)


def owner_only(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse (401/403) unless the owner-presence session is valid and, for changes, the CSRF token."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not is_owner():
            abort(401, LOGIN_FIRST)
        if request.method in CHANGES and not csrf_ok():
            refuse_stale()
        return view(*args, **kwargs)

    return wrapped


def csrf_only(view: Callable[P, R]) -> Callable[P, R]:
    """For the changes a visitor may make before being the owner (asking for a code)."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        if not csrf_ok():
            refuse_stale()
        return view(*args, **kwargs)

    return wrapped


class StaleForm(Forbidden):
    """A page's form without this session's CSRF token: from before the latest login (another tab
    logged in anew), or from elsewhere. 403, said as a page out of date."""

    description = STALE_PAGE


def refuse_stale() -> NoReturn:
    """Refuse a change that lacks the CSRF token (403), in the API's words or the pages'."""
    if request.path.startswith("/api/"):
        abort(403, CSRF_REFUSED)
    raise StaleForm()


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # Nothing leaves for other sites; the unit's own forms keep their Origin (no-referrer would turn it
    # into "null", which guard_request cannot tell from a page elsewhere).
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if response.mimetype == "text/html" or request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response
