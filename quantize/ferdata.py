"""FER2013 / FERPlus loading and Microsoft's FERPlus label rules, shared by training and evaluation.

The data lives in ``../shared/data/fer`` (never in the repo). Column order of the vote arrays:
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, not-a-face.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
# FER2013's own order: angry, disgust, fear, happy, sad, surprise, neutral -> our label index.
FER2013_TO_OURS = np.array([4, 5, 6, 1, 3, 2, 0])
CONTEMPT = LABELS.index("contempt")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer"


class FerDataError(Exception):
    """The FER data set is missing or malformed."""


def data_dir() -> Path:
    return Path(os.environ.get("EMOCALL_FER_DIR", DEFAULT_DATA_DIR))


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N,48,48]
    votes: np.ndarray  # float32 [N,10], Microsoft's label.csv votes
    fer2013: np.ndarray  # int8 [N], FER2013 label in FER2013 order, -1 unknown


def load_split(name: str) -> Split:
    """Load ``train``, ``val`` (PublicTest) or ``test`` (PrivateTest)."""
    path = data_dir() / f"{name}.npz"
    try:
        with np.load(path) as d:
            return Split(d["images"], d["ferplus_votes_folder"].astype(np.float32), d["fer2013_label"])
    except (OSError, KeyError) as e:
        raise FerDataError(f"cannot read FER split {path}: {e}; see ../shared/data/fer/README.md") from e


def subset(split: Split, keep: np.ndarray) -> Split:
    """The images ``keep`` selects (a boolean mask or indices), with their votes and labels."""
    return Split(split.images[keep], split.votes[keep], split.fer2013[keep])


def labelled(split: Split) -> Split:
    """The faces the FERPlus crowd gave a majority label: the ones every accuracy is scored on."""
    return subset(split, majority_labels(split.votes) >= 0)


def clean_votes(votes: np.ndarray) -> np.ndarray:
    """Drop single votes as outliers, as Microsoft's FERPlus reader does."""
    out = votes.astype(np.float32).copy()
    out[out <= 1.0] = 0.0
    return out


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """FERPlus majority rule: the top emotion needs more than half the (cleaned) votes.

    Returns the label index (0-7) or -1 where there is no majority or the majority is
    unknown / not-a-face. On PrivateTest this keeps 3,137 images.
    """
    v = clean_votes(votes)
    top = v.argmax(axis=1)
    has_majority = v.max(axis=1) > 0.5 * v.sum(axis=1)
    return np.where(has_majority & (top < len(LABELS)), top, -1)


def soft_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vote distributions over the 8 emotions and a mask of images usable for training.

    An image is used when, after outlier removal, its most voted column is an emotion.
    """
    v = clean_votes(votes)
    usable = (v.sum(axis=1) > 0) & (v.argmax(axis=1) < len(LABELS))
    emo = v[:, : len(LABELS)]
    sums = emo.sum(axis=1, keepdims=True)
    return np.divide(emo, sums, out=np.zeros_like(emo), where=sums > 0), usable


def fer2013_labels_ours(fer2013: np.ndarray) -> np.ndarray:
    """FER2013 labels mapped to our label order (-1 stays -1)."""
    return np.where(fer2013 >= 0, FER2013_TO_OURS[np.clip(fer2013, 0, 6)], -1)
