"""Statements (receipts): every kind round trips and verifies; strict parsing;
statement ids name the signed payload, never a signature."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from keys import dsse
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import DecodeError, VerificationError
from keys.statements import (
    KINDS,
    STATEMENT_TYPE,
    load_statement,
    make_statement,
    parse_statement,
    statement_id,
    verify_statement,
)

T0 = FixedClock().current
NODE = SigningKey(bytes([21]) * 32)
OTHER = SigningKey(bytes([22]) * 32)
ENV_ID = b64url_encode(hashlib.sha256(b"an envelope").digest())
DIGEST = b64url_encode(hashlib.sha256(b"something").digest())

EXTRA: dict[str, dict[str, str]] = {
    "accepted": {"sender": "a" * 32},
    "relayed": {"previous": "p" * 32, "next": "n" * 32},
    "delivered": {"recipient": "r" * 32},
    "opened": {"recipient": "r" * 32, "inner": DIGEST},
    "countersigned": {"statement": DIGEST},
    "failed": {"next": "n" * 32, "reason": "node unreachable for 7 days"},
}


def test_extra_table_covers_every_kind() -> None:
    assert set(EXTRA) == set(KINDS)
    assert all(set(EXTRA[k]) == set(KINDS[k]) for k in KINDS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip(kind: str) -> None:
    st = make_statement(kind, ENV_ID, NODE, clock=FixedClock(T0), **EXTRA[kind])
    assert st.kind == kind and st.envelope == ENV_ID and st.by == NODE.id and st.at == T0
    assert dict(st.fields) == EXTRA[kind]
    for loaded in (load_statement(st.to_json()), load_statement(st.to_json().decode()),
                   load_statement(json.loads(st.to_json()))):
        assert loaded == st
        verify_statement(loaded, NODE.public)
    payload = json.loads(st.signed.payload if st.signed else b"")
    assert payload == {"v": 1, "type": kind, "envelope": ENV_ID, "by": NODE.id,
                       "at": "2026-11-23T09:00:00Z", **EXTRA[kind]}


@pytest.mark.parametrize("kind", list(KINDS))
def test_verify_rejects_other_key(kind: str) -> None:
    st = make_statement(kind, ENV_ID, NODE, clock=FixedClock(T0), **EXTRA[kind])
    with pytest.raises(VerificationError):
        verify_statement(st, OTHER.public)
    # OTHER re-signs NODE's statement: `by` still names NODE, whose signature is absent.
    resigned = parse_statement(dsse.sign(STATEMENT_TYPE, st.signed.payload, OTHER)
                               if st.signed else dsse.Envelope("", b""))
    with pytest.raises(VerificationError):
        verify_statement(resigned, NODE.public)
    with pytest.raises(VerificationError):
        verify_statement(resigned, OTHER.public)


def test_make_statement_misuse() -> None:
    with pytest.raises(ValueError):
        make_statement("read", ENV_ID, NODE)
    with pytest.raises(ValueError):
        make_statement("opened", ENV_ID, NODE, recipient="r")
    with pytest.raises(ValueError):
        make_statement("delivered", ENV_ID, NODE, recipient="r", extra="x")


def test_unsigned_statement_cannot_serialise() -> None:
    st = make_statement("delivered", ENV_ID, NODE, recipient="r")
    bare = type(st)(st.id, st.kind, st.envelope, st.by, st.at, st.fields, None)
    with pytest.raises(ValueError):
        bare.to_json()
    with pytest.raises(VerificationError):
        verify_statement(bare, NODE.public)


def _payload(kind: str = "opened") -> dict[str, Any]:
    st = make_statement(kind, ENV_ID, NODE, clock=FixedClock(T0), **EXTRA[kind])
    assert st.signed is not None
    value = json_loads(st.signed.payload, max_bytes=4096)
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("change", [
    {"v": 2}, {"type": "read"}, {"type": ["opened"]}, {"type": {"k": 1}}, {"type": None},
    {"extra": 1}, {"envelope": "x" * 43}, {"envelope": ENV_ID[:-1]}, {"by": ""},
    {"by": "b" * 65}, {"at": "now"}, {"recipient": ""}, {"recipient": 7},
    {"inner": "x" * 43}, {"inner": DIGEST + "A"}, {"reason": "x"},
])
def test_malformed_payload(change: dict[str, Any]) -> None:
    env = dsse.sign(STATEMENT_TYPE, json_dumps({**_payload(), **change}), NODE)
    with pytest.raises(DecodeError):
        load_statement(env.to_json())


def test_missing_fields_and_wrong_kind_fields() -> None:
    for name in _payload():
        payload = _payload()
        del payload[name]
        with pytest.raises(DecodeError):
            parse_statement(dsse.sign(STATEMENT_TYPE, json_dumps(payload), NODE))
    # A "delivered" statement carrying "opened" fields.
    with pytest.raises(DecodeError):
        parse_statement(dsse.sign(STATEMENT_TYPE,
                                  json_dumps({**_payload(), "type": "delivered"}), NODE))


def test_reason_limit() -> None:
    make_statement("failed", ENV_ID, NODE, next="n", reason="x" * 200)
    with pytest.raises(DecodeError):
        make_statement("failed", ENV_ID, NODE, next="n", reason="x" * 201)


def test_not_a_statement_and_size_limit() -> None:
    with pytest.raises(DecodeError):
        load_statement(dsse.sign("application/x", json_dumps(_payload()), NODE).to_json())
    big = dsse.sign(STATEMENT_TYPE, json_dumps({**_payload(), "pad": "x" * 5000}), NODE)
    with pytest.raises(DecodeError):
        load_statement(big.to_json())


def test_tampered_statement_rejected() -> None:
    st = make_statement("delivered", ENV_ID, NODE, clock=FixedClock(T0), recipient="r" * 32)
    assert st.signed is not None
    payload = st.signed.payload
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x01
        with pytest.raises((DecodeError, VerificationError)):
            verify_statement(parse_statement(dsse.Envelope(STATEMENT_TYPE, bytes(bad),
                                                           st.signed.signatures)),
                             NODE.public)


# -- ids ------------------------------------------------------------------------------

def test_statement_id_is_digest_of_signed_payload() -> None:
    # Find a statement whose signature's base64 contains + or /, so re-encoding it in
    # the URL-safe alphabet (which DSSE verifiers accept) really changes the bytes.
    for n in range(100):
        st = make_statement("delivered", ENV_ID, NODE, recipient=f"r{n}")
        assert st.signed is not None
        sig_b64 = base64.b64encode(st.signed.signatures[0].sig).decode()
        if "+" in sig_b64 or "/" in sig_b64:
            break
    else:
        raise AssertionError("no signature with + or / in 100 tries")
    signed = st.signed
    assert st.id == statement_id(signed) == b64url_encode(
        hashlib.sha256(dsse.pae(STATEMENT_TYPE, signed.payload)).digest())
    wire = json.loads(st.to_json())
    urlsafe = json.loads(json.dumps(wire))
    urlsafe["signatures"][0]["sig"] = sig_b64.replace("+", "-").replace("/", "_")
    assert urlsafe != wire
    reencoded = load_statement(json.dumps(urlsafe, indent=1))
    assert reencoded.signed is not None
    assert reencoded.signed.signatures == signed.signatures
    assert reencoded.id == st.id
    verify_statement(reencoded, NODE.public)
    # A co-signature (e.g. a witness) leaves the id unchanged...
    cosigned = load_statement(dsse.cosign(signed, OTHER).to_json())
    assert cosigned.id == st.id
    verify_statement(cosigned, NODE.public)
    # ...and so does removing every signature.
    assert statement_id(dsse.Envelope(STATEMENT_TYPE, signed.payload)) == st.id
    # A different payload (even one second later) is a different statement.
    later = make_statement("delivered", ENV_ID, NODE, recipient=st.fields["recipient"],
                           clock=FixedClock(st.at.replace(second=(st.at.second + 1) % 60)))
    assert later.id != st.id
    assert make_statement("delivered", ENV_ID, OTHER, recipient=st.fields["recipient"],
                          clock=FixedClock(st.at)).id != st.id


def test_countersigned_names_statement_id() -> None:
    delivered = make_statement("delivered", ENV_ID, NODE, recipient="r" * 32)
    counter = make_statement("countersigned", ENV_ID, OTHER, statement=delivered.id)
    assert load_statement(counter.to_json()).fields["statement"] == delivered.id
