"""The speech part as the appliance runs it: speaker, espeak-ng, announcer and narrator, built in order."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.audio import AudioError, Speaker
from appliance.audio.select import open_speaker
from appliance.audio.silent import SilentSpeaker
from appliance.config import SpeechConfig
from appliance.events import Event, EventBus
from appliance.speech.announcer import Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.narrator import Narrator, from_settings
from appliance.state import STATE_FILE, stored_setting
from appliance.words.phrases import TEMPLATES, Phrases, load_labels

log = logging.getLogger(__name__)


class Speech:
    """Owns the speaker (the call engine writes call audio to it) and everything that speaks."""

    def __init__(
        self,
        cfg: SpeechConfig,
        events: EventBus,
        data_dir: Path,
        settings: Mapping[str, Any],
        model_card: Path | None = None,
    ) -> None:
        mode, phrases = from_settings(settings, load_labels(model_card))
        self.speaker: Speaker = open_speaker(cfg, data_dir, events)
        try:
            self.announcer = Announcer(
                self.speaker,
                Espeak(cfg.rate_wpm),
                phrases,
                mode=mode,
                min_confidence=cfg.min_confidence,
                min_interval_s=cfg.min_interval_seconds,
                stale_s=cfg.stale_seconds,
            )
        except Exception:
            self.speaker.close()
            raise
        sharing = bool(settings.get("share_expressions", False))
        self.narrator = Narrator(events, self.announcer, cfg.events, sharing=sharing)
        self.speaker.set_volume(int(settings.get("volume", 100)))
        self._unsubscribe = events.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        settings = event.data.get("settings")
        if event.topic == "settings.changed" and isinstance(settings, Mapping):
            self.speaker.set_volume(int(settings.get("volume", 100)))

    def close(self) -> None:
        self._unsubscribe()
        self.narrator.close()
        self.announcer.close()
        self.speaker.close()


def say_once(text: str, voice: str, cfg: SpeechConfig, data_dir: Path) -> float:
    """Speak ``text`` once through the configured speaker (``emocall say``), at the owner's volume
    where the unit's settings can be read; the seconds played."""
    pcm, rate = Espeak(cfg.rate_wpm).synthesize(text, voice)
    speaker = open_speaker(cfg, data_dir)
    if isinstance(speaker, SilentSpeaker):
        speaker.close()
        raise AudioError("no speaker to play on (see the log): use --wav FILE to hear it from a file")
    speaker.set_volume(int(stored_setting(data_dir / STATE_FILE, "volume")))
    try:
        return speaker.play(pcm, rate)
    finally:
        speaker.close()


def voice_check(rate_wpm: int) -> dict[str, float]:
    """Seconds of speech each language's phrase gives (``emocall selftest``); SpeechError if none."""
    tts = Espeak(rate_wpm)
    out = {}
    for language in TEMPLATES:
        pcm, rate = tts.synthesize(Phrases(language).say("camera_ready"), language)
        out[language] = pcm.size / rate
    return out
