"""The TFLite interpreter: LiteRT (``ai_edge_litert``), or ``tflite_runtime`` where a Pi image has only that.

Shared by the CPU and Edge TPU backends: loading, and int8/uint8 quantisation taken from the
interpreter's own tensor details, never from constants.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from appliance import platform
from appliance.vision import VisionError, coral

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
# Loading the delegate and one inference take well under a second on a working Coral.
PROBE_SECONDS = 30.0
PROBE_SAYS = "edgetpu probe: "  # marks the child's reason among whatever else it prints


class _ThisProcess:
    """Whether this process has the Edge TPU open: a probe would then be a second process on it.
    One opening at a time (the camera's pipeline, a guest's, the face detector)."""

    opening = threading.Lock()
    opened = False


class InterpreterError(VisionError):
    """The model could not be loaded into the interpreter or run."""


class EdgeTpuAbsent(InterpreterError):
    """No Coral is attached, or its runtime is not installed: not a Coral that fails."""


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
    """The interpreter on the Coral, once a child process has run the model there without crashing.

    The Coral must be this process's (:mod:`appliance.vision.coral`): a device another process has
    is left alone (:class:`~appliance.vision.coral.CoralInUse`). Once this process has it open, later
    interpreters (a guest's pipeline, the face detector beside the classifier) skip the probe: its
    child would be the second process on the device.
    """
    with _ThisProcess.opening:
        if not _ThisProcess.opened:
            _probe_as_owner(model)
        interpreter = _load_edgetpu(model)
        _ThisProcess.opened = True
        return interpreter


def _probe_as_owner(model: Path) -> None:
    """Take the Coral for this process, then probe it; a failed probe gives it up again (this
    process never opened it, and another, ``emocall selftest`` say, may then try)."""
    coral.claim()
    try:
        probe_edgetpu(model)
    except InterpreterError:
        coral.release()
        raise


def _load_edgetpu(model: Path) -> Any:
    """pycoral's ``make_interpreter`` if installed, else LiteRT with the libedgetpu delegate."""
    try:
        try:
            from pycoral.utils.edgetpu import make_interpreter
        except ImportError:
            module = _module()
            delegate = module.load_delegate(platform.edgetpu_runtime() or EDGETPU_LIBRARY)
            interpreter = module.Interpreter(model_path=str(model), experimental_delegates=[delegate])
        else:
            interpreter = make_interpreter(str(model))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as e:
        raise InterpreterError(f"the Edge TPU cannot run {model}: {e}") from e
    return interpreter


def probe_edgetpu(model: Path, timeout: float = PROBE_SECONDS) -> None:
    """Load and run ``model`` on the Edge TPU once in a child process; InterpreterError saying why not.

    A libedgetpu built for another TFLite version segfaults inside the delegate (google-coral/edgetpu
    issue 812). No except clause catches that, and under ``Restart=always`` the service would start
    into the same crash forever; a crashed child only means "use the processor".
    """
    command = [sys.executable, "-m", "appliance.vision.litert", str(model)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise InterpreterError(
            f"the Edge TPU did not answer within {timeout:g} s (unplugged or hung?)"
        ) from e
    if done.returncode < 0:
        crash = signal.Signals(-done.returncode).name
        raise InterpreterError(
            f"the Edge TPU runtime crashed ({crash}) in a test run: libedgetpu does not match this "
            "TFLite runtime (install the libedgetpu the image pins, see image-build/README.md)"
        )
    if done.returncode != 0:
        # Our one line, not the last one: LiteRT's Delegate adds an AttributeError from __del__ after it.
        said = [line[len(PROBE_SAYS) :] for line in done.stderr.splitlines() if line.startswith(PROBE_SAYS)]
        raise InterpreterError(said[0] if said else f"the Edge TPU test run exited {done.returncode}")


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


def _probe_main(model: Path) -> int:
    """The child side of :func:`probe_edgetpu`: load, run once on zeros, report."""
    try:
        tensors = Tensors(_load_edgetpu(model))
        tensors.run(np.zeros(tensors.shape[1:], np.float32))
    except InterpreterError as e:
        print(f"{PROBE_SAYS}{e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(Path(sys.argv[1])))
