"""Speech benchmark: event -> first audio sample, and a scripted conversation's announcement rate.

    .venv/bin/python benchmarks/speech_latency.py                 # latency, then a 5-minute conversation
    .venv/bin/python benchmarks/speech_latency.py --minutes 0     # latency only

Everything runs as the appliance runs it: events on the bus, the narrator, the announcer, real
espeak-ng, and the mixing speaker writing a WAV file in real time (the conversation takes as long as
it says: the speaker's clock is the wall clock, so there is no faster honest simulation). Latency is
from the event's publication to the moment the speaker output the announcement's first sample.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from appliance.audio.wav import WavSpeaker
from appliance.events import EventBus
from appliance.speech.announcer import Announcer, Mode
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator
from appliance.words.phrases import DEFAULT_LABELS, Phrases


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"n={len(ms)} median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms"


class Bench:
    def __init__(self, wav: Path, mode: Mode, interval: float, stale: float) -> None:
        self.events = EventBus()
        self.speaker = WavSpeaker(wav)
        self.announcer = Announcer(
            self.speaker, Espeak(), Phrases("en"), mode=mode, min_interval_s=interval, stale_s=stale
        )
        self.narrator = Narrator(self.events, self.announcer, settle_s=0.0)

    def latencies(self) -> list[float]:
        """Event to first sample for each emotion said (one clip each: mode speech or tones)."""
        played = self.speaker.played
        return [p.started_at - s.item.t for s, p in zip(self.announcer.spoken, played, strict=True)]

    def close(self) -> None:
        self.narrator.close()
        self.announcer.close()
        self.speaker.close()


def latency(tmp: Path, mode: Mode, peers: list[str]) -> list[float]:
    """Each emotion of each peer once: the first time a phrase is synthesised (cold) and again (warm)."""
    bench = Bench(tmp / f"latency-{mode}.wav", mode, interval=0.0, stale=5.0)
    try:
        for peer in peers:
            for label in DEFAULT_LABELS:
                bench.events.publish("remote.emotion", label, peer=peer, emotion=label, confidence=0.9)
                assert bench.announcer.wait_idle(30)
                time.sleep(0.05)
        return bench.latencies()
    finally:
        bench.close()


def conversation(tmp: Path, minutes: float, interval: float, seed: int) -> int:
    """A scripted call of changing expressions, with call audio playing; checks rate and overlap."""
    rng = random.Random(seed)  # noqa: S311 (a repeatable script, not a secret)
    bench = Bench(tmp / "conversation.wav", "speech", interval=interval, stale=2.0)
    stop = threading.Event()

    def call_audio() -> None:  # the other person talking: 20 ms chunks, in real time
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            t = (np.arange(960) + n * 960) / 48000
            bench.speaker.write_call((3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16))
            n += 1
            stop.wait(max(0.0, t0 + n * 0.02 - time.monotonic()))

    feeder = threading.Thread(target=call_audio, daemon=True)
    feeder.start()
    sent = 0
    end = time.monotonic() + minutes * 60
    bench.events.publish("call.state", "connected", state="connected", peer="Asha", reason="")
    try:
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.3, 3.0))
            if rng.random() < 0.03:  # now and then the network hiccups: states come first
                for state in ("reconnecting", "connected"):
                    bench.events.publish("call.state", state, state=state, peer="Asha", reason="")
            label = rng.choice(DEFAULT_LABELS)
            confidence = rng.uniform(0.4, 0.95)
            bench.events.publish("remote.emotion", label, peer="Asha", emotion=label, confidence=confidence)
            sent += 1
        assert bench.announcer.wait_idle(30)
    finally:
        stop.set()
        feeder.join()
        bench.close()
    return report(bench, sent, minutes, interval)


def report(bench: Bench, sent: int, minutes: float, interval: float) -> int:
    """Rate and overlap measured on the output stream itself (sample positions of each announcement)."""
    played = bench.speaker.played  # one clip per announcement in speech mode
    spoken = bench.announcer.spoken
    emotions = [p for s, p in zip(spoken, played, strict=True) if s.item.kind == "emotion"]
    stream_gaps = np.diff([p.start_s for p in emotions]) if len(emotions) > 1 else np.array([interval])
    wall_gaps = np.diff([p.started_at for p in emotions]) if len(emotions) > 1 else np.array([interval])
    overlaps = sum(b.start_s < a.start_s + a.duration_s - 1e-9 for a, b in itertools.pairwise(played))
    said = len(emotions)
    print(
        f"conversation: {minutes:g} min, {sent} expression events, {said} said, "
        f"{len(bench.announcer.dropped)} dropped as stale, {len(played)} announcements in all"
    )
    print(f"  rate: {said / minutes:.1f} expressions a minute (limit {60 / interval:.1f})")
    print(
        f"  shortest gap between expressions' first samples: {stream_gaps.min():.3f} s in the output "
        f"stream, {wall_gaps.min():.3f} s by the clock (limit {interval:g} s)"
    )
    print(f"  overlapping announcements: {overlaps}")
    ok = overlaps == 0 and stream_gaps.min() >= interval - 1e-6
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="length of the conversation (0: skip it)")
    p.add_argument("--interval", type=float, default=5.0, help="min_interval_seconds for expressions")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        status = 0
        for mode in ("speech", "tones"):
            values = latency(tmp, mode, ["Asha", "Asha"] if mode == "speech" else ["Asha"])
            half = len(values) // 2
            if mode == "speech":
                print(f"latency, words, first time each phrase is said: {percentiles(values[:half])}")
                print(f"latency, words, phrase said before (cached):    {percentiles(values[half:])}")
            else:
                print(f"latency, tones:                                 {percentiles(values)}")
            status |= int(max(values) > 0.3)
        print("latency target <= 300 ms:", "PASS" if status == 0 else "FAIL")
        if args.minutes > 0:
            status |= conversation(tmp, args.minutes, args.interval, args.seed)
    return status


if __name__ == "__main__":
    sys.exit(main())
