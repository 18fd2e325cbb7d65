"""Evaluate the shipped model, its float weights and the `fer` peer, in one run.

    python -m quantize.evaluate              # PrivateTest: once per shipped model
    python -m quantize.evaluate --write      # also write the metrics into emotion.json + confusion.png
    python -m quantize.evaluate --split val --models runs/x/model   # a candidate, on PublicTest
    python -m quantize.evaluate --split val --no-peer --no-vp8 --face-px 120,160,200,240,280  # crop sizes

FERPlus majority-vote accuracy (Microsoft's label.csv votes and majority rule: 3,137 PrivateTest
images), per-class recall and the mean recall of the seven classes other than contempt; FER2013
accuracy over the 7 FER2013 classes (contempt dropped from our outputs). Then, for int8 and the
peer: the same figures without the PrivateTest images that are exact copies of Training images;
under each of ``quantize.corrupt``'s ten corruptions; through the runtime's detector and crop on
faces in 640x480 frames; and through the call's VP8 first (``quantize.frames``); these two on
PrivateTest also without the copies.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantize import frames  # isort: skip  (aiortc before TensorFlow, see quantize.frames)
from appliance.vision.card import ModelCard, load_card
from quantize import corrupt, export, ferdata, peer
from quantize.tflite_run import TfliteClassifier, ours_prep

MODELS = Path(__file__).resolve().parents[1] / "models" / "edgetpu"


Scores = dict[str, object]


def _fingerprint(face: np.ndarray) -> bytes:
    return hashlib.blake2b(face.tobytes(), digest_size=16).digest()


@functools.cache
def _training_fingerprints() -> frozenset[bytes]:
    """Read once a run: the direct feed, the runtime crop and VP8 each ask for their faces' copies."""
    return frozenset(_fingerprint(f) for f in ferdata.load_split("train").images)


def training_copies(images: np.ndarray) -> np.ndarray:
    """Which of ``images`` are exact pixel copies of a Training image."""
    seen = _training_fingerprints()
    return np.array([_fingerprint(f) in seen for f in images], dtype=bool)


def scores(probs: np.ndarray, split: ferdata.Split) -> Scores:
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


def table(results: dict[str, Scores]) -> str:
    rows = ["| metric | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for key in ("ferplus_majority_accuracy", "mean_recall_7", "min_recall_7", "fer2013_accuracy_7"):
        rows.append(f"| {key} | " + " | ".join(f"{r[key]:.4f}" for r in results.values()) + " |")
    for label in ferdata.LABELS:
        rows.append(
            f"| recall {label} | " + " | ".join(f"{r['recall'][label]:.4f}" for r in results.values()) + " |"
        )  # type: ignore[index]
    return "\n".join(rows)


def per_class_table(rows: dict[str, dict[str, Scores]]) -> str:
    """One line per (condition, model): accuracy, mean recall of 7, recall of each class."""
    head = "| condition | model | accuracy | mean recall 7 | " + " | ".join(ferdata.LABELS) + " |"
    out = [head, "|---" * (4 + len(ferdata.LABELS)) + "|"]
    for condition, models in rows.items():
        for name, r in models.items():
            recall = " | ".join(f"{r['recall'][c]:.2f}" for c in ferdata.LABELS)  # type: ignore[index]
            out.append(
                f"| {condition} | {name} | {100 * r['ferplus_majority_accuracy']:.1f}% "  # type: ignore[operator]
                f"| {r['mean_recall_7']:.3f} | {recall} |"
            )
    return "\n".join(out)


def summary(per_condition: dict[str, dict[str, Scores]], model: str) -> dict[str, float]:
    acc = [float(r[model]["ferplus_majority_accuracy"]) for r in per_condition.values()]  # type: ignore[arg-type]
    mr7 = [float(r[model]["mean_recall_7"]) for r in per_condition.values()]  # type: ignore[arg-type]
    return {
        "mean_accuracy": round(float(np.mean(acc)), 4),
        "lowest_accuracy": round(float(np.min(acc)), 4),
        "mean_of_mean_recall_7": round(float(np.mean(mr7)), 4),
    }


class Models:
    """The int8 file and the peer, each with its own preprocessing, on 48x48 faces."""

    def __init__(self, int8: Path, with_peer: bool) -> None:
        self.int8 = TfliteClassifier(int8)
        self.peer = TfliteClassifier(peer.fer_tflite()) if with_peer else None

    def scores(self, faces: np.ndarray, split: ferdata.Split) -> dict[str, Scores]:
        """48x48 faces, or faces cut several ways (``runtime_faces``), each read as the mean of its
        cuts' answers: a held face as the unit's ``TwoCuts`` reads it."""
        out = {"int8": scores(cut_mean(self.int8, faces, ours_prep), split)}
        if self.peer:
            out["fer peer"] = scores(peer.to_our_labels(cut_mean(self.peer, faces, peer.preprocess)), split)
        return out


def cut_mean(
    model: TfliteClassifier, faces: np.ndarray, prep: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    if faces.ndim == 3:
        return model.predict(faces, prep)
    return np.mean([model.predict(faces[:, c], prep) for c in range(faces.shape[1])], axis=0)


def corruption_results(models: Models, split: ferdata.Split) -> dict[str, dict[str, Scores]]:
    return {name: models.scores(images, split) for name, images in corrupt.corrupted(split.images).items()}


def runtime_faces(
    split: ferdata.Split, card: ModelCard, vp8: bool = False, sizes: tuple[int, ...] = (frames.FACE_PX,)
) -> tuple[np.ndarray, ferdata.Split]:
    """The labelled faces of ``split`` in 640x480 frames (through VP8 first if ``vp8``), detected and
    cropped as the unit does with ``card``'s crop: the crops of the faces found (``faces x margins x
    48 x 48``, ``frames.runtime_crops``), and those faces' own split.

    Each face is placed once at every size in ``sizes`` (px): a face found at two sizes counts twice.
    """
    labelled = ferdata.labelled(split)
    scenes = (frames.frame_with_face(f, px) for px in sizes for f in labelled.images)
    crops, found = frames.runtime_crops(frames.vp8_round_trip(scenes) if vp8 else scenes, card)
    placed = ferdata.subset(labelled, np.tile(np.arange(len(labelled.images)), len(sizes)))
    return crops[found], ferdata.subset(placed, found)


def crop_against_direct(
    models: Models, crops: np.ndarray, seen: ferdata.Split, deduplicate: bool = False
) -> dict[str, object]:
    """The runtime's crops of ``seen``'s faces scored, beside those faces fed directly; with
    ``deduplicate``, the same again (key ``deduplicated``) without the faces that are copies of
    Training images (the model has seen those, and a seen face read right as its FER2013 crop can be
    lost in a new cut)."""
    out: dict[str, object] = {
        "runtime_crop": models.scores(crops, seen),
        "direct_feed_same_faces": models.scores(seen.images, seen)["int8"],
    }
    if deduplicate:
        unique = ~training_copies(seen.images)
        out["deduplicated"] = crop_against_direct(models, crops[unique], ferdata.subset(seen, unique))
    return out


def video_results(
    models: Models,
    split: ferdata.Split,
    card: ModelCard,
    sizes: tuple[int, ...],
    *,
    vp8: bool,
    deduplicate: bool,
) -> dict[str, object]:
    """Faces through the unit's own path (``runtime_faces``), against the same faces fed directly
    (``crop_against_direct``)."""
    crops, seen = runtime_faces(split, card, vp8, sizes)
    faces = len(ferdata.labelled(split).images) * len(sizes)
    return {
        "face_px": list(sizes),
        "faces": faces,
        "found": round(len(crops) / faces, 4),
        **crop_against_direct(models, crops, seen, deduplicate),
    }


def crop_table(r: dict[str, object]) -> dict[str, dict[str, Scores]]:
    """``crop_against_direct``'s figures as ``per_class_table`` rows."""
    return {
        "runtime crop": r["runtime_crop"],  # type: ignore[dict-item]
        "direct, same faces": {"int8": r["direct_feed_same_faces"]},  # type: ignore[dict-item]
    }


def face_sizes(text: str) -> tuple[int, ...]:
    """``--face-px``: comma-separated sizes in px, each of which fits the frame's height."""
    try:
        sizes = tuple(int(px) for px in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated whole numbers: {text!r}") from None
    if not all(0 < px <= frames.FRAME_H for px in sizes):
        raise argparse.ArgumentTypeError(f"each face size must be 1..{frames.FRAME_H} px: {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=MODELS)
    p.add_argument(
        "--split", choices=("test", "val"), default="test", help="test = PrivateTest, val = PublicTest"
    )
    p.add_argument("--write", action="store_true", help="write metrics into emotion.json and confusion.png")
    p.add_argument("--no-peer", action="store_true", help="skip the fer peer")
    p.add_argument("--no-video", action="store_true", help="skip the runtime-crop and VP8 evaluations")
    p.add_argument("--no-vp8", action="store_true", help="skip the VP8 evaluation (keep the runtime crop)")
    p.add_argument(
        "--face-px",
        type=face_sizes,
        default=(frames.FACE_PX,),
        help="the pasted faces' sizes in px for the runtime crop and VP8, comma-separated (pooled)",
    )
    p.add_argument("--faces", type=int, default=None, help="only the first N faces (a quick look)")
    args = p.parse_args(argv)
    card_path = args.models / export.CARD_FILE
    card = json.loads(card_path.read_text())
    test = ferdata.load_split(args.split)
    if args.faces:
        test = ferdata.subset(test, np.arange(len(test.images)) < args.faces)
    name = {"test": "FER2013 PrivateTest", "val": "FER2013 PublicTest"}[args.split]
    metrics: dict[str, object] = {"split": name}

    models = Models(args.models / card["file"], not args.no_peer)
    int8 = models.int8.predict(test.images, ours_prep)
    results = {"int8": scores(int8, test)}
    float_file = args.models / export.FLOAT_FILE
    if float_file.exists():
        fl = TfliteClassifier(float_file).predict(test.images, ours_prep)
        results["float"] = scores(fl, test)
        agreement = float((fl.argmax(axis=1) == int8.argmax(axis=1)).mean())
        metrics["int8_float_agreement"] = round(agreement, 4)
        print(f"int8 and float agree on {agreement:.4f} of {len(test.images)} {name} images")
    if models.peer:
        results["fer peer"] = scores(
            peer.to_our_labels(models.peer.predict(test.images, peer.preprocess)), test
        )
    print(f"## Clean, direct feed ({name})\n{table(results)}")
    metrics.update({k.replace(" ", "_"): v for k, v in results.items()})

    if args.split == "test":
        copies = training_copies(test.images)
        unique = ferdata.subset(test, ~copies)
        dedup = models.scores(unique.images, unique)
        print(f"## Without the {copies.sum()} exact copies of Training images")
        print(per_class_table({"clean": dedup}))
        metrics["deduplicated"] = {"copies_removed": int(copies.sum()), **dedup}

    per_condition = corruption_results(models, test)
    totals = {m: summary(per_condition, m) for m in next(iter(per_condition.values()))}
    print(f"## Corrupted, direct feed\n{per_class_table(per_condition)}")
    for m, t in totals.items():
        print(
            f"{m}: mean accuracy {t['mean_accuracy']:.4f}, lowest {t['lowest_accuracy']:.4f}, "
            f"mean of mean recall 7 {t['mean_of_mean_recall_7']:.4f}"
        )
    metrics["corruptions"] = {"summary": totals, **per_condition}

    if not args.no_video:
        px, runtime_card = ",".join(map(str, args.face_px)), load_card(card_path)
        for key, vp8 in [("runtime_crop", False)] + ([] if args.no_vp8 else [("vp8", True)]):
            r = video_results(
                models, test, runtime_card, args.face_px, vp8=vp8, deduplicate=args.split == "test"
            )
            what = f"VP8 at {frames.bitrate() // 1000} kbit/s, " if vp8 else ""
            print(
                f"## {what}640x480 frame, faces of {px} px, Haar + crop_face: "
                f"faces found {r['found']:.4f} of {r['faces']}"
            )
            print(per_class_table(crop_table(r)))
            if "deduplicated" in r:
                rows = crop_table(r["deduplicated"])  # type: ignore[arg-type]
                print(f"## The same, without the copies of Training images\n{per_class_table(rows)}")
            metrics[key] = r
        if not args.no_vp8:
            metrics["vp8"]["bitrate"] = frames.bitrate()  # type: ignore[index]
    if args.write:
        card["metrics"] = metrics
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        plot_confusion(confusion(int8, test), args.models / "confusion.png")
        print(f"wrote {card_path} and {args.models / 'confusion.png'}")


if __name__ == "__main__":
    main()
