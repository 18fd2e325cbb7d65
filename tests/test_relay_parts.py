"""The relay's parts on the unit, without namespaces or servers: envelopes, TURN answers, routing,
settings errors, the privacy of a unit without a relay, requests run through the web app, speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest

from appliance import config, identity, selftest
from appliance.call.lan import free_port
from appliance.call.signaling import HttpSignalling, Signal, SignallingError
from appliance.config import RelayConfig
from appliance.events import EventBus
from appliance.pairing.client import PeerClient, UnitUnreachable, Unusable
from appliance.pairing.codes import CodeGuard
from appliance.pairing.service import HELLO_PATH, START_PATH, Pairing
from appliance.relay import GUEST_CALL_PATH, GUEST_PATH, RelayError, envelope, routing, turn
from appliance.relay.envelope import EnvelopeError, Exchange
from appliance.relay.routing import on_link
from appliance.relay.service import Relay
from appliance.state import Peer

from .conftest import ROOT
from .pairing_units import Unit, make_unit
from .talking import Talking
from .test_call import Node

SERVICES = """<services xmlns="urn:xmpp:extdisco:2">
  <service type="stun" transport="udp" host="relay.example.org" port="3478"/>
  <service type="turn" transport="tcp" host="relay.example.org" port="3478" username="1700:x" password="p2"
    expires="2030-01-01T00:00:00Z" restricted="1"/>
  <service type="turn" transport="udp" host="relay.example.org" port="3478" username="1700:x" password="p1"
    expires="2030-01-01T00:00:00Z" restricted="1"/>
  <service type="turns" transport="tcp" host="relay.example.org" port="5349" username="1700:x" password="p3"/>
</services>"""


def test_a_request_travels_unchanged_and_only_to_unit_paths() -> None:
    sent = Exchange(
        "/api/call/signal",
        {"X-Emocall-Unit": "ab", "Cookie": "owner", "X-Emocall-Local": "1", "Content-Type": "x"},
        b"\x00{}",
    )
    got = envelope.parse(sent.to_json(), request=True)
    assert got == Exchange("/api/call/signal", {"X-Emocall-Unit": "ab", "Content-Type": "x"}, b"\x00{}")
    for path in ("/api/owner/login", "/api/settings", "/api/call", "/"):
        with pytest.raises(EnvelopeError, match="cannot be reached"):
            envelope.parse(Exchange(path, {}, b"").to_json(), request=True)
    for bad in ("{", "[]", json.dumps({"path": "/api/peer/x", "status": 0, "headers": {}, "body": "%%"})):
        with pytest.raises(EnvelopeError, match="malformed"):
            envelope.parse(bad, request=True)
    with pytest.raises(EnvelopeError, match="refused"):
        envelope.parse(Exchange("/api/peer/x", {}, b"x" * (envelope.MAX_BODY + 1)).to_json(), request=True)


def test_an_envelope_with_a_header_http_does_not_allow_is_refused() -> None:
    """A line break in a header made the web app's header parser raise, a traceback logged for each
    such request from any guest; a path is quoted in the log 80 characters at most."""
    for headers in (
        {"Content-Type": "application/json\n"},
        {"X-Emocall-Sig\r": "a"},
        {"X-Emocall-T": "\u00e9"},
    ):
        with pytest.raises(EnvelopeError, match="characters HTTP does not allow"):
            envelope.parse(Exchange("/api/guest/signal", headers, b"{}").to_json(), request=True)
    with pytest.raises(EnvelopeError, match="cannot be reached") as refused:
        envelope.parse(Exchange("/api/" + "x" * 100_000, {}, b"").to_json(), request=True)
    assert len(str(refused.value)) < 150
    with pytest.raises(EnvelopeError, match="cannot be reached"):
        envelope.parse(Exchange("/api/call/signal\n", {}, b"").to_json(), request=True)


def test_an_envelope_too_large_a_number_or_too_deep_is_malformed() -> None:
    """Python's JSON reads 1e400 and Infinity (no integer status) and fails on deep nesting with
    errors of their own: each is a malformed envelope, never an error escaping the relay's client
    (and with it a hang-up)."""
    good = Exchange("/api/call/signal", {}, b"", status=200).to_json()
    for status in ("1e400", "Infinity", "-Infinity"):
        with pytest.raises(EnvelopeError, match="malformed"):
            envelope.parse(good.replace('"status": 200', f'"status": {status}'), request=False)
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(EnvelopeError, match="malformed"):
        envelope.parse(deep, request=False)


def test_turn_credentials_from_the_relays_answer() -> None:
    ice = turn.parse(fromstring(SERVICES))
    assert [(s.urls, s.username, s.credential) for s in ice.servers] == [
        ("stun:relay.example.org:3478", None, None),
        ("turn:relay.example.org:3478?transport=udp", "1700:x", "p1"),
    ]
    assert ice.expires == 1893456000.0
    with pytest.raises(turn.TurnError, match="no TURN server"):
        turn.parse(
            fromstring(
                '<services xmlns="urn:xmpp:extdisco:2"><service type="stun" host="h" port="1"/></services>'
            )
        )


def test_only_units_on_this_machines_networks_are_called_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default via 192.168.1.1
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.168.1.0/24 on the link
    )
    monkeypatch.setattr(routing, "ROUTES", routes)
    assert on_link("192.168.1.20:8080")
    assert not on_link("192.168.2.20:8080")
    assert not on_link("relay.example.org:8080") and not on_link("xmpp:a@relay.example.org")


class Stranger(http.server.BaseHTTPRequestHandler):
    """Another device (or another home's unit) that took a moved unit's old address: it refuses,
    unsigned, as a unit refuses one it is not paired with."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "refused: not signed by a paired unit"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def old_address(kind: str) -> Iterator[str]:
    """A moved unit's old address on this network, now: a stranger's web server, or a device that
    drops connections (a listening socket whose one-place backlog is full)."""
    if kind == "stranger":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stranger)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
        return
    with (
        socket.create_server(("127.0.0.1", 0), backlog=0) as full,
        socket.create_connection(full.getsockname()),
    ):
        yield f"127.0.0.1:{full.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["stranger", "dropping"])
def test_a_moved_units_old_address_taken_by_another_device_falls_back_to_the_relay(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsigned refusal at the old address was final ("Bela does not know this unit any more.
    Pair again."), and a device dropping connections held the call for the whole ring time (40 s)
    before the relay was tried."""
    monkeypatch.setattr(routing, "LAN_CONNECT_SECONDS", 0.5)  # 3 s on a unit
    me, bela = (identity.Identity.load_or_create(tmp_path / f"{n}.key") for n in ("me", "bela"))
    relayed: list[str] = []

    def relay(jid: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        relayed.append(jid)
        raise UnitUnreachable(f"{jid} is not online on the relay")

    client = PeerClient(me, 40, relay=relay)
    with old_address(kind) as address:
        peer = Peer(bela.unit_id, "Bela", address, bela.public_key, 0.0)
        ways = [peer, dataclasses.replace(peer, address="xmpp:bela@relay.test")]
        signalling = routing.FallbackSignalling([HttpSignalling(p, me, 40, client) for p in ways])
        started = time.monotonic()
        with pytest.raises(SignallingError) as refused:
            asyncio.run(signalling.send(Signal(kind="offer", sdp="v=0", wait=40, number=1)))
    assert relayed == ["bela@relay.test"]
    # Nothing answered through the relay either: a refusal on this network (Bela may have unpaired
    # this unit: "Pair again.") is kept as the answer; without one, "Bela cannot be reached".
    assert isinstance(refused.value.__cause__, Unusable if kind == "stranger" else UnitUnreachable)
    assert time.monotonic() - started < routing.LAN_CONNECT_SECONDS + 2


def test_a_moved_unit_is_told_of_its_unpairing_through_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bela moved to another home and her old address is another device's: unpairing her was posted
    there alone ("Bela was not reachable and still lists this unit"), never through the relay that
    calls reach her by. The relay here carries the signed request to her unit over HTTP, as the
    relay's service hands it to her web app."""
    table = tmp_path / "route"  # her old address is on this network: tried first
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"  # 127.0.0.0/8 on the link
    )
    monkeypatch.setattr(routing, "ROUTES", table)
    asha, bela = make_unit(tmp_path, "Asha"), make_unit(tmp_path, "Bela")
    relayed: list[str] = []

    def relay(jid: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        relayed.append(jid)
        request = urllib.request.Request(f"http://{bela.address}{path}", body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read(), dict(answer.headers)

    try:
        with old_address("stranger") as address:
            asha.store.add_peer(bela.me.unit_id, "Bela", address, bela.me.public_key)
            bela.store.add_peer(asha.me.unit_id, "Asha", asha.address, asha.me.public_key)
            pairing = Pairing(
                asha.me,
                asha.store,
                asha.events,
                CodeGuard(asha.events, "pair"),
                client=PeerClient(asha.me, 5, relay=relay),
                port=asha.server.port,
                routes=lambda peer: routing.routes(peer, "bela@relay.test"),
            )
            peer = asha.store.peer(bela.me.unit_id)
            assert peer is not None and routing.routes(peer, "bela@relay.test")[0] == address
            told = pairing.unpair(bela.me.unit_id)
        assert told and relayed == ["bela@relay.test"]
        assert bela.store.peer(asha.me.unit_id) is None  # she forgot Asha too
        assert asha.store.peer(bela.me.unit_id) is None
    finally:
        asha.close()
        bela.close()


def test_bad_relay_settings_are_refused_with_what_to_do(tmp_path: Path) -> None:
    events = EventBus()
    unit = make_unit(tmp_path, "Asha")
    try:
        assert Relay.open(RelayConfig(), unit.me, unit.store, events) is None  # no relay: nothing at all
        missing = RelayConfig(jid="asha@relay.example.org", password_file=tmp_path / "none")
        with pytest.raises(RelayError, match=r"cannot read the relay password file .*none"):
            Relay.open(missing, unit.me, unit.store, events)
        (tmp_path / "empty").write_text("\n")
        with pytest.raises(RelayError, match="is empty"):
            Relay.open(
                RelayConfig(jid="asha@relay.example.org", password_file=tmp_path / "empty"),
                unit.me,
                unit.store,
                events,
            )
        (tmp_path / "pw").write_text("secret")
        (tmp_path / "garbled.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
        for ca in ("missing.pem", "garbled.pem"):
            account = RelayConfig(jid="asha@relay.example.org", password_file=tmp_path / "pw")
            account.ca_file = tmp_path / ca
            with pytest.raises(RelayError, match=rf"cannot use the relay's CA file .*{ca}"):
                Relay.open(account, unit.me, unit.store, events)
        with pytest.raises(config.ConfigError, match="jid"):
            config.load(None, {"relay": {"jid": "not an account"}}, environ={})
        with pytest.raises(UnitUnreachable, match=r"set this unit's \[relay\] jid"):
            PeerClient(unit.me).post("xmpp:bela@relay.example.org", HELLO_PATH, {}, unit.me.public_key)
    finally:
        unit.close()


def test_without_a_relay_a_call_asks_no_stun_or_turn_server(tmp_path: Path) -> None:
    node = Node("Asha", tmp_path)
    try:
        session = node.engine.new_session(Peer("0" * 32, "Bela", "192.0.2.1:8080", bytes(32), 0.0))

        async def offer() -> str:
            sdp = await session.offer()
            await session.close()
            return sdp

        sdp = asyncio.run_coroutine_threadsafe(offer(), node.engine.loop).result(20)
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" typ host" in line for line in candidates)
    finally:
        node.close()


def bela_on_a_relay(b: Unit, tmp_path: Path) -> Relay:
    """Bela's relay side, answering through Bela's web app (no relay server: requests are handed in)."""
    password = tmp_path / "pw"
    password.write_text("secret")
    relay = Relay.open(
        RelayConfig(jid="bela@relay.example.org", password_file=password), b.me, b.store, b.events
    )
    assert relay is not None
    relay._app = b.app
    return relay


def test_a_request_through_the_relay_gets_the_same_checks_and_signed_answer(
    paired: tuple[Unit, Unit], tmp_path: Path
) -> None:
    a, b = paired
    relay = bela_on_a_relay(b, tmp_path)
    body = b"{}"
    signed = identity.sign_request(a.me, b.me.unit_id, "POST", HELLO_PATH, body)
    request = Exchange(HELLO_PATH, {**signed.headers, "Content-Type": "application/json"}, body)
    answer = relay._dispatch("asha@relay.example.org", request)
    assert answer.status == 200 and json.loads(answer.body) == {"unit_id": b.me.unit_id}
    identity.verify_response(b.me.public_key, signed.exchange, answer.status, answer.headers, answer.body)
    again = relay._dispatch("asha@relay.example.org", request)
    assert again.status == 403 and b"replay" in again.body
    unsigned = relay._dispatch(
        "asha@relay.example.org", Exchange(HELLO_PATH, {"Content-Type": "application/json"}, body)
    )
    assert unsigned.status == 403


def test_the_unit_says_when_calls_outside_the_home_stop_and_work_again(tmp_path: Path) -> None:
    unit = Talking(tmp_path / "out.wav", spoken_events="quiet")
    try:
        down = "calls outside the home are not possible right now"
        unit.events.publish("relay.unreachable", down, state="connecting")
        unit.events.publish("relay.back", "calls outside the home work again")
        unit.events.publish("relay.unreachable", down, state="refused")  # a password changed there
        unit.events.publish("relay.unreachable", down, state="replaced")  # a second unit took the account
        unit.wait_spoken(4)
        assert unit.said() == [
            "Calls outside the home are not possible right now.",
            "Calls outside the home work again.",
            "The relay refused this unit's account, so calls outside the home are not possible."
            " Ask whoever runs the relay.",
            "Another unit signed in with this unit's relay account, so calls from outside the home go to"
            " that unit. This unit stays off the relay until it restarts. Ask whoever set up your units.",
        ]
    finally:
        unit.close()


def test_selftest_says_whether_the_relay_can_be_used(tmp_path: Path) -> None:
    no_relay = selftest.check_relay(config.load(None, {}, environ={}))
    assert (no_relay.ok, no_relay.backend) == (True, "none") and "calls stay in the home" in no_relay.detail
    missing = {"jid": "asha@relay.example.org", "password_file": str(tmp_path / "none")}
    report = selftest.check_relay(config.load(None, {"relay": missing}, environ={}))
    assert not report.ok and f"cannot read the relay password file {tmp_path / 'none'}" in report.detail
    (tmp_path / "pw").write_text("secret")
    garbled = {**missing, "password_file": str(tmp_path / "pw"), "ca_file": str(tmp_path / "pw")}
    report = selftest.check_relay(config.load(None, {"relay": garbled}, environ={}))
    assert not report.ok and "cannot use the relay's CA file" in report.detail
    settings = {"relay": {**missing, "password_file": str(tmp_path / "pw")}, "web": {"port": free_port()}}
    report = selftest.check_relay(config.load(None, settings, environ={}))
    assert not report.ok and report.detail.startswith("settings readable; no unit answers")
    pushed_off = {"relay": {"state": "replaced", "online": []}}  # what a unit pushed off reports
    report = selftest.check_relay(config.load(None, settings, environ={}), pushed_off)
    assert not report.ok
    assert report.detail.startswith("asha@relay.example.org: replaced; online: no paired unit")
    assert "Another unit signed in with this unit's relay account" in report.detail


def test_turn_credentials_are_renewed_soon_after_the_clock_jumps_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Pi's clock jumps at its first sync (no real-time clock), the loop's timer does not: the
    keeper looks at the clock every few minutes instead of sleeping until the expiry it computed."""
    from appliance.relay import client as relay_client

    monkeypatch.setattr(relay_client, "TURN_CHECK_S", 0.05)
    monkeypatch.setattr(relay_client, "TURN_RETRY_S", 0.01)
    keeper = relay_client.RelayClient(
        RelayConfig(jid="asha@relay.example.org"),
        "password",
        EventBus(),
        tls=ssl.create_default_context(),
        answer=lambda jid, exchange: exchange,
        accepts=lambda jid: True,
        contacts=list,
    )
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    keeper._ice = turn.IceServers([], clock[0] + 3600)  # an hour, as the relay gives
    asked: list[float] = []

    async def relay_answers() -> None:  # the relay's answer to the credentials query
        asked.append(clock[0])
        keeper._ice = turn.IceServers([], clock[0] + 3600)

    monkeypatch.setattr(keeper, "_refresh_turn", relay_answers)

    async def jump_and_wait() -> None:
        task = asyncio.create_task(keeper._keep_turn_fresh())
        await asyncio.sleep(0.2)
        assert asked == []  # fresh for another hour: nothing asked
        clock[0] += 3 * 86400  # the first sync after a power cut: three days later
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(jump_and_wait())
    assert asked == [clock[0]], "the credentials were not renewed after the clock jumped"


COTURN = """ip link set lo up
ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up
ip addr add 203.0.113.5/24 dev d0 && ip addr add 10.9.9.9/32 dev d0
turnserver -c "$DIR/turnserver.conf" >/dev/null 2>&1 & server=$!
turnutils_peer -L 203.0.113.5 -L 10.9.9.9 -p 3480 >/dev/null 2>&1 & peer=$!
sleep 2
secret=$(cat "$DIR/turn-secret")
for how in "-e 203.0.113.5" "-e 10.9.9.9" "-T -e 203.0.113.5"; do
  echo "== $how"
  timeout 15 turnutils_uclient -v -W "$secret" -u probe -n 3 -m 1 -c $how 203.0.113.5 2>&1 |
    grep -E "lost|error|relay addr"
done
kill $server $peer
"""


def self_signed(cert: Path, key: Path, name: str = "relay.test") -> None:
    made = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
    subprocess.run(
        ["openssl", "req", *made, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )


def coturn_alone(tmp_path: Path, *render: str) -> Path:
    """relay/setup's configuration rendered into tmp_path/relay (certificate tmp_path/cert.pem), for
    a coturn started alone in a network namespace (``unshare -n``, which needs root: skipped without
    it; as root a missing program is a failure)."""
    if os.geteuid() != 0:
        pytest.skip("coturn runs in a network namespace of its own: that needs root")
    if not all(shutil.which(p) for p in ("turnserver", "turnutils_uclient", "unshare", "openssl")):
        pytest.fail("coturn, util-linux and openssl are needed: bash .ci/setup --tests")
    cert, key, out = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "relay"
    self_signed(cert, key)
    args = ["relay.test", "--render", str(out), "--address", "203.0.113.5", "--cert", str(cert)]
    subprocess.run(
        ["bash", str(ROOT / "relay/setup"), *args, "--key", str(key), *render],
        check=True,
        capture_output=True,
    )
    return out


def test_the_relays_turn_server_relays_udp_only_and_never_into_private_networks(tmp_path: Path) -> None:
    """coturn with relay/setup's configuration, in a network namespace of its own, as on a cloud
    server whose public address (198.51.100.7) is mapped to its own: UDP media to a public address is
    relayed, from the public address; a private address is refused (403), and so is a TCP
    allocation (442), which would make the relay a TCP proxy for anyone with a guest's credentials."""
    out = coturn_alone(tmp_path, "--external-ip", "198.51.100.7/203.0.113.5")
    env = {**os.environ, "DIR": str(out)}
    done = subprocess.run(["unshare", "-n", "bash", "-c", COTURN], env=env, capture_output=True, text=True)
    public, private, tcp = done.stdout.split("== ")[1:]
    assert "Total lost packets 0 (0.000000%)" in public, done.stdout
    assert "relay addr: 198.51.100.7:" in public and "203.0.113.5:" not in public, done.stdout
    assert "403 (Forbidden IP)" in private and "lost" not in private, done.stdout
    assert "442 (TCP Transport is not allowed" in tcp and "lost" not in tcp, done.stdout


# A STUN Binding request as WebRTC sends it (RFC 5389, the magic cookie) and as RFC 3489 did (none),
# sent to the relay: what comes back, as "SIZE ATTRIBUTE..." (hex types) or "none".
STUN_PROBE = """import os, socket, struct, sys
for cookie in (0x2112A442, 0x12345678):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.sendto(struct.pack("!HHI", 1, 0, cookie) + os.urandom(12), (sys.argv[1], 3478))
    try:
        answer = s.recv(2048)
    except TimeoutError:
        print("none")
        continue
    kinds, i = [], 20
    while i + 4 <= len(answer):
        kind, n = struct.unpack("!HH", answer[i : i + 4])
        kinds.append(hex(kind))
        i += 4 + (n + 3) // 4 * 4
    print(len(answer), *kinds)
"""

# coturn at 203.0.113.5 and an echoing peer at 203.0.113.6, in the namespace the script runs in.
COTURN_AND_PEER = """ip link set lo up
ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up
ip addr add 203.0.113.5/24 dev d0 && ip addr add 203.0.113.6/24 dev d0
turnserver -c "$DIR/turnserver.conf" >/dev/null 2>&1 & server=$!
turnutils_peer -L 203.0.113.6 -p 3480 >/dev/null 2>&1 & peer=$!
sleep 2
"""

LIMITS = (
    COTURN_AND_PEER
    + """secret=$(cat "$DIR/turn-secret") to="-c -e 203.0.113.6 203.0.113.5"
echo "== stun"
"$PYTHON" -c "$STUN_PROBE" 203.0.113.5
echo "== quota"
timeout 20 turnutils_uclient -v -W "$secret" -u quota -n 3 -m 13 $to 2>&1 |
  grep -E "relay addr|error 486" | sort -u
echo "== flood"
timeout 40 turnutils_uclient -W "$secret" -u flood -n 1000 -l 1400 -z 0 -m 1 $to 2>&1 |
  grep "Total lost"
kill $server $peer
"""
)


def test_the_turn_server_amplifies_nothing_and_bounds_what_one_credential_takes(tmp_path: Path) -> None:
    """coturn with relay/setup's configuration, in a network namespace: every line of it is taken (a
    line coturn cannot read is only logged); a STUN answer carries only what WebRTC reads and an
    RFC 3489 request gets none, so a forged-source request is not multiplied at someone else; one
    credential (anyone gets a guest's) holds at most 12 allocations; and a session sending far more
    than a call's video is cut to max-bps."""
    out = coturn_alone(tmp_path)
    env = {**os.environ, "DIR": str(out), "PYTHON": sys.executable, "STUN_PROBE": STUN_PROBE}
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", LIMITS], env=env, capture_output=True, text=True, timeout=120
    )
    stun, quota, flood = done.stdout.split("== ")[1:]
    log = (out / "turnserver.log").read_text()
    assert "Bad configuration format" not in log, [ln for ln in log.splitlines() if "Bad conf" in ln]
    modern, classic = stun.splitlines()[1:]
    # XOR-MAPPED-ADDRESS (0x20) and FINGERPRINT only: no MAPPED-ADDRESS (0x1), RESPONSE-ORIGIN (0x802b)
    # or OTHER-ADDRESS (0x802c), each of which makes the answer larger than the 20-byte request.
    assert modern.split()[1:] == ["0x20", "0x8028"], done.stdout
    assert classic == "none", done.stdout
    assert quota.count("relay addr") == 12 and "error 486 (Allocation Quota Reached)" in quota, done.stdout
    lost = float(flood.split("(")[1].split("%")[0])  # 1.4 MB sent at once: at most ~0.5 MB in a second
    assert lost > 30, done.stdout


RENEWAL = """ip link set lo up
ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up
ip addr add 203.0.113.5/24 dev d0
turnserver -c "$DIR/turnserver.conf" >/dev/null 2>&1 & server=$!
served() {
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    subject=$(openssl s_client -connect 203.0.113.5:5349 </dev/null 2>/dev/null |
      openssl x509 -noout -subject 2>/dev/null)
    [ -n "$subject" ] && { echo "$subject"; return; }
    sleep 0.5
  done
}
served
cp "$DIR/renewed.pem" "$DIR/../cert.pem" && cp "$DIR/renewed.key" "$DIR/../key.pem"
kill -USR2 $server  # what relay/coturn-certbot-deploy.sh has systemd send
for _ in $(seq 20); do
  sleep 0.5
  after=$(served)
  case "$after" in *renewed*) break ;; esac
done
echo "$after"
kill -0 $server && echo "still $server"
kill $server
"""


def test_the_turn_server_takes_a_renewed_certificate_without_a_restart(tmp_path: Path) -> None:
    """certbot's deploy hook must not restart coturn (every relayed call would drop every 60 days):
    coturn reloads its certificate on SIGUSR2, the same process serving the renewed one."""
    out = coturn_alone(tmp_path)
    self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", "first.relay.test")
    self_signed(out / "renewed.pem", out / "renewed.key", "renewed.relay.test")
    env = {**os.environ, "DIR": str(out)}
    done = subprocess.run(["unshare", "-n", "bash", "-c", RENEWAL], env=env, capture_output=True, text=True)
    before, after, alive = done.stdout.splitlines()
    assert before.endswith("CN = first.relay.test") and after.endswith("CN = renewed.relay.test"), done
    assert alive.startswith("still "), done
    hook = (ROOT / "relay/coturn-certbot-deploy.sh").read_text()
    assert "systemctl kill -s SIGUSR2 coturn" in hook and "restart coturn" not in hook


# A unit's media through its TURN allocation, on credentials that expire 2 to 3 s after they were made
# (aioice, as aiortc uses it); echoed by turnutils_peer. "refreshed" lines are aioice's log.
OUTLIVE = """import asyncio, base64, hashlib, hmac, logging, os, time
from aioice import turn
logging.basicConfig(level=logging.INFO, format="%(message)s")
secret = open(os.environ["DIR"] + "/turn-secret").read().strip()
user = f"{int(time.time()) + 3}:unit"
password = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()

class Heard(asyncio.DatagramProtocol):
    def __init__(self):
        self.echo = asyncio.get_running_loop().create_future()
    def datagram_received(self, data, addr):
        if not self.echo.done():
            self.echo.set_result(data)

async def main():
    relayed, heard = await turn.create_turn_endpoint(Heard, ("203.0.113.5", 3478), user, password)
    await asyncio.sleep(7)
    relayed.sendto(b"still relayed", ("203.0.113.6", 3480))
    print("echo:", (await asyncio.wait_for(heard.echo, 5)).decode())
asyncio.run(main())
"""

OUTLIVE_NET = (
    COTURN_AND_PEER
    + """timeout 30 "$PYTHON" -c "$OUTLIVE" 2>&1
kill $server $peer
"""
)


def test_a_relayed_call_outlives_the_credentials_it_began_with(tmp_path: Path) -> None:
    """coturn with relay/setup's configuration, its allocations and nonces made short (6 s and 4 s;
    on a relay: the clients' 10 minutes and 600 s) and its log verbose: an allocation made on
    credentials that then expire is refreshed on them, through a stale nonce, and relays to a new
    peer (a channel bound after the expiry). A call between units or with a guest lasts past its
    credentials (a day and an hour) without a drop: coturn checks the expiry on new allocations."""
    out = coturn_alone(tmp_path)
    conf = out / "turnserver.conf"
    assert conf.read_text().count("stale-nonce=600\n") == 1
    short = "stale-nonce=4\nmax-allocate-lifetime=6\nverbose\n"
    conf.write_text(conf.read_text().replace("stale-nonce=600\n", short))
    env = {**os.environ, "DIR": str(out), "PYTHON": sys.executable, "OUTLIVE": OUTLIVE}
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", OUTLIVE_NET], env=env, capture_output=True, text=True, timeout=60
    )
    assert "TURN allocation created" in done.stdout, done.stdout
    assert "TURN allocation refreshed" in done.stdout and "refresh failed" not in done.stdout, done.stdout
    assert "echo: still relayed" in done.stdout, done.stdout
    log = (out / "turnserver.log").read_text()
    assert "438: Stale nonce" in log, "the refresh did not go through a stale nonce"


def test_a_guest_account_reaches_only_the_guest_call(paired: tuple[Unit, Unit], tmp_path: Path) -> None:
    """Anyone may sign in anonymously on the relay's guest host: such an account must not make the
    unit say a pairing code (or use up the code limits the unit's owner needs) or reach any other
    unit-to-unit path; its paths are the guest call's (its signals, and whether the unit still has
    it), which check the invite."""
    _, b = paired
    relay = bela_on_a_relay(b, tmp_path)
    guest = "4f2a9c0d@guests.relay.example.org"
    start = Exchange(
        START_PATH, {"Content-Type": "application/json"}, b'{"unit_id": "x", "name": "y", "port": 1}'
    )
    for path in (START_PATH, HELLO_PATH, "/api/call/signal"):
        answer = relay._dispatch(guest, dataclasses.replace(start, path=path))
        assert answer.status == 403 and b"a guest may only call" in answer.body
    assert not [e for e in b.events.recent() if e.topic == "pairing.code"]
    for path in (GUEST_PATH, GUEST_CALL_PATH):
        carried = envelope.parse(
            Exchange(path, {"Content-Type": "application/json"}, b"{}").to_json(), request=True
        )
        call = relay._dispatch(guest, carried)
        assert call.status == 404  # past the gate, to the web app (this test unit has no guest line)


def test_an_account_on_another_server_is_no_unit_unless_paired(
    paired: tuple[Unit, Unit], tmp_path: Path
) -> None:
    """A relay federating with other servers (relay/setup turns it off) would hand the unit requests
    from accounts anyone can make there: they must not make it say a pairing code. A paired unit
    whose account is elsewhere is still answered."""
    a, b = paired
    relay = bela_on_a_relay(b, tmp_path)
    start = Exchange(
        START_PATH, {"Content-Type": "application/json"}, b'{"unit_id": "x", "name": "y", "port": 1}'
    )
    for stranger in ("mallory@evil.example", "x@guests.evil.example", "bela@relay.example.org.evil.example"):
        answer = relay._dispatch(stranger, start)
        assert answer.status == 403 and b"on this unit's relay, or paired ones" in answer.body, stranger
    assert not [e for e in b.events.recent() if e.topic == "pairing.code"]
    relay.contacts.remember(a.me.unit_id, "asha@home.example")
    body = b"{}"
    signed = identity.sign_request(a.me, b.me.unit_id, "POST", HELLO_PATH, body)
    hello = Exchange(HELLO_PATH, {**signed.headers, "Content-Type": "application/json"}, body)
    answer = relay._dispatch("asha@home.example", hello)
    assert answer.status == 200 and json.loads(answer.body) == {"unit_id": b.me.unit_id}
    # A unit on this relay gets past the gate, to the web app (which refuses this made-up body).
    assert relay._dispatch("ivan@relay.example.org", start).status == 422


def test_setup_renders_values_as_given_and_refuses_names_that_would_break_the_files(tmp_path: Path) -> None:
    """bash 5.2 puts the matched text for each "&" in a substitution's value (patsub_replacement): a
    certificate path with "&" was written with "@CERT@" inside it. A TURN host or address with a quote
    would end the Lua string it is put in."""
    folder = tmp_path / "certs & keys"
    folder.mkdir()
    cert, key = folder / "relay.crt", folder / "relay.key"
    self_signed(cert, key)

    def setup(*extra: str) -> subprocess.CompletedProcess[str]:
        args = ["relay.test", "--render", str(tmp_path / "out"), "--cert", str(cert), "--key", str(key)]
        return subprocess.run(
            ["bash", str(ROOT / "relay/setup"), *args, *extra], capture_output=True, text=True, timeout=30
        )

    assert setup().returncode == 0
    rendered = (tmp_path / "out" / "relay.test.cfg.lua").read_text()
    assert f'certificate = "{cert}";' in rendered and "@CERT@" not in rendered
    for option, bad in (
        ("--turn-host", 'turn"x.test'),
        ("--turn-host", "turn&x"),
        ("--turn-host", "2001:db8::7"),  # aiortc cannot read it in a TURN URL: every call would fail
        ("--address", "1.2.3.4 x"),
        # An IPv6 relay-ip gives no IPv4 relayed address, which units and browsers ask for.
        ("--address", "fe80::1%eth0"),
        ("--address", "2001:db8::5"),
    ):
        refused = setup(option, bad)
        assert refused.returncode == 2 and option in refused.stderr, (option, bad, refused.stderr)
    for option, good in (
        ("--turn-host", "turn.example.org."),
        ("--turn-host", "198.51.100.7"),
        ("--address", "203.0.113.5"),
    ):
        assert setup(option, good).returncode == 0, (option, good)
    # Run again without them (a new release, as the README says): the last run's options stay; a
    # cloud relay that lost its --external-ip announced its private address and relayed nothing.
    assert setup("--external-ip", "198.51.100.7/10.0.0.5").returncode == 0
    assert setup().returncode == 0
    coturn = (tmp_path / "out" / "turnserver.conf").read_text()
    assert "listening-ip=203.0.113.5" in coturn and "external-ip=198.51.100.7/10.0.0.5" in coturn
    assert "198.51.100.7" in (tmp_path / "out" / "relay.test.cfg.lua").read_text()  # the TURN host
    # Said, and dropped when given empty (a relay whose private address changed).
    again = setup("--address", "")
    assert again.returncode == 0 and "--external-ip 198.51.100.7/10.0.0.5, as the last run" in again.stderr
    assert "listening-ip" not in (tmp_path / "out" / "turnserver.conf").read_text()
    # certbot and Prosody spell host names in lower case: a capital made every step after them fail.
    args = ["Relay.TEST", "--render", str(tmp_path / "upper"), "--cert", str(cert), "--key", str(key)]
    assert subprocess.run(["bash", str(ROOT / "relay/setup"), *args], capture_output=True).returncode == 0
    assert 'VirtualHost "relay.test"' in (tmp_path / "upper" / "relay.test.cfg.lua").read_text()
