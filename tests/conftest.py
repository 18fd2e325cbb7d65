"""Shared fixtures: paths to ../shared data, a config in a temporary data dir, a test video writer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

# aiortc's libsrtp crashes the process when it loads after TensorFlow's bundled libraries (the
# quantize tests load TensorFlow); loading it first keeps any test order safe.
import aiortc  # noqa: F401
import cv2
import numpy as np
import pytest

from appliance import config
from appliance.call.lan import free_port
from tests.pairing_units import Unit, make_unit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIPS = SHARED / "clips"
FER = SHARED / "fer"


def appliance_config(data_dir: Path, name: str, **sections: dict[str, Any]) -> config.Config:
    """A whole unit (``appliance.app.Appliance``) on this machine's backends: the test pattern for a
    camera, speech into a WAV (fast), no screen, no microphone, no button (this machine has no GPIO: a
    unit with one says so at every start), its web server on a free loopback port;
    ``sections`` add to or change those settings."""
    settings: dict[str, dict[str, Any]] = {
        "unit": {"name": name, "data_dir": str(data_dir)},
        "camera": {"source": "pattern"},
        "web": {"host": "127.0.0.1", "port": free_port(), "discovery": False},
        "speech": {"output": "wav", "rate_wpm": 320},  # what it says, sooner
        "display": {"backend": "off"},
        "call": {"audio_in": "none"},
        "button": {"enabled": False},
    }
    for section, values in sections.items():
        settings[section] = {**settings.get(section, {}), **values}
    return config.load(None, settings, environ={})


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    return config.load(None, {"unit": {"data_dir": str(tmp_path / "data")}, "web": {"port": 0}}, environ={})


@pytest.fixture
def units(tmp_path: Path) -> Iterator[tuple[Unit, Unit]]:
    """Two units' pairing services and web apps, in-process (tests/pairing_units.py)."""
    a, b = make_unit(tmp_path, "Asha"), make_unit(tmp_path, "Bela")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def paired(tmp_path: Path) -> Iterator[tuple[Unit, Unit]]:
    """Two units' pairing services and web apps, paired with each other (in-process)."""
    a, b = make_unit(tmp_path, "Asha"), make_unit(tmp_path, "Bela")
    a.store.add_peer(b.me.unit_id, "Bela", b.address, b.me.public_key)
    b.store.add_peer(a.me.unit_id, "Asha", a.address, a.me.public_key)
    yield a, b
    a.close()
    b.close()


def write_video(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """Writes BGR frames to an MJPG AVI (a codec every OpenCV build has)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (it comes with ../shared)")
    return path
