"""Picks the speaker backend from config: the system's audio server where there is a sound card.

Where there is none, or aplay is missing, the unit stays silent (and says so in the log and as
``audio.unavailable``); a device that cannot play yet is an outage, retried (``MixingSpeaker``). It
never falls back to a file, which would record the other person's voice. The WAV file is for this
machine, the tests and the demo, and only when chosen
(``[speech] output = "wav"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance import platform
from appliance.audio import AudioError, Speaker
from appliance.audio.alsa import AplaySpeaker
from appliance.audio.silent import SilentSpeaker
from appliance.audio.wav import WavSpeaker
from appliance.config import SpeechConfig
from appliance.events import EventBus

log = logging.getLogger(__name__)


def backend_name(cfg: SpeechConfig) -> str:
    """``alsa``, ``wav`` or ``none``: what ``auto`` means on this machine (never ``wav``)."""
    if cfg.output != "auto":
        return cfg.output
    return "alsa" if platform.sound_cards() else "none"


def wav_path(cfg: SpeechConfig, data_dir: Path) -> Path:
    return cfg.wav_file or data_dir / "speaker.wav"


def open_speaker(cfg: SpeechConfig, data_dir: Path, events: EventBus | None = None) -> Speaker:
    """The configured speaker; no sound card, or no aplay, leaves the unit silent."""
    backend = backend_name(cfg)
    if backend == "wav":
        return WavSpeaker(
            wav_path(cfg, data_dir),
            duck_gain=cfg.duck_gain,
            max_seconds=cfg.wav_max_minutes * 60,
            events=events,
        )
    reason = 'no sound card (set [speech] output = "wav" to write a file instead)'
    if backend == "alsa":
        try:
            return AplaySpeaker(cfg.device, duck_gain=cfg.duck_gain, events=events)
        except AudioError as e:
            reason = str(e)
    log.error("%s: the unit stays silent; nothing it would play is recorded", reason)
    if events is not None:
        events.publish("audio.unavailable", f"no speaker: {reason}", reason=reason)
    return SilentSpeaker(duck_gain=cfg.duck_gain)
