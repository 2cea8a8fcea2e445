"""Property tests: the negotiation decoders raise DecodeError (or a subclass) and nothing
else, whatever the input — random bytes, random JSON, or a valid document mutated."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from negotiation_world import World, agree

from keys import dsse
from keys.agreement import AGREEMENT_TYPE, parse_agreement
from keys.encoding import json_dumps, json_loads
from keys.errors import DecodeError
from keys.exported import export_handover, verify_exported
from keys.handover import HANDOVER_TYPE, EntryRef, make_handover, parse_handover
from keys.listref import DISCLOSURE_TYPE, parse_disclosure
from keys.proposal import ACCEPTANCE_TYPE, PROPOSAL_TYPE, REJECTION_TYPE, parse_message

PARSERS = {
    PROPOSAL_TYPE: parse_message, ACCEPTANCE_TYPE: parse_message,
    REJECTION_TYPE: parse_message, AGREEMENT_TYPE: parse_agreement,
    HANDOVER_TYPE: parse_handover, DISCLOSURE_TYPE: parse_disclosure,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=6),
    max_leaves=30)


def _world_documents():
    world = World()
    thread, agreement = agree(world)
    world.clock.advance(days=8)
    record = make_handover(world.kyiv, agreement, place="Sumy", at=world.clock.now(),
                           delivered={world.kyiv.id: [EntryRef(world.kyiv_list.digest, 0,
                                                               "pow")]},
                           witnesses=(world.icrc.id,), clock=world.clock)
    keys = [world.kyiv.public, world.moscow.public, world.icrc.public, world.vatican.public]
    return {
        PROPOSAL_TYPE: thread.messages[0].envelope.payload,
        ACCEPTANCE_TYPE: thread.messages[1].envelope.payload,
        AGREEMENT_TYPE: agreement.envelope.payload,
        HANDOVER_TYPE: record.envelope.payload,
    }, export_handover(record, agreement, keys, thread)


DOCUMENTS, EXPORT = _world_documents()


@settings(max_examples=200, deadline=None)
@given(ptype=st.sampled_from(sorted(PARSERS)), payload=st.binary(max_size=300))
def test_random_bytes(ptype, payload):
    with pytest.raises(DecodeError):
        PARSERS[ptype](dsse.Envelope(ptype, payload))


@settings(max_examples=300, deadline=None)
@given(ptype=st.sampled_from(sorted(PARSERS)), value=json_values)
def test_random_json(ptype, value):
    with pytest.raises(DecodeError):
        PARSERS[ptype](dsse.Envelope(ptype, json_dumps(value)))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ptype=st.sampled_from(sorted(DOCUMENTS)), data=st.data(), new=json_values)
def test_mutated_documents(ptype, data, new):
    original = json_loads(DOCUMENTS[ptype], max_bytes=1 << 22)
    path = data.draw(st.sampled_from(list(_paths(original))))
    mutated = json_dumps(_replace(original, path, new))
    with contextlib.suppress(DecodeError):
        PARSERS[ptype](dsse.Envelope(ptype, mutated))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), new=json_values)
def test_mutated_exports_give_a_report_or_a_decode_error(data, new):
    original = json_loads(EXPORT, max_bytes=1 << 24)
    path = data.draw(st.sampled_from(list(_paths(original))))
    try:
        report = verify_exported(json_dumps(_replace(original, path, new)))
    except DecodeError:
        return
    assert isinstance(report.ok, bool)
    assert report.checks
