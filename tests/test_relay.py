"""Calls between homes through a relay: real Prosody and coturn, two homes behind NAT routers.

Needs root (CI runs as root) and Debian's prosody and coturn (``bash .ci/setup --tests``). One
topology serves the whole module (building it and starting the servers takes a few seconds); home
2's router is switched between a cone and a symmetric NAT by the tests that need one or the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.call.signaling import SIGNAL_PATH, Signal
from appliance.identity import sign_request
from appliance.relay import GUEST_PATH
from appliance.state import StateStore

from .call_unit import ROOT, write_tone
from .relay_net import DOMAIN, SERVER_IP, TURN_PORT, Topology, TopologyUnavailable, topology, unavailable
from .relay_unit import RelayUnit

pytestmark = pytest.mark.netns


@dataclass
class Homes:
    net: Topology
    a: RelayUnit
    b: RelayUnit
    jids: dict[str, str]
    folder: Path


def relay_args(net: Topology, folder: Path, name: str) -> tuple[str, list[str]]:
    """A new account for unit ``name`` on the relay: its address, and the unit's options to use it."""
    jid, password = net.relay.add_unit(name)
    secret = folder / f"{name}.password"
    secret.write_text(password)
    settings = {
        "jid": jid,
        "password_file": secret,
        "server": f"{SERVER_IP}:5222",
        "ca_file": net.relay.ca,
        "unreachable_seconds": 4,
        "retry_max_seconds": 1,
    }
    return jid, [arg for key, value in settings.items() for arg in ("--relay", f"{key}={value}")]


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homes]:
    folder = tmp_path_factory.mktemp("relay")
    try:
        with topology(folder / "relay") as net:
            units: list[RelayUnit] = []
            jids: list[str] = []
            try:
                for i, (name, hz) in enumerate((("asha", 440.0), ("bela", 660.0))):
                    unit = RelayUnit(name.title(), folder / name, 8080, net.unit_ip(i), netns=net.home(i))
                    tone = write_tone(folder / f"{name}.wav", hz, seconds=3.0)
                    jid, args = relay_args(net, folder, name)
                    jids.append(jid)
                    units.append(
                        unit.start(*args, "--audio-file", str(tone), "--call", "reconnect_seconds=10")
                    )
                for unit in units:
                    unit.wait_for("relay.state", 30, state="connected")
                homes = Homes(net, units[0], units[1], {"a": jids[0], "b": jids[1]}, folder)
                pair(homes)  # through the relay, as test_pair_across_homes_through_the_relay checks
                yield homes
            finally:
                for unit in units:
                    unit.close()
    except TopologyUnavailable as e:
        unavailable(e)


def pair(homes: Homes) -> None:
    pair_units(homes.a, homes.b, f"xmpp:{homes.jids['b']}")


def pair_units(a: RelayUnit, b: RelayUnit, address: str) -> None:
    """A asks B at ``address`` to pair, B says a code, A's owner types it: both are paired."""
    since_a, since_b = a.mark(), b.mark()
    a.send(f"pair {address}")
    code = b.wait_for("pairing.code", 15, since_b)["data"]["code"]
    a.wait_for("pair.asked", 15, since_a)
    a.send(f"code {code}")
    a.wait_for("pairing.done", 15, since_a)
    b.wait_for("pairing.done", 15, since_b)


def call(caller: RelayUnit, callee: RelayUnit, target: str) -> float:
    since_a, since_b = caller.mark(), callee.mark()
    start = time.monotonic()
    caller.send(f"call {target}")
    try:
        up = caller.wait_for("call.state", 30, since_a, state="connected")
        callee.wait_for("call.state", 30, since_b, state="connected")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{caller.events[since_a:]}\n{callee.events[since_b:]}") from e
    return float(up["t"]) - start


def hang_up(caller: RelayUnit, callee: RelayUnit) -> None:
    since_a, since_b = caller.mark(), callee.mark()
    caller.send("hangup")
    caller.wait_for("call.state", 10, since_a, state="idle")
    callee.wait_for("call.state", 10, since_b, state="idle")


def test_pair_across_homes_through_the_relay(homes: Homes) -> None:
    # Paired by the fixture: B said its code, A's owner typed it, the SPAKE2 exchange went through
    # the relay. Each knows the other at its relay address, and sees it online (mutual subscription).
    for unit, other in ((homes.a, "b"), (homes.b, "a")):
        deadline = time.monotonic() + 15
        while homes.jids[other] not in unit.status()["relay"]["online"]:
            assert time.monotonic() < deadline, f"{unit.name} never saw {homes.jids[other]} online"
            time.sleep(0.3)
        store = StateStore(unit.data_dir / "state.db")
        try:
            assert [p.address for p in store.peers()] == [f"xmpp:{homes.jids[other]}"]
        finally:
            store.close()


def test_call_both_ways_through_a_cone_nat_punches_a_hole(homes: Homes) -> None:
    a, b = homes.a, homes.b
    homes.net.set_symmetric(False)
    call(a, b, "Bela")
    status = a.wait_status("frames_shown", 30, 20)
    b.wait_status("frames_shown", 30, 20)
    pair_types = status["pair"]
    assert "relay" not in (pair_types["local"], pair_types["remote"]), pair_types
    assert pair_types["remote"] in ("srflx", "prflx"), pair_types
    expressions(a, b, ["happiness", "sadness", "surprise"])
    assert a.wait_status("audio_seconds_received", 1.0, 10)["audio_seconds_received"] >= 1.0
    hang_up(a, b)
    call(b, a, "Asha")
    b.wait_status("frames_shown", 30, 20)
    expressions(b, a, ["anger", "neutral"])
    assert b.wait_status("audio_seconds_received", 1.0, 10)["audio_seconds_received"] >= 1.0
    hang_up(b, a)


def expressions(sender: RelayUnit, receiver: RelayUnit, sequence: list[str]) -> None:
    """The sender's expressions reach the receiver in order over the call's data channel."""
    since = receiver.mark()
    for emotion in sequence:
        sender.send(f"emit {emotion} 0.8")
        time.sleep(0.1)
    receiver.wait_for("remote.emotion", 10, since, emotion=sequence[-1])
    assert [e["data"]["emotion"] for e in receiver.topics("remote.emotion", since)] == sequence


def test_a_symmetric_nat_is_crossed_through_turn(homes: Homes) -> None:
    a, b = homes.a, homes.b
    homes.net.set_symmetric(True)
    try:
        call(a, b, "Bela")
        status = a.wait_status("frames_shown", 30, 20)
        assert "relay" in (status["pair"]["local"], status["pair"]["remote"]), status["pair"]
        assert b.wait_status("audio_seconds_received", 1.0, 10)["audio_seconds_received"] >= 1.0
        hang_up(a, b)
    finally:
        homes.net.set_symmetric(False)


def probe_command(homes: Homes, action: str, home: int = 0) -> list[str]:
    return ["ip", "netns", "exec", homes.net.home(home), sys.executable, "-m", "tests.relay_probe", action]


def probe(homes: Homes, action: str, home: int = 0, **args: Any) -> dict[str, Any]:
    """A raw client of the relay (tests/relay_probe.py) in home ``home + 1``; its JSON result."""
    command = [*probe_command(homes, action, home), json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


@contextmanager
def listening(
    homes: Homes, account: dict[str, str], seconds: float
) -> Iterator[Callable[[], dict[str, Any]]]:
    """A raw client signed in as ``account`` listening on the relay for ``seconds``; the function
    it yields waits for the end and returns what it heard."""
    command = [*probe_command(homes, "listen"), json.dumps({**account, "seconds": seconds})]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as listener:
        out = listener.stdout
        assert out is not None
        assert json.loads(out.readline()) == {"listening": True}
        yield lambda: dict(json.loads(out.read().splitlines()[-1]))


@pytest.fixture(scope="module")
def mallory(homes: Homes) -> dict[str, str]:
    """A third account on the same relay: someone else's unit, or a stolen one."""
    jid, password = homes.net.relay.add_unit("mallory")
    return {"jid": jid, "password": password, "ca": str(homes.net.relay.ca)}


def test_the_call_goes_on_while_the_rendezvous_server_is_down(homes: Homes) -> None:
    a, b = homes.a, homes.b
    call(a, b, "Bela")
    since_a, since_b = a.mark(), b.mark()
    homes.net.relay.stop_prosody()
    try:
        a.wait_for("relay.state", 15, since_a, state="connecting")
        frames = a.status()["frames_shown"]
        said = a.wait_for("relay.unreachable", 15, since_a)
        assert said["message"] == "calls outside the home are not possible right now"
        assert a.wait_status("frames_shown", frames + 30, 10)["state"] == "connected"
    finally:
        homes.net.relay.start_prosody()
    a.wait_for("relay.state", 20, since_a, state="connected")
    b.wait_for("relay.state", 20, since_b, state="connected")
    a.wait_for("relay.back", 5, since_a)
    assert [e["data"]["state"] for e in a.topics("call.state", since_a)] == []  # never left the call
    hang_up(a, b)
    call(b, a, "Asha")  # signalling works again after the reconnection
    hang_up(b, a)


def test_unsigned_or_replayed_offers_through_the_relay_are_dropped(
    homes: Homes, mallory: dict[str, str]
) -> None:
    a, b = homes.a, homes.b
    since = b.mark()
    body = Signal(kind="offer", sdp="v=0\r\n", name="Mallory").model_dump_json().encode()
    request = {**mallory, "to": homes.jids["b"], "path": SIGNAL_PATH, "body": base64.b64encode(body).decode()}
    unsigned = probe(homes, "request", **request, headers={"Content-Type": "application/json"}, times=1)
    assert [r["status"] for r in unsigned["answers"]] == [403], unsigned
    # Signed with Asha's real key (as if copied off the relay): it counts once, its replay never.
    signed = sign_request(a.identity, b.identity.unit_id, "POST", SIGNAL_PATH, body).headers
    replayed = probe(
        homes, "request", **request, headers={**signed, "Content-Type": "application/json"}, times=2
    )
    first, second = (r["status"] for r in replayed["answers"])
    assert first != 403 and second == 403, replayed
    assert "replay" in replayed["answers"][1]["body"]
    assert b.topics("call.state", since) == [] and b.status()["state"] == "idle"


def test_one_units_account_cannot_read_anothers(homes: Homes, mallory: dict[str, str]) -> None:
    ca = str(homes.net.relay.ca)
    bela_password = (homes.folder / "bela.password").read_text()
    assert probe(homes, "login", jid=homes.jids["a"], password=bela_password, ca=ca) == {"logged_in": False}
    with listening(homes, mallory, 12) as what_it_heard:
        call(homes.a, homes.b, "Bela")  # offer and answer go through the relay meanwhile
        hang_up(homes.a, homes.b)
        heard = what_it_heard()
    assert not [s for s in heard["received"] if "urn:emocall" in s or "asha" in s or "bela" in s], heard


def test_turn_refuses_wrong_or_expired_credentials(homes: Homes) -> None:
    def credentials(user: str, expires: float, secret: str) -> dict[str, Any]:
        name = f"{int(expires)}:{user}"
        password = base64.b64encode(hmac.new(secret.encode(), name.encode(), hashlib.sha1).digest()).decode()
        return {"host": SERVER_IP, "port": TURN_PORT, "username": name, "password": password}

    secret = homes.net.relay.secret
    assert probe(homes, "turn", **credentials("probe", time.time() + 600, secret))["allocated"]
    wrong = probe(homes, "turn", **credentials("probe", time.time() + 600, "not the secret"))
    assert not wrong["allocated"] and "401" in wrong["error"], wrong
    expired = probe(homes, "turn", **credentials("probe", time.time() - 60, secret))
    assert not expired["allocated"], expired


def test_a_revoked_unit_is_cut_off_and_cannot_sign_in(homes: Homes) -> None:
    jid, password = homes.net.relay.add_unit("carol")
    # A random part a stranger on the guests' host cannot guess (to ask whether it exists, is online).
    assert re.fullmatch(rf"carol-[0-9a-f]{{10}}@{re.escape(DOMAIN)}", jid), jid
    account = {"jid": jid, "password": password, "ca": str(homes.net.relay.ca)}
    with listening(homes, account, 15) as what_it_heard:
        homes.net.relay.unit_command("revoke", jid)  # as `relay/unit list` prints it
        heard = what_it_heard()
    assert heard["cut_off"], heard
    assert probe(homes, "login", **account) == {"logged_in": False}


def test_units_paired_at_home_keep_calling_after_one_moves_away(homes: Homes) -> None:
    net, folder = homes.net, homes.folder
    jids, args = {}, {}
    for name in ("cora", "dina"):
        jids[name], args[name] = relay_args(net, folder, name)
    # Paired on home 1's LAN (one address, two ports): each tells the other its relay account.
    cora = RelayUnit("Cora", folder / "cora", 8081, net.unit_ip(0), netns=net.home(0))
    dina = RelayUnit("Dina", folder / "dina", 8082, net.unit_ip(0), netns=net.home(0))
    units = [cora.start(*args["cora"]), dina.start(*args["dina"])]
    try:
        pair_units(cora, dina, dina.address)
        for unit, other in ((cora, "dina"), (dina, "cora")):
            deadline = time.monotonic() + 15
            while jids[other] not in unit.status()["relay"]["online"]:
                assert time.monotonic() < deadline, f"{unit.name} never learnt {other}'s relay account"
                time.sleep(0.3)
        dina.close()
        # Dina moves to home 2. Cora still has her old LAN address, now nobody's: tried, then the relay.
        units[1] = dina = RelayUnit("Dina", folder / "dina", 8082, net.unit_ip(1), netns=net.home(1))
        dina.start(*args["dina"]).wait_for("relay.state", 30, state="connected")
        call(cora, dina, "Dina")
        hang_up(cora, dina)
        call(dina, cora, "Cora")  # from home 2 Cora's address is not local: the relay at once
        hang_up(dina, cora)
    finally:
        for unit in units:
            unit.close()


def test_a_browser_could_join_later_over_websocket_with_turn_credentials(
    homes: Homes, mallory: dict[str, str]
) -> None:
    # What a guest's browser will need (the browser guests' issue): XMPP over WebSocket on HTTPS,
    # and TURN credentials for UDP, TCP and TLS from the same XEP-0215 answer the units use.
    handshake = probe(homes, "websocket", host=DOMAIN, ca=mallory["ca"])
    assert handshake == {"status": "HTTP/1.1 101 Switching Protocols", "protocol": "xmpp"}
    offered = probe(homes, "services", **mallory)["asked"][0]["services"]
    assert offered == [
        ["stun", "udp", "3478", False],
        ["turn", "tcp", "3478", True],
        ["turn", "udp", "3478", True],
        ["turns", "tcp", "5349", True],
    ]


def test_a_guest_address_floods_the_unit_no_faster_than_two_requests_a_second(homes: Homes) -> None:
    """A guest's requests reached the unit without limit, a millisecond of its relay thread each:
    20 pass at once, then two a second; the relay refuses the rest (resource-constraint, which the
    unit never answers: what it answers is its HTTP status). A guest's presence and messages are
    dropped (``-k follow_the_units_presence`` in tests/test_guest_call.py)."""
    guest = {"jid": f"guests.{DOMAIN}", "anonymous": True, "ca": str(homes.net.relay.ca)}
    asked = {**guest, "to": homes.jids["b"], "path": GUEST_PATH, "headers": {}, "body": "", "times": 40}
    sent = probe(homes, "request", **asked)
    answers = sent["answers"]
    passed = [a for a in answers if a["status"]]
    refused = [a for a in answers if not a["status"]]
    assert 20 <= len(passed) <= 20 + 2 * sent["seconds"] + 1, sent
    assert all(a["status"] >= 400 for a in passed), answers
    assert refused and {a["body"] for a in refused} == {"resource-constraint"}, answers


def test_a_guest_address_gets_four_turn_credentials_then_one_every_few_minutes(
    homes: Homes, mallory: dict[str, str]
) -> None:
    """Anyone may sign in as a guest, and each sign-in got TURN credentials: 84 of them, 12
    allocations each, held all of coturn's total-quota, and every call that needed TURN failed.
    One address now gets 4 at once, then one every 250 s (relay/guests.pfw); the guest page keeps
    its own (``-k keeps_its_turn_credentials`` in tests/test_guest_page.py). From home 2: home 1's
    address spent its requests on the flood test above. Units are not limited."""
    guest = {"jid": f"guests.{DOMAIN}", "anonymous": True, "ca": str(homes.net.relay.ca)}
    asked = probe(homes, "services", home=1, times=6, **guest)["asked"]
    with_turn = ["turn", "udp", "3478", True]
    assert [with_turn in a.get("services", []) for a in asked] == [True] * 4 + [False] * 2, asked
    assert asked[4:] == [{"refused": "resource-constraint"}] * 2, asked
    units = probe(homes, "services", home=1, times=6, **mallory)["asked"]
    assert all(with_turn in a["services"] for a in units), units


def test_a_guest_gets_turn_credentials_only_as_its_page_asks_for_them(homes: Homes) -> None:
    """Prosody 0.12 answers XEP-0215's credentials request on any host without its access list
    (mod_external_services, handle_credentials): a guest asking the units' host got a unit's
    day-long credentials. And XEP-0215's older version (urn:xmpp:extdisco:1) went around the limit
    of four. The page asks its own host for services, in version 2: the relay refuses a guest the
    rest (relay/guests.pfw)."""
    guest = {"jid": f"guests.{DOMAIN}", "anonymous": True, "ca": str(homes.net.relay.ca)}
    asks = [
        {"ask": "credentials", "at": DOMAIN},
        {"ask": "credentials"},
        {"ns": "urn:xmpp:extdisco:1"},
        {"ns": "urn:xmpp:extdisco:1", "ask": "credentials", "at": DOMAIN},
    ]
    answers = [probe(homes, "services", **guest, **ask)["asked"][0] for ask in asks]
    assert answers == [{"refused": "forbidden"}] * len(asks), answers


def test_two_emocall_run_units_pair_at_a_distance_and_call(homes: Homes) -> None:
    """The product itself: `emocall run` in each home, its owner's page, the relay settings in its
    configuration (here through EMOCALL_RELAY__* variables)."""
    net, folder = homes.net, homes.folder
    procs: list[subprocess.Popen[bytes]] = []

    def owner(home: int, data: Path, action: str, **args: Any) -> dict[str, Any]:
        command = ["ip", "netns", "exec", net.home(home), sys.executable, "-m", "tests.relay_owner"]
        done = subprocess.run(
            [*command, "8090", str(data), action, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
        )
        assert done.returncode == 0, (
            f"{action}: {done.stderr[-1500:]}\n{(data / 'run.log').read_text()[-1500:]}"
        )
        return dict(json.loads(done.stdout.splitlines()[-1]))

    def wait(
        home: int, data: Path, what: str, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check(status := owner(home, data, "status")):
            assert time.monotonic() < deadline, f"no {what} in {timeout} s: {status}"
            time.sleep(0.5)

    dirs = [folder / "run-esme", folder / "run-fern"]
    jids: list[str] = []
    try:
        for i, name in enumerate(("esme", "fern")):
            jid, password = net.relay.add_unit(name)
            jids.append(jid)
            (folder / f"{name}.password").write_text(password)
            dirs[i].mkdir()
            relay = {"JID": jid, "PASSWORD_FILE": folder / f"{name}.password", "SERVER": f"{SERVER_IP}:5222"}
            env = {
                **os.environ,
                **{f"EMOCALL_RELAY__{key}": str(value) for key, value in relay.items()},
                "EMOCALL_RELAY__CA_FILE": str(net.relay.ca),
                "EMOCALL_WEB__DISCOVERY": "false",
                "EMOCALL_CALL__AUDIO_IN": "none",
                "EMOCALL_SPEECH__OUTPUT": "wav",
                "EMOCALL_SPEECH__RATE_WPM": "450",  # a stop waits for the long start-up sentence
                "EMOCALL_DISPLAY__BACKEND": "offscreen",
            }
            run = [sys.executable, "-m", "appliance.cli", "run", "--data-dir", str(dirs[i]), "--port", "8090"]
            command = [
                "ip",
                "netns",
                "exec",
                net.home(i),
                *run,
                "--source",
                "pattern",
                "--name",
                name.title(),
            ]
            with (dirs[i] / "run.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
                )
        for i, data in enumerate(dirs):
            wait(i, data, "relay connection", lambda s: s.get("relay", {}).get("state") == "connected", 90)
        shown = owner(1, dirs[1], "settings", changes={"auto_answer": True})["code"]
        paired = owner(0, dirs[0], "pair", address=f"xmpp:{jids[1]}", peer_dir=str(dirs[1]), before=shown)
        assert paired.get("paired"), paired
        owner(0, dirs[0], "call", to="Fern")
        for i, data in enumerate(dirs):
            wait(
                i,
                data,
                "call",
                lambda s: s["call"]["state"] == "connected" and s["call"]["frames_received"] > 10,
                45,
            )
        owner(0, dirs[0], "hangup")
        wait(1, dirs[1], "hang-up", lambda s: s.get("call", {}).get("state") == "idle", 20)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
