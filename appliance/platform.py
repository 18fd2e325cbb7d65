"""What hardware this machine has: Pi camera, Edge TPU, sound cards, espeak-ng.

Probes only look (sysfs, procfs, PATH, the dynamic loader); they never open a device.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
from pathlib import Path

# Coral USB accelerator before and after its firmware loads; the PCIe/M.2 card shows as /dev/apex_*.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}
SYS_USB = Path("/sys/bus/usb/devices")
DEV = Path("/dev")
ASOUND_CARDS = Path("/proc/asound/cards")
# A libedgetpu other than the one the loader finds: a build that matches the TFLite runtime.
EDGETPU_LIBRARY_ENV = "EMOCALL_EDGETPU_LIBRARY"


def edgetpu_devices(sys_usb: Path | None = None, dev: Path | None = None) -> list[str]:
    """Coral devices present: ``usb:BUS-PORT`` or ``/dev/apex_N``."""
    sys_usb, dev = sys_usb or SYS_USB, dev or DEV
    found = [str(p) for p in sorted(dev.glob("apex_*"))]
    for device in sorted(sys_usb.glob("*")) if sys_usb.is_dir() else []:
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            found.append(f"usb:{device.name}")
    return found


def edgetpu_runtime() -> str | None:
    """The libedgetpu library to load (``EMOCALL_EDGETPU_LIBRARY`` names another), or None."""
    return os.environ.get(EDGETPU_LIBRARY_ENV) or ctypes.util.find_library("edgetpu")


def pycoral_available() -> bool:
    return importlib.util.find_spec("pycoral") is not None


def sound_cards() -> list[str]:
    """Names of the ALSA sound cards, empty without any."""
    try:
        text = ASOUND_CARDS.read_text()
    except OSError:
        return []
    return [line.split("]:", 1)[1].strip() for line in text.splitlines() if "]:" in line]


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")
