"""The parts of the unit the web app works with, and how the composition root builds them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.call import UNREACHABLE
from appliance.config import WebConfig
from appliance.events import Event, EventBus
from appliance.identity import Identity
from appliance.pairing.client import PeerClient
from appliance.pairing.codes import CodeGuard
from appliance.pairing.discovery import Discovery, DiscoveryError, SeenUnit
from appliance.pairing.service import Pairing
from appliance.state import Peer, Settings, StateStore
from appliance.web.presence import ButtonPresence

log = logging.getLogger(__name__)


class CallControl(Protocol):
    """What the pages and API need from the call engine (``appliance/call/``)."""

    @property
    def state(self) -> str: ...

    def call(self, target: str) -> None: ...

    def in_call_with(self, target: str) -> bool: ...

    def answer(self) -> None: ...

    def hangup(self) -> None: ...


@dataclass(frozen=True)
class UnitParts:
    me: Identity
    store: StateStore
    events: EventBus
    pairing: Pairing
    owner_codes: CodeGuard
    discovery: Discovery | None = None
    call: CallControl | None = None
    session_hours: float = 12.0
    # "forget everything" (appliance/privacy.py); True when the card keeps it all (read-only)
    forget: Callable[[], bool] | None = None
    backup: Callable[[], bytes] | None = None  # the unit as a backup archive (appliance/backup.py)
    presence: ButtonPresence = field(default_factory=ButtonPresence)  # owner presence by the button

    def change_settings(self, change: dict[str, Any]) -> Settings:
        """Store a settings change and advertise a new display name (the page and the API)."""
        settings = self.store.update_settings(change)
        if "display_name" in change and self.discovery is not None:
            self.discovery.rename(settings.display_name)
        return settings

    def serve_on(self, port: int) -> None:
        """The web server listens: tell pairing the port and advertise it on mDNS."""
        self.pairing.port = port
        if self.discovery is not None:
            try:
                self.discovery.start(port)
            except DiscoveryError as e:
                log.warning("%s", e)

    def close(self) -> None:
        if self.discovery is not None:
            self.discovery.close()
        self.pairing.close()


def recheck_when_unreachable(discovery: Discovery, pairing: Pairing) -> Callable[[Event], None]:
    """A call that could not reach a paired unit has its announced address checked again: zeroconf
    tells of an announcement only when it changes, so a check that failed once (a Wi-Fi blip) kept
    the old address until the unit restarted."""

    def on_event(event: Event) -> None:
        if event.topic != "call.state" or event.data.get("cause") != UNREACHABLE:
            return
        for seen in discovery.units():
            if seen.unit_id == event.data.get("unit_id"):
                pairing.follow_later(seen.unit_id, seen.address, again=True)

    return on_event


def follow_moves(pairing: Pairing) -> Callable[[SeenUnit], None]:
    """Keep a paired unit's address current when it moves (DHCP), once it proves it is there."""

    def follow(seen: SeenUnit) -> None:
        pairing.follow_later(seen.unit_id, seen.address)

    return follow


def build_parts(
    cfg: WebConfig,
    me: Identity,
    store: StateStore,
    events: EventBus,
    call: CallControl | None = None,
    *,
    forget: Callable[[], bool] | None = None,
    backup: Callable[[], bytes] | None = None,
    client: PeerClient | None = None,
    routes: Callable[[Peer], list[str]] | None = None,
) -> UnitParts:
    """Pairing, owner codes and (unless switched off or impossible) mDNS discovery, not yet started."""
    limits: dict[str, Any] = {
        "ttl_s": cfg.code_seconds,
        "max_wrong": cfg.max_wrong_codes,
        "lock_s": cfg.lock_seconds,
    }
    guard = CodeGuard(events, "pair", **limits)
    pairing = Pairing(me, store, events, guard, client=client or PeerClient(me), port=cfg.port, routes=routes)
    discovery = None
    if cfg.discovery:
        try:
            discovery = Discovery(me.unit_id, store.settings().display_name, cfg.host, follow_moves(pairing))
            events.subscribe(recheck_when_unreachable(discovery, pairing))
        except DiscoveryError as e:
            log.warning("%s; the pairing page will only take addresses typed by hand", e)
    return UnitParts(
        me,
        store,
        events,
        pairing,
        CodeGuard(events, "owner", **limits),
        discovery,
        call,
        cfg.session_hours,
        forget,
        backup,
        ButtonPresence(events, cfg.code_seconds),
    )
