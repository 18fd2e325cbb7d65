"""The expression CNN, designed for the Edge TPU.

Only ops the Edge TPU compiler maps: CONV_2D, MAX_POOL_2D, MEAN, FULLY_CONNECTED, SOFTMAX, and for
the averaged views RESHAPE, ADD and MUL (STRIDED_SLICE and RESIZE_BILINEAR for the measured zoomed
views), with ReLU fused. Batch norm and the input scaling (``Rescaling``) fold into the convolutions
at conversion, so the graph has no op for them.
Input: a 48x48 grey face crop, raw pixels 0-255, batch 1 when exported.
The exported model averages the network over the face, its mirror image and the blurred copies of
both (``views_averaged``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

INPUT_SIZE = 48
NUM_CLASSES = 8
# 3x3 convolution widths per stage; each stage after the first starts with a 2x2 max pool.
# Plain convolutions: TensorFlow trains depthwise ones about 3x slower per epoch on this CPU.
STAGES: tuple[tuple[int, ...], ...] = ((32,), (64,), (128, 128), (256, 256))
INPUT_SCALE = 1.0 / 255.0  # raw pixels to 0-1, inside the network
# Sigma of the blurred views' 3x3 Gaussian (0: none), chosen on PublicTest (``quantize.sweep --blur``).
BLUR_SIGMA = 0.8


def _conv_bn_relu(x: keras.KerasTensor, channels: int, name: str) -> keras.KerasTensor:
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build(
    batch_size: int | None = None,
    dropout: float = 0.3,
    logits: bool = False,
    stages: tuple[tuple[int, ...], ...] = STAGES,
) -> keras.Model:
    """The network; ``batch_size=1`` gives the static shape the Edge TPU needs."""
    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), batch_size=batch_size, name="face")
    x = layers.Rescaling(INPUT_SCALE, name="scale")(inp)
    for s, widths in enumerate(stages):
        if s > 0:
            x = layers.MaxPooling2D(2, name=f"pool{s}")(x)
        for c, channels in enumerate(widths):
            x = _conv_bn_relu(x, channels, f"s{s}c{c}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    if not logits:
        x = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inp, x, name="emocall_expression")


def blur_kernel(sigma: float) -> np.ndarray:
    """A normalised 3x3 Gaussian."""
    g = np.exp(-(np.arange(-1.0, 2.0) ** 2) / (2 * sigma**2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def _blurred(x: keras.KerasTensor, sigma: float, name: str) -> keras.KerasTensor:
    """``x`` through a fixed 3x3 Gaussian, each pixel divided by the kernel's weight inside the image.

    The Edge TPU has no mirror padding, so the rim is zero-padded; the division (a MUL by a
    constant map) keeps the rim from darkening.
    """
    height, width = x.shape[1], x.shape[2]
    k = blur_kernel(sigma)
    ones = np.pad(np.ones((height, width), np.float32), 1)
    inside = sum(k[i, j] * ones[i : i + height, j : j + width] for i in range(3) for j in range(3))
    x = layers.Conv2D(
        1,
        3,
        padding="same",
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(k.reshape(3, 3, 1, 1)),
        name=name,
    )(x)
    return layers.Rescaling((1.0 / inside)[..., None], name=f"{name}_rim")(x)


def _zoomed(x: keras.KerasTensor, crop: int, name: str) -> keras.KerasTensor:
    """The centre of ``x``, ``crop`` pixels in from each side, resized back (bilinear)."""
    height, width = x.shape[1], x.shape[2]
    x = layers.Cropping2D(crop, name=name)(x)
    return layers.Resizing(height, width, interpolation="bilinear", name=f"{name}_resize")(x)


def views_averaged(net: keras.Model, blur: float = BLUR_SIGMA, zoom: int = 0) -> keras.Model:
    """``net``'s output averaged over the face and its mirror image, and their blurred copies if ``blur``.

    The Edge TPU has no REVERSE op, so the mirror is a fixed 1xW convolution whose W output
    channels each pick one column in reverse order; the reshape back to HxWx1 only relabels
    the same row-major values. The mirror is worth about a point of accuracy; the blurred views
    (``blur``: the Gaussian's sigma) another half point, more under noise and compression (the
    model card's table). Each view costs one pass of the network. ``zoom`` adds both zoomed in by
    that many pixels a side, a measured alternative for the crop's scale that did not help (the
    model card's "What did not help"); the exported file has none.
    """
    height, width, _ = net.input_shape[1:]
    picks = np.eye(width, dtype=np.float32)[::-1].reshape(1, width, 1, width)
    inp = keras.Input(net.input_shape[1:], batch_size=net.input_shape[0], name="face")
    mirror = layers.Conv2D(
        width,
        (1, width),
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(picks),
        name="mirror",
    )(inp)
    mirror = layers.Reshape((height, width, 1), name="mirror_hw")(mirror)
    views = [inp, mirror]
    if blur:
        views += [_blurred(inp, blur, "blur"), _blurred(mirror, blur, "blur_mirror")]
    if zoom:
        views += [_zoomed(inp, zoom, "zoom"), _zoomed(mirror, zoom, "zoom_mirror")]
    total = layers.Add(name="sum")([net(v) for v in views])
    return keras.Model(
        inp, layers.Rescaling(1.0 / len(views), name="average")(total), name=f"{net.name}_views"
    )
