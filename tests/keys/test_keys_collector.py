"""keys.collector.paused: no automatic collection while a large document is decoded,
and the collector always left as it was found."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from keys import collector
from keys.encoding import json_dumps, json_loads
from keys.errors import DecodeError


@contextmanager
def _collections(threshold: int) -> Iterator[list[int]]:
    """Counts automatic collections started inside the block, with the collector
    enabled and made to run every ``threshold`` new containers."""
    started: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    was_enabled, was_threshold = gc.isenabled(), gc.get_threshold()
    gc.collect()  # start from an empty young generation: no collection is owed
    gc.enable()
    gc.set_threshold(threshold)
    gc.callbacks.append(callback)
    try:
        yield started
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*was_threshold)
        if not was_enabled:
            gc.disable()


def _large_document() -> bytes:
    # Above the small-document fast path (64 KiB): many objects, as a name list.
    return json_dumps({"entries": [{"family_name": f"N{i}", "date_of_birth": "1990-01-01"}
                                   for i in range(5_000)]})


def test_a_large_document_is_parsed_without_a_collection() -> None:
    data = _large_document()
    assert len(data) > 64 * 1024
    with _collections(threshold=100) as started:
        value = json_loads(data, max_bytes=len(data))
        assert gc.isenabled()
    assert len(value["entries"]) == 5_000
    # At most the one owed when the pause ends (the walk after the parse triggers it).
    assert len(started) <= 1


def test_without_the_pause_the_same_parse_collects() -> None:
    # The probe above can see collections: plain json.loads of the same bytes starts many.
    import json

    data = _large_document()
    with _collections(threshold=100) as started:
        json.loads(data)
    assert len(started) > 10


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_found_also_after_an_error(enabled: bool) -> None:
    bad = b'{"entries": [' + b'{"a": 1}, ' * 20_000 + b'{"a": 1, "a": 2}]}'
    was = gc.isenabled()
    try:
        if enabled:
            gc.enable()
        else:
            gc.disable()
        with pytest.raises(DecodeError, match="duplicate"):
            json_loads(bad, max_bytes=len(bad))
        assert gc.isenabled() is enabled
        with collector.paused():
            assert not gc.isenabled()
            with collector.paused():  # nested: the inner end does not re-enable
                pass
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()
