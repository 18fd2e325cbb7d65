"""Picks the speaker backend from config: the system's audio server, through aplay.

``auto`` (the default) waits for a sound card: while the kernel lists none, the speaker is down and
says so (``audio.unavailable``), and it plays once one appears (a USB speaker plugged in after the
unit started, or late at boot: ``audio.recovered``); it never takes a restart. Without aplay the unit
stays silent and says so. It never falls back to a file, which would record the other person's
voice. The WAV file is for this machine, the tests and the demo, and only when chosen (``[speech]
output = "wav"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.audio import AudioError, Speaker
from appliance.audio.alsa import AplaySpeaker
from appliance.audio.silent import SilentSpeaker
from appliance.audio.wav import WavSpeaker
from appliance.config import SpeechConfig
from appliance.events import EventBus

log = logging.getLogger(__name__)


def backend_name(cfg: SpeechConfig) -> str:
    """``alsa``, ``wav`` or ``none``: ``auto`` is ``alsa``, waiting for a card (never ``wav``)."""
    return "alsa" if cfg.output == "auto" else cfg.output


def wav_path(cfg: SpeechConfig, data_dir: Path) -> Path:
    return cfg.wav_file or data_dir / "speaker.wav"


def open_speaker(cfg: SpeechConfig, data_dir: Path, events: EventBus | None = None) -> Speaker:
    """The configured speaker; without aplay, or with output ``none``, the unit is silent."""
    backend = backend_name(cfg)
    if backend == "wav":
        return WavSpeaker(
            wav_path(cfg, data_dir),
            duck_gain=cfg.duck_gain,
            max_seconds=cfg.wav_max_minutes * 60,
            events=events,
        )
    reason = "[speech] output is none"
    if backend == "alsa":
        try:
            return AplaySpeaker(
                cfg.device, duck_gain=cfg.duck_gain, events=events, wait_for_card=cfg.output == "auto"
            )
        except AudioError as e:
            reason = str(e)
    log.error("%s: the unit stays silent; nothing it would play is recorded", reason)
    if events is not None:
        events.publish("audio.unavailable", f"no speaker: {reason}", reason=reason)
    return SilentSpeaker(duck_gain=cfg.duck_gain)
