"""Train the expression CNN on FERPlus vote distributions (CPU, TensorFlow/Keras).

    python -m quantize.train --out runs/main --epochs 40
    python -m quantize.train --out runs/ft --epochs 8 --lr 1e-3 --init models/edgetpu/emotion_float16.tflite
    python -m quantize.train --out runs/rc ... --runtime-share 0.5   # also faces cut as the unit cuts them

Resumes from ``OUT/backup`` if interrupted (run the same command again). Per-epoch log in
``OUT/history.csv``, curves in ``OUT/curves.png``, best weights (selected on PublicTest only)
in ``OUT/best.weights.h5``, each epoch's in ``OUT/epochN.weights.h5``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from quantize import frames  # isort: skip  (aiortc before TensorFlow, see quantize.frames)
import keras
import tensorflow as tf

from appliance.vision.card import load_card
from quantize import augment, corrupt, ferdata, model, warmstart

log = logging.getLogger(__name__)

SEED = 1234


def class_weights(targets: np.ndarray, power: float, boost: dict[str, float] | None = None) -> np.ndarray:
    """Per-class weight (n_c / mean n)^-power from the soft target mass, times ``boost`` of the
    named classes, normalised to a mean of 1 per image, capped at 10."""
    mass = targets.sum(axis=0) + 1.0
    w = (mass / mass.mean()) ** -power
    for name, factor in (boost or {}).items():
        w[ferdata.LABELS.index(name)] *= factor
    return np.minimum(w / (w * mass).sum() * mass.sum(), 10.0).astype(np.float32)


def parse_boost(text: str) -> tuple[str, float]:
    """``fear=1.5`` -> ("fear", 1.5), for ``--boost``."""
    name, _, factor = text.partition("=")
    try:
        value = float(factor)
    except ValueError:
        value = math.nan
    if name not in ferdata.LABELS or not 0 < value < math.inf:
        names = ", ".join(ferdata.LABELS)
        raise argparse.ArgumentTypeError(
            f"expected CLASS=FACTOR with CLASS one of {names} and FACTOR a number above 0"
        )
    return name, value


def runtime_cuts(split: ferdata.Split, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """``frames.training_cuts`` of the training faces with the shipped card's crop margin, and which
    were found; cached in ``out`` (4 minutes on one core here)."""
    path, card = out / "runtime_cuts.npz", load_card()
    if path.exists() and float((cached := np.load(path))["margin"]) == card.margin:
        return cached["crops"], cached["found"]
    crops, found = frames.training_cuts(split.images, card, SEED)
    log.info("runtime cuts: the detector found %.1f%% of the training faces", 100 * found.mean())
    np.savez_compressed(path, crops=crops, found=found, margin=card.margin)
    return crops, found


def training_set(
    split: ferdata.Split,
    batch: int,
    power: float,
    limit: int | None,
    strength: tf.Variable,
    paired: bool = False,
    degraded_power: float | None = None,
    cuts: tuple[np.ndarray, np.ndarray] | None = None,
    runtime_share: float = 0.0,
    boost: dict[str, float] | None = None,
) -> tf.data.Dataset:
    """Shuffled batches of (augmented face, vote distribution, weight); ``strength`` scales the conditions.

    ``paired``: each face twice, ((camera geometry only, the same with the unit's conditions), ...).
    ``degraded_power``: the class weight exponent for the faces that got a condition (default
    ``power``). A degraded face carries less evidence, so the network falls back on the class
    prior, which is mostly neutral; a flatter prior there keeps the rare expressions heard
    without moving the clean faces' decisions.
    ``cuts``: (``runtime_cuts``' crops, found) of ``split``; each epoch, ``runtime_share`` of the
    found faces are seen through their runtime cut instead of the FER2013 crop.
    ``boost``: class weight multipliers by label (both exponents).
    """
    targets, usable = ferdata.soft_targets(split.votes)
    rows = np.flatnonzero(usable)[:limit]
    x, y = split.images[rows][..., None].astype(np.float32), targets[rows]
    bad_power = power if degraded_power is None else degraded_power
    clean_w, bad_w = class_weights(y, power, boost), class_weights(y, bad_power, boost)
    w = np.stack([y @ clean_w, y @ bad_w], axis=1)
    log.info("training on %d images, class weights %s", len(x), np.round(clean_w, 2))
    log.info("class weights on degraded faces %s", np.round(bad_w, 2))
    geometry = augment.geometry(SEED)
    # Faces with their cuts only when asked: the cuts double the faces' memory.
    faces = (x, cuts[0][rows][..., None].astype(np.float32), cuts[1][rows]) if cuts else x
    ds = tf.data.Dataset.from_tensor_slices((faces, y, w)).shuffle(
        len(x), seed=SEED, reshuffle_each_iteration=True
    )
    ds = ds.batch(batch, drop_remainder=bool(not limit))

    def views(
        a: tf.Tensor | tuple[tf.Tensor, tf.Tensor, tf.Tensor], b: tf.Tensor, c: tf.Tensor
    ) -> tuple[tf.Tensor | tuple[tf.Tensor, tf.Tensor], ...]:
        if isinstance(a, tuple):
            a, cut, has_cut = a
            use_cut = has_cut & (tf.random.uniform(tf.shape(has_cut)) < runtime_share)
            a = tf.where(use_cut[:, None, None, None], cut, a)
        seen = tf.clip_by_value(geometry(a, training=True), 0.0, 255.0)
        degraded, applied = augment.conditions(seen, strength)
        weight = tf.where(applied, c[:, 1], c[:, 0])
        return ((tf.round(seen), degraded) if paired else degraded), b, weight

    return ds.map(views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def paired_model(net: keras.Model) -> keras.Model:
    """``net`` on a face and on its degraded copy, the two outputs side by side (for ``Consistency``)."""
    seen, degraded = keras.Input(net.input_shape[1:]), keras.Input(net.input_shape[1:])
    return keras.Model([seen, degraded], keras.layers.Concatenate()([net(seen), net(degraded)]))


class Consistency(keras.losses.Loss):
    """Cross-entropy on both views plus ``weight`` x their Jensen-Shannon divergence (AugMix's loss):
    the degraded face must get the answer the clean one gets, not only the label."""

    def __init__(self, weight: float) -> None:
        super().__init__(name="consistency")
        self.weight = weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        p, q = tf.split(tf.clip_by_value(y_pred, 1e-7, 1.0), 2, axis=-1)
        m = (p + q) / 2
        ce = -tf.reduce_sum(y_true * (tf.math.log(p) + tf.math.log(q)), axis=-1) / 2
        js = tf.reduce_sum(p * tf.math.log(p / m) + q * tf.math.log(q / m), axis=-1) / 2
        return ce + self.weight * js


def majority_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and the mean recall of the seven classes other than contempt, on majority labels."""
    keep = labels >= 0
    pred, lab = probs[keep].argmax(axis=1), labels[keep]
    recalls = [
        float((pred[lab == c] == c).mean())
        for c in range(model.NUM_CLASSES)
        if c != ferdata.CONTEMPT and (lab == c).any()
    ]
    return {
        "acc": float((pred == lab).mean()),
        "mean_recall7": float(np.mean(recalls)),
        "min_recall7": float(np.min(recalls)),
    }


def condition_scores(
    clean: np.ndarray, labels: np.ndarray, corrupted: list[np.ndarray], corrupt_labels: np.ndarray
) -> dict[str, float]:
    """``majority_scores`` on the clean outputs, plus the mean, lowest and mean recall over ``corrupted``."""
    bad = [majority_scores(p, corrupt_labels) for p in corrupted]
    return {
        **majority_scores(clean, labels),
        "corrupt_acc": float(np.mean([b["acc"] for b in bad])),
        "corrupt_min_acc": float(np.min([b["acc"] for b in bad])),
        "corrupt_mean_recall7": float(np.mean([b["mean_recall7"] for b in bad])),
    }


def selection_score(scores: dict[str, float]) -> float:
    """Accuracy alone rewards calling everything neutral; weigh the rare classes in, clean and corrupted."""
    return scores["acc"] + scores["mean_recall7"] + scores["corrupt_acc"] + scores["corrupt_mean_recall7"]


def probabilities(averaged: keras.Model, x: np.ndarray) -> np.ndarray:
    """``averaged`` (``model.views_averaged`` of a network, built once: each new wrapper is traced
    again by ``predict``) on a batch of faces."""
    return np.asarray(averaged.predict(x, batch_size=256, verbose=0))


class Selector(keras.callbacks.Callback):
    """Scores PublicTest each epoch, clean and corrupted, keeps the best weights and the history.

    The corrupted score is the mean over ``quantize.corrupt``'s ten corruptions of the first
    ``corrupt_faces`` PublicTest faces. The state survives a resume.
    """

    def __init__(self, out: Path, val: ferdata.Split, corrupt_faces: int, net: keras.Model) -> None:
        super().__init__()
        self.net = net  # the model trained may be a wrapper around it (``paired_model``)
        self.averaged = model.views_averaged(net)  # scored as the exported file answers
        self.out, self.x = out, val.images[..., None].astype(np.float32)
        self.labels = ferdata.majority_labels(val.votes)
        few = val.images[:corrupt_faces]
        self.corrupted = [v[..., None].astype(np.float32) for v in corrupt.corrupted(few).values()]
        self.corrupt_labels = self.labels[:corrupt_faces]
        self.state_path = out / "selector.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"best": -1.0}

    def scores(self) -> dict[str, float]:
        clean = probabilities(self.averaged, self.x)
        bad = [probabilities(self.averaged, x) for x in self.corrupted]
        return condition_scores(clean, self.labels, bad, self.corrupt_labels)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        scores = self.scores()
        score = selection_score(scores)
        row = {
            "epoch": epoch + 1,
            "loss": (logs or {}).get("loss", math.nan),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            **scores,
        }
        new = not (self.out / "history.csv").exists()
        with open(self.out / "history.csv", "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        # Every epoch's weights too: the shipped file's offsets (quantize.export) can move the choice.
        weights = self.out / f"epoch{epoch + 1}.weights.h5"
        self.net.save_weights(weights)
        if score > self.state["best"]:
            shutil.copyfile(weights, self.out / "best.weights.h5")
            self.state = {"best": score, "epoch": epoch + 1, **scores}
            self.state_path.write_text(json.dumps(self.state, indent=1))
        print(
            f"epoch {epoch + 1}: val acc {scores['acc']:.4f} mean recall7 {scores['mean_recall7']:.4f} "
            f"min recall7 {scores['min_recall7']:.4f}; corrupted acc {scores['corrupt_acc']:.4f} "
            f"(lowest {scores['corrupt_min_acc']:.4f}) mean recall7 {scores['corrupt_mean_recall7']:.4f} "
            f"(best epoch {self.state['epoch']})",
            flush=True,
        )


def plot_curves(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [float(r["loss"]) for r in rows])
    a.set(title="training loss (weighted soft cross-entropy)", xlabel="epoch")
    for key in ("acc", "mean_recall7", "min_recall7", "corrupt_acc", "corrupt_mean_recall7"):
        b.plot(ep, [float(r[key]) for r in rows], label=key)
    b.set(title="PublicTest (FERPlus majority; corrupt_ = mean of 10 corruptions)", xlabel="epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/main"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-power", type=float, default=0.5, help="class weight exponent (0 = none)")
    p.add_argument(
        "--degraded-weight-power",
        type=float,
        default=None,
        help="class weight exponent on the faces that got a condition (default: --weight-power)",
    )
    p.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke test)")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these weights: .weights.h5, or a shipped float .tflite",
    )
    p.add_argument(
        "--ramp", type=int, default=3, help="epochs over which the image conditions reach full strength"
    )
    p.add_argument(
        "--select-faces", type=int, default=1000, help="PublicTest faces in the corrupted selection score"
    )
    p.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="train on each face and its degraded copy, with this weight on their divergence (0: off)",
    )
    p.add_argument(
        "--runtime-share",
        type=float,
        default=0.0,
        help="share of the faces seen as the runtime's detector and crop cut them (0: none)",
    )
    p.add_argument(
        "--boost",
        type=parse_boost,
        action="append",
        default=[],
        metavar="CLASS=FACTOR",
        help="multiply one class's weight (repeatable), e.g. fear=1.5",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    keras.utils.set_random_seed(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    strength = tf.Variable(0.0, trainable=False, dtype=tf.float32)
    train_split = ferdata.load_split("train")
    paired = args.consistency > 0
    cuts = runtime_cuts(train_split, args.out) if args.runtime_share > 0 else None
    train = training_set(
        train_split,
        args.batch,
        args.weight_power,
        args.limit,
        strength,
        paired,
        args.degraded_weight_power,
        cuts,
        args.runtime_share,
        dict(args.boost),
    )
    val = ferdata.load_split("val")
    if args.limit:
        val = ferdata.subset(val, np.arange(len(val.images)) < args.limit)
    net = model.build()
    if args.init and args.init.suffix == ".tflite":
        warmstart.load(net, args.init, warmstart.statistics_faces(train_split.images, SEED))
    elif args.init:
        net.load_weights(args.init)
    steps = int(train.cardinality()) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=args.lr, warmup_steps=max(1, steps // 30)
    )
    trained = paired_model(net) if paired else net
    trained.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss=Consistency(args.consistency) if paired else keras.losses.CategoricalCrossentropy(),
    )
    trained.fit(
        train,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(args.out / "backup")),
            augment.Strength(strength, args.ramp),
            Selector(args.out, val, args.select_faces, net),
        ],
    )
    plot_curves(args.out)


if __name__ == "__main__":
    main()
