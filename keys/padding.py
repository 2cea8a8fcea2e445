"""Padmé padding (Nikitin et al., PETS 2019): at most ~12% overhead, and the padded
length reveals only O(log log L) bits of the real length.

The padding bytes themselves are libsodium's ISO/IEC 7816-4 (``sodium_pad``): a
0x80 marker then zeros, removed unambiguously after decryption.
"""

from __future__ import annotations

from typing import Final

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
    """``data``, then 0x80, then zeros up to the Padmé length: exactly libsodium's
    ``sodium_pad(data, target)``, built in one copy (PyNaCl's binding makes two, of
    up to 16 MiB here)."""
    target = max(MIN_PADDED, padme_length(len(data) + 1))
    return b"".join((data, b"\x80", bytes(target - len(data) - 1)))


def unpadded_length(data: bytes) -> int:
    """The length of what :func:`pad` padded, found without copying, so that a large
    message can be parsed from a view of ``data``. Accepts exactly what libsodium's
    ``sodium_unpad(data, len(data))`` accepts: the last non-zero byte is the 0x80
    marker. Not constant-time, and need not be: the AEAD authenticated the padding
    before it is read, and its length is the message's, which the reader learns."""
    if not data:
        raise DecodeError("padded data is empty")
    marker = data.rfind(b"\x80")
    if marker < 0 or data.count(0, marker + 1) != len(data) - marker - 1:
        raise DecodeError("bad padding")
    return marker


def unpad(data: bytes) -> bytes:
    return data[:unpadded_length(data)]
