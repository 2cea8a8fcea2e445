"""Hardening after the protocol review: each test pins one fix."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from keys import dsse, seal
from keys.card import CARD_TYPE, card_payload, load_card
from keys.clock import FixedClock
from keys.encoding import json_dumps
from keys.envelope import MAX_ENVELOPE_BYTES, load_routing, make_envelope
from keys.errors import DecodeError, OpenError, TooLarge
from keys.files import atomic_write
from keys.keystore import FLOOR_PARAMS, decrypt_keystore, encrypt_keystore, new_unlocked
from keys.padding import padme_length
from keys.policy import AllOf, AnyOf, AtLeast, Signer

T0 = FixedClock().current


def test_largest_sealable_message_fits_the_open_limit():
    # Everything seal() accepts must pass parse_sealed_unverified's limit.
    padded = max(1024, padme_length(seal.MAX_INNER_BYTES + 1))
    ciphertext_b64 = ((padded + 16) * 4 + 2) // 3
    header_b64 = (seal.MAX_HEADER_BYTES * 4 + 2) // 3
    assert ciphertext_b64 + header_b64 + len('{"v":1,"header":"","ct":""}') <= seal.MAX_SEALED_BYTES


def test_envelope_sender_must_match_signed_sender(alice, bob, carol):
    data = seal.seal(alice, [bob.card], "note", "hi").data
    opened = seal.open_sealed(data, bob, lambda _: alice.card, envelope_from=alice.id)
    assert opened.message.sender == alice.id
    with pytest.raises(OpenError):
        seal.open_sealed(data, bob, lambda _: alice.card, envelope_from=carol.id)


def test_keystore_opens_when_the_clock_went_backwards(alice):
    blob = encrypt_keystore(new_unlocked(alice), "pass phrase", params=FLOOR_PARAMS)
    behind = FixedClock(T0 - timedelta(days=1))
    assert decrypt_keystore(blob, "pass phrase", clock=behind).identity.id == alice.id


@pytest.mark.parametrize("make", [
    lambda a, b: AtLeast(2, Signer(a), Signer(a)),
    lambda a, b: AllOf(Signer(a), AnyOf(Signer(a), Signer(b))),
])
def test_policy_refuses_a_signer_counted_twice(alice, bob, make):
    with pytest.raises(ValueError, match="more than once"):
        make(alice.card.verify_key, bob.card.verify_key)


def _card_with(identity, **changes):
    payload = card_payload(name=identity.card.name, role="delegation",
                           verify_key=identity.signing_key.public,
                           encryption=identity.encryption_key.public, created=T0,
                           expires=T0 + timedelta(days=30), home=None)
    payload.update(changes)
    return dsse.sign(CARD_TYPE, json_dumps(payload), identity.signing_key)


@pytest.mark.parametrize("name", [
    "Kyiv\x1b[31m", "Kyiv\u202eecnaliG", "Kyiv\u200b", " Kyiv", "Kyiv\n", "Ky\x00iv",
])
def test_card_names_with_control_or_format_characters_refused(alice, name):
    with pytest.raises(DecodeError, match="control or formatting"):
        load_card(_card_with(alice, name=name), now=T0)


def test_card_names_in_any_script_accepted(alice):
    card = load_card(_card_with(alice, name="Координаційний штаб — Kyiv"), now=T0)
    assert card.name == "Координаційний штаб — Kyiv"


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "ftp://node.example", "https://", "node.example", "https://a b",
    "https://nöde.example",
])
def test_card_home_url_must_be_http(alice, url):
    with pytest.raises(DecodeError, match="http"):
        load_card(_card_with(alice, home={"node": "n" * 32, "url": url}), now=T0)


def test_card_home_url_accepted(alice):
    card = load_card(_card_with(alice, home={"node": "n" * 32, "url": "https://relay.example:8443"}),
                     now=T0)
    assert card.home is not None and card.home.url == "https://relay.example:8443"


def test_load_routing_uses_its_own_size_limit(alice, bob):
    sealed = seal.seal(alice, [bob.card], "note", "x").data
    routing = make_envelope(alice.signing_key, sealed, to=[bob.id], origin="n1", destination="n1",
                            clock=FixedClock(T0))
    assert load_routing(routing.envelope.to_json()).id == routing.id
    assert load_routing(routing.envelope.to_dict()).id == routing.id
    big = dsse.Envelope(routing.envelope.payload_type, b"x" * (MAX_ENVELOPE_BYTES + 1))
    with pytest.raises(TooLarge):
        load_routing(big.to_json())


@pytest.mark.parametrize("field", ["from", "origin", "destination"])
def test_routing_ids_must_be_ascii(alice, field):
    import json

    sealed = seal.seal(alice, [alice.card], "note", "x").data
    routing = make_envelope(alice.signing_key, sealed, to=[alice.id], origin="n1",
                            destination="n2", clock=FixedClock(T0))
    payload = json.loads(routing.envelope.payload)
    payload[field] = "nöde"
    with pytest.raises(DecodeError, match="malformed id"):
        load_routing(dsse.sign(routing.envelope.payload_type, json_dumps(payload),
                               alice.signing_key).to_json())


def test_atomic_write_survives_a_stale_temp_file(tmp_path):
    home = tmp_path / "profile"
    target = home / "keystore.json"
    atomic_write(target, b"one")
    # A crash between creating the temp file and renaming it leaves litter behind.
    (home / f".keystore.json.{os.getpid()}.tmp").write_bytes(b"stale")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_symlinked_keystore_is_refused(tmp_path):
    from keys.errors import InsecurePermissions
    from keys.files import read_private

    home = tmp_path / "profile"
    atomic_write(home / "real.json", b"{}")
    (home / "keystore.json").symlink_to(home / "real.json")
    with pytest.raises(InsecurePermissions, match="symbolic link"):
        read_private(home / "keystore.json", max_bytes=100)


def test_a_directory_in_place_of_a_private_file_is_named_in_the_error(tmp_path):
    from keys.files import ensure_private_dir, read_private

    home = tmp_path / "profile"
    ensure_private_dir(home)
    (home / "keystore.json").mkdir()
    with pytest.raises(IsADirectoryError) as failure:
        read_private(home / "keystore.json", max_bytes=100)
    assert failure.value.filename == str(home / "keystore.json")


def test_a_fifo_in_place_of_a_private_file_is_refused_without_waiting(tmp_path):
    """Opening a FIFO for reading blocks until someone writes to it: the keystore (or a
    local box) replaced by one must be refused at once, not hang the command."""
    import threading

    from keys.files import ensure_private_dir, read_private

    home = tmp_path / "profile"
    ensure_private_dir(home)
    fifo = home / "keystore.json"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_private(fifo, max_bytes=100))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the stuck open before failing
        with open(fifo, "wb"):
            pass
        reader.join(10)
        pytest.fail("read_private waited for a writer on a FIFO")
    assert isinstance(outcome[0], IsADirectoryError), outcome
    assert outcome[0].filename == str(fifo)
