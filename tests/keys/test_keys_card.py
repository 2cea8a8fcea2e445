"""Identity cards: JSON and armored round trips, strict checks, fingerprints and
safety numbers, and the refusal of weak (low-order) X25519 keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from keys import dsse
from keys.armor import armor, dearmor
from keys.card import (
    CARD_TYPE,
    CLOCK_SKEW,
    MAX_CARD_BYTES,
    HomeNode,
    card_payload,
    fingerprint,
    load_card,
    safety_number,
)
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import (
    DecodeError,
    Expired,
    InvalidKey,
    UnsupportedVersion,
    VerificationError,
)
from keys.identity import Identity, issue_card
from keys.kem import SUITE_HYBRID, SUITE_X25519, EncryptionPrivateKey

T0 = FixedClock().current
SIGNER = SigningKey(bytes([42]) * 32)


def _payload(suite: str = SUITE_HYBRID, signer: SigningKey = SIGNER) -> dict[str, Any]:
    enc = EncryptionPrivateKey.generate(suite, lambda n: bytes([7]) * n)
    return card_payload(name="Test Delegation", role="delegation", verify_key=signer.public,
                        encryption=enc.public, created=T0, expires=T0 + timedelta(days=365),
                        home=None)


def _signed(payload: dict[str, Any], signer: SigningKey = SIGNER,
            payload_type: str = CARD_TYPE) -> bytes:
    return dsse.sign(payload_type, json_dumps(payload), signer).to_json()


# -- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
def test_json_round_trip(make_identity: Callable[..., Identity], suite: str) -> None:
    ident = make_identity("Round Trip", suite=suite)
    card = load_card(ident.card.to_json(), now=T0)
    assert card == ident.card
    assert card.id == ident.id == card.verify_key.id
    assert card.name == "Round Trip" and card.role == "delegation"
    assert card.encryption.suite == suite
    assert (card.encryption.mlkem768 is not None) == (suite == SUITE_HYBRID)
    assert card.created == T0 and card.expires == T0 + timedelta(days=730)
    # Also from str and from a parsed envelope.
    assert load_card(ident.card.to_json().decode(), now=T0) == card
    assert load_card(dsse.Envelope.from_json(ident.card.to_json()), now=T0) == card


def test_home_node_round_trip() -> None:
    home = HomeNode("n" * 32, "https://geneva.example/")
    ident = Identity.create("With Home", "delegation", home=home, clock=FixedClock(T0))
    card = load_card(ident.card.to_json(), now=T0)
    assert card.home == home
    moved = ident.reissue(home=HomeNode("m" * 32, "https://oslo.example/"),
                          clock=FixedClock(T0 + timedelta(days=1)))
    again = load_card(moved.card.to_json(), now=T0 + timedelta(days=1))
    assert again.home is not None and again.home.url == "https://oslo.example/"
    assert again.id == card.id and again.encryption == card.encryption


@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
def test_armored_round_trip(make_identity: Callable[..., Identity], suite: str) -> None:
    ident = make_identity("Armored", suite=suite)
    text = ident.card.armored()
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN BACKCHANNEL CARD-----"
    assert lines[-1] == "-----END BACKCHANNEL CARD-----"
    assert all(len(line) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", line) for line in lines[1:-1])
    assert load_card(text, now=T0) == ident.card
    assert load_card(text.encode(), now=T0) == ident.card


def _variants(text: str) -> dict[str, str]:
    lines = text.splitlines()
    return {
        "crlf": "\r\n".join(lines) + "\r\n",
        "indented": "\n".join("    " + line for line in lines),
        "tab-indented": "\n".join("\t" + line + "  " for line in lines),
        "quoted": "\n".join("> " + line for line in lines),
        "quoted-twice-crlf": "\r\n".join("> > " + line for line in lines),
        "quoted-no-space": "\n".join(">" + line for line in lines),
        "surrounded": ("Dear colleagues,\n\nhere is our card:\n\n" + text
                       + "\nRegards,\nthe delegation\n-- \nsignature\n"),
        "blank-lines": "\n".join(x for line in lines for x in (line, "")),
        "mail-reply": ("On Monday, Kyiv wrote:\n" + "\n".join("> " + line for line in lines)
                       + "\n\nThanks, received.\n"),
    }


@pytest.mark.parametrize("variant", list(_variants("x\ny")))
def test_armor_survives_transport(alice: Identity, variant: str) -> None:
    mangled = _variants(alice.card.armored())[variant]
    assert load_card(mangled, now=T0) == alice.card


def test_armor_errors(alice: Identity) -> None:
    text = alice.card.armored()
    lines = text.splitlines()
    with pytest.raises(DecodeError, match="cut off"):
        load_card("\n".join(lines[:-1]), now=T0)
    with pytest.raises(DecodeError, match="cut off"):
        load_card("\n".join(lines[:3]), now=T0)
    with pytest.raises(DecodeError):
        dearmor(text, "KEY", max_bytes=MAX_CARD_BYTES)
    with pytest.raises(DecodeError):
        load_card(text.replace("CARD", "KEY"), now=T0)
    # A damaged body character: either not base64url any more, or not a valid card.
    body = lines[2]
    damaged = text.replace(body, body[:10] + ("A" if body[10] != "A" else "B") + body[11:])
    with pytest.raises((DecodeError, VerificationError)):
        load_card(damaged, now=T0)
    with pytest.raises(DecodeError):
        load_card(text.replace(body, body[:10] + "*" + body[11:]), now=T0)
    with pytest.raises(DecodeError):
        dearmor("x" * (MAX_CARD_BYTES * 2 + 5000), "CARD", max_bytes=MAX_CARD_BYTES)
    with pytest.raises(ValueError):
        armor("card", b"x")


def test_armor_first_block_wins() -> None:
    two = armor("NOTE", b"first") + "between\n" + armor("NOTE", b"second")
    assert dearmor(two, "NOTE", max_bytes=100) == b"first"


# -- fingerprints and safety numbers --------------------------------------------------

def test_fingerprint_format_and_stability(alice: Identity, bob: Identity) -> None:
    fp = alice.card.fingerprint
    assert re.fullmatch(r"\d{5}( \d{5}){5}", fp)
    assert fp == fingerprint(alice.signing_key.public)
    assert fp != bob.card.fingerprint
    # Pinned: ids, fingerprints and safety numbers of fixed keys never change, or
    # every number people compared over the phone becomes wrong.
    other = SigningKey(bytes([43]) * 32).public
    assert SIGNER.id == "sw2h35kp63ele2wqfh6qwbzavbke7p6m"
    assert fingerprint(SIGNER.public) == "98588 27762 32190 73165 72808 66331"
    assert safety_number(SIGNER.public, other) == (
        "84117 82236 24564 22612 54764 52221 98588 27762 32190 73165 72808 66331")


def test_safety_number_is_symmetric(alice: Identity, bob: Identity, carol: Identity) -> None:
    a, b, c = (x.signing_key.public for x in (alice, bob, carol))
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)
    assert number != safety_number(a, c) != safety_number(b, c)
    assert fingerprint(a) in number and fingerprint(b) in number


# -- validity period ------------------------------------------------------------------

def test_expiry(alice: Identity) -> None:
    data = alice.card.to_json()
    expires = alice.card.expires
    load_card(data, now=expires - timedelta(seconds=1))
    with pytest.raises(Expired):
        load_card(data, now=expires)
    assert load_card(data, now=expires + timedelta(days=1), allow_expired=True) == alice.card


def test_created_in_future(alice: Identity) -> None:
    data = alice.card.to_json()
    load_card(data, now=T0 - CLOCK_SKEW)
    with pytest.raises(Expired, match="future"):
        load_card(data, now=T0 - CLOCK_SKEW - timedelta(seconds=1))


# -- strict checks --------------------------------------------------------------------

def _mutated(**changes: Any) -> dict[str, Any]:
    payload = _payload()
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    return payload


def test_valid_handmade_card_loads() -> None:
    # The baseline for the mutations below: the hand-built card itself is fine.
    card = load_card(_signed(_payload()), now=T0)
    assert card.id == SIGNER.id


@pytest.mark.parametrize(("changes", "error"), [
    ({"v": 2}, UnsupportedVersion),
    ({"v": None}, DecodeError),
    ({"extra": 1}, DecodeError),
    ({"id": SigningKey(bytes(32)).id}, DecodeError),
    ({"name": ""}, DecodeError),
    ({"name": "x" * 201}, DecodeError),
    ({"role": "observer"}, DecodeError),
    ({"role": ["delegation"]}, DecodeError),
    ({"created": "2026-11-23T09:00:00+00:00"}, DecodeError),
    ({"expires": "2026-11-23T09:00:00Z"}, DecodeError),  # not after created
    ({"signing": {"alg": "Ed448", "key": b64url_encode(SIGNER.public.raw)}}, UnsupportedVersion),
    ({"signing": {"alg": "Ed25519", "key": b64url_encode(SIGNER.public.raw[:31])}}, DecodeError),
    ({"home": {"node": "n"}}, DecodeError),
    ({"home": {"node": "", "url": "https://x"}}, DecodeError),
])
def test_malformed_card_fields(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        load_card(_signed(_mutated(**changes)), now=T0)


def test_encryption_field_checks() -> None:
    hybrid = _payload(SUITE_HYBRID)["encryption"]
    x_only = _payload(SUITE_X25519)["encryption"]
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({**hybrid, "suite": "RSA"}, UnsupportedVersion),
        ({"suite": SUITE_HYBRID, "x25519": hybrid["x25519"]}, InvalidKey),  # no ML-KEM key
        ({**x_only, "mlkem768": hybrid["mlkem768"]}, InvalidKey),  # X25519 with ML-KEM key
        ({**hybrid, "mlkem768": b64url_encode(b"\xff" * 1184)}, InvalidKey),  # not mod q
        ({**hybrid, "mlkem768": hybrid["mlkem768"][:-4]}, DecodeError),
        ({**hybrid, "x25519": b64url_encode(bytes(31))}, DecodeError),
        ({**hybrid, "extra": "x"}, DecodeError),
    ]
    for enc, error in cases:
        payload = _payload()
        payload["encryption"] = enc
        with pytest.raises(error):
            load_card(_signed(payload), now=T0)


def test_self_signature_required() -> None:
    payload = _payload()
    other = SigningKey(bytes([43]) * 32)
    # Signed by someone else under the card's own keyid...
    forged = dsse.Envelope(CARD_TYPE, json_dumps(payload),
                           (dsse.Signature(SIGNER.id, other.sign(dsse.pae(CARD_TYPE,
                                                                          json_dumps(payload)))),))
    with pytest.raises(VerificationError):
        load_card(forged.to_json(), now=T0)
    # ...or under the other key's id (the card's key never signed).
    with pytest.raises(VerificationError):
        load_card(_signed(payload, other), now=T0)
    # Unsigned.
    with pytest.raises(VerificationError):
        load_card(dsse.Envelope(CARD_TYPE, json_dumps(payload)).to_json(), now=T0)


def test_altered_card_rejected(alice: Identity) -> None:
    env = alice.card.envelope
    payload = json_loads(env.payload, max_bytes=MAX_CARD_BYTES)
    payload["name"] = "Mallory"
    altered = dsse.Envelope(CARD_TYPE, json_dumps(payload), env.signatures)
    with pytest.raises(VerificationError):
        load_card(altered.to_json(), now=T0)


def test_wrong_payload_type_is_not_a_card() -> None:
    with pytest.raises(DecodeError):
        load_card(_signed(_payload(), payload_type="application/vnd.backchannel.other"),
                  now=T0)


def test_card_size_limit() -> None:
    payload = _payload()
    payload["pad"] = "x" * MAX_CARD_BYTES
    with pytest.raises(DecodeError):
        load_card(_signed(payload), now=T0)


# -- X25519 low-order points (RFC 7748 section 6.1) ------------------------------------

P = 2**255 - 19
_ORDER_8 = [
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]
_LOW_ORDER = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    *_ORDER_8,
    (P - 1).to_bytes(32, "little"),
    P.to_bytes(32, "little"),
    (P + 1).to_bytes(32, "little"),
]
#: Implementations ignore the top bit of a u-coordinate, so each point also has a
#: "high-bit" spelling that must be refused just the same.
LOW_ORDER_POINTS = _LOW_ORDER + [k[:31] + bytes([k[31] | 0x80]) for k in _LOW_ORDER]


def test_low_order_list_is_what_it_claims() -> None:
    assert len(set(LOW_ORDER_POINTS)) == 14
    # Independently of keys.kem: every point gives the all-zero shared secret with a
    # random scalar (OpenSSL refuses it), i.e. the list really is low-order points.
    for point in LOW_ORDER_POINTS:
        with pytest.raises(ValueError):  # OpenSSL: all-zero shared secret
            x25519.X25519PrivateKey.generate().exchange(
                x25519.X25519PublicKey.from_public_bytes(point))


@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
def test_low_order_x25519_key_rejected_on_import(suite: str, point: bytes) -> None:
    payload = _payload(suite)
    payload["encryption"]["x25519"] = b64url_encode(point)
    # The card is validly self-signed: only the key check can refuse it.
    with pytest.raises(InvalidKey):
        load_card(_signed(payload), now=T0)


# -- issuing --------------------------------------------------------------------------

def test_issue_card_refuses_what_load_would_refuse() -> None:
    signing = SigningKey(bytes([1]) * 32)
    enc = EncryptionPrivateKey.generate(SUITE_X25519)
    for bad in ({"name": "", "role": "delegation"}, {"name": "x", "role": "king"}):
        with pytest.raises(DecodeError):
            issue_card(signing, enc, home=None, clock=FixedClock(T0),
                       validity=timedelta(days=1), **bad)


def test_identity_rejects_mismatched_parts(alice: Identity, bob: Identity) -> None:
    with pytest.raises(ValueError):
        Identity(bob.signing_key, alice.encryption_key, alice.card)
    with pytest.raises(ValueError):
        Identity(alice.signing_key, bob.encryption_key, alice.card)
    assert Identity(alice.signing_key, alice.encryption_key, alice.card).id == alice.id
