"""Pin PyNaCl's XChaCha20-Poly1305 (the content cipher of sealed messages, called
exactly as keys.seal calls it) against Wycheproof's XChaCha20-Poly1305 file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import pytest

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt


def _cases() -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "wycheproof-xchacha20_poly1305_test.json").read_text())
    assert data["algorithm"] == "XCHACHA20-POLY1305"
    cases = [{**t, **{k: bytes.fromhex(t[k]) for k in ("key", "iv", "aad", "msg", "ct", "tag")}}
             for g in data["testGroups"] for t in g["tests"]]
    assert len(cases) == data["numberOfTests"] == 315
    return cases


def test_valid_cases() -> None:
    cases = [c for c in _cases() if c["result"] == "valid"]
    assert len(cases) == 246
    for c in cases:
        assert encrypt(c["msg"], c["aad"], c["iv"], c["key"]) == c["ct"] + c["tag"], c["tcId"]
        assert decrypt(c["ct"] + c["tag"], c["aad"], c["iv"], c["key"]) == c["msg"], c["tcId"]


@pytest.mark.parametrize("flag", ["ModifiedTag", "InvalidNonceSize"])
def test_invalid_cases_rejected(flag: str) -> None:
    cases = [c for c in _cases() if c["result"] == "invalid" and flag in c["flags"]]
    assert cases
    for c in cases:
        with pytest.raises((nacl.exceptions.CryptoError, TypeError, ValueError)):
            decrypt(c["ct"] + c["tag"], c["aad"], c["iv"], c["key"])


def test_every_invalid_case_is_covered() -> None:
    flags = {f for c in _cases() if c["result"] == "invalid" for f in c["flags"]}
    assert flags == {"ModifiedTag", "InvalidNonceSize"}
    assert {c["result"] for c in _cases()} == {"valid", "invalid"}
