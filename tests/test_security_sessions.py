"""Security review M3 (issue 16): owner sessions live on the unit, end at logout, never outlast
``session_hours``; the data directory and the database are private to the service's user."""

from __future__ import annotations

import sqlite3
import stat
import time
from pathlib import Path

import pytest

from appliance import state
from appliance.state import StateStore
from tests.hostile import request_from
from tests.pairing_units import Unit

COOKIE = "emocall_session"


def _as(unit: Unit, cookie: str, method: str, path: str, body: object = None, csrf: str = "") -> int:
    headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf}
    return request_from("127.0.0.1", unit.address, method, path, body, headers)[0]


def test_m3_a_copied_cookie_is_worthless_after_logout(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    copied = browser.get_cookie(COOKIE)
    assert copied is not None
    # The copy works while the session is open, from anywhere...
    assert _as(a, copied.value, "GET", "/api/settings") == 200
    r = browser.post("/logout", data={"csrf": csrf["X-CSRF-Token"]})
    assert r.status_code == 302
    # ...and not at all once the owner logged out: reading and changing are refused.
    assert _as(a, copied.value, "GET", "/api/settings") == 401
    assert _as(a, copied.value, "PATCH", "/api/settings", {"auto_answer": True}, csrf["X-CSRF-Token"]) == 401
    assert a.store.settings().auto_answer is False
    assert browser.get("/api/settings").status_code == 401


def test_m3_the_api_logout_ends_the_session_too(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    browser, csrf = a.owner()
    copied = browser.get_cookie(COOKIE)
    assert copied is not None
    assert browser.post("/api/owner/logout", headers=csrf).get_json() == {"owner": False}
    assert _as(a, copied.value, "GET", "/api/peers") == 401


def test_m3_a_forged_cookie_from_a_read_database_is_refused(units: tuple[Unit, Unit]) -> None:
    """Whoever reads state.db has the cookie key, but not a session: only token hashes are stored."""
    a, _ = units
    a.owner()
    with sqlite3.connect(a.store.path) as db:
        rows = db.execute("SELECT token_hash FROM sessions").fetchall()
    assert len(rows) == 1
    serializer = a.app.session_interface.get_signing_serializer(a.app)  # type: ignore[attr-defined]
    for forged in (
        {"owner_until": time.time() + 30 * 86400, "csrf": "x"},
        {"owner": rows[0][0], "csrf": "x"},  # the stored hash is not the token
    ):
        cookie = serializer.dumps(forged)
        assert _as(a, cookie, "GET", "/api/settings") == 401
        assert _as(a, cookie, "PATCH", "/api/settings", {"auto_answer": True}, "x") == 401
    assert a.store.settings().auto_answer is False


def test_m3_a_session_never_outlasts_session_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        long = store.open_session(hours=720)
        short = store.open_session(hours=1)
        assert store.session_left(long, hours=12) > 0 and store.session_left(short, hours=12) > 0
        boot, now = state.boot_clock()
        monkeypatch.setattr(state, "boot_clock", lambda: (boot, now + 13 * 3600))
        # The cap applies whatever the row says (as a lower session_hours would after a restart).
        assert store.session_left(long, hours=12) == 0
        assert store.session_left(short, hours=12) == 0
        assert store.session_left(long, hours=720) > 0
        store.close_session(long)
        assert store.session_left(long, hours=720) == 0
    finally:
        store.close()


def test_m3_the_login_cookie_is_secure_over_https(units: tuple[Unit, Unit]) -> None:
    a, _ = units
    for base, secure in (("https://127.0.0.1", True), ("http://127.0.0.1", False)):
        client = a.app.test_client()
        r = client.get("/api/owner", base_url=base)
        csrf = r.get_json()["csrf"]
        assert (
            client.post("/api/owner/code", headers={"X-CSRF-Token": csrf}, base_url=base).status_code == 202
        )
        r = client.post(
            "/api/owner/login", json={"code": a.code("owner")}, headers={"X-CSRF-Token": csrf}, base_url=base
        )
        assert r.status_code == 200, r.get_json()
        cookie = r.headers["Set-Cookie"]
        assert ("; Secure" in cookie) is secure, cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_m3_the_data_directory_and_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "state.db").touch(mode=0o644)
    store = StateStore(data / "state.db")
    try:
        store.update_settings({"volume": 10})
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    finally:
        store.close()


def test_m3_a_session_is_timed_by_the_boot_not_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi starts with the time it saved and network time steps it: a login opened before that
    ended as the unit joined Wi-Fi (a step forward of days), or outlasted session_hours (back)."""
    store = StateStore(tmp_path / "state.db")
    try:
        token = store.open_session(hours=12)
        real = time.time
        for step in (30 * 86400, -2 * 3600):
            monkeypatch.setattr(time, "time", lambda step=step: real() + step)
            assert store.session_left(token, hours=12) > 0
            assert 11.9 * 3600 < store.session_left(token, hours=12) <= 12 * 3600
        boot, now = state.boot_clock()
        monkeypatch.setattr(state, "boot_clock", lambda: (boot, now + 12.1 * 3600))
        assert store.session_left(token, hours=12) == 0
        monkeypatch.setattr(state, "boot_clock", lambda: ("another boot", now))
        assert store.session_left(token, hours=12) == 0  # a login ends with its boot
    finally:
        store.close()


def test_m3_sessions_of_an_older_release_are_ended_not_misread(tmp_path: Path) -> None:
    """Rows from before the boot clock (wall-clock times, no boot) are dropped when the store opens."""
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "CREATE TABLE sessions (token_hash TEXT PRIMARY KEY, opened REAL NOT NULL, until REAL NOT NULL)"
        )
        db.execute("INSERT INTO sessions VALUES ('x', ?, ?)", (time.time(), time.time() + 3600))
    store = StateStore(tmp_path / "state.db")
    try:
        token = store.open_session(hours=12)
        assert store.session_left(token, hours=12) > 0
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1
    finally:
        store.close()
