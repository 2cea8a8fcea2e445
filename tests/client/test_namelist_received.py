"""client.namelist.from_body checks a received list column by column and shares each
entry's dict; it must accept and refuse exactly what the plain per-entry check did,
and its entries must behave exactly like ``Entry(**item)``.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from client.errors import InvalidNameList
from client.namelist import FIELDS, MAX_ENTRIES, MAX_NOTES, Entry, NameList, from_body
from keys.encoding import json_dumps, json_loads

MANY = settings(max_examples=600, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def reference_from_body(body: object) -> NameList:
    """client.namelist.from_body before the column-wise check (kept verbatim)."""
    if not isinstance(body, dict) or set(body) != {"v", "entries"}:
        raise InvalidNameList(["the name list in this message is malformed"])
    if body["v"] != 1:
        raise InvalidNameList(["the name list uses a format version this program does not "
                               "read; upgrade Backchannel"])
    items = body["entries"]
    if not isinstance(items, list) or len(items) > MAX_ENTRIES:
        raise InvalidNameList(["the name list in this message is malformed"])
    entries = []
    for number, item in enumerate(items, start=1):
        if (not isinstance(item, dict) or not set(item) <= set(FIELDS)
                or not all(isinstance(v, str) and len(v) <= MAX_NOTES for v in item.values())
                or not item.get("family_name")):
            raise InvalidNameList([f"entry {number} of the received list is malformed"])
        entries.append(Entry(**item))
    return NameList(tuple(entries))


def _outcome(body: object) -> tuple[str, Any]:
    try:
        return "ok", from_body(body)
    except InvalidNameList as exc:
        return "refused", exc.args


def _reference_outcome(body: object) -> tuple[str, Any]:
    try:
        return "ok", reference_from_body(body)
    except InvalidNameList as exc:
        return "refused", exc.args


values = st.one_of(
    st.text(max_size=8), st.just(""), st.just("x" * MAX_NOTES), st.just("x" * (MAX_NOTES + 1)),
    st.none(), st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6))
good_entry = st.fixed_dictionaries(
    {"family_name": st.text(min_size=1, max_size=8)},
    optional={name: st.text(max_size=8) for name in FIELDS[1:]})
any_entry = st.one_of(
    good_entry, good_entry, good_entry,
    st.dictionaries(keys, values, max_size=5),
    good_entry.flatmap(lambda e: st.tuples(st.just(e), keys, values).map(
        lambda t: {**t[0], t[1]: t[2]})),
    st.none(), st.text(max_size=4), st.integers(), st.lists(st.text(max_size=3), max_size=2))
bodies = st.one_of(
    st.fixed_dictionaries({"v": st.just(1), "entries": st.lists(good_entry, max_size=6)}),
    st.fixed_dictionaries({"v": st.just(1), "entries": st.lists(any_entry, max_size=6)}),
    st.fixed_dictionaries({"v": st.sampled_from([1, 2, "1", True]),
                           "entries": st.lists(any_entry, max_size=3) | values}),
    st.dictionaries(st.sampled_from(["v", "entries", "x"]), values, max_size=3),
    values)


@MANY
@given(bodies)
@example({"v": 1, "entries": []})
@example({"v": 1, "entries": [{"family_name": "A"}, {"family_name": ""}]})
@example({"v": 1, "entries": [{"family_name": "A"}, {"given_names": "B"}]})
@example({"v": 1, "entries": [{"family_name": "A", "notes": "x" * (MAX_NOTES + 1)}]})
@example({"v": 1, "entries": [{"family_name": "A", "notes": "x" * MAX_NOTES}]})
@example({"v": 1, "entries": [{"family_name": "A"}, {"family_name": "B", "x": "y"}]})
@example({"v": 1, "entries": [{"family_name": "A"}, {"family_name": ["B"]}]})
@example({"v": 1, "entries": [{"family_name": "A"}, "B"]})
def test_from_body_matches_reference(body: object) -> None:
    got, want = _outcome(body), _reference_outcome(body)
    assert got == want


@MANY
@given(st.lists(good_entry, min_size=1, max_size=5))
def test_received_entries_behave_like_constructed_ones(items: list[dict[str, str]]) -> None:
    received = from_body({"v": 1, "entries": items}).entries
    built = tuple(Entry(**item) for item in items)
    assert received == built
    for got, want in zip(received, built, strict=True):
        assert type(got) is Entry
        assert hash(got) == hash(want)
        assert repr(got) == repr(want)
        assert got.to_dict() == want.to_dict()
        assert got.values() == want.values()
        assert dataclasses.asdict(got) == dataclasses.asdict(want)
        assert dataclasses.replace(got, notes="n") == dataclasses.replace(want, notes="n")
        assert pickle.loads(pickle.dumps(got)) == want
        assert copy.deepcopy(got) == want
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.family_name = "changed"  # type: ignore[misc]


def test_received_list_from_json_round_trips() -> None:
    body = {"v": 1, "entries": [{"family_name": "Шевченко", "given_names": "Тарас",
                                 "date_of_birth": "1814-03-09"},
                                {"family_name": "IVANOV", "notes": "line\nbreak"}]}
    received = from_body(json_loads(json_dumps(body), max_bytes=4096))
    assert received.to_body() == body
    assert received == reference_from_body(body)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_found(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        from_body({"v": 1, "entries": [{"family_name": "A"}]})
        assert gc.isenabled() is enabled
        with pytest.raises(InvalidNameList):
            from_body({"v": 1, "entries": [{"family_name": ""}]})
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
