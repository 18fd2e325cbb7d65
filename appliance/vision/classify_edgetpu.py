"""Expression classifier on the Coral Edge TPU (Pi-only: needs the device and libedgetpu).

Uses the card's ``file_edgetpu`` (compiled by edgetpu_compiler); pycoral's ``make_interpreter``
when pycoral is installed, else LiteRT with the ``libedgetpu.so.1`` delegate.
"""

from __future__ import annotations

from appliance import platform
from appliance.vision.card import ModelCard
from appliance.vision.classify_cpu import LiteRtClassifier
from appliance.vision.litert import EdgeTpuAbsent, edgetpu_interpreter


def open_edgetpu(card: ModelCard) -> LiteRtClassifier:
    """Raises :class:`~appliance.vision.VisionError` saying why the Edge TPU cannot be used."""
    if not platform.edgetpu_devices():
        raise EdgeTpuAbsent("no Coral device found (USB or PCIe)")
    if platform.edgetpu_runtime() is None:
        raise EdgeTpuAbsent("libedgetpu is not installed (Coral's libedgetpu1-std package)")
    return LiteRtClassifier("edgetpu", edgetpu_interpreter(card.model_path(edgetpu=True)), card)
