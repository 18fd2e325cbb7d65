"""The TFLite interpreter: LiteRT (``ai_edge_litert``), or ``tflite_runtime`` where a Pi image has only that.

Shared by the CPU and Edge TPU backends: loading, and int8/uint8 quantisation taken from the
interpreter's own tensor details, never from constants.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from appliance.vision import VisionError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


class InterpreterError(VisionError):
    """The model could not be loaded into the interpreter or run."""


def _module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as e:
            raise InterpreterError(
                "no TFLite runtime: install ai-edge-litert (pip) or python3-tflite-runtime"
            ) from e
    return interpreter


def cpu_interpreter(model: Path, threads: int) -> Any:
    """The interpreter on the processor; XNNPACK is LiteRT's default CPU delegate."""
    try:
        interpreter = _module().Interpreter(model_path=str(model), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise InterpreterError(f"{model} is not a model LiteRT can load: {e}") from e
    return interpreter


def edgetpu_interpreter(model: Path) -> Any:
    """The interpreter on the Coral: pycoral's ``make_interpreter`` if installed, else the delegate."""
    try:
        try:
            from pycoral.utils.edgetpu import make_interpreter
        except ImportError:
            module = _module()
            delegate = module.load_delegate(EDGETPU_LIBRARY)
            interpreter = module.Interpreter(model_path=str(model), experimental_delegates=[delegate])
        else:
            interpreter = make_interpreter(str(model))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as e:
        raise InterpreterError(f"the Edge TPU cannot run {model}: {e}") from e
    return interpreter


class Tensors:
    """Quantised input and dequantised output of a one-input, one-output interpreter."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        self.shape = tuple(int(d) for d in self.input["shape"])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Run on 0-255 pixels shaped like the input (without the batch axis); float32 outputs."""
        self.interpreter.set_tensor(self.input["index"], self._quantise(pixels))
        self.interpreter.invoke()
        return self._dequantise(self.interpreter.get_tensor(self.output["index"]))

    def _quantise(self, pixels: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.input["dtype"])
        x = pixels.reshape(self.shape).astype(np.float32)
        if dtype.kind == "f":
            return x.astype(dtype)
        scale, zero = self.input["quantization"]
        if scale:
            x = np.round(x / scale + zero)
        info = np.iinfo(dtype)
        return np.clip(x, info.min, info.max).astype(dtype)

    def _dequantise(self, raw: np.ndarray) -> np.ndarray:
        scale, zero = self.output["quantization"]
        values = raw.astype(np.float32)
        return (values - zero) * scale if scale else values
