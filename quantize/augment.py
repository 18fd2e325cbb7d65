"""On-the-fly training augmentation: the geometry of a camera crop and the unit's image conditions.

Geometry (every image): mirror, rotation, zoom with independent height and width (crop scale and
aspect), shift, brightness and contrast. Conditions (a share of the images, growing with
``strength``): optical blur, low light and gamma, low contrast, sensor noise, histogram equalisation
(what auto-exposure pipelines do), down-scaling and up again (a small face, a low-resolution
stream), JPEG artefacts (the codec). Each condition is drawn per image with its own random
strength, in the order a camera applies them. Batched TensorFlow ops on float faces in 0-255.
"""

from __future__ import annotations

import keras
import tensorflow as tf

layers = keras.layers

# Per-image chance of each condition among the corrupted images, and the ranges drawn.
P_CORRUPTED = 0.7
P = {"blur": 0.25, "gamma": 0.35, "contrast": 0.3, "noise": 0.4, "equalise": 0.1, "scale": 0.3, "jpeg": 0.3}
BLUR_SIGMA = (0.4, 1.6)
LOG_GAMMA = 1.0  # gamma in [e^-1, e^1] = [0.37, 2.7]
CONTRAST = (0.3, 0.95)
NOISE_SIGMA = (2.0, 20.0)
SCALE_SIZE = (12, 36)
JPEG_QUALITY = (8, 60)
BLUR_RADIUS = 4


def geometry(seed: int) -> keras.Sequential:
    """Mirror, rotation up to ±18°, zoom ±20 % per axis, shift ±10 %, contrast ±40 %, brightness ±25 %."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom((-0.2, 0.2), (-0.2, 0.2), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.4, seed=seed + 4),
            layers.RandomBrightness(0.25, value_range=(0.0, 255.0), seed=seed + 5),
        ],
        name="augment",
    )


def _uniform(n: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    return tf.random.uniform([n, 1, 1, 1], lo, hi)


def _blur(x: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Gaussian blur with one sigma per image: images become channels of one depthwise convolution."""
    n = tf.shape(x)[0]
    t = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * (t[None, :] / tf.reshape(sigma, [-1, 1])) ** 2)
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # [n, taps]
    planes = tf.transpose(x, [3, 1, 2, 0])  # [1, H, W, n]
    r = BLUR_RADIUS
    planes = tf.pad(planes, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    kx = tf.reshape(tf.transpose(k), [1, 2 * r + 1, n, 1])
    ky = tf.reshape(tf.transpose(k), [2 * r + 1, 1, n, 1])
    planes = tf.nn.depthwise_conv2d(planes, kx, [1, 1, 1, 1], "VALID")
    planes = tf.nn.depthwise_conv2d(planes, ky, [1, 1, 1, 1], "VALID")
    return tf.transpose(planes, [3, 1, 2, 0])


def _equalise(x: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation per image (OpenCV's rule: the grey level's cumulative count, stretched)."""
    shape = tf.shape(x)
    flat = tf.reshape(tf.round(x), [shape[0], -1])
    ordered = tf.sort(flat, axis=1)
    cdf = tf.cast(tf.searchsorted(ordered, flat, side="right"), tf.float32)
    lowest = tf.cast(tf.searchsorted(ordered, ordered[:, :1], side="right"), tf.float32)
    total = tf.cast(tf.shape(flat)[1], tf.float32)
    eq = (cdf - lowest) / tf.maximum(total - lowest, 1.0) * 255.0
    return tf.reshape(eq, shape)


def _rescale(x: tf.Tensor) -> tf.Tensor:
    size = tf.random.uniform([], SCALE_SIZE[0], SCALE_SIZE[1] + 1, dtype=tf.int32)
    small = tf.image.resize(x, [size, size], method="area")
    return tf.image.resize(small, tf.shape(x)[1:3], method="bilinear")


def _jpeg(x: tf.Tensor) -> tf.Tensor:
    def one(face: tf.Tensor) -> tf.Tensor:
        quality = tf.random.uniform([], JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, dtype=tf.int32)
        return tf.cast(tf.image.adjust_jpeg_quality(tf.cast(face, tf.uint8), quality), tf.float32)

    return tf.map_fn(one, tf.clip_by_value(tf.round(x), 0.0, 255.0), fn_output_signature=tf.float32)


def conditions(x: tf.Tensor, strength: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch [N,H,W,1] of faces (0-255) with the unit's conditions applied to a share of them,
    and which faces got at least one condition ([N] bool)."""
    n = tf.shape(x)[0]
    corrupted = tf.random.uniform([n, 1, 1, 1]) < P_CORRUPTED * strength
    applied = tf.zeros([n, 1, 1, 1], tf.bool)

    def pick(name: str, changed: tf.Tensor, current: tf.Tensor) -> tf.Tensor:
        nonlocal applied
        chosen = corrupted & (tf.random.uniform([n, 1, 1, 1]) < P[name])
        applied = applied | chosen
        return tf.where(chosen, changed, current)

    x = pick("blur", _blur(x, tf.random.uniform([n], *BLUR_SIGMA)), x)
    x = tf.clip_by_value(x, 0.0, 255.0)
    g = tf.exp(_uniform(n, -LOG_GAMMA, LOG_GAMMA))
    x = pick("gamma", 255.0 * (x / 255.0) ** g, x)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = pick("contrast", mean + _uniform(n, *CONTRAST) * (x - mean), x)
    x = pick("noise", x + tf.random.normal(tf.shape(x)) * _uniform(n, *NOISE_SIGMA), x)
    x = tf.clip_by_value(x, 0.0, 255.0)
    x = pick("equalise", _equalise(x), x)
    x = pick("scale", _rescale(x), x)
    x = pick("jpeg", _jpeg(x), x)
    # The unit sees whole grey levels.
    return tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.reshape(applied, [n])


class Strength(keras.callbacks.Callback):
    """Ramps the share of corrupted faces up over the first ``ramp`` epochs: (e+1)/(ramp+1), then 1."""

    def __init__(self, variable: tf.Variable, ramp: int) -> None:
        super().__init__()
        self.variable, self.ramp = variable, max(0, ramp)

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.variable.assign(min(1.0, (epoch + 1) / (self.ramp + 1)))
        print(f"epoch {epoch + 1}: condition strength {float(self.variable.numpy()):.2f}", flush=True)
