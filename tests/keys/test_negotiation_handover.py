"""Handover records: entries from the agreed lists, discrepancies, counts against the
agreement, signatures of both delegations and witnesses."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from negotiation_world import World, agree
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from keys import dsse
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import DecodeError, PolicyNotMet, VerificationError
from keys.handover import (
    HANDOVER_TYPE,
    EntryRef,
    Unlisted,
    add_handover_signatures,
    check_handover,
    countersign_handover,
    handover_status,
    load_handover,
    make_handover,
    parse_handover,
    sign_handover,
    verify_handover,
)
from keys.listref import entry_digest
from keys.negotiation_errors import HandoverRejected, NotASigner
from keys.proposal import Counts


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def agreed(world):
    return agree(world)[1]


def everyone(world):
    """Every listed person, as agreed."""
    return {
        world.kyiv.id: [EntryRef(world.kyiv_list.digest, 0, "pow"),
                        EntryRef(world.kyiv_list.digest, 1, "pow"),
                        EntryRef(world.kyiv_list.digest, 2, "civilians")],
        world.moscow.id: [EntryRef(world.moscow_list.digest, 0, "pow"),
                          EntryRef(world.moscow_list.digest, 1, "pow"),
                          EntryRef(world.moscow_extra.digest, 0, "pow")],
    }


def record(world, agreement, delivered=None, **kw):
    world.clock.advance(days=8, hours=3)
    kw.setdefault("witnesses", (world.icrc.id,))
    return make_handover(world.kyiv, agreement, place="Sumy border crossing",
                         at=world.clock.now(), delivered=delivered or everyone(world),
                         clock=world.clock, **kw)


def signed_by_all(world, agreement, rec):
    rec = sign_handover(rec, agreement, world.moscow)
    return countersign_handover(rec, agreement, world.icrc, world.keys)


def test_a_balanced_handover(world, agreed):
    rec = signed_by_all(world, agreed, record(world, agreed))
    result = verify_handover(rec, agreed, world.keys)
    assert result.balanced and result.within_window
    assert [t.giver for t in result.transfers] == [world.kyiv.id, world.moscow.id]
    assert result.transfers[0].handed_over == Counts(pow=2, civilians=1)
    assert result.lines({world.kyiv.id: "kyiv", world.moscow.id: "moscow"}) == [
        "kyiv → moscow: 3 of 3 agreed handed over (pow 2/2, civilians 1/1)",
        "moscow → kyiv: 3 of 3 agreed handed over (pow 3/3)",
        "balanced: both sides handed over exactly what was agreed",
    ]
    assert handover_status(rec, agreed, world.keys).complete
    assert load_handover(rec.to_json()) == rec


def test_discrepancies_and_imbalance_are_reported_plainly(world, agreed):
    delivered = everyone(world)
    delivered[world.moscow.id] = delivered[world.moscow.id][:2]   # one listed POW kept back
    stranger = entry_digest(bytes(32), b'{"family_name":"unlisted"}')
    rec = record(world, agreed, delivered,
                 unlisted={world.moscow.id: [Unlisted(stranger, "civilians")]})
    rec = signed_by_all(world, agreed, rec)
    result = verify_handover(rec, agreed, world.keys)
    assert not result.balanced
    moscow = result.transfers[1]
    assert moscow.missing == ((world.moscow_extra.digest, 0),)
    assert moscow.not_listed == (stranger,)
    assert moscow.shortfall() == {"pow": 1}
    assert moscow.unlisted == Counts(civilians=1)
    lines = result.lines({world.kyiv.id: "kyiv", world.moscow.id: "moscow"})
    assert lines[1] == ("moscow → kyiv: 2 of 3 agreed handed over (pow 2/3); 1 listed but "
                        "not handed over; 1 handed over but not listed")
    assert len(lines) == 2   # 3 for 3 agreed; 3 and 3 persons crossed: no imbalance line
    as_dict = result.to_dict()
    assert as_dict["transfers"][1]["missing"] == [{"list": world.moscow_extra.digest,
                                                   "index": 0}]
    assert as_dict["balanced"] is False


def test_an_unequal_exchange_is_called_an_imbalance(world, agreed):
    delivered = everyone(world)
    delivered[world.moscow.id] = delivered[world.moscow.id][:1]
    result = check_handover(record(world, agreed, delivered), agreed)
    assert result.lines()[-1] == ("imbalance: 3 for 3 was agreed, but 3 and 1 were "
                                  "handed over")
    assert result.transfers[1].missing == ((world.moscow_list.digest, 1),
                                           (world.moscow_extra.digest, 0))


def test_categories_are_counted_against_the_agreement(world, agreed):
    delivered = everyone(world)
    delivered[world.kyiv.id][2] = replace(delivered[world.kyiv.id][2], category="pow")
    result = check_handover(record(world, agreed, delivered), agreed)
    assert result.transfers[0].shortfall() == {"pow": -1, "civilians": 1}
    assert not result.balanced and not result.transfers[0].missing


@pytest.mark.parametrize(("ref", "reason"), [
    (lambda w: EntryRef(b64url_encode(b"B" * 32), 0, "pow"), "not on any list of the agreement"),
    (lambda w: EntryRef(w.moscow_list.digest, 0, "pow"), "list the other side hands over"),
    (lambda w: EntryRef(w.kyiv_list.digest, 3, "pow"), "does not exist: that agreed list "
                                                       "has 3 entries"),
    (lambda w: EntryRef(w.kyiv_list.digest, 0, "pow"), "handed over twice"),
])
def test_entries_not_in_the_agreed_lists_are_rejected(world, agreed, ref, reason):
    delivered = everyone(world)
    delivered[world.kyiv.id] = [*delivered[world.kyiv.id][:2], ref(world)]
    with pytest.raises(HandoverRejected, match=reason):
        record(world, agreed, delivered)


def _resign(world, rec, mutate):
    body = json_loads(rec.envelope.payload, max_bytes=1 << 22)
    mutate(body)
    return parse_handover(dsse.sign(HANDOVER_TYPE, json_dumps(body), world.kyiv))


def test_a_presented_record_with_foreign_entries_is_rejected_by_every_signer(world, agreed):
    rec = record(world, agreed)
    forged = _resign(world, rec, lambda b: b["transfers"][1]["delivered"].append(
        {"list": world.kyiv_list.digest, "index": 0, "category": "pow"}))
    with pytest.raises(HandoverRejected, match="other side hands over"):
        sign_handover(forged, agreed, world.moscow)
    with pytest.raises(HandoverRejected):
        countersign_handover(forged, agreed, world.icrc, world.keys)
    with pytest.raises(HandoverRejected):
        verify_handover(forged, agreed, world.keys)


def test_a_record_about_another_agreement_is_rejected(world, agreed):
    rec = record(world, agreed)
    other = _resign(world, rec, lambda b: b.update(agreement=b64url_encode(b"C" * 32)))
    with pytest.raises(HandoverRejected, match="about another agreement"):
        check_handover(other, agreed)
    swapped = _resign(world, rec, lambda b: b["transfers"][0].update(to=world.icrc.id))
    with pytest.raises(HandoverRejected, match="not between the agreement's parties"):
        check_handover(swapped, agreed)


def test_signing_rules(world, agreed):
    rec = record(world, agreed)
    with pytest.raises(NotASigner, match="witnesses countersign"):
        sign_handover(rec, agreed, world.icrc)
    with pytest.raises(NotASigner, match="not named as a witness"):
        countersign_handover(rec, agreed, world.vatican, world.keys)
    with pytest.raises(PolicyNotMet):
        countersign_handover(rec, agreed, world.icrc, world.keys)
    with pytest.raises(NotASigner, match="only one of the two parties"):
        make_handover(world.icrc, agreed, place="x", at=world.clock.now(), delivered={})
    with pytest.raises(HandoverRejected, match="a party cannot witness"):
        record(World(), agreed, witnesses=(world.moscow.id,))
    once = sign_handover(rec, agreed, world.moscow)
    assert sign_handover(once, agreed, world.moscow) is once


def test_missing_witness_is_reported(world, agreed):
    rec = sign_handover(record(world, agreed), agreed, world.moscow)
    with pytest.raises(PolicyNotMet) as info:
        verify_handover(rec, agreed, world.keys)
    assert info.value.missing == {world.icrc.id}
    status = handover_status(rec, agreed, world.keys)
    assert status.missing == (world.icrc.id,) and not status.complete


def test_merging_a_witness_copy_and_tampering(world, agreed):
    rec = sign_handover(record(world, agreed), agreed, world.moscow)
    witnessed = countersign_handover(rec, agreed, world.icrc, world.keys)
    merged = add_handover_signatures(rec, witnessed.envelope, world.keys)
    verify_handover(merged, agreed, world.keys)
    tampered = parse_handover(replace(merged.envelope, payload=merged.envelope.payload.replace(
        b'"place":"Sumy border crossing"', b'"place":"Kursk crossing"', 1)))
    assert tampered.place == "Kursk crossing"
    with pytest.raises(VerificationError, match="altered or the signature forged"):
        verify_handover(tampered, agreed, world.keys)


def test_outside_the_window(world, agreed):
    world.clock.advance(days=30)
    rec = make_handover(world.kyiv, agreed, place="Sumy", at=world.clock.now(),
                        delivered=everyone(world), clock=world.clock)
    result = check_handover(rec, agreed)
    assert not result.within_window
    assert "outside the agreed time window" in result.lines()[-1]


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b["transfers"][0]["delivered"][0].update(category="hostages"), "category"),
    (lambda b: b["transfers"][0]["delivered"][0].update(index=-1), "between"),
    (lambda b: b["transfers"][0]["unlisted"].extend(
        [{"digest": b64url_encode(b"D" * 32), "category": "pow"}] * 2), "listed twice"),
    (lambda b: b["transfers"].pop(), "one transfer per party"),
    (lambda b: b["transfers"][1].update({"from": b["transfers"][0]["from"]}),
     "from each party"),
    (lambda b: b.update(witnesses=[b["from"], b["from"]]), "named twice"),
    (lambda b: b.update(at="yesterday"), "UTC time"),
    (lambda b: b.update(extra=True), "unknown field"),
])
def test_malformed_records_are_refused(world, agreed, mutate, reason):
    rec = record(world, agreed)
    with pytest.raises(DecodeError, match=reason):
        _resign(world, rec, mutate)


def test_record_size_limit(world, agreed):
    rec = record(world, agreed)
    body = json_loads(rec.envelope.payload, max_bytes=1 << 22)
    body["notes"] = "x" * (5 * 1024 * 1024)
    envelope = dsse.sign(HANDOVER_TYPE, json_dumps(body), world.kyiv)
    with pytest.raises(DecodeError, match="larger than"):
        parse_handover(envelope)


def test_securesystemslib_accepts_every_handover_signature(world, agreed):
    rec = signed_by_all(world, agreed, record(world, agreed))
    envelope = SslibEnvelope.from_dict(json_loads(rec.to_json(), max_bytes=1 << 22))
    signers = (world.kyiv, world.moscow, world.icrc)
    keys = [SSlibKey(keyid=s.id, keytype="ed25519", scheme="ed25519",
                     keyval={"public": s.public.raw.hex()}) for s in signers]
    assert set(envelope.verify(keys, threshold=3)) == {s.id for s in signers}


def test_window_accessors(world, agreed):
    assert agreed.terms.window_to - agreed.terms.window_from == timedelta(days=2)
