"""The unit's persistent state in SQLite: identity reference, settings and paired units.

The database lives in the data directory (mode 0700; the database itself 0600, and SQLite gives its
WAL files the same mode) in WAL mode with ``synchronous=FULL``, and every change is one transaction,
so a power cut or a kill -9 leaves either the old or the new state, never half. It also holds the
owner's browser sessions (:meth:`StateStore.open_session`): only a hash of each token, so reading
the file gives no usable cookie. Personal data deleted (an unpaired unit, a closed session, an
ended invite) is overwritten in the file and the WAL emptied at once (``transaction(scrub=True)``).
Other parts read settings through :meth:`StateStore.settings` (a cached, immutable snapshot, cheap to
call per event) and learn about changes from the ``settings.changed`` event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from appliance.events import EventBus
from appliance.identity import unit_id_of

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
    unit_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    public_key BLOB NOT NULL,
    paired_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    unit_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    stamp REAL NOT NULL,
    PRIMARY KEY (unit_id, nonce)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    boot TEXT NOT NULL,
    opened REAL NOT NULL,
    until REAL NOT NULL
);
"""

# How long a signed request's nonce is kept: twice the hour between two saves of the clock
# (image-build: emocall-clock-save.timer), the furthest a unit without network time starts behind.
KEEP_NONCES_S = 2 * 3600.0

Announcements = Literal["speech", "tones", "both", "off"]
Verbosity = Literal["short", "full"]
# A name is spoken, shown, logged and sent to the other unit, so it holds no character of Unicode's
# categories Cc (controls, C1's U+0085 too), Zl and Zp (U+2028, U+2029: line breaks in a log) or Cf
# (invisible format characters: bidi overrides such as U+202E reorder what is shown), except ZWNJ
# and ZWJ (U+200C, U+200D), which Hindi and Bengali names need. Listed from Unicode 14 (Python
# 3.11's unicodedata; tests/test_web.py checks it against that), as escapes both Python's re and
# pydantic's Rust regex read.
NAME_RULE = "a name cannot hold a control character, a line break or an invisible formatting character"
NAME_PATTERN = (
    r"^[^\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b"
    r"\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    r"\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]+$"
)


# Characters that show nothing although their category says they would (Hangul fillers, the
# braille blank): a name of them alone is no name.
BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")
NOTHING_SHOWS = "a name needs at least one character that shows"


def shows(name: str) -> bool:
    """Whether ``name`` holds a character that shows (a letter, digit, symbol or punctuation: "🌻"
    and "Zoë" do): one of joiners, combining marks, spaces, braille blanks or Hangul fillers alone
    was taken, and the unit's name was read and shown as nothing."""
    return any(unicodedata.category(c)[0] in "LNSP" and c not in BLANK for c in name)


def _named(name: str) -> str:
    if not shows(name):
        raise ValueError(NOTHING_SHOWS)
    return name


# A unit's display name as every part takes it (settings, ``[unit] name``): one rule, one place.
DisplayName = Annotated[str, Field(min_length=1, max_length=40, pattern=NAME_PATTERN), AfterValidator(_named)]
_DISPLAY_NAME: TypeAdapter[str] = TypeAdapter(DisplayName)


def valid_name(name: str) -> bool:
    """Whether ``name`` (from elsewhere: another unit's Hello, a guest's invite) keeps DisplayName's rule."""
    try:
        _DISPLAY_NAME.validate_python(name)
    except ValidationError:
        return False
    return True


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: one "boot" per process
        return secrets.token_hex(16)


BOOT_ID = _boot_id()


# Linux's clock since boot, suspend included; elsewhere (development only) the monotonic clock.
BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def boot_clock() -> tuple[str, float]:
    """This boot's id, and the seconds since it began: a clock that network time does not step."""
    return BOOT_ID, time.clock_gettime(BOOT_CLOCK)


class StateError(Exception):
    """The state database cannot be opened or written."""


class StateUnreadable(StateError):
    """The state database could not be read (a failing card)."""


class StateDamaged(StateError):
    """SQLite found the state database damaged as it opened (a failing card): :func:`repair`."""


class SettingsError(StateError):
    """A settings change is not valid; the message names the field and what it accepts."""


class Settings(BaseModel):
    """What the owner sets on the settings page. Every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    display_name: DisplayName = Field("emocall", description="The name the other unit says")
    announcements: Announcements = Field(
        "speech", description="How events are announced: speech, tones, both, off"
    )
    verbosity: Verbosity = Field(
        "full", description='"full" says "Asha looks happy", "short" says "Asha: happy"'
    )
    voice_language: str = Field(
        "en", pattern=r"^[a-z]{2,3}(-[a-z0-9]{1,8})*$", description="espeak-ng voice, e.g. en, en-gb, de, fr"
    )
    volume: int = Field(80, ge=0, le=100, description="Speaker volume in percent")
    auto_answer: bool = Field(False, description="Answer calls from paired units without the button")
    share_expressions: bool = Field(
        False,
        description="Send my facial expression to the other unit during calls (off until the owner "
        "says yes: faces are analysed only in calls that share)",
    )


@dataclass(frozen=True)
class Peer:
    """A paired unit: its pinned public key and where it was last reached."""

    unit_id: str
    name: str
    address: str
    public_key: bytes
    paired_at: float
    guest: bool = False  # a guest calling from a browser with an invite (appliance/guests/), never stored


def name_number(peer: Peer, peers: Iterable[Peer]) -> int | None:
    """``peer``'s number among the paired units of its name (as spoken: case aside), in the order
    they were paired (a unit paired again counts from then), or None when no other unit has it: how
    the owner tells two units named Mum apart, in the button's choice and in every sentence and
    page about a call."""
    same = [p for p in peers if p.unit_id != peer.unit_id and p.name.casefold() == peer.name.casefold()]
    if not same:
        return None
    return sorted([*same, peer], key=_pairing_order).index(peer) + 1


def _pairing_order(peer: Peer) -> tuple[float, str]:
    return peer.paired_at, peer.unit_id  # by id when two were paired in the same instant


def heard_name(peer: Peer, peers: Iterable[Peer]) -> str:
    """``peer``'s name as the owner hears and reads it: "Mum (2)" for the second paired of two
    units named Mum (:func:`name_number`), else its name. In brackets, which espeak-ng says as
    pauses around the number, and a unit named "Room 2" beside two named Room stays apart."""
    n = name_number(peer, peers)
    return peer.name if n is None else f"{peer.name} ({n})"


def as_heard(peers: list[Peer]) -> list[Peer]:
    """``peers``, each named as the owner hears it: for the pages, never stored."""
    return [dataclasses.replace(p, name=heard_name(p, peers)) for p in peers]


class StateStore:
    def __init__(
        self, path: Path, events: EventBus | None = None, defaults: Mapping[str, Any] | None = None
    ) -> None:
        """``defaults`` (from the configuration) apply to settings the owner has not changed."""
        self._events = events
        self._lock = threading.RLock()
        self._saving = threading.RLock()  # a settings save and its announcement (update_settings)
        self._db = _open(path)
        self.path = path
        self._defaults = Settings.model_validate(defaults or {}).model_dump()
        self._unreadable: list[str] = []  # stored settings that are not JSON (see _load_settings)
        self._settings = self._load_settings()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the lock to read; a read that fails (a failing card) is a StateError, so the pages
        answer 503 with the store's sentence and the call engine refuses plainly, not a bare 500."""
        with self._lock, _said(self.path, "read"):
            yield

    @contextmanager
    def transaction(self, scrub: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic change: committed when the block ends, rolled back if it raises.

        ``scrub`` for one that deletes personal data: what it deleted stays readable in the WAL
        file (state.db-wal) until a checkpoint, which a quiet unit may not reach for months (SQLite
        checkpoints by itself at 1000 pages), so a commit that changed rows is checkpointed at once
        and the WAL emptied."""
        with self._lock, _said(self.path):
            changes = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite ends one itself on some errors (disk I/O)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if scrub and self._db.total_changes != changes:
                self._checkpoint()

    def _checkpoint(self) -> None:
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:  # a reader (``emocall say``) held it past the timeout: the next scrub empties it
            log.warning(
                "the state database's WAL file could not be emptied: deleted data stays in it a while"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta --------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._reading():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_or_create(self, key: str, make: str) -> str:
        """The stored value for ``key``; stores ``make`` first if there is none."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, make))
            return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def remember_identity(self, unit_id: str) -> None:
        """Record which identity owns this state (the unit says a change first: ``Appliance``)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('unit_id', ?)", (unit_id,))

    def session_secret(self) -> bytes:
        """The key that signs the owner's browser session, created once per unit."""
        return bytes.fromhex(self.meta_or_create("session_secret", secrets.token_hex(32)))

    # -- owner sessions ------------------------------------------------------------------------------

    # Sessions are timed by the boot's own clock (:func:`boot_clock`), not the wall clock: a Pi starts
    # with the time it saved, hours or months behind, and network time then steps it forward (a
    # login opened on the setup hotspot ended as the unit joined Wi-Fi), or back (a login lasted
    # longer than session_hours). A session ends with the boot it was opened in.

    def open_session(self, hours: float) -> str:
        """A new owner session for ``hours``: its token (for the browser's cookie), stored hashed."""
        token = secrets.token_urlsafe(32)
        boot, now = boot_clock()
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE boot != ? OR until <= ?", (boot, now))
            db.execute(
                "INSERT INTO sessions (token_hash, boot, opened, until) VALUES (?, ?, ?, ?)",
                (_hashed(token), boot, now, now + hours * 3600),
            )
        return token

    def session_left(self, token: str, hours: float) -> float:
        """How many seconds the session ``token`` has left (0: none open), capped at ``hours`` from
        its start even if the row says later (a shortened ``session_hours`` applies to sessions
        already open)."""
        boot, now = boot_clock()
        with self._reading():
            row = self._db.execute(
                "SELECT opened, until FROM sessions WHERE token_hash = ? AND boot = ?", (_hashed(token), boot)
            ).fetchone()
        return 0.0 if row is None else max(0.0, min(row[1], row[0] + hours * 3600) - now)

    def close_session(self, token: str) -> None:
        """End one session (logout): its cookie is worth nothing from now on, wherever it was copied."""
        with self.transaction(scrub=True) as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_hashed(token),))

    def close_all_sessions(self) -> None:
        with self.transaction(scrub=True) as db:
            db.execute("DELETE FROM sessions")

    # -- settings ----------------------------------------------------------------------------------

    def _stored_settings(self) -> tuple[dict[str, Any], list[str]]:
        """The stored settings that read as JSON, and the keys of those that do not (only a damaged
        or hand-edited row): each costs only its own setting."""
        with self._reading():
            rows = dict(self._db.execute("SELECT key, value FROM settings").fetchall())
        stored: dict[str, Any] = {}
        not_json: list[str] = []
        for key, value in sorted(rows.items()):
            if key not in Settings.model_fields:
                continue
            try:
                stored[key] = json.loads(value)
            except (ValueError, TypeError):
                not_json.append(key)
        return stored, not_json

    def _load_settings(self) -> Settings:
        """The stored settings; one that is not valid (not JSON, hand-edited, or stored by a release
        whose rules were looser, such as a name with a bidi mark) falls back to its default alone."""
        stored, not_json = self._stored_settings()
        if not_json:
            log.warning("stored settings %s are not JSON; using their defaults", ", ".join(not_json))
        self._unreadable = not_json  # deleted at the next save (their values are the defaults now)
        try:
            return Settings.model_validate({**self._defaults, **stored})
        except ValidationError as e:
            bad = refused_keys(e)
            log.warning("stored settings are not valid (%s); using the defaults of %s", describe(e), bad)
            try:
                return Settings.model_validate(
                    {**self._defaults, **{k: v for k, v in stored.items() if k not in bad}}
                )
            except ValidationError:
                pass  # a default itself is not valid (the config's name): the model's own defaults
        return Settings.model_validate(self._defaults)

    def settings(self) -> Settings:
        return self._settings

    def sharing_answered(self) -> bool:
        """Whether the owner has said if expressions are shared (until then they are not, and asked)."""
        return self.meta("sharing_answered") is not None

    def update_settings(self, changes: Mapping[str, Any]) -> Settings:
        """Validate and store ``changes`` in one transaction; raises SettingsError and changes nothing.

        Saves are announced (``settings.changed``) in the order they were stored: the next save
        waits for the listeners of this one, so none of them is left on older settings."""
        with self._saving:
            new, changed = self._store_settings(changes)
            if changed and self._events is not None:
                self._events.publish(
                    "settings.changed", "Settings saved", changed=changed, settings=new.model_dump()
                )
        return new

    def _store_settings(self, changes: Mapping[str, Any]) -> tuple[Settings, list[str]]:
        with self._lock:
            try:
                new = Settings.model_validate({**self._settings.model_dump(), **changes})
            except ValidationError as e:
                raise SettingsError(describe(e)) from e
            changed = [k for k in Settings.model_fields if getattr(new, k) != getattr(self._settings, k)]
            with self.transaction() as db:
                for key in self._unreadable:
                    db.execute("DELETE FROM settings WHERE key = ?", (key,))
                for key in changed:
                    db.execute(
                        "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                        (key, json.dumps(getattr(new, key))),
                    )
                if "share_expressions" in changes:  # the owner answered, even if with the default
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sharing_answered', '1')")
            self._unreadable = []
            self._settings = new
        return new, changed

    # -- signed requests' nonces ---------------------------------------------------------------------

    def first_nonce(self, unit_id: str, nonce: str, stamp: float) -> bool:
        """Record that ``unit_id`` sent ``nonce`` in a request stamped ``stamp``; False when it had
        (a replay). Kept KEEP_NONCES_S by the request's own time: a clock set back by up to that
        much (a restart without network time) still finds the requests it answered."""
        with self.transaction() as db:
            db.execute("DELETE FROM nonces WHERE stamp < ?", (time.time() - KEEP_NONCES_S,))
            try:
                db.execute(
                    "INSERT INTO nonces (unit_id, nonce, stamp) VALUES (?, ?, ?)", (unit_id, nonce, stamp)
                )
            except sqlite3.IntegrityError:
                return False
        return True

    # -- paired units ------------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """By name as spoken (case aside, any script's: SQLite's NOCASE folds only A-Z), units of one
        name in their numbers' order (:func:`name_number`)."""
        with self._reading():
            rows = self._db.execute(
                "SELECT unit_id, name, address, public_key, paired_at FROM peers"
            ).fetchall()
        peers = [Peer(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]
        return sorted(peers, key=lambda p: (p.name.casefold(), *_pairing_order(p)))

    def peer(self, unit_id_or_name: str) -> Peer | None:
        """The paired unit with this id, or else with this display name (case-insensitive)."""
        peers = self.peers()
        by_id = [p for p in peers if p.unit_id == unit_id_or_name]
        by_name = [p for p in peers if p.name.casefold() == unit_id_or_name.casefold()]
        matches = by_id or by_name
        return matches[0] if matches else None

    def peer_key(self, unit_id: str) -> bytes | None:
        """The pinned public key of a paired unit (an ``identity.PeerKeys`` lookup)."""
        with self._reading():
            row = self._db.execute("SELECT public_key FROM peers WHERE unit_id = ?", (unit_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def add_peer(self, unit_id: str, name: str, address: str, public_key: bytes) -> Peer:
        peer = Peer(unit_id, name, address, public_key, time.time())
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO peers (unit_id, name, address, public_key, paired_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (peer.unit_id, peer.name, peer.address, peer.public_key, peer.paired_at),
            )
        return peer

    def rename_peer(self, unit_id: str, name: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE peers SET name = ? WHERE unit_id = ?", (name, unit_id))

    def update_address(self, unit_id: str, address: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE peers SET address = ? WHERE unit_id = ?", (address, unit_id))

    def remove_peer(self, unit_id: str) -> bool:
        """Unpair: the unit's row and nonces overwritten, and any damaged file a repair kept (it
        may hold the unit too)."""
        with self.transaction(scrub=True) as db:
            db.execute("DELETE FROM nonces WHERE unit_id = ?", (unit_id,))
            removed = db.execute("DELETE FROM peers WHERE unit_id = ?", (unit_id,)).rowcount > 0
        drop_old_damaged(self.path, keep=0)
        return removed

    def check(self) -> None:
        """Raise StateError unless the database and its rows are intact and every stored setting is
        valid under this release's rules (used by tests and selftest)."""
        self.check_intact()
        stored, not_json = self._stored_settings()
        if not_json:
            raise StateError(f"stored settings are not valid: {', '.join(not_json)} not JSON")
        try:
            Settings.model_validate(stored)
        except ValidationError as e:
            raise StateError(f"stored settings are not valid: {describe(e)}") from e

    def drop_refused_settings(self) -> list[str]:
        """Delete the stored settings this release refuses (not JSON, or a value another release
        took): their defaults apply, as at every start, and ``check`` passes. Their keys."""
        stored, refused = self._stored_settings()
        try:
            Settings.model_validate(stored)
        except ValidationError as e:
            refused += sorted(refused_keys(e))  # not-JSON ones are not in ``stored``
        if refused:
            with self.transaction() as db:
                db.executemany("DELETE FROM settings WHERE key = ?", [(key,) for key in refused])
        return refused

    def check_intact(self) -> None:
        """Raise StateError unless the database is whole and its paired units usable: what the unit
        cannot start without (a setting it refuses falls back to its default, ``_load_settings``)."""
        with self._reading():
            result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise StateError(f"the state database {self.path} is damaged: {result}")
        if any(len(p.public_key) != 32 or not p.unit_id for p in self.peers()):
            raise StateError("a paired unit has no valid public key")


STATE_FILE = "state.db"  # in the unit's data folder


def stored_setting(path: Path, key: str) -> Any:
    """One of the owner's settings read without writing, for when the store is not open (``emocall
    say``) or cannot be (a read-only card, say). The settings' own default when it is not stored (the
    store keeps only what differs from it), cannot be read, or is not of the default's type."""
    default = Settings.model_fields[key].default
    try:
        db = read_only_connection(path)
    except StateError:
        return default
    try:
        row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        value = json.loads(row[0]) if row else default
    except (sqlite3.Error, ValueError, TypeError):
        return default
    finally:
        db.close()
    return value if isinstance(value, type(default)) else default


def stored_language(path: Path) -> str:
    """The owner's ``voice_language`` (see ``stored_setting``); ``en`` when it cannot be read."""
    return str(stored_setting(path, "voice_language"))


def read_only_connection(path: Path) -> sqlite3.Connection:
    """The database at ``path`` opened without writing anything; StateError when it cannot be."""
    # Read-only first (it sees what is still in the WAL); where SQLite cannot open the WAL database so
    # (no right to make its -shm file), "immutable" reads the file as it lies (a clean close leaves
    # nothing in the WAL).
    problem: sqlite3.Error | None = None
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(f"file:{path}?{mode}", uri=True)
        except sqlite3.Error as e:
            problem = e
            continue
        try:
            db.execute("SELECT count(*) FROM settings").fetchone()  # the file is read only at a query
            return db
        except sqlite3.Error as e:
            db.close()
            problem = e
    raise StateError(f"cannot read the state database {path}: {problem}")


def _open(path: Path) -> sqlite3.Connection:
    try:
        _private(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    except (sqlite3.Error, OSError) as e:
        raise StateError(f"cannot open the state database {path}: {e} (check the data directory)") from e
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL makes each commit durable at once; NORMAL could lose the last commits on power loss.
        db.execute("PRAGMA synchronous=FULL")
        # Deleted rows (a name, a guest's invite) are overwritten, not only unlinked: SQLite's
        # default is whatever it was compiled with.
        db.execute("PRAGMA secure_delete=ON")
        db.executescript(SCHEMA)
        if "boot" not in {row[1] for row in db.execute("PRAGMA table_info(sessions)")}:
            # Sessions timed by the wall clock (a release before boot_clock): ended, logged in anew.
            db.executescript("DROP TABLE sessions;" + SCHEMA)
        # A damaged page (how an SD card fails) is found now, said as the unit cannot start, and
        # left as it is: not a traceback at the first read, restarted by systemd unheard.
        damage = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as e:
        db.close()
        problem = f"cannot open the state database {path}: {e} (is the memory card damaged?)"
        if e.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise StateDamaged(problem) from e
        raise StateError(problem) from e
    if damage != "ok":
        db.close()
        raise StateDamaged(f"the state database {path} is damaged: {damage} (is the memory card failing?)")
    return db


# Not carried over by a repair: the owner's browser sessions and their secret (they log in again:
# the pages ask), and guests' invites (an invite's end is one value in its row, and a failing card
# may give back an older copy of its page: a revoked invite would ring the unit again; the owner
# sends new ones, as the sentence says).
NOT_REPAIRED = frozenset({"sessions", "invites"})
NOT_REPAIRED_META = ("session_secret",)
# Damaged files are kept for whoever helps: the three newest (a card failing again and again fills
# no more), for 30 days at most, and only until the owner unpairs a unit (StateStore.remove_peer),
# which they may still hold.
KEEP_DAMAGED = 3
KEEP_DAMAGED_S = 30 * 86400.0
DAMAGED_TIME = "%Y%m%dT%H%M%S.%fZ"  # in the damaged file's name, UTC


@dataclass(frozen=True)
class Repair:
    """What :func:`repair` did."""

    damaged: Path  # where the damaged file now lies, as it was found
    rows: int  # the rows read back from it: 0 when none could be
    peers: tuple[str, ...]  # the paired units read back, by name


def repair(path: Path) -> Repair:
    """Make the damaged database at ``path`` anew of the rows that still read, table by table
    (each as far as it reads: the rows on whole pages), and keep the damaged file beside it as
    ``state.db.damaged-<when>`` (with its WAL), as SQLite left it when it found the damage (it
    folds a WAL into the file as it closes it), for whoever helps the owner. The new
    database is written whole under another name first, and takes the damaged one's place only
    once its rows are safe. A paired unit is kept only when its id is its key's and its name a
    name: a row that reads is not proof that it is whole."""
    damaged = _kept_before(path) or damaged_name(path)
    source = damaged if damaged.exists() else path  # a repair cut short: it kept the WAL there
    fresh = path.with_name(path.name + ".repaired")
    for leftover in _with_wal(fresh):  # a repair cut short: made again from the start
        leftover.unlink(missing_ok=True)
    db = _open(fresh)
    try:
        with _said(fresh):
            db.execute("BEGIN IMMEDIATE")
            rows = _copy_readable(source, db)
            peers = _keep_whole_peers(db)
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file that is renamed
    finally:
        db.close()
    _replace(path, damaged, fresh)
    drop_old_damaged(path)
    log.warning("state database damaged: %d rows read back, the damaged file kept as %s", rows, damaged)
    return Repair(damaged, rows, peers)


def _replace(path: Path, damaged: Path, fresh: Path) -> None:
    """Link the damaged file and its WAL under ``damaged``, then put ``fresh`` in its place: cut
    short anywhere, the unit finds the damaged file (repaired again, read through ``damaged``,
    which keeps its WAL) or the repaired one, never none."""
    try:
        for old, new in zip(_with_wal(path), _with_wal(damaged), strict=True):
            if old.exists() and not new.exists():
                os.link(old, new)
        for old in _with_wal(path)[1:]:  # the damaged file's WAL is not the repaired one's
            old.unlink(missing_ok=True)
        fresh.rename(path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the renames on the card before the unit goes on
        finally:
            os.close(folder)
    except OSError as e:
        raise StateError(f"cannot put the repaired state database in place: {e.strerror}") from e


def repair_cut_short(path: Path) -> bool:
    """Whether a repair of ``path`` was cut short after it linked the damaged file aside: the file
    at ``path`` is still the damaged one, and must be repaired again before it is opened (opened,
    SQLite would read it without its WAL and write to it)."""
    return _kept_before(path) is not None


def _kept_before(path: Path) -> Path | None:
    """The damaged file a repair cut short linked already (the same file as ``path``), if any."""
    if not path.exists():
        return None
    return next((p for p in _damaged_files(path) if os.path.samefile(p, path)), None)


def _keep_whole_peers(db: sqlite3.Connection) -> tuple[str, ...]:
    rows = db.execute("SELECT unit_id, name, public_key FROM peers").fetchall()
    broken = [
        (unit_id,)
        for unit_id, name, key in rows
        if not isinstance(key, bytes) or unit_id_of(key) != unit_id or not valid_name(str(name))
    ]
    db.executemany("DELETE FROM peers WHERE unit_id = ?", broken)
    return tuple(str(n) for (n,) in db.execute("SELECT name FROM peers ORDER BY paired_at, unit_id"))


def damaged_name(path: Path) -> Path:
    """``state.db.damaged-<UTC time to the microsecond>`` (``identity.key.damaged-...`` for the
    key): never the name of one kept before (a rename would replace it), and in the order they were
    made."""
    return path.with_name(f"{path.name}.damaged-{datetime.now(UTC).strftime(DAMAGED_TIME)}")


def _damaged_files(path: Path) -> list[Path]:
    """The damaged files kept beside ``path`` (not their WALs, nor names a repair does not give),
    oldest first."""
    found = []
    for p in path.parent.glob(f"{path.name}.damaged-*"):
        try:
            made = datetime.strptime(p.name.rsplit("-", 1)[1], DAMAGED_TIME)
        except ValueError:  # a WAL, or not a name the repair gives: not ours
            continue
        found.append((made, p))
    return [p for _, p in sorted(found)]


def _with_wal(path: Path) -> tuple[Path, Path, Path]:
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _copy_readable(path: Path, db: sqlite3.Connection) -> int:
    """Copy into ``db`` every row of the database at ``path`` that reads; how many."""
    # Read as it lies, creating nothing beside it (no -wal, no -shm), unless a WAL holds its newest rows.
    mode = "ro" if path.with_name(path.name + "-wal").exists() else "ro&immutable=1"
    try:
        source = sqlite3.connect(f"file:{path}?mode={mode}", uri=True)
    except sqlite3.Error:
        return 0
    copied = 0
    try:
        tables = source.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:  # its first page, the list of tables, is gone: nothing can be found
        tables = []
    known = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for name, sql in tables:
        # Our tables' names are plain words (this module's, relay contacts'): nothing else is
        # quoted into a statement below.
        if not re.fullmatch(r"[a-z][a-z_]*", name) or name.startswith("sqlite_") or name in NOT_REPAIRED:
            continue
        if name not in known:  # another part's table (relay contacts): its own schema
            db.execute(sql)
        copied += _copy_table(source, db, name)
    source.close()
    db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in NOT_REPAIRED_META])
    return copied


def _copy_table(source: sqlite3.Connection, db: sqlite3.Connection, table: str) -> int:
    """The rows of ``table`` that read, in the columns both databases have (an older or newer
    release's table may have others); how many."""
    rows: list[tuple[Any, ...]] = []
    try:
        have = [r[1] for r in source.execute(f'PRAGMA table_info("{table}")')]
        wanted = {r[1] for r in db.execute(f'PRAGMA table_info("{table}")')}
        columns = ", ".join(f'"{c}"' for c in have if c in wanted and re.fullmatch(r"[a-z][a-z_]*", c))
        for row in source.execute(f'SELECT {columns} FROM "{table}"'):  # noqa: S608 (plain words)
            rows.append(row)  # up to the first page that does not read
    except sqlite3.Error as e:
        log.warning("state database repair: table %s read as far as %d rows: %s", table, len(rows), e)
    if not rows:
        return 0
    before = db.total_changes
    marks = ", ".join("?" * len(rows[0]))
    db.executemany(f'INSERT OR IGNORE INTO "{table}" ({columns}) VALUES ({marks})', rows)  # noqa: S608
    return db.total_changes - before  # not a row this release's table refuses (NOT NULL, a key twice)


def drop_old_damaged(path: Path, keep: int = KEEP_DAMAGED) -> None:
    """Delete the damaged files kept beside ``path`` (by :func:`repair`, or the unit for its key)
    past ``keep`` (the oldest) or KEEP_DAMAGED_S (by the time in their names). "Forget everything"
    deletes them too (``state.db*``, ``identity.key*``)."""
    kept = _damaged_files(path)
    now = datetime.now(UTC).replace(tzinfo=None)  # as the names are read: UTC, without a zone
    for n, old in enumerate(kept):
        made = datetime.strptime(old.name.rsplit("-", 1)[1], DAMAGED_TIME)
        if n < len(kept) - keep or (now - made).total_seconds() > KEEP_DAMAGED_S:
            for file in _with_wal(old):
                try:
                    file.unlink(missing_ok=True)
                except OSError as e:  # a card turned read-only: tried again within the hour
                    log.warning("could not delete the damaged file %s: %s", file, e.strerror)


@contextmanager
def _said(path: Path, doing: Literal["read", "written"] = "written") -> Iterator[None]:
    """SQLite's errors (a full, damaged or failing card) as StateError, which the unit says and the
    pages show, rather than a traceback and a restart loop."""
    try:
        yield
    except sqlite3.Error as e:
        if doing == "read":
            raise StateUnreadable(
                f"the state database {path} cannot be read: {e} (is the card failing?)"
            ) from e
        raise StateError(f"the state database {path} cannot be written: {e} (is the card full?)") from e


def _hashed(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _private(path: Path) -> None:
    """The data directory 0700 and the database 0600, created so or tightened if they exist."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


def describe(e: ValidationError) -> str:
    """A validation error as one line per field: what is wrong and with which value."""
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{key}: {what_is_wrong(err)}")
    return "; ".join(parts)


def refused_keys(e: ValidationError) -> set[str]:
    """The settings ``e`` refuses, by key."""
    return {str(err["loc"][0]) for err in e.errors() if err["loc"]}


def what_is_wrong(err: ErrorDetails) -> str:
    """pydantic's message, but for the name rule, whose pattern is a long list of code points, and
    for our own validators' errors, which need no "Value error, " before them."""
    ctx = err.get("ctx", {})
    if err["type"] == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return NAME_RULE
    if err["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return err["msg"]
