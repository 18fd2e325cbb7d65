"""`emocall selftest`: each part, which backend is active, whether it works and why not."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from appliance import platform
from appliance.camera import CameraError, select
from appliance.config import Config


@dataclass(frozen=True)
class PartReport:
    part: str
    backend: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_camera(cfg: Config) -> PartReport:
    try:
        source = select.open_source(cfg.camera, realtime=False)
    except CameraError as e:
        return PartReport("camera", "pattern", False, str(e))
    try:
        frame = source.read()
        h, w = frame.image.shape[:2]
        return PartReport("camera", source.name, True, f"delivered a {w}x{h} frame")
    except CameraError as e:
        return PartReport("camera", source.name, False, f"opened but no frame: {e}")
    finally:
        source.close()


def check_edgetpu() -> PartReport:
    devices = platform.edgetpu_devices()
    runtime = platform.edgetpu_runtime()
    api = "pycoral" if platform.pycoral_available() else "LiteRT delegate"
    if devices and runtime:
        return PartReport("edgetpu", api, True, f"{', '.join(devices)} with {runtime}")
    missing = [
        m
        for m, have in (("no Coral device found", devices), ("libedgetpu not installed", runtime))
        if not have
    ]
    return PartReport("edgetpu", "none", False, "; ".join(missing) + ": expressions run on the processor")


def check_vision(cfg: Config) -> PartReport:
    from appliance.vision import VisionError, selfcheck

    try:
        backend, detail = selfcheck.check(cfg)
    except VisionError as e:
        return PartReport("vision", "none", False, f"emotions unavailable: {e}")
    return PartReport("vision", backend, True, detail)


def check_speech() -> PartReport:
    path = platform.espeak_path()
    if path is None:
        return PartReport("speech", "none", False, "espeak-ng not found: install the espeak-ng package")
    return PartReport("speech", "espeak-ng", True, path)


def check_audio() -> PartReport:
    cards = platform.sound_cards()
    if cards:
        return PartReport("audio", "alsa", True, ", ".join(cards))
    return PartReport("audio", "wav-file", False, "no sound card: audio goes to WAV files")


def run(cfg: Config) -> list[PartReport]:
    return [check_camera(cfg), check_edgetpu(), check_vision(cfg), check_speech(), check_audio()]
