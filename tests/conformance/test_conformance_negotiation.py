"""Conformance of section 17 (negotiation documents): a whole negotiation made with the
reference code (keys/) is verified by the independent reader (reader.py, which imports
no project code), and both refuse the same altered documents. The salted list digest
of the worked example in docs/protocol.md 17.2 is recomputed by both."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import reader as R

from keys import dsse
from keys.agreement import Agreement, accept_proposal, confirm_agreement, countersign_agreement
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.exported import export_handover, verify_exported
from keys.handover import (
    HANDOVER_TYPE,
    EntryRef,
    HandoverRecord,
    Unlisted,
    check_handover,
    countersign_handover,
    make_handover,
    sign_handover,
)
from keys.listref import entry_digest, list_digest, make_disclosure, salt_list
from keys.proposal import Counts, Terms, Transfer, make_proposal
from keys.thread import Thread, build_thread, counter

SPEC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
#: The worked example of 17.2.
EXAMPLE_SALT = bytes(range(32))
EXAMPLE_LIST = '{"v":1,"entries":[{"family_name":"Шевченко","given_names":"Тарас"}]}'


def _key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"conformance/negotiation/{name}".encode()).digest())


def _random(label: str):
    counter_ = [0]

    def draw(n: int) -> bytes:
        counter_[0] += 1
        return hashlib.shake_256(f"{label}/{counter_[0]}".encode()).digest(n)
    return draw


@dataclass
class Negotiated:
    kyiv: SigningKey
    moscow: SigningKey
    icrc: SigningKey
    thread: Thread
    agreement: Agreement
    record: HandoverRecord
    export: bytes

    @property
    def keys(self):
        return {k.id: k.public for k in (self.kyiv, self.moscow, self.icrc)}

    @property
    def raw_keys(self) -> dict[str, bytes]:
        return {k.id: k.public.raw for k in (self.kyiv, self.moscow, self.icrc)}


@pytest.fixture(scope="module")
def negotiated() -> Negotiated:
    kyiv, moscow, icrc = _key("kyiv"), _key("moscow"), _key("icrc")
    clock = FixedClock(T0)
    give = salt_list(b'{"v":1,"entries":["a","b"]}', 2, random=_random("give"))
    take = salt_list(b'{"v":1,"entries":["c"]}', 1, random=_random("take"))
    terms = Terms(parties=(kyiv.id, moscow.id),
                  transfers=(Transfer(kyiv.id, moscow.id, (give.ref(),), Counts(pow=2)),
                             Transfer(moscow.id, kyiv.id, (take.ref(),), Counts(pow=1))),
                  place="Sumy border crossing", window_from=T0 + timedelta(days=8),
                  window_to=T0 + timedelta(days=10), expires=T0 + timedelta(days=3),
                  guarantors=(icrc.id,))
    thread = build_thread([make_proposal(kyiv, terms, clock=clock)])
    clock.advance(hours=1)
    countered, thread = counter(thread, moscow, replace(terms, place="Kharkiv"), clock=clock)
    clock.advance(hours=1)
    _, thread, agreement = accept_proposal(thread, countered.id, kyiv, clock=clock)
    keys = {k.id: k.public for k in (kyiv, moscow, icrc)}
    agreement = confirm_agreement(agreement, thread, moscow, keys, clock=clock)
    agreement = countersign_agreement(agreement, icrc, keys)
    unlisted = entry_digest(bytes(32), b'{"family_name":"Nowak"}')
    record = make_handover(kyiv, agreement, place="Kharkiv", at=T0 + timedelta(days=9),
                           delivered={kyiv.id: [EntryRef(give.digest, 1, "pow")],
                                      moscow.id: [EntryRef(take.digest, 0, "pow")]},
                           unlisted={moscow.id: [Unlisted(unlisted, "civilians")]},
                           witnesses=[icrc.id], clock=clock)
    record = sign_handover(record, agreement, moscow)
    record = countersign_handover(record, agreement, icrc, keys)
    export = export_handover(record, agreement, keys.values(), thread)
    return Negotiated(kyiv, moscow, icrc, thread, agreement, record, export)


def test_worked_example_list_digest_is_in_the_specification() -> None:
    data = EXAMPLE_LIST.encode()
    digest = list_digest(EXAMPLE_SALT, data)
    assert R.list_digest(EXAMPLE_SALT, data) == digest
    assert f"`{digest}`" in SPEC


def test_reader_verifies_the_exported_negotiation(negotiated: Negotiated) -> None:
    assert verify_exported(negotiated.export).ok
    result = R.verify_export(negotiated.export)
    assert result["agreement"] == negotiated.agreement.id
    assert result["handover"] == negotiated.record.id
    assert result["terms"]["place"] == "Kharkiv"
    check = check_handover(negotiated.record, negotiated.agreement)
    # The same discrepancies, computed from the specification and by keys/.
    for transfer in check.transfers:
        mine = result["discrepancies"][transfer.giver]
        assert [tuple(m) for m in mine["missing"]] == list(transfer.missing)
        assert mine["unlisted"] == list(transfer.not_listed)
    assert result["discrepancies"][negotiated.kyiv.id]["missing"] == [
        (negotiated.agreement.terms.transfers[0].lists[0].digest, 0)]


def _export_with(negotiated: Negotiated, **changes) -> bytes:
    obj = json_loads(negotiated.export, max_bytes=1 << 24, what="export")
    obj.update(changes)
    return json_dumps(obj)


def _refused_by_both(data: bytes) -> None:
    assert not verify_exported(data).ok
    with pytest.raises(R.Rejected):
        R.verify_export(data)


def test_both_refuse_a_reordered_or_shortened_thread(negotiated: Negotiated) -> None:
    thread = json_loads(negotiated.export, max_bytes=1 << 24, what="export")["thread"]
    _refused_by_both(_export_with(negotiated, thread=[thread[1], thread[0], thread[2]]))
    _refused_by_both(_export_with(negotiated, thread=[thread[0], thread[2]]))


def test_both_refuse_altered_terms(negotiated: Negotiated) -> None:
    envelope = negotiated.agreement.envelope
    altered = replace(envelope, payload=envelope.payload.replace(b"Kharkiv", b"Kherson"))
    _refused_by_both(_export_with(negotiated, agreement=altered.to_dict()))


def test_both_refuse_a_guarantor_signature_over_another_version(negotiated: Negotiated
                                                                ) -> None:
    # The ICRC's signature over the first proposal's terms, moved onto the agreement.
    first = negotiated.thread.messages[0].envelope
    other = dsse.sign("application/vnd.backchannel.agreement+json", first.payload,
                      negotiated.icrc)
    envelope = negotiated.agreement.envelope
    mixed = replace(envelope, signatures=tuple(
        s if s.keyid != negotiated.icrc.id else other.signatures[0]
        for s in envelope.signatures))
    _refused_by_both(_export_with(negotiated, agreement=mixed.to_dict()))


def test_both_refuse_a_record_with_an_entry_past_the_agreed_list(negotiated: Negotiated
                                                                 ) -> None:
    payload = json.loads(negotiated.record.envelope.payload)
    payload["transfers"][0]["delivered"][0]["index"] = 2  # the list has 2 entries
    envelope = dsse.sign(HANDOVER_TYPE, json_dumps(payload), negotiated.kyiv)
    for signer in (negotiated.moscow, negotiated.icrc):
        envelope = dsse.cosign(envelope, signer)
    _refused_by_both(_export_with(negotiated, handover=envelope.to_dict()))


def test_reader_checks_disclosures(negotiated: Negotiated) -> None:
    give = salt_list(b'{"v":1,"entries":["a","b"]}', 2, random=_random("give"))
    terms = R.parse_terms(negotiated.agreement.envelope.payload)
    me = negotiated.icrc.id
    disclosure = make_disclosure(negotiated.kyiv, give, to=me).envelope
    parsed = R.parse_envelope(disclosure.to_dict())
    assert R.check_disclosure(parsed, terms, me, negotiated.raw_keys) == give.data
    with pytest.raises(R.Refused, match="someone else"):
        R.check_disclosure(parsed, terms, negotiated.moscow.id, negotiated.raw_keys)
    payload = json.loads(disclosure.payload)
    payload["data"] = b64url_encode(b'{"v":1,"entries":["a","x"]}')
    forged = dsse.sign(disclosure.payload_type, json_dumps(payload), negotiated.kyiv)
    with pytest.raises(R.Refused, match="does not open its digest"):
        R.check_disclosure(R.parse_envelope(forged.to_dict()), terms, me, negotiated.raw_keys)
