"""Strict decoders: exact round trips, and every non-canonical form refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keys import encoding
from keys.encoding import (
    MAX_JSON_DEPTH,
    b64std_decode,
    b64std_encode,
    b64url_decode,
    b64url_encode,
    expect_int,
    expect_object,
    expect_str,
    expect_version,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from keys.errors import DecodeError, TooLarge, UnsupportedVersion


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 31, 32, 33, 64])
def test_b64url_round_trip(length: int) -> None:
    data = bytes(range(256))[:length] if length <= 256 else b""
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text, max_bytes=64) == data


@pytest.mark.parametrize("bad", [
    "AA==",        # padding
    "A",           # impossible length
    "AB",          # non-canonical trailing bits (AA is canonical for b"\x00")
    "+/8",         # standard alphabet
    "AA AA",       # whitespace
    "\uff21\uff21",  # full-width letters
    "AA\n",
])
def test_b64url_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(DecodeError):
        b64url_decode(bad, max_bytes=64)


def test_b64url_limits() -> None:
    assert b64url_decode(b64url_encode(b"x" * 32), max_bytes=32, exact=32) == b"x" * 32
    with pytest.raises(TooLarge):
        b64url_decode(b64url_encode(b"x" * 33), max_bytes=32)
    with pytest.raises(DecodeError, match="expected 32 bytes"):
        b64url_decode(b64url_encode(b"x" * 31), max_bytes=32, exact=32)
    with pytest.raises(DecodeError):
        b64url_decode(b"AAAA", max_bytes=32)  # bytes are not text
    with pytest.raises(DecodeError):
        b64url_decode(None, max_bytes=32)


def test_b64std_round_trip_and_urlsafe_alphabet() -> None:
    data = bytes(range(250, 256)) * 3
    text = b64std_encode(data)
    assert b64std_decode(text, max_bytes=64) == data
    # DSSE asks verifiers to accept the URL-safe alphabet too.
    assert b64std_decode(text.replace("+", "-").replace("/", "_"), max_bytes=64) == data


@pytest.mark.parametrize("bad", ["AA", "AA=", "AB==", "A===", "AAAA====", "AA==AA==", " AAAA"])
def test_b64std_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(DecodeError):
        b64std_decode(bad, max_bytes=64)


def test_b64std_too_large() -> None:
    with pytest.raises(TooLarge):
        b64std_decode(b64std_encode(b"x" * 65), max_bytes=64)


def test_json_round_trip() -> None:
    value = {"name": "Шевченко", "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
    raw = json_dumps(value)
    assert b" " not in raw  # compact
    assert json_loads(raw, max_bytes=1000) == value
    assert json_loads(raw.decode(), max_bytes=1000) == value


@pytest.mark.parametrize("bad", [
    b'{"a":1,"a":2}', b"NaN", b"[Infinity]", b"[-Infinity]", b"\xff", b"", b"{", b"[1,]",
    b'"\\ud800"', b'{"\\udc00":1}', b"1e400", b"[-1e999]",
])
def test_json_rejects(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        json_loads(bad, max_bytes=1000)


def test_json_escaped_surrogate_pair_is_fine() -> None:
    assert json_loads(b'"\\ud83d\\ude00"', max_bytes=100) == "\U0001f600"


def test_json_size_and_depth_limits() -> None:
    with pytest.raises(TooLarge):
        json_loads(b"[" + b"1," * 100 + b"1]", max_bytes=100)
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    json_loads(ok, max_bytes=1000)
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(DecodeError, match="deeply"):
        json_loads(deep, max_bytes=1000)
    # Deep enough to exhaust the C scanner's recursion: still a DecodeError.
    hostile = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(DecodeError):
        json_loads(hostile, max_bytes=1_000_000)


@pytest.mark.parametrize("where", ["after", "before"])
def test_depth_limit_in_a_large_document(where: str) -> None:
    # Above 64 KiB the nesting is always walked (no bracket count): the limit holds,
    # with the deep part before or after a long string or many members.
    filler = '"' + "x" * 100_000 + '"'
    # The outer array and the innermost scalar are a level each.
    for depth, refused in ((MAX_JSON_DEPTH - 2, False), (MAX_JSON_DEPTH - 1, True)):
        nested = "[" * depth + "1" + "]" * depth
        parts = [nested, filler] if where == "before" else [filler, nested]
        text = ("[" + ",".join(parts) + "]").encode()
        assert len(text) > 64 * 1024
        if refused:
            with pytest.raises(DecodeError, match="deeply"):
                json_loads(text, max_bytes=len(text))
        else:
            assert len(json_loads(text, max_bytes=len(text))) == 2
    wide = ("[" + ",".join(['{"a":[1]}'] * 20_000) + "]").encode()
    assert len(json_loads(wide, max_bytes=len(wide))) == 20_000


def test_expect_helpers() -> None:
    obj = expect_object({"v": 1, "a": "x"}, required=("v",), optional=("a",), what="t")
    assert obj["a"] == "x"
    with pytest.raises(DecodeError, match="missing"):
        expect_object({"a": 1}, required=("v",), optional=("a",), what="t")
    with pytest.raises(DecodeError, match="unknown"):
        expect_object({"v": 1, "zz": 1}, required=("v",), what="t")
    with pytest.raises(DecodeError):
        expect_object([], required=(), what="t")
    with pytest.raises(TooLarge):
        expect_str({"s": "xxx"}, "s", what="t", max_len=2)
    with pytest.raises(DecodeError):
        expect_str({"s": ""}, "s", what="t", max_len=2, min_len=1)
    with pytest.raises(DecodeError):
        expect_str({"s": 1}, "s", what="t", max_len=2)
    assert expect_int({"i": 3}, "i", what="t", low=1, high=3) == 3
    for bad in (True, 4, "3", 3.0):
        with pytest.raises(DecodeError):
            expect_int({"i": bad}, "i", what="t", low=1, high=3)
    expect_version({"v": 1}, what="t")
    with pytest.raises(UnsupportedVersion):
        expect_version({"v": 2}, what="t")
    for bad_v in (True, "1", None):
        with pytest.raises(DecodeError):
            expect_version({"v": bad_v}, what="t")


def test_time_round_trip() -> None:
    when = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
    assert format_time(when) == "2026-12-01T09:00:00Z"
    assert parse_time("2026-12-01T09:00:00Z", field="t") == when
    # Other offsets are converted to UTC; sub-second precision is dropped.
    kyiv = when.astimezone(timezone(timedelta(hours=2))).replace(microsecond=999)
    assert format_time(kyiv) == "2026-12-01T09:00:00Z"
    with pytest.raises(ValueError):
        format_time(datetime(2026, 12, 1))  # naive


@pytest.mark.parametrize("bad", [
    "2026-12-01T09:00:00+00:00", "2026-12-01 09:00:00Z", "2026-12-01T09:00:00.5Z",
    "2026-13-01T09:00:00Z", "2026-02-30T09:00:00Z", "2026-12-01T09:00:00z",
    "\u0662\u0660\u0662\u0666-12-01T09:00:00Z",  # Arabic-Indic digits
    "2026-12-01T09:00:00Z\n", 20261201, None,
])
def test_time_rejects(bad: object) -> None:
    with pytest.raises(DecodeError):
        parse_time(bad, field="t")


def test_json_str_input_with_lone_surrogate() -> None:
    with pytest.raises(DecodeError):
        json_loads('{"a":"\ud800"}', max_bytes=100)


@pytest.mark.parametrize("deep_first", [True, False])
@pytest.mark.parametrize("wide", [3, 500])
def test_depth_limit_with_few_and_many_containers(deep_first: bool, wide: int) -> None:
    # Few containers are walked depth first, many level by level (past the walk's
    # budget); the limit is the same either way, wherever the deep branch stands.
    # The outer array and the innermost scalar are a level each.
    for depth, refused in ((MAX_JSON_DEPTH - 2, False), (MAX_JSON_DEPTH - 1, True)):
        deep = "[" * depth + "1" + "]" * depth
        parts = [deep, *(["[]"] * wide)] if deep_first else [*(["[]"] * wide), deep]
        text = ("[" + ",".join(parts) + "]").encode()
        if wide > encoding._WALK_BUDGET and not (deep_first and refused):
            with pytest.raises(encoding._Wide):
                encoding._walk(json.loads(text), 1, [encoding._WALK_BUDGET])
        if refused:
            with pytest.raises(DecodeError, match="deeply"):
                json_loads(text, max_bytes=len(text))
        else:
            assert len(json_loads(text, max_bytes=len(text))) == wide + 1


def test_json_from_a_strided_view() -> None:
    # A view of every other byte is still a document (or a DecodeError), never a
    # TypeError from the UTF-8 decoder.
    assert json_loads(memoryview(b"[x1x,x3x]")[::2], max_bytes=100) == [1, 3]
    with pytest.raises(DecodeError):
        json_loads(memoryview(b"[1,x2]")[::2], max_bytes=100)
