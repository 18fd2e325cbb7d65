"""The unit's XMPP connection to its relay (slixmpp), run on the call engine's loop.

It connects outbound with TLS (nothing to open on the home router), keeps the connection (XEP-0199
pings), reconnects with a growing pause after a loss (back to the shortest only after a connection
that held), and says what state it is in: ``relay.state`` on every change, ``relay.unreachable``
once the relay has been out of reach for ``unreachable_seconds`` (at once, and for good, when
another connection took this unit's account) and ``relay.back`` when it returns after that. While
connected it keeps STUN/TURN credentials from the relay (XEP-0215) and carries requests between
units as iq stanzas (:mod:`appliance.relay.envelope`). Presence subscriptions are accepted only
from paired units, only their presence is listed (``online``), and the relay's roster keeps only
them: each session starts by removing any other (a unit unpaired while the relay was out of reach).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import slixmpp
from aiortc import RTCIceServer
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import InvalidJID
from slixmpp.stanza import Iq
from slixmpp.xmlstream import StanzaBase, register_stanza_plugin
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath

from appliance.config import RelayConfig
from appliance.events import EventBus
from appliance.relay import RelayUnavailable, envelope, is_guest, turn
from appliance.relay.address import normalised
from appliance.relay.envelope import Exchange

log = logging.getLogger(__name__)

RESOURCE = "emocall"  # one connection per unit: its full JID is predictable
XMPP_PORT = 5222
CONNECT_TIMEOUT_S = 20.0
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 10.0
TURN_MARGIN_S = 600.0  # credentials are asked again this long before they expire
TURN_RETRY_S = 60.0  # and no more often than this
TURN_CHECK_S = 300.0  # the clock is looked at again at least this often
STEADY_S = 60.0  # a connection that lasted this long was not cut at once: the pause starts again at 1 s
NOT_CONNECTED = {  # why a request cannot go through the relay now, by state: waiting mends only the first
    "connecting": "this unit is not connected to its relay now; try again in a minute",
    "refused": "this unit's relay account cannot be used (refused, or a bad [relay] jid): see the self-test",
    "replaced": "another unit signed in with this unit's relay account: this one stays off until it restarts",
}
Answerer = Callable[[str, Exchange], Awaitable[Exchange]]
Subscription = Literal["subscribe", "subscribed"]


class RelayClient:
    def __init__(
        self,
        cfg: RelayConfig,
        password: str,
        events: EventBus,
        *,
        tls: ssl.SSLContext,
        answer: Answerer,
        accepts: Callable[[str], bool],
        contacts: Callable[[], list[str]],
    ) -> None:
        """``tls`` checks the relay's certificate; ``answer`` turns a request from a unit (its bare
        JID) into the answer; ``accepts`` says whether a bare JID belongs to a paired unit (only those
        may subscribe to this unit's presence); ``contacts`` are the paired units' JIDs, whose
        presence this unit follows."""
        self._cfg, self._password, self._events, self._tls = cfg, password, events, tls
        self._answer, self._accepts, self._contacts = answer, accepts, contacts
        self.jid = normalised(cfg.jid) or cfg.jid  # as slixmpp writes senders, to compare with them
        self.state = "connecting"
        self._xmpp: slixmpp.ClientXMPP | None = None
        self._task: asyncio.Task[None] | None = None
        self._ice: turn.IceServers | None = None
        # Replaced, never changed in place: other threads read it (status) while the loop updates it.
        self._online: frozenset[str] = frozenset()
        self._down_since = time.monotonic()
        self._said_unreachable = False
        self._replaced = False  # the relay ended a session for a newer one on this account

    # Life -------------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def begin() -> None:
            self._task = loop.create_task(self._run())

        loop.call_soon_threadsafe(begin)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._xmpp is not None and self._xmpp.transport is not None:
            await self._xmpp.disconnect(wait=1.0)

    def _new_stream(self) -> _Stream:
        xmpp = _Stream(f"{self.jid}/{RESOURCE}", self._password)
        xmpp.ssl_context = self._tls
        xmpp.enable_direct_tls = False  # STARTTLS on 5222, and never in the clear
        xmpp.enable_plaintext = False
        xmpp.auto_authorize = None  # subscriptions are decided in _on_subscribe
        xmpp.auto_subscribe = False
        xmpp.register_plugin(
            "xep_0199", {"keepalive": True, "interval": PING_INTERVAL_S, "timeout": PING_TIMEOUT_S}
        )
        register_stanza_plugin(Iq, envelope.RequestElement)
        register_stanza_plugin(Iq, envelope.ResponseElement)
        xmpp.register_handler(
            CoroutineCallback("emocall request", StanzaPath("iq@type=set/emocall_request"), self._on_request)
        )
        xmpp.add_event_handler("presence_subscribe", self._on_subscribe)
        xmpp.add_event_handler("presence_available", self._on_presence)
        xmpp.add_event_handler("presence_unavailable", self._on_presence)
        xmpp.add_event_handler("stream_error", self._on_stream_error)
        return xmpp

    async def _run(self) -> None:
        """Connect, stay connected, and after each loss try again with a pause that doubles. The only
        place that connects (see _Stream), so there is never more than one connection."""
        xmpp = self._open()
        if xmpp is None:  # nothing to try again: said as a refused account is
            await asyncio.sleep(self._cfg.unreachable_seconds)
            self._check_unreachable()
            return
        pause = 1.0
        while True:
            lasted = await self._session(xmpp)
            if self._replaced:  # also when pushed off before the session started: never said then
                self._give_way()
                return
            if lasted >= STEADY_S:
                # Only then: a relay that ends each session at once (one restarting over and over)
                # is not signed in to every few seconds.
                pause = 1.0
            self._check_unreachable()
            await asyncio.sleep(pause)
            self._check_unreachable()
            pause = min(pause * 2, self._cfg.retry_max_seconds)

    def _on_stream_error(self, error: Any) -> None:
        if error["condition"] == "conflict":
            self._replaced = True

    def _give_way(self) -> None:
        """Another connection signed in to this unit's account and the relay ended this one (Prosody
        keeps the newer): a second unit with this one's account, a backup restored onto it. Signing
        in again would end that unit's session, and it this one's, over and over, each unit reachable
        part of the time and neither saying why. This one stays off the relay until it starts again,
        and says so at once: waiting does not mend it."""
        if self.state == "replaced":
            return
        log.error("another connection signed in to this unit's relay account; staying off the relay")
        self._set("replaced", "another unit signed in to this unit's relay account")
        self._said_unreachable = True
        self._events.publish(
            "relay.unreachable",
            "another unit uses this unit's relay account: calls outside the home go to it",
            state=self.state,
            seconds=0,
        )

    def _open(self) -> _Stream | None:
        """The stream, or None (said) for an account slixmpp refuses, which RelayConfig keeps out."""
        try:
            self._xmpp = self._new_stream()
        except InvalidJID as e:
            log.error("cannot use the relay account %r: %s", self.jid, e)
            self._set(
                "refused", f"this unit's relay account {self.jid} cannot be used ({e}): fix [relay] jid"
            )
            return None
        return self._xmpp

    async def _session(self, xmpp: _Stream) -> float:
        """One attempt to connect and, when it comes up, the session until it is lost: how many
        seconds it lasted (0 when it never came up)."""
        try:
            gone = await self._connect_once(xmpp)
        except Exception:
            # slixmpp and ssl fail in ways they do not document; the unit must keep trying, and
            # whatever came up is dropped first: the next attempt must not open a second stream.
            log.exception("connecting to the relay failed unexpectedly")
            xmpp.abort()
            if self.state == "connected":
                self._lost()
            return 0.0
        if gone is None:
            return 0.0
        up = time.monotonic()
        keeper = asyncio.get_running_loop().create_task(self._keep_turn_fresh())
        try:
            await gone
        finally:
            keeper.cancel()
        self._lost()
        return self._down_since - up

    def _lost(self) -> None:
        if self._replaced:
            self._give_way()
        else:
            self._set("connecting", "the relay connection was lost; trying again")
        self._down_since = time.monotonic()
        self._online = frozenset()

    async def _connect_once(self, xmpp: slixmpp.ClientXMPP) -> asyncio.Future[Any] | None:
        """One attempt; when it is up, the future that resolves when this connection is lost."""
        outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def settle(result: str) -> Callable[[Any], None]:
            def handler(_: Any) -> None:
                if not outcome.done():
                    outcome.set_result(result)

            return handler

        handlers = {
            "session_start": settle("up"),
            "connection_failed": settle("unreachable"),
            "failed_all_auth": settle("refused"),
            "disconnected": settle("unreachable"),
        }
        for name, handler in handlers.items():
            xmpp.add_event_handler(name, handler)
        # Taken before connecting: slixmpp replaces it when this connection is lost, which can happen
        # before this coroutine resumes after session_start, and a later one would never resolve.
        gone: asyncio.Future[Any] = xmpp.disconnected
        host, port = self._address()
        try:
            xmpp.connect(host, port)
            result = await asyncio.wait_for(asyncio.shield(outcome), CONNECT_TIMEOUT_S)
        except TimeoutError:
            result = "unreachable"
        finally:
            for name, handler in handlers.items():
                xmpp.del_event_handler(name, handler)
        if result != "up":
            xmpp.cancel_connection_attempt()
            if xmpp.transport is not None:
                xmpp.abort()
            if result == "refused":
                self._set("refused", "the relay refused this unit's account: ask whoever runs the relay")
                self._read_password_again(xmpp)
            elif self.state == "refused":  # each attempt says its own cause: an outage now, not the account
                self._set("connecting", "the relay cannot be reached; trying again")
            return None
        await self._session_started(xmpp, gone)
        return gone

    def _read_password_again(self, xmpp: slixmpp.ClientXMPP) -> None:
        """After a refusal, the password file again: one corrected on the unit (its account reset
        on the relay) is used at the next attempt, not only after a restart."""
        try:
            password = self._cfg.password_file.read_text().strip()
        except OSError as e:
            log.warning("cannot read the relay password file again: %s", e.strerror)
            return
        if password:
            xmpp.password = password

    async def _session_started(self, xmpp: slixmpp.ClientXMPP, gone: asyncio.Future[Any]) -> None:
        try:
            await self._forget_unpaired(xmpp)
            await self._refresh_turn()
        except (IqError, IqTimeout, turn.TurnError) as e:
            log.warning("the relay answered only in part after connecting: %s", e)
        if gone.done():
            # Lost while the roster and TURN were asked: not "connected", and "work again" is not
            # said for a session already over (the loss would be said after it at once).
            return
        # After the roster is pruned: a unit unpaired meanwhile is not told that this one is online.
        xmpp.send_presence()
        back = self._said_unreachable
        self._said_unreachable = False
        self._set("connected", "connected to the relay")
        for jid in self._contacts():  # paired while the relay was out of reach: subscribe now
            try:
                subscription = xmpp.client_roster[jid]["subscription"]
            except InvalidJID:
                # Kept before addresses were checked as slixmpp checks them: that unit is left out,
                # not this session (it would be torn down and tried again, at every start).
                # Accounts only at DEBUG (README, "Privacy"): they name the people called.
                log.warning("skipped a paired unit: its relay address is not one slixmpp can use")
                log.debug("the relay address skipped: %r", jid)
                continue
            if subscription != "both":
                self.subscribe(jid)
        if back:
            self._events.publish("relay.back", "calls outside the home work again")

    def _address(self) -> tuple[str, int]:
        server = self._cfg.server or self.jid.split("@", 1)[1]
        host, _, port = server.partition(":")
        return host, int(port or XMPP_PORT)

    def _set(self, state: str, message: str) -> None:
        if state != self.state:
            self.state = state
            self._events.publish("relay.state", message, state=state, jid=self.jid)

    def _check_unreachable(self) -> None:
        down = time.monotonic() - self._down_since
        if not self._said_unreachable and down >= self._cfg.unreachable_seconds:
            self._said_unreachable = True
            self._events.publish(
                "relay.unreachable",
                "calls outside the home are not possible right now",
                state=self.state,
                seconds=round(down),
            )

    # TURN -------------------------------------------------------------------------------------------

    async def _refresh_turn(self) -> None:
        assert self._xmpp is not None
        iq = self._xmpp.make_iq_get(ito=self.jid.split("@", 1)[1])
        iq.xml.append(turn.query())
        result = await iq.send(timeout=PING_TIMEOUT_S)  # type: ignore[no-untyped-call]
        self._ice = turn.parse(result.xml.find(f"{{{turn.NS}}}services"))

    def ice_servers(self) -> list[RTCIceServer]:
        """The relay's STUN/TURN servers for a new call, or none while it has given none (or they expired)."""
        ice = self._ice
        return list(ice.servers) if ice is not None and ice.fresh(0) else []

    async def _keep_turn_fresh(self) -> None:
        """While connected, ask for new credentials TURN_MARGIN_S before the current ones expire.

        The wait is cut into TURN_CHECK_S steps, each ending with a look at the clock: a Pi has no
        real-time clock, and when its clock jumps at the first sync the loop's timer does not, so
        one long sleep to the expiry would outlast the credentials by the size of the jump."""
        while True:
            left = self._ice.expires - time.time() - TURN_MARGIN_S if self._ice else 0.0
            await asyncio.sleep(min(max(left, TURN_RETRY_S), TURN_CHECK_S))
            if self._ice is not None and self._ice.fresh(TURN_MARGIN_S):
                continue
            try:
                await self._refresh_turn()
            except (IqError, IqTimeout, turn.TurnError) as e:
                log.warning("could not renew the TURN credentials: %s", e)

    # Requests between units -------------------------------------------------------------------------

    async def request(self, jid: str, exchange: Exchange, timeout: float) -> Exchange:
        """Send a request to the unit with this bare JID; its answer. Raises RelayUnavailable."""
        if self.state != "connected" or self._xmpp is None:
            raise RelayUnavailable(NOT_CONNECTED.get(self.state, NOT_CONNECTED["connecting"]))
        account = normalised(jid)
        if account is None:  # slixmpp's InvalidJID would escape to the caller (a 500 on the page)
            raise RelayUnavailable(f"{jid} is not a relay account; check the address")
        iq = self._xmpp.make_iq_set(ito=f"{account}/{RESOURCE}")
        iq["emocall_request"]["data"] = exchange.to_json()
        try:
            result = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
        except IqTimeout as e:
            raise RelayUnavailable(f"{jid} did not answer through the relay within {timeout:.0f} s") from e
        except IqError as e:
            condition = e.iq["error"]["condition"]
            raise RelayUnavailable(f"{jid} cannot be reached through the relay ({condition})") from e
        try:
            return envelope.parse(result["emocall_response"]["data"], request=False)
        except envelope.EnvelopeError as e:
            raise RelayUnavailable(f"{jid} answered something that is not a unit's answer") from e

    async def _on_request(self, stanza: StanzaBase) -> None:
        iq: Any = stanza  # an Iq with our request (the handler's matcher says so)
        sender = iq["from"].bare
        try:
            request = envelope.parse(iq["emocall_request"]["data"], request=True)
        except envelope.EnvelopeError as e:
            log.warning("dropped a request through the relay: %s", e)
            log.debug("the dropped request came from %s", sender)
            _refuse(iq, "bad-request")
            return
        try:
            answer = await self._answer(sender, request)
        except Exception:
            # The web app answers every request it can parse; whatever else breaks, the sender hears.
            log.exception("a request through the relay could not be answered")
            log.debug("the request that could not be answered came from %s", sender)  # an account: DEBUG
            _refuse(iq, "internal-server-error")
            return
        reply = iq.reply(clear=True)
        reply["emocall_response"]["data"] = answer.to_json()
        reply.send()

    # Presence ---------------------------------------------------------------------------------------

    def subscribe(self, jid: str) -> None:
        """Ask for the paired unit's presence and pre-approve its asking for ours (a mutual subscription)."""
        self._send_presence(jid, "subscribed", "subscribe")

    async def unsubscribe(self, jid: str) -> None:
        """Forget an unpaired unit on the relay: its roster item is removed, which ends both
        subscriptions (RFC 6121 2.5.3; an unsubscribe and an unsubscribed leave the item there for
        good). While not connected, the next session removes it (:meth:`_forget_unpaired`)."""
        account = normalised(jid)
        self._online -= {account or jid}
        if account is not None and self._xmpp is not None and self.state == "connected":
            # Prosody tells the other unit that its subscription ended, not that this unit is gone:
            # it would list this unit online until its next connection.
            self._xmpp.send_presence(pto=account, ptype="unavailable")
            await self._remove(self._xmpp, account)

    async def _forget_unpaired(self, xmpp: slixmpp.ClientXMPP) -> None:
        """Remove from this unit's roster on the relay every account that is no longer a paired
        unit's: one unpaired (or forgotten) while the relay was out of reach is still there."""
        # The whole roster, not only what changed since this process last asked (roster versioning):
        # an item unchanged since, such as that of a unit unpaired while offline, must be seen too.
        xmpp.client_roster.version = ""
        roster = await xmpp.get_roster(timeout=PING_TIMEOUT_S)
        assert roster is not None  # None only for an iq that is not a get or a set
        paired = set(self._contacts())
        for jid in roster["roster"]["items"]:
            if jid.bare not in paired:
                await self._remove(xmpp, jid.bare)

    async def _remove(self, xmpp: slixmpp.ClientXMPP, jid: str) -> None:
        removed = xmpp.client_roster.remove(jid)
        assert removed is not None  # None only for a component, which this client is not
        try:
            # slixmpp's remove takes no timeout (its own is 120 s, for each unit removed).
            await asyncio.wait_for(removed, PING_TIMEOUT_S)
        except (IqError, IqTimeout, TimeoutError) as e:
            # No account named: it is a person's unit.
            log.warning(
                "the relay kept an unpaired unit in the roster (%s): removed at the next connection", e
            )

    def _send_presence(self, jid: str, *kinds: Subscription) -> None:
        account = normalised(jid)
        if account is None:  # kept before addresses were checked: slixmpp would raise InvalidJID
            log.warning("no presence sent to a paired unit: its relay address is not one slixmpp can use")
            log.debug("the relay address without presence: %r", jid)
        elif self._xmpp is not None and self.state == "connected":
            for kind in kinds:
                self._xmpp.send_presence(pto=account, ptype=kind)

    def online(self) -> list[str]:
        """The paired units whose presence says they are connected."""
        return sorted(self._online)

    def _on_subscribe(self, presence: Any) -> None:
        assert self._xmpp is not None
        jid = presence["from"].bare
        if self._accepts(jid):
            self._xmpp.send_presence(pto=jid, ptype="subscribed")
        elif is_guest(jid, self.jid):
            # A guest never pairs: refused, so the relay does not keep it and send it at every start.
            self._xmpp.send_presence(pto=jid, ptype="unsubscribed")
        else:
            # Left pending, not refused: a unit being paired may ask before this side has pinned it;
            # subscribe() approves it then. Anyone else's request stays pending, unanswered.
            log.debug("a presence subscription from %s waits: not a paired unit (yet)", jid)

    def _on_presence(self, presence: Any) -> None:
        jid = presence["from"].bare
        if presence["type"] == "unavailable":
            self._online -= {jid}
        elif jid != self.jid and self._accepts(jid):
            # Anyone may send this unit a presence (a guest, a stranger, each of their sessions):
            # only paired units are listed, or /api/status and the self-test grow with strangers.
            self._online |= {jid}


def _refuse(iq: Any, condition: str) -> None:
    error = iq.reply(clear=True)
    error["type"] = "error"
    error["error"]["condition"] = condition
    error.send()


class _Stream(slixmpp.ClientXMPP):
    """slixmpp's client, except that it never connects again by itself.

    Its XEP-0199 keepalive calls ``reconnect`` on a ping timeout (and ``see-other-host`` does too),
    which connects at once beside RelayClient._run, which connects again after every loss: two
    streams fed one parser and a socket was left open. Here ``reconnect`` only drops the
    connection; _run sees it lost and connects, once, after its pause."""

    def reconnect(self, wait: float = 2.0, reason: str = "Reconnecting") -> None:
        log.info("dropping the relay connection (%s); it is made again after a pause", reason)
        self.disconnect_reason = reason
        self.abort()
