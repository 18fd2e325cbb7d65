"""Pairing and unpairing between two units, both sides.

Unit A (where the owner uses the page) calls :meth:`Pairing.request` with B's address, then
:meth:`Pairing.complete` with the code B says. Unit B answers with :meth:`Pairing.start` and
:meth:`Pairing.finish` (the HTTP handlers in ``web/peer_api.py`` call them). Either side may
:meth:`Pairing.unpair`; the other side is told with a signed request when it can be reached.

B keeps one pairing session per asking address, all for the one live code: a new request never
replaces another address's pairing in progress, and the code limits (``codes.py``) count per address.
Each side checks the other's messages with the same models (``messages.py``).
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.events import EventBus
from appliance.identity import Identity, unit_id_of
from appliance.pairing.client import PeerClient, UnitRefused, UnitUnreachable, Unusable
from appliance.pairing.codes import CodeError, CodeExpired, CodeGuard, CodeLocked
from appliance.pairing.handshake import HandshakeError, Initiator, Responder
from appliance.pairing.messages import FinishAnswer, MessageError, StartAnswer, checked
from appliance.state import Peer, StateStore, heard_name

log = logging.getLogger(__name__)

START_PATH = "/api/peer/pair/start"
FINISH_PATH = "/api/peer/pair/finish"
UNPAIR_PATH = "/api/peer/unpair"
HELLO_PATH = "/api/peer/hello"
# How often one claimed new address of a paired unit is checked, and how many such claims are kept,
# for each paired unit and for all together: an mDNS flood costs a bounded number of checks, and
# one aimed at a unit's id leaves the other units' moves to be followed.
MOVE_CHECK_S = 30.0
MOVE_CLAIMS_PER_UNIT = 4
MOVE_CLAIMS = 64
# How long a pairing or an unpairing is remembered for the same form posted again.
AGAIN_S = 60.0
# The longest lockout a unit gives ([web] lock_seconds is at most 3600), and what its wrong-code
# refusal says: the only parts of another unit's refusal this unit repeats.
MAX_LOCK_S = 3600
WRONG_CODE = re.compile(r"wrong code: (1?[0-9] tr(?:y|ies) left)")


class PairingError(Exception):
    """Pairing cannot go on; the message says why and what to do. ``status`` is the HTTP answer."""

    def __init__(self, text: str, status: int = 400, details: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.details = details or {}


@dataclass
class _Incoming:
    """B's side: who asked from where, for which code, and the live SPAKE2 attempt."""

    session: str
    unit_id: str
    name: str
    address: str
    source: str
    code: str
    responder: Responder


@dataclass
class _Outgoing:
    """A's side: which unit we asked, waiting for the person to type its code."""

    address: str
    session: str
    unit_id: str
    name: str
    message: bytes
    until: float  # monotonic: the other unit's code has expired by then (it lives as long as ours)


@dataclass(frozen=True)
class _Done:
    """A's last pairing or unpairing, for a form posted twice: the second post says it again."""

    key: str  # the code typed, or the unit id unpaired
    unit_id: str
    name: str
    until: float  # monotonic

    def fresh(self, key: str) -> bool:
        return key == self.key and time.monotonic() < self.until


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise PairingError(f"{what} is not base64") from e


class Pairing:
    def __init__(
        self,
        me: Identity,
        store: StateStore,
        events: EventBus,
        guard: CodeGuard,
        *,
        client: PeerClient,
        port: int,
        routes: Callable[[Peer], list[str]] | None = None,
    ) -> None:
        self._me = me
        self._store = store
        self._events = events
        self._guard = guard
        self._client = client
        # Where a paired unit is reached, in order (with a relay: its LAN address while on this
        # network, its relay address; appliance/relay/routing.py); without one, its address.
        self._routes = routes or (lambda peer: [peer.address])
        self.port = port
        self._lock = threading.Lock()
        self._incoming: dict[str, _Incoming] = {}
        self._move_checked: dict[tuple[str, str], float] = {}  # (unit id, address) -> when checked
        # Claimed moves are checked one at a time here, not in zeroconf's thread (follow_later).
        self._checks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="move-check")
        self._outgoing: _Outgoing | None = None
        self._completing = threading.Lock()  # one handshake at a time (a form posted twice waits)
        self._paired: _Done | None = None
        self._unpaired: _Done | None = None

    def details(self) -> dict[str, Any]:
        """What this unit tells the other one about itself (covered by the handshake's proof)."""
        return {
            "unit_id": self._me.unit_id,
            "name": self._store.settings().display_name,
            "public_key": b64(self._me.public_key),
            "port": self.port,
        }

    # -- unit B: asked to pair ---------------------------------------------------------------------

    def start(self, unit_id: str, name: str, host: str, port: int, source: str = "") -> dict[str, Any]:
        """Show and say the code for the unit that asked from ``host``; answer with B's first SPAKE2
        message. Another source's pairing in progress goes on untouched. ``source`` is what the
        limits count per: the address, or the relay account a request came through."""
        source = source or host
        if unit_id == self._me.unit_id:
            raise PairingError("a unit cannot pair with itself")
        try:
            code = self._guard.issue(source)
        except CodeLocked as e:
            raise PairingError(str(e), 429, {"seconds": e.seconds}) from e
        incoming = _Incoming(
            secrets.token_hex(16),
            unit_id,
            name,
            f"{host}:{port}",
            source,
            code,
            Responder(code, unit_id, self._me.unit_id),
        )
        with self._lock:
            # Sessions for an older code are dead; one source replaces only its own session.
            live = self._incoming.items()
            self._incoming = {s: i for s, i in live if i.code == code and i.source != source}
            self._incoming[incoming.session] = incoming
        log.debug("pairing asked by %s (%s)", name, incoming.address)
        return {**self.details(), "session": incoming.session, "spake": b64(incoming.responder.message)}

    def finish(
        self, session: str, spake: str, details: dict[str, Any], proof: str, source: str
    ) -> dict[str, Any]:
        """Check A's proof; on success pin A and answer with B's proof. Wrong codes are counted."""
        with self._lock:
            try:
                # Locked first: while locked every try is refused with the lockout, right code or not.
                self._guard.refuse_if_locked(source)
            except CodeLocked as e:
                raise PairingError(str(e), 429, {"seconds": e.seconds}) from e
            incoming = next(
                (i for s, i in self._incoming.items() if secrets.compare_digest(s, session)), None
            )
            if incoming is None:
                raise PairingError("no pairing is waiting for this unit: start again", 409)
            if details.get("unit_id") != incoming.unit_id:
                raise PairingError("the unit id differs from the one that asked to pair", 409)
            public_key = _checked_key(details)
            proof_b = self._prove(incoming, unb64(spake, "spake"), details, proof, source)
            # The code is spent: every session waiting for it is over.
            self._incoming.clear()
        self._pin(incoming.unit_id, str(details.get("name", incoming.name)), incoming.address, public_key)
        return {**self.details(), "proof": proof_b}

    def _prove(
        self, incoming: _Incoming, message: bytes, details: dict[str, Any], proof: str, source: str
    ) -> str:
        def proves(code: str) -> str | None:
            if code != incoming.code:
                raise CodeExpired()
            try:
                return incoming.responder.confirm(message, details, proof, self.details())
            except HandshakeError:
                return None

        try:
            return self._guard.attempt(source, proves)
        except CodeLocked as e:
            self._incoming = {s: i for s, i in self._incoming.items() if i.source != source}
            raise PairingError(str(e), 429, {"seconds": e.seconds}) from e
        except CodeExpired as e:
            self._incoming.pop(incoming.session, None)
            raise PairingError(str(e), 410) from e
        except CodeError as e:
            # SPAKE2 is one-shot: the next try needs a fresh message for the same code.
            incoming.responder = Responder(incoming.code, incoming.unit_id, self._me.unit_id)
            raise PairingError(str(e), 403, {"spake": b64(incoming.responder.message)}) from e

    # -- unit A: the owner asks another unit ---------------------------------------------------------

    def request(self, address: str) -> str:
        """Ask the unit at ``address`` to pair; it shows and says a code. Returns its name."""
        mine = self.details()
        try:
            answer = self._client.post(
                address, START_PATH, {"unit_id": mine["unit_id"], "name": mine["name"], "port": self.port}
            )
        except UnitRefused as e:
            raise _refusal(e, address) from e
        except UnitUnreachable as e:
            raise PairingError(str(e), 502) from e
        try:
            start = checked(StartAnswer, answer, address)
        except MessageError as e:
            raise PairingError(str(e), 502) from e
        _checked_key(start.model_dump())
        until = time.monotonic() + self._guard.ttl_s
        with self._lock:
            self._outgoing = _Outgoing(
                address, start.session, start.unit_id, start.name, unb64(start.spake, "spake"), until
            )
        return start.name

    def waiting_for(self) -> str | None:
        """The name of the unit whose code the owner should type, if any (none once it expired)."""
        with self._lock:
            out = self._live_outgoing()
            return out.name if out else None

    def _live_outgoing(self) -> _Outgoing | None:
        """Under the lock."""
        if self._outgoing is not None and time.monotonic() >= self._outgoing.until:
            self._outgoing = None
        return self._outgoing

    def complete(self, code: str) -> Peer:
        """Run the handshake with the code the other unit said; pin it on success. The same code
        again, once paired, answers the same (a form posted twice)."""
        code = code.strip()
        with self._completing:
            with self._lock:
                out, done = self._live_outgoing(), self._paired
            if out is None:
                # The same code again once paired (and still so): a form posted twice.
                again = self._store.peer(done.unit_id) if done and done.fresh(code) else None
                if again is None:
                    raise PairingError("choose a unit to pair with first", 409)
                return again
            peer = self._handshake(out, code)
            with self._lock:
                self._paired = _Done(code, peer.unit_id, peer.name, time.monotonic() + AGAIN_S)
            return peer

    def _handshake(self, out: _Outgoing, code: str) -> Peer:
        initiator = Initiator(code, self._me.unit_id, out.unit_id)
        mine = self.details()
        try:
            proof = initiator.prove(out.message, mine)
            answer = self._client.post(
                out.address,
                FINISH_PATH,
                {"session": out.session, "spake": b64(initiator.message), "details": mine, "proof": proof},
            )
            done = checked(FinishAnswer, answer, out.address)
            initiator.check(done.model_dump(include=set(mine)), done.proof)
        except UnitRefused as e:
            refused = _refusal(e, out.address, finishing=True)
            if refused.status == 403 and "spake" in e.body:
                message = unb64(str(e.body["spake"]), "spake")
                with self._lock:
                    out.message = message
            elif refused.status != 429:  # while locked, keep asking: the other unit says how long
                self._drop(out)
            raise refused from e
        except (UnitUnreachable, HandshakeError, MessageError) as e:
            self._drop(out)
            raise PairingError(str(e), 502) from e
        self._drop(out)
        if done.unit_id != out.unit_id:
            raise PairingError("the unit that answered is not the one asked", 502)
        return self._pin(out.unit_id, done.name, out.address, _checked_key(done.model_dump()))

    def _drop(self, out: _Outgoing) -> None:
        """The request is over; one the owner made meanwhile (for another unit) stays."""
        with self._lock:
            if self._outgoing is out:
                self._outgoing = None

    def _pin(self, unit_id: str, name: str, address: str, public_key: bytes) -> Peer:
        peer = self._store.add_peer(unit_id, name, address, public_key)
        heard = heard_name(peer, self._store.peers())  # a second Mum is "Mum (2)" from the start
        self._events.publish("pairing.done", f"Paired with {heard}", peer=heard, unit_id=unit_id)
        return peer

    # -- both: unpair --------------------------------------------------------------------------------

    def unpair(self, unit_id: str) -> bool:
        """Forget the unit here always, and tell it when reachable, where a call would reach it (a
        unit paired at home that moved away is told through the relay). Returns whether it was told."""
        peer = self._store.peer(unit_id)
        if peer is None:
            raise PairingError("that unit is not paired with this one", 404)
        told = False
        for address in self._routes(peer):
            try:
                self._client.post(address, UNPAIR_PATH, {}, peer_key=peer.public_key)
            except (UnitUnreachable, UnitRefused) as e:
                log.debug("could not tell %s about the unpairing there: %s", peer.name, e)
                continue
            told = True
            break
        self.forget(peer)
        return told

    # -- both: a paired unit moved (DHCP) --------------------------------------------------------------

    def follow(self, unit_id: str, address: str) -> bool:
        """Adopt ``address`` for the paired unit ``unit_id`` once it proves there, in a signed exchange
        under its pinned key, that it is that unit: an mDNS announcement alone (anyone on the LAN can
        send one) moves nothing. Each claimed address is checked at most every MOVE_CHECK_S, and
        only so many claims per unit and in all (MOVE_CLAIMS_PER_UNIT, MOVE_CLAIMS).
        Returns whether the address changed."""
        peer = self._claimed(unit_id, address)
        return peer is not None and self._proved(peer, address)

    def follow_later(self, unit_id: str, address: str, again: bool = False) -> None:
        """:meth:`follow` for zeroconf's thread: the claim is counted at once, and its check (up to the
        client's timeout, 5 s) runs on a worker of its own, so discovery goes on meanwhile. ``again``:
        check a claim checked within MOVE_CHECK_S once more (a call could not reach the unit at the
        address it has); a new claim is held to the limits as ever."""
        peer = self._claimed(unit_id, address, again)
        if peer is None:
            return
        try:
            self._checks.submit(self._proved, peer, address)
        except RuntimeError:  # closed: the unit is stopping
            log.debug("not checking %s at %s: closing", unit_id, address)

    def close(self) -> None:
        """Stop checking claimed moves (one under way ends with its request)."""
        self._checks.shutdown(wait=False, cancel_futures=True)

    def _claimed(self, unit_id: str, address: str, again: bool = False) -> Peer | None:
        """The paired unit a claimed new address is to be checked for, or None (not paired, not new,
        or over the limits)."""
        peer = next((p for p in self._store.peers() if p.unit_id == unit_id), None)
        if peer is None or peer.address == address or not self._may_check(unit_id, address, again):
            return None
        return peer

    def _proved(self, peer: Peer, address: str) -> bool:
        try:
            self._client.post(address, HELLO_PATH, {}, peer_key=peer.public_key)
        except (UnitUnreachable, UnitRefused) as e:
            # The address only at DEBUG (README, "Privacy"): it places a person called.
            log.warning(
                "unit %s announced a new address but could not prove it is there: address kept", peer.unit_id
            )
            log.debug("the new address %s: %s", address, e)
            return False
        self._store.update_address(peer.unit_id, address)
        log.debug("%s moved from %s to %s", peer.name, peer.address, address)
        return True

    def _may_check(self, unit_id: str, address: str, again: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            self._move_checked = {k: t for k, t in self._move_checked.items() if now - t < MOVE_CHECK_S}
            claims = sum(1 for unit, _ in self._move_checked if unit == unit_id)
            if (unit_id, address) in self._move_checked:
                if not again:
                    return False
            elif claims >= MOVE_CLAIMS_PER_UNIT or len(self._move_checked) >= MOVE_CLAIMS:
                return False
            self._move_checked[unit_id, address] = now
            return True

    def forget(self, peer: Peer) -> None:
        """Remove trust in ``peer`` on this side (also when it asked, with a verified request)."""
        name = heard_name(peer, self._store.peers())  # as the owner knew it: "Mum (2)"
        if self._store.remove_peer(peer.unit_id):
            with self._lock:
                self._unpaired = _Done(peer.unit_id, peer.unit_id, name, time.monotonic() + AGAIN_S)
            self._events.publish("pairing.removed", f"No longer paired with {name}", peer=name)

    def just_unpaired(self, unit_id: str) -> str | None:
        """The name of the unit ``unit_id`` if it was unpaired a moment ago (a form posted twice)."""
        with self._lock:
            done = self._unpaired
        return done.name if done and done.fresh(unit_id) else None


def _passed_on(e: UnitRefused) -> int:
    """The browser's status for the other unit's refusal: the refusals a unit gives mean the same
    here (wrong code, busy, expired, locked); anything else (its 400, a router's 401 or 404) would
    mean something else to the browser, so it is the bad gateway it is."""
    return e.status if e.status in (403, 409, 410, 429) else 502


def _refusal(e: UnitRefused, address: str, *, finishing: bool = False) -> PairingError:
    """The other unit's refusal in this unit's own fixed words: whatever answers at a typed address
    may write anything there, up to 256 KiB, and none of it is passed on to the page or the log.
    A unit refuses a request to pair only while locked; the code (``finishing``) in more ways."""
    if isinstance(e, Unusable):
        return PairingError(str(e), 502)  # this unit's own words already
    status = _passed_on(e)
    error = str(e.body.get("error", ""))
    if status == 429:
        return _lockout(e.body.get("seconds"), error, address)
    if finishing and status == 403:
        left = WRONG_CODE.fullmatch(error)
        return PairingError(f"wrong code: {left.group(1)}" if left else "wrong code", 403)
    if finishing and status == 409:
        return PairingError(f"the unit at {address} is not waiting for this code: ask it for a new one", 409)
    if finishing and status == 410:
        return PairingError(f"the code from the unit at {address} no longer works: ask it for a new one", 410)
    return PairingError(f"the unit at {address} refused to pair (HTTP {e.status})", 502)


def _lockout(seconds: object, error: str, address: str) -> PairingError:
    """A lockout, for as long as a unit can lock (``[web] lock_seconds`` is at most an hour)."""
    if type(seconds) is not int or not 1 <= seconds <= MAX_LOCK_S:
        return PairingError(f"{address} is not an emocall unit: its lockout is not 1 to 3600 seconds", 502)
    what = "code requests" if "code requests" in error else "wrong codes"
    return PairingError(
        f"too many {what}: the unit at {address} refuses pairing for {seconds} seconds",
        429,
        {"seconds": seconds},
    )


def _checked_key(details: dict[str, Any]) -> bytes:
    key = unb64(str(details.get("public_key", "")), "public_key")
    if len(key) != 32 or unit_id_of(key) != details.get("unit_id"):
        raise PairingError("the public key does not belong to that unit id")
    return key
