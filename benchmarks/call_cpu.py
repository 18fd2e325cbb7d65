"""The call's cost and timings, ours against bare aiortc, measured in the same run.

    sudo .venv/bin/python benchmarks/call_cpu.py [--seconds 15]

Two units in two network namespaces joined by a veth pair (root needed), each its own process,
send each other 640x480 VP8 video at 15 fps (a moving pattern with its capture time stamped in it)
and a 440 Hz / 880 Hz tone as audio. First bare aiortc (a peer connection, a video track of the
same frames, aiortc's MediaPlayer for the same WAV, received into a MediaBlackhole), then our units
(``tests/call_unit.py``: capture thread, call engine, data channel with heartbeat, speaker, web API).
Printed: CPU of each process in % of one core (utime + stime from /proc over the same window) and
the ratio; frame latency (capture to decoded frame on the other unit) p50 and p90; the time to
notice a kill -9 of the other unit; the time to notice a 10 s partition and to be back after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.call_unit import Link, StampSource, Unit, write_tone  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_percent(pids: list[int], seconds: float) -> list[float]:
    before = [cpu_seconds(p) for p in pids]
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    return [round(100 * (cpu_seconds(p) - b) / wall, 1) for p, b in zip(pids, before, strict=True)]


# -- bare aiortc: one process per side, SDP passed through the benchmark's pipes -------------------


async def bare_peer(role: str, audio: str) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
    from aiortc.contrib.media import MediaBlackhole, MediaPlayer
    from av import VideoFrame

    class StampTrack(VideoStreamTrack):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.source = StampSource(640, 480, 15)

        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = await asyncio.to_thread(self.source.read)
            out = VideoFrame.from_ndarray(frame.image, format="bgr24")
            out.pts, out.time_base = pts, time_base
            return out

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sink = MediaBlackhole()
    pc.on("track", sink.addTrack)
    player = MediaPlayer(audio, loop=True)
    lines = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)

    def add_tracks() -> None:
        pc.addTrack(StampTrack())
        pc.addTrack(player.audio)

    if role == "offer":
        add_tracks()
        await pc.setLocalDescription(await pc.createOffer())
        print(json.dumps({"sdp": pc.localDescription.sdp}), flush=True)
        answer = json.loads(await lines.readline())
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    else:
        offer = json.loads(await lines.readline())
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        add_tracks()
        await pc.setLocalDescription(await pc.createAnswer())
        print(json.dumps({"sdp": pc.localDescription.sdp}), flush=True)
    await sink.start()
    await lines.readline()  # runs until the benchmark says stop (or closes the pipe)
    await sink.stop()
    await pc.close()


def run_bare(link: Link, tones: list[Path], seconds: float) -> list[float]:
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--bare", role, "--audio", str(tone)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for ns, role, tone in zip(link.ns, ("offer", "answer"), tones, strict=True)
    ]
    offerer, answerer = procs
    try:
        assert offerer.stdout and offerer.stdin and answerer.stdout and answerer.stdin
        answerer.stdin.write(offerer.stdout.readline())
        answerer.stdin.flush()
        offerer.stdin.write(answerer.stdout.readline())
        offerer.stdin.flush()
        time.sleep(3)  # connect and settle
        return cpu_percent([p.pid for p in procs], seconds)
    finally:
        for p in procs:
            try:
                assert p.stdin is not None
                p.stdin.write("stop\n")
                p.stdin.flush()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()


# -- ours ----------------------------------------------------------------------------------------


def start_units(link: Link, tmp: Path, tones: list[Path]) -> tuple[Unit, Unit]:
    a = Unit("Asha", tmp / "a", 8080, link.ip[0], netns=link.ns[0])
    b = Unit("Bela", tmp / "b", 8080, link.ip[1], netns=link.ns[1])
    a.pair_with(b)
    b.pair_with(a)
    for unit, tone in zip((a, b), tones, strict=True):
        unit.start("--source", "stamp", "--audio-file", str(tone), "--call", "reconnect_seconds=30")
    a.send("call Bela")
    a.wait_for("call.state", 20, state="connected")
    b.wait_for("call.state", 20, state="connected")
    return a, b


def run_ours(a: Unit, b: Unit, seconds: float) -> tuple[list[float], list[dict[str, float]]]:
    time.sleep(3)
    assert a.proc is not None and b.proc is not None
    cpu = cpu_percent([a.proc.pid, b.proc.pid], seconds)
    return cpu, [a.status()["latency"], b.status()["latency"]]


def partition(link: Link, a: Unit, partition_s: float) -> tuple[float, float]:
    since = a.mark()
    link.drop(100)
    cut = time.monotonic()
    lost = a.wait_for("call.state", 15, since, state="reconnecting")["t"] - cut
    time.sleep(max(0.0, cut + partition_s - time.monotonic()))
    link.drop(0)
    back = time.monotonic()
    up = a.wait_for("call.state", 30, since, state="connected")["t"] - back
    return lost, up


def kill_9(a: Unit, b: Unit) -> float:
    since = a.mark()
    assert b.proc is not None
    b.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    return float(a.wait_for("call.state", 15, since, state="reconnecting")["t"] - killed)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="CPU measuring window for each side")
    p.add_argument("--partition", type=float, default=10.0, help="seconds the network is cut")
    p.add_argument("--bare", choices=["offer", "answer"], help=argparse.SUPPRESS)
    p.add_argument("--audio", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare:
        asyncio.run(bare_peer(args.bare, args.audio))
        return 0
    if os.geteuid() != 0:
        print("needs root: it builds two network namespaces (sudo .venv/bin/python benchmarks/call_cpu.py)")
        return 2
    with tempfile.TemporaryDirectory() as tmp_name, Link.create("ecb", "10.214.0") as link:
        tmp = Path(tmp_name)
        tones = [write_tone(tmp / "a.wav", 440), write_tone(tmp / "b.wav", 880)]
        results: dict[str, Any] = {"bare_cpu": run_bare(link, tones, args.seconds)}
        a, b = start_units(link, tmp, tones)
        try:
            results["ours_cpu"], results["latency"] = run_ours(a, b, args.seconds)
            results["lost_s"], results["back_s"] = partition(link, a, args.partition)
            results["kill_s"] = kill_9(a, b)
        finally:
            a.close()
            b.close()
    report(results, args.seconds, args.partition)
    return 0


def report(r: dict[str, Any], seconds: float, partition_s: float) -> None:
    bare, ours = r["bare_cpu"], r["ours_cpu"]
    mean_bare, mean_ours = sum(bare) / 2, sum(ours) / 2
    print(f"CPU, % of one core, over {seconds:.0f} s (caller, callee):")
    print(f"  bare aiortc   {bare[0]:5.1f}  {bare[1]:5.1f}   mean {mean_bare:5.1f}")
    print(f"  emocall       {ours[0]:5.1f}  {ours[1]:5.1f}   mean {mean_ours:5.1f}")
    print(f"  ratio         {mean_ours / mean_bare:.2f}x (target <= 1.5x)")
    for name, lat in zip(("Bela sees Asha", "Asha sees Bela"), r["latency"], strict=True):
        p50, p90 = lat["p50_ms"], lat["p90_ms"]
        print(f"frame latency, {name}: p50 {p50:.0f} ms, p90 {p90:.0f} ms (target p50 <= 100)")
    print(f"partition of {partition_s:.0f} s: noticed after {r['lost_s']:.1f} s (target <= 5)")
    print(f"  call back {r['back_s']:.1f} s after the network returned (target <= 5)")
    print(f"kill -9 of the callee: noticed by the caller after {r['kill_s']:.1f} s (target <= 5)")


if __name__ == "__main__":
    sys.exit(main())
