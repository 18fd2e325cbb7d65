"""Signalling: how an offer reaches the other unit and its answer comes back.

Behind one small interface (connect / send / receive / close), as aiortc's examples do:
:class:`HttpSignalling` POSTs each message, signed with this unit's identity, to the other unit's
local API and verifies the signed reply; :func:`memory_pair` joins two engines in one process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.identity import Identity
from appliance.pairing.client import PeerClient, UnitRefused, UnitUnreachable
from appliance.state import Peer

log = logging.getLogger(__name__)

SIGNAL_PATH = "/api/call/signal"
MAX_SDP_CHARS = 32 * 1024
# "lost": the answer to a re-offer for a call its callee gave up on (not hung up: that is "bye").
SignalKind = Literal["offer", "answer", "busy", "declined", "bye", "lost"]


class SignallingError(Exception):
    """The other unit cannot be reached, refused the request or answered nonsense."""


class Signal(BaseModel):
    """One signalling message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: SignalKind
    sdp: str = Field("", max_length=MAX_SDP_CHARS)
    # The sender's display name, which earlier releases and guests' pages sent through the relay
    # and nothing read: still accepted from them, never sent (a unit's name comes in the call's
    # Hello, end to end; a guest's from its signed invite).
    name: str = Field("", max_length=40, exclude=True)
    resume: bool = False  # an offer that resumes a call after a loss, not a new call
    # How long the caller waits for the answer to an offer, from the time its signed request is
    # stamped with (the callee's clock: see appliance.identity); 0 for a guest's, which is unsigned.
    wait: float = Field(0.0, ge=0, le=3600)
    # The caller's count of its offers: a re-offer numbered below one already answered is stale.
    # On a caller's bye, its last offer's: an offer it overtook must not ring.
    number: int = Field(0, ge=0)


def parse_signal(body: bytes) -> Signal:
    try:
        return Signal.model_validate_json(body)
    except ValidationError as e:
        raise SignallingError(f"not a signalling message: {e.errors()[0]['msg']}") from e


class Signalling(Protocol):
    async def connect(self) -> None: ...

    async def send(self, signal: Signal) -> None: ...

    async def receive(self) -> Signal:
        """The next message from the other unit."""
        ...

    async def close(self) -> None: ...


class MemorySignalling:
    """One end of an in-process pair (tests): what one end sends, the other receives."""

    def __init__(self, inbox: asyncio.Queue[Signal], outbox: asyncio.Queue[Signal]) -> None:
        self._inbox, self._outbox = inbox, outbox

    async def connect(self) -> None:
        pass

    async def send(self, signal: Signal) -> None:
        await self._outbox.put(signal)

    async def receive(self) -> Signal:
        return await self._inbox.get()

    async def close(self) -> None:
        pass


def memory_pair() -> tuple[MemorySignalling, MemorySignalling]:
    a: asyncio.Queue[Signal] = asyncio.Queue()
    b: asyncio.Queue[Signal] = asyncio.Queue()
    return MemorySignalling(a, b), MemorySignalling(b, a)


class HttpSignalling:
    """Each message is one signed POST to the other unit; its signed reply is what ``receive`` returns."""

    def __init__(self, peer: Peer, me: Identity, timeout: float, client: PeerClient | None = None) -> None:
        self._peer = peer
        self._client = client or PeerClient(me, timeout)  # the relay passes one that can reach other homes
        self._replies: asyncio.Queue[Signal] = asyncio.Queue()

    @property
    def address(self) -> str:
        return self._peer.address

    async def connect(self) -> None:
        pass

    async def send(self, signal: Signal) -> None:
        await self._replies.put(await asyncio.to_thread(self._post, signal))

    async def receive(self) -> Signal:
        return await self._replies.get()

    async def close(self) -> None:
        pass

    def _post(self, signal: Signal) -> Signal:
        peer = self._peer
        try:
            answer = self._client.post(peer.address, SIGNAL_PATH, signal.model_dump(), peer.public_key)
        except UnitRefused as e:
            if e.status != 409:  # busy is an answer; anything else is a refusal
                raise SignallingError(f"{peer.name} refused the call: {e}") from e
            answer = e.body
        except UnitUnreachable as e:
            raise SignallingError(f"cannot reach {peer.name}: {e}") from e
        try:
            return Signal.model_validate(answer)
        except ValidationError as e:
            raise SignallingError(f"{peer.name} answered something that is not a signal") from e


Incoming = Callable[[str, Signal, float | None], concurrent.futures.Future[Signal]]
"""(caller's unit id, signal, when it was sent on the callee's clock) -> the callee's reply."""


class MemoryLink:
    """A dialer joining a caller to a callee's engine in one process (tests): one pair per dial."""

    def __init__(self, caller_unit: str, incoming: Incoming) -> None:
        self._unit, self._incoming = caller_unit, incoming
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, peer: Peer, timeout: float) -> Signalling:
        mine, theirs = memory_pair()
        task = asyncio.get_running_loop().create_task(self._answer_one(theirs, timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return mine

    async def _answer_one(self, end: MemorySignalling, timeout: float) -> None:
        signal = await asyncio.wait_for(end.receive(), timeout)
        # One process, one clock: sent now.
        await end.send(await asyncio.wrap_future(self._incoming(self._unit, signal, time.time())))
