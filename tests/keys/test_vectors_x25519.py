"""Pin X25519 handling (keys.kem.check_x25519_public and the exchange behind HPKE)
against Wycheproof's X25519 file: every computable shared secret matches, and every
public key that yields the all-zero secret (low-order points, RFC 7748 section 6.1)
is refused as InvalidKey, also when it arrives as an encryption key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from keys.errors import InvalidKey
from keys.kem import SUITE_X25519, EncryptionPublicKey, check_x25519_public

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ZERO = bytes(32)


def _cases() -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "wycheproof-x25519_test.json").read_text())
    assert data["algorithm"] == "XDH"
    cases = [t for g in data["testGroups"] if g["curve"] == "curve25519" for t in g["tests"]]
    assert len(cases) == data["numberOfTests"] == 518
    return cases


def _is_weak(case: dict[str, Any]) -> bool:
    return bytes.fromhex(case["shared"]) == ZERO


def test_weak_cases_are_exactly_the_flagged_ones() -> None:
    for case in _cases():
        flags = set(case["flags"])
        assert _is_weak(case) == bool(flags & {"ZeroSharedSecret", "LowOrderPublic"}), case


def test_low_order_and_zero_secret_public_keys_rejected() -> None:
    weak = [c for c in _cases() if _is_weak(c)]
    assert len(weak) >= 30
    for case in weak:
        public = bytes.fromhex(case["public"])
        with pytest.raises(InvalidKey):
            check_x25519_public(public)
        with pytest.raises(InvalidKey):
            EncryptionPublicKey(SUITE_X25519, public)


P = 2**255 - 19


def _canonical(case: dict) -> bool:
    return int.from_bytes(bytes.fromhex(case["public"]), "little") < P


@pytest.mark.parametrize("result", ["valid", "acceptable"])
def test_shared_secrets_match(result: str) -> None:
    # "acceptable" cases (twist points, non-canonical u) are accepted by RFC 7748
    # implementations. We accept twist points (they give the expected secret), but
    # refuse non-canonical encodings in cards: HPKE would bind the sender to other
    # bytes than the recipient's key, so wraps to such a key could never be opened.
    cases = [c for c in _cases() if c["result"] == result and not _is_weak(c)]
    assert cases
    wrong = []
    for case in cases:
        raw = bytes.fromhex(case["public"])
        if not _canonical(case):
            with pytest.raises(InvalidKey, match="canonical"):
                check_x25519_public(raw)
            continue
        public = check_x25519_public(raw)
        private = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(case["private"]))
        if private.exchange(public) != bytes.fromhex(case["shared"]):
            wrong.append(case["tcId"])
        EncryptionPublicKey(SUITE_X25519, raw)
    assert wrong == []


def test_non_canonical_cases_exist_and_are_refused() -> None:
    non_canonical = [c for c in _cases() if not _canonical(c)]
    assert len(non_canonical) > 5
    for case in non_canonical:
        with pytest.raises(InvalidKey):
            EncryptionPublicKey(SUITE_X25519, bytes.fromhex(case["public"]))


def test_no_invalid_cases_unhandled() -> None:
    # The file has no "invalid" results today; if a new copy adds some, they must
    # be rejected by check_x25519_public or fail the exchange.
    for case in (c for c in _cases() if c["result"] == "invalid"):
        with pytest.raises((InvalidKey, ValueError)):
            public = check_x25519_public(bytes.fromhex(case["public"]))
            x25519.X25519PrivateKey.from_private_bytes(
                bytes.fromhex(case["private"])).exchange(public)
