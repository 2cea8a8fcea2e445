"""Property tests for every decoder: random bytes, random JSON and mutated valid
objects never raise anything but the documented error types.

Each decoder is fed three kinds of input: arbitrary bytes/text, arbitrary JSON, and a
real object with fields dropped, replaced or added (which reaches the deep checks
that random input never gets past).
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keys import dsse, seal
from keys.armor import armor, dearmor
from keys.card import CARD_TYPE, load_card
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import (
    b64std_decode,
    b64url_decode,
    b64url_encode,
    json_dumps,
    json_loads,
    parse_time,
)
from keys.envelope import ENVELOPE_TYPE, load_routing, make_envelope, parse_routing
from keys.errors import DecodeError, KeystoreError, OpenError, VerificationError
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS, decrypt_keystore, encrypt_keystore, new_unlocked
from keys.padding import pad, unpad
from keys.statements import STATEMENT_TYPE, load_statement, make_statement

T0 = FixedClock().current
SIGNER = SigningKey(bytes([77]) * 32)
FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12)
#: Arbitrary bytes, arbitrary text, and JSON documents (as bytes).
any_bytes = (st.binary(max_size=2048) | st.text(max_size=512).map(str.encode)
             | json_values.map(lambda v: json.dumps(v).encode()))


@st.composite
def mutated(draw: st.DrawFn, template: Any, depth: int = 0) -> Any:
    """``template`` with some members dropped, replaced or added, recursively."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace",
                                           "recurse"]))
            if action == "keep":
                out[key] = value
            elif action == "replace":
                out[key] = draw(json_values)
            elif action == "recurse" and depth < 4:
                out[key] = draw(mutated(value, depth + 1))
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.text(max_size=8))] = draw(json_values)
        return out
    if isinstance(template, list) and template:
        items = list(template)
        action = draw(st.sampled_from(["keep", "drop", "dup", "reverse", "recurse"]))
        if action == "drop":
            del items[draw(st.integers(0, len(items) - 1))]
        elif action == "dup":
            items.append(items[draw(st.integers(0, len(items) - 1))])
        elif action == "reverse":
            items.reverse()
        elif action == "recurse" and depth < 4:
            i = draw(st.integers(0, len(items) - 1))
            items[i] = draw(mutated(items[i], depth + 1))
        return items
    return draw(st.sampled_from([template, template]) | json_values)


def _signed_json(payload_type: str, value: Any) -> bytes:
    return dsse.sign(payload_type, json_dumps(value), SIGNER).to_json()


# -- encodings ------------------------------------------------------------------------

@FAST
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50), json_scalars))
def test_b64url_decode(text: Any) -> None:
    try:
        data = b64url_decode(text, max_bytes=64)
    except DecodeError:
        return
    assert b64url_encode(data) == text


@FAST
@given(st.binary(max_size=100))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data), max_bytes=100) == data


@FAST
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50), json_scalars))
def test_b64std_decode(text: Any) -> None:
    try:
        data = b64std_decode(text, max_bytes=64)
    except DecodeError:
        return
    assert len(data) <= 64


@FAST
@given(any_bytes | st.text(max_size=200))
def test_json_loads(data: bytes | str) -> None:
    try:
        value = json_loads(data, max_bytes=4096)
    except DecodeError:
        return
    # Whatever it accepts can be written back (no NaN, no lone surrogates).
    json_dumps(value)


@FAST
@given(json_values)
def test_json_round_trip(value: Any) -> None:
    assert json_loads(json_dumps(value), max_bytes=1 << 20) == value


@FAST
@given(st.text(max_size=30) | json_scalars)
def test_parse_time(value: Any) -> None:
    try:
        when = parse_time(value, field="t")
    except DecodeError:
        return
    assert when.tzinfo is not None


@FAST
@given(st.binary(max_size=3000))
def test_unpad(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        unpad(data)
    assert unpad(pad(data)) == data


# -- DSSE, armor, cards ---------------------------------------------------------------

ENVELOPE_TEMPLATE = json.loads(dsse.cosign(dsse.sign("t", b"payload", SIGNER),
                                           SigningKey(bytes(32))).to_json())


@FAST
@given(any_bytes | mutated(ENVELOPE_TEMPLATE).map(lambda v: json.dumps(v).encode()))
def test_envelope_from_json(data: bytes) -> None:
    try:
        env = dsse.Envelope.from_json(data, max_payload=1024)
    except DecodeError:
        return
    # A parsed envelope can always be hashed and written back identically.
    env.digest()
    assert dsse.Envelope.from_json(env.to_json(), max_payload=1024) == env


@FAST
@given(st.text(max_size=300), st.binary(max_size=100), st.sampled_from(["", "> ", "  "]))
def test_dearmor(noise: str, data: bytes, prefix: str) -> None:
    with contextlib.suppress(DecodeError):
        dearmor(noise, "CARD", max_bytes=1024)
    block = "".join(prefix + line + "\n" for line in armor("CARD", data).splitlines())
    assert dearmor(noise.replace("-----", "") + "\n" + block, "CARD", max_bytes=1024) == data


@pytest.fixture(scope="module")
def card_payload_template(alice: Identity) -> dict[str, Any]:
    value = json.loads(alice.card.envelope.payload)
    assert isinstance(value, dict)
    return value


def _load_card_only_documented_errors(data: bytes | str) -> None:
    with contextlib.suppress(DecodeError, VerificationError):
        load_card(data, now=T0)


@FAST
@given(any_bytes | st.text(max_size=300))
def test_load_card_random(data: bytes | str) -> None:
    _load_card_only_documented_errors(data)


@FAST
@given(data=st.data())
def test_load_card_mutated(alice: Identity, card_payload_template: dict[str, Any],
                           data: st.DataObject) -> None:
    payload = data.draw(mutated(card_payload_template))
    signer = data.draw(st.sampled_from([alice.signing_key, SIGNER]))
    envelope = dsse.sign(CARD_TYPE, json_dumps(payload), signer).to_json()
    armored = data.draw(st.booleans())
    _load_card_only_documented_errors(armor("CARD", envelope) if armored else envelope)


# -- sealed messages ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sealed_pair(alice: Identity, bob: Identity, carol: Identity) -> tuple[bytes, dict[str, Any]]:
    data = seal.seal(alice, [bob.card, carol.card], "namelist", {"names": ["x"]}).data
    header = json.loads(b64url_decode(json.loads(data)["header"], max_bytes=1 << 16))
    return data, header


@FAST
@given(any_bytes)
def test_parse_sealed_unverified_random(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        seal.parse_sealed_unverified(data)


@FAST
@given(data=st.data())
def test_open_sealed_random_bytes_only_open_error(alice: Identity, bob: Identity,
                                                  data: st.DataObject) -> None:
    raw = data.draw(any_bytes)
    with pytest.raises(OpenError):
        seal.open_sealed(raw, bob, lambda _sid: alice.card)


@FAST
@given(data=st.data())
def test_sealed_mutations(alice: Identity, bob: Identity,
                          sealed_pair: tuple[bytes, dict[str, Any]],
                          data: st.DataObject) -> None:
    original, header = sealed_pair
    outer = json.loads(original)
    new_header = data.draw(mutated(header))
    assume(new_header != header)
    outer["header"] = b64url_encode(json_dumps(new_header))
    if data.draw(st.booleans()):
        outer = data.draw(mutated(outer))
    raw = json_dumps(outer)
    with contextlib.suppress(DecodeError):
        seal.parse_sealed_unverified(raw)
    with pytest.raises(OpenError):
        seal.open_sealed(raw, bob, lambda _sid: alice.card)


@FAST
@given(data=st.data())
def test_sealed_byte_edits(alice: Identity, bob: Identity,
                           sealed_pair: tuple[bytes, dict[str, Any]],
                           data: st.DataObject) -> None:
    original = sealed_pair[0]
    i = data.draw(st.integers(0, len(original) - 1))
    replacement = data.draw(st.binary(min_size=0, max_size=3))
    raw = original[:i] + replacement + original[i + 1:]
    assume(raw != original)
    with pytest.raises(OpenError):
        seal.open_sealed(raw, bob, lambda _sid: alice.card)


MESSAGE_TEMPLATE = {"v": 1, "id": "AAAAAAAAAAAAAAAAAAAAAA", "from": "f" * 32,
                    "to": ["a" * 32, "b" * 32], "created": "2026-11-23T09:00:00Z",
                    "kind": "namelist", "body": {"names": []}}


@FAST
@given(any_bytes | mutated(MESSAGE_TEMPLATE).map(json_dumps))
def test_parse_message_payload(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        seal.parse_message_payload(payload)


# -- keystore -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keystore_template(alice: Identity) -> dict[str, Any]:
    value = json.loads(encrypt_keystore(new_unlocked(alice), "pass", params=FLOOR_PARAMS))
    assert isinstance(value, dict)
    return value


@FAST
@given(any_bytes)
def test_decrypt_keystore_random(data: bytes) -> None:
    with contextlib.suppress(KeystoreError):
        decrypt_keystore(data, "pass")


@FAST
@given(data=st.data())
def test_decrypt_keystore_mutated(keystore_template: dict[str, Any],
                                  data: st.DataObject) -> None:
    obj = data.draw(mutated(keystore_template))
    assume(obj != keystore_template)  # an intact file would (slowly) just open
    with pytest.raises(KeystoreError):
        decrypt_keystore(json_dumps(obj), "pass")


# -- routing envelopes and statements -------------------------------------------------

ROUTING_TEMPLATE = json.loads(make_envelope(
    SIGNER, b"sealed", to=["a" * 32], origin="o" * 32, destination="d" * 32,
    route=["r" * 32], lifetime=timedelta(days=1), clock=FixedClock(T0)).envelope.payload)
STATEMENT_TEMPLATE = json.loads(make_statement(
    "opened", b64url_encode(bytes(32)), SIGNER, clock=FixedClock(T0),
    recipient="r" * 32, inner=b64url_encode(bytes(range(32)))).to_json())


@FAST
@given(any_bytes | mutated(ROUTING_TEMPLATE).map(json_dumps))
def test_parse_routing(payload: bytes) -> None:
    try:
        routing = parse_routing(dsse.sign(ENVELOPE_TYPE, payload, SIGNER))
    except DecodeError:
        return
    assert routing.hops[-1] == routing.destination


ROUTING_ENVELOPE_TEMPLATE = json.loads(dsse.sign(ENVELOPE_TYPE, json_dumps(ROUTING_TEMPLATE),
                                                 SIGNER).to_json())


@FAST
@given(any_bytes | mutated(ROUTING_ENVELOPE_TEMPLATE))
def test_load_routing(data: bytes | Any) -> None:
    with contextlib.suppress(DecodeError):
        load_routing(data if isinstance(data, bytes | dict) else json_dumps(data))


@FAST
@given(any_bytes)
def test_load_statement_random(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        load_statement(data)


@FAST
@given(data=st.data())
def test_load_statement_mutated(data: st.DataObject) -> None:
    payload = json.loads(dsse.Envelope.from_dict(STATEMENT_TEMPLATE).payload)
    new_payload = data.draw(mutated(payload))
    env = _signed_json(STATEMENT_TYPE, new_payload)
    as_dict = data.draw(st.booleans())
    with contextlib.suppress(DecodeError):
        load_statement(json.loads(env) if as_dict else env)
    # And the outer envelope mutated, passed as a dict.
    outer = data.draw(mutated(STATEMENT_TEMPLATE))
    with contextlib.suppress(DecodeError):
        load_statement(outer if isinstance(outer, dict) else {})
