"""Identity keys and signed unit-to-unit requests: forged, replayed, stale and unpaired are refused."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import pytest

from appliance import identity
from appliance.identity import Identity, RequestVerifier, TrustError


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Identity, Identity]:
    return Identity.load_or_create(tmp_path / "a.key"), Identity.load_or_create(tmp_path / "b.key")


def test_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Identity.load_or_create(path)
    assert again.public_key == first.public_key and len(first.public_key) == 32
    assert again.unit_id == first.unit_id and len(first.unit_id) == 32


def test_garbage_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_text("not a key")
    with pytest.raises(identity.KeyDamaged, match="move it away"):
        Identity.load_or_create(path)


def test_a_key_whose_algorithm_was_damaged_is_a_damaged_key(tmp_path: Path) -> None:
    """A bit flipped in the key's algorithm id (Ed25519's OID 1.3.101.112) read as an algorithm the
    library does not support: not among the errors that said "damaged", so the unit could not start."""
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    lines = path.read_text().splitlines()
    der = bytearray(base64.b64decode("".join(lines[1:-1])))
    der[der.index(bytes([0x06, 0x03, 0x2B, 0x65, 0x70])) + 4] ^= 0x01
    path.write_text("\n".join([lines[0], base64.b64encode(der).decode(), lines[-1]]) + "\n")
    with pytest.raises(identity.KeyDamaged):
        Identity.load_or_create(path)


def test_signed_request_verifies_once(pair: tuple[Identity, Identity]) -> None:
    a, b = pair
    verifier = RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id)
    headers = identity.sign_request(a, b.unit_id, "POST", "/api/peer/unpair", b"{}").headers
    # Header names arrive in any case from HTTP.
    lower = {k.lower(): v for k, v in headers.items()}
    assert verifier.verify(lower, "post", "/api/peer/unpair", b"{}").sender == a.unit_id
    with pytest.raises(TrustError, match="replay"):
        verifier.verify(headers, "POST", "/api/peer/unpair", b"{}")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/peer/unpair", b"{}"),
        ("POST", "/api/call/offer", b"{}"),
        ("POST", "/api/peer/unpair", b"[]"),
    ],
)
def test_any_change_breaks_the_signature(
    pair: tuple[Identity, Identity], method: str, path: str, body: bytes
) -> None:
    a, b = pair
    headers = identity.sign_request(a, b.unit_id, "POST", "/api/peer/unpair", b"{}").headers
    with pytest.raises(TrustError, match="signature"):
        RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id).verify(headers, method, path, body)


def test_forged_by_another_key_is_refused(pair: tuple[Identity, Identity]) -> None:
    a, b = pair
    forged = identity.sign_request(b, b.unit_id, "POST", "/x", b"").headers
    forged[identity.UNIT] = a.unit_id
    with pytest.raises(TrustError, match="signature"):
        RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id).verify(forged, "POST", "/x", b"")


def test_unpaired_stale_and_missing_are_refused(
    pair: tuple[Identity, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    headers = identity.sign_request(a, b.unit_id, "POST", "/x", b"").headers
    with pytest.raises(TrustError, match="not paired"):
        RequestVerifier({}.get, b.unit_id).verify(headers, "POST", "/x", b"")
    with pytest.raises(TrustError, match="missing X-Emocall-Signature"):
        RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id).verify(
            {k: v for k, v in headers.items() if k != identity.SIGNATURE}, "POST", "/x", b""
        )
    later = time.time() + 120
    monkeypatch.setattr(identity.time, "time", lambda: later)
    with pytest.raises(TrustError, match="clock"):
        RequestVerifier({a.unit_id: a.public_key}.get, b.unit_id).verify(headers, "POST", "/x", b"")


def test_response_is_bound_to_request_and_body(pair: tuple[Identity, Identity]) -> None:
    a, b = pair
    asked = identity.sign_request(a, b.unit_id, "POST", "/x", b"{}").exchange
    headers = identity.sign_response(b, asked, 200, b"answer")
    identity.verify_response(b.public_key, asked, 200, headers, b"answer")
    other = identity.sign_request(a, b.unit_id, "POST", "/x", b"{}").exchange
    with pytest.raises(TrustError):
        identity.verify_response(b.public_key, other, 200, headers, b"answer")
    with pytest.raises(TrustError):
        identity.verify_response(b.public_key, asked, 200, headers, b"swapped")
    with pytest.raises(TrustError, match="not the one asked"):
        identity.verify_response(a.public_key, asked, 200, headers, b"answer")
