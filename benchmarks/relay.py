"""Calls between homes through the relay: set-up time, media CPU against a LAN call, the relay's cost.

    sudo .venv/bin/python benchmarks/relay.py [--calls 5] [--seconds 15] [--idle-units 500]

Builds the namespace topology of tests/test_relay.py (real Prosody and coturn in an "internet"
namespace, two homes behind NAT routers, home 2's switchable to a symmetric NAT) and runs units
as processes (tests/relay_unit.py: capture, call engine, web app, the relay client):

- set-up time: from ``call`` to the caller's ``connected`` (offer and answer through Prosody, ICE,
  DTLS, the data channel open), ``--calls`` times with a cone NAT (hole punched) and with a
  symmetric one (through coturn); target <= 3 s;
- media CPU: both units' CPU (utime + stime from /proc, % of one core) over ``--seconds`` of a
  connected call through each NAT, against two units on one LAN calling directly in the same run
  (no relay configured); target <= 1.1x;
- the relay's cost: ``--idle-units`` accounts signed in at once from home 1 (each says it is
  available and pings every 20 s, as a unit does), Prosody's resident memory and CPU before and
  while they are connected, per unit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.call_cpu import cpu_percent, cpu_seconds  # noqa: E402
from tests.call_unit import write_tone  # noqa: E402
from tests.relay_net import DOMAIN, Topology, run, topology  # noqa: E402
from tests.relay_unit import RelayUnit  # noqa: E402
from tests.test_relay import Homes, call, hang_up, pair, relay_args  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def call_cpu(a: RelayUnit, b: RelayUnit, seconds: float) -> list[float]:
    """Each unit's CPU in % of one core over ``seconds`` of the call that is up."""
    assert a.proc is not None and b.proc is not None
    pids = [a.proc.pid, b.proc.pid]
    time.sleep(2)  # past the start: key frames, bandwidth estimation
    return cpu_percent(pids, seconds)


def relay_calls(homes: Homes, calls: int, seconds: float) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for nat in ("cone", "symmetric"):
        homes.net.set_symmetric(nat == "symmetric")
        setups, cpu, path = [], [0.0, 0.0], {}
        for i in range(calls):
            setups.append(call(homes.a, homes.b, "Bela"))
            if i == 0:
                path = homes.a.wait_status("frames_shown", 10, 20)["pair"]
                cpu = call_cpu(homes.a, homes.b, seconds)
            hang_up(homes.a, homes.b)
        results[nat] = {"setup_s": setups, "cpu": cpu, "pair": path}
    homes.net.set_symmetric(False)
    return results


def lan_call(net: Topology, folder: Path, seconds: float, tone: Path) -> list[float]:
    """Two units without a relay on home 1's LAN (one address, two ports) calling directly."""
    a = RelayUnit("Lana", folder / "lan-a", 8081, net.unit_ip(0), netns=net.home(0))
    b = RelayUnit("Lina", folder / "lan-b", 8082, net.unit_ip(0), netns=net.home(0))
    a.pair_with(b)
    b.pair_with(a)
    try:
        for unit in (a, b):
            unit.start("--audio-file", str(tone))
        call(a, b, "Lina")
        a.wait_status("frames_shown", 10, 20)
        return call_cpu(a, b, seconds)
    finally:
        a.close()
        b.close()


def idle_units(net: Topology, folder: Path, count: int, hold_s: float) -> dict[str, float]:
    prosody = net.relay.prosody
    assert prosody is not None
    accounts = [(f"idle{i}@{DOMAIN}", f"pw-{i}-{os.urandom(6).hex()}") for i in range(count)]
    script = "".join(f'user:create("{jid}", "{password}")\n' for jid, password in accounts)
    run("prosodyctl", "--config", str(net.relay.config), "shell", ns=net.relay.ns, stdin=script, timeout=600)
    pid = prosody_pid(net)
    time.sleep(3)
    rss_before, cpu_before, start = rss_mib(pid), cpu_seconds(pid), time.monotonic()
    time.sleep(10)
    idle_cpu = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - start)
    args = {"accounts": accounts, "ca": str(net.relay.ca), "seconds": hold_s + 15}
    command = ["ip", "netns", "exec", net.home(0), sys.executable, "-m", "tests.relay_probe", "crowd"]
    joined_at = time.monotonic()
    with subprocess.Popen([*command, json.dumps(args)], stdout=subprocess.PIPE, text=True, cwd=ROOT) as crowd:
        assert crowd.stdout is not None
        connected = json.loads(crowd.stdout.readline())["connected"]
        join_s = time.monotonic() - joined_at
        time.sleep(5)  # past the sign-in burst
        cpu_before, start = cpu_seconds(pid), time.monotonic()
        time.sleep(hold_s)
        busy_cpu = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - start)
        rss_after = rss_mib(pid)
        crowd.communicate(timeout=120)
    return {
        "units": connected,
        "join_s": join_s,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
        "kib_per_unit": 1024 * (rss_after - rss_before) / max(connected, 1),
        "cpu_idle_pct": idle_cpu,
        "cpu_connected_pct": busy_cpu,
        "cpu_per_unit_pct": (busy_cpu - idle_cpu) / max(connected, 1),
    }


def prosody_pid(net: Topology) -> int:
    """The Prosody process itself (``ip netns exec`` becomes it)."""
    assert net.relay.prosody is not None
    return net.relay.prosody.pid


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=5, help="calls per NAT kind for the set-up time")
    p.add_argument("--seconds", type=float, default=15.0, help="CPU window of each measured call")
    p.add_argument("--idle-units", type=int, default=500, help="units connected at once to the relay")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces): sudo .venv/bin/python benchmarks/relay.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rly-bench-") as tmp, topology(Path(tmp) / "relay") as net:
        folder = Path(tmp)
        tone = write_tone(folder / "tone.wav", 440.0, seconds=3.0)
        units: list[RelayUnit] = []
        jids: list[str] = []
        try:
            for i, name in enumerate(("asha", "bela")):
                unit = RelayUnit(name.title(), folder / name, 8080, net.unit_ip(i), netns=net.home(i))
                jid, unit_args = relay_args(net, folder, name)
                jids.append(jid)
                units.append(unit.start(*unit_args, "--audio-file", str(tone)))
            for unit in units:
                unit.wait_for("relay.state", 30, state="connected")
            homes = Homes(net, units[0], units[1], {"a": jids[0], "b": jids[1]}, folder)
            pair(homes)
            time.sleep(2)
            relayed = relay_calls(homes, args.calls, args.seconds)
        finally:
            for unit in units:
                unit.close()
        lan = lan_call(net, folder, args.seconds, tone)
        crowd = idle_units(net, folder, args.idle_units, 30.0) if args.idle_units else {}
    report(relayed, lan, crowd)
    return 0


def report(relayed: dict[str, dict[str, object]], lan: list[float], crowd: dict[str, float]) -> None:
    print(f"LAN call (direct, no relay): CPU caller {lan[0]:.1f} %, callee {lan[1]:.1f} % of one core")
    for nat, result in relayed.items():
        setups = [float(s) for s in result["setup_s"]]  # type: ignore[attr-defined]
        cpu = [float(c) for c in result["cpu"]]  # type: ignore[attr-defined]
        ratio = sum(cpu) / sum(lan)
        print(
            f"{nat} NAT: selected pair {result['pair']}; set-up median {statistics.median(setups):.2f} s, "
            f"max {max(setups):.2f} s over {len(setups)} calls (target <= 3 s); CPU caller {cpu[0]:.1f} %, "
            f"callee {cpu[1]:.1f} %: {ratio:.2f}x the LAN call (target <= 1.1x)"
        )
    if crowd:
        print(
            f"relay with {crowd['units']:.0f} idle units (all in after {crowd['join_s']:.0f} s): Prosody "
            f"{crowd['rss_before_mib']:.1f} -> {crowd['rss_after_mib']:.1f} MiB "
            f"({crowd['kib_per_unit']:.1f} KiB per unit), CPU {crowd['cpu_idle_pct']:.2f} % idle -> "
            f"{crowd['cpu_connected_pct']:.2f} % ({crowd['cpu_per_unit_pct']:.4f} % of one core per unit)"
        )


if __name__ == "__main__":
    sys.exit(main())
