"""The call engine: one asyncio loop in its own thread owns every call, its state and its session.

Other threads (the button, the web API, the event bus) use the thread-safe methods :meth:`call`,
:meth:`answer`, :meth:`hangup` and :meth:`incoming`; each hands its work to the
loop. Every transition is published as ``call.state`` so the speech part can say it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiortc import RTCIceServer

from appliance.audio import Speaker
from appliance.call import DESCRIBING, IN_PROGRESS, UNAVAILABLE, CallError, NotPaired, messages
from appliance.call.calls import CallFlow
from appliance.call.media import FrameSink
from appliance.call.microphone import MicrophoneWatch, open_input
from appliance.call.session import Session
from appliance.call.signaling import HttpSignalling, Signal, Signalling
from appliance.camera.capture import Capture
from appliance.config import CallConfig
from appliance.events import Event, EventBus
from appliance.identity import Identity
from appliance.state import Peer, Settings, StateError, as_heard, heard_name

log = logging.getLogger(__name__)

T = TypeVar("T")
# glibc's malloc gives threads their own heaps ("arenas", up to 8 per core) and keeps what is freed
# in each for reuse: the call's codec threads (aiortc encodes and decodes in the default executor)
# made a unit's RSS rise 45-55 MB over its first calls, in 15 MB steps. Two hold it flat, about
# 35 MB lower (benchmarks/call_stress.py; the README's call section has the figures).
MALLOC_ARENAS = 2
# Video frames (450-900 KiB each, several per frame time) are above malloc's mmap threshold, but
# glibc raises that threshold to the largest block freed, after which frames come from the heaps,
# whose freed holes stay resident: 212-246 MB 20 s into a call. A fixed threshold keeps every frame
# in its own mapping, returned to the system when freed: 199-202 MB, for about 5 points more of a
# core (the pages are zeroed anew; benchmarks/memory.py, the README's hardening section).
MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt's parameter numbers, from glibc's malloc.h
HANGUP_WAIT_SECONDS = 5.0  # a bye to an unreachable unit and a TURN allocation's close take longer
Dialer = Callable[[Peer, float], Signalling]
PeerList = Callable[[], list[Peer]]
IceServers = Callable[[], list[RTCIceServer]]


class CallEngine:
    def __init__(
        self,
        cfg: CallConfig,
        me: Identity,
        *,
        peers: PeerList,
        settings: Callable[[], Settings],
        capture: Capture,
        events: EventBus,
        speaker: Speaker,
        on_remote_frame: FrameSink,
        dialer: Dialer | None = None,
        ice_servers: IceServers | None = None,
        renamed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cfg, self.me, self._peers, self.settings = cfg, me, peers, settings
        self._capture, self.events, self._speaker, self._on_frame = capture, events, speaker, on_remote_frame
        self.dial: Dialer = dialer or (lambda peer, timeout: HttpSignalling(peer, me, timeout))
        # Keeps a paired unit's new name (unit id, name), said in its call's Hello.
        self.renamed: Callable[[str, str], None] = renamed or (lambda unit_id, name: None)
        # Set by a working call button: without one a ring must not say "press the button".
        self.has_button = False
        # None without a relay: then no STUN/TURN server is ever asked (host candidates only).
        self._ice_servers: IceServers = ice_servers or list
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="call", daemon=True)
        self._unsubscribe: Callable[[], None] = lambda: None
        self.flow = CallFlow(self)
        self._seq = 0
        self._faults: set[str] = set()  # the parts (DESCRIBING) that cannot describe expressions now
        self._told = self.sharing  # what the other side was last told of them (on the loop)
        self._unpairing: concurrent.futures.Future[None] | None = None  # held: see _on_event
        self.microphone = MicrophoneWatch(events)  # across calls: "works again" is news only after a fault

    def start(self) -> CallEngine:
        self._thread.start()
        self._unsubscribe = self.events.subscribe(self._on_event)
        return self

    def close(self) -> None:
        self._unsubscribe()
        if self._thread.is_alive():
            try:
                self._run(self.flow.shutdown(), timeout=10)
                self._run(_end_other_tasks(), timeout=10)
                self._run(self._loop.shutdown_default_executor(), timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
        self._loop.close()

    # Thread-safe API ---------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop that owns calls; the relay's client runs on it too (one loop for call and signalling)."""
        return self._loop

    @property
    def state(self) -> str:
        return self.flow.state

    def in_call_with(self, target: str) -> bool:
        """Whether the call in progress (calling, ringing, connected) is with ``target`` (a name,
        unit id or address)."""
        peer = self.flow.peer
        try:
            return (
                peer is not None
                and self.state in IN_PROGRESS
                and self.resolve(target).unit_id == peer.unit_id
            )
        except CallError:  # not paired, or a name two units share
            return False

    def call(self, target: str) -> None:
        """Call a paired unit by name, unit id or address; raises :class:`CallError` at once if not."""
        self._run(self.flow.place(self.resolve(target)), timeout=5)

    def answer(self) -> None:
        self._loop.call_soon_threadsafe(self.flow.answer)

    def wait_closed(self, timeout: float) -> None:
        """Until the last call's sessions have closed (at once when none is closing), at most
        ``timeout`` seconds: for a press that comes as a call ends (appliance/controls/button.py)."""
        future = asyncio.run_coroutine_threadsafe(self.flow.last_call_closed(), self._loop)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the close goes on (shielded); only this wait ends

    def hangup(self) -> None:
        """Hang up; a hang-up slower than the wait goes on to idle by itself (not cancelled: that
        would leave the call half ended)."""
        future = asyncio.run_coroutine_threadsafe(self.flow.hang_up(), self._loop)
        try:
            future.result(HANGUP_WAIT_SECONDS)
        except concurrent.futures.TimeoutError:
            log.warning("the hang-up took over %g s; it goes on", HANGUP_WAIT_SECONDS)

    def incoming(self, unit_id: str, signal: Signal, sent: float | None) -> concurrent.futures.Future[Signal]:
        """Hand a verified signalling message from ``unit_id``, sent at ``sent`` (this unit's clock;
        None when unknown), to the loop; the future is the reply."""
        return self.incoming_from(self.peer(unit_id), signal, sent)

    def incoming_from(
        self, peer: Peer, signal: Signal, sent: float | None
    ) -> concurrent.futures.Future[Signal]:
        """As :meth:`incoming`, from a caller already checked otherwise (a guest's invite)."""
        return asyncio.run_coroutine_threadsafe(self.flow.incoming(peer, signal, sent), self._loop)

    def status(self) -> dict[str, Any]:
        return self._run(self.flow.status(), timeout=5)

    # Helpers used by the flow -------------------------------------------------------------------

    def peer(self, unit_id: str) -> Peer:
        for peer in self._peers():
            if peer.unit_id == unit_id:
                return peer
        raise NotPaired(f"unit {unit_id} is not paired with this unit")

    def resolve(self, target: str) -> Peer:
        """The paired unit ``target`` names: its id, address or host, or its name as the owner hears
        it ("Mum (2)"); a name two units share is refused, saying the names that tell them apart."""
        wanted = target.strip().casefold()
        peers = self._peers()
        heard = [h.name for h in as_heard(peers)]
        for peer, name in zip(peers, heard, strict=True):
            host = peer.address.rsplit(":", 1)[0]
            if wanted in (peer.unit_id, name.casefold(), peer.address, host):
                return peer
        if named := [h for p, h in zip(peers, heard, strict=True) if p.name.casefold() == wanted]:
            raise CallError(
                f"{len(named)} paired units are named {target.strip()}: call {' or '.join(named)}"
            )
        raise NotPaired(f"{target!r} is not a paired unit: pair it first on the web page")

    def new_session(self, peer: Peer) -> Session:
        return Session(
            self.cfg,
            self._capture,
            open_input(self.cfg, self.microphone),
            speaker=self._speaker,
            on_frame=self._on_frame,
            listener=self.flow,
            ice_servers=self._ice_servers(),
        )

    @property
    def name(self) -> str:
        return self.settings().display_name

    @property
    def sharing_paused(self) -> bool:
        return not self.settings().share_expressions

    @property
    def sharing(self) -> messages.Sharing:
        """What the other side is told of this side's expressions: paused by the owner, paused
        because they cannot be described, or shared."""
        if self.sharing_paused:
            return messages.Sharing(paused=True)
        if self._faults:
            return messages.Sharing(paused=True, reason=UNAVAILABLE)
        return messages.Sharing(paused=False)

    def heard_name(self, peer: Peer) -> str:
        """``peer``'s name as the owner hears and reads it in a call's sentences: "Mum (2)" for the
        second paired of two units named Mum, numbered as the button's choice says them ("Mum,
        number 2?"). A guest's is its invite's; a card that cannot be read leaves the name alone."""
        if peer.guest:
            return peer.name
        try:
            return heard_name(peer, self._peers())
        except StateError as e:
            log.warning("paired units cannot be read to number a name: %s", e)
            return peer.name

    def publish_state(
        self, state: str, peer: Peer | None, message: str, reason: str = "", **data: Any
    ) -> None:
        # The name the call says from its start (CallFlow.remote_name): one name to the end,
        # whatever is paired meanwhile.
        name = self.flow.remote_name if peer else ""
        if peer is not None:
            data.setdefault("unit_id", peer.unit_id)  # two units may share a name (never shown)
            if peer.guest:
                data["guest"] = True  # "Priya is calling from a browser"
        self.events.publish("call.state", message, state=state, peer=name, reason=reason, **data)

    def responsive(self, timeout: float) -> bool:
        """Whether the event loop runs a no-op within ``timeout`` (the service's watchdog asks)."""
        try:
            self._run(asyncio.sleep(0), timeout)
        except CallError:
            return False
        return True

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as e:
            future.cancel()
            raise CallError("the call engine did not respond in time; try again") from e

    def _on_event(self, event: Event) -> None:
        if event.topic in DESCRIBING:
            part, works = DESCRIBING[event.topic]
            (self._faults.discard if works else self._faults.add)(part)
            self._loop.call_soon_threadsafe(self._tell_sharing)
        elif event.topic == "settings.changed" and "share_expressions" in event.data.get("changed", ()):
            self._loop.call_soon_threadsafe(self._tell_sharing)
        elif event.topic in ("vision.emotion", "vision.no_face") and not self.sharing.paused:
            # Not while a part is down either: the worker goes on reading the "no camera" pattern,
            # and its "no face" would tell the other side the owner walked away.
            self._loop.call_soon_threadsafe(self._send_vision, event)
        elif event.topic == "unit.forgetting":
            asyncio.run_coroutine_threadsafe(self._forgetting(), self._loop)
        elif event.topic == "pairing.removed":
            # The event names the unit only by its name, which two units may share: the paired
            # units left say whether the call's was the one removed.
            paired = {peer.unit_id for peer in self._peers()}
            self._unpairing = asyncio.run_coroutine_threadsafe(self._end_unpaired(paired), self._loop)

    async def _forgetting(self) -> None:
        """No call is taken from now on, and a ringing one is declined (see CallFlow.taking_calls)."""
        self.flow.taking_calls = False
        if self.flow.state == "ringing":
            await self.flow.hang_up()

    async def _end_unpaired(self, paired: set[str]) -> None:
        """A unit no longer trusted is not kept on the line: its call ends, as a guest's does when
        the owner withdraws its invite."""
        peer = self.flow.peer
        if peer is not None and not peer.guest and peer.unit_id not in paired:
            log.info("the unit of the call in progress was unpaired: hanging up")
            await self.flow.hang_up()

    def _tell_sharing(self) -> None:
        """Tell the other side when what it knows of this side's expressions changed (a camera back
        at each call's start changes nothing). A resume after an outage carries the outage's reason:
        an older unit, which drops a message with one, never hears "sharing again" without the pause."""
        before, self._told = self._told, self.sharing
        if self._told != before:
            resumed = messages.Sharing(paused=False, reason=before.reason)
            self.flow.send(self._told if self._told.paused else resumed)

    def _send_vision(self, event: Event) -> None:
        if self.flow.state != "connected":
            return
        self._seq += 1
        message: messages.Message
        if event.topic == "vision.emotion":
            try:
                message = messages.EmotionEvent(
                    seq=self._seq,
                    emotion=event.data["emotion"],
                    confidence=float(event.data.get("confidence", 0.0)),
                )
            except (KeyError, ValueError) as e:
                log.warning("vision.emotion event without a usable emotion (%s): not sent", e)
                return
        else:
            message = messages.NoFace(seq=self._seq)
        self.flow.send(message)


async def _end_other_tasks(grace: float = 1.0) -> None:
    """Whatever still runs on the loop (a reply on its way, a call that was ringing) ends before the
    loop closes: a task destroyed while pending is an error in the log, not a clean exit. Each gets
    ``grace`` seconds to finish by itself (a declined call still answers its caller) before it is
    cancelled."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    if not others:
        return
    _, pending = await asyncio.wait(others, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def tune_malloc() -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS and fix its mmap threshold at MMAP_THRESHOLD; call
    it before the unit starts any thread (arenas made before stay). Elsewhere than glibc there is
    nothing to tune."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: malloc left as it is")
        return
    for param, value in ((M_ARENA_MAX, MALLOC_ARENAS), (M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if not mallopt(param, value):
            log.warning("glibc refused mallopt(%d, %d): calls may use more memory", param, value)
