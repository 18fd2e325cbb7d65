"""Picks the screen from config: the Pi's screen when there is a DRM device, off-screen otherwise."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.config import DisplayConfig
from appliance.display import DisplayError, Screen
from appliance.display.offscreen import OffscreenScreen
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.words.phrases import for_settings, load_labels

log = logging.getLogger(__name__)

DRI = Path("/dev/dri")


def has_drm(dri: Path = DRI) -> bool:
    return any(dri.glob("card*")) if dri.is_dir() else False


def open_screen(cfg: DisplayConfig, data_dir: Path) -> Screen:
    """``kmsdrm`` (auto: when a DRM device exists) falls back, loudly, to off-screen PNGs."""
    if cfg.backend == "kmsdrm" or (cfg.backend == "auto" and has_drm()):
        from appliance.display.kmsdrm import KmsdrmScreen

        try:
            return KmsdrmScreen()
        except DisplayError as e:
            log.warning("%s: drawing off-screen instead", e)
    return OffscreenScreen(
        (cfg.width, cfg.height), cfg.snapshot_file or data_dir / "display.png", cfg.snapshot_seconds
    )


def open_display(
    cfg: DisplayConfig,
    events: EventBus,
    data_dir: Path,
    settings: Mapping[str, Any],
    model_card: Path | None = None,
) -> Display | None:
    """The running display in the owner's language, or None when ``backend = "off"``."""
    if cfg.backend == "off":
        return None
    phrases = for_settings(settings, load_labels(model_card))
    return Display(
        open_screen(cfg, data_dir),
        events,
        phrases,
        unit_name=str(settings.get("display_name", "emocall")),
        fps=cfg.fps,
        font=cfg.font,
    )
