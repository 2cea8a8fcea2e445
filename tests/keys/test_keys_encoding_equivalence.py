"""The fast decoders in keys.encoding accept and refuse exactly what the plain ones
they replaced did, with the same error types and messages.

The reference implementations below are the earlier code of keys.encoding, kept here
verbatim: straightforward (a regex for the alphabet, a full re-encoding for the
canonical check, a per-member duplicate check, a recursive-style depth walk) but
several times slower and larger in memory on multi-megabyte sealed messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keys import encoding
from keys.encoding import MAX_JSON_DEPTH, b64std_decode, b64url_decode, json_loads
from keys.errors import DecodeError, TooLarge

MANY = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# --- the reference implementations (keys/encoding.py before the fast paths) ----------

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_B64STD_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def ref_b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ref_b64url_decode(text: object, *, max_bytes: int, exact: int | None = None,
                      field: str = "value") -> bytes:
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
    if ref_b64url_encode(data) != text:
        raise DecodeError(f"{field}: non-canonical base64url")
    if len(data) > max_bytes:
        raise TooLarge(f"{field}: longer than {max_bytes} bytes")
    if exact is not None and len(data) != exact:
        raise DecodeError(f"{field}: expected {exact} bytes, got {len(data)}")
    return data


def ref_b64std_decode(text: object, *, max_bytes: int, field: str = "value") -> bytes:
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


def _ref_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _ref_reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid JSON number {name}")


def _ref_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError("JSON number out of range")
    return value


def ref_depth(value: Any) -> int:
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


def ref_json_loads(data: bytes | str, *, max_bytes: int, what: str = "document") -> Any:
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as exc:
        raise DecodeError(f"{what} is not valid Unicode text") from exc
    if len(raw) > max_bytes:
        raise TooLarge(f"{what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_ref_no_duplicates,
                           parse_constant=_ref_reject_constant, parse_float=_ref_finite_float)
    except DecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON (line {exc.lineno}, column "
                          f"{exc.colno})") from exc
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"{what} is not valid JSON") from exc
    if ref_depth(value) > MAX_JSON_DEPTH:
        raise DecodeError(f"{what} is nested too deeply")
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{what} contains an invalid \\u escape") from exc
    return value


# --- comparison ----------------------------------------------------------------------

def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except DecodeError as exc:  # TooLarge and UnsupportedVersion are subclasses
        return type(exc).__name__, str(exc)


def _same(new: Callable[[], Any], ref: Callable[[], Any]) -> None:
    got, want = _outcome(new), _outcome(ref)
    assert got == want
    if got[0] == "ok":
        assert type(got[1]) is type(want[1])


# --- base64 ----------------------------------------------------------------------------

#: Both alphabets, padding, and characters that are not base64 at all (space, newline,
#: NUL, a letter outside ASCII, a full-width digit).
B64_CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
             "+/-_==== \n\x00é٣")


@st.composite
def base64_like(draw: st.DrawFn) -> str:
    """Random text, or a valid encoding (either alphabet, padded or not) with a few
    characters replaced, inserted or removed: the inputs that reach the deep checks."""
    if draw(st.booleans()):
        return draw(st.text(alphabet=B64_CHARS, max_size=24))
    data = draw(st.binary(max_size=20))
    text = (base64.urlsafe_b64encode(data) if draw(st.booleans())
            else base64.standard_b64encode(data)).decode("ascii")
    if draw(st.booleans()):
        text = text.rstrip("=")
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(B64_CHARS))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert":
            text = text[:position] + char + text[position:]
        elif action == "replace":
            text = text[:position] + char + text[position + 1:]
        else:
            text = text[:position] + text[position + 1:]
    return text


@MANY
@given(base64_like(), st.integers(0, 20), st.none() | st.integers(0, 20))
@example("AAAA====", 20, None)
@example("AA", 20, None)
@example("AB", 20, None)
@example("AAB", 20, None)
@example("", 0, 0)
def test_b64url_decode_matches_reference(text: str, max_bytes: int, exact: int | None
                                         ) -> None:
    _same(lambda: b64url_decode(text, max_bytes=max_bytes, exact=exact, field="f"),
          lambda: ref_b64url_decode(text, max_bytes=max_bytes, exact=exact, field="f"))


@MANY
@given(base64_like(), st.integers(0, 20))
@example("AAAA====", 20)
@example("AAAAAA==", 20)
@example("AB==", 20)
@example("AAB=", 20)
@example("A===", 20)
@example("====", 20)
@example("AA=A", 20)
@example("", 0)
def test_b64std_decode_matches_reference(text: str, max_bytes: int) -> None:
    _same(lambda: b64std_decode(text, max_bytes=max_bytes, field="f"),
          lambda: ref_b64std_decode(text, max_bytes=max_bytes, field="f"))


@given(st.sampled_from([None, 3, b"QUFB", ["QUFB"]]))
def test_b64_decoders_refuse_non_strings_like_reference(value: object) -> None:
    _same(lambda: b64url_decode(value, max_bytes=8), lambda: ref_b64url_decode(value,
                                                                               max_bytes=8))
    _same(lambda: b64std_decode(value, max_bytes=8), lambda: ref_b64std_decode(value,
                                                                               max_bytes=8))


def test_b64_decoders_large_inputs_match_reference() -> None:
    # Megabytes (the sealed-message case), valid and with one bad character near the
    # end, in the middle, or non-canonical trailing bits.
    data = bytes(range(256)) * 4099 + b"\x01"
    url = base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    std = base64.standard_b64encode(data).decode("ascii")
    middle = len(url) // 2
    for text in (url, url[:-1] + "F", url[:middle] + "+" + url[middle + 1:],
                 url[:middle] + "=" + url[middle + 1:], url[:middle] + " " + url[middle + 1:]):
        _same(lambda text=text: b64url_decode(text, max_bytes=len(data)),
              lambda text=text: ref_b64url_decode(text, max_bytes=len(data)))
    for text in (std, std[:-3] + "F==", std[:middle] + "*" + std[middle + 1:],
                 std.replace("+", "-"), std[:-2] + "A=", std + "===="):
        _same(lambda text=text: b64std_decode(text, max_bytes=len(data)),
              lambda text=text: ref_b64std_decode(text, max_bytes=len(data)))


# --- JSON ----------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=6))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids,
                                                              max_size=3),
    max_leaves=40)


def _nest(value: Any, levels: list[str]) -> Any:
    for kind in levels:
        value = [value] if kind == "list" else {"k": value}
    return value


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    """JSON text around the limits: deep nesting, duplicate members, non-finite and
    huge numbers, escapes (lone surrogates among them), and plain garbage."""
    value = draw(json_values)
    if draw(st.booleans()):
        levels = draw(st.lists(st.sampled_from(["list", "dict"]), min_size=10, max_size=20))
        value = _nest(value, levels)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(text)))
        insert = draw(st.sampled_from([
            '"k":1,', ',"k":2', '"a":1,"a":2,', "NaN", "Infinity", "-Infinity", "1e400",
            "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0041", "[", "]", "{", "}", ",",
            '"', "\\", "\x00", "é", "1" * 30]))
        text = text[:position] + insert + text[position:]
    return text


@MANY
@given(json_documents(), st.sampled_from([64, 4096]))
@example('{"a":1,"a":2}', 4096)
@example('{"a":{"b":1,"b":1},"c":[1e400]}', 4096)
@example('"\\ud800"', 4096)
@example("[" * 16 + "]" * 16, 4096)
@example("[" * 17 + "]" * 17, 4096)
@example("{}", 4096)
def test_json_loads_matches_reference(text: str, max_bytes: int) -> None:
    _same(lambda: json_loads(text.encode("utf-8", "surrogatepass"), max_bytes=max_bytes),
          lambda: ref_json_loads(text.encode("utf-8", "surrogatepass"), max_bytes=max_bytes))
    _same(lambda: json_loads(text, max_bytes=max_bytes),
          lambda: ref_json_loads(text, max_bytes=max_bytes))


@MANY
@given(json_values, st.lists(st.sampled_from(["list", "dict"]), max_size=20))
def test_depth_matches_reference(value: Any, levels: list[str]) -> None:
    nested = _nest(value, levels)
    assert min(encoding._depth(nested), MAX_JSON_DEPTH + 1) == min(ref_depth(nested),
                                                                  MAX_JSON_DEPTH + 1)
    # The depth-first walk stops early, but agrees up to the limit, within its
    # budget of containers (a large budget: every document) and past it.
    expected = min(ref_depth(nested), MAX_JSON_DEPTH + 1)
    assert min(encoding._walk(nested, 1, [10**9]), MAX_JSON_DEPTH + 1) == expected
    assert min(encoding._nesting(nested), MAX_JSON_DEPTH + 1) == expected


def test_json_loads_shares_equal_strings_and_keeps_values() -> None:
    # Sharing is for large documents (name lists); small ones take the plain decoder.
    count = 2000
    document = [{"given": "Олександр", "born": "1980-01-01", "n": 1, "t": True}
                for _ in range(count)] + [{"given": "Олександр", "other": 1.0}]
    data = json.dumps(document, ensure_ascii=False).encode()
    assert len(data) > encoding._SMALL_DOCUMENT
    value = json_loads(data, max_bytes=1 << 20)
    assert value == ref_json_loads(json.dumps(document).encode(), max_bytes=1 << 20)
    assert len({id(item["given"]) for item in value}) == 1
    # Only strings are shared: 1, True and 1.0 are equal in Python but stay apart.
    assert [type(item.get("n", item.get("other"))) for item in value] == \
        [int] * count + [float]
    assert all(item["t"] is True for item in value[:count])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_large_documents_parse_like_small_ones(value: Any) -> None:
    """Both decoders (the shared one for small documents, the string-sharing one
    above 64 KiB) accept and refuse alike."""
    text = json.dumps(value, ensure_ascii=False)
    big = text + " " * encoding._SMALL_DOCUMENT  # the same document, padded
    assert _outcome(lambda: json_loads(big, max_bytes=1 << 20)) == \
        _outcome(lambda: json_loads(text, max_bytes=1 << 20))


def test_json_loads_memoryview_input() -> None:
    data = b'{"a":[1,2,"x"]}'
    assert json_loads(memoryview(data), max_bytes=64) == {"a": [1, 2, "x"]}
    assert _outcome(lambda: json_loads(memoryview(data), max_bytes=10))[0] == "TooLarge"
    assert _outcome(lambda: json_loads(memoryview(b'{"a":\xff}'), max_bytes=64)) == \
        _outcome(lambda: ref_json_loads(b'{"a":\xff}', max_bytes=64))


# --- json_dumps: a shared encoder instead of json.dumps's per-call one ----------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


def ref_json_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


@MANY
@given(_JSON_VALUES)
@example("\u2028 é \\ \" \x00 \U0001f600")
@example({"b": [1, 2.5, None], "a": {"": True}})
def test_json_dumps_writes_what_json_dumps_wrote(value: Any) -> None:
    assert encoding.json_dumps(value) == ref_json_dumps(value)


def test_json_dumps_still_refuses_what_json_dumps_refused() -> None:
    for bad in (math.nan, [math.inf], {"x": -math.inf}, {1j: 1}, b"bytes", {1, 2}):
        with pytest.raises((ValueError, TypeError)) as got:
            encoding.json_dumps(bad)
        with pytest.raises((ValueError, TypeError)) as want:
            ref_json_dumps(bad)
        assert (type(got.value), str(got.value)) == (type(want.value), str(want.value))
