"""A guest's call signalling: ``POST /api/guest/signal``, reachable only through the relay, from a guest.

The guest's page signs in anonymously on the relay's guest host (``guests.RELAY``) and sends its
offer to the unit as a relay request (:mod:`appliance.relay.envelope`), the same way units send
theirs; the relay service runs it through this web app with the sender's address in the WSGI
environ, which no HTTP client can set. The body is ``{"invite": TOKEN, "describe": BOOL,
"signal": {...}}``; the signal is the call engine's own (:class:`~appliance.call.signaling.Signal`),
so the call that follows is a unit-to-unit call in every respect (ringing, answer, heartbeat, loss,
reconnect, busy, bye), with the guest as the peer; the unit's replies also say when it counts the
page lost and how long it then waits for a re-offer (``peer_timeout_seconds``,
``reconnect_seconds``), which the page has no other way to know. A new offer needs a live invite (a
one-time one is used up once the unit rings for it: an offer refused before that, busy or
malformed, leaves it whole); a re-offer or a bye needs the invite and the call's id, a random secret
the page chose for this call (a re-offer after a loss may come from a new anonymous address).

While the unit rings, the page asks ``POST /api/guest/call`` (``{"invite": TOKEN, "call": ID}``)
whether the unit still has its call: ``{"known": true, "over": false}`` in progress or let in and
waiting for the last call to close, ``"over": true`` for the call that ended last (its decline may
have been lost on the way), ``{"known": false}`` from a unit that restarted meanwhile. Either of
the last two would otherwise leave the page waiting for an answer that never comes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TypeVar

from aiortc.sdp import SessionDescription
from flask import Blueprint, Response, abort, jsonify, make_response, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.call import CLOSING_WAIT_SECONDS, IN_PROGRESS
from appliance.call.endpoints import answer_signal
from appliance.call.engine import CallEngine
from appliance.call.signaling import Signal
from appliance.events import Event
from appliance.guests.invites import MAX_TOKEN, Invite, InviteRefused, Invites
from appliance.guests.vision import GuestVision
from appliance.relay import GUEST_CALL_PATH, GUEST_PATH, is_guest
from appliance.state import Peer
from appliance.web.peer_api import RELAY_SENDER

log = logging.getLogger(__name__)

CANCELLED_SECONDS = 60.0
CANCELLED_KEPT = 64

Body = TypeVar("Body", bound=BaseModel)


class CallRef(BaseModel):
    """Which call a guest's page means: its invite and the random id it chose for the call."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    invite: str = Field(max_length=MAX_TOKEN)
    call: str = Field(pattern=r"^[0-9a-f]{32}$", description="The page's random id for this call")


class GuestSignal(CallRef):
    describe: bool = True  # the guest agrees to have their expressions described to the owner
    signal: Signal


@dataclass(frozen=True)
class GuestCall:
    """Who the call in progress is with: the invite, the page's call id, the guest's choice, and
    whether the guest sends video (a browser without a camera calls with sound only)."""

    invite: Invite
    call: str
    describe: bool
    camera: bool
    peer: Peer


def guest_peer(invite: Invite) -> Peer:
    """The guest as the call engine's peer: an id of its own per invite, never a paired unit's."""
    unit_id = hashlib.sha256(f"guest:{invite.id}".encode()).digest()[:16].hex()
    return Peer(unit_id, invite.name, "guest", b"", invite.created, guest=True)


class GuestLine:
    """The guests' way into the call engine, and which guest call is in progress."""

    def __init__(self, engine: CallEngine, invites: Invites, jid: str, vision: GuestVision) -> None:
        self._engine, self._invites, self._jid = engine, invites, jid
        self._vision = vision
        self.current: GuestCall | None = None
        self._arriving: GuestCall | None = None  # let in: waits for the last call's close, then rings
        self._offering = threading.Lock()
        self._ended: GuestCall | None = None  # the guest call whose end was seen last
        self._cancelled: dict[str, float] = {}  # call id -> until when its offer is refused
        # Over the cancelled calls, and over a bye's look for its call and an offer's becoming the
        # call in progress: a bye between the two would be neither delivered nor remembered.
        self._cancelling = threading.Lock()
        self._told_private = ""  # the call whose guest's no-expressions was said (said once)
        self._unsubscribe = engine.events.subscribe(self._on_event)

    def blueprint(self) -> Blueprint:
        bp = Blueprint("guest_call", __name__)

        @bp.post(GUEST_PATH)
        def signal() -> ResponseReturnValue:
            body = _from_a_guest(GuestSignal, self._jid)
            try:
                if body.signal.kind == "offer" and not body.signal.resume:
                    return self._new_call(body)
                call = self._ongoing(body)
                if call is None:
                    return jsonify(Signal(kind="lost").model_dump()), 200
                return self._answer(call, body.signal)
            except InviteRefused as e:
                return _refused(e)

        @bp.post(GUEST_CALL_PATH)
        def known() -> ResponseReturnValue:
            body = _from_a_guest(CallRef, self._jid)
            # The call in progress, its offer still waiting for the last call to close, or the
            # call that ended last: none of them forgotten. The last is over: its decline may be on
            # its way to the page, or lost with a relay connection that dropped as it went.
            call = self._call_of(body, (self.current, self._arriving, self._ended))
            if call is not None:
                return jsonify({"known": True, "over": call is self._ended}), 200
            try:
                self._page_of_a_past_call(body.invite)
            except InviteRefused as e:
                return _refused(e)
            return jsonify({"known": False}), 200

        return bp

    def _new_call(self, body: GuestSignal) -> tuple[Response, int]:
        """A guest's offer of a new call: rung for when the unit is free, one guest at a time."""
        invite = self._invites.check(body.invite)  # a bad invite is refused as such, even when busy
        # Held until the engine has answered: a second guest's offer in the same instant would
        # otherwise be let in too, and take the line from the call the engine rings for.
        if not self._offering.acquire(blocking=False):
            self._engine.flow.tried(guest_peer(invite))  # another guest's call is about to ring
            return self._busy()
        try:
            camera = sends_video(body.signal.sdp)
            call = self._arriving = GuestCall(invite, body.call, body.describe, camera, guest_peer(invite))
            # A call back as the last call closes (under a second) is rung for, as a unit's is.
            self._engine.wait_closed(CLOSING_WAIT_SECONDS)
            self._invites.check(body.invite)  # withdrawn (or expired) meanwhile
            with self._cancelling:
                if body.call in self._cancelled:
                    # Its bye overtook it, or came while it waited (the relay carries each request
                    # on a thread of its own).
                    raise InviteRefused("ended", "This call has ended. Press Call to call again.")
                free = self._engine.state == "idle"
                if free:
                    self.current = call
            if not free:
                # Its owner hears who tried once the call is over.
                self._engine.flow.tried(guest_peer(invite))
                return self._busy()
            try:
                reply, status = self._answer(call, body.signal)
            except BaseException:
                self._forget(call)
                raise
            if status in (400, 409):  # never rung: busy meanwhile, or refused (a 503 may still ring)
                self._forget(call)
            return reply, status
        finally:
            self._arriving = None
            self._offering.release()

    def _answer(self, call: GuestCall, signal: Signal) -> tuple[Response, int]:
        """The engine's reply, with the silence after which the unit counts the page lost and how
        long it then waits for a re-offer: the page waits as long (one that gave up first said the
        call was lost while the unit waited on)."""
        cfg = self._engine.cfg
        return answer_signal(
            self._engine,
            call.peer,
            signal,
            peer_timeout_seconds=cfg.peer_timeout_seconds,
            reconnect_seconds=cfg.reconnect_seconds,
        )

    def _forget(self, call: GuestCall) -> None:
        if self.current is call:
            self.current = None

    def _ongoing(self, body: GuestSignal) -> GuestCall | None:
        """The call a bye or a re-offer belongs to, from its page with its invite: the call in
        progress, or for a re-offer also the one that ended last (the engine answers that it is
        over, and whether it was hung up or lost, as it answers a unit's). None for a re-offer of
        a call this unit does not know from a live invite's page: the unit restarted during it, so
        the call was lost (units answer each other the same), not hung up."""
        with self._cancelling:
            call = self._call_of(body, (self.current, self._ended if body.signal.resume else None))
            if call is None and body.signal.kind == "bye":
                self._remember_cancelled(body)
        if call is not None:
            return call
        if body.signal.resume and body.signal.kind != "bye":
            self._page_of_a_past_call(body.invite)
            return None
        raise InviteRefused("ended", "This call has ended. Press Call to call again.")

    def _call_of(self, body: CallRef, calls: tuple[GuestCall | None, ...]) -> GuestCall | None:
        """The one of ``calls`` that is the page's, made with its invite (not withdrawn since)."""
        for call in calls:
            if (
                call is not None
                and call.call == body.call
                and self._invites.matches(body.invite, call.invite)
                and not self._invites.withdrawn(call.invite)
            ):
                return call
        return None

    def _page_of_a_past_call(self, token: str) -> None:
        """Raises InviteRefused unless ``token`` is a live invite, or one used up or ended by the
        call its page asks about (a one-time invite is used when it rings): still that call's page.
        Forged or withdrawn: refused as such."""
        try:
            self._invites.check(token)
        except InviteRefused as e:
            if e.reason not in ("used", "expired"):
                raise

    def _remember_cancelled(self, body: GuestSignal) -> None:
        """A bye for no call in progress, from a live invite's page: its offer may still be on the
        way, and must then not ring (for a page that has left). Kept a minute, at most 64. Under
        ``_cancelling`` (two byes at once come on two threads: one per relay request)."""
        try:
            self._invites.check(body.invite)
        except InviteRefused:
            return
        now = time.monotonic()
        kept = [(call, until) for call, until in self._cancelled.items() if until >= now]
        kept = [*kept[len(kept) - CANCELLED_KEPT + 1 :], (body.call, now + CANCELLED_SECONDS)]
        self._cancelled = dict(kept)

    def _busy(self) -> tuple[Response, int]:
        return jsonify(Signal(kind="busy").model_dump()), 409

    def _on_event(self, event: Event) -> None:
        """Describe the guest's face once connected (if they agreed); forget the call when it is over."""
        state, current = event.data.get("state"), self.current
        if event.topic != "call.state" or current is None:
            return
        if state == "ringing" and event.data.get("guest"):
            self._invites.use(current.invite)
        elif state == "connected" and event.data.get("guest"):
            if current.describe and current.camera:
                self._vision.start(current.peer.name)
            elif self._told_private != current.call:
                # Said as a unit's paused sharing is ("Priya paused sharing expressions."); the log
                # says why.
                self._told_private = current.call
                name = current.peer.name
                why = "asked not to have their expressions described" if current.camera else "sends no video"
                message = f"{name} {why}"
                self._engine.events.publish("remote.sharing", message, peer=name, paused=True, guest=True)
        elif state not in IN_PROGRESS:
            # At the call's end (ended, lost...), not only at idle a moment later: nothing the
            # analysis still finishes may be said or shown once the call is over.
            self._vision.stop()
            if state != "idle":
                self._ended = current
            elif self._ended is current:
                # Not when a new guest's call was let in between: the engine reads idle a moment
                # before this event is published.
                self.current = None

    def withdrawn(self, invite: Invite) -> bool:
        """The owner withdrew ``invite``: a call in progress with it ends now (True then)."""
        current = self.current
        if current is None or current.invite.id != invite.id or self._engine.state not in IN_PROGRESS:
            return False
        log.info("the invite of the call in progress was withdrawn: hanging up")
        self._engine.hangup()
        return True

    def close(self) -> None:
        self._unsubscribe()
        self._vision.close()


def _from_a_guest(kind: type[Body], jid: str) -> Body:
    """The request's body, read as ``kind``, if a guest's browser sent it through the relay; else
    the request ends here with why (403, 400)."""
    sender = str(request.environ.get(RELAY_SENDER, ""))
    if not is_guest(sender, jid):
        abort(
            make_response(jsonify({"error": "only a guest's browser, through the relay, may send this"}), 403)
        )
    try:
        return kind.model_validate_json(request.get_data())
    except ValidationError as e:
        abort(make_response(jsonify({"error": f"not a guest's call message: {e.errors()[0]['msg']}"}), 400))


def _refused(e: InviteRefused) -> tuple[Response, int]:
    log.info("a guest's %s invite was refused", e.reason)
    return jsonify({"error": str(e), "reason": e.reason}), 403


def sends_video(sdp: str) -> bool:
    """Whether an offer sends video: a browser without a camera offers to receive the unit's only."""
    try:
        media = SessionDescription.parse(sdp).media
    except Exception:  # aiortc's parser raises anything; the engine refuses such an offer with why
        return True
    return any(m.kind == "video" and m.direction in (None, "sendrecv", "sendonly") for m in media)
