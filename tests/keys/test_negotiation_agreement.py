"""Agreements (both delegations + guarantors over the exact proposal bytes) and list
disclosures; an independent DSSE verifier (securesystemslib) accepts our signatures."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from negotiation_world import World, agree, key, rand
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import SSlibKey

from keys import dsse
from keys.agreement import (
    AGREEMENT_TYPE,
    accept_proposal,
    add_signatures,
    agreement_status,
    confirm_agreement,
    countersign_agreement,
    load_agreement,
    parse_agreement,
    unsigned_agreement,
    verify_agreement,
)
from keys.clock import FixedClock
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import DecodeError, PolicyNotMet, VerificationError
from keys.listref import (
    check_list,
    entry_digest,
    list_digest,
    load_disclosure,
    make_disclosure,
    salt_list,
    verify_disclosure,
)
from keys.negotiation_errors import ListMismatch, NotAcceptable, NotASigner, TermsMismatch
from keys.proposal import PROPOSAL_TYPE, parse_proposal
from keys.thread import accept, build_thread, counter


@pytest.fixture
def world() -> World:
    return World()


def sslib_key(signer) -> SSlibKey:
    return SSlibKey(keyid=signer.id, keytype="ed25519", scheme="ed25519",
                    keyval={"public": signer.public.raw.hex()})


def test_full_agreement(world):
    thread, agreement = agree(world)
    proposal = thread.messages[0]
    # One envelope over the exact proposal bytes, under its own payload type.
    assert agreement.envelope.payload == proposal.envelope.payload
    assert agreement.envelope.payload_type == AGREEMENT_TYPE
    assert agreement.proposal_id == proposal.id
    assert agreement.id != proposal.id
    assert agreement.envelope.signer_ids() == (world.moscow.id, world.kyiv.id, world.icrc.id,
                                               world.vatican.id)
    assert verify_agreement(agreement, world.keys) is agreement
    status = agreement_status(agreement, world.keys)
    assert status.complete and not status.missing and not status.invalid
    assert load_agreement(agreement.to_json()) == agreement


def test_status_as_signatures_arrive(world):
    thread = world.opened()
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    status = agreement_status(agreement, world.keys)
    assert status.present == (world.moscow.id,)
    assert set(status.missing) == {world.kyiv.id, world.icrc.id, world.vatican.id}
    assert not status.complete
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    agreement = countersign_agreement(agreement, world.icrc, world.keys)
    with pytest.raises(PolicyNotMet) as info:
        verify_agreement(agreement, world.keys)
    assert info.value.missing == {world.vatican.id}
    assert info.value.present == {world.kyiv.id, world.moscow.id, world.icrc.id}
    assert "at least" not in str(info.value) and "all of" in str(info.value)


def test_a_quorum_of_guarantors(world):
    proposal = world.propose(quorum=1)
    thread = build_thread([proposal])
    _, thread, agreement = accept_proposal(thread, proposal.id, world.moscow,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    assert not agreement_status(agreement, world.keys).complete
    agreement = countersign_agreement(agreement, world.vatican, world.keys)
    status = agreement_status(agreement, world.keys)
    assert status.complete and status.missing == (world.icrc.id,)
    assert "at least 1 of" in status.required
    verify_agreement(agreement, world.keys)


def test_no_guarantors_means_both_parties(world):
    proposal = world.propose(guarantors=())
    thread = build_thread([proposal])
    _, thread, agreement = accept_proposal(thread, proposal.id, world.moscow,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    verify_agreement(agreement, world.keys)


def test_a_proposal_signature_is_not_an_agreement_signature(world):
    proposal = world.propose()
    # Kyiv's signature on its *offer*, pasted onto the agreement, does not verify:
    # the payload type is part of what is signed.
    pasted = replace(unsigned_agreement(proposal).envelope,
                     signatures=proposal.envelope.signatures)
    status = agreement_status(parse_agreement(pasted), world.keys)
    assert status.invalid == (world.kyiv.id,) and not status.complete


def test_signing_altered_terms_is_refused(world):
    thread = world.opened()
    _, thread = accept(thread, thread.latest.id, world.moscow, clock=world.clock)
    body = json_loads(thread.messages[0].envelope.payload, max_bytes=1 << 20)
    body["transfers"][1]["counts"] = {"pow": 2, "civilians": 1, "children": 0, "remains": 0}
    altered = parse_agreement(dsse.sign(AGREEMENT_TYPE, json_dumps(body), world.moscow))
    with pytest.raises(TermsMismatch, match="differ from the accepted proposal: they were "
                                            "altered"):
        confirm_agreement(altered, thread, world.kyiv, world.keys, clock=world.clock)


def test_altering_a_signed_agreement_breaks_every_signature(world):
    _, agreement = agree(world)
    payload = agreement.envelope.payload.replace(b"Sumy border crossing", b"Kursk crossing")
    tampered = parse_agreement(replace(agreement.envelope, payload=payload))
    with pytest.raises(VerificationError, match="altered or the signature forged"):
        verify_agreement(tampered, world.keys)
    status = agreement_status(tampered, world.keys)
    assert set(status.invalid) == set(agreement.envelope.signer_ids())
    assert not status.complete


def test_an_agreement_over_an_earlier_proposal_is_refused(world):
    thread = world.opened()
    first = thread.latest
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.kyiv, world.terms(place="Sumy, gate 3"),
                        clock=world.clock)
    _, thread, _ = accept_proposal(thread, thread.latest.id, world.moscow, clock=world.clock)
    early = parse_agreement(dsse.cosign(unsigned_agreement(first).envelope, world.moscow))
    with pytest.raises(TermsMismatch, match="earlier proposal"):
        confirm_agreement(early, thread, world.kyiv, world.keys, clock=world.clock)


def test_accepting_a_superseded_proposal_never_yields_an_agreement(world):
    thread = world.opened()
    first = thread.latest.id
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.kyiv, world.terms(place="Sumy, gate 3"),
                        clock=world.clock)
    with pytest.raises(NotAcceptable, match="superseded"):
        accept_proposal(thread, first, world.moscow, clock=world.clock)


def test_accepting_an_expired_proposal_never_yields_an_agreement(world):
    thread = world.opened()
    world.clock.advance(days=5)
    with pytest.raises(NotAcceptable, match="expired"):
        accept_proposal(thread, thread.latest.id, world.moscow, clock=world.clock)


def test_a_backdated_acceptance_of_an_expired_proposal_is_not_confirmed(world):
    # Moscow accepts on time by its own date, but sends it after the proposal expired:
    # the acceptance's date is the acceptor's to write, so the proposer's clock decides.
    thread = world.opened()
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    late = FixedClock(world.terms().expires + timedelta(days=17))
    with pytest.raises(NotAcceptable, match=r"expired on .*--after-expiry"):
        confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=late)
    # The proposer who knows it came in time says so.
    confirmed = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=late,
                                  after_expiry=True)
    assert set(confirmed.envelope.signer_ids()) == {world.kyiv.id, world.moscow.id}
    # Confirmed in time, then sent again after the expiry: nothing to refuse.
    again = confirm_agreement(confirmed, thread, world.kyiv, world.keys, clock=late)
    assert again.envelope == confirmed.envelope
    # Within the clock skew of the expiry it is still confirmed.
    near = FixedClock(world.terms().expires + timedelta(minutes=4))
    confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=near)


def test_confirming_needs_an_acceptance_and_the_proposer(world):
    thread = world.opened()
    agreement = parse_agreement(dsse.cosign(unsigned_agreement(thread.latest).envelope,
                                            world.moscow))
    with pytest.raises(NotAcceptable, match="not been closed by an acceptance"):
        confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    with pytest.raises(NotASigner, match="only the party whose proposal"):
        confirm_agreement(agreement, thread, world.moscow, world.keys, clock=world.clock)
    # An agreement the acceptor did not sign is not confirmed.
    unsigned = unsigned_agreement(thread.messages[0])
    with pytest.raises(PolicyNotMet):
        confirm_agreement(unsigned, thread, world.kyiv, world.keys, clock=world.clock)


def test_guarantor_rules(world):
    thread = world.opened()
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    with pytest.raises(PolicyNotMet, match="both parties must sign the agreement before a guarantor"):
        countersign_agreement(agreement, world.icrc, world.keys)
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    with pytest.raises(NotASigner, match="not named as a guarantor"):
        countersign_agreement(agreement, world.stranger, world.keys)
    once = countersign_agreement(agreement, world.icrc, world.keys)
    assert countersign_agreement(once, world.icrc, world.keys) is once


def test_a_guarantor_signing_a_different_version_is_refused(world):
    # The guarantor was shown the first proposal; the parties then agreed to a counter.
    thread = world.opened()
    first = thread.latest
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.moscow, world.terms(place="Belgorod crossing"),
                        clock=world.clock)
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.kyiv,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.moscow, world.keys, clock=world.clock)
    old = unsigned_agreement(first).envelope
    for signer in (world.kyiv, world.moscow, world.icrc):
        old = dsse.cosign(old, signer)
    # 1. Returned as a whole: the copy is over other bytes.
    with pytest.raises(TermsMismatch, match="signed over a different version"):
        add_signatures(agreement, old, world.keys)
    # 2. The guarantor's signature lifted onto the agreed version: it does not verify.
    lifted = replace(agreement.envelope, signatures=(*agreement.envelope.signatures,
                                                     old.signatures[2]))
    status = agreement_status(parse_agreement(lifted), world.keys)
    assert status.invalid == (world.icrc.id,)
    with pytest.raises(VerificationError, match=f"signature of {world.icrc.id} does not"):
        verify_agreement(parse_agreement(lifted), world.keys)
    forged_copy = replace(agreement.envelope, signatures=(old.signatures[2],))
    with pytest.raises(VerificationError, match="does not verify over this version"):
        add_signatures(agreement, forged_copy, world.keys)


def test_merging_returned_copies(world):
    thread = world.opened()
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    from_icrc = countersign_agreement(agreement, world.icrc, world.keys)
    from_vatican = countersign_agreement(agreement, world.vatican, world.keys)
    merged = add_signatures(add_signatures(agreement, from_icrc.envelope, world.keys),
                            from_vatican.envelope, world.keys)
    verify_agreement(merged, world.keys)
    stranger = dsse.cosign(agreement.envelope, world.stranger)
    with pytest.raises(NotASigner, match="neither a party nor a guarantor"):
        add_signatures(agreement, stranger, world.keys)


def test_agreement_decoding(world):
    _, agreement = agree(world)
    with pytest.raises(DecodeError, match="not an agreement"):
        parse_agreement(replace(agreement.envelope, payload_type=PROPOSAL_TYPE))
    with pytest.raises(DecodeError):
        load_agreement(b'{"payload": "", "payloadType": "x"}')
    # The proposal id is recomputed from the same bytes.
    as_proposal = parse_proposal(dsse.Envelope(PROPOSAL_TYPE, agreement.envelope.payload))
    assert as_proposal.id == agreement.proposal_id


def test_securesystemslib_accepts_every_agreement_signature(world):
    _, agreement = agree(world)
    envelope = SslibEnvelope.from_dict(json_loads(agreement.to_json(), max_bytes=1 << 20))
    signers = (world.kyiv, world.moscow, world.icrc, world.vatican)
    verified = envelope.verify([sslib_key(s) for s in signers], threshold=4)
    assert set(verified) == {s.id for s in signers}
    assert envelope.pae() == dsse.pae(AGREEMENT_TYPE, agreement.envelope.payload)
    # And it rejects our envelope once the terms are altered.
    payload = agreement.envelope.payload.replace(b'"pow":3', b'"pow":4')
    tampered = SslibEnvelope.from_dict(json_loads(
        replace(agreement.envelope, payload=payload).to_json(), max_bytes=1 << 20))
    with pytest.raises(SslibVerificationError):
        tampered.verify([sslib_key(s) for s in signers], threshold=1)


# --- list digests and disclosures ----------------------------------------------------

def test_salted_list_digest_needs_the_salt(world):
    salted = world.kyiv_list
    assert salted.digest == list_digest(salted.salt, salted.data)
    # A guessed list does not open the digest without the salt; another salt, another digest.
    assert list_digest(bytes(32), salted.data) != salted.digest
    assert salt_list(salted.data, 3, random=rand("other")).digest != salted.digest
    check_list(salted.digest, salted.salt, salted.data)
    with pytest.raises(ListMismatch):
        check_list(salted.digest, salted.salt, salted.data + b" ")
    assert entry_digest(salted.salt, b"x") != list_digest(salted.salt, b"x")
    assert "salt" not in repr(salted) and salted.data.decode("latin-1") not in repr(salted)
    with pytest.raises(ValueError):
        list_digest(b"short", b"x")


def test_disclosure_to_a_guarantor(world):
    disclosure = make_disclosure(world.kyiv, world.kyiv_list, to=world.icrc.id,
                                 clock=world.clock)
    loaded = load_disclosure(disclosure.envelope.to_json())
    salted = verify_disclosure(loaded, world.kyiv.public,
                               expected_digest=world.kyiv_list.digest)
    assert salted.data == world.kyiv_list.data and salted.entries == 3
    assert loaded.recipient == world.icrc.id
    with pytest.raises(ListMismatch, match="not the list named in the agreement"):
        verify_disclosure(loaded, world.kyiv.public, expected_digest=world.moscow_list.digest)
    with pytest.raises(VerificationError):
        verify_disclosure(loaded, world.moscow.public)


def test_a_disclosure_of_another_list_is_refused(world):
    disclosure = make_disclosure(world.kyiv, world.kyiv_list, to=world.icrc.id,
                                 clock=world.clock)
    body = json_loads(disclosure.envelope.payload, max_bytes=1 << 22)
    body["data"] = b64url_encode(world.kyiv_list.data.replace(b"x3", b"x4"))
    forged = dsse.sign(disclosure.envelope.payload_type, json_dumps(body), world.kyiv)
    with pytest.raises(ListMismatch, match="does not match the digest"):
        load_disclosure(forged.to_json())
    body = json_loads(disclosure.envelope.payload, max_bytes=1 << 22)
    body["salt"] = "A" * 43
    forged = dsse.sign(disclosure.envelope.payload_type, json_dumps(body), world.kyiv)
    with pytest.raises(ListMismatch, match="does not match the digest"):
        load_disclosure(forged.to_json())


def test_keys_are_distinct_in_the_world():
    assert len({key(n).id for n in ("kyiv", "moscow", "icrc", "vatican")}) == 4
