"""A unit's memory in a call, now and at a baseline commit, in the same run; and where it goes.

    .venv/bin/python benchmarks/memory.py [--baseline 51c5e69] [--seconds 20] [--rounds 2]

1. By import: a fresh interpreter imports the unit's libraries one after another and prints the RSS
   each adds (what `emocall run` loads before it starts anything).
2. By allocation: in a fresh interpreter, the glibc malloc heap in use (``mallinfo2``) and RSS that
   each of a unit's big users adds: the file camera decoding the sample clip (OpenCV/FFmpeg), the
   call's VP8 encoder and decoder (aiortc/libvpx, 640x480, 30 frames), a Haar face search on a
   quarter-scale frame, the LiteRT expression model, pygame's display and font; then the Python
   heap as tracemalloc counts it after importing the unit (code objects and the like).
3. In a call: two units as `emocall demo` runs them (``appliance/call/demo_units.py``: paired through
   the owner API, A on ``WolfgangLanger_Pexels.mp4``, B on ``single_face.mp4``), RSS of each
   ``--seconds`` into the call; first from the baseline commit (``git archive`` into a temporary
   folder, run with this virtualenv), then from this checkout, ``--rounds`` times in turn (the
   machine is shared: rounds show the spread). Printed: each figure, the means and their ratio, and
   the same for CPU (% of one core over the second half of the ``--seconds``): what the memory
   costs in time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.call.demo import write_greeting  # noqa: E402
from appliance.call.demo_units import DemoUnit, pair, stop_all  # noqa: E402
from appliance.call.lan import free_port, host_address  # noqa: E402
from appliance.call.local import ask  # noqa: E402
from benchmarks.call_cpu import cpu_percent  # noqa: E402

CLIPS = ROOT.parent / "shared" / "data" / "clips"
LIBRARIES = ("numpy", "cv2", "av", "aiortc", "flask", "pydantic", "zeroconf", "pygame", "appliance.app")
LADDER = """
import importlib, sys
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
print(f"{'python':<16} {rss():6.1f} MB")
for name in sys.argv[1:]:
    before = rss()
    importlib.import_module(name)
    print(f"{name:<16} {rss():6.1f} MB (+{rss() - before:.1f})")
print("slixmpp loaded" if "slixmpp" in sys.modules else "slixmpp not loaded (no relay configured)")
"""


def by_import() -> None:
    print("RSS after each import (python -c, this checkout):")
    out = subprocess.run(
        [sys.executable, "-c", LADDER, *LIBRARIES], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    print("  " + "\n  ".join(line for line in out.stdout.splitlines() if "pygame-ce" not in line))


# glibc's malloc statistics, for the scripts here and tests/test_malloc.py: libc.mallinfo2().
MALLINFO = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
"""

ALLOCATIONS = (
    MALLINFO
    + """
import fractions, os, sys, tracemalloc
import numpy as np
def heap():
    i = libc.mallinfo2()
    return (i.uordblks + i.hblkhd) / 1e6
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
import av, cv2, aiortc
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
kept = []
def step(name, make):
    h, r = heap(), rss()
    kept.append(make())
    print(f"{name:<34} malloc +{heap() - h:5.1f} MB, RSS +{rss() - r:5.1f} MB")
def camera():
    capture = cv2.VideoCapture(sys.argv[1])
    for _ in range(50):
        capture.read()
    return capture
def encoder():
    e, frame = Vp8Encoder(), av.VideoFrame.from_ndarray(np.zeros((480, 640, 3), np.uint8), format="bgr24")
    packets = []
    for i in range(30):
        frame.pts, frame.time_base = i * 6000, fractions.Fraction(1, 90000)
        packets.append(e.encode(frame))
    return e, packets
def decoder():
    d, codec = Vp8Decoder(), aiortc.RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)
    for payloads, stamp in kept[-1][1]:
        d.decode(JitterFrame(data=b"".join(depayload(codec, p) for p in payloads), timestamp=stamp))
    return d
def haar():
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    cascade.detectMultiScale(np.zeros((120, 160), np.uint8), minSize=(24, 24))
    return cascade
def model():
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path="models/edgetpu/emotion_int8.tflite", num_threads=1)
    it.allocate_tensors()
    it.invoke()
    return it
def display():
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    import pygame
    pygame.display.init()
    pygame.font.init()
    screen = pygame.Surface((800, 480))
    screen.blit(pygame.font.Font(None, 160).render("happiness", True, (255, 255, 0)), (0, 0))
    return screen
step("file camera (OpenCV, 50 frames)", camera)
step("VP8 encoder (30 frames 640x480)", encoder)
step("VP8 decoder (the same 30 frames)", decoder)
step("Haar search (quarter-scale frame)", haar)
step("LiteRT expression model", model)
step("pygame display and font", display)
tracemalloc.start()
import appliance.app
traced = tracemalloc.get_traced_memory()[0] / 1e6
print(f"Python heap after importing the unit (tracemalloc): {traced:.1f} MB")
"""
)


def by_allocation() -> None:
    print("What each big user adds (python -c, this checkout):")
    clip = str(CLIPS / "WolfgangLanger_Pexels.mp4")
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATIONS, clip], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    lines = [line for line in out.stdout.splitlines() if "pygame-ce" not in line]
    print("  " + "\n  ".join(lines) if lines else out.stderr[-2000:])


def baseline_tree(rev: str, into: Path) -> Path:
    """The appliance package and models of commit ``rev``, unpacked into ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "appliance", "models"], capture_output=True, timeout=60, cwd=ROOT, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def in_call(tree: Path | None, seconds: float, base: Path) -> tuple[list[float], list[float]]:
    """RSS in MB of units A and B ``seconds`` into a call, and their CPU (% of one core) over its
    second half."""
    host = host_address()
    quiet = lambda name, text: None  # noqa: E731
    # The baseline's command line has no --debug; its events are logged at INFO anyway.
    flags = ("--debug", "appliance.events") if tree is None else ()
    units = [
        DemoUnit(name, str(CLIPS / clip), free_port(), base / name, flags, tree, quiet)
        for name, clip in (("Asha", "WolfgangLanger_Pexels.mp4"), ("Bela", "single_face.mp4"))
    ]
    try:
        for unit in units:
            unit.start(write_greeting(base / f"{unit.name}.wav", f"Hello, this is {unit.name}."))
        for unit in units:
            unit.wait_ready()
        pair(*units, host, say=lambda _: None)
        ask(units[0].port, "/api/call", {"to": "Bela"})
        time.sleep(seconds / 2)
        cpu = cpu_percent([unit.proc.pid for unit in units if unit.proc], seconds / 2)
        state = ask(units[0].port, "/api/call").get("state")
        if state != "connected":
            raise SystemExit(f"the call is {state}, not connected; see {base}/*/unit.log")
        return [_rss(unit) for unit in units], cpu
    finally:
        stop_all(units)


def _rss(unit: DemoUnit) -> float:
    assert unit.proc is not None
    status = Path(f"/proc/{unit.proc.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="51c5e69", help="commit to compare with (default: this morning's)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long into the call RSS is read")
    p.add_argument("--rounds", type=int, default=2, help="baseline and current, this many times each")
    args = p.parse_args()
    by_import()
    by_allocation()
    figures: dict[str, list[float]] = {"baseline": [], "now": []}
    cpus: dict[str, list[float]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="emocall-memory-") as tmp:
        old = baseline_tree(args.baseline, Path(tmp) / "baseline")
        for n in range(args.rounds):
            for label, tree in (("baseline", old), ("now", None)):
                rss, cpu = in_call(tree, args.seconds, Path(tmp) / f"{label}{n}")
                figures[label] += rss
                cpus[label] += cpu
                print(
                    f"round {n + 1} {label:<8}: A {rss[0]:.1f} MB, B {rss[1]:.1f} MB "
                    f"{args.seconds:.0f} s into a call; CPU A {cpu[0]:.1f} %, B {cpu[1]:.1f} % of a core"
                )
    old_mean, new_mean = (statistics.mean(figures[k]) for k in ("baseline", "now"))
    old_cpu, new_cpu = (statistics.mean(cpus[k]) for k in ("baseline", "now"))
    print(
        f"RSS of a unit in a call: {args.baseline} {old_mean:.1f} MB (mean of {len(figures['baseline'])}), "
        f"now {new_mean:.1f} MB: ratio {new_mean / old_mean:.2f}"
    )
    print(
        f"CPU of a unit in a call: {args.baseline} {old_cpu:.1f} %, now {new_cpu:.1f} % of a core: "
        f"ratio {new_cpu / old_cpu:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
