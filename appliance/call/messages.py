"""The ``emotion`` data channel's messages: a JSON schema, validated on the way in and out.

Anything malformed is dropped and logged by the receiver, never raised into the call; anything over
:data:`MAX_MESSAGE_BYTES` is refused before it is parsed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

MAX_MESSAGE_BYTES = 1024


Emotion = Literal["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


class MessageError(Exception):
    """A data channel message is malformed or too large (the message says which)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hello(_Message):
    type: Literal["hello"] = "hello"
    name: str = Field(min_length=1, max_length=40)
    unit: str = Field(pattern=r"^[0-9a-f]{32}$")


class EmotionEvent(_Message):
    type: Literal["emotion"] = "emotion"
    seq: int = Field(ge=0)
    emotion: Emotion
    confidence: float = Field(ge=0, le=1)


class NoFace(_Message):
    type: Literal["no_face"] = "no_face"
    seq: int = Field(ge=0)


class Heartbeat(_Message):
    type: Literal["heartbeat"] = "heartbeat"
    seq: int = Field(ge=0)


class Sharing(_Message):
    type: Literal["sharing"] = "sharing"
    paused: bool
    # Why, when not the owner's choice: the expressions cannot be described (appliance.call's
    # UNAVAILABLE). Older units refuse a field they do not know, so it is sent only when set (see
    # encode) and they drop such a message: they say nothing, as they did before it existed.
    reason: Literal["unavailable"] | None = None


class Bye(_Message):
    type: Literal["bye"] = "bye"


Message = Annotated[Hello | EmotionEvent | NoFace | Heartbeat | Sharing | Bye, Field(discriminator="type")]


class _Envelope(RootModel[Message]):
    pass


def parse(raw: str | bytes) -> Message:
    """One message from the channel; raises :class:`MessageError` when it is not one."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {size} bytes refused (the limit is {MAX_MESSAGE_BYTES})")
    try:
        return _Envelope.model_validate_json(raw).root
    except ValidationError as e:
        raise MessageError(
            f"malformed message: {e.error_count()} problem(s), first: {e.errors()[0]['msg']}"
        ) from e


def encode(message: Message) -> str:
    # No field left unset goes out: an older unit refuses one it does not know (extra="forbid").
    return message.model_dump_json(exclude_none=True)
