"""The call state machine, run on the engine's loop: idle, calling, ringing, connected, ended,
failed, busy, and reconnecting / lost when the other unit goes quiet mid-call.

The caller owns recovery: after a loss it sends fresh offers until ``reconnect_seconds`` have
passed; the callee waits that long for one and accepts a re-offer from the same unit while in a call.

Every offer says how long the caller waits for its answer (``wait``), counted from the time its
signed request is stamped with, which is this unit's clock (the caller learns it: see
:mod:`appliance.identity`). A unit that was paused (SIGSTOP, a stalled Pi) finds offers queued for
it: one stamped over 10 s ago is refused before it gets here, a new call rings at most until its
caller stops waiting, and re-offers are answered one at a time, a re-offer numbered below one
already answered refused instead of replacing the connection the caller is waiting on. Neither
needs the two clocks to agree.

Closing order: a session is closed to its end (its close cannot be cancelled) before the flow drops
it, and no call is reported over ("ready for calls") until every session it opened has closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from aiortc.sdp import SessionDescription

from appliance.audio import SAMPLE_RATE
from appliance.call import IN_PROGRESS, MISSED, NOT_ANSWERED, NOT_KNOWN, UNREACHABLE, CallError, messages
from appliance.call.session import Session
from appliance.call.signaling import Signal, SignalKind, SignallingError
from appliance.pairing.client import UnitRefused, UnitUnreachable
from appliance.state import Peer, StateError, valid_name

if TYPE_CHECKING:
    from appliance.call.engine import CallEngine

log = logging.getLogger(__name__)

CONNECT_SECONDS = 15.0  # from answer to an open data channel
RETRY_SIGNAL_SECONDS = 2.0  # one re-offer's HTTP round trip while the network may be gone
RETRY_PAUSE = 0.5
BYE_FLUSH_SECONDS = 0.2  # lets the bye leave before the connection closes
QUIET_HEARTBEATS = 1.5  # a channel silent this many heartbeats at a hang-up gets the bye by HTTP too
# How much earlier than its sending a signed request's stamp may be: it is in whole seconds, and the
# caller's knowledge of this unit's clock is short by an answer's transit.
CLOCK_SLACK_SECONDS = 2.0
RING_AGAIN_SECONDS = 6.0  # how often a ring not yet answered is said again, short ("Asha is calling.")
# How often a caller hears that the call still rings there ("Still calling Bela."): between "Calling
# Bela." and the answer, or "Bela did not answer.", there was silence for up to 40 s.
CALLING_AGAIN_SECONDS = 10.0
# How long a bye that matched no call is kept for the offer it cancels (the offer's own wait at most).
BYE_KEPT_SECONDS = 60.0


class Refused(Exception):
    """The other unit answered the offer with busy or declined."""


class _CallOver(Exception):
    """The call ended (hung up, lost, or another began) while an offer for it was being answered."""


class CallFlow:
    def __init__(self, engine: CallEngine) -> None:
        self._e = engine
        self.state = "idle"
        self.peer: Peer | None = None
        self.remote_name = ""
        self.caller = False
        self.session: Session | None = None
        self._open: set[Session] = set()  # every session not yet closed to its end
        self._answering = asyncio.Lock()  # one offer at a time becomes the call's session
        self._reoffer_number = 0  # the newest re-offer answered in this call (the caller's number)
        self._offers = 0  # this unit's offers so far: each one's number
        self._task: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self._ring: asyncio.Future[bool] | None = None
        self._hanging_up = False  # the owner hung up this call (marked before the hang-up's awaits)
        self._hung_up_with = ""  # the unit id of the last call's peer, if that call was hung up here
        self._deadline = 0.0
        # unit id -> (the offer its bye cancelled, until when): the bye came before the offer here
        self._cancelled: dict[str, tuple[int, float]] = {}
        # False once "forget everything" has begun: a call then would ring where every press only
        # says "Forgetting everything", until the unpairing hung it up.
        self.taking_calls = True
        self._last_seq = -1
        self._answered_in = 0  # the number of the last call this unit placed that was answered
        self._byes: set[asyncio.Task[None]] = set()  # byes sent beside a call's end (held: weak refs)
        self._sharing: messages.Sharing | None = None  # the other side's last word on it in this call
        self.calls = 0
        self.emotions_received = 0

    # State ------------------------------------------------------------------------------------

    def _set(self, state: str, message: str, reason: str = "", **data: Any) -> None:
        self.state = state
        self._e.publish_state(state, self.peer, message, reason, **data)

    def _start(self, peer: Peer, caller: bool) -> None:
        self.peer, self.caller, self.remote_name = peer, caller, self._e.heard_name(peer)
        self._e.microphone.new_call()
        self._sharing = None
        self._reoffer_number = 0
        self._hanging_up = False
        self.calls += 1

    def _still(self, call: int) -> bool:
        """Whether the call numbered ``call`` (``self.calls`` when it began) is still in progress:
        anything awaited in a request's own task may outlast it, and the finish cancels only _task."""
        return self.peer is not None and self.calls == call

    async def _finish(self, state: str, message: str, reason: str = "", **data: Any) -> None:
        if self.peer is None:
            return
        # Before the awaits below: a re-offer that comes while the sessions close is told "bye".
        self._hung_up_with = self.peer.unit_id if self._hanging_up else ""
        self._set(state, message, reason, **data)
        if reason and state in ("failed", "lost"):
            # Why only at DEBUG: besides the other person's name, a reason may hold their relay
            # account or their unit's address.
            log.info("the call %s", state)
            log.debug("the call %s: %s", state, reason)
        self.peer = None
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # a close it had begun goes on: see _close_all
        self._task = None
        # Its own task: a caller cancelled here (a hang-up given up on) must not leave the unit
        # "ended" for good, answering every call busy.
        self._ending = asyncio.get_running_loop().create_task(self._end_call())
        await asyncio.shield(self._ending)

    async def _end_call(self) -> None:
        await self._close_all()
        self._set("idle", "ready for calls")

    def _spawn(self, coro: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(coro)

    # Sessions ---------------------------------------------------------------------------------

    @property
    def sessions_open(self) -> int:
        return len(self._open)

    async def _new_session(self, peer: Peer) -> Session:
        await self._close_session()
        return self._open_session(peer)

    def _open_session(self, peer: Peer) -> Session:
        self.session = self._e.new_session(peer)
        self._open.add(self.session)
        # Each session's sequence starts afresh: the other unit's restarts from 0 with its process,
        # and the old session's messages are ignored anyway (on_message takes only this one's).
        self._last_seq = -1
        return self.session

    async def _close_session(self) -> None:
        """Close the call's session; the flow lets go of it only once it has closed."""
        session = self.session
        if session is not None:
            await self._close(session)
            if self.session is session:
                self.session = None

    async def _close(self, session: Session) -> None:
        await session.close()
        self._open.discard(session)

    async def _close_all(self) -> None:
        """Every session opened in this call closed to its end, even one whose closer was cancelled,
        and one an answer still in progress opened meanwhile."""
        while self._open:
            await asyncio.gather(*(self._close(session) for session in list(self._open)))
        self.session = None

    # Placing a call ---------------------------------------------------------------------------

    async def last_call_closed(self) -> None:
        """The last call is over and its sessions still close (under a second): a call placed or
        coming in then (a call back at once) waits for idle rather than being refused or busy."""
        if self._ending is not None and not self._ending.done():
            await asyncio.shield(self._ending)

    async def place(self, peer: Peer) -> None:
        await self.last_call_closed()
        if self.state == "ringing" and self.peer is not None and self.peer.unit_id == peer.unit_id:
            # The owner calls the unit whose call rings here (their calls crossed, or they did not
            # hear the ring): that call is the one they want, so it is taken, not refused.
            self.answer()
            return
        if self.state != "idle":
            raise CallError(f"already {self.state} with {self.remote_name}; hang up first")
        self._start(peer, caller=True)
        self._set("calling", f"calling {peer.name}")
        self._spawn(self._dial())

    async def _dial(self) -> None:
        name = self.remote_name
        # Whom a call that could not reach its unit was for: discovery checks its address again.
        unit_id = self.peer.unit_id if self.peer else ""
        reminding = asyncio.get_running_loop().create_task(self._ringing_there(self.calls, name))
        try:
            await self._offer(self._e.cfg.ring_seconds + 10)
        except Refused as e:
            busy = str(e) == "busy"
            if busy:
                await self._finish("busy", f"{name} is busy")
            else:
                await self._finish("ended", f"{name} did not answer", reason=NOT_ANSWERED)
        except (SignallingError, TimeoutError, ValueError) as e:
            await self._finish(
                "failed", f"the call to {name} failed", reason=str(e), cause=_cause(e), unit_id=unit_id
            )
        except Exception as e:
            # aiortc can fail in ways it does not document; the unit must still end up idle.
            log.exception("a call failed unexpectedly")
            await self._finish("failed", f"the call to {name} failed", reason=str(e))
        finally:
            reminding.cancel()

    async def _ringing_there(self, call: int, name: str) -> None:
        """Until the call is answered: ``call.ring`` (caller) every CALLING_AGAIN_SECONDS."""
        while True:
            await asyncio.sleep(CALLING_AGAIN_SECONDS)
            if self._still(call) and self.state == "calling" and self._answered_in != call:
                self._e.events.publish("call.ring", "still calling", peer=name, guest=False, caller=True)

    async def _offer(self, timeout: float, resume: bool = False) -> None:
        assert self.peer is not None
        session = await self._new_session(self.peer)
        signalling = self._e.dial(self.peer, timeout)
        try:
            await signalling.connect()
            sdp = await session.offer()
            self._offers += 1
            offer = Signal(kind="offer", sdp=sdp, resume=resume, wait=timeout, number=self._offers)
            await signalling.send(offer)
            reply = await asyncio.wait_for(signalling.receive(), timeout)
        finally:
            await signalling.close()
        if reply.kind != "answer":
            raise Refused(reply.kind)
        self._answered_in = self.calls
        await session.accept(reply.sdp)
        await asyncio.wait_for(session.opened.wait(), CONNECT_SECONDS)

    # Answering --------------------------------------------------------------------------------

    async def incoming(self, peer: Peer, signal: Signal, sent: float | None) -> Signal:
        """The reply to a verified signalling message sent at ``sent`` (this unit's clock, None for
        a guest's); raises SignallingError for a bad one."""
        same = self.peer is not None and self.peer.unit_id == peer.unit_id
        if signal.kind == "bye":
            if same and self._earlier_call(signal):
                # A bye for an earlier call of the same unit, come late (through the relay, or this
                # unit was stalled): the call ringing or connected now is not the one it ends.
                log.info("ignored a late bye for an earlier call")
            elif same:
                await self._remote_bye()
            elif signal.number:
                # Its offer is still on the way, or waits for the last call here to close.
                self._cancelled[peer.unit_id] = (signal.number, time.monotonic() + BYE_KEPT_SECONDS)
            return Signal(kind="bye")
        if signal.kind != "offer":
            raise SignallingError(f"expected an offer or a bye, got {signal.kind!r}")
        _check_sdp(signal.sdp)
        left = float("inf")  # a guest's offer is not signed, so not stamped: its call rings in full
        if sent is not None and signal.wait > 0:
            left = sent + signal.wait - time.time() + CLOCK_SLACK_SECONDS
        if left <= 0 and not signal.resume:
            # Queued while this unit was paused: the caller has given up and must not be rung for.
            # (A re-offer's order keeps a stale one from replacing the live one: see _stale.)
            log.info("refused an offer whose caller stopped waiting %.1f s ago", CLOCK_SLACK_SECONDS - left)
            return Signal(kind="declined")
        if same and (self.state in ("connected", "reconnecting") or self._opening(signal)):
            return await self._answer(peer, signal, reoffer=True)
        if same and self.state == "calling" and not signal.resume:
            return await self._crossed(peer, signal, left)
        return await self._new_call(peer, signal, left)

    async def _crossed(self, peer: Peer, offer: Signal, left: float) -> Signal:
        """The two units called each other at once (both owners call back after a lost call): each
        answered the other busy. The unit with the higher id now takes the other's call, without a
        ring (its owner asked for this call); the other lets its own call go on, and once that has
        connected or failed, answers as it answers any call (busy, or a ring)."""
        if self._e.me.unit_id > peer.unit_id:
            log.info("took the call that crossed this one")
            return await self._answer(peer, offer, reoffer=True)  # ends this unit's dial
        start, call = time.monotonic(), self.calls
        if self._task is not None:  # the dial: over by itself once answered and open, or failed
            await asyncio.wait([self._task])
        if self._hanging_up or (self._answered_in == call and self.state not in IN_PROGRESS):
            # That unit took this unit's call (answered it), giving up its own: its crossing offer
            # must not ring here afterwards, whoever ended the call, and however soon (while the call
            # goes on, it is answered busy as any other).
            return Signal(kind="declined")
        return await self._new_call(peer, offer, left - (time.monotonic() - start))

    def _opening(self, signal: Signal) -> bool:
        """A re-offer for the call answered here whose connection has not opened here yet: the caller
        saw it open first and then lost this unit (stalled at that moment). Answered as a re-offer,
        not told that the call is over."""
        return signal.resume and self.state == "ringing" and self._ring is None

    async def _new_call(self, peer: Peer, signal: Signal, left: float) -> Signal:
        if signal.resume:
            return self._over(peer)
        await self.last_call_closed()
        if self._was_cancelled(peer, signal):
            log.info("refused an offer whose bye came first")
            return Signal(kind="declined")
        if not self.taking_calls:
            log.info("refused a call: this unit is forgetting everything")
            return Signal(kind="busy")
        if self.state != "idle":
            self.tried(peer)
            return Signal(kind="busy")
        self._start(peer, caller=False)
        self._reoffer_number = signal.number  # the call's first offer: its re-offers and bye count on
        auto = self._e.settings().auto_answer
        self._set("ringing", f"{peer.name} is calling", auto_answer=auto, button=self._e.has_button)
        if not auto and not await self._rings(peer, min(self._e.cfg.ring_seconds, left)):
            if self._hanging_up:
                await self._finish("ended", f"declined the call from {peer.name}", reason="declined here")
            else:  # let ring out, or given up by its caller: the owner may not have heard it
                await self._finish("ended", f"missed call from {peer.name}", reason=MISSED)
            return Signal(kind="declined")
        return await self._answer(peer, signal, reoffer=False)

    def _earlier_call(self, bye: Signal) -> bool:
        """Whether a caller's numbered ``bye`` ends an offer older than this call's (callers number
        their offers upward, and a bye carries the caller's last)."""
        return not self.caller and 0 < bye.number < self._reoffer_number

    def _was_cancelled(self, peer: Peer, offer: Signal) -> bool:
        number, until = self._cancelled.pop(peer.unit_id, (0, 0.0))
        return offer.number == number and time.monotonic() < until

    async def _rings(self, peer: Peer, seconds: float) -> bool:
        """Whether the owner answers within ``seconds``. Meanwhile the ring is said again every
        RING_AGAIN_SECONDS (``call.ring``): an owner in another room may not hear the first."""
        ring = self._ring = asyncio.get_running_loop().create_future()
        deadline = time.monotonic() + seconds
        try:
            while not ring.done() and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait([ring], timeout=min(left, RING_AGAIN_SECONDS))
                if not ring.done() and left > RING_AGAIN_SECONDS:
                    name = self.remote_name
                    self._e.events.publish("call.ring", "still ringing", peer=name, guest=peer.guest)
            return ring.done() and ring.result()
        finally:
            self._ring = None

    async def _answer(self, peer: Peer, offer: Signal, reoffer: bool) -> Signal:
        call = self.calls
        async with self._answering:  # two queued re-offers never replace each other's session midway
            if reoffer:
                if not self._still(call) or self._stale(peer, offer):
                    return Signal(kind="declined") if self.peer else self._over(peer)
                if self._hanging_up:  # its bye is still on its way there (over HTTP, up to seconds)
                    return Signal(kind="bye")
                if self._task is not None:
                    self._task.cancel()  # the wait for a re-offer, or for the previous one to open
                self._reoffer_number = offer.number
                if not offer.resume:
                    self.caller = False  # a restarted unit's new call: recovering it is its part
            try:
                session, sdp = await self._answer_in(call, peer, offer)
            except _CallOver:
                return self._gone(peer, offer)
            except Exception as e:
                if not self._still(call):
                    return self._gone(peer, offer)  # aiortc fails an answer whose session was closed
                # aiortc raises assorted types for an offer it cannot use; none may reach the unit.
                await self._not_answered(peer, reoffer, str(e))
                raise SignallingError(f"the offer cannot be answered: {e}") from e
        self._spawn(self._await_open(session))
        return Signal(kind="answer", sdp=sdp)

    async def _answer_in(self, call: int, peer: Peer, offer: Signal) -> tuple[Session, str]:
        """A new session for call ``call`` and its answer; raises _CallOver, with no session left
        open, if the call ended meanwhile (the finish may have closed the sessions it knew of)."""
        await self._close_session()
        if not self._still(call):
            raise _CallOver
        session = self._open_session(peer)  # needs the microphone (CallError without)
        try:
            sdp = await session.answer(offer.sdp)
        finally:
            if not self._still(call):
                await self._close(session)
        if not self._still(call):
            raise _CallOver
        return session, sdp

    def _gone(self, peer: Peer, offer: Signal) -> Signal:
        """The answer to an offer whose call ended while it was being answered."""
        return self._over(peer) if offer.resume else Signal(kind="declined")

    async def _not_answered(self, peer: Peer, reoffer: bool, reason: str) -> None:
        if reoffer:
            # The live session was closed for it, and the wait for a re-offer cancelled: without a
            # recovery the call would stay "connected" or "reconnecting" for good.
            self._lose(f"a re-offer could not be answered: {reason}")
        else:
            await self._finish("failed", f"the call from {peer.name} failed", reason=reason)

    def _over(self, peer: Peer) -> Signal:
        """The answer to a re-offer for a call that is over here: "bye" if it was hung up here, else
        "lost" (this unit gave up waiting, or restarted), so that the caller says which."""
        kind: SignalKind = "bye" if self._hung_up_with == peer.unit_id else "lost"
        log.info("answered a re-offer for a call already over here: %s", kind)
        return Signal(kind=kind)

    def _stale(self, peer: Peer, offer: Signal) -> bool:
        """A re-offer that must not replace the call's session: the call ended while it waited, or a
        newer one (the one the caller is waiting on) has been answered already."""
        if self.peer is None or self.peer.unit_id != peer.unit_id:
            return True
        # The caller numbers its offers as it sends them: no clock on either side decides, so a
        # clock that steps mid-call cannot make the live re-offer look stale. A new call (not a
        # resume) from the unit in this call comes from its restarted process, counting from 1
        # again: it is answered, and its number is the one its re-offers follow.
        if offer.resume and offer.number < self._reoffer_number:
            log.info("refused a re-offer older than the one already answered")
            return True
        return False

    async def _await_open(self, session: Session) -> None:
        try:
            await asyncio.wait_for(session.opened.wait(), CONNECT_SECONDS)
        except TimeoutError:
            if session is not self.session:
                return
            if self.state == "reconnecting":
                await self._recover_as_callee()
            elif self.state == "connected":
                # A re-offer that came before this unit saw the loss (the caller saw it first): the
                # same wait for the caller's next re-offers as a loss seen here, not "failed".
                self._lose("the connection of a re-offer did not open")
            else:
                await self._finish("failed", f"the call with {self.remote_name} could not connect")

    def tried(self, peer: Peer) -> None:
        """``peer`` called while this unit was busy and was told so: the owner hears of it once the
        call is over (``call.tried``), else they never learn that someone tried. Not for the call
        in progress (its caller calling again)."""
        if not self.taking_calls or (self.peer is not None and self.peer.unit_id == peer.unit_id):
            return  # forgetting everything, or its caller calling again
        self._e.events.publish(
            "call.tried", "a call came while busy", peer=self._e.heard_name(peer), guest=peer.guest
        )

    def answer(self) -> None:
        if self._ring is not None and not self._ring.done():
            self._ring.set_result(True)

    # In a call --------------------------------------------------------------------------------

    def on_open(self, session: Session) -> None:
        if session is not self.session or self.peer is None or self._hanging_up:
            return
        if self.state != "connected":  # a re-offer answered before this unit saw the loss: said once
            self._set("connected", f"connected to {self.remote_name}")
        session.send(messages.Hello(name=self._e.name, unit=self._e.me.unit_id))
        sharing = self._e.sharing
        if sharing.paused:
            self.send(sharing)

    def send(self, message: messages.Message) -> None:
        """To the other side of the call; a guest's page never gets the owner's expressions, nor
        whether they are shared (nothing of them could go to it)."""
        if self.session is None or (self.peer is not None and self.peer.guest and _of_expressions(message)):
            return
        self.session.send(message)

    def on_message(self, session: Session, message: messages.Message) -> None:
        if session is not self.session or self.peer is None:
            return
        if self.peer.guest and not isinstance(message, messages.Bye):
            # A guest's page is anyone's code: its name is the signed invite's, and its expressions
            # are the unit's own analysis of its video (appliance/guests/vision.py), never its word.
            log.info("ignored a %s message from a guest's page", type(message).__name__)
            return
        name = self.remote_name
        if isinstance(message, messages.Hello):
            if message.unit == self.peer.unit_id:
                self._renamed(message.name)
        elif isinstance(message, messages.EmotionEvent):
            if message.seq <= self._last_seq:
                log.debug("dropped emotion %d from %s: not newer than %d", message.seq, name, self._last_seq)
                return
            self._last_seq = message.seq
            self.emotions_received += 1
            self._e.events.publish(
                "remote.emotion",
                f"{name}: {message.emotion}",
                peer=name,
                emotion=message.emotion,
                confidence=message.confidence,
            )
        elif isinstance(message, messages.NoFace):
            self._e.events.publish("remote.no_face", f"{name}: no face in view", peer=name)
        elif isinstance(message, messages.Sharing):
            if message == self._sharing:
                return  # said already in this call: sent again at a reconnect, or by a faulty unit
            self._sharing = message
            verb = "paused" if message.paused else "resumed"
            self._e.events.publish(
                "remote.sharing",
                f"{name} {verb} sharing",
                peer=name,
                paused=message.paused,
                reason=message.reason or "",
            )
        elif isinstance(message, messages.Bye):
            asyncio.get_running_loop().create_task(self._remote_bye())

    def _renamed(self, name: str) -> None:
        """The other unit's name as it says it now (its owner may have renamed it since the
        pairing): the rest of the call says that one, not the pairing's in its states and the new
        one in its expressions, and so do the pages and the calls after it. A name the unit's own
        rule refuses is not taken."""
        assert self.peer is not None
        if name == self.peer.name or not valid_name(name):
            return
        self.peer = dataclasses.replace(self.peer, name=name)
        self.remote_name = self._e.heard_name(self.peer)
        try:
            self._e.renamed(self.peer.unit_id, name)
        except StateError as e:  # a card that refuses writes: said for this call all the same
            log.warning("the new name of a paired unit cannot be saved: %s", e)

    async def _remote_bye(self) -> None:
        if self._ring is not None and not self._ring.done():
            self._ring.set_result(False)
            return
        await self._finish("ended", f"{self.remote_name} hung up", reason="remote hang-up")

    # Faults -----------------------------------------------------------------------------------

    def on_lost(self, session: Session, reason: str) -> None:
        if session is not self.session or self.state != "connected":
            return
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        if self.peer is None:
            return  # the call is over: nothing to recover (a re-offer failed by its end)
        # Said once, and the deadline counts from the first loss: a failed re-offer while
        # reconnecting neither repeats it nor extends the wait.
        if self.state != "reconnecting":
            self._set("reconnecting", f"lost contact with {self.remote_name}, trying again", reason)
            self._deadline = time.monotonic() + self._e.cfg.reconnect_seconds
        self._spawn(self._recover() if self.caller else self._recover_as_callee())

    async def _recover(self) -> None:
        reason = "no answer to re-offers"
        while time.monotonic() < self._deadline:
            try:
                await self._offer(min(RETRY_SIGNAL_SECONDS, self._deadline - time.monotonic()), resume=True)
                return
            except Refused as e:
                if str(e) == "bye":  # it hung up while the connection was down
                    await self._finish("ended", f"{self.remote_name} hung up", reason="remote hang-up")
                    return
                reason = f"a re-offer was answered {e}"
                break
            except (SignallingError, TimeoutError, ValueError) as e:
                log.debug("re-offer to %s failed: %s", self.remote_name, e)
                await asyncio.sleep(RETRY_PAUSE)
            except Exception as e:
                # aiortc can fail in ways it does not document, and a new session needs the
                # microphone (CallError once it is gone): the unit must still end up idle.
                log.exception("a re-offer failed unexpectedly")
                reason = str(e)
                break
        await self._finish("lost", f"the call with {self.remote_name} was lost", reason=reason)

    async def _recover_as_callee(self) -> None:
        await self._close_session()
        await asyncio.sleep(max(0.0, self._deadline - time.monotonic()))
        await self._finish("lost", f"the call with {self.remote_name} was lost", reason="no re-offer came")

    # Hanging up -------------------------------------------------------------------------------

    async def hang_up(self) -> None:
        peer = self.peer
        if peer is None:
            return
        self._hanging_up = True  # before any await: the call's end, however it comes, says so
        if self._ring is not None and not self._ring.done():
            self._ring.set_result(False)  # declined
            return
        if self._task is not None and self._task is not asyncio.current_task():
            # A dial or a recovery in flight: an answer it gets now must not connect the call.
            self._task.cancel()
        try:
            session = self.session
            if session is not None and session.is_open:
                session.send(messages.Bye())
                await asyncio.sleep(BYE_FLUSH_SECONDS)
                # Nothing heard for a heartbeat and a half: the channel may be dead before the
                # heartbeat says so (a hang-up is a likely answer to a frozen picture), and the other
                # side would hear "Reconnecting." and "Connection lost." for a call hung up. Sent
                # beside the call's end, which does not wait for it (seconds with the network down).
                if session.silent_for > QUIET_HEARTBEATS * self._e.cfg.heartbeat_seconds:
                    bye = asyncio.get_running_loop().create_task(self._send_http_bye(peer))
                    self._byes.add(bye)
                    bye.add_done_callback(self._byes.discard)
            else:
                await self._send_http_bye(peer)
        finally:
            # Even a bye cut short (cancelled, or an undocumented failure) ends the call here.
            await self._finish("ended", f"call with {self.remote_name} ended", reason="hung up here")

    async def _send_http_bye(self, peer: Peer) -> None:
        # Cancels a call still ringing there, and stops its re-offers while the connection is down;
        # if it cannot be reached it gives up by itself after reconnect_seconds.
        if peer.guest:
            return  # a guest's page cannot be asked: it hears the heartbeat stop
        signalling = self._e.dial(peer, RETRY_SIGNAL_SECONDS)
        try:
            await signalling.send(Signal(kind="bye", number=self._offers if self.caller else 0))
        except SignallingError as e:
            log.debug("could not tell %s about the hang-up: %s", peer.name, e)
        finally:
            await signalling.close()

    async def shutdown(self) -> None:
        await self.hang_up()
        await self._close_all()

    async def status(self) -> dict[str, Any]:
        received = self.session.received if self.session else None
        return {
            "state": self.state,
            "peer": self.remote_name if self.peer else "",
            "sharing_paused": self._e.sharing_paused,
            "frames_received": received.frames if received else 0,
            "audio_seconds_received": round(received.audio_samples / SAMPLE_RATE, 2) if received else 0.0,
            "emotions_received": self.emotions_received,
            "sessions_open": self.sessions_open,
            "calls": self.calls,
        }


def _check_sdp(sdp: str) -> None:
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as e:
        # aiortc's parser raises whatever the malformed line trips on.
        raise SignallingError(f"the offer is not valid SDP: {e}") from e
    if not parsed.media:
        raise SignallingError("the offer has no media")


def _cause(e: Exception) -> str:
    """Why a call could not be placed, when speech can say it (UNREACHABLE, NOT_KNOWN); "" for any
    other failure. The signalling keeps the client's error as the cause of its own."""
    cause = e.__cause__
    if isinstance(cause, UnitUnreachable):
        return UNREACHABLE
    # An unknown signature is refused with a 403 the refusing unit does not sign; a unit that forgot
    # everything (a new key) cannot sign its answer as the unit paired here either.
    if isinstance(cause, UnitRefused) and cause.status == 403:
        return NOT_KNOWN
    return ""


def _of_expressions(message: messages.Message) -> bool:
    return isinstance(message, messages.EmotionEvent | messages.NoFace | messages.Sharing)
