"""The relay client's own behaviour: which relay addresses it takes, whom it lists online, how it
reconnects. Most tests need no server; the last ones run a real Prosody on 127.0.0.1
(``tests/relay_loopback.py``: no namespaces, skipped without Prosody unless root)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from slixmpp.exceptions import IqTimeout
from slixmpp.stanza import Iq, Presence

from appliance import config, identity, selftest
from appliance.app import Appliance
from appliance.call.lan import free_port
from appliance.config import RelayConfig
from appliance.events import EventBus
from appliance.pairing.client import RELAY_PREFIX, PeerClient, valid_address
from appliance.pairing.codes import CodeGuard
from appliance.pairing.service import START_PATH, Pairing
from appliance.relay import RelayUnavailable, is_guest
from appliance.relay import client as relay_client
from appliance.relay.client import RelayClient
from appliance.relay.envelope import Exchange
from appliance.relay.service import ANNOUNCE_PATH, Relay
from appliance.state import StateStore
from appliance.web.api import create_app
from appliance.web.schemas import PairRequest

from .conftest import appliance_config
from .pairing_units import Unit
from .relay_loopback import LOOPBACK, Loopback, loopback_relay
from .test_hardening_button import Browser

BAD = "bela@relay..test"  # the old patterns took it; slixmpp raises InvalidJID for it


async def never_asked(jid: str, exchange: Exchange) -> Exchange:
    raise AssertionError(f"no request was expected, got {exchange.path} from {jid}")


def make_client(
    cfg: RelayConfig | None = None,
    events: EventBus | None = None,
    *,
    accepts: Callable[[str], bool] = lambda jid: False,
    contacts: Callable[[], list[str]] = list,
    password: str = "password",
    tls: ssl.SSLContext | None = None,
) -> RelayClient:
    return RelayClient(
        cfg or RelayConfig(jid="asha@relay.example.org"),
        password,
        events or EventBus(history=100),
        tls=tls or ssl.create_default_context(),
        answer=never_asked,
        accepts=accepts,
        contacts=contacts,
    )


def states(events: EventBus) -> list[str]:
    return [e.data["state"] for e in events.recent("relay.state")]


def relay_of(unit: Unit, tmp_path: Path, jid: str) -> Relay:
    """The unit's relay side (no server: requests are handed in), its web app with the relay's paths."""
    password = tmp_path / "pw"
    password.write_text("secret")
    relay = Relay.open(RelayConfig(jid=jid, password_file=password), unit.me, unit.store, unit.events)
    assert relay is not None
    relay._app = create_app(lambda: {}, unit.parts, [relay.blueprint()])
    return relay


# 1. Addresses slixmpp refuses ------------------------------------------------------------------------


def test_the_relay_federates_with_no_other_server(tmp_path: Path) -> None:
    """Prosody federates by default (server-to-server on port 5269): an account on any server would
    reach the units as one of them. The relay's configuration (relay/setup) opens no such port."""
    with loopback_relay(tmp_path) as relay:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
        ports = {
            int(line.split()[3].rpartition(":")[2])
            for line in out.splitlines()
            if f"pid={relay.prosody.pid}," in line
        }
        assert relay.port in ports and 5269 not in ports, out


def test_a_relay_account_slixmpp_refuses_is_a_settings_error() -> None:
    """Such an account made every connection fail deep in slixmpp (the task died, "connecting" for
    ever, nothing said): now the settings say so when they are read."""
    for bad in ("asha@relay..test", "asha@-relay.test", "asha@relay-.test", f"asha@{'r' * 64}.test"):
        with pytest.raises(
            config.ConfigError, match=rf"relay\.jid: .*{re.escape(repr(bad))} is not a relay account"
        ):
            config.load(None, {"relay": {"jid": bad}}, environ={})
    assert config.load(None, {"relay": {"jid": ""}}, environ={}).relay.jid == ""


def test_a_relay_account_slixmpp_refuses_is_refused_on_the_pairing_page(
    units: tuple[Unit, Unit],
) -> None:
    a, _ = units
    owner, csrf = a.owner()
    answer = owner.post("/api/pair", json={"address": f"xmpp:{BAD}"}, headers=csrf)
    assert answer.status_code == 422 and "address" in answer.get_json()["error"]
    page = owner.post("/pair/request", data={"address": BAD, "csrf": csrf["X-CSRF-Token"]})
    assert page.status_code == 422 and b"the other unit&#39;s address as its display shows it" in page.data
    assert not valid_address(f"xmpp:{BAD}") and valid_address("xmpp:bela@relay.example.org")
    # The pattern takes an IDN host slixmpp refuses: still a 422 naming the field, not a 502.
    idn = owner.post("/api/pair", json={"address": "xmpp:bela@xn--zz.test"}, headers=csrf)
    assert idn.status_code == 422 and "address" in idn.get_json()["error"]
    # An account is kept as the relay writes it, whatever case its host was typed in.
    assert PairRequest.model_validate({"address": "xmpp:bela@Relay.Example.org"}).address == (
        "xmpp:bela@relay.example.org"
    )


def test_a_paired_unit_cannot_announce_a_relay_account_slixmpp_refuses(
    paired: tuple[Unit, Unit], tmp_path: Path
) -> None:
    a, b = paired
    relay = relay_of(b, tmp_path, "bela@relay.example.org")
    answer = announce(relay, a, b, BAD)
    assert answer.status == 422 and b"jid must be an account like name@relay.example.org" in answer.body
    assert relay.contacts.jid_of(a.me.unit_id) is None


def announce(relay: Relay, a: Unit, b: Unit, jid: str) -> Exchange:
    """Asha tells Bela its relay address, signed, through Bela's relay side."""
    body = json.dumps({"jid": jid}).encode()
    signed = identity.sign_request(a.me, b.me.unit_id, "POST", ANNOUNCE_PATH, body)
    headers = {**signed.headers, "Content-Type": "application/json"}
    return relay._dispatch("asha@relay.example.org", Exchange(ANNOUNCE_PATH, headers, body))


def test_a_request_to_an_address_slixmpp_refuses_is_unreachable_not_an_error() -> None:
    """The pairing page's xmpp:x@a..b let slixmpp's InvalidJID escape Relay.post (a 500)."""
    client = make_client()

    async def ask() -> None:
        client._xmpp, client.state = client._new_stream(), "connected"
        await client.request(BAD, Exchange("/api/peer/hello", {}, b"{}"), 1.0)

    with pytest.raises(RelayUnavailable, match=r"bela@relay\.\.test is not a relay account"):
        asyncio.run(ask())


def test_a_stored_address_slixmpp_refuses_is_skipped_when_a_session_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One stored before addresses were checked raised at every session start, and the client
    connected again on the live stream, for ever."""
    client = make_client(contacts=lambda: [BAD, "cara@relay.example.org"])
    subscribed: list[str] = []
    monkeypatch.setattr(client, "subscribe", subscribed.append)
    with caplog.at_level(logging.DEBUG, logger=relay_client.__name__):
        asyncio.run(start_session(client, monkeypatch, lost=False))
    assert client.state == "connected" and subscribed == ["cara@relay.example.org"]
    said = {r.levelno: r.getMessage() for r in caplog.records if "relay address" in r.getMessage()}
    # Said at the default level without the account (it names a person called), named at DEBUG.
    assert "not one slixmpp can use" in said[logging.WARNING] and BAD not in said[logging.WARNING]
    assert BAD in said[logging.DEBUG]


def test_a_session_lost_while_it_starts_is_not_said_to_work_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection dropped while the roster and TURN were asked: the unit said "Calls outside
    the home work again." and then, at once, that they are not possible."""
    events = EventBus(history=100)
    client = make_client(events=events)
    client._said_unreachable = True  # the owner was told calls outside the home stopped
    asyncio.run(start_session(client, monkeypatch, lost=True))
    assert client.state != "connected" and not events.recent("relay.back")


async def start_session(client: RelayClient, monkeypatch: pytest.MonkeyPatch, lost: bool) -> None:
    """What follows a sign-in, on a stream whose relay answers with an empty roster and no TURN;
    ``lost``: the connection dropped meanwhile."""
    monkeypatch.setattr(client, "_refresh_turn", nothing)
    xmpp = client._xmpp = client._new_stream()

    async def empty_roster(timeout: float) -> Iq:
        return xmpp.Iq()

    monkeypatch.setattr(xmpp, "get_roster", empty_roster)
    gone = asyncio.get_running_loop().create_future()
    if lost:
        gone.set_result(None)
    await client._session_started(xmpp, gone)


async def nothing() -> None:
    return None


def test_an_own_account_slixmpp_refuses_is_said_not_left_connecting() -> None:
    """Settings built around the check (model_construct) must not leave the task dead and the
    state "connecting" with nothing said: refused, and said as a refused account is."""
    events = EventBus(history=100)
    cfg = RelayConfig.model_construct(jid="asha@relay..test", unreachable_seconds=0.1)
    client = make_client(cfg, events)

    async def run() -> None:
        client.start(asyncio.get_running_loop())
        await asyncio.sleep(0.5)
        assert client._task is not None and client._task.done() and client._task.exception() is None
        await client.close()

    asyncio.run(run())
    assert client.state == "refused" and states(events) == ["refused"]
    assert "[relay] jid" in events.recent("relay.state")[-1].message
    assert [e.message for e in events.recent("relay.unreachable")] == [
        "calls outside the home are not possible right now"
    ]


# 3. A relay host in capitals ---------------------------------------------------------------------


def test_a_relay_host_in_capitals_still_keeps_guests_to_the_guest_call(
    paired: tuple[Unit, Unit], tmp_path: Path
) -> None:
    """slixmpp lower-cases the host of every sender: compared with the host as typed in the
    settings, a guest on guests.relay.example.org was not a guest and reached every unit path."""
    a, b = paired
    assert RelayConfig(jid="bela@Relay.Example.ORG").jid == "bela@relay.example.org"
    assert is_guest("4f2a9c0d@guests.relay.example.org/x", "bela@Relay.Example.org")
    relay = relay_of(b, tmp_path, "bela@Relay.Example.org")
    start = Exchange(START_PATH, {"Content-Type": "application/json"}, b'{"unit_id": "x", "name": "y"}')
    answer = relay._dispatch("4f2a9c0d@guests.relay.example.org", start)
    assert answer.status == 403 and b"a guest may only call" in answer.body
    assert announce(relay, a, b, "asha@Relay.Example.org").status == 200
    assert relay.contacts.jid_of(a.me.unit_id) == "asha@relay.example.org"


# 4. Who is listed online -------------------------------------------------------------------------


def presence(sender: str, kind: str = "available") -> Presence:
    stanza = Presence()
    stanza["from"] = sender
    if kind != "available":
        stanza["type"] = kind
    return stanza


def test_only_paired_units_are_listed_online(paired: tuple[Unit, Unit], tmp_path: Path) -> None:
    """Anyone's directed presence (an anonymous guest's, a stranger's) was listed in /api/status and
    the self-test, and grew with their sessions."""
    a, b = paired
    relay = relay_of(b, tmp_path, "bela@relay.example.org")
    relay.contacts.remember(a.me.unit_id, "asha@Relay.Example.org")  # as typed, before hosts were lowered
    client = relay.client
    for sender in (
        "asha@relay.example.org/emocall",  # slixmpp's spelling of the paired unit
        "4f2a9c0d@guests.relay.example.org/3f",
        "mallory@relay.example.org/x",
        "bela@relay.example.org/other",  # this unit's own account, elsewhere
    ):
        client._on_presence(presence(sender))
    assert client.online() == ["asha@relay.example.org"]
    assert relay.status()["online"] == ["asha@relay.example.org"]
    client._on_presence(presence("asha@relay.example.org/emocall", "unavailable"))
    assert client.online() == []


# 5. The pause between attempts -------------------------------------------------------------------


def test_a_session_cut_at_once_keeps_the_pause_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that ends each session at once (one restarting over and over): the pause went back
    to 1 s at every session, so the unit signed in every few seconds for ever. It starts again
    from 1 s only after a session that held for a minute. (Two units on one account end each
    other's sessions with a conflict, which stops the one pushed off: -k second_unit.)"""
    clock = [1000.0]
    monkeypatch.setattr(relay_client, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    lasted = iter([0.5, 0.5, None, 0.5, 0.5, 0.5, 0.5, 120.0, 0.5, 0.5])  # None: refused, never up
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds
        await real_sleep(0)

    client = make_client(RelayConfig(jid="asha@relay.example.org", retry_max_seconds=30))

    async def session(xmpp: Any) -> Awaitable[None] | None:
        seconds = next(lasted)
        if seconds is None:
            return None

        async def until_kicked() -> None:
            clock[0] += seconds

        return asyncio.ensure_future(until_kicked())

    monkeypatch.setattr(client, "_connect_once", session)
    monkeypatch.setattr(client, "_keep_turn_fresh", nothing)
    monkeypatch.setattr(asyncio, "sleep", sleep)

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(client._run())
        while len(pauses) < 10:
            await real_sleep(0)
        task.cancel()

    asyncio.run(run())
    assert pauses == [1, 2, 4, 8, 16, 30, 30, 1, 2, 4]


# 2. Against a real Prosody -----------------------------------------------------------------------


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {seconds} s"
        await asyncio.sleep(0.05)


def test_a_refusal_then_an_outage_is_said_as_the_outage(tmp_path: Path) -> None:
    """One refused sign-in (a password reset, then fixed; Prosody restarting) and then a network
    outage kept the state "refused" all through the outage: the owner was sent to whoever runs the
    relay about the account, while the network was down."""
    events = EventBus(history=100)

    async def run() -> None:
        with loopback_relay(tmp_path) as relay:
            jid, password = relay.add_unit("asha")
            cfg, _, tls = relay.settings(jid, "not-" + password, retry_max_seconds=1)
            client = make_client(cfg, events, password="not-" + password, tls=tls)
            client.start(asyncio.get_running_loop())
            await until(lambda: client.state == "refused", 15, "refused")
        await until(lambda: client.state == "connecting", 15, "connecting")  # the relay is gone
        await client.close()

    asyncio.run(run())
    assert states(events)[-2:] == ["refused", "connecting"]


def test_a_password_corrected_on_the_unit_is_used_without_a_restart(tmp_path: Path) -> None:
    """The relay's operator resets the account and the owner's helper puts the new password in the
    unit's password file: the unit went on with the password read at its start, refused until it
    was restarted."""
    events = EventBus(history=100)

    async def run() -> None:
        with loopback_relay(tmp_path) as relay:
            jid, password = relay.add_unit("asha")
            cfg, _, tls = relay.settings(jid, "an-old-password", retry_max_seconds=1)
            client = make_client(cfg, events, password="an-old-password", tls=tls)
            client.start(asyncio.get_running_loop())
            await until(lambda: client.state == "refused", 15, "refused")
            cfg.password_file.write_text(password + "\n")
            await until(lambda: client.state == "connected", 15, "connected on the new password")
            await client.close()

    asyncio.run(run())
    assert states(events)[-2:] == ["refused", "connected"]


def test_a_second_unit_on_the_same_account_is_said_at_once_and_not_fought(tmp_path: Path) -> None:
    """A backup restored onto a second unit while the first runs: both sign in to one account.
    Prosody ends the older session (a conflict) and each unit signed in again after its pause,
    pushing the other off, for as long as both ran, without a word. The unit pushed off says it at
    once and stays off; the other keeps the relay."""
    first, second = EventBus(history=100), EventBus(history=100)

    async def run() -> None:
        with loopback_relay(tmp_path) as relay:
            jid, password = relay.add_unit("asha")
            cfg, password, tls = relay.settings(jid, password, retry_max_seconds=1)
            old = make_client(cfg, first, password=password, tls=tls)
            old.start(asyncio.get_running_loop())
            await until(lambda: old.state == "connected", 15, "connected")
            new = make_client(cfg, second, password=password, tls=tls)
            new.start(asyncio.get_running_loop())
            await until(lambda: old.state == "replaced", 15, "pushed off")
            await asyncio.sleep(2.5)  # pauses of 1 s: it would have signed in again by now
            assert (old.state, new.state) == ("replaced", "connected")
            with pytest.raises(RelayUnavailable, match="another unit signed in with this unit's relay"):
                await old.request(jid, Exchange("/api/peer/hello", {}, b"{}"), 2.0)
            await old.close()
            await new.close()
            log = (relay.dir / "prosody.log").read_text()
            assert log.count("Authenticated as") == 2, log[-2000:]

    asyncio.run(run())
    assert states(first) == ["connected", "replaced"] and states(second) == ["connected"]
    assert [e.data["state"] for e in first.recent("relay.unreachable")] == ["replaced"]
    assert not second.recent("relay.unreachable")


def test_the_owners_pages_say_why_guests_cannot_reach_the_unit(tmp_path: Path) -> None:
    """A whole unit on the relay: its status page says calls outside the home work; once a second
    unit signs in with its account, the status page, the guests page and the self-test say what
    the unit said (the guests page offered invite links that could not ring, without a word)."""
    with loopback_relay(tmp_path / "relay") as relay:
        jid, password = relay.add_unit("asha")
        cfg, password, tls = relay.settings(jid, password, retry_max_seconds=1)
        settings = {"jid": jid, "password_file": str(cfg.password_file), "server": cfg.server}
        settings["ca_file"] = str(cfg.ca_file)
        unit = Appliance(appliance_config(tmp_path / "asha", "Asha", relay=settings)).start()
        try:
            assert unit.relay is not None
            browser = Browser(unit.web.port)  # type: ignore[union-attr]
            browser.ask_for_code()
            code = next(e.data["code"] for e in reversed(unit.events.recent("pairing.code")))
            assert browser.send("POST", "/api/owner/login", {"code": str(code)})[0] == 200
            asyncio.run(until(lambda: unit.relay.client.state == "connected", 15, "connected"))
            working = "Working: connected to the relay; 0 paired units online there."
            status, page = browser.form("/")
            assert status == 200 and f"<dt>Calls outside the home</dt><dd>{working}</dd>" in page, page
            status, page = browser.form("/guests")
            assert status == 200 and "Guests cannot reach this unit right now" not in page

            async def take_the_account() -> None:
                other = make_client(cfg, password=password, tls=tls)
                other.start(asyncio.get_running_loop())
                await until(lambda: unit.relay.client.state == "replaced", 15, "pushed off")
                await other.close()

            asyncio.run(take_the_account())
            taken = (
                "Another unit signed in with this unit&#39;s relay account, so calls from outside the home"
                " go to that unit."
            )
            status, page = browser.form("/")
            assert status == 200 and f"<dt>Calls outside the home</dt><dd>{taken}" in page, page
            status, page = browser.form("/guests")
            assert f"<strong>Guests cannot reach this unit right now.</strong> {taken}" in page, page
            # `emocall selftest` asks the running unit as it does on a Pi (it was proven on a status
            # written by hand).
            report = selftest.check_relay(unit.config, selftest.running_unit(unit.config))
            assert not report.ok and report.detail.startswith(f"{jid}: replaced;"), report.detail
            assert "Another unit signed in with this unit's relay account" in report.detail
        finally:
            unit.close()


def test_a_unit_pushed_off_before_its_session_started_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two units on one account starting together (a power cut in a home with both): the conflict
    can come before the session starts, when the attempt reads as a lost connection. The unit
    stopped trying and said nothing, "connecting" for good."""
    events = EventBus(history=100)
    client = make_client(events=events)

    async def pushed_off(xmpp: Any) -> None:
        client._on_stream_error({"condition": "conflict"})  # as slixmpp hands Prosody's stream error

    monkeypatch.setattr(client, "_connect_once", pushed_off)
    asyncio.run(asyncio.wait_for(client._run(), 5))
    assert states(events) == ["replaced"]
    assert [e.data["state"] for e in events.recent("relay.unreachable")] == ["replaced"]


def test_a_ping_timeout_leads_to_exactly_one_new_connection(tmp_path: Path) -> None:
    """slixmpp's keepalive reconnects by itself on a ping timeout, beside the client's own
    reconnection: two TCP streams fed one parser and one socket was left open. Now the ping timeout
    only drops the connection and the client connects once, after its pause."""
    with loopback_relay(tmp_path) as relay:
        jid, password = relay.add_unit("asha")
        cfg, password, tls = relay.settings(jid, password)
        events = EventBus(history=100)
        client = make_client(cfg, events, password=password, tls=tls)
        connections: list[float] = []

        async def run() -> None:
            client.start(asyncio.get_running_loop())
            await until(lambda: client.state == "connected", 15, "connected")
            assert client._xmpp is not None
            xmpp = client._xmpp
            xmpp.add_event_handler("connected", lambda _: connections.append(time.monotonic()))
            keepalive = xmpp.plugin["xep_0199"]

            async def unanswered(*args: Any, **kwargs: Any) -> float:
                raise IqTimeout(xmpp.make_iq_get())

            keepalive.ping = unanswered  # the relay does not answer this ping in time
            await keepalive._keepalive()
            await until(lambda: client.state == "connecting", 5, "seen lost")
            await until(lambda: client.state == "connected", 10, "connected again")
            await asyncio.sleep(1.5)  # any second connection would have come by now
            assert xmpp.transport is not None
            await client.close()

        asyncio.run(run())
    assert len(connections) == 1, connections
    assert states(events) == ["connected", "connecting", "connected"]


def test_a_stored_bad_address_does_not_make_a_live_session_reconnect(tmp_path: Path) -> None:
    with loopback_relay(tmp_path) as relay:
        jid, password = relay.add_unit("asha")
        cfg, password, tls = relay.settings(jid, password)
        events = EventBus(history=100)
        client = make_client(cfg, events, password=password, tls=tls, contacts=lambda: [BAD])

        async def run() -> None:
            client.start(asyncio.get_running_loop())
            await until(lambda: client.state == "connected", 15, "connected")
            with pytest.raises(RelayUnavailable, match="is not a relay account"):
                await client.request(BAD, Exchange("/api/peer/hello", {}, b"{}"), 2.0)
            await asyncio.sleep(3)  # the pause after a failure is 1 s, then 2
            await client.close()

        asyncio.run(run())
    assert states(events) == ["connected"]
    prosody_log = (relay.dir / "prosody.log").read_text()
    assert prosody_log.count("Authenticated as") == 1, prosody_log[-2000:]


def test_a_unit_unpaired_while_the_relay_is_out_of_reach_is_removed_from_the_roster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Presence is sent only while connected, so a unit unpaired (or forgotten) while the relay was
    out of reach stayed subscribed both ways for good: the relay kept it in this unit's roster and
    it saw this unit online at every connection. Each session now starts by removing every roster
    item that is no longer a paired unit's, before saying this unit is online."""
    with loopback_relay(tmp_path) as relay:
        asha, bela = paired_units(relay, tmp_path)
        a = asha.client

        async def run() -> None:
            await connect_both(relay.dir, asha, bela)
            reachable = a._address
            monkeypatch.setattr(a, "_address", lambda: (LOOPBACK, free_port()))  # out of reach for Asha
            assert a._xmpp is not None
            a._xmpp.abort()
            await until(lambda: a.state == "connecting", 5, "seen lost")
            unpair(asha)
            monkeypatch.setattr(a, "_address", reachable)
            await until(lambda: bela.jid not in roster_of(relay.dir, a.jid), 15, "removed from Asha's roster")
            await asyncio.sleep(1)  # Asha's presence would have reached Bela by now
            assert a.state == "connected" and bela.online() == []
            await asyncio.gather(a.close(), bela.close())

        asyncio.run(run())
        assert roster_of(relay.dir, a.jid) == {}
        assert roster_of(relay.dir, bela.jid).get(a.jid, "none") == "none"  # Bela follows Asha no more


def test_unpairing_while_connected_removes_the_unit_from_the_roster(tmp_path: Path) -> None:
    """An unsubscribe and an unsubscribed left the other unit's item (subscription "none") in the
    roster on the relay for good; removing it (RFC 6121 2.5) ends both subscriptions as well."""
    with loopback_relay(tmp_path) as relay:
        asha, bela = paired_units(relay, tmp_path)
        a = asha.client

        async def run() -> None:
            await connect_both(relay.dir, asha, bela)
            unpair(asha)
            await until(lambda: bela.online() == [], 5, "seen offline by Bela")
            assert a.online() == []
            await asyncio.gather(a.close(), bela.close())

        asyncio.run(run())
        assert roster_of(relay.dir, a.jid) == {}
        assert roster_of(relay.dir, bela.jid).get(a.jid, "none") == "none"


def paired_units(relay: Loopback, folder: Path) -> tuple[Relay, RelayClient]:
    """Asha's relay part (on her state store, paired with Bela at his relay account) and Bela's
    client (paired with Asha), on the loopback relay; Asha's started by :func:`connect_both`."""
    (asha, asha_password), (bela, bela_password) = relay.add_unit("asha"), relay.add_unit("bela")
    store = StateStore(folder / "state.db")
    bela_unit = identity.Identity.load_or_create(folder / "bela.key")
    store.add_peer(bela_unit.unit_id, "Bela", RELAY_PREFIX + bela, bela_unit.public_key)
    cfg, password, tls = relay.settings(asha, asha_password)
    me = identity.Identity.load_or_create(folder / "asha.key")
    a = Relay(cfg, password, me, store, EventBus(history=100), tls=tls)
    a.contacts.remember(bela_unit.unit_id, bela)
    cfg, password, tls = relay.settings(bela, bela_password)
    b = make_client(cfg, password=password, tls=tls, accepts=lambda jid: jid == asha, contacts=lambda: [asha])
    return a, b


async def connect_both(folder: Path, asha: Relay, b: RelayClient) -> None:
    a = asha.client
    asha.start(asyncio.get_running_loop(), Flask(__name__))
    b.start(asyncio.get_running_loop())
    await until(lambda: a.online() == [b.jid] and b.online() == [a.jid], 15, "subscribed both ways")
    assert roster_of(folder, a.jid) == {b.jid: "both"}
    assert roster_of(folder, b.jid) == {a.jid: "both"}  # Bela's file is where roster_of looks


def unpair(asha: Relay) -> None:
    """Asha's owner unpairs every unit through the pairing part the page uses (never asked here)."""
    pairing = Pairing(
        asha._me,
        asha._store,
        asha._events,
        CodeGuard(asha._events, "pair"),
        client=PeerClient(asha._me),
        port=0,
    )
    for peer in asha._store.peers():
        pairing.forget(peer)


def roster_of(folder: Path, jid: str) -> dict[str, str]:
    """The account's roster as Prosody keeps it (data/HOST/roster/USER.dat, a Lua table; each
    non-alphanumeric character of a name written %xx): each contact's subscription, and "pending"
    for an account named only elsewhere in it (a request not answered)."""
    user, host = (re.sub(r"\W|_", lambda c: f"%{ord(c[0]):02x}", part) for part in jid.split("@"))
    stored = folder / "data" / host / "roster" / f"{user}.dat"
    text = stored.read_text() if stored.exists() else ""
    items = re.findall(r'^\t\["([^"]+)"\] = \{.*?\["subscription"\] = "(\w+)"', text, re.S | re.M)
    return {contact: "pending" for contact in re.findall(r'"([^"]+@[^"]+)"', text)} | dict(items)
