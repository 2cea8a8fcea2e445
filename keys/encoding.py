"""Strict decoders for the byte-level encodings used on the wire.

Every decoder takes an explicit size limit and raises :class:`~keys.errors.DecodeError`
(or a subclass) and nothing else, whatever the input.
"""

from __future__ import annotations

import binascii
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from itertools import chain
from typing import Any, BinaryIO, Final

# SIMD base64 (libbase64): a tenth of binascii's time. A node decodes and encodes
# every submission's sealed bytes, and binascii was the largest single cost of a
# submission on the event loop.
import pybase64

from . import collector
from .errors import DecodeError, TooLarge, UnsupportedVersion

_URL_ALTCHARS = b"-_"
#: Input bytes per base64 chunk (a multiple of 3): large fields are encoded and decoded
#: piece by piece so that no whole-field intermediate copy exists.
B64_CHUNK = 3 * 64 * 1024
# [0-9], not \d: \d also matches non-ASCII digits, which strptime would accept.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

#: Nesting depth limit for JSON documents: our formats need at most 6; deep nesting
#: is only ever an attack on the parser's recursion.
MAX_JSON_DEPTH = 16


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), the encoding of every binary field."""
    return pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str, *, urlsafe: bool) -> bytes:
    """Strict base64 of ``text`` (ASCII, padded): refuses characters outside the
    alphabet, misplaced padding and anything after it. With ``urlsafe`` both
    alphabets pass here: the callers refuse ``+`` and ``/`` first."""
    return pybase64.b64decode(text, altchars=_URL_ALTCHARS if urlsafe else None,
                              validate=True)


def b64url_decode(text: object, *, max_bytes: int, exact: int | None = None,
                  field: str = "value") -> bytes:
    """Decode unpadded base64url, rejecting padding, other alphabets, non-canonical
    trailing bits and anything longer than ``max_bytes`` once decoded."""
    if not isinstance(text, str):
        raise DecodeError(f"{field}: expected a base64url string")
    if len(text) > (max_bytes * 4 + 2) // 3 + 1:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    # The standard alphabet's own "+/" and any "=" are refused first: not base64url.
    # Non-ASCII text is refused by the decoder.
    if len(text) % 4 == 1 or "+" in text or "/" in text or "=" in text:
        raise DecodeError(f"{field}: not unpadded base64url")
    step = B64_CHUNK // 3 * 4
    try:
        if len(text) <= step:
            # One chunk: every routing field, most sealed messages.
            data = _decode(text + "=" * (-len(text) % 4), urlsafe=True)
        else:
            # Sealed messages of megabytes, chunk by chunk: no whole padded copy.
            out = io.BytesIO()
            for start in range(0, len(text), step):
                piece = text[start:start + step]
                if start + step >= len(text):
                    piece += "=" * (-len(text) % 4)
                out.write(_decode(piece, urlsafe=True))
            data = out.getvalue()
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{field}: not unpadded base64url") from exc
    return _checked(data, text, max_bytes=max_bytes, exact=exact, field=field)


def _checked(data: bytes, text: str, *, max_bytes: int, exact: int | None,
             field: str) -> bytes:
    if not _canonical_tail(data, text, urlsafe=True):
        raise DecodeError(f"{field}: non-canonical base64url")
    if len(data) > max_bytes:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    if exact is not None and len(data) != exact:
        raise DecodeError(f"{field}: expected {exact} bytes, got {len(data)}")
    return data


def _canonical_tail(data: bytes, text: str, *, urlsafe: bool) -> bool:
    """Whether re-encoding ``data`` gives back ``text`` (whose alphabet is checked).

    Every complete 4-character group decodes to 3 bytes that encode back to the same
    group (64**4 == 2**24: a bijection), so only a final partial group, whose unused
    low bits must be zero, can differ: re-encode just that group, not the megabytes
    before it."""
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    chars = (len(text) - padding) % 4
    if chars == 0:
        return True
    if chars == 1:  # never valid base64; the decoders refuse it before this
        return False
    tail = data[-(chars - 1):]
    encoded = (pybase64.urlsafe_b64encode(tail).rstrip(b"=") if urlsafe
               else pybase64.standard_b64encode(tail))
    return encoded.decode("ascii") == text[-len(encoded):]


def write_b64(out: BinaryIO, data: bytes, *, urlsafe: bool) -> None:
    """Write ``b64url_encode(data)`` (``urlsafe``) or ``b64std_encode(data)`` to
    ``out`` as ASCII bytes, chunk by chunk."""
    view = memoryview(data)
    for start in range(0, len(view), B64_CHUNK):
        if urlsafe:
            # Chunks are whole groups: only the last can end in padding.
            out.write(pybase64.b64encode(view[start:start + B64_CHUNK],
                                         altchars=_URL_ALTCHARS).rstrip(b"="))
        else:
            out.write(pybase64.b64encode(view[start:start + B64_CHUNK]))


def b64std_encode(data: bytes) -> str:
    """Standard padded base64, used only inside DSSE envelopes (the DSSE convention)."""
    return pybase64.standard_b64encode(data).decode("ascii")


def b64std_decode(text: object, *, max_bytes: int, field: str = "value") -> bytes:
    """Decode canonical padded base64. The URL-safe alphabet is accepted too, as the
    DSSE specification asks of verifiers."""
    if not isinstance(text, str):
        raise DecodeError(f"{field}: expected a base64 string")
    if len(text) > (max_bytes + 2) // 3 * 4:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    # str.replace returns the same object when there is nothing to replace.
    normal = text.replace("-", "+").replace("_", "/")
    # The strict decoder refuses other characters, leading or inner padding and data
    # after it; a third "=" after a complete group is refused here.
    if len(normal) % 4 or normal.endswith("==="):
        raise DecodeError(f"{field}: not padded base64")
    try:
        data = _decode(normal, urlsafe=False)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{field}: not padded base64") from exc
    if not _canonical_tail(data, normal, urlsafe=False):
        raise DecodeError(f"{field}: non-canonical base64")
    if len(data) > max_bytes:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    return data


#: Equal string values within one document share one object (see _object_hook).
_SHARED_STRINGS = 1 << 16
_SHARED_MAX_CHARS = 256


def _object_hook() -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """The ``object_pairs_hook`` for one document: refuses duplicate members, and makes
    equal string values share one object.

    The dict is built by ``dict()`` in C; the members are walked in Python only to
    name a duplicate. Sharing strings matters for name lists: given names,
    patronymics, dates of birth, ranks and units repeat, and each copy costs 60 to
    100 bytes. The table is emptied when it reaches :data:`_SHARED_STRINGS` entries,
    so a document of all-distinct strings does not pay for a large table."""
    strings: dict[str, str] = {}
    share = strings.setdefault

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = _unique(pairs)
        for key, value in pairs:
            # Long strings (a sealed message's ciphertext) are unlikely to repeat, and
            # hashing megabytes to find out is not free.
            if type(value) is str and len(value) <= _SHARED_MAX_CHARS:
                out[key] = share(value, value)
        if len(strings) >= _SHARED_STRINGS:
            strings.clear()
        return out

    return hook


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The ``object_pairs_hook`` for small documents: duplicates refused, nothing
    shared (a few dozen strings are not worth a table)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        _refuse_duplicate(pairs)
    return out


#: Documents up to this size (every request body, envelope, header and statement)
#: share one decoder: building a JSONDecoder and its scanner per call, and the
#: string-sharing hook, cost more than parsing a few kilobytes.
_SMALL_DOCUMENT = 64 * 1024


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid JSON number {name}")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which json_dumps then refuses to write back.
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError("JSON number out of range")
    return value


_SMALL_DECODER = json.JSONDecoder(object_pairs_hook=_unique,
                                  parse_constant=_reject_constant,
                                  parse_float=_finite_float)


def _refuse_duplicate(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            raise DecodeError(f"duplicate JSON member {key!r}")
        seen.add(key)


def _depth(value: Any) -> int:
    """Nesting depth (a scalar is 1, ``{"a": 1}`` is 2), counted up to
    ``MAX_JSON_DEPTH + 1``.

    Level by level rather than item by item, so that the wide levels of a large
    document (100,000 entries, 400,000 values) are walked by ``map``, ``set`` and
    ``itertools.chain`` in C. Iterative: a hostile document cannot exhaust the
    recursion limit. The values come from ``json.loads``: exactly dict and list."""
    deepest, level = 1, [value]
    while deepest <= MAX_JSON_DEPTH:
        kinds = set(map(type, level))
        if dict not in kinds and list not in kinds:
            break
        dicts = [item for item in level if type(item) is dict] if dict in kinds else []
        lists = [item for item in level if type(item) is list] if list in kinds else []
        level = [*chain.from_iterable(map(dict.values, dicts)), *chain.from_iterable(lists)]
        if not level:
            break
        deepest += 1
    return deepest


class _Wide(Exception):
    """A document with more containers than :data:`_WALK_BUDGET`."""


#: Containers walked depth first at most before the level-by-level walk takes over.
_WALK_BUDGET = 64


def _walk(value: Any, level: int, budget: list[int]) -> int:
    """:func:`_depth` of ``value`` standing at ``level``, depth first, for documents
    with few containers (a request's: a handful of objects around long strings).
    Calls itself only for containers, never below ``MAX_JSON_DEPTH`` (recursion
    stays bounded), returns as soon as the document is known to be too deep, and
    raises :class:`_Wide` past the budget: one Python call per container is slower
    than :func:`_depth` on a document dense with them (hostile input)."""
    kind = type(value)
    if kind is dict:
        items: Iterable[Any] = value.values()
    elif kind is list:
        items = value
    else:
        return 1
    if not value:
        return 1
    if level > MAX_JSON_DEPTH:
        return 2  # this level and one below: deeper than allowed already
    below = 1
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            budget[0] -= 1
            if budget[0] < 0:
                raise _Wide
            below = max(below, _walk(item, level + 1, budget))
            if level + below > MAX_JSON_DEPTH:
                break  # the document's depth is level - 1 + below + 1: too deep
    return below + 1


def _nesting(value: Any) -> int:
    """The nesting depth of a parsed document, exact up to ``MAX_JSON_DEPTH + 1``
    and above the limit when it is above."""
    try:
        return _walk(value, 1, [_WALK_BUDGET])
    except _Wide:
        return _depth(value)


def json_loads(data: bytes | memoryview | str, *, max_bytes: int,
               what: str = "document") -> Any:
    """Parse UTF-8 JSON strictly: size limit first, no duplicate members, no NaN or
    Infinity, bounded nesting."""
    if isinstance(data, str):
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:  # a str holding a lone surrogate
            raise DecodeError(f"{what} is not valid Unicode text") from exc
    else:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise TooLarge(f"{what} is larger than {max_bytes} bytes")
    # json's C scanner recurses; a hostile depth ends in RecursionError, caught below.
    try:
        if isinstance(data, memoryview) and not data.contiguous:
            data = data.tobytes()  # the UTF-8 decoder reads one contiguous buffer
        text = data if isinstance(data, str) else str(data, "utf-8")
        if size <= _SMALL_DOCUMENT:
            value = _SMALL_DECODER.decode(text)
        else:
            with collector.paused():
                value = json.loads(text, object_pairs_hook=_object_hook(),
                                   parse_constant=_reject_constant,
                                   parse_float=_finite_float)
    except DecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON (line {exc.lineno}, column "
                          f"{exc.colno})") from exc
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"{what} is not valid JSON") from exc
    # A one-character search runs at memchr speed; a two-character one reads the
    # text several times slower (7 us for a 7 KB request body), and base64 and
    # compact JSON seldom hold a backslash at all.
    escaped = "\\" in text and "\\u" in text
    # Megabytes: not kept while the value is walked.
    del text
    # On the parsed value, not the text: the walk's cost follows the number of
    # containers, and a request's documents are a handful of objects around long
    # base64 strings (about a microsecond; any scan of the text costs several).
    if _nesting(value) > MAX_JSON_DEPTH:
        raise DecodeError(f"{what} is nested too deeply")
    if escaped:
        # A \uD800-style escape yields a lone surrogate: not Unicode text, and a
        # later .encode("utf-8") (PAE, digests, re-serialisation) would raise.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{what} contains an invalid \\u escape") from exc
    return value


# json.dumps with any option builds a new encoder per call (about 1 µs, several
# calls per submission); this one is what those options build.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                   allow_nan=False)


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Not canonical, and never needs to be: signatures cover the
    exact bytes produced here (DSSE), not a re-serialisation."""
    return _ENCODER.encode(value).encode("utf-8")


def expect_object(value: object, *, required: Iterable[str], optional: Iterable[str] = (),
                  what: str) -> dict[str, Any]:
    """Check that ``value`` is a JSON object with exactly the allowed members."""
    if not isinstance(value, dict):
        raise DecodeError(f"{what}: expected a JSON object")
    req = set(required)
    allowed = req | set(optional)
    missing = req - value.keys()
    if missing:
        raise DecodeError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    unknown = value.keys() - allowed
    if unknown:
        shown = ", ".join(sorted(repr(k)[:40] for k in unknown)[:5])
        raise DecodeError(f"{what}: unknown field(s) {shown}")
    return value


def expect_str(obj: Mapping[str, Any], key: str, *, what: str, max_len: int,
               min_len: int = 0) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise DecodeError(f"{what}.{key}: expected a string")
    if len(value) > max_len:
        raise TooLarge(f"{what}.{key}: longer than {max_len} characters")
    if len(value) < min_len:
        raise DecodeError(f"{what}.{key}: shorter than {min_len} characters")
    return value


def expect_int(obj: Mapping[str, Any], key: str, *, what: str, low: int, high: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}.{key}: expected an integer")
    if not low <= value <= high:
        raise DecodeError(f"{what}.{key}: must be between {low} and {high}")
    return value


def expect_version(obj: Mapping[str, Any], *, what: str, supported: int = 1) -> None:
    value = obj.get("v")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}: missing or malformed version field 'v'")
    if value != supported:
        raise UnsupportedVersion(f"{what}: version {value} is not supported "
                                 f"(this program reads version {supported})")


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, e.g. ``2026-12-01T09:00:00Z``."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime in UTC")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object, *, field: str) -> datetime:
    """Parse exactly the form :func:`format_time` writes."""
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise DecodeError(f"{field}: expected a UTC time like 2026-12-01T09:00:00Z")
    # The regex fixed every field's width and digits, so building the datetime from
    # the slices accepts and refuses what strptime did (month 13, 30 February, second
    # 60, year 0000 all raise ValueError) at a tenth of its cost: three times a
    # submission.
    try:
        return datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]),
                        int(value[11:13]), int(value[14:16]), int(value[17:19]), tzinfo=UTC)
    except ValueError as exc:
        raise DecodeError(f"{field}: not a valid date and time") from exc
