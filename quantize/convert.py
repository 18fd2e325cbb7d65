"""Full-integer (int8) post-training quantisation of the expression model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def to_int8_tflite(model: keras.Model, representative: np.ndarray) -> bytes:
    """Quantise every tensor to int8, int8 input and output.

    ``representative`` holds uint8 face crops [N,H,W,1] from the training images.
    """

    def samples() -> Iterator[list[np.ndarray]]:
        for img in representative:
            yield [img[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def to_float16_tflite(model: keras.Model) -> bytes:
    """The float network with its weights stored as float16; LiteRT computes in float32."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return bytes(converter.convert())


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
