"""The relay in the unit: who is reached how, and the requests from units in other homes.

The composition root builds :class:`Relay` (or nothing, when ``[relay] jid`` is empty: then no
STUN/TURN server is ever asked and calls stay on the LAN) before the call engine, hands its
``dialer`` and ``ice_servers`` to the engine and its ``peer_client`` to pairing, and starts it on
the engine's loop with the web app, which answers what other units send through the relay.

Which way a unit is reached is ``routing.py``'s; both ways carry the same signed request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer
from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from appliance.call.signaling import HttpSignalling, Signalling
from appliance.config import RelayConfig
from appliance.events import Event, EventBus
from appliance.identity import Identity
from appliance.pairing.client import RELAY_PREFIX, PeerClient, UnitRefused, UnitUnreachable
from appliance.pairing.service import FINISH_PATH
from appliance.relay import GUEST_PATHS, RelayUnavailable, account, is_guest, is_on_relay
from appliance.relay.address import EXAMPLE, normalised
from appliance.relay.contacts import RelayContacts
from appliance.relay.routing import FallbackSignalling, routes
from appliance.state import Peer, StateStore
from appliance.web.peer_api import RELAY_SENDER, verified_peer
from appliance.web.schemas import json_body

if TYPE_CHECKING:
    from appliance.relay.envelope import Exchange

log = logging.getLogger(__name__)

ANNOUNCE_PATH = "/api/peer/relay"
NOWHERE = "0.0.0.0"  # noqa: S104  (the remote address of a request that came through the relay: none)


class Relay:
    def __init__(
        self,
        cfg: RelayConfig,
        password: str,
        me: Identity,
        store: StateStore,
        events: EventBus,
        *,
        tls: ssl.SSLContext,
    ) -> None:
        self._cfg, self._me, self._store, self._events = cfg, me, store, events
        self.contacts = RelayContacts(store)
        # Here and below, not at the top: slixmpp (6 MB) loads only on a unit with a relay configured.
        from appliance.relay.client import RelayClient

        self.client = RelayClient(
            cfg,
            password,
            events,
            tls=tls,
            answer=self._answer,
            accepts=self._is_paired,
            contacts=self._paired_jids,
        )
        self.peer_client = PeerClient(me, cfg.request_seconds, relay=self.post)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: Flask | None = None
        self._unsubscribe: Callable[[], None] = lambda: None

    @classmethod
    def open(cls, cfg: RelayConfig, me: Identity, store: StateStore, events: EventBus) -> Relay | None:
        """The relay part, or None when no relay is configured. Raises RelayError for bad settings."""
        if not cfg.jid:
            return None
        password, tls = account(cfg)
        return cls(cfg, password, me, store, events, tls=tls)

    def start(self, loop: asyncio.AbstractEventLoop, app: Flask) -> Relay:
        self._loop, self._app = loop, app
        self._unsubscribe = self._events.subscribe(self._on_event)
        self.client.start(loop)
        return self

    def close(self) -> None:
        self._unsubscribe()
        if self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(5)
            except (concurrent.futures.TimeoutError, RuntimeError) as e:
                log.warning("the relay connection did not close cleanly: %s", e)

    def status(self) -> dict[str, Any]:
        """The relay connection's state and which paired units are online there (their presence)."""
        return {"state": self.client.state, "jid": self._cfg.jid, "online": self.client.online()}

    # Calling out ----------------------------------------------------------------------------------

    def routes_to(self, peer: Peer) -> list[str]:
        """Where ``peer`` is reached, in order: its LAN address while on this network, its relay
        address (``routing.routes``)."""
        return routes(peer, self.contacts.jid_of(peer.unit_id))

    def route(self, peer: Peer) -> str:
        """Where ``peer`` is reached first: its LAN address on this network, else its relay address."""
        return self.routes_to(peer)[0]

    def dialer(self, peer: Peer, timeout: float) -> Signalling:
        """The call engine's signalling to ``peer``: the signed messages, directly or through the relay
        (a unit paired at home and moved away is tried at its old address first, then the relay)."""
        client = PeerClient(self._me, timeout, relay=self.post)
        ways = self.routes_to(peer)
        return FallbackSignalling(
            [HttpSignalling(dataclasses.replace(peer, address=a), self._me, timeout, client) for a in ways],
            timeout,
        )

    def ice_servers(self) -> list[RTCIceServer]:
        return self.client.ice_servers()

    def post(
        self, jid: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, dict[str, str]]:
        """One POST carried by the relay (PeerClient's relay hook); called from worker threads only."""
        if self._loop is None or threading.current_thread().name == "call":
            raise UnitUnreachable("the relay is not started")
        from appliance.relay.envelope import Exchange

        future = asyncio.run_coroutine_threadsafe(
            self.client.request(jid, Exchange(path, headers, body), timeout), self._loop
        )
        try:
            answer = future.result(timeout + 2)
        except RelayUnavailable as e:
            raise UnitUnreachable(str(e)) from e
        except concurrent.futures.TimeoutError as e:
            future.cancel()
            raise UnitUnreachable(f"no answer from {jid} through the relay") from e
        return answer.status, answer.body, answer.headers

    # Answering ------------------------------------------------------------------------------------

    async def _answer(self, sender: str, exchange: Exchange) -> Exchange:
        answer = await asyncio.to_thread(self._dispatch, sender, exchange)
        if answer.status == 200 and exchange.path == FINISH_PATH:
            self._learn_from_pairing(sender, exchange)
        return answer

    def _dispatch(self, sender: str, exchange: Exchange) -> Exchange:
        """Run the request through the web app, as if it had come over HTTP from nowhere on the LAN.
        A guest's anonymous account may only call: the unit-to-unit paths (a pairing code said
        aloud, its limits used up by any number of fresh guest accounts) are not for it."""
        from appliance.relay.envelope import Exchange

        if is_guest(sender, self._cfg.jid) and exchange.path not in GUEST_PATHS:
            log.warning("refused %s from a guest account through the relay", exchange.path)
            return _refused("a guest may only call this unit")
        if not is_on_relay(sender, self._cfg.jid) and not self._is_paired(sender):
            # A server the relay federates with (relay/setup turns that off) could otherwise pass
            # any number of its accounts off as units: a pairing code said aloud for each.
            log.warning("refused %s from an account on another server through the relay", exchange.path)
            return _refused("only units with an account on this unit's relay, or paired ones, may ask it")
        assert self._app is not None
        environ = EnvironBuilder(
            path=exchange.path,
            method="POST",
            headers=Headers(exchange.headers),
            data=exchange.body,
            environ_base={"REMOTE_ADDR": NOWHERE, RELAY_SENDER: sender},
        ).get_environ()
        body, status, headers = run_wsgi_app(self._app, environ)
        try:
            data = b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        return Exchange("", dict(headers), data, int(status.split()[0]))

    def _learn_from_pairing(self, sender: str, exchange: Exchange) -> None:
        # Paired through the relay just now: the unit that proved the code sent it from this account.
        unit = _json_field(exchange.body, "details", "unit_id")
        if unit and self._store.peer(unit) is not None:
            self._learn(unit, sender)

    def blueprint(self) -> Blueprint:
        """``POST /api/peer/relay {"jid"}``: a paired unit (signed) tells this one its relay address."""
        bp = Blueprint("relay", __name__)

        @bp.post(ANNOUNCE_PATH)
        def announce() -> ResponseReturnValue:
            unit = verified_peer()
            body = json_body()
            given = body.get("jid") if isinstance(body, dict) else None
            jid = normalised(given) if isinstance(given, str) else None
            if jid is None:
                return jsonify({"error": f"jid must be an account like {EXAMPLE}"}), 422
            self._learn(unit, jid)
            return jsonify({"jid": self._cfg.jid})

        return bp

    # Pairings -------------------------------------------------------------------------------------

    def _paired_jids(self) -> list[str]:
        """The paired units' relay accounts, as slixmpp writes them where it can (one kept as typed,
        host in capitals, must match its sender); one slixmpp refuses stays, for the client to log."""
        peers = self._store.peers()
        jids = {p.address[len(RELAY_PREFIX) :] for p in peers if p.address.startswith(RELAY_PREFIX)}
        jids |= {j for p in peers if (j := self.contacts.jid_of(p.unit_id))}
        return sorted({normalised(j) or j for j in jids})

    def _is_paired(self, jid: str) -> bool:
        account = normalised(jid)
        return account is not None and account in self._paired_jids()

    def _on_event(self, event: Event) -> None:
        if event.topic == "pairing.done" and isinstance(event.data.get("unit_id"), str):
            threading.Thread(target=self._announce, args=(event.data["unit_id"],), daemon=True).start()
        elif event.topic == "pairing.removed" and self._loop is not None:
            gone = self.contacts.keep_only({p.unit_id for p in self._store.peers()})
            for jid in gone:
                asyncio.run_coroutine_threadsafe(self.client.unsubscribe(jid), self._loop)

    def _announce(self, unit_id: str) -> None:
        """Tell a newly paired unit this unit's relay address, so it can call here from another home."""
        peer = self._store.peer(unit_id)
        if peer is None:
            return
        if peer.address.startswith(RELAY_PREFIX):
            self._learn(unit_id, peer.address[len(RELAY_PREFIX) :])
        elif peer.address.startswith(f"{NOWHERE}:"):
            return  # paired through the relay from there: that unit tells this one where it is
        try:
            answer = self.peer_client.post(
                self.route(peer), ANNOUNCE_PATH, {"jid": self._cfg.jid}, peer.public_key
            )
        except (UnitUnreachable, UnitRefused) as e:
            log.debug("could not tell %s this unit's relay address: %s", peer.name, e)
            return
        jid = answer.get("jid")
        if isinstance(jid, str):
            self._learn(unit_id, jid)

    def _learn(self, unit_id: str, jid: str) -> None:
        """Remember a paired unit's relay address and subscribe to its presence (from any thread)."""
        account = normalised(jid)
        if account is None:  # slixmpp would refuse it at every session start
            log.warning("did not keep a paired unit's relay address: not a relay account")
            log.debug("the relay address not kept: %r", jid)
            return
        jid = account
        peer = self._store.peer(unit_id)
        if peer is not None and peer.address.startswith(f"{NOWHERE}:"):
            # Paired through the relay: it has no LAN address, its relay address is where it is.
            self._store.update_address(unit_id, RELAY_PREFIX + jid)
        if self.contacts.remember(unit_id, jid) and self._loop is not None:
            self._loop.call_soon_threadsafe(self.client.subscribe, jid)


def _refused(why: str) -> Exchange:
    from appliance.relay.envelope import Exchange

    return Exchange("", {"Content-Type": "application/json"}, json.dumps({"error": why}).encode(), 403)


def _json_field(body: bytes, *keys: str) -> str | None:
    try:
        value = json.loads(body)
        for key in keys:
            value = value[key]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
