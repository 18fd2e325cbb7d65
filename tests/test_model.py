"""The shipped expression model: accuracy against its card, int8 vs float, Edge TPU readiness, pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.vision.card import load_card
from quantize import corrupt, edgetpu_check, evaluate, export, ferdata, frames, sweep
from quantize.tflite_run import TfliteClassifier, ours_prep

from .conftest import FER, ROOT, need

MODELS = ROOT / "models" / "edgetpu"
CARD = json.loads((MODELS / "emotion.json").read_text())


@pytest.fixture(scope="module")
def test_split() -> ferdata.Split:
    need(FER / "test.npz")
    return ferdata.load_split("test")


@pytest.fixture(scope="module")
def int8_probs(test_split: ferdata.Split) -> np.ndarray:
    return TfliteClassifier(MODELS / CARD["file"]).predict(test_split.images, ours_prep)


def test_card_describes_the_shipped_file() -> None:
    assert CARD["labels"] == list(ferdata.LABELS)
    assert CARD["input"] == {**CARD["input"], "height": 48, "width": 48, "channels": 1}
    for name in (CARD["file"], export.FLOAT_FILE):
        assert export.sha256(MODELS / name) == CARD["sha256"][name]
    assert (MODELS / CARD["file"]).stat().st_size <= 4 * 1024 * 1024  # the Edge TPU's on-chip memory


def test_int8_accuracy_holds_the_card_figure(test_split: ferdata.Split, int8_probs: np.ndarray) -> None:
    measured = evaluate.scores(int8_probs, test_split)
    card = CARD["metrics"]["int8"]
    assert measured["ferplus_images"] == 3137
    assert measured["ferplus_majority_accuracy"] >= card["ferplus_majority_accuracy"] - 0.005
    assert measured["mean_recall_7"] >= card["mean_recall_7"] - 0.005


# The corruption suite on the first CORRUPT_FACES PrivateTest faces (about 350 with a majority label).
# Measured with the shipped file: mean accuracy 0.8518, lowest 0.8324, mean recall 0.813 (the
# model card has all 3,137); the floors sit 2 points under (the previous file: 0.8465, 0.8147, 0.8127).
CORRUPT_FACES = 400
CORRUPT_MEAN_ACCURACY, CORRUPT_LOWEST_ACCURACY, CORRUPT_MEAN_RECALL = 0.83, 0.81, 0.79


def test_corruptions_hold_their_floor(test_split: ferdata.Split) -> None:
    """Noise, JPEG, low resolution, blur, low contrast, gamma, equalisation, rotation, zoom."""
    few = ferdata.subset(test_split, np.arange(len(test_split.images)) < CORRUPT_FACES)
    clf = TfliteClassifier(MODELS / CARD["file"])
    per = {
        name: {"int8": evaluate.scores(clf.predict(images, ours_prep), few)}
        for name, images in corrupt.corrupted(few.images).items()
    }
    measured = evaluate.summary(per, "int8")
    print(measured)
    assert measured["mean_accuracy"] >= CORRUPT_MEAN_ACCURACY
    assert measured["lowest_accuracy"] >= CORRUPT_LOWEST_ACCURACY
    assert measured["mean_of_mean_recall_7"] >= CORRUPT_MEAN_RECALL


# The first RUNTIME_FACES PrivateTest faces (340 with a majority label) through the unit's own path:
# measured with the shipped file, the detector finds 248 (73 %, the card 74.5 % of all 3,137), read
# 88.3 % through the runtime crop (the card's two cuts averaged) against 87.9 % fed directly.
RUNTIME_FACES, RUNTIME_FOUND = 400, 0.65


def test_the_units_detector_and_crop_hold_the_direct_feed_accuracy(test_split: ferdata.Split) -> None:
    """Issue 14's target: through the runtime's detector and crop no more than 2 points below direct feed."""
    few = ferdata.subset(test_split, np.arange(len(test_split.images)) < RUNTIME_FACES)
    crops, seen = evaluate.runtime_faces(few, load_card(MODELS / export.CARD_FILE))
    assert (ferdata.majority_labels(seen.votes) >= 0).all()  # only faces the crowd labelled are scored
    assert len(crops) >= RUNTIME_FOUND * len(ferdata.labelled(few).images)
    clf = TfliteClassifier(MODELS / CARD["file"])
    assert crops.shape[1:] == (2, 48, 48)  # the card's two cuts of each face
    cut = evaluate.scores(evaluate.cut_mean(clf, crops, ours_prep), seen)
    direct = evaluate.scores(clf.predict(seen.images, ours_prep), seen)
    assert cut["ferplus_majority_accuracy"] >= direct["ferplus_majority_accuracy"] - 0.02


def test_the_runtime_crop_is_also_reported_without_the_training_copies(test_split: ferdata.Split) -> None:
    """``quantize.evaluate`` on PrivateTest: the crop's figures again without the faces trained on."""
    few = ferdata.subset(test_split, np.arange(len(test_split.images)) < RUNTIME_FACES)
    models = evaluate.Models(MODELS / CARD["file"], with_peer=False)
    crops, seen = evaluate.runtime_faces(few, load_card(MODELS / export.CARD_FILE))
    r = evaluate.crop_against_direct(models, crops, seen, deduplicate=True)
    unique = ~evaluate.training_copies(seen.images)
    assert 0 < unique.sum() < len(seen.images)  # these faces hold copies of Training images
    kept = ferdata.subset(seen, unique)
    dedup = r["deduplicated"]
    for scored, expected in (
        (dedup["runtime_crop"]["int8"], models.scores(crops[unique], kept)["int8"]),  # type: ignore[index]
        (dedup["direct_feed_same_faces"], models.scores(kept.images, kept)["int8"]),  # type: ignore[index]
    ):
        for key in ("ferplus_majority_accuracy", "ferplus_images"):  # recalls: NaN for a class these lack
            assert scored[key] == expected[key]  # type: ignore[index]
    assert r["runtime_crop"]["int8"]["ferplus_images"] == len(seen.images)  # type: ignore[index]


def test_the_margin_calibration_reproduces_the_shipped_crop() -> None:
    """``quantize.export`` calibrates the card's margin on the first 1,000 PublicTest faces."""
    need(FER / "val.npz")
    margin, found = frames.calibrate_margin(ferdata.load_split("val").images[:1000])
    assert margin == CARD["crop"]["margin"]
    assert 0.65 < found < 0.85  # the frontal cascade misses turned and cut-off faces
    assert frames.margin_for([100.0, 104.0, 110.0], 104) == 0.0  # the median box is the face


def test_the_runtime_crop_places_each_face_once_at_every_size(test_split: ferdata.Split) -> None:
    """``quantize.evaluate --face-px``: the faces at each size in turn, each scored against its own votes."""
    few = ferdata.subset(test_split, np.arange(len(test_split.images)) < 60)
    card = load_card(MODELS / export.CARD_FILE)
    small, small_seen = evaluate.runtime_faces(few, card, sizes=(120,))
    large, large_seen = evaluate.runtime_faces(few, card, sizes=(280,))
    both, both_seen = evaluate.runtime_faces(few, card, sizes=(120, 280))
    # Haar finds fewer of the small faces (23 against 33 of these 51): the sizes are honoured.
    assert 0 < len(small) < len(large)
    assert np.array_equal(both, np.concatenate([small, large]))
    assert np.array_equal(both_seen.votes, np.concatenate([small_seen.votes, large_seen.votes]))


@pytest.mark.parametrize("sizes", ["200,x", "0", "200,481", ""])
def test_evaluate_refuses_face_sizes_it_cannot_place(sizes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--face-px", sizes])
    assert stop.value.code == 2
    assert "--face-px" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--run", "runs/x", "--base", "b.tflite", "--alphas", "0,x"], "--alphas"),
        (["--run", "runs/x", "--base", "b.tflite", "--alphas", "0,1.5"], "--alphas"),
        (["--run", "runs/x", "--base", "b.tflite", "--alphas", "nan"], "--alphas"),
    ],
)
def test_sweep_refuses_shares_outside_0_to_1(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad share stops the sweep before it loads any data, not after the first share's minutes."""
    with pytest.raises(SystemExit) as stop:
        sweep.main(argv)
    assert stop.value.code == 2
    assert flag in capsys.readouterr().err


def test_export_refuses_a_share_outside_0_to_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        export.main(["--run", "runs/x", "--base", "b.tflite", "--alpha", "-0.2"])
    assert stop.value.code == 2
    assert "--alpha" in capsys.readouterr().err


def test_int8_agrees_with_float(test_split: ferdata.Split, int8_probs: np.ndarray) -> None:
    # Both cores: the float file is the slowest to run over the whole split.
    fl = TfliteClassifier(MODELS / export.FLOAT_FILE, threads=2).predict(test_split.images, ours_prep)
    assert (fl.argmax(axis=1) == int8_probs.argmax(axis=1)).mean() >= 0.97


def test_shipped_model_answers_the_same_for_a_face_and_its_mirror(test_split: ferdata.Split) -> None:
    """The exported model averages itself over the face and its mirror, so both give one answer."""
    faces = test_split.images[:200]
    clf = TfliteClassifier(MODELS / CARD["file"])
    straight, mirrored = clf.predict(faces, ours_prep), clf.predict(faces[:, :, ::-1], ours_prep)
    # Only int8 rounding of the mirror view separates them; a model without it differs by up to 0.67.
    assert np.abs(straight - mirrored).max() <= 0.06
    assert (straight.argmax(axis=1) == mirrored.argmax(axis=1)).mean() >= 0.97


def test_the_exported_graph_averages_the_face_its_mirror_and_their_blurred_and_zoomed_copies() -> None:
    pytest.importorskip("tensorflow", reason="building models needs the [train] extra")
    from quantize import model

    net = model.build(batch_size=1, stages=((4,), (8,)))
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    kernel = model.blur_kernel(0.8)

    def blurred(x: np.ndarray) -> np.ndarray:  # zero padding, divided by the kernel's weight inside
        inside = cv2.filter2D(np.ones((48, 48), np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        return np.stack(
            [cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_CONSTANT) / inside for f in x[..., 0]]
        )[..., None]

    mirrored = faces[:, :, ::-1]
    views = [
        net.predict(f, batch_size=1, verbose=0) for f in (faces, mirrored, blurred(faces), blurred(mirrored))
    ]
    averaged = model.views_averaged(net, 0.8).predict(faces, batch_size=1, verbose=0)
    np.testing.assert_allclose(averaged, sum(views) / 4, atol=1e-5)
    mirror_only = model.views_averaged(net, 0.0).predict(faces, batch_size=1, verbose=0)
    np.testing.assert_allclose(mirror_only, (views[0] + views[1]) / 2, atol=1e-5)

    def zoomed(x: np.ndarray) -> np.ndarray:  # 44x44 centre back to 48x48, pixel centres aligned
        return np.stack(
            [cv2.resize(f[2:46, 2:46], (48, 48), interpolation=cv2.INTER_LINEAR) for f in x[..., 0]]
        )[..., None]

    zooms = [net.predict(zoomed(f), batch_size=1, verbose=0) for f in (faces, mirrored)]
    with_zoom = model.views_averaged(net, 0.0, zoom=2).predict(faces, batch_size=1, verbose=0)
    np.testing.assert_allclose(with_zoom, (views[0] + views[1] + sum(zooms)) / 4, atol=1e-4)


def test_warm_start_reproduces_the_shipped_float_model(test_split: ferdata.Split) -> None:
    """``train --init emotion_float16.tflite`` starts from the network the file computes."""
    pytest.importorskip("tensorflow", reason="building models needs the [train] extra")
    from quantize import model, warmstart

    faces = test_split.images[:300, :, :, None].astype(np.float32)
    net = model.build()
    warmstart.load(net, MODELS / export.FLOAT_FILE, faces)
    # float16 rounding in the file; a wrong kernel layout, offset or batch norm differs by > 0.1.
    assert warmstart.check(net, MODELS / export.FLOAT_FILE, faces[:100]) <= 0.01


def test_interpolation_runs_from_the_base_file_to_the_fine_tuned_network(test_split: ferdata.Split) -> None:
    """``export --base F --alpha A``: A = 0 is the network in F, A = 1 the run's, between is neither."""
    pytest.importorskip("tensorflow", reason="building models needs the [train] extra")
    from quantize import model, warmstart

    faces = test_split.images[:100, :, :, None].astype(np.float32)
    net = model.build()  # its random initial weights stand in for a fine-tuned run's
    run = net.get_weights()
    base = export.base_weights(MODELS / export.FLOAT_FILE, test_split.images)
    outputs = {}
    for alpha in (0.0, 0.5, 1.0):
        net.set_weights(export.interpolate(run, base, alpha))
        outputs[alpha] = net.predict(faces, verbose=0)
        if alpha == 0.0:
            assert warmstart.check(net, MODELS / export.FLOAT_FILE, faces) <= 0.01
    net.set_weights(run)
    np.testing.assert_allclose(outputs[1.0], net.predict(faces, verbose=0), atol=1e-6)
    assert np.abs(outputs[0.5] - outputs[0.0]).max() > 0.05
    assert np.abs(outputs[0.5] - outputs[1.0]).max() > 0.05


def test_several_runs_export_the_average_of_their_weights(tmp_path: Path) -> None:
    """``export --run A B``: a uniform soup; a folder stands for its best.weights.h5."""
    pytest.importorskip("tensorflow", reason="building models needs the [train] extra")
    from quantize import model

    small = ((4,), (8,))
    first, second = model.build(stages=small), model.build(stages=small)  # two random initialisations
    (tmp_path / "a").mkdir()
    first.save_weights(tmp_path / "a" / "best.weights.h5")
    second.save_weights(tmp_path / "b.weights.h5")
    soup = export.run_weights(model.build(stages=small), [tmp_path / "a", tmp_path / "b.weights.h5"])
    pairs = list(zip(first.get_weights(), second.get_weights(), strict=True))
    assert any(not np.allclose(a, b) for a, b in pairs)
    for got, (a, b) in zip(soup, pairs, strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)


def test_readiness_check_passes_the_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert edgetpu_check.main([str(MODELS / CARD["file"])]) == 0
    out = capsys.readouterr().out
    assert "every op maps to the Edge TPU" in out
    assert "FAIL" not in out


def _tiny_model(tmp_path: Path, activation: str, quantise: bool) -> Path:
    tf = pytest.importorskip("tensorflow", reason="building test models needs the [train] extra")
    import keras

    inp = keras.Input((8, 8, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, activation=activation)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    if quantise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [np.random.rand(1, 8, 8, 1).astype(np.float32)] for _ in range(8)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / f"{activation}_{quantise}.tflite"
    path.write_bytes(converter.convert())
    return path


def test_readiness_check_rejects_an_unsupported_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tiny_model(tmp_path, "elu", quantise=True)
    assert edgetpu_check.main([str(path), "--quiet"]) == 1
    assert "ELU" in capsys.readouterr().out


def test_readiness_check_rejects_float_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _tiny_model(tmp_path, "relu", quantise=False)
    assert edgetpu_check.main([str(path), "--quiet"]) == 1
    assert "not quantised to 8 bits" in capsys.readouterr().out


def test_readiness_check_on_a_file_that_is_not_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    assert edgetpu_check.main([str(junk)]) == 2
    assert "is not a TensorFlow Lite model" in capsys.readouterr().err


@pytest.mark.train
def test_consistency_training_saves_the_network_inside_the_pair(tmp_path: Path) -> None:
    """``--consistency``: each face and its degraded copy go through one network; that network is
    what the selector scores and saves, so the export loads it like any other run's."""
    pytest.importorskip("tensorflow", reason="training needs the [train] extra")
    need(FER / "train.npz")
    from quantize import model, train

    run = tmp_path / "run"
    train.main(["--out", str(run), "--epochs", "1", "--limit", "128", "--consistency", "2"])
    assert (run / "history.csv").read_text().count("\n") == 2
    model.build().load_weights(run / "best.weights.h5")


@pytest.mark.train
def test_degraded_faces_take_their_own_class_weights() -> None:
    """``--degraded-weight-power``: a face that got one of the unit's conditions is weighted by the
    degraded class weights, an untouched face by the clean ones."""
    tf = pytest.importorskip("tensorflow", reason="training needs the [train] extra")
    need(FER / "train.npz")
    from quantize import train

    split = ferdata.load_split("train")
    strength = tf.Variable(0.0)
    ds = train.training_set(split, 512, 0.5, 512, strength, degraded_power=1.0)

    def shares() -> tuple[float, float]:
        _, y, w = next(iter(ds))
        y, w = y.numpy(), w.numpy()
        clean, bad = y @ train.class_weights(y, 0.5), y @ train.class_weights(y, 1.0)
        # The two weights differ by class mix; compare only where they are apart.
        apart = np.abs(clean - bad) > 0.05
        assert (np.isclose(w, clean, atol=1e-4) | np.isclose(w, bad, atol=1e-4)).all()
        return float(np.isclose(w, bad, atol=1e-4)[apart].mean()), float(apart.mean())

    assert shares()[0] == 0.0  # strength 0: no conditions, every face clean
    strength.assign(1.0)
    degraded, apart = shares()
    assert apart > 0.5
    # P_CORRUPTED of the faces are picked, and most of those get at least one condition.
    assert 0.5 < degraded < 0.75


@pytest.mark.train
def test_boost_multiplies_one_class_weight_and_keeps_the_mean_weight(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--boost fear=2``: fear's weight doubles against the others', a face still weighs 1 on
    average; a class that does not exist is refused by name."""
    pytest.importorskip("tensorflow", reason="training needs the [train] extra")
    from quantize import train

    y = np.eye(len(ferdata.LABELS), dtype=np.float32)[np.arange(400) % len(ferdata.LABELS)]
    plain, boosted = train.class_weights(y, 0.5), train.class_weights(y, 0.5, {"fear": 2.0})
    fear = ferdata.LABELS.index("fear")
    ratio = boosted / plain
    assert ratio[fear] == pytest.approx(2 * ratio[0])
    assert np.allclose(np.delete(ratio, fear), ratio[0])
    assert (y @ boosted).mean() == pytest.approx(1.0)
    for wrong in ("fearful=2", "fear=0", "fear=-1", "fear=nan", "fear="):
        with pytest.raises(SystemExit):
            train.main(["--boost", wrong])
        assert "CLASS one of neutral" in capsys.readouterr().err


def test_training_faces_are_cut_as_the_unit_cuts_them() -> None:
    """``frames.training_cuts``: faces pasted into frames, found by the runtime's Haar detector and
    cropped with the card's margin, come back as 48x48 crops of the same faces."""
    need(FER / "train.npz")
    from appliance.vision.card import load_card
    from quantize import frames

    faces = ferdata.load_split("train").images[:40]
    crops, found = frames.training_cuts(faces, load_card(), seed=0)
    assert crops.shape == (40, 48, 48) and crops.dtype == np.uint8
    assert 0.5 < found.mean() < 1.0  # the detector misses some, as on the test faces (75 %)
    same = [
        np.corrcoef(c.ravel(), f.ravel())[0, 1] for c, f, ok in zip(crops, faces, found, strict=True) if ok
    ]
    assert np.median(same) > 0.5
    assert not crops[~found].any()


@pytest.mark.train
def test_runtime_share_sets_how_many_faces_are_seen_through_their_cut() -> None:
    """``--runtime-share``: that share of the faces with a cut is seen through it. The cuts here are
    blank, so a face seen through its cut comes out of the camera geometry as one flat grey level."""
    tf = pytest.importorskip("tensorflow", reason="training needs the [train] extra")
    need(FER / "train.npz")
    from quantize import train

    split = ferdata.subset(ferdata.load_split("train"), np.arange(2000))
    cuts = (np.zeros_like(split.images), np.ones(len(split.images), bool))

    def flat_share(share: float) -> float:
        ds = train.training_set(split, 512, 0.5, 512, tf.Variable(0.0), cuts=cuts, runtime_share=share)
        faces = next(iter(ds))[0].numpy()
        return float((faces.std(axis=(1, 2, 3)) == 0).mean())

    assert flat_share(0.0) == 0.0
    assert flat_share(1.0) == 1.0
    assert 0.35 < flat_share(0.5) < 0.65


def test_offsets_can_hold_a_floor_on_the_corrupted_recall() -> None:
    """``--corrupt-recall``: a network that calls degraded faces neutral gets offsets that bring the
    corrupted faces' mean recall up to the floor."""
    pytest.importorskip("tensorflow", reason="quantize.train needs the [train] extra")
    from quantize import train

    rng = np.random.default_rng(0)
    n = 3000
    labels = rng.choice(7, n, p=[0.35, 0.25, 0.12, 0.12, 0.09, 0.03, 0.04])

    def probs(evidence: float) -> np.ndarray:
        logits = rng.normal(0, 1, (n, 8)) + evidence * np.eye(8)[labels]
        logits[:, 0] += 1.5 - evidence / 2  # the less evidence, the more "neutral"
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    clean, bad = probs(4.0), [probs(1.5) for _ in range(2)]

    def bad_recall(offsets: np.ndarray) -> float:
        logs = [np.log(b) + offsets for b in bad]
        return float(np.mean([train.majority_scores(x, labels)["mean_recall7"] for x in logs]))

    plain = export.calibrate_offsets(clean, labels, bad, labels)
    floored = export.calibrate_offsets(clean, labels, bad, labels, corrupt_recall=bad_recall(plain) + 0.05)
    # A coarse grid: close to the floor, not necessarily on it.
    assert bad_recall(floored) > bad_recall(plain) + 0.04


@pytest.mark.train
def test_smoke_training_through_quantisation_and_readiness(tmp_path: Path) -> None:
    """A few hundred images, one epoch: the real pipeline end to end, so it cannot rot."""
    pytest.importorskip("tensorflow", reason="training needs the [train] extra")
    need(FER / "train.npz")
    from quantize import train

    run, out = tmp_path / "run", tmp_path / "model"
    train.main(["--out", str(run), "--epochs", "1", "--limit", "300"])
    assert (run / "curves.png").stat().st_size > 0
    assert (run / "history.csv").read_text().count("\n") == 2
    assert (run / "epoch1.weights.h5").stat().st_size > 0
    export.main(
        [
            "--run",
            str(run),
            "--out",
            str(out),
            "--representative",
            "50",
            "--margin-faces",
            "100",
            "--corrupt-faces",
            "100",
            "--val-faces",
            "300",
        ]
    )
    card = json.loads((out / "emotion.json").read_text())
    for name in (card["file"], export.FLOAT_FILE):
        assert card["sha256"][name] == export.sha256(out / name)
    assert edgetpu_check.main([str(out / card["file"]), "--quiet"]) == 0
