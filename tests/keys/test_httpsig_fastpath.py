"""keys.httpsig's fast paths for the structured-field shapes our clients send give
exactly what http_sf gives, and leave every other input (and every refusal) to it."""

from __future__ import annotations

import base64
from typing import Any

import http_sf
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keys import httpsig
from keys.ed25519 import SigningKey
from keys.httpsig import SignatureInvalid, SignatureMissing

MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces close to the fast shapes, with the near misses that must fall back: spaces,
# escapes, upper case, leading zeros, signs, decimals, tokens, booleans, duplicates,
# two members, non-ASCII, bad or non-canonical base64.
keys_ = st.one_of(st.sampled_from(["bc", "sig1", "sha-256", "created", "nonce", "keyid", "alg",
                                   "expires", "tag", "a*b", "*x", "Bc", "1a", "", "a_b.c"]),
                  st.text(alphabet="abcz09_-.*A ", min_size=0, max_size=6))
strings = st.one_of(st.sampled_from(["@method", "@target-uri", "content-digest", "ed25519",
                                     "", " ", 'a\\"b', "a\\\\b", "é", "x y", "a\"b"]),
                    st.text(alphabet=st.characters(min_codepoint=0x1f, max_codepoint=0x80),
                            max_size=8))
numbers = st.one_of(st.integers(-5, 10**16).map(str),
                    st.sampled_from(["0", "00", "0123", "-0", "1.5", "999999999999999",
                                     "1000000000000000", "1e3"]))
b64 = st.one_of(st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode()),
                st.binary(min_size=1, max_size=10).map(
                    lambda b: base64.b64encode(b).decode().rstrip("=")),
                st.text(alphabet="ABCab+/=-_", max_size=12))
params = st.lists(st.tuples(keys_, st.one_of(numbers, strings.map(lambda s: f'"{s}"'),
                                             st.sampled_from(["?1", "tok", ""]))),
                  max_size=6)
seps = st.sampled_from([" ", " ", " ", "  ", ""])


@st.composite
def inputs(draw: st.DrawFn) -> str:
    items = draw(st.lists(strings, max_size=5))
    sep = draw(seps)
    inner = "(" + sep.join(f'"{i}"' for i in items) + ")"
    ps = "".join(f";{k}={v}" if v else f";{k}" for k, v in draw(params))
    return f"{draw(keys_)}={inner}{ps}"


@st.composite
def byteseqs(draw: st.DrawFn) -> str:
    return f"{draw(keys_)}=:{draw(b64)}:" + draw(st.sampled_from(["", "", ";a=1", " "]))


@st.composite
def headers(draw: st.DrawFn) -> str:
    members = draw(st.lists(st.one_of(inputs(), byteseqs()), min_size=1, max_size=2))
    text = draw(st.sampled_from([", ", ",", " , "])).join(members)
    return draw(st.sampled_from(["", "", " "])) + text + draw(st.sampled_from(["", "", " "]))


def _full(value: str) -> tuple[str, Any]:
    try:
        return "ok", http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (UnicodeEncodeError, ValueError):
        return "refused", None


def _via_parse_dict(value: str) -> tuple[str, Any]:
    try:
        return "ok", httpsig._parse_dict(value, "Signature")
    except SignatureInvalid:
        return "refused", None


REAL = ('bc=("@method" "@target-uri" "content-digest");created=1795440534;'
        'nonce="6uOpdXTWhirDMWFAHjXXgw";keyid="slixujb36wgvb7rz47ih55nlelgh24g6";alg="ed25519"')


@MANY
@given(st.one_of(headers(), st.text(max_size=40)))
@example(REAL)
@example("bc=:eB==:")
@example("bc=:eA:")
@example("bc=::")
@example("bc=:====:")
@example('bc=("a");p=1;p=2')
@example('bc=("a");created=0123')
@example('bc=("a" "b");alg=ed25519')
def test_fast_parse_is_http_sf(value: str) -> None:
    fast = httpsig._parse_simple(value)
    full = _full(value)
    if fast is not None:
        assert full == ("ok", fast)
    assert _via_parse_dict(value) == full


def test_the_shapes_we_send_take_the_fast_path() -> None:
    assert httpsig._parse_simple(REAL) is not None
    sent = httpsig.sign_request(httpsig_key(), method="POST", url="https://n.example/v1/x",
                                body=b"{}", created=1795440534, nonce="n-1",
                                extra_headers={"x-extra": "1"})
    for value in sent.values():
        assert httpsig._parse_simple(value) == http_sf.parse(value.encode(),
                                                             tltype="dictionary")


def httpsig_key() -> SigningKey:
    return SigningKey.generate()


@MANY
@given(st.lists(strings, max_size=5), params, st.data())
def test_fast_serialise_is_http_sf(items: list[str], raw: list[tuple[str, str]],
                                   data: st.DataObject) -> None:
    values: dict[str, Any] = {}
    for key, text in raw:
        values[key] = data.draw(st.one_of(st.integers(-2, 10**15 + 2), st.just(text),
                                          st.booleans(), st.just(1.5)))
    inner: list[tuple[str, dict[str, Any]]] = [(i, {}) for i in items]
    fast = httpsig._serialise_simple(inner, values)
    try:
        full: str | None = http_sf.ser({"x": (inner, values)})[2:]
    except (ValueError, TypeError):
        full = None
    if fast is not None:
        assert fast == full
    try:
        ours: str | None = httpsig._serialise_member(inner, values)
    except (ValueError, TypeError):
        ours = None
    assert ours == full


def test_missing_header_still_reported() -> None:
    with pytest.raises(SignatureMissing):
        httpsig._parse_dict(None, "Signature")
