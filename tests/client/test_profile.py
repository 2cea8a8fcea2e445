"""The profile directory, the encrypted local store, and the contact list's rules."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from client.contacts import CHANGED, UNVERIFIED, VERIFIED, ContactBook, check_alias
from client.errors import (
    BadAlias,
    BadSetting,
    ContactError,
    ContactKeyChanged,
    DuplicateContact,
    NoProfile,
    NotRegistered,
    ProfileExists,
    StoreCorrupt,
    UnknownContact,
)
from client.localstore import LocalStore
from client.profile import (
    NodePin,
    Profile,
    default_home,
    kdf_params_from_env,
)
from keys.clock import FixedClock
from keys.errors import InsecurePermissions, WrongPassphrase
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS, KdfParams

T0 = FixedClock().current


def test_home_and_kdf_settings(tmp_path: Path) -> None:
    assert default_home({"BACKCHANNEL_HOME": str(tmp_path)}) == tmp_path
    assert default_home({}).name == ".backchannel"
    assert kdf_params_from_env({}) == KdfParams()
    assert kdf_params_from_env({"BACKCHANNEL_KDF": "floor"}) == FLOOR_PARAMS
    assert kdf_params_from_env({"BACKCHANNEL_KDF": "Moderate"}) == KdfParams()
    with pytest.raises(BadSetting, match="BACKCHANNEL_KDF='fast' is not understood"):
        kdf_params_from_env({"BACKCHANNEL_KDF": "fast"})


def test_create_open_and_refuse_to_overwrite(tmp_path: Path, alice: Identity,
                                             bob: Identity) -> None:
    home = tmp_path / "profile"
    profile = Profile(home)
    with pytest.raises(NoProfile, match="backchannel init --name NAME"):
        profile.open("pw")
    opened = profile.create(alice, "correct horse", params=FLOOR_PARAMS)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(profile.keystore_path.stat().st_mode) == 0o600
    with pytest.raises(ProfileExists):
        profile.create(bob, "x", params=FLOOR_PARAMS)
    with pytest.raises(WrongPassphrase):
        profile.open("wrong horse")
    again = profile.open("correct horse", clock=FixedClock(T0))
    assert again.identity.id == alice.id
    assert again.unlocked.local_key == opened.unlocked.local_key
    assert profile.stored_kdf_params() == FLOOR_PARAMS


def test_insecure_directory_is_refused(tmp_path: Path, alice: Identity) -> None:
    home = tmp_path / "open"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    with pytest.raises(InsecurePermissions, match="chmod 700"):
        Profile(home).create(alice, "pw", params=FLOOR_PARAMS)


def test_local_store_is_encrypted_bound_to_its_name_and_profile(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "p", b"k" * 32)
    assert store.read("contacts") is None
    store.write("contacts", {"alias": "Шевченко-secret"})
    store.write("messages/abc_-1", [1, 2])
    raw = (tmp_path / "p" / "contacts.box").read_bytes()
    assert b"secret" not in raw and "Шевченко".encode() not in raw
    assert stat.S_IMODE((tmp_path / "p" / "contacts.box").stat().st_mode) == 0o600
    assert store.read("contacts") == {"alias": "Шевченко-secret"}
    assert list(store.names("messages")) == ["messages/abc_-1"]
    # A box copied over another is refused, not misread.
    (tmp_path / "p" / "node.box").write_bytes(raw)
    os.chmod(tmp_path / "p" / "node.box", 0o600)
    with pytest.raises(StoreCorrupt, match="damaged or belongs to another profile"):
        store.read("node")
    # Another profile's key cannot read it.
    with pytest.raises(StoreCorrupt):
        LocalStore(tmp_path / "p", b"j" * 32).read("contacts")
    # Damage is detected.
    damaged = bytearray(raw)
    damaged[-1] ^= 1
    (tmp_path / "p" / "contacts.box").write_bytes(bytes(damaged))
    with pytest.raises(StoreCorrupt):
        store.read("contacts")
    for bad in ("../x", "messages/../../x", "Contacts", "messages/a/b", ""):
        with pytest.raises(ValueError):
            store.path(bad)


def test_contacts_and_node_pin_survive_reopening(tmp_path: Path, alice: Identity,
                                                 bob: Identity,
                                                 make_identity: Callable[..., Identity]
                                                 ) -> None:
    profile = Profile(tmp_path / "p")
    opened = profile.create(alice, "pw", params=FLOOR_PARAMS)
    with opened.editing_contacts() as book:
        book.add("RU", bob.card, me=alice.id, now=T0)
        book.verify("RU")
    assert opened.node_pin() is None
    with pytest.raises(NotRegistered, match="backchannel register INVITATION"):
        opened.require_node()
    node = make_identity("node", "node")
    pin = NodePin("http://127.0.0.1:1", node.card, alice.id, "delegation", "Kyiv", T0,
                  {"max_sealed_bytes": 10})
    opened.save_node_pin(pin)
    reopened = profile.open("pw", clock=FixedClock(T0))
    contact = reopened.contacts().get("RU")
    assert contact.card.id == bob.id and contact.state == VERIFIED
    assert reopened.require_node() == pin


def test_editing_contacts_writes_nothing_on_error(tmp_path: Path, alice: Identity,
                                                  bob: Identity) -> None:
    opened = Profile(tmp_path / "p").create(alice, "pw", params=FLOOR_PARAMS)
    with pytest.raises(BadAlias), opened.editing_contacts() as book:
        book.add("RU", bob.card, me=alice.id, now=T0)
        book.add("bad alias!", bob.card, me=alice.id, now=T0)
    assert len(opened.contacts()) == 0


def test_contact_rules(alice: Identity, bob: Identity, carol: Identity) -> None:
    book = ContactBook()
    added = book.add("RU", bob.card, me=alice.id, now=T0)
    assert added.outcome == "added" and added.contact.state == UNVERIFIED
    assert book.for_sending("RU", now=T0).card.id == bob.id  # unverified: allowed
    assert book.verify("RU").state == VERIFIED
    assert book.add("RU", bob.card, me=alice.id, now=T0).outcome == "unchanged"
    # Same key, newer card (reissued): replaces, stays verified.
    newer = bob.reissue(clock=FixedClock(T0 + timedelta(days=1))).card
    updated = book.add("RU", newer, me=alice.id, now=T0)
    assert updated.outcome == "updated" and updated.contact.state == VERIFIED
    # A different key under the same alias: refused for sending until re-verified.
    changed = book.add("RU", carol.card, me=alice.id, now=T0)
    assert changed.outcome == "key-changed" and changed.contact.state == CHANGED
    with pytest.raises(ContactKeyChanged, match="backchannel contacts verify RU"):
        book.for_sending("RU", now=T0)
    assert book.verify("RU").state == VERIFIED
    assert book.for_sending("RU", now=T0).card.id == carol.id
    with pytest.raises(DuplicateContact, match="already in your contacts as 'RU'"):
        book.add("RU2", carol.card, me=alice.id, now=T0)
    with pytest.raises(DuplicateContact, match="your own identity card"):
        book.add("me", alice.card, me=alice.id, now=T0)
    with pytest.raises(UnknownContact, match="backchannel contacts add FILE --alias UA"):
        book.for_sending("UA", now=T0)
    with pytest.raises(ContactError, match="expired"):
        book.for_sending("RU", now=T0 + timedelta(days=3000))
    round_trip = ContactBook.from_dict(book.to_dict(), now=T0)
    assert [(c.alias, c.card.id, c.state) for c in round_trip] == [("RU", carol.id, VERIFIED)]


def test_node_cards_are_contacts_but_not_recipients(alice: Identity,
                                                    make_identity: Callable[..., Identity]
                                                    ) -> None:
    book = ContactBook()
    book.add("TR", make_identity("Istanbul node", "node").card, me=alice.id, now=T0)
    with pytest.raises(ContactError, match="is a node"):
        book.for_sending("TR", now=T0)


@pytest.mark.parametrize("alias", ["RU", "icrc", "Kyiv-HQ", "a.b_c", "x" * 32, "9"])
def test_good_aliases(alias: str) -> None:
    assert check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["", "-x", "x" * 33, "a b", "Київ", "a/b", "..", "RU\n"])
def test_bad_aliases(alias: str) -> None:
    with pytest.raises(BadAlias):
        check_alias(alias)
