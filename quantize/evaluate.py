"""Evaluate the shipped model, its float weights and the `fer` peer on PrivateTest, in one run.

    python -m quantize.evaluate            # print
    python -m quantize.evaluate --write    # also write the metrics into emotion.json + confusion.png

FERPlus majority-vote accuracy on PrivateTest (Microsoft's label.csv votes and majority rule:
3,137 images), per-class recall and the mean recall of the seven classes other than contempt;
FER2013 PrivateTest accuracy over the 7 FER2013 classes (contempt dropped from our outputs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from quantize import export, ferdata, peer
from quantize.tflite_run import TfliteClassifier, ours_prep

MODELS = Path(__file__).resolve().parents[1] / "models" / "edgetpu"


def scores(probs: np.ndarray, split: ferdata.Split) -> dict[str, object]:
    labels = ferdata.majority_labels(split.votes)
    keep = labels >= 0
    pred, lab = probs[keep].argmax(axis=1), labels[keep]
    recall = {name: round(float((pred[lab == c] == c).mean()), 4) for c, name in enumerate(ferdata.LABELS)}
    seven = [v for k, v in recall.items() if k != "contempt"]
    fer = ferdata.fer2013_labels_ours(split.fer2013)
    has = fer >= 0
    no_contempt = probs[has].copy()
    no_contempt[:, ferdata.CONTEMPT] = -np.inf
    return {
        "ferplus_majority_accuracy": round(float((pred == lab).mean()), 4),
        "ferplus_images": int(keep.sum()),
        "mean_recall_7": round(float(np.mean(seven)), 4),
        "min_recall_7": round(float(np.min(seven)), 4),
        "recall": recall,
        "fer2013_accuracy_7": round(float((no_contempt.argmax(axis=1) == fer[has]).mean()), 4),
        "fer2013_images": int(has.sum()),
    }


def confusion(probs: np.ndarray, split: ferdata.Split) -> np.ndarray:
    labels = ferdata.majority_labels(split.votes)
    keep = labels >= 0
    m = np.zeros((len(ferdata.LABELS),) * 2, np.int64)
    np.add.at(m, (labels[keep], probs[keep].argmax(axis=1)), 1)
    return m


def plot_confusion(m: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(8),
        yticks=range(8),
        xlabel="predicted",
        ylabel="FERPlus majority label",
        title="int8 model, FERPlus PrivateTest (row-normalised, counts)",
    )
    ax.set_xticklabels(ferdata.LABELS, rotation=45, ha="right")
    ax.set_yticklabels(ferdata.LABELS)
    for i, j in np.ndindex(m.shape):
        ax.text(
            j,
            i,
            f"{norm[i, j]:.2f}\n{m[i, j]}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if norm[i, j] > 0.5 else "black",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict[str, dict[str, object]]) -> str:
    rows = ["| metric | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for key in ("ferplus_majority_accuracy", "mean_recall_7", "min_recall_7", "fer2013_accuracy_7"):
        rows.append(f"| {key} | " + " | ".join(f"{r[key]:.4f}" for r in results.values()) + " |")
    for label in ferdata.LABELS:
        rows.append(
            f"| recall {label} | " + " | ".join(f"{r['recall'][label]:.4f}" for r in results.values()) + " |"
        )  # type: ignore[index]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=MODELS)
    p.add_argument("--write", action="store_true", help="write metrics into emotion.json and confusion.png")
    p.add_argument("--no-peer", action="store_true", help="skip the fer peer")
    args = p.parse_args(argv)
    card_path = args.models / export.CARD_FILE
    card = json.loads(card_path.read_text())
    test = ferdata.load_split("test")

    int8 = TfliteClassifier(args.models / card["file"]).predict(test.images, ours_prep)
    results = {"int8": scores(int8, test)}
    float_file = args.models / export.FLOAT_FILE
    if float_file.exists():
        fl = TfliteClassifier(float_file).predict(test.images, ours_prep)
        results["float"] = scores(fl, test)
        agreement = float((fl.argmax(axis=1) == int8.argmax(axis=1)).mean())
        print(f"int8 and float agree on {agreement:.4f} of {len(test.images)} PrivateTest images")
    if not args.no_peer:
        fer = TfliteClassifier(peer.fer_tflite()).predict(test.images, peer.preprocess)
        results["fer peer"] = scores(peer.to_our_labels(fer), test)
    print(table(results))
    if args.write:
        card["metrics"] = {
            "split": "FER2013 PrivateTest",
            **{k.replace(" ", "_"): v for k, v in results.items()},
        }
        if "float" in results:
            card["metrics"]["int8_float_agreement"] = round(agreement, 4)
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        plot_confusion(confusion(int8, test), args.models / "confusion.png")
        print(f"wrote {card_path} and {args.models / 'confusion.png'}")


if __name__ == "__main__":
    main()
