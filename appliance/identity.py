"""This unit's long-term Ed25519 identity and the signing of unit-to-unit requests and responses.

Every request between paired units (pairing completion, call signalling, unpair) carries the
sender's unit id, a timestamp, a random nonce and a signature over method, path, time, nonce and the
body's SHA-256. The receiver checks the signature against the key it pinned at pairing, refuses a
time outside ``max_skew_s`` and a nonce it has already seen. Responses are signed over the request's
nonce and the body, so nobody on the path can swap an SDP answer (and its DTLS fingerprints).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

UNIT = "X-Emocall-Unit"
TIME = "X-Emocall-Time"
NONCE = "X-Emocall-Nonce"
SIGNATURE = "X-Emocall-Signature"

PeerKeys = Callable[[str], bytes | None]
"""unit_id -> the raw public key pinned at pairing, or None when that unit is not paired."""


class TrustError(Exception):
    """A unit-to-unit message cannot be trusted (unknown unit, bad signature, stale or replayed)."""


class IdentityError(Exception):
    """The identity key file cannot be read or written."""


def unit_id_of(public_key: bytes) -> str:
    """The unit id: hex of the first 16 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).digest()[:16].hex()


class Identity:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.unit_id: str = unit_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the private key from ``path``, or create one there (mode 0600) at first start."""
        try:
            return cls(_load(path)) if path.exists() else cls(_create(path))
        except OSError as e:
            raise IdentityError(
                f"cannot use the identity key {path}: {e.strerror} (check the data directory's owner)"
            ) from e


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise IdentityError(
            f"{path} is not an emocall identity key; move it away to create a new identity "
            "(paired units will then need pairing again)"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path} holds a key that is not Ed25519; move it away to create a new one")
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    # Rename last, so a power cut never leaves a half-written key behind the real name.
    os.replace(tmp, path)
    log.info("created identity %s in %s", key.public_key(), path)
    return key


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _message(kind: str, fields: list[str], body: bytes) -> bytes:
    # The kind keeps a request signature from ever passing as a response signature.
    return "\n".join([f"emocall-{kind}-v1", *fields, _digest(body)]).encode()


def sign_request(identity: Identity, method: str, path: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    signature = identity.sign(
        _message("request", [identity.unit_id, method.upper(), path, stamp, nonce], body)
    )
    return {
        UNIT: identity.unit_id,
        TIME: stamp,
        NONCE: nonce,
        SIGNATURE: base64.b64encode(signature).decode(),
    }


def sign_response(identity: Identity, request_nonce: str, body: bytes) -> dict[str, str]:
    signature = identity.sign(_message("response", [identity.unit_id, request_nonce], body))
    return {UNIT: identity.unit_id, SIGNATURE: base64.b64encode(signature).decode()}


def _header(headers: Mapping[str, str], name: str) -> str:
    # Flask's headers are case-insensitive, a plain dict is not: accept both.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if not value:
        raise TrustError(f"missing {name} header")
    return value


def _check_signature(public_key: bytes, signature_b64: str, message: bytes) -> None:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, binascii.Error, ValueError) as e:
        raise TrustError("the signature does not match this unit's pinned key") from e


def verify_response(public_key: bytes, request_nonce: str, headers: Mapping[str, str], body: bytes) -> None:
    unit = _header(headers, UNIT)
    if unit != unit_id_of(public_key):
        raise TrustError(f"the response comes from unit {unit!r}, not the one asked")
    _check_signature(
        public_key, _header(headers, SIGNATURE), _message("response", [unit, request_nonce], body)
    )


class RequestVerifier:
    """Checks signed requests against pinned keys; remembers nonces for the skew window."""

    def __init__(self, peer_keys: PeerKeys, max_skew_s: float = 60) -> None:
        self._peer_keys = peer_keys
        self._max_skew_s = max_skew_s
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> str:
        """The verified sender's unit id; raises TrustError and changes nothing otherwise."""
        unit = _header(headers, UNIT)
        stamp = _header(headers, TIME)
        nonce = _header(headers, NONCE)
        public_key = self._peer_keys(unit)
        if public_key is None:
            raise TrustError(f"unit {unit!r} is not paired with this unit")
        try:
            sent = float(stamp)
        except ValueError as e:
            raise TrustError(f"{TIME} is not a number") from e
        now = time.time()
        if abs(now - sent) > self._max_skew_s:
            raise TrustError("the request's time is too far from this unit's clock (check both clocks)")
        message = _message("request", [unit, method.upper(), path, stamp, nonce], body)
        _check_signature(public_key, _header(headers, SIGNATURE), message)
        self._remember(f"{unit}:{nonce}", now)
        return unit

    def _remember(self, key: str, now: float) -> None:
        with self._lock:
            # A nonce older than the skew window would be refused for its time anyway.
            horizon = now - 2 * self._max_skew_s
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            if key in self._seen:
                raise TrustError("this request was already received (replay refused)")
            self._seen[key] = now
