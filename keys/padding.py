"""Padmé padding (Nikitin et al., PETS 2019): at most ~12% overhead, and the padded
length reveals only O(log log L) bits of the real length.

The padding bytes themselves are libsodium's ISO/IEC 7816-4 (``sodium_pad``): a
0x80 marker then zeros, removed unambiguously after decryption.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings
import nacl.exceptions

from .errors import DecodeError

#: Everything small pads to at least this, so a one-word note and a short list of
#: names look alike on the wire.
MIN_PADDED: Final = 1024


def padme_length(length: int) -> int:
    """The Padmé bucket for ``length`` bytes."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    last_bits = exponent - exponent.bit_length()
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def pad(data: bytes) -> bytes:
    target = max(MIN_PADDED, padme_length(len(data) + 1))
    return nacl.bindings.sodium_pad(data, target)


def unpad(data: bytes) -> bytes:
    if not data:
        raise DecodeError("padded data is empty")
    try:
        return nacl.bindings.sodium_unpad(data, len(data))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecodeError("bad padding") from exc
