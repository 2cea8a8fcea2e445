"""Exported agreements and handover records, verified offline into a report."""

from __future__ import annotations

import json

import pytest
from negotiation_world import World, agree

from keys import dsse
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import DecodeError, UnsupportedVersion
from keys.exported import (
    FAILED,
    NOTICE,
    PASSED,
    SKIPPED,
    bundle_kind,
    export_agreement,
    export_handover,
    verify_exported,
)
from keys.handover import (
    HANDOVER_TYPE,
    EntryRef,
    countersign_handover,
    make_handover,
    parse_handover,
    sign_handover,
)
from keys.negotiation_errors import UnknownSigner


@pytest.fixture
def world() -> World:
    return World()


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def all_keys(world):
    return [world.kyiv.public, world.moscow.public, world.icrc.public, world.vatican.public]


def handover(world, agreement, *, moscow_entries=None, witness=True):
    world.clock.advance(days=8, hours=3)
    delivered = {
        world.kyiv.id: [EntryRef(world.kyiv_list.digest, i, c)
                        for i, c in enumerate(("pow", "pow", "civilians"))],
        world.moscow.id: moscow_entries if moscow_entries is not None else [
            EntryRef(world.moscow_list.digest, 0, "pow"),
            EntryRef(world.moscow_list.digest, 1, "pow"),
            EntryRef(world.moscow_extra.digest, 0, "pow")],
    }
    rec = make_handover(world.kyiv, agreement, place="Sumy border crossing",
                        at=world.clock.now(), delivered=delivered,
                        witnesses=(world.icrc.id,), clock=world.clock)
    rec = sign_handover(rec, agreement, world.moscow)
    return countersign_handover(rec, agreement, world.icrc, world.keys) if witness else rec


def test_exported_agreement_verifies(world):
    thread, agreement = agree(world)
    data = export_agreement(agreement, all_keys(world), thread)
    assert bundle_kind(data) == "agreement"
    report = verify_exported(data)
    assert report.ok, report.lines()
    assert report.document == agreement.id
    assert statuses(report) == {
        "keys belong to their identities": PASSED,
        "agreement is well-formed": PASSED,
        "agreement: signatures verify": PASSED,
        "agreement: both parties signed": PASSED,
        "agreement: guarantors signed": PASSED,
        "agreement: complete": PASSED,
        "negotiation thread is unbroken": PASSED,
        "agreement is over the accepted proposal": PASSED,
    }
    sigs = report.signatures["agreement"]
    assert sigs.complete and not sigs.missing
    # The JSON form is stable and serialisable.
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True
    assert report.lines()[0].endswith("VERIFIED")


def test_missing_guarantor_is_named(world):
    thread, agreement = agree(world, guarantors=(world.icrc,))
    report = verify_exported(export_agreement(agreement, all_keys(world), thread))
    assert not report.ok
    assert statuses(report)["agreement: guarantors signed"] == FAILED
    assert report.failures()[0].detail == (
        f"1 of 2 signed, 2 required; missing: {world.vatican.id}")
    assert report.signatures["agreement"].missing == (world.vatican.id,)
    text = "\n".join(report.lines({world.vatican.id: "vatican"}))
    assert "NOT VERIFIED" in text and "missing: vatican" in text


def test_without_a_thread_the_order_is_not_checked(world):
    _, agreement = agree(world)
    report = verify_exported(export_agreement(agreement, all_keys(world)))
    assert report.ok and statuses(report)["negotiation thread"] == SKIPPED


def _edit(data: bytes, change) -> bytes:
    obj = json_loads(data, max_bytes=1 << 24)
    change(obj)
    return json_dumps(obj)


def test_any_altered_term_fails_the_report(world):
    thread, agreement = agree(world)
    data = export_agreement(agreement, all_keys(world), thread)

    def alter(obj):
        env = dsse.Envelope.from_dict(obj["agreement"])
        obj["agreement"]["payload"] = dsse.Envelope(
            env.payload_type, env.payload.replace(b'"pow":3', b'"pow":4')).to_dict()["payload"]

    report = verify_exported(_edit(data, alter))
    # The altered counts no longer add up to the lists' entries: refused as malformed.
    assert statuses(report)["agreement is well-formed"] == FAILED and not report.ok

    def alter_place(obj):
        env = dsse.Envelope.from_dict(obj["agreement"])
        obj["agreement"]["payload"] = dsse.Envelope(
            env.payload_type, env.payload.replace(b"Sumy", b"Kursk")).to_dict()["payload"]

    report = verify_exported(_edit(data, alter_place))
    assert statuses(report)["agreement: signatures verify"] == FAILED
    assert statuses(report)["agreement is over the accepted proposal"] == FAILED
    assert set(report.signatures["agreement"].invalid) == {
        world.moscow.id, world.kyiv.id, world.icrc.id, world.vatican.id}


def test_a_thread_with_a_message_removed_fails_the_report(world):
    from keys.agreement import accept_proposal, confirm_agreement, countersign_agreement
    from keys.thread import counter

    thread = world.opened()
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.moscow, world.terms(place="Belgorod"), clock=world.clock)
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.kyiv,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.moscow, world.keys, clock=world.clock)
    for g in (world.icrc, world.vatican):
        agreement = countersign_agreement(agreement, g, world.keys)
    data = export_agreement(agreement, all_keys(world), thread)
    assert verify_exported(data).ok
    report = verify_exported(_edit(data, lambda o: o["thread"].pop(1)))
    failed = report.failures()
    assert [c.name for c in failed] == ["negotiation thread is unbroken"]
    assert "a message was removed" in failed[0].detail
    report = verify_exported(_edit(data, lambda o: o["thread"].reverse()))
    assert "does not start with a proposal" in report.failures()[0].detail


def test_keys_under_the_wrong_id_and_missing_keys(world):
    _, agreement = agree(world)
    data = export_agreement(agreement, all_keys(world))

    def swap(obj):
        obj["keys"][world.icrc.id] = b64url_encode(world.stranger.public.raw)

    report = verify_exported(_edit(data, swap))
    assert statuses(report)["keys belong to their identities"] == FAILED
    assert statuses(report)["agreement: keys of every required signer"] == FAILED
    # A pinned key (from the verifier's contacts) fills the gap; the wrong key in the
    # file is still reported.
    pinned = verify_exported(_edit(data, swap), pinned={world.icrc.id: world.icrc.public})
    assert statuses(pinned)["agreement: complete"] == PASSED
    assert [c.name for c in pinned.failures()] == ["keys belong to their identities"]
    with pytest.raises(UnknownSigner):
        export_agreement(agreement, [world.kyiv.public, world.moscow.public])


def test_exported_handover_verifies(world):
    thread, agreement = agree(world)
    rec = handover(world, agreement)
    data = export_handover(rec, agreement, all_keys(world), thread)
    assert bundle_kind(data) == "handover"
    report = verify_exported(data)
    assert report.ok, report.lines()
    assert report.document == rec.id
    assert statuses(report)["handover: witnesses countersigned"] == PASSED
    assert statuses(report)["counts match the agreement"] == PASSED
    assert report.handover is not None and report.handover.balanced
    assert set(report.signatures) == {"agreement", "handover"}


def test_an_imbalanced_handover_verifies_with_a_notice(world):
    _, agreement = agree(world)
    rec = handover(world, agreement,
                   moscow_entries=[EntryRef(world.moscow_list.digest, 0, "pow")])
    report = verify_exported(export_handover(rec, agreement, all_keys(world)))
    assert report.ok
    check = {c.name: c for c in report.checks}["counts match the agreement"]
    assert check.status == NOTICE
    assert "2 listed but not handed over" in check.detail
    assert "imbalance: 3 for 3 was agreed, but 3 and 1 were handed over" in check.detail


def test_a_handover_without_its_witness_fails(world):
    _, agreement = agree(world)
    rec = handover(world, agreement, witness=False)
    report = verify_exported(export_handover(rec, agreement, all_keys(world)))
    assert statuses(report)["handover: witnesses countersigned"] == FAILED
    assert report.signatures["handover"].missing == (world.icrc.id,)


def test_a_handover_with_foreign_entries_fails(world):
    _, agreement = agree(world)
    rec = handover(world, agreement)
    body = json_loads(rec.envelope.payload, max_bytes=1 << 22)
    body["transfers"][0]["delivered"].append(
        {"list": world.moscow_list.digest, "index": 0, "category": "pow"})
    forged = dsse.Envelope(HANDOVER_TYPE, json_dumps(body))
    for signer in (world.kyiv, world.moscow, world.icrc):
        forged = dsse.cosign(forged, signer)
    data = export_handover(parse_handover(forged), agreement, all_keys(world))
    report = verify_exported(data)
    check = {c.name: c for c in report.checks}["handover record refers only to agreed lists"]
    assert check.status == FAILED and "other side hands over" in check.detail
    assert report.handover is None and not report.ok


def test_not_an_export(world):
    with pytest.raises(DecodeError):
        verify_exported(b"not json")
    with pytest.raises(DecodeError, match="missing field"):
        verify_exported(b'{"v": 1, "kind": "agreement"}')
    with pytest.raises(UnsupportedVersion):
        verify_exported(b'{"v": 9, "kind": "agreement", "agreement": {}, "keys": {}}')
    with pytest.raises(DecodeError, match="exactly one handover"):
        verify_exported(b'{"v": 1, "kind": "handover", "agreement": {}, "keys": {}}')
    assert bundle_kind(b'{"payload": "", "payloadType": "x", "signatures": []}') is None
    report = verify_exported(b'{"v": 1, "kind": "agreement", "agreement": {}, "keys": {}}')
    assert statuses(report)["agreement is well-formed"] == FAILED


def test_whole_negotiation_without_a_network(world):
    """The sequence the CLI drives over the relay: propose, counter, accept, confirm,
    guarantors co-sign, handover recorded, signed, witnessed, exported, verified —
    every document passing through its JSON form as it would on the wire."""
    from securesystemslib.dsse import Envelope as SslibEnvelope
    from securesystemslib.signer import SSlibKey

    from keys.agreement import (
        accept_proposal,
        add_signatures,
        confirm_agreement,
        countersign_agreement,
        load_agreement,
    )
    from keys.handover import add_handover_signatures, load_handover
    from keys.proposal import load_message
    from keys.thread import ThreadState, build_thread, counter, order_messages

    def wire(message):
        return load_message(message.envelope.to_json())

    # Kyiv proposes; Moscow counters; Kyiv accepts the counter.
    opening = wire(world.propose())
    world.clock.advance(hours=2)
    countered, _ = counter(build_thread([opening]), world.moscow,
                           world.terms(place="Sumy, checkpoint 2"), clock=world.clock)
    thread = order_messages([wire(countered), opening])       # Kyiv's local store
    assert thread.state(world.clock.now()) == ThreadState.COUNTERED
    world.clock.advance(hours=2)
    acceptance, thread, agreement = accept_proposal(thread, thread.latest.id, world.kyiv,
                                                    clock=world.clock)
    # Moscow receives the acceptance and the agreement, checks and confirms.
    moscow_thread = build_thread([*thread.messages[:-1], wire(acceptance)])
    agreement = confirm_agreement(load_agreement(agreement.to_json()), moscow_thread,
                                  world.moscow, world.keys, clock=world.clock)
    # Each guarantor co-signs its copy; Moscow merges the returned copies.
    for guarantor in (world.icrc, world.vatican):
        copy = countersign_agreement(load_agreement(agreement.to_json()), guarantor,
                                     world.keys)
        agreement = add_signatures(agreement, dsse.Envelope.from_json(copy.to_json()),
                                   world.keys)
    assert agreement.terms.place == "Sumy, checkpoint 2"
    # The handover: Moscow records, Kyiv signs, the ICRC witnesses.
    world.clock.advance(days=8)
    record = make_handover(world.moscow, agreement, place="Sumy, checkpoint 2",
                           at=world.clock.now(), witnesses=(world.icrc.id,),
                           delivered={world.kyiv.id: [EntryRef(world.kyiv_list.digest, i, c)
                                                      for i, c in enumerate(
                                                          ("pow", "pow", "civilians"))],
                                      world.moscow.id: [
                                          EntryRef(world.moscow_list.digest, 0, "pow"),
                                          EntryRef(world.moscow_list.digest, 1, "pow")]},
                           clock=world.clock)
    record = sign_handover(load_handover(record.to_json()), agreement, world.kyiv)
    witnessed = countersign_handover(load_handover(record.to_json()), agreement, world.icrc,
                                     world.keys)
    record = add_handover_signatures(record, dsse.Envelope.from_json(witnessed.to_json()),
                                     world.keys)
    report = verify_exported(export_handover(record, agreement, all_keys(world),
                                             moscow_thread))
    assert report.ok, report.lines()
    assert "1 listed but not handed over" in {c.name: c for c in report.checks}[
        "counts match the agreement"].detail
    # An independent DSSE implementation accepts every signature on both documents.
    keys = [SSlibKey(keyid=k.id, keytype="ed25519", scheme="ed25519",
                     keyval={"public": k.raw.hex()}) for k in all_keys(world)]
    for document, count in ((agreement, 4), (record, 3)):
        envelope = SslibEnvelope.from_dict(json_loads(document.to_json(), max_bytes=1 << 22))
        assert len(envelope.verify(keys, threshold=count)) == count
