"""Request bodies of the JSON API and the page forms: one pydantic model each, one parser.

The same models describe the bodies in the OpenAPI document, so what the API accepts and what it
documents cannot drift apart.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.pairing.client import ADDRESS
from appliance.state import NAME_PATTERN, Announcements, Verbosity, describe

UNIT_ID = r"^[0-9a-f]{32}$"
CODE = r"^\s*\d{6}\s*$"

M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """A request body the API cannot use; ``status`` is 400 (not JSON) or 422 (wrong fields)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OwnerLogin(_Body):
    code: str = Field(pattern=CODE, description="The 6 digits the unit is saying now")


class PairRequest(_Body):
    address: str = Field(
        max_length=262,
        pattern=ADDRESS.pattern,
        description="The other unit's host:port, e.g. 192.168.1.20:8080",
    )


class PairCode(_Body):
    code: str = Field(pattern=CODE, description="The 6 digits the other unit is saying")


class SettingsChange(_Body):
    """Any subset of the settings; fields left out keep their value."""

    display_name: str | None = Field(None, min_length=1, max_length=40, pattern=NAME_PATTERN)
    announcements: Announcements | None = None
    verbosity: Verbosity | None = None
    voice_language: str | None = Field(None, max_length=20)
    volume: int | None = Field(None, ge=0, le=100)
    auto_answer: bool | None = None
    share_expressions: bool | None = None


class CallRequest(_Body):
    to: str = Field(min_length=1, max_length=64, description="A paired unit's id or display name")


class PeerStart(_Body):
    unit_id: str = Field(pattern=UNIT_ID)
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN)
    port: int = Field(ge=1, le=65535)


class PeerDetails(PeerStart):
    public_key: str = Field(min_length=40, max_length=48, description="Raw Ed25519 public key, base64")


class PeerFinish(_Body):
    session: str = Field(pattern=r"^[0-9a-f]{32}$")
    spake: str = Field(min_length=1, max_length=200, description="SPAKE2 message, base64")
    details: PeerDetails
    proof: str = Field(pattern=r"^[0-9a-f]{64}$")


def parse(model: type[M], data: Any = None) -> M:
    """Validate ``data`` (default: the request's JSON body) as ``model``; raises BadRequest."""
    if data is None:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object (Content-Type: application/json)", 400)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BadRequest(describe(e)) from e
