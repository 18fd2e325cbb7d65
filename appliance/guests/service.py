"""Guests in the unit: what the composition root builds for them, and closes.

The invites and the owner's page always (it says when there is no relay); with a relay, also the
guest's signalling (:class:`~appliance.guests.calls.GuestLine`) and the analysis of the guest's
video (:class:`~appliance.guests.vision.GuestVision`), whose :meth:`Guests.tap` wraps the call
engine's remote video sink, so it is built before the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from flask import Blueprint

from appliance.call.engine import CallEngine
from appliance.call.media import FrameSink
from appliance.config import VisionConfig
from appliance.events import EventBus
from appliance.guests.calls import GuestLine
from appliance.guests.invites import Invites
from appliance.guests.pages import guests_blueprint
from appliance.guests.vision import GuestVision
from appliance.identity import Identity
from appliance.state import StateStore


class Guests:
    def __init__(
        self, vision: VisionConfig, jid: str, me: Identity, store: StateStore, events: EventBus
    ) -> None:
        """``jid``: the unit's relay account ("" without a relay: guests cannot call then)."""
        self.invites = Invites(me, store)
        self.vision = GuestVision(vision, events)
        self._jid = jid
        self.line: GuestLine | None = None

    def tap(self, sink: FrameSink | None) -> FrameSink:
        return self.vision.tap(sink)

    def blueprints(self, engine: CallEngine, relay: Callable[[], Mapping[str, Any]]) -> list[Blueprint]:
        """The owner's page, and with a relay the guest's signalling into ``engine``; ``relay``: the
        relay connection's state (``Relay.status``)."""
        if not self._jid:
            return [guests_blueprint(self.invites, self._jid, relay)]
        self.line = GuestLine(engine, self.invites, self._jid, self.vision)
        return [guests_blueprint(self.invites, self._jid, relay, self.line.withdrawn), self.line.blueprint()]

    def close(self) -> None:
        if self.line is not None:
            self.line.close()
        self.vision.close()

    def __enter__(self) -> Guests:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
