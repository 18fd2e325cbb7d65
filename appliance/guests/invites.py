"""Invites for guests who call from a browser: signed by the unit, bound to a name, expiring.

An invite is a link the owner sends (``https://RELAY:5281/guest/#TOKEN``). The token is the
invite's fields (its id, this unit's id, relay address and name, the guest's name, when it ends,
whether it works once) and the unit's Ed25519 signature over them, so nobody can make one or change the
name or the time in one. The unit also keeps each invite in its state store: the owner lists and
revokes them there, and a one-time invite is marked used by the first call it rings. The token
sits in the link's fragment, which browsers never send to a server, so the relay's web logs never
hold it; the page sends it with each offer through the relay, so a guest's call trusts the relay's
operator (README, "Guests in a browser").
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.identity import Identity
from appliance.state import StateStore, valid_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS invites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    once INTEGER NOT NULL,
    used REAL,
    revoked REAL
);
"""
COLUMNS = "SELECT id, name, created, expires, once, used, revoked FROM invites"
KIND = b"emocall-invite-v1\n"  # so an invite's signature never passes for a request's or an answer's
MAX_TOKEN = 1024
# How long an invite may last: a minute at least, a year at most (a standing invite for family).
MIN_SECONDS = 60
MAX_SECONDS = 366 * 24 * 3600
# Ended invites (expired, withdrawn, used up) are kept this long for the page and the guest's
# message, then deleted (at start, whenever invites are made, listed or checked, and hourly): neither the
# table nor the guests' names are kept for the unit's life, new invites or not.
KEEP_ENDED_S = 30 * 24 * 3600


class InviteError(Exception):
    """An invite cannot be made, or a token is not a live invite; the message says what to do."""


class InviteRefused(InviteError):
    """A guest's invite does not open a call: ``reason`` is forged, expired, revoked or used, or
    ended: withdrawn or used up, then forgotten a month later (also for a re-offer or a bye of no
    call the unit knows: see appliance.guests.calls)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Invite:
    id: str
    name: str
    created: float
    expires: float
    once: bool
    used: float | None = None
    revoked: float | None = None

    def open(self, now: float) -> bool:
        return self.revoked is None and self.expires > now and not (self.once and self.used is not None)


class Invites:
    """The unit's invites: made, listed, revoked and checked against its identity and state store."""

    def __init__(self, me: Identity, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._me, self._store, self._clock = me, store, clock
        with store.transaction() as db:
            db.execute(SCHEMA)
        self.prune()

    def create(self, name: str, seconds: float, once: bool) -> Invite:
        """A new invite for the guest ``name``, valid ``seconds`` from now. Raises InviteError."""
        name = name.strip()
        if not valid_name(name):
            raise InviteError("Type the guest's name: 1 to 40 letters, digits or spaces.")
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise InviteError("Choose how long the invite works: from a minute to a year.")
        now = self._clock()
        invite = Invite(secrets.token_hex(8), name, now, now + seconds, once)
        self.prune(now)
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO invites (id, name, created, expires, once) VALUES (?, ?, ?, ?, ?)",
                (invite.id, invite.name, invite.created, invite.expires, int(invite.once)),
            )
        return invite

    def listed(self) -> list[Invite]:
        """The invites still open (not expired, revoked or used up), soonest to end first."""
        now = self._clock()
        self.prune(now)
        return [i for i in self._rows() if i.open(now)]

    def revoke(self, invite_id: str) -> Invite | None:
        """End an invite at once; the revoked invite, or None when there is no open one by that id."""
        now = self._clock()
        with self._store.transaction() as db:
            # The same test as Invite.open, in the UPDATE so that checking and ending are one step.
            changed = db.execute(
                "UPDATE invites SET revoked = ? WHERE id = ? AND revoked IS NULL AND expires > ?"
                " AND NOT (once AND used IS NOT NULL)",
                (now, invite_id, now),
            ).rowcount
        return self._row(invite_id) if changed else None

    def token(self, invite: Invite, jid: str) -> str:
        """The signed token for ``invite``, for a unit reached at the relay address ``jid``."""
        fields = {
            "v": 1,
            "id": invite.id,
            "unit": self._me.unit_id,
            "jid": jid,
            "name": invite.name,
            "owner": self._owner(),  # whom the guest's page says they call
            "exp": int(invite.expires),
            "once": invite.once,
        }
        payload = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._me.sign(KIND + payload))}"

    def check(self, token: str) -> Invite:
        """The live invite ``token`` stands for (:meth:`use` uses it up, once its call rings).

        Raises InviteRefused (forged, expired, revoked, used).
        """
        fields = self._verified(token)
        now = self._clock()
        self.prune(now)
        invite = self._row(str(fields.get("id", "")))
        exp = fields.get("exp")
        if invite is None:  # signed here (checked above): it ended over KEEP_ENDED_S ago, then deleted
            # Still valid, it was withdrawn or used up: which of the two went with its row.
            ended = "expired" if isinstance(exp, int) and exp <= now else "ended"
            raise InviteRefused(ended, f"This invite has {ended}. Ask {self._owner()} for a new link.")
        if fields.get("name") != invite.name or exp != int(invite.expires):
            raise InviteRefused("forged", "This invite was not made by this unit. Ask for a new link.")
        if invite.revoked is not None:
            raise InviteRefused("revoked", f"This invite was withdrawn. Ask {self._owner()} for a new link.")
        if invite.expires <= now:
            raise InviteRefused("expired", f"This invite has expired. Ask {self._owner()} for a new link.")
        if invite.once and invite.used is not None:
            raise InviteRefused(
                "used", f"This invite worked for one call only. Ask {self._owner()} for a new link."
            )
        return invite

    def matches(self, token: str, invite: Invite) -> bool:
        """Whether ``token`` is this unit's signed token for ``invite`` (used up or not)."""
        try:
            return self._verified(token).get("id") == invite.id
        except InviteRefused:
            return False

    def _verified(self, token: str) -> dict[str, object]:
        forged = InviteRefused("forged", "This link is not a valid invite. Check that it was copied whole.")
        payload_b64, _, signature_b64 = token[:MAX_TOKEN].partition(".")
        try:
            payload, signature = _unb64(payload_b64), _unb64(signature_b64)
            Ed25519PublicKey.from_public_bytes(self._me.public_key).verify(signature, KIND + payload)
            fields = json.loads(payload)
        except (InvalidSignature, binascii.Error, ValueError) as e:
            raise forged from e
        if not isinstance(fields, dict) or fields.get("unit") != self._me.unit_id:
            raise forged
        return fields

    def withdrawn(self, invite: Invite) -> bool:
        """Whether the owner has withdrawn ``invite`` since it was checked."""
        row = self._row(invite.id)
        return row is None or row.revoked is not None

    def use(self, invite: Invite) -> bool:
        """Mark the invite used (a one-time one is then used up); False when it already was."""
        with self._store.transaction() as db:
            return bool(
                db.execute(
                    "UPDATE invites SET used = ? WHERE id = ? AND used IS NULL", (self._clock(), invite.id)
                ).rowcount
            )

    def prune(self, now: float | None = None) -> None:
        """Delete the invites that ended over KEEP_ENDED_S ago, the guest's name with them (at start,
        whenever invites are made, listed or checked, and hourly while the unit runs)."""
        long_ago = (self._clock() if now is None else now) - KEEP_ENDED_S
        with self._store.transaction(scrub=True) as db:
            db.execute(
                "DELETE FROM invites WHERE expires < ? OR revoked < ? OR (once AND used < ?)",
                (long_ago, long_ago, long_ago),
            )

    def _owner(self) -> str:
        return self._store.settings().display_name

    def _rows(self, where: str = "", *args: str) -> list[Invite]:
        with self._store.transaction() as db:
            rows = db.execute(f"{COLUMNS} {where} ORDER BY expires", args).fetchall()
        return [Invite(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def _row(self, invite_id: str) -> Invite | None:
        rows = self._rows("WHERE id = ?", invite_id)
        return rows[0] if rows else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
