"""This unit's long-term Ed25519 identity and the signing of unit-to-unit requests and responses.

Every request between paired units (call signalling, unpair), over HTTP or through a relay, carries
the sender's unit id, the recipient's unit id, a timestamp, a random nonce and a signature over
sender, recipient, method, path, time, nonce and the body's SHA-256. The receiver checks the
signature against the key it pinned at pairing and its own unit id as the recipient (so a paired
unit cannot pass on a request it received to another unit), and refuses a time outside
``max_skew_s`` and a nonce it has already seen. The answer is signed only once the request was
verified, over the whole :class:`Exchange` (both ids, method, path, nonce), the HTTP status, the
answering unit's time and the body, so nobody on the path can swap an SDP answer (and its DTLS
fingerprints) or turn a refusal into a success.

The time is the recipient's, not the sender's. A Pi has no real-time clock: in a home without
internet two units start after a power cut from their own last saved times, hours apart, and their
crystals drift apart by seconds a day. So every signed answer says the answering unit's time, each
unit keeps how far every paired unit's clock is from its own (:class:`PeerClocks`), and stamps its
requests in the recipient's clock. A request that is signed right but stamped outside the window
(the first after a power cut, or one that waited in a queue) gets a signed refusal
(:class:`ClockSkew`), whose time the asking unit learns before it asks once more.

Both transports use the same four calls: :func:`sign_request` and :func:`verify_response` on the
asking side, :meth:`RequestVerifier.verify` and :func:`sign_response` on the answering side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

UNIT = "X-Emocall-Unit"
RECIPIENT = "X-Emocall-To"
TIME = "X-Emocall-Time"
NONCE = "X-Emocall-Nonce"
SIGNATURE = "X-Emocall-Signature"

# What a well-formed header holds; anything else is refused before any work is done on it.
UNIT_ID = re.compile(r"^[0-9a-f]{32}$")
STAMP = re.compile(r"^[0-9]{1,12}$")  # whole seconds since 1970: an integer, so never nan or inf
ANSWER_TIME = re.compile(r"^[0-9]{1,12}\.[0-9]{3}$")  # an answer's time, to the millisecond
# Requests stamped further than this from the recipient's clock are refused. The asking unit stamps
# in the recipient's clock, so this bounds the transit (and a queue's wait), not the clocks: small,
# which keeps replays short and below the 10 s that a new call's offer waits beyond its ring.
MAX_SKEW_S = 10.0
NOTICED_S = 2.0  # a change in a paired unit's clock offset worth a line in the log
NONCE_FORM = re.compile(r"^[0-9A-Za-z_-]{16,64}$")

PeerKeys = Callable[[str], bytes | None]
"""unit_id -> the raw public key pinned at pairing, or None when that unit is not paired."""
NonceLog = Callable[[str, str, float], bool]
"""(unit_id, nonce, the request's time) -> False when that unit sent that nonce before: the record
kept across restarts (the state store's), for a clock set back after one (:class:`RequestVerifier`)."""


KEY_FILE = "identity.key"  # the unit's key, in its data folder


class TrustError(Exception):
    """A unit-to-unit message cannot be trusted (unknown unit, bad signature, stale or replayed)."""


class ClockSkew(TrustError):
    """The paired unit signed the request, but its time is outside this unit's window: the one
    refusal that is signed, so that the asking unit can trust the time the answer carries."""

    def __init__(self, message: str, exchange: Exchange) -> None:
        super().__init__(message)
        self.exchange = exchange


class IdentityError(Exception):
    """The identity key file cannot be read or written."""


class KeyDamaged(IdentityError):
    """The identity key file reads, but holds no Ed25519 key: damaged (a failing card), or another file."""


def unit_id_of(public_key: bytes) -> str:
    """The unit id: hex of the first 16 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).digest()[:16].hex()


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class PeerClocks:
    """How far each paired unit's clock is from this unit's, as its last signed answer said.

    The offset is the unit's time in its answer minus this unit's time when the answer arrived, so
    it is short by the answer's transit (milliseconds at home, well under a second through the
    relay). Only verified answers teach it, so nobody but that unit moves its own offset."""

    def __init__(self) -> None:
        self._offsets: dict[str, float] = {}  # one assignment per answer: no lock needed

    def now(self, unit: str) -> float:
        """The time on ``unit``'s clock now, as far as this unit knows (its own until it hears)."""
        return time.time() + self._offsets.get(unit, 0.0)

    def learn(self, unit: str, their_time: float) -> None:
        offset = their_time - time.time()
        before = self._offsets.get(unit, 0.0)
        self._offsets[unit] = offset
        if abs(offset - before) >= NOTICED_S:
            log.info("unit %s's clock is %+.1f s from this unit's; requests to it use its time", unit, offset)


class Identity:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = _raw(private_key.public_key())
        self.unit_id: str = unit_id_of(self.public_key)
        self.clocks = PeerClocks()

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
    return parse_key(path.read_bytes(), str(path))


def parse_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    """The Ed25519 key in ``pem`` (an identity key file's bytes); IdentityError naming ``where``."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    # A damaged algorithm id reads as one the library does not support (or fails inside OpenSSL).
    except (ValueError, TypeError, UnsupportedAlgorithm, InternalError) as e:
        raise KeyDamaged(
            f"{where} is not an emocall identity key; move it away to create a new identity "
            "(paired units will then need pairing again)"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyDamaged(f"{where} holds a key that is not Ed25519; move it away to create a new one")
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, pem)
    log.info("created identity %s in %s", unit_id_of(_raw(key.public_key())), path)
    return key


def write_private(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` (mode 0600), written beside it and renamed last, so a power cut never
    leaves a half-written file behind the real name."""
    os.replace(staged_file(path, data), path)


def staged_file(
    path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None, suffix: str = ".tmp"
) -> Path:
    """``data`` in a new file beside ``path`` (its name + ``suffix``), with ``mode`` and ``owner``
    (uid, gid) and synced, to be renamed over ``path``. A file left under that name is replaced,
    and a link there is not followed: root writing into the service user's folder (``emocall
    restore`` at first boot) cannot be led to write elsewhere."""
    tmp = path.with_name(path.name + suffix)
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    return tmp


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _message(kind: str, fields: list[str], body: bytes) -> bytes:
    # The kind keeps a request signature from ever passing as a response signature.
    return "\n".join([f"emocall-{kind}", *fields, _digest(body)]).encode()


@dataclass(frozen=True)
class Exchange:
    """One signed request as both ends know it; its answer is signed over all of it but ``time``
    (whole seconds, the recipient's clock as the sender knows it)."""

    sender: str
    recipient: str
    method: str
    path: str
    nonce: str
    time: int


@dataclass(frozen=True)
class SignedRequest:
    headers: dict[str, str]
    exchange: Exchange


def sign_request(me: Identity, recipient: str, method: str, path: str, body: bytes) -> SignedRequest:
    """The headers that make ``body`` a request from this unit to the unit ``recipient`` only,
    stamped in the recipient's clock."""
    stamp = int(me.clocks.now(recipient))
    exchange = Exchange(me.unit_id, recipient, method.upper(), path, secrets.token_hex(16), stamp)
    signature = me.sign(_request_message(exchange, body))
    headers = {
        UNIT: me.unit_id,
        RECIPIENT: recipient,
        TIME: str(stamp),
        NONCE: exchange.nonce,
        SIGNATURE: base64.b64encode(signature).decode(),
    }
    return SignedRequest(headers, exchange)


def _request_message(exchange: Exchange, body: bytes) -> bytes:
    e = exchange
    return _message("request-v2", [e.sender, e.recipient, e.method, e.path, str(e.time), e.nonce], body)


def _response_message(exchange: Exchange, status: int, answered: str, body: bytes) -> bytes:
    e = exchange
    fields = [e.sender, e.recipient, e.method, e.path, e.nonce, str(status), answered]
    return _message("response-v3", fields, body)


def sign_response(me: Identity, exchange: Exchange, status: int, body: bytes) -> dict[str, str]:
    """Headers signing this unit's answer (``status``, ``body``, its time) to a verified request."""
    if exchange.recipient != me.unit_id:
        raise TrustError("only the unit a request was meant for answers it")
    answered = f"{time.time():.3f}"
    signature = me.sign(_response_message(exchange, status, answered, body))
    return {UNIT: me.unit_id, TIME: answered, SIGNATURE: base64.b64encode(signature).decode()}


def _header(headers: Mapping[str, str], name: str, form: re.Pattern[str] | None = None) -> str:
    # Flask's headers are case-insensitive, a plain dict is not: accept both.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if not value:
        raise TrustError(f"missing {name} header")
    if form is not None and not form.match(value):
        raise TrustError(f"the {name} header is not well-formed")
    return value


def _check_signature(public_key: bytes, signature_b64: str, message: bytes) -> None:
    try:
        signature = base64.b64decode(signature_b64[:100], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, binascii.Error, ValueError) as e:
        raise TrustError("the signature does not match this unit's pinned key") from e


def verify_response(
    public_key: bytes, exchange: Exchange, status: int, headers: Mapping[str, str], body: bytes
) -> float:
    """The answering unit's time when it answered; raises TrustError unless the unit asked signed
    this very answer (status, time and body) to ``exchange``."""
    unit = _header(headers, UNIT)
    if unit != unit_id_of(public_key) or unit != exchange.recipient:
        raise TrustError(f"the response comes from unit {unit[:40]!r}, not the one asked")
    answered = _header(headers, TIME, ANSWER_TIME)
    message = _response_message(exchange, status, answered, body)
    _check_signature(public_key, _header(headers, SIGNATURE), message)
    return float(answered)


class RequestVerifier:
    """Checks signed requests to this unit against pinned keys; remembers nonces while they are fresh.

    The nonces of each sender are kept in arrival order for twice the skew window and dropped from
    the front as they expire (all expired ones when the sender's are at ``max_nonces``, for after a
    backward clock step), at most ``max_nonces`` per sender: only verified requests add one, so
    the memory is bounded by what paired units send, and one of them cannot crowd out the others.
    """

    def __init__(
        self,
        peer_keys: PeerKeys,
        unit_id: str,
        max_skew_s: float = MAX_SKEW_S,
        max_nonces: int = 4096,
        kept: NonceLog | None = None,
    ) -> None:
        """``kept``: the nonces' record that outlives the process. A Pi without network time starts
        again up to an hour behind (its clock saved hourly): without it, a request answered in
        that hour could be replayed once while the clock passed its time again."""
        self._peer_keys = peer_keys
        self._kept = kept
        self._unit_id = unit_id
        self._max_skew_s = max_skew_s
        self._max_nonces = max_nonces
        self._lock = threading.Lock()
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> Exchange:
        """The verified request (sender and all); raises TrustError and changes nothing otherwise."""
        unit = _header(headers, UNIT, UNIT_ID)
        recipient = _header(headers, RECIPIENT, UNIT_ID)
        stamp = _header(headers, TIME, STAMP)
        nonce = _header(headers, NONCE, NONCE_FORM)
        if recipient != self._unit_id:
            raise TrustError(f"the request was signed for unit {recipient}, not this one")
        public_key = self._peer_keys(unit)
        if public_key is None:
            raise TrustError(f"unit {unit!r} is not paired with this unit")
        exchange = Exchange(unit, self._unit_id, method.upper(), path, nonce, int(stamp))
        # This unit's own id goes into the message checked, whatever the header said.
        _check_signature(public_key, _header(headers, SIGNATURE), _request_message(exchange, body))
        now = time.time()
        skew = now - exchange.time
        if abs(skew) > self._max_skew_s:
            side = "behind" if skew > 0 else "ahead of"
            raise ClockSkew(f"the request's time is {abs(skew):.0f} s {side} this unit's clock", exchange)
        self._remember(unit, nonce, now)
        if self._kept is not None and not self._kept_first(unit, nonce, exchange.time):
            raise TrustError("this request was already received before a restart (replay refused)")
        return exchange

    def _kept_first(self, unit: str, nonce: str, stamp: float) -> bool:
        assert self._kept is not None
        try:
            return self._kept(unit, nonce, stamp)
        except Exception as e:  # the record's store (a full or failing card): the unit says so itself
            # Calls go on: this process's own record refused any replay it could, and a unit on a
            # failing card must still be reachable while someone replaces the card.
            log.warning("could not keep a signed request's nonce: %s", e)
            return True

    def _remember(self, unit: str, nonce: str, now: float) -> None:
        with self._lock:
            seen = self._seen.setdefault(unit, OrderedDict())
            # A nonce older than the skew window would be refused for its time anyway.
            while seen and next(iter(seen.values())) < now:
                seen.popitem(last=False)
            if nonce in seen:
                raise TrustError("this request was already received (replay refused)")
            if len(seen) >= self._max_nonces:
                # After the clock stepped back (a Pi's first sync) the front holds the nonces from
                # before the step, which expire only when the clock is there again: look at all.
                for old in [n for n, expires in seen.items() if expires < now]:
                    del seen[old]
            if len(seen) >= self._max_nonces:
                raise TrustError("too many signed requests from this unit lately: try again in a minute")
            seen[nonce] = now + 2 * self._max_skew_s
