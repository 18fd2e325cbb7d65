"""Picks the speaker backend from config: the system's audio server where there is a sound card."""

from __future__ import annotations

from pathlib import Path

from appliance import platform
from appliance.audio import Speaker
from appliance.audio.alsa import AplaySpeaker
from appliance.audio.wav import WavSpeaker
from appliance.config import SpeechConfig


def backend_name(cfg: SpeechConfig) -> str:
    """``alsa`` or ``wav``: what ``auto`` means on this machine."""
    if cfg.output != "auto":
        return cfg.output
    return "alsa" if platform.sound_cards() else "wav"


def wav_path(cfg: SpeechConfig, data_dir: Path) -> Path:
    return cfg.wav_file or data_dir / "speaker.wav"


def open_speaker(cfg: SpeechConfig, data_dir: Path) -> Speaker:
    if backend_name(cfg) == "alsa":
        return AplaySpeaker(cfg.device, duck_gain=cfg.duck_gain)
    return WavSpeaker(wav_path(cfg, data_dir), duck_gain=cfg.duck_gain)
