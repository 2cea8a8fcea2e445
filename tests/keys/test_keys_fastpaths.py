"""The relay's per-submission fast paths give exactly what the plain code they
replaced gave: parse_time without strptime, make_statement without parsing back the
statement it just signed."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keys import dsse
from keys.clock import FixedClock
from keys.encoding import b64url_encode, format_time, json_dumps, parse_time
from keys.errors import DecodeError, TooLarge
from keys.identity import Identity
from keys.statements import KINDS, STATEMENT_TYPE, Statement, make_statement, parse_statement

MANY = settings(max_examples=2000, deadline=None)


def ref_parse_time(value: object, *, field: str) -> datetime:
    """keys.encoding.parse_time before the fast path, verbatim."""
    if not isinstance(value, str) or not re.fullmatch(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", value):
        raise DecodeError(f"{field}: expected a UTC time like 2026-12-01T09:00:00Z")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise DecodeError(f"{field}: not a valid date and time") from exc


def _outcome(fn: object, value: object) -> tuple[str, object]:
    try:
        return "ok", fn(value, field="t")  # type: ignore[operator]
    except DecodeError as exc:
        return type(exc).__name__, str(exc)


_digit_strings = st.text(alphabet="0123456789", min_size=2, max_size=2)
times = st.builds(
    lambda y, mo, d, h, mi, s: f"{y}-{mo}-{d}T{h}:{mi}:{s}Z",
    st.text(alphabet="0123456789", min_size=4, max_size=4), _digit_strings, _digit_strings,
    _digit_strings, _digit_strings, _digit_strings)


@MANY
@given(st.one_of(times, st.text(max_size=24), st.integers()))
@example("2026-02-29T00:00:00Z")
@example("2028-02-29T23:59:59Z")
@example("0000-01-01T00:00:00Z")
@example("2026-12-01T24:00:00Z")
@example("2026-12-01T09:00:60Z")
@example("2026-13-01T09:00:00Z")
@example("2026-00-10T09:00:00Z")
@example("２026-12-01T09:00:00Z")
def test_parse_time_matches_strptime(value: object) -> None:
    assert _outcome(parse_time, value) == _outcome(ref_parse_time, value)


NODE = Identity.create("Node", "node")
ids = st.text(min_size=0, max_size=70)
digests = st.one_of(st.binary(min_size=32, max_size=32).map(b64url_encode), ids)


def ref_make_statement(kind: str, envelope: str, when: datetime, extra: dict[str, str]
                       ) -> Statement:
    """keys.statements.make_statement before the fast path: sign, then parse back."""
    body = {"v": 1, "type": kind, "envelope": envelope, "by": NODE.id,
            "at": format_time(when), **extra}
    return parse_statement(dsse.sign(STATEMENT_TYPE, json_dumps(body), NODE.signing_key))


def _outcome_of(fn: Callable[[], Statement]) -> tuple[str, object]:
    try:
        return "ok", fn()
    except (DecodeError, UnicodeEncodeError) as exc:
        return type(exc).__name__, str(exc)


@MANY
@given(kind=st.sampled_from(sorted(KINDS)), envelope=digests, data=st.data(),
       when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=st.just(UTC)),
       shift=st.integers(-14, 14))
def test_make_statement_matches_sign_then_parse(kind: str, envelope: str, data: st.DataObject,
                                                when: datetime, shift: int) -> None:
    extra = {name: data.draw(digests if name in ("inner", "statement")
                             else st.text(min_size=0, max_size=210) if name == "reason"
                             else ids, label=name) for name in KINDS[kind]}
    # Any time zone and microseconds in, whole UTC seconds out.
    local = when.astimezone(timezone(timedelta(hours=shift)))
    fast = _outcome_of(lambda: make_statement(kind, envelope, NODE.signing_key,
                                              clock=FixedClock(local), **extra))
    assert fast == _outcome_of(lambda: ref_make_statement(kind, envelope, local, extra))


def test_make_statement_refuses_as_parse_statement() -> None:
    clock = FixedClock(datetime(2026, 12, 1, 9, 0, 0, 500_000, tzinfo=UTC))
    with pytest.raises(DecodeError, match=r"statement\.envelope"):
        make_statement("accepted", "x" * 43, NODE.signing_key, clock=clock, sender="a")
    with pytest.raises(TooLarge, match=r"statement\.sender: longer than 64"):
        make_statement("accepted", b64url_encode(b"1" * 32), NODE.signing_key, clock=clock,
                       sender="a" * 65)
    with pytest.raises(DecodeError, match=r"statement\.inner"):
        make_statement("opened", b64url_encode(b"1" * 32), NODE.signing_key, clock=clock,
                       recipient="a", inner="short")
    made = make_statement("accepted", b64url_encode(b"1" * 32), NODE.signing_key, clock=clock,
                          sender="a")
    assert made.at == datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
