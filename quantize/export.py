"""Export the trained network: calibrate the class offsets on PublicTest, quantise to int8, write the card.

The offsets are chosen on PublicTest, clean and under ``quantize.corrupt``'s ten corruptions.

    python -m quantize.export --run runs/main --out models/edgetpu
    python -m quantize.export --run runs/ft --base models/edgetpu/emotion_float16.tflite --alpha 0.5

Writes ``emotion_int8.tflite`` and ``emotion.json`` (labels, input, crop, file names, sha256).
``python -m quantize.evaluate --write`` then adds the measured metrics to the card.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantize import frames  # isort: skip  (aiortc before TensorFlow, see quantize.frames)
from quantize import convert, corrupt, ferdata, model, train, warmstart

if TYPE_CHECKING:  # annotations only: imported first, keras would load TensorFlow before aiortc (a crash)
    import keras

log = logging.getLogger(__name__)

MODEL_FILE = "emotion_int8.tflite"
EDGETPU_FILE = "emotion_int8_edgetpu.tflite"
CARD_FILE = "emotion.json"
# The float network behind the int8 file, weights stored as float16 (half the size), for
# quantize.evaluate's float column and the int8/float agreement test.
FLOAT_FILE = "emotion_float16.tflite"
OFFSET_GRID = np.arange(-1.0, 2.01, 0.25)
# The unit's two cuts, either side of the calibrated margin, to the hundredth (the box's width varies
# by sd 0.14 between faces): chosen on PublicTest's faces through the runtime crop over five face sizes
# (model card, "Two cuts").
CUT_SPREAD = 0.03
# PublicTest recall the offsets aim for: the clean target (mean 0.77) plus a margin, and every clean
# class at least MIN_RECALL. The margin is the fall from PublicTest float to PrivateTest int8 measured
# on the previous file (0.798 to 0.770). A floor on the corrupted mean recall is a parameter
# (``--corrupt-recall``): on the first fine-tuned network it cost clean accuracy below its target
# (PublicTest 84.8 % at 0.74).
MEAN_RECALL, MIN_RECALL = 0.79, 0.55


def calibrate_offsets(
    probs: np.ndarray,
    labels: np.ndarray,
    corrupted: list[np.ndarray],
    corrupted_labels: np.ndarray,
    rounds: int = 3,
    corrupt_recall: float = 0.0,
) -> np.ndarray:
    """Per-class logit offsets for the best PublicTest accuracy that keeps every class heard.

    Training on vote distributions leaves the rare classes (disgust, fear) under-called, more so on
    degraded faces; a bias shift moves the decision thresholds without retraining. Accuracy is the
    clean one plus the mean over ``corrupted`` (faces under ``quantize.corrupt``, labelled
    ``corrupted_labels``). The offsets only have to bring the clean recalls to the targets with a
    margin (mean of the seven >= MEAN_RECALL, each >= MIN_RECALL), and the mean over ``corrupted``
    of their mean recall to ``corrupt_recall``; beyond that they would trade accuracy for recall on
    PublicTest's noise. Coordinate ascent on a coarse grid keeps them from fitting it.
    """
    logits = np.log(np.maximum(probs, 1e-7))
    bad = [np.log(np.maximum(p, 1e-7)) for p in corrupted]
    offsets = np.zeros(logits.shape[1], np.float32)

    def score(o: np.ndarray) -> float:
        s = train.majority_scores(logits + o, labels)
        b = [train.majority_scores(x + o, corrupted_labels) for x in bad]
        b_acc = float(np.mean([r["acc"] for r in b])) if b else 0.0
        b_recall = float(np.mean([r["mean_recall7"] for r in b])) if b else corrupt_recall
        short = (
            max(0.0, MEAN_RECALL - s["mean_recall7"])
            + max(0.0, MIN_RECALL - s["min_recall7"])
            + max(0.0, corrupt_recall - b_recall)
        )
        return s["acc"] + b_acc - 10.0 * short

    best = score(offsets)
    for _, c in itertools.product(range(rounds), range(logits.shape[1])):
        for v in OFFSET_GRID:
            trial = offsets.copy()
            trial[c] = v
            if (s := score(trial)) > best + 1e-6:
                best, offsets = s, trial
    return offsets


def run_weights(net: keras.Model, runs: list[Path]) -> list[np.ndarray]:
    """The weights of a training run (its folder's ``best.weights.h5``, or a weights file); of several,
    their average (a uniform model soup, Wortsman et al. 2022: checkpoints of one basin average well)."""
    each = []
    for run in runs:
        net.load_weights(run / "best.weights.h5" if run.is_dir() else run)
        each.append(net.get_weights())
    return [np.mean(layer, axis=0) for layer in zip(*each, strict=True)]


def base_weights(base: Path, train_images: np.ndarray) -> list[np.ndarray]:
    """The weights of the network in the float file ``base``, as ``train --init`` starts from them."""
    start = model.build()
    warmstart.load(start, base, warmstart.statistics_faces(train_images, train.SEED))
    return list(start.get_weights())


def share(text: str) -> float:
    """``--alpha``: the run's share, 0..1 (outside it the weights would be extrapolated, not interpolated)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a share must be 0..1: {text!r}")
    return value


def interpolate(run: list[np.ndarray], base: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """``alpha`` of the run's weights plus ``1 - alpha`` of the base's.

    Robust fine-tuning (WiSE-FT, Wortsman et al. 2022): a network fine-tuned from ``base`` stays in
    its basin, and the average of the two held up better on PublicTest, clean and corrupted, than
    either end (the model card's table, from ``quantize.sweep``).
    """
    return [(1 - alpha) * b + alpha * r for r, b in zip(run, base, strict=True)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run",
        type=Path,
        nargs="+",
        default=[Path("runs/main")],
        help="training output folder (its best.weights.h5) or weights file; several: their average",
    )
    p.add_argument("--out", type=Path, default=Path("models/edgetpu"))
    p.add_argument("--representative", type=int, default=500, help="training images for calibration")
    p.add_argument("--margin-faces", type=int, default=1000, help="PublicTest faces for the crop margin")
    p.add_argument(
        "--val-faces",
        type=int,
        default=None,
        help="the first N PublicTest faces for the offsets (smoke test)",
    )
    p.add_argument(
        "--corrupt-faces", type=int, default=1000, help="PublicTest faces corrupted for the offsets"
    )
    p.add_argument(
        "--corrupt-recall",
        type=float,
        default=0.0,
        help="floor for the offsets on the corrupted faces' mean recall of 7 (0: none)",
    )
    p.add_argument(
        "--base",
        type=Path,
        default=None,
        help="float .tflite the run was fine-tuned from: export an interpolation of the two",
    )
    p.add_argument("--alpha", type=share, default=0.5, help="the run's share in the interpolation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    net = model.build()
    net.set_weights(run_weights(net, args.run))
    train_images = ferdata.load_split("train").images
    if args.base:
        net.set_weights(interpolate(net.get_weights(), base_weights(args.base, train_images), args.alpha))
        log.info("%.2f of %s with %.2f of %s", args.alpha, args.run, 1 - args.alpha, args.base)
    val = ferdata.load_split("val")
    if args.val_faces:
        val = ferdata.subset(val, np.arange(len(val.images)) < args.val_faces)
    averaged = model.views_averaged(net)
    val_probs = train.probabilities(averaged, val.images[..., None].astype(np.float32))
    labels = ferdata.majority_labels(val.votes)
    few = slice(0, args.corrupt_faces)
    corrupted = [
        train.probabilities(averaged, images[..., None].astype(np.float32))
        for images in corrupt.corrupted(val.images[few]).values()
    ]
    offsets = calibrate_offsets(val_probs, labels, corrupted, labels[few], corrupt_recall=args.corrupt_recall)
    log.info("PublicTest before %s", train.majority_scores(val_probs, labels))
    dense = net.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + offsets])
    val_probs = train.probabilities(averaged, val.images[..., None].astype(np.float32))
    log.info("PublicTest after offsets %s: %s", offsets, train.majority_scores(val_probs, labels))

    export = model.build(batch_size=1)
    export.set_weights(net.get_weights())
    rng = np.random.default_rng(train.SEED)
    rep = train_images[rng.choice(len(train_images), args.representative, replace=False)][..., None]
    tflite = args.out / MODEL_FILE
    exported = model.views_averaged(export)
    convert.write(tflite, convert.to_int8_tflite(exported, rep))
    convert.write(args.out / FLOAT_FILE, convert.to_float16_tflite(exported))

    margin, found = frames.calibrate_margin(val.images[: args.margin_faces])
    log.info(
        "crop margin %.3f: the runtime's Haar box on %.0f%% of PublicTest faces in frames",
        margin,
        100 * found,
    )
    card = {
        "name": "emocall expression CNN",
        "labels": list(ferdata.LABELS),
        "input": {
            "height": model.INPUT_SIZE,
            "width": model.INPUT_SIZE,
            "channels": 1,
            "pixels": "0-255 grey, the model normalises inside",
        },
        "crop": {
            "margin": margin,
            "cuts": [round(margin - CUT_SPREAD, 2), round(margin + CUT_SPREAD, 2)],
            "square": True,
            "detector": "haar",
            "note": "margin: fraction of the detected face box added on each side; the unit cuts at "
            "the margins in cuts in turn and averages the two answers",
        },
        "file": MODEL_FILE,
        "file_edgetpu": EDGETPU_FILE,
        "sha256": {MODEL_FILE: sha256(tflite), FLOAT_FILE: sha256(args.out / FLOAT_FILE)},
        "logit_offsets": [round(float(o), 3) for o in offsets],
        "views": {"blur_sigma": model.BLUR_SIGMA},  # the face and its mirror always; blurred if > 0
        "metrics": {},
    }
    card_path = args.out / CARD_FILE
    if card_path.exists():
        old = json.loads(card_path.read_text())
        card["sha256"] = {
            **{k: v for k, v in old.get("sha256", {}).items() if k not in card["sha256"]},
            **card["sha256"],
        }
    convert.write(card_path, (json.dumps(card, indent=1) + "\n").encode())
    log.info("wrote %s (%d bytes) and %s", tflite, tflite.stat().st_size, card_path)


if __name__ == "__main__":
    main()
