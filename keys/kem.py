"""Recipient encryption keys and HPKE key wrapping (RFC 9180).

Two suites, named in identity cards and sealed headers:

* ``MLKEM768-X25519`` (default): the hybrid post-quantum KEM. Name lists stay
  sensitive for decades, so harvest-now-decrypt-later is the realistic threat.
* ``X25519``: classical DHKEM, for interoperability only.

Both use HKDF-SHA256 and ChaCha20-Poly1305 inside HPKE, in base mode with the
single-shot API of ``cryptography``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric import x25519 as x25519_

from .clock import Random, system_random
from .errors import InvalidKey, UnsupportedVersion

SUITE_HYBRID: Final = "MLKEM768-X25519"
SUITE_X25519: Final = "X25519"
SUITES: Final = (SUITE_HYBRID, SUITE_X25519)

X25519_BYTES: Final = 32
MLKEM768_PUBLIC_BYTES: Final = 1184
MLKEM768_SEED_BYTES: Final = 64

_HPKE = {
    SUITE_HYBRID: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256,
                             hpke.AEAD.CHACHA20_POLY1305),
    SUITE_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256,
                             hpke.AEAD.CHACHA20_POLY1305),
}

#: Size of one wrap of a 32-byte key: encapsulated key + ciphertext + 16-byte tag.
WRAP_BYTES: Final = {SUITE_HYBRID: 1120 + 32 + 16, SUITE_X25519: 32 + 32 + 16}


class UnwrapFailed(Exception):
    """Internal: this wrap does not open with this key. Never shown to users."""


_X25519_P: Final = 2**255 - 19


def check_x25519_public(raw: bytes) -> x25519_.X25519PublicKey:
    """Load an X25519 public key, rejecting low-order points (RFC 7748 section 6.1).

    A point of small order gives an all-zero shared secret with *every* clamped
    scalar, so one exchange with a throwaway key detects exactly those points.
    """
    if len(raw) != X25519_BYTES:
        raise InvalidKey("an X25519 public key is 32 bytes")
    # Non-canonical encodings (top bit set, or u >= p) are masked or reduced by the
    # ladder, so the sender's HPKE would bind different bytes than the recipient's key.
    if int.from_bytes(raw, "little") >= _X25519_P:
        raise InvalidKey("X25519 public key is not canonically encoded")
    public = x25519_.X25519PublicKey.from_public_bytes(raw)
    try:
        x25519_.X25519PrivateKey.generate().exchange(public)
    except ValueError as exc:
        raise InvalidKey("X25519 public key is a low-order point") from exc
    return public


def _check_suite(suite: object) -> str:
    for known in SUITES:
        if suite == known:
            return known
    raise UnsupportedVersion(f"unknown encryption suite {str(suite)[:40]!r}")


@dataclass(frozen=True)
class EncryptionPublicKey:
    """A recipient's public encryption key, validated on construction."""

    suite: str
    x25519: bytes
    mlkem768: bytes | None = None

    def __post_init__(self) -> None:
        _check_suite(self.suite)
        check_x25519_public(self.x25519)
        if self.suite == SUITE_HYBRID:
            if self.mlkem768 is None or len(self.mlkem768) != MLKEM768_PUBLIC_BYTES:
                raise InvalidKey("an ML-KEM-768 public key is 1184 bytes")
            try:
                mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem768)
            except ValueError as exc:
                raise InvalidKey("malformed ML-KEM-768 public key") from exc
        elif self.mlkem768 is not None:
            raise InvalidKey("an X25519-only key carries no ML-KEM key")

    def _hpke_key(self) -> x25519_.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        xkey = x25519_.X25519PublicKey.from_public_bytes(self.x25519)
        if self.suite == SUITE_X25519:
            return xkey
        assert self.mlkem768 is not None
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem768), xkey)

    def wrap(self, secret: bytes, info: bytes) -> bytes:
        """HPKE-encrypt ``secret`` (a content key) to this key, bound to ``info``."""
        return _HPKE[self.suite].encrypt(secret, self._hpke_key(), info=info)


class EncryptionPrivateKey:
    """The private half; holds its public key. Never shows secrets in ``repr``."""

    __slots__ = ("_mlkem_seed", "_x25519", "public", "suite")

    def __init__(self, suite: str, x25519_secret: bytes, mlkem_seed: bytes | None) -> None:
        self.suite = _check_suite(suite)
        if len(x25519_secret) != X25519_BYTES:
            raise ValueError("an X25519 private key is 32 bytes")
        self._x25519 = x25519_.X25519PrivateKey.from_private_bytes(x25519_secret)
        self._mlkem_seed = mlkem_seed
        xpub = self._x25519.public_key().public_bytes_raw()
        if suite == SUITE_HYBRID:
            if mlkem_seed is None or len(mlkem_seed) != MLKEM768_SEED_BYTES:
                raise ValueError("an ML-KEM-768 seed is 64 bytes")
            mpub = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key()
            self.public = EncryptionPublicKey(suite, xpub, mpub.public_bytes_raw())
        else:
            if mlkem_seed is not None:
                raise ValueError("an X25519-only key has no ML-KEM seed")
            self.public = EncryptionPublicKey(suite, xpub)

    @classmethod
    def generate(cls, suite: str = SUITE_HYBRID,
                 random: Random = system_random) -> EncryptionPrivateKey:
        seed = random(MLKEM768_SEED_BYTES) if suite == SUITE_HYBRID else None
        return cls(suite, random(X25519_BYTES), seed)

    def secrets(self) -> tuple[bytes, bytes | None]:
        """(X25519 private key, ML-KEM seed): for the keystore only."""
        return self._x25519.private_bytes_raw(), self._mlkem_seed

    def unwrap(self, wrapped: bytes, info: bytes) -> bytes:
        """Open a wrap made by :meth:`EncryptionPublicKey.wrap`; raise
        :class:`UnwrapFailed` if it was not made for this key and ``info``."""
        if len(wrapped) != WRAP_BYTES[self.suite]:
            raise UnwrapFailed
        key: x25519_.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey = self._x25519
        if self.suite == SUITE_HYBRID:
            assert self._mlkem_seed is not None
            key = hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self._mlkem_seed), self._x25519)
        try:
            return _HPKE[self.suite].decrypt(wrapped, key, info=info)
        except (InvalidTag, ValueError) as exc:
            raise UnwrapFailed from exc

    def __repr__(self) -> str:
        return f"EncryptionPrivateKey(suite={self.suite!r})"
