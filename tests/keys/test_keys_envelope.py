"""Routing envelopes: round trip, route navigation, strict parsing, tampering, and
envelope ids that name the signed payload rather than any signature."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from keys import dsse
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.envelope import (
    ENVELOPE_TYPE,
    MAX_LIFETIME,
    MAX_ROUTE,
    check_content,
    envelope_id,
    make_envelope,
    parse_routing,
    verify_routing,
)
from keys.errors import DecodeError, VerificationError

T0 = FixedClock().current
SENDER = SigningKey(bytes([11]) * 32)
OTHER = SigningKey(bytes([12]) * 32)
SEALED = b'{"v":1,"header":"...","ct":"..."}'
ORIGIN, HOP1, HOP2, DEST = "o" * 32, "h" * 32, "i" * 32, "d" * 32
TO = ["r" * 32, "s" * 32]


def _routing(**kw: Any) -> Any:
    args: dict[str, Any] = {"to": TO, "origin": ORIGIN, "destination": DEST,
                            "route": [HOP1, HOP2], "clock": FixedClock(T0)}
    args.update(kw)
    return make_envelope(SENDER, SEALED, **args)


def test_round_trip() -> None:
    routing = _routing()
    parsed = parse_routing(dsse.Envelope.from_json(routing.envelope.to_json()))
    assert parsed == routing
    verify_routing(parsed, SENDER.public)
    assert parsed.sender == SENDER.id
    assert parsed.to == tuple(TO)
    assert parsed.content == b64url_encode(hashlib.sha256(SEALED).digest())
    assert parsed.size == len(SEALED)
    assert parsed.created == T0 and parsed.expires == T0 + timedelta(days=7)
    check_content(parsed, SEALED)


def test_content_mismatch() -> None:
    routing = _routing()
    for other in (SEALED + b" ", SEALED[:-1], SEALED.replace(b"...", b"..,", 1)):
        with pytest.raises(DecodeError):
            check_content(routing, other)


def test_verify_routing_rejects_other_signer() -> None:
    routing = _routing()
    with pytest.raises(VerificationError):
        verify_routing(routing, OTHER.public)
    # Signed by OTHER but claiming SENDER in "from".
    payload = routing.envelope.payload
    forged = parse_routing(dsse.sign(ENVELOPE_TYPE, payload, OTHER))
    with pytest.raises(VerificationError):
        verify_routing(forged, SENDER.public)


def test_hops() -> None:
    routing = _routing()
    assert routing.hops == (ORIGIN, HOP1, HOP2, DEST)
    assert routing.next_hop(ORIGIN) == HOP1
    assert routing.next_hop(HOP2) == DEST
    assert routing.next_hop(DEST) is None
    assert routing.previous_hop(ORIGIN) is None
    assert routing.previous_hop(DEST) == HOP2
    with pytest.raises(DecodeError):
        routing.next_hop("x" * 32)
    with pytest.raises(DecodeError):
        routing.previous_hop("x" * 32)
    single = _routing(origin=DEST, route=[])
    assert single.hops == (DEST,)
    assert single.next_hop(DEST) is None and single.previous_hop(DEST) is None


def test_lifetime_bounds() -> None:
    assert _routing(lifetime=MAX_LIFETIME).expires == T0 + MAX_LIFETIME
    for bad in (timedelta(0), -timedelta(seconds=1), MAX_LIFETIME + timedelta(seconds=1)):
        with pytest.raises(ValueError):
            _routing(lifetime=bad)


def _payload() -> dict[str, Any]:
    value = json_loads(_routing().envelope.payload, max_bytes=1 << 16)
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("change", [
    {"v": 2}, {"extra": 1}, {"content": "x" * 43}, {"content": "A" * 42},
    {"content": b64url_encode(bytes(31)) + "AA"}, {"from": ""}, {"from": 5},
    {"to": []}, {"to": ["a"] * 33}, {"to": ["a", "a"]}, {"to": [""]}, {"to": ["é"]},
    {"to": "r" * 32}, {"route": [f"n{i}" for i in range(MAX_ROUTE + 1)]},
    {"route": [ORIGIN]}, {"route": [DEST]}, {"route": [HOP1, HOP1]},
    {"origin": ""}, {"destination": "x" * 65},
    {"created": "2026-11-23T09:00:00"}, {"expires": "2026-11-23T09:00:00Z"},
    {"expires": "2026-12-24T09:00:01Z"}, {"size": 0}, {"size": True}, {"size": "1"},
])
def test_malformed_payload(change: dict[str, Any]) -> None:
    env = dsse.sign(ENVELOPE_TYPE, json_dumps({**_payload(), **change}), SENDER)
    with pytest.raises(DecodeError):
        parse_routing(env)


def test_missing_fields() -> None:
    for name in _payload():
        payload = _payload()
        del payload[name]
        with pytest.raises(DecodeError):
            parse_routing(dsse.sign(ENVELOPE_TYPE, json_dumps(payload), SENDER))


def test_not_a_routing_envelope() -> None:
    with pytest.raises(DecodeError):
        parse_routing(dsse.sign("application/vnd.backchannel.other", b"{}", SENDER))


def test_tampered_payload_and_signature() -> None:
    routing = _routing()
    env = routing.envelope
    # Every byte of the payload: either no longer parses, or no longer verifies.
    for i in range(len(env.payload)):
        bad = bytearray(env.payload)
        bad[i] ^= 0x01
        with pytest.raises((DecodeError, VerificationError)):
            verify_routing(parse_routing(dsse.Envelope(ENVELOPE_TYPE, bytes(bad),
                                                       env.signatures)), SENDER.public)
    for i in range(64):
        sig = bytearray(env.signatures[0].sig)
        sig[i] ^= 0x80
        bad_env = dsse.Envelope(ENVELOPE_TYPE, env.payload,
                                (dsse.Signature(SENDER.id, bytes(sig)),))
        with pytest.raises(VerificationError):
            verify_routing(parse_routing(bad_env), SENDER.public)


# -- ids ------------------------------------------------------------------------------

def reencodings(env: dsse.Envelope) -> list[bytes]:
    """The same signed envelope written differently on the wire."""
    wire = env.to_dict()
    urlsafe = json.loads(json.dumps(wire))
    for s in urlsafe["signatures"]:
        s["sig"] = s["sig"].replace("+", "-").replace("/", "_")
    reordered = {k: wire[k] for k in reversed(list(wire))}
    return [
        json.dumps(urlsafe).encode(),
        json.dumps(reordered, indent=2).encode(),
        json.dumps({**wire, "signatures": list(reversed(wire["signatures"]))}).encode(),
    ]


def find_sig_with_std_chars(make: Callable[[int], dsse.Envelope]) -> dsse.Envelope:
    # So that the URL-safe re-encoding really changes the signature's spelling.
    for n in range(100):
        env = make(n)
        if any(c in base64.b64encode(env.signatures[0].sig).decode() for c in "+/"):
            return env
    raise AssertionError("no signature with + or / in 100 tries")


def test_envelope_id_is_digest_of_signed_payload() -> None:
    env = find_sig_with_std_chars(
        lambda n: _routing(lifetime=timedelta(hours=n + 1)).envelope)
    eid = envelope_id(env)
    assert eid == b64url_encode(hashlib.sha256(dsse.pae(ENVELOPE_TYPE, env.payload)).digest())
    cosigned = dsse.cosign(env, OTHER)
    assert envelope_id(cosigned) == eid
    assert parse_routing(cosigned).id == eid
    variants = reencodings(cosigned)
    assert len(set(variants)) == len(variants)
    for raw in variants:
        parsed = dsse.Envelope.from_json(raw)
        assert parsed.signatures != () and parse_routing(parsed).id == eid
        verify_routing(parse_routing(parsed), SENDER.public)
    # Unsigned or re-signed: still the same id (the statement, not its signatures).
    assert envelope_id(dsse.Envelope(ENVELOPE_TYPE, env.payload)) == eid
    # Any change to the payload changes the id.
    assert _routing(to=TO[:1]).id != eid
    assert envelope_id(dsse.Envelope(ENVELOPE_TYPE, env.payload + b" ")) != eid
    assert envelope_id(dsse.Envelope("application/x", env.payload)) != eid
