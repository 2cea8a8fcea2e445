"""Co-signed documents: which required signatures are there, and merging new ones.

An agreement or a handover record travels between parties, guarantors and witnesses;
each adds a signature over the *same* bytes (:func:`keys.dsse.cosign`) and sends the
envelope back. :func:`merge_signatures` folds such a returned envelope into the one
in hand, refusing one over different bytes (a co-signature over another version of
the terms). :func:`signature_status` reports, without raising, which signatures a
policy requires, which are present and valid, which are missing, and which are
present but do not verify.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import dsse
from .ed25519 import VerifyKey
from .encoding import b64url_encode
from .errors import TooLarge, VerificationError
from .negotiation_errors import TermsMismatch
from .policy import Policy


@dataclass(frozen=True)
class SignatureStatus:
    """What a verifier found on one envelope for one policy."""

    required: str
    present: tuple[str, ...]
    missing: tuple[str, ...]
    invalid: tuple[str, ...]
    others: tuple[str, ...]
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {"required": self.required, "present": list(self.present),
                "missing": list(self.missing), "invalid": list(self.invalid),
                "others": list(self.others), "complete": self.complete}


def signature_status(envelope: dsse.Envelope, policy: Policy) -> SignatureStatus:
    """Check every signature by a key ``policy`` knows. Never raises for a bad
    signature: it is listed under ``invalid`` and the status is not complete.
    Signatures by identities the policy does not count are listed under ``others``
    (not verified: nothing is known about them)."""
    known = policy.keys()
    message = dsse.pae(envelope.payload_type, envelope.payload)
    valid: set[str] = set()
    invalid: list[str] = []
    others: list[str] = []
    for signature in envelope.signatures:
        key = known.get(signature.keyid)
        if key is None:
            others.append(signature.keyid)
            continue
        try:
            key.verify(message, signature.sig)
        except VerificationError:
            invalid.append(signature.keyid)
            continue
        valid.add(signature.keyid)
    ordered = list(known)
    return SignatureStatus(
        required=policy.describe(),
        present=tuple(i for i in ordered if i in valid),
        missing=tuple(i for i in ordered if i not in valid),
        invalid=tuple(invalid), others=tuple(others),
        complete=not invalid and policy.satisfied(frozenset(valid)))


def merge_signatures(base: dsse.Envelope, returned: dsse.Envelope,
                     keys: Mapping[str, VerifyKey]) -> dsse.Envelope:
    """Add to ``base`` the signatures of ``returned`` that it lacks.

    ``returned`` must be over exactly the same payload type and bytes, otherwise
    :class:`TermsMismatch` (it was signed over another version). Every added
    signature must be by a key in ``keys`` and verify; otherwise
    :class:`VerificationError`."""
    if returned.digest() != base.digest():
        raise TermsMismatch(
            "the returned document was signed over a different version "
            f"({b64url_encode(returned.digest())[:12]}…, this one is "
            f"{b64url_encode(base.digest())[:12]}…): its signatures cannot be added")
    message = dsse.pae(base.payload_type, base.payload)
    have = set(base.signer_ids())
    added = list(base.signatures)
    for signature in returned.signatures:
        if signature.keyid in have:
            continue
        key = keys.get(signature.keyid)
        if key is None or key.id != signature.keyid:
            raise VerificationError(f"the signature of {signature.keyid} cannot be checked: "
                                    "its key is not known here")
        try:
            key.verify(message, signature.sig)
        except VerificationError:
            raise VerificationError(
                f"the signature of {signature.keyid} does not verify over this version: "
                "it was made over other terms or forged") from None
        added.append(signature)
        have.add(signature.keyid)
    if len(added) > dsse.MAX_SIGNATURES:
        raise TooLarge(f"more than {dsse.MAX_SIGNATURES} signatures on one document")
    return dsse.Envelope(base.payload_type, base.payload, tuple(added))


def gather_signatures(copies: Sequence[dsse.Envelope], keys: Mapping[str, VerifyKey], *,
                      signers: Collection[str]) -> dsse.Envelope:
    """:func:`gather` without the disputed key ids."""
    return gather(copies, keys, signers=signers).envelope


@dataclass(frozen=True)
class Gathered:
    envelope: dsse.Envelope
    #: Signers whose key is unknown here and whose copies carried different
    #: signatures: left out until the reader has the key (then judged).
    disputed: frozenset[str]


def gather(copies: Sequence[dsse.Envelope], keys: Mapping[str, VerifyKey], *,
           signers: Collection[str]) -> Gathered:
    """One envelope over the first copy's bytes with the signatures of every copy over
    the same bytes that can stand: by one of ``signers`` and, when the key is known,
    verifying. Unlike :func:`merge_signatures`, nothing raises: copies come from
    several senders, and one bad copy (another version, a forged or stray signature)
    must neither hide the others' signatures nor stop the merge.

    A keyid whose key is unknown cannot be judged here; its signature is kept, for a
    verifier with the key, only when every copy carrying one agrees on it. Our
    signers sign deterministically (Ed25519, RFC 8032), so copies that disagree hold
    at least one forgery, and keeping the wrong one would make the whole envelope
    fail for that verifier (every signature by a known key must verify): such a
    keyid is left out and named in ``disputed``, so that the reader can be told to
    add the signer's card, after which the genuine signature is kept."""
    if not copies:
        raise ValueError("no copies to gather")
    base = copies[0]
    digest = base.digest()
    message = dsse.pae(base.payload_type, base.payload)
    kept: dict[str, dsse.Signature] = {}
    verified: set[str] = set()
    disputed: set[str] = set()
    for copy in copies:
        if copy.digest() != digest:
            continue
        for signature in copy.signatures:
            keyid = signature.keyid
            if keyid not in signers or keyid in verified:
                continue
            key = keys.get(keyid)
            if key is None:
                if kept.setdefault(keyid, signature).sig != signature.sig:
                    disputed.add(keyid)
                continue
            if key.id != keyid:
                continue
            try:
                key.verify(message, signature.sig)
            except VerificationError:
                continue
            kept[keyid] = signature
            verified.add(keyid)
    ordered = tuple(s for s in kept.values() if s.keyid not in disputed)[:dsse.MAX_SIGNATURES]
    return Gathered(dsse.Envelope(base.payload_type, base.payload, ordered),
                    frozenset(disputed))
