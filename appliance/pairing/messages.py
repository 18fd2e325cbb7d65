"""The pairing messages between units, one pydantic model each, checked on both sides.

The unit asked to pair (B) checks what the asking unit (A) sends; A checks B's answers with the
same rules, so a name with control characters or of any length is refused wherever it comes from.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.state import DisplayName, describe

UNIT_ID = r"^[0-9a-f]{32}$"
SESSION = r"^[0-9a-f]{32}$"

M = TypeVar("M", bound=BaseModel)


class MessageError(Exception):
    """The other unit sent a pairing message that does not follow the rules; the message says which."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PeerStart(_Message):
    unit_id: str = Field(pattern=UNIT_ID)
    name: DisplayName
    port: int = Field(ge=1, le=65535)


class PeerDetails(PeerStart):
    public_key: str = Field(min_length=40, max_length=48, description="Raw Ed25519 public key, base64")


class PeerFinish(_Message):
    session: str = Field(pattern=SESSION)
    spake: str = Field(min_length=1, max_length=200, description="SPAKE2 message, base64")
    details: PeerDetails
    proof: str = Field(pattern=r"^[0-9a-f]{64}$")


class StartAnswer(PeerDetails):
    """B's answer to a pairing request: its details, the session and its first SPAKE2 message."""

    session: str = Field(pattern=SESSION)
    spake: str = Field(min_length=1, max_length=200)


class FinishAnswer(PeerDetails):
    """B's answer to A's proof: its details and its own proof."""

    proof: str = Field(pattern=r"^[0-9a-f]{64}$")


def checked(model: type[M], data: Any, sender: str) -> M:
    """``data`` from another unit as ``model``; raises MessageError naming the sender."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise MessageError(
            f"the unit at {sender} sent a pairing message that is not valid: {describe(e)}"
        ) from e
