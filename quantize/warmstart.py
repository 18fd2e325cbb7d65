"""Start training from the shipped network: the weights inside ``emotion_float16.tflite``.

The float file holds the network once per view (``model.views_averaged``: the face, its mirror, and
in newer files their blurred copies) with batch norm folded into the convolutions and the card's
logit offsets folded into the last bias. This reads one view's folded kernels and biases back,
undoes the input scaling where the converter folded it into the first kernel (always in the direct
view; in files with the blurred views, in the one first kernel all views share), subtracts the
offsets, and sets each batch norm so that it reproduces the folded network exactly, with its
statistics measured on training faces so that training-mode batch norm starts where inference stands.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from quantize import model

CONV, FC = schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED


class WarmStartError(Exception):
    """The .tflite does not hold the network ``quantize.model.build`` makes."""


def _constant(m: schema.ModelT, g: schema.SubGraphT, index: int) -> np.ndarray:
    """A constant tensor's value, following a DEQUANTIZE from float16 if there is one."""
    for op in g.operators:
        if (
            index in op.outputs
            and m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.DEQUANTIZE
        ):
            index = op.inputs[0]
            break
    t = g.tensors[index]
    dtype = {schema.TensorType.FLOAT16: np.float16, schema.TensorType.FLOAT32: np.float32}[t.type]
    data = np.frombuffer(bytes(m.buffers[t.buffer].data), dtype)
    return data.reshape(t.shape).astype(np.float32)


def folded_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of one view's 3x3 convolutions then its dense layer, in Keras layout."""
    m = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    g = m.subgraphs[0]
    found = []
    for op in g.operators:
        code = max(
            m.operatorCodes[op.opcodeIndex].builtinCode, m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode
        )
        if code not in (CONV, FC):
            continue
        kernel, bias = _constant(m, g, op.inputs[1]), _constant(m, g, op.inputs[2])
        if code == CONV and (kernel.shape[1:3] != (3, 3) or kernel.shape[0] == 1):
            continue  # the fixed mirror and blur convolutions
        found.append((kernel.transpose(1, 2, 3, 0) if code == CONV else kernel.T, bias))
    views = sum(k.ndim == 2 for k, _ in found)  # one dense layer each
    per_view = len(found) // max(views, 1)
    if views < 2 or len(found) % views or per_view < 2:
        raise WarmStartError(f"{path}: expected the network once per view, found {len(found)} layers")
    branches = [found[v * per_view : (v + 1) * per_view] for v in range(views)]
    largest = [float(np.abs(b[0][0]).max()) for b in branches]
    (kernel, bias), *rest = branches[int(np.argmax(largest))]
    if max(largest) < 2 * min(largest):  # no view without the scaling: it is in the shared kernel
        kernel = kernel / model.INPUT_SCALE
    return [(kernel, bias), *rest]


def statistics_faces(images: np.ndarray, seed: int, count: int = 2000) -> np.ndarray:
    """``count`` training faces (seeded choice), as ``load`` wants them for batch norm."""
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), count, replace=False)][..., None].astype(np.float32)


def load(net: keras.Model, path: Path, faces: np.ndarray) -> None:
    """Set ``net`` (from ``model.build``) to the network in the float .tflite ``path``.

    ``faces``: float training faces [N,48,48,1] on which batch norm statistics are measured.
    """
    card = json.loads((path.parent / "emotion.json").read_text())
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    folded = folded_layers(path)
    if len(folded) != len(convs) + 1:
        raise WarmStartError(f"{path} has {len(folded) - 1} convolutions, the network {len(convs)}")
    for conv, (kernel, bias) in zip(convs, folded, strict=False):
        if conv.kernel.shape != kernel.shape:
            raise WarmStartError(f"{conv.name}: {kernel.shape} in {path}, {conv.kernel.shape} in the network")
        conv.set_weights([kernel])
        bn = net.get_layer(conv.name.replace("_conv", "_bn"))
        bn.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1.0 - bn.epsilon)])
    kernel, bias = folded[-1]
    net.get_layer("logits").set_weights([kernel, bias - np.asarray(card["logit_offsets"], np.float32)])
    # Same function, batch norm reparametrised around the measured statistics of its input.
    probe = keras.Model(net.input, [c.output for c in convs])
    for conv, out in zip(convs, probe.predict(faces, batch_size=256, verbose=0), strict=True):
        bn = net.get_layer(conv.name.replace("_conv", "_bn"))
        _, beta, _, _ = bn.get_weights()
        mu, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
        bn.set_weights([np.sqrt(var + bn.epsilon), beta + mu, mu, var])


def check(net: keras.Model, path: Path, faces: np.ndarray) -> float:
    """Largest probability difference between ``net`` (its views averaged, offsets back on) and the file."""
    from quantize.tflite_run import TfliteClassifier, ours_prep

    card = json.loads((path.parent / "emotion.json").read_text())
    shifted = model.build()
    shifted.set_weights(net.get_weights())
    dense = shifted.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + np.asarray(card["logit_offsets"], np.float32)])
    blur = float(card.get("views", {}).get("blur_sigma", 0.0))  # files before the blurred views: none
    ours = model.views_averaged(shifted, blur).predict(faces.astype(np.float32), batch_size=256, verbose=0)
    theirs = TfliteClassifier(path).predict(faces[..., 0].astype(np.uint8), ours_prep)
    return float(np.abs(ours - theirs).max())
