"""Raw clients of the relay for the tests, run inside a namespace (the relay is only reachable there).

``python -m tests.relay_probe ACTION JSON`` prints one JSON line with what happened:

- ``login {jid, password, ca}``: whether the relay lets this account in.
- ``request {jid, password, ca, to, path, headers, body, times}``: sends the same request to
  ``to``'s unit ``times`` times through the relay, one after another (a replay after the first),
  the answers' statuses and how long they took.
- ``listen {jid, password, ca, seconds}``: every stanza this account receives meanwhile.
- ``turn {host, port, username, password}``: a TURN allocation with these credentials (aioice).
- ``crowd {accounts, ca, seconds}``: many idle units connected at once (benchmarks/relay.py).
- ``services {jid, password, ca, times, ask, ns, at}``: the STUN/TURN services the relay hands
  this account (XEP-0215), or its refusal, for each of ``times`` sign-ins.
- ``websocket {host, ca}``: a browser's opening handshake for XMPP over WebSocket.
- ``subscribe {jid, password, ca, to, seconds}``: asks for ``to``'s presence; the presence types
  ``to`` sends back meanwhile. ``"anonymous": true`` signs in as a guest's page does (``jid``: the
  guest host).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

import slixmpp
from aioice import turn
from aioice.stun import TransactionFailed
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Iq
from slixmpp.xmlstream import register_stanza_plugin

from appliance.relay import envelope
from appliance.relay.client import PING_INTERVAL_S, RESOURCE
from appliance.relay.envelope import Exchange
from appliance.relay.turn import NS

from .relay_net import SERVER_IP, XMPP_PORT


async def connect(
    args: dict[str, Any], received: list[str] | None = None, crowd: ssl.SSLContext | None = None
) -> slixmpp.ClientXMPP | None:
    """Sign in; ``crowd``: one of many idle units sharing this TLS context (benchmarks/relay.py)."""
    if args.get("anonymous"):
        xmpp = slixmpp.ClientXMPP(args["jid"], "", sasl_mech="ANONYMOUS")
        xmpp.ssl_context = ssl.create_default_context(cafile=args["ca"])
        # The relay has one certificate, for its own name: a browser reaches the guest host over
        # HTTPS to that name; over c2s the guest host shows it too.
        xmpp.ssl_context.check_hostname = False
    elif crowd is None:
        xmpp = slixmpp.ClientXMPP(f"{args['jid']}/probe", args["password"])
        xmpp.ssl_context = ssl.create_default_context(cafile=args["ca"])
    else:
        # PLAIN inside TLS: the server checks the password; SCRAM's 10000 rounds of pure-Python
        # HMAC per client would make this process, not the relay, the bottleneck of the benchmark.
        xmpp = slixmpp.ClientXMPP(
            f"{args['jid']}/{RESOURCE}", args["password"], sasl_mech="PLAIN", ssl_context=crowd
        )
        xmpp.register_plugin("xep_0199", {"keepalive": True, "interval": PING_INTERVAL_S})
    xmpp.enable_direct_tls = False
    register_stanza_plugin(Iq, envelope.RequestElement)
    register_stanza_plugin(Iq, envelope.ResponseElement)
    outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def settle(result: bool) -> Callable[[Any], None]:
        def handler(_: Any) -> None:
            if not outcome.done():
                outcome.set_result(result)

        return handler

    xmpp.add_event_handler("session_start", settle(True))
    xmpp.add_event_handler("failed_all_auth", settle(False))
    if received is not None:
        for kind in ("message", "presence"):
            xmpp.add_event_handler(kind, lambda stanza: received.append(str(stanza)))
    xmpp.connect(SERVER_IP, XMPP_PORT)
    if not await asyncio.wait_for(outcome, 20):
        xmpp.abort()
        return None
    xmpp.send_presence()
    return xmpp


async def login(args: dict[str, Any]) -> dict[str, Any]:
    xmpp = await connect(args)
    if xmpp is not None:
        await xmpp.disconnect()
    return {"logged_in": xmpp is not None}


async def request(args: dict[str, Any]) -> dict[str, Any]:
    xmpp = await connect(args)
    assert xmpp is not None, "the probe's own account was refused"
    exchange = Exchange(args["path"], args["headers"], base64.b64decode(args["body"]))
    answers = []
    start = asyncio.get_running_loop().time()
    for _ in range(args["times"]):
        iq = xmpp.make_iq_set(ito=f"{args['to']}/{RESOURCE}")
        iq["emocall_request"]["data"] = exchange.to_json()
        try:
            result = await iq.send(timeout=15)  # type: ignore[no-untyped-call]
            answer = envelope.parse(result["emocall_response"]["data"], request=False)
            answers.append({"status": answer.status, "body": answer.body.decode(errors="replace")})
        except IqError as e:  # the relay's refusal: its condition
            answers.append({"status": 0, "body": e.iq["error"]["condition"]})
        except IqTimeout as e:
            answers.append({"status": 0, "body": str(e)})
    seconds = asyncio.get_running_loop().time() - start
    await xmpp.disconnect()
    return {"answers": answers, "seconds": seconds}


async def listen(args: dict[str, Any]) -> dict[str, Any]:
    received: list[str] = []
    xmpp = await connect(args, received)
    assert xmpp is not None, "the probe's own account was refused"
    print(json.dumps({"listening": True}), flush=True)
    try:
        await asyncio.wait_for(asyncio.shield(xmpp.disconnected), args["seconds"])
        cut_off = True
    except TimeoutError:
        cut_off = False
        await xmpp.disconnect()
    return {"received": received, "cut_off": cut_off}


async def allocate(args: dict[str, Any]) -> dict[str, Any]:
    try:
        transport, _ = await turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=(args["host"], args["port"]),
            username=args["username"],
            password=args["password"],
        )
    except (TransactionFailed, ConnectionError, OSError) as e:
        return {"allocated": False, "error": str(e)}
    relayed = transport.get_extra_info("sockname")
    transport.close()
    return {"allocated": True, "relayed": list(relayed)}


async def crowd(args: dict[str, Any]) -> dict[str, Any]:
    """Many idle units at once (the benchmark): each signs in, says it is available, pings the relay
    every 20 s as a unit does, and stays until ``seconds`` have passed after the last one is in."""
    clients: list[slixmpp.ClientXMPP] = []
    accounts = [(str(jid), str(password)) for jid, password in args["accounts"]]
    context = ssl.create_default_context(cafile=args["ca"])
    for start in range(0, len(accounts), 20):
        batch = [{"jid": j, "password": p, "ca": args["ca"]} for j, p in accounts[start : start + 20]]
        joined = await asyncio.gather(*(connect(a, crowd=context) for a in batch))
        clients += [c for c in joined if c is not None]
    print(json.dumps({"connected": len(clients)}), flush=True)
    await asyncio.sleep(args["seconds"])
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    return {"connected": len(clients)}


async def services(args: dict[str, Any]) -> dict[str, Any]:
    """What the relay hands this account for ICE (XEP-0215), as a browser would also ask it; signed
    in ``times`` times (one), asking once each time, as a client may that signs in again and again.
    ``ask``: "services" (the default) or "credentials" (for the TURN server on the relay's address);
    ``ns``: XEP-0215's namespace (its version 2 by default, or the older ``urn:xmpp:extdisco:1``);
    ``at``: the host asked (the account's own by default). Each answer's services, with the seconds
    their credentials have left, or the relay's refusal."""
    asked = []
    ns = args.get("ns", NS)
    for _ in range(args.get("times", 1)):
        xmpp = await connect(args)
        assert xmpp is not None, "the probe's own account was refused"
        iq = xmpp.make_iq_get(ito=args.get("at", args["jid"].rpartition("@")[2]))
        query = ET.SubElement(iq.xml, f"{{{ns}}}{args.get('ask', 'services')}")
        if args.get("ask") == "credentials":
            ET.SubElement(query, f"{{{ns}}}service", {"type": "turn", "host": SERVER_IP, "port": "3478"})
        try:
            result = await iq.send(timeout=10)  # type: ignore[no-untyped-call]
        except IqError as e:
            asked.append({"refused": e.iq["error"]["condition"]})
            continue
        finally:
            await xmpp.disconnect()
        found = result.xml.findall(f"{{{ns}}}*/{{{ns}}}service")
        offered = [
            [s.get("type"), s.get("transport"), s.get("port"), bool(s.get("username") and s.get("password"))]
            for s in found
        ]
        left = [int(s.get("username", "").split(":")[0]) - time.time() for s in found if s.get("username")]
        asked.append({"services": sorted(offered), "seconds_left": min(left, default=None)})
    return {"asked": asked}


async def websocket(args: dict[str, Any]) -> dict[str, Any]:
    """The opening handshake a browser makes for XMPP over WebSocket (RFC 7395)."""
    context = ssl.create_default_context(cafile=args["ca"])
    reader, writer = await asyncio.open_connection(SERVER_IP, 5281, ssl=context, server_hostname=args["host"])
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /xmpp-websocket HTTP/1.1\r\nHost: {args['host']}:5281\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: xmpp\r\n\r\n".encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    writer.close()
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return {"status": lines[0], "protocol": headers.get("Sec-WebSocket-Protocol", "")}


async def subscribe(args: dict[str, Any]) -> dict[str, Any]:
    xmpp = await connect(args)
    assert xmpp is not None, "the probe's own account was refused"
    answers: list[str] = []
    xmpp.add_event_handler(
        "presence", lambda p: answers.append(p["type"]) if p["from"].bare == args["to"] else None
    )
    xmpp.send_presence(pto=args["to"], ptype="subscribe")
    await asyncio.sleep(args["seconds"])
    await xmpp.disconnect()
    return {"answers": answers}


ACTIONS = {
    "login": login,
    "request": request,
    "listen": listen,
    "turn": allocate,
    "crowd": crowd,
    "services": services,
    "websocket": websocket,
    "subscribe": subscribe,
}

if __name__ == "__main__":
    result = asyncio.run(ACTIONS[sys.argv[1]](json.loads(sys.argv[2])))
    print(json.dumps(result))
