"""The small building blocks: Ed25519 keys, HPKE key wrapping, Padmé padding, the
injectable clock, and where a passphrase comes from."""

from __future__ import annotations

import hashlib
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from keys import padding
from keys.clock import SYSTEM_CLOCK, FixedClock
from keys.ed25519 import SigningKey, VerifyKey
from keys.errors import InvalidKey, UnsupportedVersion, VerificationError
from keys.kem import (
    MLKEM768_PUBLIC_BYTES,
    SUITE_HYBRID,
    SUITE_X25519,
    WRAP_BYTES,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    UnwrapFailed,
)
from keys.passphrase import ENV_VAR, PassphraseUnavailable, get_passphrase

# -- Ed25519 --------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    key = SigningKey(bytes(range(32)))
    sig = key.sign(b"message")
    assert len(sig) == 64
    key.public.verify(b"message", sig)
    assert key.sign(b"message") == sig  # deterministic
    with pytest.raises(VerificationError):
        key.public.verify(b"messagE", sig)
    with pytest.raises(VerificationError):
        key.public.verify(b"message", sig[:63])
    with pytest.raises(VerificationError):
        key.public.verify(b"message", sig + b"\x00")
    assert SigningKey(key.seed()).public == key.public


def test_key_sizes() -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(InvalidKey):
            VerifyKey(bad)
        with pytest.raises(ValueError):
            SigningKey(bad)
    assert SigningKey.generate().id != SigningKey.generate().id
    deterministic = SigningKey.generate(lambda n: bytes([5]) * n)
    assert deterministic.seed() == bytes([5]) * 32


# -- HPKE key wrapping ----------------------------------------------------------------

INFO = b"backchannel/v1/wrap\x00test"


@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
def test_wrap_round_trip(suite: str) -> None:
    key = EncryptionPrivateKey.generate(suite)
    secret = hashlib.sha256(b"content key").digest()
    wrapped = key.public.wrap(secret, INFO)
    assert len(wrapped) == WRAP_BYTES[suite]
    assert key.unwrap(wrapped, INFO) == secret
    assert key.public.wrap(secret, INFO) != wrapped  # fresh ephemeral every time
    with pytest.raises(UnwrapFailed):
        key.unwrap(wrapped, INFO + b"x")  # bound to info
    with pytest.raises(UnwrapFailed):
        EncryptionPrivateKey.generate(suite).unwrap(wrapped, INFO)
    with pytest.raises(UnwrapFailed):
        key.unwrap(wrapped[:-1], INFO)
    for i in (0, len(wrapped) // 2, len(wrapped) - 1):
        bad = bytearray(wrapped)
        bad[i] ^= 1
        with pytest.raises(UnwrapFailed):
            key.unwrap(bytes(bad), INFO)


@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
def test_private_key_rebuilds_from_secrets(suite: str) -> None:
    key = EncryptionPrivateKey.generate(suite, lambda n: bytes([3]) * n)
    again = EncryptionPrivateKey(suite, *key.secrets())
    assert again.public == key.public
    assert again.unwrap(key.public.wrap(b"k" * 32, INFO), INFO) == b"k" * 32
    assert "03030303" not in repr(key) and repr(key) == f"EncryptionPrivateKey(suite={suite!r})"


def test_key_constructor_checks() -> None:
    hybrid = EncryptionPrivateKey.generate(SUITE_HYBRID)
    x_only = EncryptionPrivateKey.generate(SUITE_X25519)
    with pytest.raises(UnsupportedVersion):
        EncryptionPrivateKey("RSA", bytes(32), None)
    with pytest.raises(ValueError):
        EncryptionPrivateKey(SUITE_HYBRID, bytes(32), None)
    with pytest.raises(ValueError):
        EncryptionPrivateKey(SUITE_X25519, bytes(32), bytes(64))
    with pytest.raises(ValueError):
        EncryptionPrivateKey(SUITE_X25519, bytes(31), None)
    with pytest.raises(UnsupportedVersion):
        EncryptionPublicKey("RSA", x_only.public.x25519)
    with pytest.raises(InvalidKey):
        EncryptionPublicKey(SUITE_HYBRID, hybrid.public.x25519)
    with pytest.raises(InvalidKey):
        EncryptionPublicKey(SUITE_HYBRID, hybrid.public.x25519, bytes(MLKEM768_PUBLIC_BYTES - 1))
    with pytest.raises(InvalidKey):
        EncryptionPublicKey(SUITE_X25519, x_only.public.x25519, hybrid.public.mlkem768)
    with pytest.raises(InvalidKey):
        EncryptionPublicKey(SUITE_X25519, bytes(32))  # the zero point: low order


# -- padding --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 2, 100, 1022, 1023, 1024, 5000, 65_537])
def test_pad_round_trip(length: int) -> None:
    data = bytes([0x80]) * length  # the marker byte itself, to confuse a naive unpad
    padded = padding.pad(data)
    assert len(padded) >= max(padding.MIN_PADDED, length + 1)
    assert padding.unpad(padded) == data


def test_padme_bucket_properties() -> None:
    previous = 0
    for length in range(0, 20_000, 7):
        bucket = padding.padme_length(length)
        assert bucket >= length and bucket >= previous
        # At most ~12% overhead (Nikitin et al.): the claim the docstring makes.
        assert bucket - length <= max(1, length // 8)
        previous = bucket
    # Worked by hand from the paper: E = floor(log2 L), S = floor(log2 E) + 1, the
    # low E - S bits are rounded up. L = 1025: E = 10, S = 4, round up to 64.
    assert padding.padme_length(1025) == padding.padme_length(1088) == 1088
    assert padding.padme_length(1089) == 1152
    assert padding.padme_length(9) == 10 and padding.padme_length(8) == 8
    assert len({padding.padme_length(n) for n in range(8192, 16384)}) <= 64


def test_unpad_rejects() -> None:
    for bad in (b"", bytes(1024), b"data" + bytes(100)):
        with pytest.raises(padding.DecodeError):
            padding.unpad(bad)


# -- clock ----------------------------------------------------------------------------

def test_clocks() -> None:
    clock = FixedClock()
    start = clock.now()
    assert start.tzinfo is not None and start.microsecond == 0
    clock.advance(minutes=5)
    assert clock.now() - start == timedelta(minutes=5)
    now = SYSTEM_CLOCK.now()
    assert now.microsecond == 0 and now.utcoffset() == timedelta(0)


# -- passphrase sources ---------------------------------------------------------------

def test_passphrase_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "from the environment")
    path = tmp_path / "pass"
    path.write_bytes("Київ horse\n".encode())
    assert get_passphrase(path) == "Київ horse"  # the file wins; one newline dropped
    path.write_bytes(b"two newlines\n\n")
    assert get_passphrase(path) == "two newlines\n"
    path.write_bytes(b"crlf\r\n")
    assert get_passphrase(path) == "crlf"
    for content in (b"", b"\n", b"\xff\xfe", b"x" * 4097):
        path.write_bytes(content)
        with pytest.raises(PassphraseUnavailable):
            get_passphrase(path)
    with pytest.raises(PassphraseUnavailable) as info:
        get_passphrase(tmp_path / "missing")
    assert "missing" in str(info.value)


def test_passphrase_environment_then_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "env secret")
    assert get_passphrase() == "env secret"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(PassphraseUnavailable, match="--passphrase-file"):
        get_passphrase()
