"""The copy-free paths for large messages produce exactly what the plain ones do.

Sealing and opening a 100,000-name list goes through padding, base64, DSSE
assembly and Ed25519 without whole-size intermediate copies (keys.padding,
keys.encoding.write_b64, keys.dsse.Envelope.to_json, keys.seal.sealed_json,
keys.ed25519). Each is checked here against the straightforward form it replaced:
libsodium's own sodium_pad/sodium_unpad, json_dumps of the dict, PyNaCl's sign and
verify, SHA-256 of the concatenated PAE.
"""

from __future__ import annotations

import hashlib
import io
import itertools

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keys import dsse
from keys.ed25519 import SigningKey, VerifyKey
from keys.encoding import (
    B64_CHUNK,
    b64std_encode,
    b64url_decode,
    b64url_encode,
    json_dumps,
    write_b64,
)
from keys.errors import DecodeError, VerificationError
from keys.padding import MIN_PADDED, pad, padme_length, unpad, unpadded_length
from keys.seal import sealed_json

MANY = settings(max_examples=500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SIGNER = SigningKey(bytes(range(32)))
#: Lengths around the chunk boundaries of write_b64 and b64url_decode.
EDGES = [0, 1, 2, 3, B64_CHUNK - 1, B64_CHUNK, B64_CHUNK + 1, B64_CHUNK + 2,
         2 * B64_CHUNK, 3 * B64_CHUNK + 2]
URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _sodium_unpad(data: bytes) -> tuple[str, bytes]:
    try:
        return "ok", nacl.bindings.sodium_unpad(data, len(data))
    except (nacl.exceptions.CryptoError, ValueError):
        return "bad", b""


def _unpad(data: bytes) -> tuple[str, bytes]:
    try:
        return "ok", unpad(data)
    except DecodeError:
        return "bad", b""


# --- padding -------------------------------------------------------------------------

@MANY
@given(st.binary(max_size=3000))
def test_pad_is_sodium_pad(data: bytes) -> None:
    target = max(MIN_PADDED, padme_length(len(data) + 1))
    assert pad(data) == nacl.bindings.sodium_pad(data, target)


padded_like = st.one_of(
    st.binary(max_size=64),
    # Marker-and-zeros endings, valid and spoilt: the inputs that reach the checks.
    st.tuples(st.binary(max_size=40), st.sampled_from([b"\x80", b"\x00", b"\x81", b""]),
              st.integers(0, 40), st.binary(max_size=2)).map(
        lambda t: t[0] + t[1] + bytes(t[2]) + t[3]))


@MANY
@given(padded_like)
@example(b"")
@example(b"\x80")
@example(b"\x00\x00")
@example(b"abc\x80\x00\x80\x00")
@example(b"abc\x80\x00\x01\x00")
def test_unpad_accepts_and_refuses_like_sodium_unpad(data: bytes) -> None:
    assert _unpad(data) == _sodium_unpad(data)


def test_unpadded_length_errors() -> None:
    with pytest.raises(DecodeError, match="empty"):
        unpadded_length(b"")
    with pytest.raises(DecodeError, match="bad padding"):
        unpadded_length(b"\x00" * 10)
    assert unpadded_length(pad(b"x" * 5000)) == 5000


# --- base64 --------------------------------------------------------------------------

@pytest.mark.parametrize("length", EDGES)
def test_write_b64_matches_plain_encoders(length: int) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(length))
    for urlsafe, plain in ((True, b64url_encode), (False, b64std_encode)):
        out = io.BytesIO()
        write_b64(out, data, urlsafe=urlsafe)
        assert out.getvalue() == plain(data).encode("ascii")


@pytest.mark.parametrize("length", EDGES)
def test_b64url_decode_across_chunks(length: int) -> None:
    data = bytes((i * 11 + 5) % 256 for i in range(length))
    text = b64url_encode(data)
    assert b64url_decode(text, max_bytes=length) == data
    if text:
        # One character outside the alphabet in the last chunk, and non-canonical
        # trailing bits, are still refused.
        with pytest.raises(DecodeError, match="not unpadded base64url"):
            b64url_decode(text[:-1] + "*", max_bytes=length)
        if len(text) % 4:
            # The unused low bits of the final character set: non-canonical.
            index = URL_ALPHABET.index(text[-1])
            with pytest.raises(DecodeError, match="non-canonical"):
                b64url_decode(text[:-1] + URL_ALPHABET[index | 1], max_bytes=length)


# --- DSSE and sealed JSON --------------------------------------------------------------

@MANY
@given(st.binary(max_size=2000), st.text(min_size=1, max_size=40), st.integers(0, 3))
def test_envelope_to_json_is_json_dumps_of_to_dict(payload: bytes, payload_type: str,
                                                   signers: int) -> None:
    envelope = dsse.Envelope(payload_type, payload)
    for index in range(signers):
        envelope = dsse.cosign(envelope, SigningKey(bytes([index + 1]) * 32))
    assert envelope.to_json() == json_dumps(envelope.to_dict())
    assert envelope.digest() == hashlib.sha256(dsse.pae(payload_type, payload)).digest()
    assert dsse.pae(payload_type, payload) == b"DSSEv1 %d %b %d %b" % (
        len(payload_type.encode()), payload_type.encode(), len(payload), payload)


@pytest.mark.parametrize("length", [0, B64_CHUNK + 1, 3 * B64_CHUNK + 2])
def test_sealed_json_is_json_dumps(length: int) -> None:
    header = json_dumps({"v": 1, "nonce": "x" * 32})
    ct = bytes((i * 13) % 256 for i in range(length))
    assert sealed_json(header, ct) == json_dumps(
        {"v": 1, "header": b64url_encode(header), "ct": b64url_encode(ct)})


# --- Ed25519 ---------------------------------------------------------------------------

@MANY
@given(st.binary(max_size=500), st.lists(st.integers(0, 500), max_size=3))
def test_sign_and_verify_parts_match_pynacl(message: bytes, cuts: list[int]) -> None:
    reference = nacl.signing.SigningKey(bytes(range(32)))
    signature = SIGNER.sign(message)
    assert signature == reference.sign(message).signature
    bounds = sorted({0, len(message), *(min(c, len(message)) for c in cuts)})
    parts = [message[a:b] for a, b in itertools.pairwise(bounds)]
    SIGNER.public.verify_parts(signature, *parts)
    SIGNER.public.verify(message, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(VerificationError):
        SIGNER.public.verify_parts(tampered, *parts)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        reference.verify_key.verify(message, tampered)
    with pytest.raises(VerificationError):
        SIGNER.public.verify_parts(signature[:63], *parts)
    if message:
        with pytest.raises(VerificationError):
            SIGNER.public.verify_parts(signature, message + b"\x00")
    assert isinstance(SIGNER.public, VerifyKey)
