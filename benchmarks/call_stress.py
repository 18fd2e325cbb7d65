"""Calls in a row between two `emocall run` units: memory, threads and file descriptors per call.

    .venv/bin/python benchmarks/call_stress.py --calls 200 [--seconds 1] [--vision]

Two units on this machine's address (``tests/stress_unit.py``: the real `emocall run`, camera on
the moving pattern, speaker and display to files, auto-answer on). Asha calls Bela, the call lasts
``--seconds``, one side hangs up (they take turns), both are back to "ready for calls"; after each
call one line: the call's number, the time to connect, and each unit's RSS (MB), threads and fds.
At the end: the slope of RSS per call (least squares) over all calls and over the second half, and
the threads and fds after the last call against those after the first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.call.lan import free_port, host_address  # noqa: E402
from tests.stress_unit import RunningUnit  # noqa: E402


def one_call(a: RunningUnit, b: RunningUnit, seconds: float, a_hangs_up: bool) -> float:
    """One call from a to b; the seconds from asking to both units connected."""
    marks = a.mark(), b.mark()
    t0 = time.monotonic()
    a.call(b)
    a.wait_state(f"connected to {b.name}", 30, marks[0])
    b.wait_state(f"connected to {a.name}", 30, marks[1])
    connected = time.monotonic() - t0
    time.sleep(seconds)
    (a if a_hangs_up else b).ask("/api/hangup", {})
    for unit, mark in zip((a, b), marks, strict=True):
        unit.wait_state("ready for calls", 30, mark)
    return connected


def slope(values: list[float]) -> float:
    """Least-squares change per call."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20, help="how many calls in a row")
    p.add_argument("--seconds", type=float, default=1.0, help="how long each call lasts")
    p.add_argument("--vision", action="store_true", help="run expression recognition too (more CPU)")
    args = p.parse_args()
    host = host_address()
    with tempfile.TemporaryDirectory(prefix="emocall-stress-") as tmp:
        a = RunningUnit("Asha", Path(tmp) / "asha", free_port(), host)
        b = RunningUnit("Bela", Path(tmp) / "bela", free_port(), host)
        a.pair_with(b)
        b.pair_with(a)
        config = {"VISION__ENABLED": "true"} if args.vision else {}
        try:
            for unit in (a, b):
                unit.start(**config)
            time.sleep(3)  # the start-up sentence
            run(a, b, args)
        finally:
            for unit in (a, b):
                unit.stop()
    return 0


def run(a: RunningUnit, b: RunningUnit, args: argparse.Namespace) -> None:
    rss: dict[str, list[float]] = {a.name: [], b.name: []}
    first: dict[str, tuple[int, int]] = {}
    print(f"idle before the first call: {report(a, b)}")
    print("call  connect_s  " + "  ".join(f"{u.name}: rss_MB threads fds" for u in (a, b)))
    for n in range(1, args.calls + 1):
        connected = one_call(a, b, args.seconds, a_hangs_up=n % 2 == 1)
        time.sleep(0.5)  # let the threads of the call end
        for unit in (a, b):
            rss[unit.name].append(unit.rss_mb())
            first.setdefault(unit.name, unit.counts())
        print(f"{n:4d}  {connected:9.2f}  {report(a, b)}", flush=True)
    for unit in (a, b):
        values = rss[unit.name]
        half = values[len(values) // 2 :]
        threads, fds = unit.counts()
        print(
            f"{unit.name}: RSS {values[0]:.1f} -> {values[-1]:.1f} MB, slope {slope(values):+.3f} MB/call "
            f"(second half {slope(half):+.3f}); threads {first[unit.name][0]} -> {threads}, "
            f"fds {first[unit.name][1]} -> {fds}"
        )


def report(a: RunningUnit, b: RunningUnit) -> str:
    parts = []
    for unit in (a, b):
        threads, fds = unit.counts()
        parts.append(f"{unit.name}: {unit.rss_mb():6.1f} {threads:3d} {fds:3d}")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
