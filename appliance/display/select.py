"""Picks the screen from config: the Pi's screen when there is a DRM device, none otherwise.

A screen that is missing or fails leaves the unit without a picture (said once, as
``display.unavailable``), never drawing to files: the snapshots would keep the other person's face,
name and expression. The off-screen PNGs are for this machine, the tests and the demo, and only
when chosen (``[display] backend = "offscreen"``).
"""

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


DRM_CLASS = Path("/sys/class/drm")


def has_drm(dri: Path = DRI) -> bool:
    return any(dri.glob("card*")) if dri.is_dir() else False


def connected_screens(drm: Path = DRM_CLASS) -> list[str]:
    """The connectors with a screen plugged in (``HDMI-A-1``), as the kernel tells without opening
    the device (the running service holds it): a Pi has its DRM device with no screen too."""
    found = []
    for status in sorted(drm.glob("card*-*/status")):
        try:
            if status.read_text().strip() == "connected":
                found.append(status.parent.name.split("-", 1)[1])
        except OSError:  # a connector going away as it is read
            continue
    return found


def open_screen(cfg: DisplayConfig, data_dir: Path) -> Screen:
    """``offscreen`` when chosen, else ``kmsdrm``; DisplayError when there is no screen to draw on."""
    if cfg.backend == "offscreen":
        return OffscreenScreen(
            (cfg.width, cfg.height), cfg.snapshot_file or data_dir / "display.png", cfg.snapshot_seconds
        )
    if cfg.backend == "auto" and not has_drm():
        raise DisplayError(
            'no screen (no /dev/dri/card*; set [display] backend = "offscreen" to draw PNG files instead)'
        )
    from appliance.display.kmsdrm import KmsdrmScreen

    return KmsdrmScreen()


def open_display(
    cfg: DisplayConfig,
    events: EventBus,
    data_dir: Path,
    settings: Mapping[str, Any],
    model_card: Path | None = None,
) -> Display | None:
    """The running display in the owner's language; None when ``backend = "off"`` or there is no screen."""
    if cfg.backend == "off":
        return None
    try:
        screen = open_screen(cfg, data_dir)
    except DisplayError as e:
        log.error("%s: no picture; nothing is drawn to files", e)
        events.publish("display.unavailable", f"no screen: {e}", reason=str(e))
        return None
    phrases = for_settings(settings, load_labels(model_card))
    return Display(
        screen,
        events,
        phrases,
        unit_name=str(settings.get("display_name", "emocall")),
        fps=cfg.fps,
        font=cfg.font,
    )
