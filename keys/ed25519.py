"""Ed25519 signing and verification, through PyNaCl only.

One verifier everywhere: libsodium's, which rejects non-canonical encodings and
small-order points. Its exact accept/reject behaviour is pinned by the CCTV and
Wycheproof vectors in ``tests/keys/test_vectors_ed25519.py``.
"""

from __future__ import annotations

import base64
import hashlib

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .clock import Random, system_random
from .errors import InvalidKey, VerificationError

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64

_ID_DOMAIN = b"backchannel/v1/identity-id\x00"


def identity_id(public_key: bytes) -> str:
    """The stable id of the identity owning ``public_key``: 32 lowercase base32
    characters (160 bits of a domain-separated SHA-256)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKey("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(_ID_DOMAIN + public_key).digest()[:20]
    return base64.b32encode(digest).decode("ascii").lower()


class VerifyKey:
    """An Ed25519 public key with the id derived from it."""

    __slots__ = ("_key", "id", "raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
            raise InvalidKey("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self.id = identity_id(raw)
        self._key = nacl.signing.VerifyKey(raw)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`VerificationError` unless ``signature`` is valid for ``message``."""
        self.verify_parts(signature, message)

    def verify_parts(self, signature: bytes, *parts: bytes) -> None:
        """:meth:`verify` for the message ``b"".join(parts)``, which is never built:
        libsodium's ``crypto_sign_open`` takes signature and message as one buffer, so
        that is the one copy made (``verify`` through PyNaCl's VerifyKey makes three of
        a multi-megabyte message). Same function, same verdicts."""
        if len(signature) != SIGNATURE_BYTES:
            raise VerificationError("signature does not verify")
        try:
            nacl.bindings.crypto_sign_open(b"".join((signature, *parts)), self.raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError) as exc:
            raise VerificationError("signature does not verify") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"VerifyKey(id={self.id!r})"


class SigningKey:
    """An Ed25519 private key. Holds its public half; never shows its seed in ``repr``."""

    __slots__ = ("_key", "_secret", "public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        # libsodium's 64-byte secret key (seed and public key), for crypto_sign.
        self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)[1]
        self.public = VerifyKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls, random: Random = system_random) -> SigningKey:
        return cls(random(SEED_BYTES))

    @property
    def id(self) -> str:
        return self.public.id

    def seed(self) -> bytes:
        """The 32-byte secret seed; for the keystore only."""
        return bytes(self._key)

    def sign(self, message: bytes) -> bytes:
        # crypto_sign returns signature + message: one copy of a large message where
        # PyNaCl's SigningKey.sign makes three (it also splits them apart).
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:
        return f"SigningKey(id={self.public.id!r})"
