"""The shipped model card (``emotion.json``): labels, input size, crop, files and their sha256.

Everything the runtime needs to feed the model comes from here, so training and the device agree.
A missing or corrupt model file is a :class:`ModelError` that names the file and the expected sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from appliance.vision import VisionError

PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models" / "edgetpu"
SYSTEM_MODELS = Path("/usr/share/emocall/models/edgetpu")
CARD_NAME = "emotion.json"


class ModelError(VisionError):
    """The expression model or its card is missing or corrupt."""


@dataclass(frozen=True)
class ModelCard:
    path: Path
    labels: tuple[str, ...]
    height: int
    width: int
    channels: int
    margin: float
    square: bool
    file: str
    file_edgetpu: str | None
    sha256: dict[str, str]
    cuts: tuple[float, ...] = ()

    @property
    def margins(self) -> tuple[float, ...]:
        """The margins the unit cuts a face at, in turn: the card's ``cuts``, else its ``margin``.

        The detector's box varies in scale between frames and faces; two cuts either side of the
        calibrated margin, averaged, read a held face more steadily than one (model card, "Two cuts").
        """
        return self.cuts or (self.margin,)

    def model_path(self, edgetpu: bool = False) -> Path:
        """The verified model file; raises :class:`ModelError` when it is missing or corrupt."""
        name = self.file_edgetpu if edgetpu else self.file
        if name is None:
            raise ModelError(f"model card {self.path} names no Edge TPU model (file_edgetpu)")
        path = self.path.parent / name
        expected = self.sha256.get(name)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(
                f"model file {path} cannot be read ({e.strerror}); expected sha256 {expected or 'unknown'}: "
                "reinstall emocall or restore the models folder"
            ) from e
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and actual != expected:
            raise ModelError(
                f"model file {path} is corrupt or truncated ({len(data)} bytes, sha256 {actual}); "
                f"expected sha256 {expected}: reinstall emocall or restore the models folder"
            )
        return path


def default_card_path() -> Path:
    """The card shipped with the package (a source checkout), else the one the image installs."""
    shipped = PACKAGE_MODELS / CARD_NAME
    return shipped if shipped.is_file() else SYSTEM_MODELS / CARD_NAME


def load_card(path: Path | None = None) -> ModelCard:
    path = path or default_card_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"model card {path} cannot be read ({e.strerror}): reinstall emocall") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"model card {path} is not valid JSON ({e}): reinstall emocall") from e
    try:
        card = _CardFile.model_validate(raw)
    except ValidationError as e:
        where = ".".join(str(part) for part in e.errors()[0]["loc"]) or "its fields"
        raise ModelError(f"model card {path} lacks or garbles {where}: reinstall emocall") from e
    return ModelCard(
        path=path,
        labels=card.labels,
        height=card.input.height,
        width=card.input.width,
        channels=card.input.channels,
        margin=card.crop.margin,
        square=card.crop.square,
        file=card.file,
        file_edgetpu=card.file_edgetpu,
        sha256=card.sha256,
        cuts=card.crop.cuts,
    )


class _Input(BaseModel):
    height: int
    width: int
    channels: int


class _Crop(BaseModel):
    margin: float
    square: bool = True
    cuts: tuple[float, ...] = ()


class _CardFile(BaseModel):
    """What the runtime reads of ``emotion.json`` (the rest, metrics, is the model card's): a field of
    the wrong type is a ModelError like a missing one, never an AttributeError at start-up."""

    labels: tuple[str, ...]
    input: _Input
    crop: _Crop
    file: str
    file_edgetpu: str | None = None
    sha256: dict[str, str] = {}
