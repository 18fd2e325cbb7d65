"""Picks the speaker backend from config: the system's audio server where there is a sound card."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance import platform
from appliance.audio import AudioError, Speaker
from appliance.audio.alsa import AplaySpeaker
from appliance.audio.wav import WavSpeaker
from appliance.config import SpeechConfig

log = logging.getLogger(__name__)


def backend_name(cfg: SpeechConfig) -> str:
    """``alsa`` or ``wav``: what ``auto`` means on this machine."""
    if cfg.output != "auto":
        return cfg.output
    return "alsa" if platform.sound_cards() else "wav"


def wav_path(cfg: SpeechConfig, data_dir: Path) -> Path:
    return cfg.wav_file or data_dir / "speaker.wav"


def open_speaker(cfg: SpeechConfig, data_dir: Path) -> Speaker:
    """The configured speaker; a sound device that cannot play falls back, loudly, to the WAV file."""
    if backend_name(cfg) == "alsa":
        try:
            return AplaySpeaker(cfg.device, duck_gain=cfg.duck_gain)
        except AudioError as e:
            log.error("%s: the speaker's output goes to %s instead", e, wav_path(cfg, data_dir))
    return WavSpeaker(wav_path(cfg, data_dir), duck_gain=cfg.duck_gain, max_seconds=cfg.wav_max_minutes * 60)
