"""Sealed messages: round trips to 1, 2 and 10 recipients with both suites, the
tamper battery, surreptitious forwarding, misdirection and sender checks."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import nacl.bindings
import pytest

from keys import dsse, seal
from keys.card import Card
from keys.clock import FixedClock
from keys.encoding import b64url_decode, b64url_encode, json_dumps, json_loads
from keys.errors import ClassicalRecipient, OpenError
from keys.identity import Identity
from keys.kem import SUITE_HYBRID, SUITE_X25519
from keys.padding import MIN_PADDED, pad

# Most tests cover both suites; the refusal of classical-only recipients by
# default is tested on its own below.
seal_any = functools.partial(seal.seal, allow_classical=True)

T0 = FixedClock().current
BODY = {"names": [{"family_name": "Шевченко", "given_names": "Тарас"},
                  {"family_name": "Kovalenko", "given_names": "Olena"}],
        "note": "first list"}
SUITES = [SUITE_HYBRID, SUITE_X25519]


class UnknownContact(Exception):
    pass


def resolver(*cards: Card) -> Callable[[str], Card]:
    known = {c.id: c for c in cards}

    def resolve(sender_id: str) -> Card:
        try:
            return known[sender_id]
        except KeyError:
            raise UnknownContact(sender_id) from None
    return resolve


def _open(data: bytes, me: Identity, sender: Identity, **kw: Any) -> seal.Opened:
    return seal.open_sealed(data, me, resolver(sender.card), **kw)


def _rejected(data: bytes, me: Identity, sender: Identity, **kw: Any) -> None:
    """Opening must fail with the one uniform error, whatever the cause."""
    with pytest.raises(OpenError) as info:
        _open(data, me, sender, **kw)
    assert str(info.value) == str(OpenError())


def hand_seal(inner: dsse.Envelope, recipients: Sequence[Card], *,
              header_ids: Sequence[str] | None = None) -> bytes:
    """Seal an *existing* signed inner envelope the way :func:`keys.seal.seal` does,
    without signing anything: what a recipient who forwards a message can build."""
    key = os.urandom(seal.KEY_BYTES)
    nonce = os.urandom(seal.NONCE_BYTES)
    ids = list(header_ids) if header_ids is not None else [c.id for c in recipients]
    wraps = [{"id": rid, "suite": card.encryption.suite,
              "wrap": b64url_encode(card.encryption.wrap(key, seal._wrap_info(nonce, rid)))}
             for rid, card in zip(ids, recipients, strict=True)]
    header = json_dumps({"v": 1, "aead": seal.AEAD_NAME, "nonce": b64url_encode(nonce),
                         "recipients": wraps})
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        pad(inner.to_json()), header, nonce, key)
    return json_dumps({"v": 1, "header": b64url_encode(header), "ct": b64url_encode(ct)})


def split(data: bytes) -> tuple[bytes, bytes]:
    outer = json.loads(data)
    return (b64url_decode(outer["header"], max_bytes=1 << 20),
            b64url_decode(outer["ct"], max_bytes=1 << 24))


def join(header: bytes, ct: bytes) -> bytes:
    return json_dumps({"v": 1, "header": b64url_encode(header), "ct": b64url_encode(ct)})


def with_header(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    header, ct = split(data)
    parsed = json.loads(header)
    change(parsed)
    return join(json_dumps(parsed), ct)


@pytest.fixture(scope="module", params=SUITES)
def cast(request: pytest.FixtureRequest, make_identity: Callable[..., Identity]
         ) -> dict[str, Identity]:
    """Sender, two recipients and an outsider, recipients using the given suite."""
    suite = request.param
    return {
        "alice": make_identity("Alice"),
        "bob": make_identity("Bob", suite=suite),
        "carol": make_identity("Carol", suite=suite),
        "eve": make_identity("Eve", suite=suite),
    }


# -- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("count", [1, 2, 10])
def test_round_trip(make_identity: Callable[..., Identity], suite: str, count: int) -> None:
    alice = make_identity("Alice")
    recipients = [make_identity(f"Recipient {i}", suite=suite) for i in range(count)]
    outsider = make_identity("Outsider", suite=suite)
    sealed = seal_any(alice, [r.card for r in recipients], "namelist", BODY,
                       clock=FixedClock(T0))
    assert sealed.content_id == b64url_encode(hashlib.sha256(sealed.data).digest())
    header = seal.parse_sealed_unverified(sealed.data)
    assert header.recipient_ids == tuple(r.id for r in recipients)
    assert all(w.suite == suite for w in header.recipients)
    for r in recipients:
        opened = _open(sealed.data, r, alice)
        assert opened.sender == alice.card
        assert opened.message == sealed.message
        assert opened.message.body == BODY
        assert opened.message.sender == alice.id
        assert opened.message.to == tuple(x.id for x in recipients)
        assert opened.message.kind == "namelist"
        assert opened.message.created == T0
        assert opened.inner_digest == sealed.inner_digest == opened.inner.digest()
    _rejected(sealed.data, outsider, alice)
    # The sender did not seal to herself, so she cannot open it either.
    _rejected(sealed.data, alice, alice)


def test_mixed_suites_in_one_message(alice: Identity, bob: Identity, xavier: Identity) -> None:
    sealed = seal_any(alice, [bob.card, xavier.card], "note", "hello")
    assert _open(sealed.data, bob, alice).message.body == "hello"
    assert _open(sealed.data, xavier, alice).message.body == "hello"


def test_sealing_to_self(alice: Identity, bob: Identity) -> None:
    sealed = seal_any(alice, [alice.card, bob.card], "note", None)
    assert _open(sealed.data, alice, alice).message.body is None


def test_message_ids_are_fresh(alice: Identity, bob: Identity) -> None:
    first = seal_any(alice, [bob.card], "note", 1)
    second = seal_any(alice, [bob.card], "note", 1)
    assert first.message.id != second.message.id
    assert first.data != second.data
    assert len(b64url_decode(first.message.id, max_bytes=16, exact=16)) == 16


def test_deterministic_random_is_used(alice: Identity, bob: Identity,
                                      shake_random: Callable[[bytes], Any]) -> None:
    a = seal_any(alice, [bob.card], "note", 1, clock=FixedClock(T0), random=shake_random(b"s"))
    b = seal_any(alice, [bob.card], "note", 1, clock=FixedClock(T0), random=shake_random(b"s"))
    assert a.message == b.message  # id from the injected random
    assert a.inner_digest == b.inner_digest
    assert split(a.data)[0] != split(b.data)[0]  # HPKE ephemerals are always fresh


def test_padding_hides_small_sizes(alice: Identity, bob: Identity) -> None:
    sizes = {len(split(seal_any(alice, [bob.card], "note", body).data)[1])
             for body in ("a", "a" * 100, {"names": ["x"] * 20})}
    assert sizes == {MIN_PADDED + 16}
    big = seal_any(alice, [bob.card], "note", "x" * 5000)
    assert len(split(big.data)[1]) - 16 >= 5000


@pytest.mark.parametrize(("recipients", "kind"), [
    ("none", "note"), ("dup", "note"), ("ok", "Note"), ("ok", "a" * 33), ("ok", "x y"),
])
def test_seal_programmer_errors(alice: Identity, bob: Identity, recipients: str,
                                kind: str) -> None:
    cards = {"none": [], "dup": [bob.card, bob.card], "ok": [bob.card]}[recipients]
    with pytest.raises(ValueError):
        seal_any(alice, cards, kind, 1)


def test_seal_too_many_recipients(alice: Identity, bob: Identity) -> None:
    with pytest.raises(ValueError):
        seal_any(alice, [bob.card] * (seal.MAX_RECIPIENTS + 1), "note", 1)


# -- tamper battery -------------------------------------------------------------------

def _positions(length: int, count: int) -> list[int]:
    step = max(1, length // count)
    return sorted(set(range(0, length, step)) | {length - 1})


def test_raw_byte_flips(cast: dict[str, Identity]) -> None:
    alice, bob, carol = cast["alice"], cast["bob"], cast["carol"]
    data = seal_any(alice, [bob.card, carol.card], "namelist", BODY).data
    _open(data, bob, alice)  # baseline
    positions = _positions(len(data), 400)
    assert len(positions) >= 300
    for i in positions:
        for mask in (0x01, 0x20):
            bad = bytearray(data)
            bad[i] ^= mask
            _rejected(bytes(bad), bob, alice)


def test_every_header_byte_flip(cast: dict[str, Identity]) -> None:
    alice, bob, carol = cast["alice"], cast["bob"], cast["carol"]
    data = seal_any(alice, [bob.card, carol.card], "namelist", BODY).data
    header, ct = split(data)
    assert _open(join(header, ct), bob, alice).message.body == BODY  # split/join is exact
    for i in range(len(header)):
        bad = bytearray(header)
        bad[i] ^= 0x01
        _rejected(join(bytes(bad), ct), bob, alice)


def test_ciphertext_byte_flips(cast: dict[str, Identity]) -> None:
    alice, bob = cast["alice"], cast["bob"]
    data = seal_any(alice, [bob.card], "namelist", BODY).data
    header, ct = split(data)
    positions = set(_positions(len(ct), 200)) | set(range(len(ct) - 16, len(ct)))
    for i in sorted(positions):
        for mask in (0x01, 0x80):
            bad = bytearray(ct)
            bad[i] ^= mask
            _rejected(join(header, bytes(bad)), bob, alice)


def test_truncation_and_extension(cast: dict[str, Identity]) -> None:
    alice, bob = cast["alice"], cast["bob"]
    data = seal_any(alice, [bob.card], "namelist", BODY).data
    header, ct = split(data)
    for cut in (*_positions(len(data), 50), len(data) - 1):
        _rejected(data[:cut], bob, alice)
    for cut in (0, 1, 15, 16, len(ct) - 1):
        _rejected(join(header, ct[:cut]), bob, alice)
    _rejected(join(header, ct + b"\x00"), bob, alice)
    _rejected(join(header[:-1], ct), bob, alice)


def _wrap_manipulations() -> dict[str, Callable[[dict[str, Any]], None]]:
    def remove_other(h: dict[str, Any]) -> None:
        del h["recipients"][1]

    def remove_mine(h: dict[str, Any]) -> None:
        del h["recipients"][0]

    def reorder(h: dict[str, Any]) -> None:
        h["recipients"].reverse()

    def swap_wraps(h: dict[str, Any]) -> None:
        r = h["recipients"]
        r[0]["wrap"], r[1]["wrap"] = r[1]["wrap"], r[0]["wrap"]

    def swap_ids(h: dict[str, Any]) -> None:
        r = h["recipients"]
        r[0]["id"], r[1]["id"] = r[1]["id"], r[0]["id"]

    def duplicate_mine(h: dict[str, Any]) -> None:
        h["recipients"].append(dict(h["recipients"][0]))

    def duplicate_other(h: dict[str, Any]) -> None:
        h["recipients"].append(dict(h["recipients"][1]))

    def mine_replaces_other(h: dict[str, Any]) -> None:
        h["recipients"][1] = dict(h["recipients"][0])

    def new_nonce(h: dict[str, Any]) -> None:
        h["nonce"] = b64url_encode(os.urandom(24))

    def bump_version(h: dict[str, Any]) -> None:
        h["v"] = 2

    def other_aead(h: dict[str, Any]) -> None:
        h["aead"] = "AES-256-GCM"

    def extra_field(h: dict[str, Any]) -> None:
        h["x"] = 1

    def suite_label(h: dict[str, Any]) -> None:
        r = h["recipients"][0]
        r["suite"] = SUITE_X25519 if r["suite"] == SUITE_HYBRID else SUITE_HYBRID

    return {f.__name__: f for f in (remove_other, remove_mine, reorder, swap_wraps, swap_ids,
                                   duplicate_mine, duplicate_other, mine_replaces_other,
                                   new_nonce, bump_version, other_aead, extra_field,
                                   suite_label)}


@pytest.mark.parametrize("name", list(_wrap_manipulations()))
def test_recipient_wrap_manipulation(cast: dict[str, Identity], name: str) -> None:
    alice, bob, carol = cast["alice"], cast["bob"], cast["carol"]
    data = seal_any(alice, [bob.card, carol.card], "namelist", BODY).data
    # Re-serialising the header unchanged must still open (so the rejection below is
    # caused by the manipulation, not by re-encoding).
    _open(with_header(data, lambda h: None), bob, alice)
    bad = with_header(data, _wrap_manipulations()[name])
    _rejected(bad, bob, alice)
    _rejected(bad, carol, alice)


def test_header_reserialisation_is_rejected(cast: dict[str, Identity]) -> None:
    # Same JSON meaning, different bytes: the header is authenticated as bytes.
    alice, bob = cast["alice"], cast["bob"]
    data = seal_any(alice, [bob.card], "namelist", BODY).data
    header, ct = split(data)
    spaced = json.dumps(json.loads(header), indent=1).encode()
    _rejected(join(spaced, ct), bob, alice)


def test_outer_structure_changes(cast: dict[str, Identity]) -> None:
    alice, bob = cast["alice"], cast["bob"]
    data = seal_any(alice, [bob.card], "namelist", BODY).data
    outer = json.loads(data)
    for change in ({"v": 2}, {"extra": 1}, {"header": outer["header"] + "A"},
                   {"ct": outer["ct"][:-1]}):
        _rejected(json_dumps({**outer, **change}), bob, alice)
    _rejected(b"", bob, alice)
    _rejected(b"{}", bob, alice)


# -- surreptitious forwarding, misdirection -------------------------------------------

def test_hand_seal_baseline(cast: dict[str, Identity]) -> None:
    # The hand-built sealing below is faithful: re-sealing the inner message to the
    # recipients it was signed for opens fine.
    alice, bob = cast["alice"], cast["bob"]
    inner = _open(seal_any(alice, [bob.card], "namelist", BODY).data, bob, alice).inner
    assert _open(hand_seal(inner, [bob.card]), bob, alice).message.body == BODY


def test_surreptitious_forwarding_rejected(cast: dict[str, Identity]) -> None:
    alice, bob, carol = cast["alice"], cast["bob"], cast["carol"]
    opened = _open(seal_any(alice, [bob.card], "namelist", BODY).data, bob, alice)
    # Bob re-seals Alice's exact signed message to Carol: her signature still
    # verifies, but Carol is not in the signed `to`.
    _rejected(hand_seal(opened.inner, [carol.card]), carol, alice)
    # Keeping himself in the header does not help.
    _rejected(hand_seal(opened.inner, [bob.card, carol.card]), carol, alice)
    # Nor does labelling Carol's wrap with Bob's id (her key, his name).
    _rejected(hand_seal(opened.inner, [carol.card], header_ids=[bob.id]), carol, alice)


def test_misdirection_rejected(cast: dict[str, Identity]) -> None:
    alice, bob, carol, eve = cast["alice"], cast["bob"], cast["carol"], cast["eve"]
    opened = _open(seal_any(alice, [bob.card, carol.card], "namelist", BODY).data,
                   bob, alice)
    # Header recipients differ from the signed `to`: a subset...
    _rejected(hand_seal(opened.inner, [bob.card]), bob, alice)
    # ...a superset...
    _rejected(hand_seal(opened.inner, [bob.card, carol.card, eve.card]), bob, alice)
    # ...or a different set of the same size.
    _rejected(hand_seal(opened.inner, [bob.card, eve.card]), bob, alice)
    # The same set in another order is the same recipients.
    assert _open(hand_seal(opened.inner, [carol.card, bob.card]), bob, alice)


def test_envelope_to_must_match_signed_to(cast: dict[str, Identity]) -> None:
    alice, bob, carol, eve = cast["alice"], cast["bob"], cast["carol"], cast["eve"]
    data = seal_any(alice, [bob.card, carol.card], "namelist", BODY).data
    assert _open(data, bob, alice, envelope_to=[bob.id, carol.id])
    assert _open(data, bob, alice, envelope_to=[carol.id, bob.id])
    for wrong in ([bob.id], [bob.id, carol.id, eve.id], [bob.id, eve.id], []):
        _rejected(data, bob, alice, envelope_to=wrong)


# -- the sender -----------------------------------------------------------------------

def test_sender_resolution(cast: dict[str, Identity]) -> None:
    alice, bob, carol = cast["alice"], cast["bob"], cast["carol"]
    data = seal_any(alice, [bob.card], "namelist", BODY).data
    # The resolver's own error propagates unchanged (e.g. "unknown contact").
    with pytest.raises(UnknownContact):
        seal.open_sealed(data, bob, resolver(carol.card))
    # A resolver that returns someone else's card: rejected.
    with pytest.raises(OpenError):
        seal.open_sealed(data, bob, lambda _sid: carol.card)


def test_forged_sender_rejected(cast: dict[str, Identity]) -> None:
    alice, bob, eve = cast["alice"], cast["bob"], cast["eve"]
    payload = json_dumps({"v": 1, "id": b64url_encode(os.urandom(16)), "from": alice.id,
                          "to": [bob.id], "created": "2026-11-23T09:00:00Z",
                          "kind": "namelist", "body": "forged"})
    # Eve signs a message claiming to come from Alice (under Alice's keyid too).
    forged_by_eve = dsse.sign(seal.MESSAGE_TYPE, payload, eve.signing_key)
    relabelled = dsse.Envelope(seal.MESSAGE_TYPE, payload,
                               (dsse.Signature(alice.id, forged_by_eve.signatures[0].sig),))
    for inner in (forged_by_eve, relabelled, dsse.Envelope(seal.MESSAGE_TYPE, payload)):
        _rejected(hand_seal(inner, [bob.card]), bob, alice)
    # The same payload signed by Alice is accepted (the forgery is the only fault).
    genuine = dsse.sign(seal.MESSAGE_TYPE, payload, alice.signing_key)
    assert _open(hand_seal(genuine, [bob.card]), bob, alice).message.body == "forged"


def test_inner_must_be_a_message(cast: dict[str, Identity]) -> None:
    alice, bob = cast["alice"], cast["bob"]
    # A validly signed object of another type, sealed correctly: not a message.
    _rejected(hand_seal(alice.card.envelope, [bob.card]), bob, alice)
    payload = json_loads(_open(seal_any(alice, [bob.card], "x", 1).data, bob, alice)
                         .inner.payload, max_bytes=4096)
    for change in ({"v": 2}, {"kind": "Bad Kind"}, {"to": []}, {"to": [bob.id, bob.id]},
                   {"created": "yesterday"}, {"extra": 1}):
        inner = dsse.sign(seal.MESSAGE_TYPE, json_dumps({**payload, **change}),
                          alice.signing_key)
        _rejected(hand_seal(inner, [bob.card]), bob, alice)


def test_classical_recipient_refused_unless_allowed() -> None:
    alice = Identity.create("Alice", "delegation", clock=FixedClock(T0))
    xavier = Identity.create("Xavier", "delegation", suite=SUITE_X25519, clock=FixedClock(T0))
    with pytest.raises(ClassicalRecipient, match="quantum"):
        seal.seal(alice, [xavier.card], "note", "hi")
    seal.seal(alice, [xavier.card], "note", "hi", allow_classical=True)
