"""The ten fixed corruptions of a 48x48 face that the evaluator reports (issue 14's conditions).

Each takes uint8 faces [N,48,48] and returns uint8 faces of the same shape; parameters and the noise
seed are fixed, so every run scores the same images. ``quantize.train`` selects epochs on them
(PublicTest), ``quantize.evaluate`` reports them (PrivateTest), the CI test holds a floor on them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SEED = 2026
SIZE = 48


def _lut(images: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.clip(np.round(table), 0, 255).astype(np.uint8)[images]


def gaussian_noise(images: np.ndarray, sigma: float = 12.0) -> np.ndarray:
    noise = np.random.default_rng(SEED).normal(0.0, sigma, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def jpeg(images: np.ndarray, quality: int = 15) -> np.ndarray:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, params)[1], cv2.IMREAD_GRAYSCALE) for f in images])


def down_up(images: np.ndarray, size: int = 24) -> np.ndarray:
    """Down to ``size`` pixels (area average, as a camera scaler does) and back up (bilinear)."""
    return np.stack(
        [cv2.resize(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), (SIZE, SIZE)) for f in images]
    )


def blur(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in images])


def contrast(images: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """Contrast scaled about each face's own mean grey."""
    mean = images.reshape(len(images), -1).mean(axis=1)[:, None, None]
    return np.clip(np.round(mean + factor * (images - mean)), 0, 255).astype(np.uint8)


def gamma(images: np.ndarray, g: float) -> np.ndarray:
    """out = 255 (in/255)^g: g < 1 lifts the shadows (brightened dim image), g > 1 darkens (low light)."""
    return _lut(images, 255.0 * (np.arange(256) / 255.0) ** g)


def equalise(images: np.ndarray) -> np.ndarray:
    return np.stack([cv2.equalizeHist(f) for f in images])


def _affine(images: np.ndarray, angle: float, scale: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D(((SIZE - 1) / 2, (SIZE - 1) / 2), angle, scale)
    return np.stack(
        [
            cv2.warpAffine(f, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            for f in images
        ]
    )


CORRUPTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian noise sigma 12": gaussian_noise,
    "JPEG quality 15": jpeg,
    "down to 24x24 and back": down_up,
    "Gaussian blur sigma 1": blur,
    "contrast x0.5": contrast,
    "gamma 0.5": lambda x: gamma(x, 0.5),
    "gamma 2": lambda x: gamma(x, 2.0),
    "histogram equalisation": equalise,
    "rotation 15 deg": lambda x: _affine(x, 15.0, 1.0),
    "zoom 1.15": lambda x: _affine(x, 0.0, 1.15),
}


def corrupted(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every corruption of ``images`` (uint8 [N,48,48]), by name, in the table's order."""
    return {name: fn(images) for name, fn in CORRUPTIONS.items()}
