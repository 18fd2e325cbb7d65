"""Guest invites: signed by the unit, bound to a name, expiring, one-time or standing, revocable;
and the owner's page that makes, lists and withdraws them."""

from __future__ import annotations

import dataclasses
import html
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.app import Appliance
from appliance.guests.invites import KIND, Invite, InviteError, InviteRefused, Invites, _b64, _unb64
from appliance.guests.pages import guests_blueprint
from appliance.identity import Identity
from appliance.state import StateStore
from appliance.web.api import create_app
from tests.conftest import appliance_config
from tests.pairing_units import Unit, make_unit

JID = "kitchen@relay.example.org"
DAY = 86400.0


class Clock:
    """The invites' clock, moved by the test instead of waiting a day."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def invites(tmp_path: Path, clock: Clock) -> Iterator[Invites]:
    store = StateStore(tmp_path / "state.db", defaults={"display_name": "Asha"})
    yield Invites(Identity.load_or_create(tmp_path / "identity.key"), store, clock)
    store.close()


def refused(invites: Invites, token: str) -> InviteRefused:
    with pytest.raises(InviteRefused) as e:
        invites.check(token)
    return e.value


def rings(invites: Invites, token: str) -> Invite:
    """A guest's call with ``token`` rings the unit: the invite is checked, then used."""
    invite = invites.check(token)
    invites.use(invite)
    return invite


def test_a_standing_invite_works_until_it_expires(invites: Invites, clock: Clock) -> None:
    invite = invites.create(" Priya ", DAY, once=False)
    token = invites.token(invite, JID)
    for _ in range(3):
        assert rings(invites, token).name == "Priya"
    clock.now += DAY - 1
    assert rings(invites, token).id == invite.id
    clock.now += 1
    e = refused(invites, token)
    assert e.reason == "expired" and "Ask Asha for a new link" in str(e)
    assert invites.listed() == []
    assert invites.revoke(invite.id) is None  # it had already ended: the page says so
    assert refused(invites, token).reason == "expired"


def test_ended_invites_are_deleted_a_month_later_and_still_refused_as_ended(
    invites: Invites, clock: Clock, tmp_path: Path
) -> None:
    """The table does not grow for the unit's life; a guest with a link from long ago is told it
    expired, not that it is forged."""
    old = invites.create("Priya", DAY, once=False)
    token = invites.token(old, JID)
    clock.now += DAY + 29 * DAY
    invites.create("Bela", DAY, once=False)
    assert refused(invites, token).reason == "expired"
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT COUNT(*) FROM invites").fetchone() == (2,)  # a month after it ended: kept
    clock.now += 2 * DAY
    invites.create("Chandra", DAY, once=False)
    assert [r[0] for r in db.execute("SELECT name FROM invites ORDER BY name")] == ["Bela", "Chandra"]
    e = refused(invites, token)
    assert e.reason == "expired" and "Ask Asha for a new link" in str(e)
    db.close()


@pytest.mark.parametrize("end", ["revoked", "used"])
def test_a_long_invite_ended_and_deleted_is_refused_as_ended(
    invites: Invites, clock: Clock, end: str
) -> None:
    """A year's invite withdrawn or used up is deleted a month later, still within its year: its
    guest was told the link "was not made by this unit"."""
    invite = invites.create("Priya", 365 * DAY, once=True)
    token = invites.token(invite, JID)
    if end == "revoked":
        assert invites.revoke(invite.id) is not None
    else:
        rings(invites, token)
    clock.now += 31 * DAY
    assert invites.listed() == []
    e = refused(invites, token)
    assert (e.reason, str(e)) == ("ended", "This invite has ended. Ask Asha for a new link.")


@pytest.mark.parametrize("look", ["restart", "listed", "checked"])
def test_ended_invites_are_deleted_a_month_later_with_no_new_invite(
    tmp_path: Path, clock: Clock, look: str
) -> None:
    """They were deleted only when the next invite was made: with none made, a guest's name and
    when they called stayed in the state database for the unit's life."""
    me = Identity.load_or_create(tmp_path / "identity.key")
    store = StateStore(tmp_path / "state.db")
    invites = Invites(me, store, clock)
    token = invites.token(invites.create("Priya", DAY, once=True), JID)
    rings(invites, token)
    clock.now += 400 * DAY
    if look == "restart":
        Invites(me, store, clock)
    elif look == "listed":
        assert invites.listed() == []
    else:
        assert refused(invites, token).reason == "expired"
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT COUNT(*) FROM invites").fetchone() == (0,)
    db.close()
    files = {f.name: f.read_bytes() for f in tmp_path.glob("state.db*")}  # the WAL too, the store open
    assert "state.db" in files and [name for name, data in files.items() if b"Priya" in data] == []
    store.close()


def test_ended_invites_are_deleted_while_the_unit_runs(tmp_path: Path) -> None:
    """A unit runs for months without a restart, and nobody may open the guests' page meanwhile:
    an invite that ended over a month ago stayed in the state database, the guest's name with it."""
    unit = Appliance(appliance_config(tmp_path / "asha", "Asha")).start()
    running = threading.Thread(target=unit.wait)
    try:
        long_ago = time.time() - 40 * DAY
        with unit.store.transaction() as db:  # type: ignore[union-attr]
            db.execute(
                "INSERT INTO invites (id, name, created, expires, once, used) VALUES (?, ?, ?, ?, 1, ?)",
                ("0" * 16, "Priya", long_ago, long_ago + DAY, long_ago),
            )
        running.start()
        deadline = time.monotonic() + 10
        with sqlite3.connect(tmp_path / "asha" / "state.db") as db:
            while db.execute("SELECT COUNT(*) FROM invites").fetchone() != (0,):
                assert time.monotonic() < deadline, "the ended invite was not deleted"
                time.sleep(0.2)
    finally:
        unit.stop()
        running.join(10)
        unit.close()


def test_a_one_time_invite_rings_once(invites: Invites) -> None:
    invite = invites.create("Priya", DAY, once=True)
    token = invites.token(invite, JID)
    assert invites.check(token).name == "Priya"  # looking does not use it up
    assert rings(invites, token).name == "Priya"
    e = refused(invites, token)
    assert e.reason == "used" and "one call only" in str(e)
    assert not invites.use(invite)  # used already: a second call cannot use it again
    assert invites.listed() == []
    assert invites.revoke(invite.id) is None  # used up: nothing left to withdraw


def test_a_revoked_invite_is_refused_at_once(invites: Invites) -> None:
    kept = invites.create("Ravi", DAY, once=False)
    token = invites.token(invites.create("Priya", DAY, once=False), JID)
    revoked = invites.revoke(invites.check(token).id)
    assert revoked is not None and revoked.name == "Priya"
    assert refused(invites, token).reason == "revoked"
    assert invites.revoke(revoked.id) is None  # already ended: nothing to revoke
    assert [i.id for i in invites.listed()] == [kept.id]


def test_forged_and_altered_invites_are_refused(invites: Invites, tmp_path: Path) -> None:
    token = invites.token(invites.create("Priya", DAY, once=True), JID)
    payload, signature = token.split(".")
    fields = _unb64(payload).replace(b'"Priya"', b'"Mallory"')
    other = Identity.load_or_create(tmp_path / "other.key")
    forgeries = {
        "another name, same signature": f"{_b64(fields)}.{signature}",
        "signed by another unit": f"{payload}.{_b64(other.sign(KIND + _unb64(payload)))}",
        "cut short": token[:-5],
        "not base64": "%%%.%%%",
        "empty": "",
        "huge": "A" * 100_000,
    }
    for what, forged in forgeries.items():
        e = refused(invites, forged)
        assert e.reason == "forged", what
        assert "Ask for a new link" in str(e) or "copied whole" in str(e), what
    assert rings(invites, token).name == "Priya"  # none of them used the real one up


def test_an_invite_of_another_unit_does_not_open_this_one(invites: Invites, tmp_path: Path) -> None:
    other_store = StateStore(tmp_path / "other.db")
    other = Invites(Identity.load_or_create(tmp_path / "other.key"), other_store)
    token = other.token(other.create("Priya", DAY, once=False), JID)
    assert refused(invites, token).reason == "forged"
    other_store.close()


def test_bad_invites_are_not_made(invites: Invites) -> None:
    for name in ("", "   ", "x" * 41, "Pri\nya"):
        with pytest.raises(InviteError, match="guest's name"):
            invites.create(name, DAY, once=True)
    for seconds in (0, 10, 400 * DAY):
        with pytest.raises(InviteError, match="how long"):
            invites.create("Priya", seconds, once=True)
    assert invites.listed() == []


def test_invites_outlive_a_restart(tmp_path: Path, clock: Clock) -> None:
    me = Identity.load_or_create(tmp_path / "identity.key")
    store = StateStore(tmp_path / "state.db")
    first = Invites(me, store, clock)
    once = first.token(first.create("Priya", DAY, once=True), JID)
    rings(first, once)
    revoked = first.create("Ravi", DAY, once=False)
    first.revoke(revoked.id)
    store.close()
    store = StateStore(tmp_path / "state.db")
    again = Invites(Identity.load_or_create(tmp_path / "identity.key"), store, clock)
    assert refused(again, once).reason == "used"
    assert refused(again, again.token(revoked, JID)).reason == "revoked"
    store.close()


# The owner's page ------------------------------------------------------------------------------------


def with_guests(unit: Unit, jid: str) -> Unit:
    """The unit's web app with the guests page, as the composition root builds it."""
    bp = guests_blueprint(Invites(unit.me, unit.store), jid, lambda: {"state": "connected"})
    return dataclasses.replace(unit, app=create_app(lambda: {"name": unit.name}, unit.parts, [bp]))


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    made = make_unit(tmp_path, "Asha")
    yield with_guests(made, JID)
    made.close()


def links(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="link" value="([^"]+)"', page)]


def test_the_owner_makes_lists_and_withdraws_invites(unit: Unit) -> None:
    browser, csrf = unit.owner()
    empty = browser.get("/guests").get_data(as_text=True)
    assert "No invite is open." in empty and 'aria-current="page">Guests</a>' in empty
    made = browser.post(
        "/guests",
        data={"csrf": csrf["X-CSRF-Token"], "guest_name": "Priya", "valid_for": "3600", "kind": "once"},
    )
    assert made.status_code == 302 and "/guests#invite-" in made.headers["Location"]
    page = browser.get("/guests").get_data(as_text=True)
    assert "Invite for Priya made. Send Priya the link below" in page
    [link] = links(page)
    assert link.startswith("https://relay.example.org:5281/guest/#")
    invites = Invites(unit.me, unit.store)
    invite = invites.check(link.split("#", 1)[1])
    assert (invite.name, invite.once) == ("Priya", True)
    assert 3590 < invite.expires - invite.created <= 3600
    gone = browser.post("/guests/revoke", data={"csrf": csrf["X-CSRF-Token"], "invite": invite.id})
    assert gone.status_code == 302
    after = browser.get("/guests").get_data(as_text=True)
    assert "Priya&#39;s invite is withdrawn" in after and links(after) == []
    assert refused(invites, link.split("#", 1)[1]).reason == "revoked"
    again = browser.post("/guests/revoke", data={"csrf": csrf["X-CSRF-Token"], "invite": invite.id})
    assert "already ended" in browser.get(again.headers["Location"]).get_data(as_text=True)


def test_a_bad_invite_form_says_what_to_type_and_makes_nothing(unit: Unit) -> None:
    browser, csrf = unit.owner()
    token = csrf["X-CSRF-Token"]
    bad_name = browser.post(
        "/guests", data={"csrf": token, "guest_name": " ", "valid_for": "3600", "kind": "once"}
    )
    text = bad_name.get_data(as_text=True)
    assert bad_name.status_code == 422
    assert "Type the guest&#39;s name: 1 to 40 letters" in text and 'aria-invalid="true"' in text
    bad_choice = browser.post(
        "/guests", data={"csrf": token, "guest_name": "Priya", "valid_for": "9", "kind": "x"}
    )
    assert bad_choice.status_code == 422 and "Choose how long" in bad_choice.get_data(as_text=True)
    assert 'value="Priya"' in bad_choice.get_data(as_text=True)  # what was typed is kept
    assert Invites(unit.me, unit.store).listed() == []


def test_the_invite_form_sent_twice_makes_one_invite(unit: Unit) -> None:
    """A double press or a reload of "Make the invite link" made a second live invite (for up to a
    year, any number of calls) that the owner never sent and did not know rang the unit."""
    browser, csrf = unit.owner()
    form = {"csrf": csrf["X-CSRF-Token"], "guest_name": "Priya", "valid_for": "31536000", "kind": "standing"}
    first, second = (browser.post("/guests", data=form) for _ in range(2))
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]  # the same invite, shown again
    assert [i.name for i in Invites(unit.me, unit.store).listed()] == ["Priya"]
    other = browser.post("/guests", data={**form, "kind": "once"})  # another invite asked for: made
    assert other.status_code == 302 and len(Invites(unit.me, unit.store).listed()) == 2


def test_a_guest_name_follows_the_unit_names_rule(unit: Unit) -> None:
    """The name is said to the owner and shown on the guest's page: a bidi override or a line
    separator in it is refused, as in a unit's name; ZWJ and ZWNJ (Hindi, Bengali) are not."""
    browser, csrf = unit.owner()
    form = {"csrf": csrf["X-CSRF-Token"], "valid_for": "3600", "kind": "once"}
    for name in ("\u202eayirP", "Pri\u2028ya", "Pri\u0085ya", "Pri\u2066ya", "\u3164", "\u2800", "\u200d"):
        page = browser.post("/guests", data={**form, "guest_name": name})
        assert page.status_code == 422, name
        assert "Type the guest&#39;s name: 1 to 40 letters" in page.get_data(as_text=True)
    assert Invites(unit.me, unit.store).listed() == []
    hindi = "\u092a\u094d\u0930\u093f\u092f\u093e \u0915\u094d\u200d\u0937"  # प्रिया क्‍ष
    assert browser.post("/guests", data={**form, "guest_name": hindi}).status_code == 302
    assert [i.name for i in Invites(unit.me, unit.store).listed()] == [hindi]


def test_a_unit_without_a_relay_explains_and_makes_no_invite(unit: Unit) -> None:
    alone = with_guests(unit, "")
    browser, csrf = alone.owner()
    page = browser.get("/guests").get_data(as_text=True)
    assert "This unit has no relay yet" in page and "Make the invite link" not in page
    tried = browser.post(
        "/guests",
        data={"csrf": csrf["X-CSRF-Token"], "guest_name": "Priya", "valid_for": "3600", "kind": "once"},
    )
    assert tried.status_code == 422 and "no invite was made" in tried.get_data(as_text=True)
    assert Invites(unit.me, unit.store).listed() == []


def test_only_the_owner_sees_or_changes_invites(unit: Unit) -> None:
    invites = Invites(unit.me, unit.store)
    invite = invites.create("Priya", DAY, once=False)
    visitor = unit.app.test_client()
    page = visitor.get("/guests")
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")
    csrf = visitor.get("/api/owner").get_json()["csrf"]
    made = visitor.post(
        "/guests", data={"csrf": csrf, "guest_name": "Mallory", "valid_for": "3600", "kind": "once"}
    )
    revoked = visitor.post("/guests/revoke", data={"csrf": csrf, "invite": invite.id})
    assert made.status_code == revoked.status_code == 401
    owner, _ = unit.owner()
    no_csrf = owner.post("/guests/revoke", data={"invite": invite.id})
    foreign = owner.get("/guests", headers={"Host": "evil.example"})
    from_elsewhere = owner.post(
        "/guests/revoke", data={"invite": invite.id}, headers={"Origin": "https://evil.example"}
    )
    assert (no_csrf.status_code, foreign.status_code, from_elsewhere.status_code) == (403, 400, 403)
    assert [i.name for i in invites.listed()] == ["Priya"]
