"""Edge TPU readiness check: would every op of a .tflite map to the Edge TPU?

    python -m quantize.edgetpu_check models/edgetpu/emotion_int8.tflite

Reads the flatbuffer and checks each op and tensor against the Edge TPU compiler's documented
requirements. Exits 1 if anything would fall back to the CPU (or stop compilation), 2 if the file
cannot be read.

Where the rules come from:
- Model requirements (8-bit quantised tensors, constant sizes, constant parameters, tensors of at
  most 3 dimensions larger than 1, one subgraph) and the supported-ops table with each op's
  conditions: Coral, "TensorFlow models on the Edge TPU", coral.ai/docs/edgetpu/models-intro
  (sections "Model requirements" and "Supported operations").
- Op versions: edgetpu_compiler 16.0 carries its own TFLite op resolver and rejects newer op versions
  ("Didn't find op for builtin opcode 'CONV_2D' version '6'", google-coral/edgetpu#631;
  'TRANSPOSE_CONV' version '4', #845). MAX_VERSION below takes each op's highest version from
  TFLite's builtin resolver of that era (tensorflow/lite/kernels/register.cc, commit 00b1ec2) and
  lowers CONV_2D to 5 and TRANSPOSE_CONV to 3 as those reports show. Versions above it fail here.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

# op -> highest version edgetpu_compiler 16.0 accepts (see the module docstring).
MAX_VERSION = {
    "ADD": 4,
    "AVERAGE_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 3,
    "LSTM": 4,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 5,
    "PACK": 3,
    "PAD": 4,
    "PRELU": 1,
    "QUANTIZE": 3,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "RSQRT": 2,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SQUARED_DIFFERENCE": 2,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 6,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3,
}
NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
EIGHT_BIT = {schema.TensorType.INT8, schema.TensorType.UINT8}
SOFTMAX_MAX_ELEMENTS = 16000

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


class ModelFileError(Exception):
    """The file is not a readable .tflite model."""


@dataclass(frozen=True)
class Finding:
    where: str  # "op 3 CONV_2D v3" or "tensor 12 'name'"
    problem: str  # empty when it maps


def _load(path: Path) -> schema.Model:
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror}") from e
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelFileError(f"{path} is not a TensorFlow Lite model (no TFL3 identifier)")
    try:
        return schema.Model.GetRootAsModel(buf, 0)
    except Exception as e:
        raise ModelFileError(f"{path} is a damaged TensorFlow Lite model: {e}") from e


def _shape(tensor: schema.Tensor) -> list[int]:
    return [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []


def _is_constant(model: schema.Model, tensor: schema.Tensor) -> bool:
    return model.Buffers(tensor.Buffer()).DataLength() > 0


def check_tensor(model: schema.Model, index: int, tensor: schema.Tensor) -> Finding:
    name = tensor.Name().decode(errors="replace")
    where = f"tensor {index} {name[:60]!r} {_TYPE_NAMES.get(tensor.Type(), tensor.Type())} {_shape(tensor)}"
    shape = _shape(tensor)
    signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else shape
    constant = _is_constant(model, tensor)
    if any(d < 0 for d in signature):
        return Finding(where, "dynamic size: tensor sizes must be constant at compile time")
    # Filters are 4-D by nature; the rule is about the data flowing between ops.
    if not constant and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
        return Finding(where, "more than 3 dimensions larger than 1")
    if tensor.Type() in EIGHT_BIT:
        q = tensor.Quantization()
        if q is None or q.ScaleLength() == 0:
            return Finding(where, "8-bit tensor without quantisation parameters")
        return Finding(where, "")
    if tensor.Type() == schema.TensorType.INT32 and constant:
        return Finding(where, "")  # biases, axes and shapes are int32 constants
    return Finding(where, "not quantised to 8 bits: the Edge TPU only runs int8/uint8 tensors")


def _options(op: schema.Operator, cls: type) -> object | None:
    table = op.BuiltinOptions()
    if table is None:
        return None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _condition(model: schema.Model, graph: schema.SubGraph, op: schema.Operator, name: str) -> str:
    """The op-specific conditions of the supported-ops table; empty when met."""
    if name in {"CONV_2D", "DEPTHWISE_CONV_2D"}:
        cls = schema.Conv2DOptions if name == "CONV_2D" else schema.DepthwiseConv2DOptions
        o = _options(op, cls)
        if o is not None and o.DilationWFactor() != o.DilationHFactor():  # type: ignore[attr-defined]
            return "must use the same dilation in x and y"
    if name in NO_FUSED_ACTIVATION:
        cls = schema.Pool2DOptions if name != "CONCATENATION" else schema.ConcatenationOptions
        o = _options(op, cls)
        if o is not None and o.FusedActivationFunction() != schema.ActivationFunctionType.NONE:  # type: ignore[attr-defined]
            return "no fused activation function allowed"
    if name == "FULLY_CONNECTED":
        o = _options(op, schema.FullyConnectedOptions)
        if o is not None and o.WeightsFormat() != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:  # type: ignore[attr-defined]
            return "only the default weights format is supported"
    if name in {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}:
        data = graph.Tensors(op.Inputs(0))
        axes_tensor = graph.Tensors(op.Inputs(1))
        axes_buf = model.Buffers(axes_tensor.Buffer()).DataAsNumpy()
        rank = len(_shape(data))
        axes = {int(a) % rank for a in np.frombuffer(axes_buf.tobytes(), np.int32)} if rank else set()
        if 0 in axes:
            return "no reduction in the batch dimension"
        if name == "MEAN" and rank - 1 in axes and _shape(data)[-1] % 4:
            return "a reduction over z needs z to be a multiple of 4"
    if name == "SOFTMAX":
        shape = _shape(graph.Tensors(op.Inputs(0)))
        if any(d > 1 for d in shape[:-1]) or (shape and shape[-1] > SOFTMAX_MAX_ELEMENTS):
            return f"input must be 1-D with at most {SOFTMAX_MAX_ELEMENTS} elements"
    return ""


def check_op(model: schema.Model, graph: schema.SubGraph, index: int) -> Finding:
    op = graph.Operators(index)
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _OP_NAMES.get(builtin, f"builtin {builtin}")
    if builtin == schema.BuiltinOperator.CUSTOM:
        name = f"CUSTOM {code.CustomCode().decode(errors='replace')}"
    where = f"op {index} {name} v{code.Version()}"
    if name not in MAX_VERSION:
        return Finding(where, "not in the Edge TPU's supported operations")
    if code.Version() > MAX_VERSION[name]:
        return Finding(
            where, f"operation version not supported by edgetpu_compiler 16 (max v{MAX_VERSION[name]})"
        )
    return Finding(where, _condition(model, graph, op, name))


def check(path: Path) -> list[Finding]:
    model = _load(path)
    findings = []
    if model.SubgraphsLength() != 1:
        findings.append(Finding("model", f"{model.SubgraphsLength()} subgraphs: only one is supported"))
    graph = model.Subgraphs(0)
    findings += [check_op(model, graph, i) for i in range(graph.OperatorsLength())]
    findings += [check_tensor(model, i, graph.Tensors(i)) for i in range(graph.TensorsLength())]
    return findings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a .tflite against the Edge TPU compiler's requirements.")
    p.add_argument("model", type=Path)
    p.add_argument("--quiet", action="store_true", help="print only problems and the summary")
    args = p.parse_args(argv)
    try:
        findings = check(args.model)
    except ModelFileError as e:
        print(f"edgetpu_check: {e}", file=sys.stderr)
        return 2
    bad = [f for f in findings if f.problem]
    for f in findings:
        if f.problem or not args.quiet:
            print(f"{'FAIL' if f.problem else 'ok  '} {f.where}{': ' + f.problem if f.problem else ''}")
    ops = sum(f.where.startswith("op ") for f in findings)
    print(
        f"{args.model}: {ops} ops, {len(findings) - ops} tensors checked, {len(bad)} problems: "
        + ("would fall back to the CPU" if bad else "every op maps to the Edge TPU")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
