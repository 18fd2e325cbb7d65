"""The expression CNN, designed for the Edge TPU.

Only ops the Edge TPU compiler maps: CONV_2D, DEPTHWISE_CONV_2D, ADD, MAX_POOL_2D, MEAN,
FULLY_CONNECTED, SOFTMAX, MUL (the input scaling), with ReLU fused. Batch norm folds into the
convolutions at conversion. Input: a 48x48 grey face crop, raw pixels 0-255, batch 1 when exported.
"""

from __future__ import annotations

import keras
from keras import layers

INPUT_SIZE = 48
NUM_CLASSES = 8
# 3x3 convolution widths per stage; each stage after the first starts with a 2x2 max pool.
# Plain convolutions: TensorFlow trains depthwise ones about 3x slower per epoch on this CPU.
STAGES: tuple[tuple[int, ...], ...] = ((32,), (64,), (128, 128), (256, 256))


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
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inp)
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
