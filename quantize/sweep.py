"""Choose the share of a fine-tuned run in the exported interpolation, on PublicTest.

    python -m quantize.sweep --run runs/dw2 --base runs/prev/emotion_float16.tflite --alphas 0,0.4,1
    python -m quantize.sweep --run runs/dw1 runs/dw2 --base ... --alphas 0.4   # the runs' average
    python -m quantize.sweep --run runs/dw2 --base ... --alphas 0.4 --blur 0  # the mirror alone
    python -m quantize.sweep --run runs/dw2 --base ... --alphas 0 --blur 0 --zoom 2  # zoomed views

For each share: the float network ``quantize.export --base --alpha`` would quantise, its offsets
calibrated as export does, then PublicTest scored clean and under ``quantize.corrupt``'s ten
corruptions (all faces), and the epoch selector's score (clean accuracy + mean recall + corrupted
accuracy + corrupted mean recall). Beside it, with the same offsets, PublicTest faces through the
runtime's detector and crop (``quantize.frames``, the card's cuts averaged): accuracy, mean recall and fear,
the class the crop costs most. About 4 minutes a share on 2 cores (2 with ``--blur 0``), plus one
for the detector.

``--blur``: the sigma of the blurred views the exported model averages in (``quantize.model``;
0 measures the face and its mirror alone). ``--zoom``: add both zoomed in by that many pixels a side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from quantize import frames  # noqa: F401  isort: skip  (aiortc before TensorFlow, see quantize.frames)
from appliance.vision.card import load_card
from quantize import corrupt, evaluate, export, ferdata, model, train


def shares(text: str) -> tuple[float, ...]:
    """``--alphas``: comma-separated shares, each as ``quantize.export --alpha``."""
    return tuple(export.share(alpha) for alpha in text.split(","))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, nargs="+", required=True, help="as quantize.export --run")
    p.add_argument("--base", type=Path, required=True, help="the float .tflite the run started from")
    p.add_argument(
        "--alphas", type=shares, default="0,0.3,0.4,0.5,0.6,0.7,1", help="the run's shares, comma-separated"
    )
    p.add_argument("--corrupt-faces", type=int, default=1000, help="as quantize.export: for the offsets")
    p.add_argument("--corrupt-recall", type=float, default=0.0, help="as quantize.export")
    p.add_argument("--blur", type=float, default=model.BLUR_SIGMA, help="the blurred views' sigma (0: none)")
    p.add_argument("--zoom", type=int, default=0, help="zoomed views: pixels cut from each side (0: none)")
    args = p.parse_args(argv)
    train_images = ferdata.load_split("train").images
    val = ferdata.load_split("val")
    labels = ferdata.majority_labels(val.votes)
    x = val.images[..., None].astype(np.float32)
    bad = [v[..., None].astype(np.float32) for v in corrupt.corrupted(val.images).values()]
    few = slice(0, args.corrupt_faces)
    crops, seen = evaluate.runtime_faces(val, load_card(evaluate.MODELS / export.CARD_FILE))
    cuts = [crops[:, c, ..., None].astype(np.float32) for c in range(crops.shape[1])]
    fears = (ferdata.majority_labels(seen.votes) == ferdata.LABELS.index("fear")).sum()
    print(
        "| share | clean accuracy / mean recall 7 | corrupted accuracy / lowest / mean recall 7 | score "
        "| runtime crop accuracy / mean recall 7 / fear |"
    )
    print("| --- | --- | --- | --- | --- |")
    net = model.build()
    run, base = export.run_weights(net, args.run), export.base_weights(args.base, train_images)
    averaged = model.views_averaged(net, args.blur, args.zoom)
    for alpha in args.alphas:
        net.set_weights(export.interpolate(run, base, alpha))
        clean = train.probabilities(averaged, x)
        degraded = [train.probabilities(averaged, b) for b in bad]
        offsets = export.calibrate_offsets(
            clean, labels, [d[few] for d in degraded], labels[few], corrupt_recall=args.corrupt_recall
        )
        shifted = [np.log(np.maximum(p, 1e-7)) + offsets for p in (clean, *degraded)]
        s = train.condition_scores(shifted[0], labels, shifted[1:], labels)
        # The cuts' answers averaged after the offsets, as the unit averages the model's outputs.
        on_cut = [np.log(np.maximum(train.probabilities(averaged, c), 1e-7)) + offsets for c in cuts]
        r = evaluate.scores(
            np.mean([np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) for z in on_cut], axis=0), seen
        )
        print(
            f"| {alpha:g} | {100 * s['acc']:.2f} % / {s['mean_recall7']:.3f} | "
            f"{100 * s['corrupt_acc']:.2f} / {100 * s['corrupt_min_acc']:.2f} % / "
            f"{s['corrupt_mean_recall7']:.3f} | "
            f"{train.selection_score(s):.3f} | "
            f"{100 * r['ferplus_majority_accuracy']:.2f} % / {r['mean_recall_7']:.3f} / "
            f"{r['recall']['fear']:.2f} ({fears}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
