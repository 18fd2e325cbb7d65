"""What a request between units looks like on the relay: the same signed HTTP request, in an XMPP iq.

A unit in another home is asked exactly what a unit on the LAN is asked: the method, path, the
``X-Emocall-*`` signature headers and the body bytes travel unchanged inside
``<iq type="set"><request xmlns="urn:emocall:relay:1">JSON</request></iq>``, and the answer's
status, signature headers and body come back in ``<response>``. The receiving unit runs it through
its own web app, so the signature checks, the replay cache and the signed answers are the ones the
LAN path uses; the relay sees signed bytes it cannot change unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import ClassVar

from slixmpp.xmlstream import ElementBase

NS = "urn:emocall:relay:1"
# The unit-to-unit endpoints a request through the relay may reach, and a guest's call signalling
# and ring check (appliance/guests/calls.py: it checks the sender is a guest and the invite); never
# the owner's pages or API.
PATHS = re.compile(r"/api/(?:peer/[a-z]+(?:/[a-z]+)*|call/signal|guest/(?:signal|call))")
MAX_BODY = 64 * 1024  # the web app refuses larger requests too
HEADERS = ("content-type", "x-emocall-")  # the only headers carried (by prefix, lower case)
# What a carried header may hold: the web app's header parser raises on a line break, and a unit's
# headers (a content type, signatures, stamps) never need more than printable ASCII.
HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
LOCAL_ONLY = "x-emocall-local"  # marks this unit's own command line: never from another unit


class EnvelopeError(Exception):
    """A relay request or answer is malformed, too large or for a path units may not reach."""


class _Json(ElementBase):
    namespace = NS
    interfaces: ClassVar[set[str]] = {"data"}

    def get_data(self) -> str:
        return self.xml.text or ""

    def set_data(self, value: str) -> None:
        self.xml.text = value


class RequestElement(_Json):
    name = "request"
    plugin_attrib = "emocall_request"


class ResponseElement(_Json):
    name = "response"
    plugin_attrib = "emocall_response"


@dataclass(frozen=True)
class Exchange:
    """One HTTP message: a request (``status`` 0) or its answer (``path`` empty)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "status": self.status,
                "headers": carried(self.headers),
                "body": base64.b64encode(self.body).decode(),
            }
        )


def carried(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith(HEADERS) and k.lower() != LOCAL_ONLY}


def parse(text: str, request: bool) -> Exchange:
    """Raises :class:`EnvelopeError` for anything but a well-formed exchange (a request to a unit path)."""
    if len(text) > 2 * MAX_BODY:
        raise EnvelopeError(f"a relay message of {len(text)} characters is refused")
    try:
        data = json.loads(text)
        body = base64.b64decode(str(data["body"]), validate=True)
        headers = {str(k): str(v) for k, v in dict(data["headers"]).items()}
        exchange = Exchange(str(data["path"]), carried(headers), body, int(data["status"]))
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError, RecursionError) as e:
        # OverflowError: a status of 1e400 or Infinity; RecursionError: JSON nested thousands deep.
        raise EnvelopeError(f"a malformed relay message: {e}") from e
    if request and not PATHS.fullmatch(exchange.path):
        raise EnvelopeError(f"{exchange.path[:80]!r} cannot be reached through the relay")
    if not all(HEADER_NAME.fullmatch(k) and HEADER_VALUE.fullmatch(v) for k, v in exchange.headers.items()):
        raise EnvelopeError("a header with characters HTTP does not allow")
    if len(body) > MAX_BODY:
        raise EnvelopeError(f"a body of {len(body)} bytes is refused")
    return exchange
