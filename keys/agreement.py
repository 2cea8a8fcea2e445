"""Agreements: one envelope over the exact bytes of an accepted proposal.

An agreement is a DSSE envelope with payload type :data:`AGREEMENT_TYPE` whose
payload is, byte for byte, the payload of the accepted proposal. Both delegations
sign it; the named guarantors co-sign the same bytes (:func:`keys.dsse.cosign`).
The **agreement id** is the base64url SHA-256 of its PAE; the id of the accepted
proposal is recomputed from the same payload under :data:`~keys.proposal.PROPOSAL_TYPE`,
so an agreement names its proposal without carrying an extra field.

Why a dedicated payload type rather than co-signing the proposal envelope itself:

* a signature on a proposal means "I offer", one on an agreement "I am bound".
  DSSE's PAE includes the payload type, so neither can be replayed as the other: the
  proposer's signature on an offer (which may later be superseded or expire) can
  never be presented as agreement to it, and a guarantor only ever signs agreements;
* the two have different ids, so a thread, an agreement and a handover record never
  confuse "the offer" with "the deal";
* the bytes are still exactly the proposal's, so "the exact terms both signed" is
  checkable by anyone holding the thread.

Flow::

    acceptor:  accept_proposal(thread, id, key)   -> acceptance + agreement (1 signature)
    proposer:  confirm_agreement(agreement, thread, key, keys, clock=...)   -> 2 signatures
    guarantor: countersign_agreement(agreement, key, keys)       -> +1 each
    anyone:    add_signatures(mine, returned, keys)   (merge a returned copy, strictly;
               keys.cosigning.gather_signatures merges many copies, keeping what stands)
               agreement_status(agreement, keys)      (present / missing, no raise)
               verify_agreement(agreement, keys)      (raises unless complete)

The proposer signs only after seeing an acceptance of its *latest* proposal, dated
before its expiry, and (by its own clock, as the acceptance's date is the acceptor's to
write) only before that expiry unless it says the acceptance came in time: an acceptance
of a superseded or expired proposal does not become a two-party agreement unnoticed.
**Complete** means the policy of :func:`agreement_policy` holds: both parties and
every named guarantor, or the stated quorum of guarantors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock
from .cosigning import SignatureStatus, merge_signatures, signature_status
from .ed25519 import SigningKey, VerifyKey
from .encoding import b64url_encode, format_time
from .errors import DecodeError, PolicyNotMet
from .negotiation_errors import NotAcceptable, NotASigner, TermsMismatch
from .policy import AllOf, AtLeast, Policy, Signer
from .proposal import (
    MAX_PROPOSAL_BYTES,
    Decision,
    Proposal,
    Terms,
    parse_proposal_payload,
    resolve_keys,
)
from .thread import CLOCK_SKEW, Thread, accept

AGREEMENT_TYPE: Final = "application/vnd.backchannel.agreement+json"


@dataclass(frozen=True)
class Agreement:
    """A parsed agreement (structure and terms; signatures are checked separately)."""

    id: str
    proposal: Proposal
    envelope: dsse.Envelope = field(repr=False)

    @property
    def terms(self) -> Terms:
        return self.proposal.terms

    @property
    def proposal_id(self) -> str:
        return self.proposal.id

    def to_json(self) -> bytes:
        return self.envelope.to_json()


def parse_agreement(envelope: dsse.Envelope) -> Agreement:
    """Parse an agreement envelope. Raises :class:`DecodeError` or
    :class:`~keys.negotiation_errors.InvalidTerms`."""
    if envelope.payload_type != AGREEMENT_TYPE:
        raise DecodeError("this is not an agreement")
    proposal = parse_proposal_payload(envelope.payload, envelope)
    return Agreement(b64url_encode(envelope.digest()), proposal, envelope)


def load_agreement(data: bytes | str | dict[str, Any]) -> Agreement:
    if isinstance(data, dict):
        return parse_agreement(dsse.Envelope.from_dict(data, max_payload=MAX_PROPOSAL_BYTES))
    return parse_agreement(dsse.Envelope.from_json(data, max_payload=MAX_PROPOSAL_BYTES))


def unsigned_agreement(proposal: Proposal) -> Agreement:
    """The agreement over ``proposal``'s exact bytes, with no signature yet."""
    return parse_agreement(dsse.Envelope(AGREEMENT_TYPE, proposal.envelope.payload))


def agreement_policy(terms: Terms, keys: Mapping[str, VerifyKey]) -> Policy:
    """Both parties, and every named guarantor or the stated quorum of them.
    Raises :class:`~keys.negotiation_errors.UnknownSigner` for a missing key."""
    found = resolve_keys([*terms.parties, *terms.guarantors], keys)
    parts: list[Policy] = [Signer(found[p]) for p in terms.parties]
    if terms.guarantors:
        parts.append(AtLeast(terms.guarantor_quorum,
                             *(Signer(found[g]) for g in terms.guarantors)))
    return AllOf(*parts)


def parties_policy(terms: Terms, keys: Mapping[str, VerifyKey]) -> Policy:
    found = resolve_keys(list(terms.parties), keys)
    return AllOf(*(Signer(found[p]) for p in terms.parties))


def agreement_status(agreement: Agreement, keys: Mapping[str, VerifyKey]) -> SignatureStatus:
    """Which required signatures are present, missing or invalid (never raises for a
    signature; :class:`UnknownSigner` if a required key is not in ``keys``)."""
    return signature_status(agreement.envelope, agreement_policy(agreement.terms, keys))


def verify_agreement(agreement: Agreement, keys: Mapping[str, VerifyKey]) -> Agreement:
    """Raise unless every signature by a required signer verifies and the agreement is
    complete: :class:`~keys.errors.VerificationError`, or
    :class:`~keys.errors.PolicyNotMet` naming present and missing signers."""
    dsse.verify(agreement.envelope, agreement_policy(agreement.terms, keys),
                payload_type=AGREEMENT_TYPE)
    return agreement


def accept_proposal(thread: Thread, proposal_id: str, signer: SigningKey, *,
                    clock: Clock = SYSTEM_CLOCK) -> tuple[Decision, Thread, Agreement]:
    """Accept the latest proposal of ``thread`` and sign the agreement over its bytes.
    Send both the acceptance and the agreement to the proposer.

    Raises :class:`NotAcceptable` (superseded, expired, own proposal, closed)."""
    decision, longer = accept(thread, proposal_id, signer, clock=clock)
    proposal = longer.messages[-2]
    if not isinstance(proposal, Proposal):  # accept() only answers proposals
        raise TypeError("an acceptance answers a proposal")
    signed = dsse.cosign(unsigned_agreement(proposal).envelope, signer)
    return decision, longer, parse_agreement(signed)


def check_agreement_in_thread(agreement: Agreement, thread: Thread) -> Decision:
    """Check that ``thread`` ends with the acceptance of exactly the proposal that
    ``agreement`` is over, and return that acceptance.

    Raises :class:`NotAcceptable` (the thread is not closed by an acceptance) or
    :class:`TermsMismatch` (the agreement is over other terms: altered, or an earlier
    version)."""
    latest = thread.latest
    if not isinstance(latest, Decision) or latest.kind != "acceptance":
        raise NotAcceptable("the negotiation has not been closed by an acceptance, so "
                            "there is nothing to agree to yet")
    accepted = thread.find(latest.proposal)
    if not isinstance(accepted, Proposal):
        raise NotAcceptable("the acceptance does not answer a proposal")
    if agreement.proposal_id != accepted.id:
        where = thread.find(agreement.proposal_id)
        if where is not None:
            raise TermsMismatch("the agreement is over an earlier proposal of this "
                                "thread, not over the accepted one")
        raise TermsMismatch("the agreement's terms differ from the accepted proposal: "
                            "they were altered")
    return latest


def confirm_agreement(agreement: Agreement, thread: Thread, signer: SigningKey,
                      keys: Mapping[str, VerifyKey], *, clock: Clock = SYSTEM_CLOCK,
                      after_expiry: bool = False) -> Agreement:
    """The proposer's signature, after the other party's acceptance.

    Checks, in order: the thread ends with an acceptance of exactly these terms;
    the signer is the party whose proposal was accepted; the acceptor has signed these
    bytes; unless the signer confirmed before, the proposal has not expired (unless
    ``after_expiry``: the acceptance's own date is the acceptor's to write, so only the
    proposer can say that it came in time). Raises :class:`NotAcceptable`,
    :class:`TermsMismatch`, :class:`NotASigner` or
    :class:`~keys.errors.VerificationError`."""
    acceptance = check_agreement_in_thread(agreement, thread)
    if signer.id != agreement.proposal.author:
        raise NotASigner("only the party whose proposal was accepted confirms the "
                         "agreement; the acceptor signed it when accepting")
    acceptor = resolve_keys([acceptance.author], keys)[acceptance.author]
    dsse.verify(agreement.envelope, Signer(acceptor), payload_type=AGREEMENT_TYPE)
    if signer.id in agreement.envelope.signer_ids():
        return agreement  # confirmed before (sent again): nothing is signed now
    expires = agreement.terms.expires
    if not after_expiry and clock.now() > expires + CLOCK_SKEW:
        raise NotAcceptable(
            f"your proposal expired on {format_time(expires)}; the acceptance is dated "
            f"{format_time(acceptance.created)}, a date its sender chose. Confirm only if "
            "you know it reached you before the proposal expired (--after-expiry)")
    return parse_agreement(dsse.cosign(agreement.envelope, signer))


def countersign_agreement(agreement: Agreement, signer: SigningKey,
                          keys: Mapping[str, VerifyKey]) -> Agreement:
    """A guarantor's co-signature over the same bytes. The guarantor must be named in
    the terms, and both parties must already have signed (a guarantor stands behind
    an agreement, not an offer). Raises :class:`NotASigner`,
    :class:`~keys.errors.PolicyNotMet` or :class:`~keys.errors.VerificationError`."""
    if signer.id not in agreement.terms.guarantors:
        raise NotASigner("you are not named as a guarantor of this agreement")
    require_parties(agreement.envelope, agreement.terms.parties, "the agreement")
    dsse.verify(agreement.envelope, parties_policy(agreement.terms, keys),
                payload_type=AGREEMENT_TYPE)
    if signer.id in agreement.envelope.signer_ids():
        return agreement
    return parse_agreement(dsse.cosign(agreement.envelope, signer))


def require_parties(envelope: dsse.Envelope, parties: Sequence[str], what: str) -> None:
    """A plain reason when a co-signer comes before both parties have signed."""
    present = frozenset(envelope.signer_ids())
    missing = frozenset(parties) - present
    if missing:
        raise PolicyNotMet(f"both parties must sign {what} before a guarantor or witness "
                           f"does; still missing: {', '.join(sorted(missing))}",
                           present & frozenset(parties), missing)


def add_signatures(agreement: Agreement, returned: dsse.Envelope,
                   keys: Mapping[str, VerifyKey]) -> Agreement:
    """Merge the signatures of a copy returned by a party or guarantor. Raises
    :class:`TermsMismatch` if the copy is of a different version of the terms, and
    :class:`NotASigner` for a signature by someone not named in the agreement."""
    named = {*agreement.terms.parties, *agreement.terms.guarantors}
    strangers = [s.keyid for s in returned.signatures if s.keyid not in named]
    if returned.digest() == agreement.envelope.digest() and strangers:
        raise NotASigner(f"{strangers[0]} is neither a party nor a guarantor of this "
                         "agreement")
    return parse_agreement(merge_signatures(agreement.envelope, returned, keys))
