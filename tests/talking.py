"""A unit's speech without the unit: events in, the narrator's sentences out into a WAV file."""

from __future__ import annotations

import time
from pathlib import Path

from appliance.audio.wav import WavSpeaker
from appliance.events import EventBus
from appliance.speech.announcer import Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator
from appliance.words.phrases import Phrases


def wait_spoken(announcer: Announcer, count: int = 1, timeout: float = 10) -> None:
    """Until ``count`` sentences have begun (the start-up sentence waits for devices to settle)."""
    deadline = time.monotonic() + timeout
    while len(announcer.spoken) < count and time.monotonic() < deadline:
        time.sleep(0.02)


class Talking:
    def __init__(self, path: Path, spoken_events: str = "normal", *, sharing: bool = False) -> None:
        self.events = EventBus()
        self.speaker = WavSpeaker(path)
        self.announcer = Announcer(self.speaker, Espeak(rate_wpm=320), Phrases("en"), min_interval_s=0)
        self.narrator = Narrator(self.events, self.announcer, spoken_events, settle_s=0.05, sharing=sharing)
        self.path = path

    def wait_spoken(self, count: int, timeout: float = 10) -> None:
        wait_spoken(self.announcer, count, timeout)

    def said(self) -> list[str]:
        assert self.announcer.wait_idle(20)
        return [
            s.item.text or self.announcer.phrases.emotion(s.item.peer, s.item.label)
            for s in self.announcer.spoken
        ]

    def close(self) -> None:
        self.narrator.close()
        self.announcer.close()
        self.speaker.close()
