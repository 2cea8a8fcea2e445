"""client.negotiation.collect: documents from anyone in the contacts cannot break,
fork or supersede a negotiation, nor hide a signature (a review found all three)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "keys"))

from negotiation_world import World, agree

from client.commands.negotiation import _warn_disputed
from client.negotiation import NegotiationNotFound, collect, handover_of
from keys import dsse
from keys.cosigning import gather_signatures
from keys.identity import Identity
from keys.proposal import PROPOSAL_TYPE, proposal_payload


def _record(kind: str, body: dict[str, Any], n: int = 0) -> Any:
    return SimpleNamespace(kind=kind, body=body, routing=SimpleNamespace(id=f"{n:043d}"))


def _legit(world: World):
    thread, agreement = agree(world)
    proposal, acceptance = thread.messages[0], thread.messages[1]
    records = [_record("proposal", {"v": 1, "proposal": proposal.envelope.to_dict()}, 1),
               _record("acceptance", {"v": 1, "acceptance": acceptance.envelope.to_dict(),
                                      "agreement": agreement.envelope.to_dict()}, 2)]
    return thread, agreement, records


def test_junk_and_forged_documents_are_set_aside_and_the_negotiation_still_works():
    world = World()
    thread, agreement, records = _legit(world)
    proposal = thread.messages[0]
    junk = dsse.Envelope("application/x-junk", b"{}").to_dict()
    # An unsigned counter-proposal claiming to be Moscow's, superseding Kyiv's.
    forged = dsse.Envelope(PROPOSAL_TYPE, proposal_payload(
        world.moscow.id, world.terms(place="elsewhere"), created=proposal.created,
        supersedes=proposal.id))
    hostile = [_record("agreement", {"v": 1, "agreement": junk}, 3),
               _record("handover", {"v": 1, "handover": junk}, 4),
               _record("proposal", {"v": 1, "proposal": forged.to_dict()}, 5)]
    found = collect(hostile + records, world.keys)
    assert len(found.damaged) == 3, found.damaged
    assert sum("not a valid negotiation document" in d for d in found.damaged) == 2
    assert any("not signed by its author" in d for d in found.damaged)
    got = found.thread_of(proposal.id)
    assert [m.id for m in got.messages] == [m.id for m in thread.messages]
    merged = found.agreement(agreement.id, world.keys)
    assert set(merged.envelope.signer_ids()) == set(agreement.envelope.signer_ids())
    assert not found.has_handover(agreement.id)


def test_a_message_whose_author_is_not_a_contact_is_set_aside_with_the_reason():
    world = World()
    thread, _agreement, records = _legit(world)
    keys = {i: k for i, k in world.keys.items() if i != world.moscow.id}
    found = collect(records, keys)
    assert [m.id for m in found.messages.values()] == [thread.messages[0].id]
    assert any(f"by {world.moscow.id}, who is not in your contacts" in d
               for d in found.damaged), found.damaged


def test_a_forged_signature_in_an_earlier_copy_does_not_hide_the_real_one():
    world = World()
    _thread, agreement, records = _legit(world)
    real = agreement.envelope
    bogus = dsse.Envelope(real.payload_type, real.payload,
                          (dsse.Signature(world.kyiv.id, bytes(64)),))
    stray = dsse.cosign(dsse.Envelope(real.payload_type, real.payload),
                        Identity.create("Stray", "delegation").signing_key)
    first = _record("agreement", {"v": 1, "agreement": bogus.to_dict()}, 0)
    third = _record("agreement", {"v": 1, "agreement": stray.to_dict()}, 9)
    found = collect([first, *records, third], world.keys)
    merged = found.agreement(agreement.id, world.keys)
    assert merged.envelope.signatures == real.signatures


def test_gather_signatures_keeps_what_stands():
    world = World()
    _thread, agreement, _records = _legit(world)
    real = agreement.envelope
    other = dsse.Envelope(real.payload_type, real.payload + b" ",
                          real.signatures)  # another version: ignored
    unknown = Identity.create("ICRC deputy", "intermediary")
    judged = dsse.cosign(dsse.Envelope(real.payload_type, real.payload), unknown.signing_key)
    signers = {world.kyiv.id, world.moscow.id, world.icrc.id, world.vatican.id, unknown.id}
    out = gather_signatures([other, judged, real], world.keys, signers=signers)
    assert out.payload == other.payload and out.signatures == ()
    out = gather_signatures([judged, real], world.keys, signers=signers)
    # The unknown key's signature is kept, unjudged; each known one once, verified.
    assert [s.keyid for s in out.signatures] == [unknown.id, *real.signer_ids()]
    out = gather_signatures([real], world.keys, signers={world.kyiv.id})
    assert out.signer_ids() == (world.kyiv.id,)


def test_copies_that_disagree_on_an_unknown_key_keep_neither_signature(capsys):
    # A reader without the ICRC's card cannot judge its signature. A forged one in the
    # first copy must not stand in for the real one: kept, it would make the exported
    # agreement fail for anyone who has the ICRC's key.
    world = World()
    _thread, agreement, records = _legit(world)
    real = agreement.envelope
    assert world.icrc.id in real.signer_ids()
    forged = dsse.Envelope(real.payload_type, real.payload,
                           (dsse.Signature(world.icrc.id, bytes(64)),))
    first = _record("agreement", {"v": 1, "agreement": forged.to_dict()}, 0)
    last = _record("agreement", {"v": 1, "agreement": forged.to_dict()}, 9)
    reader = {i: k for i, k in world.keys.items() if i != world.icrc.id}
    # Whichever copy comes first: the merge no longer depends on arrival order.
    for records_in_order in ([first, *records], [*records, last]):
        found = collect(records_in_order, reader)
        merged = found.agreement(agreement.id, reader).envelope
        assert world.icrc.id not in merged.signer_ids()
        assert set(merged.signer_ids()) == set(real.signer_ids()) - {world.icrc.id}
        assert found.disputed == {agreement.id: frozenset({world.icrc.id})}
    # The officer is told which signature was left out and how to keep the real one.
    _warn_disputed(found, agreement.id, {world.icrc.id: "ICRC"})
    warning = capsys.readouterr().err
    assert warning.startswith("backchannel: warning: the signature of ICRC on "
                              f"{agreement.id[:12]}… arrived in copies that differ")
    assert "contacts add FILE" in warning and "contacts verify ALIAS" in warning
    # With the ICRC's card, the genuine signature is judged and kept, the forgery not.
    found = collect([*records, last], world.keys)
    merged = found.agreement(agreement.id, world.keys).envelope
    assert merged.signatures == real.signatures and found.disputed == {}
    found = collect([first, *records], reader)
    merged = found.agreement(agreement.id, reader).envelope
    # What is left verifies for a verifier who has every key.
    assert gather_signatures([merged], world.keys, signers=real.signer_ids()) == merged
    # Copies that agree keep the unjudged signature, so it reaches that verifier.
    found = collect([*records, _record("agreement", {"v": 1, "agreement": real.to_dict()}, 7)],
                    reader)
    merged = found.agreement(agreement.id, reader).envelope
    assert dict((s.keyid, s.sig) for s in merged.signatures)[world.icrc.id] == next(
        s.sig for s in real.signatures if s.keyid == world.icrc.id)


def test_handover_copies_are_gathered_the_same_way():
    # Kyiv's record, Moscow's signed copy, the witness's countersigned copy, and a copy
    # carrying a forged witness signature that arrived first: the merge has all three
    # real signatures and verifies.
    from keys.handover import (
        EntryRef,
        countersign_handover,
        make_handover,
        sign_handover,
        verify_handover,
    )

    world = World()
    _thread, agreement, records = _legit(world)
    world.clock.advance(days=8, hours=3)
    delivered = {world.kyiv.id: [EntryRef(world.kyiv_list.digest, i, c) for i, c in
                                 enumerate(("pow", "pow", "civilians"))],
                 world.moscow.id: [EntryRef(world.moscow_list.digest, 0, "pow"),
                                   EntryRef(world.moscow_list.digest, 1, "pow"),
                                   EntryRef(world.moscow_extra.digest, 0, "pow")]}
    kyiv = make_handover(world.kyiv, agreement, place="Sumy", at=world.clock.now(),
                         delivered=delivered, witnesses=(world.icrc.id,), clock=world.clock)
    moscow = sign_handover(kyiv, agreement, world.moscow)
    icrc = countersign_handover(moscow, agreement, world.icrc, world.keys)
    forged = dsse.Envelope(kyiv.envelope.payload_type, kyiv.envelope.payload,
                           (dsse.Signature(world.icrc.id, bytes(64)),))
    copies = [_record("handover", {"v": 1, "handover": e.to_dict()}, 10 + n)
              for n, e in enumerate((forged, kyiv.envelope, moscow.envelope, icrc.envelope))]
    found = collect(records + copies, world.keys)
    assert found.has_handover(kyiv.id)
    merged = handover_of(found, kyiv.id, world.keys)
    assert set(merged.envelope.signer_ids()) == {world.kyiv.id, world.moscow.id, world.icrc.id}
    verify_handover(merged, agreement, world.keys)
    with pytest.raises(NegotiationNotFound):
        handover_of(found, "x" * 43, world.keys)
