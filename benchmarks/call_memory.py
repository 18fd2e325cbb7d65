"""Where a call's memory goes: a leak, or memory the allocator keeps for reuse?

    .venv/bin/python benchmarks/call_memory.py --calls 60

Two call engines in this process (tests/test_call.py's Node: capture, speaker, engine, joined by
the in-memory signalling pair) make calls in a row. After each call: the garbage collector, RSS,
then RSS again after glibc's ``malloc_trim(0)`` (which hands back the free memory malloc keeps),
and the Python heap as tracemalloc counts it. At the end: the allocation sites whose memory grew
since the warm-up calls, the object types whose count grew, and the slopes per call. A Python
leak shows as a traced heap that keeps rising; a native leak as RSS that rises even after the trim.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_call import Node, connect  # noqa: E402

WARM_UP = 5


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def object_types() -> collections.Counter[str]:
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def one_call(a: Node, b: Node, seconds: float, a_hangs_up: bool) -> None:
    connect(a, b)
    time.sleep(seconds)
    (a if a_hangs_up else b).engine.hangup()
    a.wait(lambda: a.engine.state == "idle" and b.engine.state == "idle")
    time.sleep(0.3)
    gc.collect()


def slope(values: list[float]) -> float:
    return float(np.polyfit(np.arange(len(values)), values, 1)[0]) if len(values) > 1 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=60, help="calls after the warm-up calls")
    p.add_argument("--seconds", type=float, default=1.0, help="how long each call lasts")
    args = p.parse_args()
    trim = ctypes.CDLL(None).malloc_trim
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Node("Asha", Path(tmp)), Node("Bela", Path(tmp))
        a.link(b)
        try:
            for n in range(WARM_UP):
                one_call(a, b, args.seconds, n % 2 == 0)
            tracemalloc.start(12)
            first, types = tracemalloc.take_snapshot(), object_types()
            trimmed: list[float] = []
            traced: list[float] = []
            print("call  rss_MB  after_trim_MB  python_heap_MB")
            for n in range(args.calls):
                one_call(a, b, args.seconds, n % 2 == 0)
                before = rss_mb()
                trim(0)
                trimmed.append(rss_mb())
                traced.append(tracemalloc.get_traced_memory()[0] / 1e6)
                print(f"{n + 1:4d}  {before:6.1f}  {trimmed[-1]:13.1f}  {traced[-1]:14.2f}", flush=True)
            report(first, types, trimmed, traced)
        finally:
            a.close()
            b.close()
    return 0


def report(
    first: tracemalloc.Snapshot, types: collections.Counter[str], trimmed: list[float], traced: list[float]
) -> None:
    print("allocation sites that grew most since the warm-up:")
    for stat in tracemalloc.take_snapshot().compare_to(first, "lineno")[:8]:
        print(f"  {stat}")
    grew = (object_types() - types).most_common(8)
    print(f"object types whose count grew: {grew}")
    half = len(trimmed) // 2
    print(
        f"RSS after trim: slope {slope(trimmed):+.3f} MB/call ({slope(trimmed[half:]):+.3f} in the second "
        f"half); Python heap: slope {slope(traced):+.4f} MB/call, {min(traced):.1f}-{max(traced):.1f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
