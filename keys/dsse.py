"""DSSE envelopes (https://github.com/secure-systems-lab/dsse), our one signed format.

Signatures are Ed25519 over the pre-authentication encoding (PAE) of the payload
type and the payload bytes. No JSON canonicalisation is ever needed: the payload is
carried as the exact bytes that were signed. Several signatures over the same bytes
is exactly co-signing.

Wire form (the DSSE JSON envelope; binary fields in *padded standard* base64, the
DSSE convention, so that independent DSSE verifiers accept our envelopes)::

    {"payload": "<base64>", "payloadType": "<type>",
     "signatures": [{"keyid": "<identity id>", "sig": "<base64>"}]}

Parse with :meth:`Envelope.from_json` (structure only, nothing verified), then call
:func:`verify` with a :class:`~keys.policy.Policy`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Final

from .ed25519 import SIGNATURE_BYTES, SigningKey
from .encoding import (
    b64std_decode,
    b64std_encode,
    expect_object,
    json_dumps,
    json_loads,
    write_b64,
)
from .errors import DecodeError, TooLarge, VerificationError
from .policy import Policy

#: Payload types are ours to choose; 128 characters is ample for a media type.
MAX_PAYLOAD_TYPE: Final = 128
#: Default payload limit: the 100,000-name list of benchmarks/lists.py (60 % Cyrillic,
#: two bytes a letter; names and dates of birth) is 10.4 MiB of JSON.
DEFAULT_MAX_PAYLOAD: Final = 16 * 1024 * 1024
#: Two delegations, a handful of guarantors and witnesses: 32 is far beyond real use.
MAX_SIGNATURES: Final = 32
MAX_KEYID: Final = 64


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding:
    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` (lengths in ASCII decimal)."""
    return pae_prefix(payload_type, len(payload)) + payload


def pae_prefix(payload_type: str, payload_length: int) -> bytes:
    """The PAE up to the payload, so that a multi-megabyte payload is hashed and
    verified without a concatenated copy."""
    ptype = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d " % (len(ptype), ptype, payload_length)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope. Existing does not mean verified: see :func:`verify`."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    def digest(self) -> bytes:
        """SHA-256 of the PAE: the identity of the *signed statement*.

        It covers payload type and payload but no signature, so adding a co-signature
        or re-encoding a signature never changes it (no malleability)."""
        digest = hashlib.sha256(pae_prefix(self.payload_type, len(self.payload)))
        digest.update(self.payload)
        return digest.digest()

    def signer_ids(self) -> tuple[str, ...]:
        return tuple(s.keyid for s in self.signatures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": b64std_encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": self._signature_list(),
        }

    def to_json(self) -> bytes:
        """``json_dumps(self.to_dict())``, byte for byte, assembled without the text
        copies of the payload (base64 needs no JSON escaping)."""
        out = io.BytesIO()
        out.write(b'{"payload":"')
        write_b64(out, self.payload, urlsafe=False)
        out.write(b'","payloadType":')
        out.write(json_dumps(self.payload_type))
        out.write(b',"signatures":')
        out.write(json_dumps(self._signature_list()))
        out.write(b"}")
        return out.getvalue()

    def _signature_list(self) -> list[dict[str, str]]:
        return [{"keyid": s.keyid, "sig": b64std_encode(s.sig)} for s in self.signatures]

    @classmethod
    def from_dict(cls, value: object, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Envelope:
        obj = expect_object(value, required=("payload", "payloadType", "signatures"),
                            what="signed envelope")
        ptype = obj["payloadType"]
        if not isinstance(ptype, str) or not 0 < len(ptype) <= MAX_PAYLOAD_TYPE:
            raise DecodeError("signed envelope: malformed payloadType")
        payload = b64std_decode(obj["payload"], max_bytes=max_payload, field="payload")
        raw_sigs = obj["signatures"]
        if not isinstance(raw_sigs, list):
            raise DecodeError("signed envelope: signatures must be a list")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise TooLarge(f"signed envelope: more than {MAX_SIGNATURES} signatures")
        sigs: list[Signature] = []
        for item in raw_sigs:
            entry = expect_object(item, required=("keyid", "sig"), what="signature")
            keyid = entry["keyid"]
            if not isinstance(keyid, str) or not 0 < len(keyid) <= MAX_KEYID:
                raise DecodeError("signature: malformed keyid")
            sig = b64std_decode(entry["sig"], max_bytes=SIGNATURE_BYTES, field="sig")
            if len(sig) != SIGNATURE_BYTES:
                raise DecodeError("signature: an Ed25519 signature is 64 bytes")
            if any(s.keyid == keyid for s in sigs):
                raise DecodeError("signed envelope: two signatures with the same keyid")
            sigs.append(Signature(keyid, sig))
        return cls(ptype, payload, tuple(sigs))

    @classmethod
    def from_json(cls, data: bytes | memoryview | str, *,
                  max_payload: int = DEFAULT_MAX_PAYLOAD) -> Envelope:
        # base64 inflates by 4/3; the rest of the envelope is small.
        limit = max_payload * 4 // 3 + 4096 + MAX_SIGNATURES * 200
        return cls.from_dict(json_loads(data, max_bytes=limit, what="signed envelope"),
                             max_payload=max_payload)


def sign(payload_type: str, payload: bytes, signer: SigningKey) -> Envelope:
    """Create an envelope with one signature."""
    return cosign(Envelope(payload_type, payload), signer)


def cosign(envelope: Envelope, signer: SigningKey) -> Envelope:
    """Return ``envelope`` with ``signer``'s signature added over the same bytes.

    Raises ``ValueError`` if this signer has already signed it."""
    if not 0 < len(envelope.payload_type) <= MAX_PAYLOAD_TYPE:
        raise ValueError("payload type must be 1 to 128 characters")
    if signer.id in envelope.signer_ids():
        raise ValueError("this identity has already signed this envelope")
    sig = signer.sign(pae(envelope.payload_type, envelope.payload))
    return Envelope(envelope.payload_type, envelope.payload,
                    (*envelope.signatures, Signature(signer.id, sig)))


@dataclass(frozen=True)
class Verified:
    """The result of a successful :func:`verify`: what was signed, and by whom."""

    payload_type: str
    payload: bytes
    signers: frozenset[str]
    digest: bytes


def verify(envelope: Envelope, policy: Policy, *, payload_type: str) -> Verified:
    """Verify ``envelope`` against ``policy``; return what it signs.

    1. The payload type must be exactly ``payload_type`` (domain separation).
    2. Every signature whose keyid names a key the policy knows must verify over the
       PAE; one that does not fails the whole envelope (fail closed: it is tampering).
       Signatures by keys the policy does not know are ignored.
    3. The set of valid signers must satisfy the policy.

    Raises :class:`~keys.errors.VerificationError` (or :class:`~keys.errors.PolicyNotMet`
    naming present and missing signers). Never returns a boolean.
    """
    # Step 1.
    if envelope.payload_type != payload_type:
        raise VerificationError(
            f"this is a {envelope.payload_type[:60]!r} object, not a {payload_type!r}")
    # Step 2.
    known = policy.keys()
    prefix = pae_prefix(envelope.payload_type, len(envelope.payload))
    valid: set[str] = set()
    for signature in envelope.signatures:
        key = known.get(signature.keyid)
        if key is None:
            continue
        try:
            key.verify_parts(signature.sig, prefix, envelope.payload)
        except VerificationError:
            raise VerificationError(
                f"the signature of {signature.keyid} does not verify: "
                "the document was altered or the signature forged") from None
        valid.add(signature.keyid)
    # Step 3.
    policy.check(frozenset(valid))
    return Verified(envelope.payload_type, envelope.payload, frozenset(valid),
                    envelope.digest())
