"""Request bodies of the JSON API and the page forms: one pydantic model each, one parser.

The same models describe the bodies in the OpenAPI document, so what the API accepts and what it
documents cannot drift apart.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, TypeVar

from flask import request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from appliance.pairing.client import ADDRESS, RELAY_ADDRESS, RELAY_PREFIX, valid_address
from appliance.relay.address import bare_jid
from appliance.state import Announcements, DisplayName, Verbosity, describe

CODE = r"^\s*[0-9]{6}\s*$"
DEFAULT_PORT = 8080
# What a person may type around an address: a scheme in front, a slash (or a path) behind.
TYPED_ADDRESS = re.compile(r"^(?:https?://)?([^/?#]*)[/?#]?.*$", re.IGNORECASE)

# What to do about a bad form field, in the owner's words (the pages); the API keeps pydantic's.
FIELD_HELP = {
    "address": "Type the other unit's address as its display shows it, for example 192.168.1.20:8080.",
    "code": "Type the six digits the unit is saying, for example 482193.",
    "display_name": "Type a name of 1 to 40 letters, digits or spaces.",
    "volume": "Type a whole number from 0 (silent) to 100 (loudest).",
    "announcements": "Choose one of the announcement choices.",
    "verbosity": "Choose full sentences or short.",
    "voice_language": "Choose a language from the list.",
    "to": "Choose a paired unit to call.",
}

M = TypeVar("M", bound=BaseModel)


def ascii_digits(value: Any) -> Any:
    """A code typed with a Hindi, Bengali, Arabic or full-width keyboard's digits, in the ASCII
    digits the unit compares: "४८२१९३" is 482193. Such digits passed the pattern and then counted as
    a wrong code, five of them a lockout (and on the pairing page, a wrong code at the other unit)."""
    if not isinstance(value, str):
        return value
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in value)


Code = Annotated[str, BeforeValidator(ascii_digits)]


class BadRequest(Exception):
    """A request body the API cannot use; ``status`` is 400 (not JSON) or 422 (wrong fields)."""

    def __init__(self, message: str, status: int = 422, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or {}  # field name -> what the owner should do (FIELD_HELP)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OwnerLogin(_Body):
    code: Code = Field(pattern=CODE, description="The 6 digits the unit is saying now")


class PairRequest(_Body):
    address: str = Field(
        max_length=262,
        pattern=f"{ADDRESS.pattern}|{RELAY_ADDRESS.pattern}",
        description="The other unit's host:port, e.g. 192.168.1.20:8080, or xmpp:NAME@RELAY in another home",
    )

    @field_validator("address")
    @classmethod
    def _reachable(cls, address: str) -> str:
        """The pattern lets through what no request reaches (a host slixmpp refuses, an IPv6 address
        that is not one); a relay account is kept as the relay writes it (its host lower-case)."""
        if not valid_address(address):
            raise ValueError("not an address a unit can be reached at")
        account = address.removeprefix(RELAY_PREFIX)
        return RELAY_PREFIX + bare_jid(account) if account != address else address


class PairCode(_Body):
    code: Code = Field(pattern=CODE, description="The 6 digits the other unit is saying")


class SettingsChange(_Body):
    """Any subset of the settings; fields left out keep their value."""

    display_name: DisplayName | None = None
    announcements: Announcements | None = None
    verbosity: Verbosity | None = None
    voice_language: str | None = Field(None, max_length=20)
    volume: int | None = Field(None, ge=0, le=100)
    auto_answer: bool | None = None
    share_expressions: bool | None = None


class CallRequest(_Body):
    to: str = Field(min_length=1, max_length=64, description="A paired unit's id or display name")


def json_body() -> Any:
    """The request's JSON body; None when it is not JSON."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None  # nested deeper than Python parses: not a body any of our models takes


def parse(model: type[M], data: Any = None) -> M:
    """Validate ``data`` (default: the request's JSON body) as ``model``; raises BadRequest.

    A JSON body is validated strictly: JSON has numbers and booleans, so ``"50"`` for a number or
    ``"yes"`` for a boolean is a mistake to name (422), not to guess at. A form's ``data`` is all
    strings, so the pages' values are converted ("35" is 35).
    """
    strict = data is None
    if strict:
        data = json_body()
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object (Content-Type: application/json)", 400)
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as e:
        raise BadRequest(describe(e), fields=_field_help(e)) from e


def _field_help(e: ValidationError) -> dict[str, str]:
    fields = dict.fromkeys(str(err["loc"][0]) for err in e.errors() if err["loc"])  # in the form's order
    return {f: FIELD_HELP.get(f, f"Remove the field {f!r}: this form has no such field.") for f in fields}


def typed_address(text: str) -> str:
    """An address as people type it (``http://porch.local/``, ``192.168.1.20``) as ``host:port``.

    Only for the pages: the API takes ``host:port`` exactly. A missing port is the default 8080.
    """
    account = text.strip().removeprefix("xmpp:")
    if RELAY_ADDRESS.match(f"xmpp:{account}"):
        return f"xmpp:{account}"  # a unit in another home, by its account on the relay
    found = TYPED_ADDRESS.match(text.strip())
    host = found.group(1) if found else text.strip()
    bracketed = host.startswith("[")
    if host and (host.endswith("]") if bracketed else ":" not in host):
        host = f"{host}:{DEFAULT_PORT}"
    return host
