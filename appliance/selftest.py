"""`emocall selftest`: each part, which backend is active, whether it works and why not."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import Any

from appliance import platform
from appliance.call.local import LocalUnitError, ask, unit_host
from appliance.camera import CameraError, select
from appliance.config import Config
from appliance.words.phrases import RELAY_FAULTS, TEMPLATES, Phrases

# The running unit's status, or why it could not be asked. The self-test asks once and hands the
# answer to each part: a unit that takes the connection and never answers cost the 10 s timeout
# for every part that asked.
Status = dict[str, object] | LocalUnitError


@dataclass(frozen=True)
class PartReport:
    part: str
    backend: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def running_unit(cfg: Config) -> Status:
    """The running unit's status, or why no unit on this machine answers."""
    try:
        return ask(cfg.web.port, "/api/status", host=unit_host(cfg.web.host))
    except LocalUnitError as e:
        return e


def check_camera(cfg: Config, unit: dict[str, object] | None = None) -> PartReport:
    """The camera opened here; or, while a call holds it (``unit``: the running unit's status then),
    as the unit gets it: a second opener reads "in use" for a camera that works."""
    if unit is not None:
        active = str(unit.get("camera", "none"))
        if active in ("pattern", "none") and cfg.camera.source != "pattern":
            return PartReport(
                "camera", active, False, "the running unit gets no frame: it shows the test pattern"
            )
        return PartReport("camera", active, True, f"the running unit's camera ({active}) delivers frames")
    try:
        source = select.open_source(cfg.camera, realtime=False)
    except CameraError as e:
        return PartReport("camera", "pattern", False, str(e))
    try:
        frame = source.read()
        h, w = frame.image.shape[:2]
        report = PartReport("camera", source.name, True, f"delivered a {w}x{h} frame")
    except CameraError as e:
        report = PartReport("camera", source.name, False, f"opened but no frame: {e}")
    try:
        source.close()
    except CameraError as e:  # libcamera's stop can fail after a frame timeout: still a report
        return PartReport("camera", source.name, False, f"{report.detail}; then it would not close: {e}")
    return report


def check_edgetpu() -> PartReport:
    from appliance.vision import coral

    devices = platform.edgetpu_devices()
    runtime = platform.edgetpu_runtime()
    api = "pycoral" if platform.pycoral_available() else "LiteRT delegate"
    if devices and runtime:
        found = f"{', '.join(devices)} with {runtime}"
        # Not a fault: the service runs on it, and this check must not open it beside the service.
        busy = coral.in_use_elsewhere()
        return PartReport("edgetpu", api, True, f"{found}; {busy}" if busy else found)
    missing = [
        m
        for m, have in (("no Coral device found", devices), ("libedgetpu not installed", runtime))
        if not have
    ]
    return PartReport("edgetpu", "none", False, "; ".join(missing) + ": expressions run on the processor")


def check_vision(cfg: Config, camera: bool = True) -> PartReport:
    """The model loaded and run on a frame: the camera's, or the test pattern's (``camera`` False:
    the running unit's call holds the camera)."""
    from appliance.vision import VisionError, selfcheck

    try:
        backend, detail = selfcheck.check(cfg, camera)
    except VisionError as e:
        return PartReport("vision", "none", False, f"emotions unavailable: {e}")
    return PartReport("vision", backend, True, detail)


def check_speech(cfg: Config) -> PartReport:
    from appliance.speech import SpeechError
    from appliance.speech.service import voice_check

    try:
        seconds = voice_check(cfg.speech.rate_wpm)
    except SpeechError as e:
        return PartReport("speech", "espeak-ng" if platform.espeak_path() else "none", False, str(e))
    detail = ", ".join(f"{language} {s:.1f} s" for language, s in seconds.items())
    silent = [language for language, s in seconds.items() if s < 0.3]
    if silent:
        return PartReport("speech", "espeak-ng", False, f"no speech in {', '.join(silent)}: {detail}")
    return PartReport("speech", "espeak-ng", True, f"{platform.espeak_path()} speaks {detail}")


def check_audio(cfg: Config) -> PartReport:
    from appliance.audio.select import backend_name, wav_path

    cards = platform.sound_cards()
    if backend_name(cfg.speech) == "alsa":
        if shutil.which("aplay") is None:  # the unit plays through it (appliance/audio/alsa.py)
            return PartReport("audio", "alsa", False, "no aplay (alsa-utils): the unit stays silent")
        return PartReport(
            "audio", "alsa", bool(cards), ", ".join(cards) or "no sound card: check the speaker"
        )
    if backend_name(cfg.speech) == "none":
        return PartReport("audio", "none", False, "[speech] output is none: the unit stays silent")
    where = wav_path(cfg.speech, cfg.unit.data_dir)
    return PartReport("audio", "wav-file", True, f"configured: the speaker writes {where}")


def check_display(cfg: Config) -> PartReport:
    """A test picture drawn in each language the unit speaks, each in a font that has its letters."""
    from appliance.display.fonts import for_language
    from appliance.display.layout import Scene, draw
    from appliance.display.select import connected_screens, has_drm

    if cfg.display.backend == "off":
        return PartReport("display", "off", True, "switched off in the configuration")
    size, fonts, english = (cfg.display.width, cfg.display.height), [], []
    try:
        for language in TEMPLATES:
            font, phrases = for_language(Phrases(language), cfg.display.font)
            draw(Scene(state=phrases.say("idle"), big=phrases.word("happiness")), size, font)
            if phrases.language != language:
                english.append(language)
            elif font.path is not None:
                fonts.append(f"{language} {font.path.name}")
    except (OSError, RuntimeError) as e:  # pygame's errors for a bad font file or a broken SDL
        return PartReport("display", "none", False, f"cannot draw: {e}")
    drew = f"drew a test picture in {', '.join(TEMPLATES)} ({', '.join(fonts) or 'built-in font'})"
    if english:
        drew += f"; no font has the letters of {', '.join(english)}: shown in English"
    if cfg.display.backend == "offscreen":
        return PartReport("display", "offscreen", not english, f"{drew}; PNG snapshots in the data dir")
    # The screen itself is not opened: the running service owns it.
    if not has_drm():
        return PartReport("display", "kmsdrm", False, f"{drew}; no /dev/dri/card*: check the cable")
    screens = connected_screens()
    if not screens:
        return PartReport("display", "kmsdrm", False, f"{drew}; no screen connected: check the cable")
    return PartReport("display", "kmsdrm", not english, f"{drew}; screen on {', '.join(screens)}")


def check_button(cfg: Config, unit: Status | None = None) -> PartReport:
    """The call button: as the running unit found it (it holds the pin, which cannot be opened twice),
    else opened here. ``unit``: the running unit's status (asked here when None)."""
    from appliance.controls import ControlError
    from appliance.controls.button import open_button

    if not cfg.button.enabled:
        return PartReport("button", "off", True, "switched off in the configuration")
    pin = f"pin {cfg.button.pin}"
    unit = running_unit(cfg) if unit is None else unit
    if isinstance(unit, LocalUnitError):
        try:
            open_button(cfg.button.pin, cfg.button.hold_seconds).close()
        except ControlError as e:
            return PartReport("button", "gpiozero", False, str(e))
        return PartReport("button", "gpiozero", True, f"{pin} opened")
    works = bool(unit.get("button"))
    detail = f"uses {pin}" if works else f"could not open {pin}: see its log"
    return PartReport("button", "gpiozero", works, f"the running unit {detail}")


def check_pairing(cfg: Config) -> PartReport:
    from appliance.card import check_mounted, read_only
    from appliance.state import STATE_FILE, StateError, StateStore

    path = cfg.unit.data_dir / STATE_FILE
    try:
        check_mounted(cfg.unit.data_dir)  # else "no state yet" for the folder under the mount point
    except StateError as e:
        return PartReport("pairing", "sqlite", False, str(e))
    if read_only(cfg.unit.data_dir):
        why = "the unit runs on a copy in memory and keeps no change: replace the card"
        return PartReport("pairing", "sqlite", False, f"{cfg.unit.data_dir} is read-only: {why}")
    if not path.exists():
        return PartReport("pairing", "sqlite", True, f"no state yet: {path} is created at the first run")
    try:
        store = StateStore(path)
        try:
            store.check()
            paired = [p.name for p in store.peers()]
        finally:
            store.close()
    except StateError as e:
        return PartReport("pairing", "sqlite", False, str(e))
    return PartReport(
        "pairing", "sqlite", True, f"state intact; paired with {', '.join(paired) or 'no unit yet'}"
    )


def check_call(cfg: Config) -> PartReport:
    from appliance.call import CallError, selfcheck
    from appliance.call.lan import LanError

    try:
        return PartReport("call", "aiortc", True, selfcheck.check(cfg.call))
    except (CallError, LanError) as e:
        return PartReport("call", "aiortc", False, str(e))


def check_web(cfg: Config, unit: Status | None = None) -> PartReport:
    """Whether the running unit's page answers (the service serves it; selftest only asks)."""
    unit = running_unit(cfg) if unit is None else unit
    if isinstance(unit, LocalUnitError):
        return PartReport("web", "flask", False, str(unit))
    return PartReport("web", "flask", True, f"{unit.get('name', '?')} answers on port {cfg.web.port}")


def check_relay(cfg: Config, unit: Status | None = None) -> PartReport:
    """Calls between homes: the relay settings, and whether the running unit is connected to it."""
    if not cfg.relay.jid:
        return PartReport("relay", "none", True, "no relay ([relay] jid): calls stay in the home")
    from appliance.relay import RelayError, account

    try:
        account(cfg.relay)
    except RelayError as e:
        return PartReport("relay", "xmpp", False, str(e))
    unit = running_unit(cfg) if unit is None else unit
    if isinstance(unit, LocalUnitError):
        return PartReport("relay", "xmpp", False, f"settings readable; {unit}")
    relay: Any = unit.get("relay") or {}
    state = relay.get("state", "unknown")
    online = ", ".join(relay.get("online", [])) or "no paired unit"
    detail = f"{cfg.relay.jid}: {state}; online: {online}"
    if state in RELAY_FAULTS:  # not mended by waiting: what the owner was told, for whoever helps
        detail += f" ({Phrases('en').say(RELAY_FAULTS[state])})"
    return PartReport("relay", "xmpp", state == "connected", detail)


def run(cfg: Config, ask_unit: bool = True) -> list[PartReport]:
    """Every part; ``ask_unit`` False (a camera named on the command line) opens the camera here
    even while the running unit's call holds it."""
    from appliance.call import IN_PROGRESS

    unit = running_unit(cfg)
    # The unit runs its camera only while a call is in progress: else it is free to open here.
    holding = unit if ask_unit and isinstance(unit, dict) and unit.get("call") in IN_PROGRESS else None
    return [
        check_camera(cfg, holding),
        check_edgetpu(),
        check_vision(cfg, camera=holding is None),
        check_speech(cfg),
        check_audio(cfg),
        check_display(cfg),
        check_button(cfg, unit),
        check_pairing(cfg),
        check_call(cfg),
        check_web(cfg, unit),
        check_relay(cfg, unit),
    ]
