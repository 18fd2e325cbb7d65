"""The SPAKE2 pairing handshake: both units prove they know the code without revealing it.

Unit B (the one asked to pair) shows the code and sends its SPAKE2 message first. Unit A (where the
person typed the code) answers with its message and a MAC over its own details (unit id, name,
public key) under the shared key; B checks that MAC before it reveals anything that would let A test
a guess, so a wrong code can only be tried online, where B counts it. B then answers with a MAC
over its details, and each side pins the other's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]


class HandshakeError(Exception):
    """The other unit's handshake message is malformed or its proof does not match the code."""


def _mac(key: bytes, side: str, details: dict[str, Any]) -> str:
    canonical = json.dumps(details, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, f"emocall-pair-{side}\n".encode() + canonical, hashlib.sha256).hexdigest()


def _finish(spake: Any, message: bytes) -> bytes:
    try:
        key: bytes = spake.finish(message)
    # A point off the curve is a plain Exception subclass in spake2, not a SPAKEError.
    except (SPAKEError, NotOnCurve, ValueError) as e:
        raise HandshakeError(f"the other unit's pairing message is not valid: {e}") from e
    return key


class Responder:
    """Unit B's side of one attempt; a wrong code needs a new Responder (SPAKE2 is one-shot)."""

    def __init__(self, code: str, initiator_id: str, responder_id: str) -> None:
        self._spake = SPAKE2_B(code.encode(), idA=initiator_id.encode(), idB=responder_id.encode())
        self.message: bytes = self._spake.start()

    def confirm(self, message: bytes, details: dict[str, Any], proof: str, mine: dict[str, Any]) -> str:
        """Check A's proof over its details; return B's proof over ``mine``. Raises HandshakeError."""
        key = _finish(self._spake, message)
        if not hmac.compare_digest(_mac(key, "A", details), proof):
            raise HandshakeError("the code does not match")
        return _mac(key, "B", mine)


class Initiator:
    """Unit A's side, once the person has typed the code."""

    def __init__(self, code: str, initiator_id: str, responder_id: str) -> None:
        self._spake = SPAKE2_A(code.encode(), idA=initiator_id.encode(), idB=responder_id.encode())
        self.message: bytes = self._spake.start()
        self._key = b""

    def prove(self, their_message: bytes, mine: dict[str, Any]) -> str:
        self._key = _finish(self._spake, their_message)
        return _mac(self._key, "A", mine)

    def check(self, details: dict[str, Any], proof: str) -> None:
        if not self._key or not hmac.compare_digest(_mac(self._key, "B", details), proof):
            raise HandshakeError("the other unit could not prove it knows the code")
