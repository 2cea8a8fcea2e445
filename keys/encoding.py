"""Strict decoders for the byte-level encodings used on the wire.

Every decoder takes an explicit size limit and raises :class:`~keys.errors.DecodeError`
(or a subclass) and nothing else, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import DecodeError, TooLarge, UnsupportedVersion

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
# A flat character class: a repeated group here cost ~37 bytes of memory per input
# byte on multi-megabyte payloads. Length and padding placement are checked apart,
# and the canonical re-encoding check below catches the rest.
_B64STD_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# [0-9], not \d: \d also matches non-ASCII digits, which strptime would accept.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

#: Nesting depth limit for JSON documents: our formats need at most 6; deep nesting
#: is only ever an attack on the parser's recursion.
MAX_JSON_DEPTH = 16


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), the encoding of every binary field."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, *, max_bytes: int, exact: int | None = None,
                  field: str = "value") -> bytes:
    """Decode unpadded base64url, rejecting padding, other alphabets, non-canonical
    trailing bits and anything longer than ``max_bytes`` once decoded."""
    if not isinstance(text, str):
        raise DecodeError(f"{field}: expected a base64url string")
    if len(text) > (max_bytes * 4 + 2) // 3 + 1:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise DecodeError(f"{field}: not unpadded base64url")
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{field}: not unpadded base64url") from exc
    if b64url_encode(data) != text:
        raise DecodeError(f"{field}: non-canonical base64url")
    if len(data) > max_bytes:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    if exact is not None and len(data) != exact:
        raise DecodeError(f"{field}: expected {exact} bytes, got {len(data)}")
    return data


def b64std_encode(data: bytes) -> str:
    """Standard padded base64, used only inside DSSE envelopes (the DSSE convention)."""
    return base64.standard_b64encode(data).decode("ascii")


def b64std_decode(text: object, *, max_bytes: int, field: str = "value") -> bytes:
    """Decode canonical padded base64. The URL-safe alphabet is accepted too, as the
    DSSE specification asks of verifiers."""
    if not isinstance(text, str):
        raise DecodeError(f"{field}: expected a base64 string")
    if len(text) > (max_bytes + 2) // 3 * 4:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    normal = text.replace("-", "+").replace("_", "/")
    if len(normal) % 4 or not _B64STD_RE.fullmatch(normal):
        raise DecodeError(f"{field}: not padded base64")
    try:
        data = base64.b64decode(normal, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{field}: not padded base64") from exc
    if base64.standard_b64encode(data).decode("ascii") != normal:
        raise DecodeError(f"{field}: non-canonical base64")
    if len(data) > max_bytes:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid JSON number {name}")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which json_dumps then refuses to write back.
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError("JSON number out of range")
    return value


def _depth(value: Any) -> int:
    # Iterative, so that a hostile document cannot exhaust the recursion limit.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def json_loads(data: bytes | str, *, max_bytes: int, what: str = "document") -> Any:
    """Parse UTF-8 JSON strictly: size limit first, no duplicate members, no NaN or
    Infinity, bounded nesting."""
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate
        raise DecodeError(f"{what} is not valid Unicode text") from exc
    if len(raw) > max_bytes:
        raise TooLarge(f"{what} is larger than {max_bytes} bytes")
    # json's C scanner recurses; a hostile depth ends in RecursionError, caught below.
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_reject_constant, parse_float=_finite_float)
    except DecodeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"{what} is not valid UTF-8 JSON") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise DecodeError(f"{what} is nested too deeply")
    if "\\u" in text:
        # A \uD800-style escape yields a lone surrogate: not Unicode text, and a
        # later .encode("utf-8") (PAE, digests, re-serialisation) would raise.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{what} contains an invalid \\u escape") from exc
    return value


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Not canonical, and never needs to be: signatures cover the
    exact bytes produced here (DSSE), not a re-serialisation."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


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
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise DecodeError(f"{field}: not a valid date and time") from exc
