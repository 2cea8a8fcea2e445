"""The contact list: other parties' identity cards under short aliases.

Trust is decided here, as data (no I/O):

* a contact is **unverified** when added: sending works, with a warning, until the
  officer compares the safety number with the other side out of band
  (``backchannel contacts verify ALIAS``);
* **verified** once the officer confirmed the safety number for its current key;
* **changed** when a card with a *different key* is added under an existing alias
  (a new laptop, or an impostor): nothing is sent to it until it is verified again.

A card with the same key (a reissue, e.g. after the contact joined a node) replaces
the saved one and keeps its state. Serialised form (inside the encrypted local
store)::

    {"v": 1, "contacts": [{"alias": "RU", "card": <card DSSE dict>,
                           "verified": "<identity id>" | null, "key_changed": false,
                           "added": "<time>"}, ...]}
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from keys import dsse
from keys.card import Card, load_card, safety_number
from keys.encoding import expect_object, format_time, parse_time
from keys.errors import DecodeError

from .errors import (
    BadAlias,
    ContactError,
    ContactKeyChanged,
    DuplicateContact,
    UnknownContact,
)

ALIAS_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", re.ASCII)
#: A delegation talks to a handful of parties; the bound keeps the file small.
MAX_CONTACTS: Final = 1000

VERIFIED: Final = "verified"
UNVERIFIED: Final = "unverified"
CHANGED: Final = "changed"


@dataclass(frozen=True)
class Contact:
    alias: str
    card: Card
    #: The identity id whose safety number the officer confirmed, if any.
    verified: str | None
    #: Set when a card with another key replaced the one saved under this alias.
    key_changed: bool
    added: datetime

    @property
    def state(self) -> str:
        if self.key_changed:
            return CHANGED
        return VERIFIED if self.verified == self.card.id else UNVERIFIED

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "card": self.card.envelope.to_dict(),
                "verified": self.verified, "key_changed": self.key_changed,
                "added": format_time(self.added)}


@dataclass(frozen=True)
class AddResult:
    contact: Contact
    #: "added", "updated" (same key, newer card), "unchanged" or "key-changed".
    outcome: str


def check_alias(alias: str) -> str:
    if not ALIAS_RE.fullmatch(alias):
        raise BadAlias(f"alias {alias[:40]!r} is not usable: use 1 to 32 letters, digits, "
                       "'.', '_' or '-' (starting with a letter or digit), e.g. RU or ICRC")
    return alias


class ContactBook:
    """All contacts, by alias. Mutating methods return what changed."""

    def __init__(self, contacts: dict[str, Contact] | None = None) -> None:
        self._contacts: dict[str, Contact] = dict(contacts or {})

    def __iter__(self) -> Iterator[Contact]:
        return iter(sorted(self._contacts.values(), key=lambda c: c.alias.casefold()))

    def __len__(self) -> int:
        return len(self._contacts)

    def get(self, alias: str) -> Contact:
        contact = self._contacts.get(alias)
        if contact is None:
            folded = alias.casefold()
            near = next((a for a in sorted(self._contacts) if a.casefold() == folded), None)
            raise UnknownContact(alias, near=near)
        return contact

    def by_id(self, identity_id: str) -> Contact | None:
        return next((c for c in self._contacts.values() if c.card.id == identity_id), None)

    def add(self, alias: str, card: Card, *, me: str, now: datetime) -> AddResult:
        """Add or update ``alias``. Raises :class:`BadAlias`, :class:`DuplicateContact`
        (this identity is saved under another alias, or is our own) or
        :class:`ContactError` (too many contacts)."""
        check_alias(alias)
        if card.id == me:
            raise DuplicateContact("this is your own identity card; add the other side's card")
        other = self.by_id(card.id)
        if other is not None and other.alias != alias:
            raise DuplicateContact(f"this card is already in your contacts as {other.alias!r}")
        existing = self._contacts.get(alias)
        if existing is None:
            if len(self._contacts) >= MAX_CONTACTS:
                raise ContactError(f"the contact list is full ({MAX_CONTACTS} contacts)")
            contact = Contact(alias, card, None, False, now)
            self._contacts[alias] = contact
            return AddResult(contact, "added")
        if existing.card.id != card.id:
            contact = replace(existing, card=card, key_changed=True)
            self._contacts[alias] = contact
            return AddResult(contact, "key-changed")
        if card.created > existing.card.created:
            contact = replace(existing, card=card)
            self._contacts[alias] = contact
            return AddResult(contact, "updated")
        return AddResult(existing, "unchanged")

    def verify(self, alias: str) -> Contact:
        """Record that the officer confirmed ``alias``'s current safety number."""
        current = self.get(alias)
        contact = replace(current, verified=current.card.id, key_changed=False)
        self._contacts[alias] = contact
        return contact

    def remove(self, alias: str) -> Contact:
        contact = self.get(alias)
        del self._contacts[alias]
        return contact

    def for_sending(self, alias: str, *, now: datetime) -> Contact:
        """The contact to seal to. Raises :class:`UnknownContact`,
        :class:`ContactKeyChanged`, or :class:`ContactError` (expired card, or a card
        that is not a delegation's or intermediary's). An *unverified* contact is
        returned: the caller warns."""
        contact = self.get(alias)
        if contact.state == CHANGED:
            raise ContactKeyChanged(alias)
        if contact.card.role == "node":
            raise ContactError(f"{alias!r} is a node, not a delegation: messages go to "
                               "delegations and intermediaries")
        if contact.card.expires <= now:
            raise ContactError(f"the card of {alias!r} expired on "
                               f"{format_time(contact.card.expires)}: ask them for a new "
                               f"one and add it with backchannel contacts add FILE "
                               f"--alias {alias}")
        return contact

    def for_routing(self, alias: str, *, now: datetime) -> Contact:
        """A node to route through (``send --via``). Raises :class:`UnknownContact`,
        :class:`ContactKeyChanged`, or :class:`ContactError` (not a node's card, or
        expired). An *unverified* node is returned: the caller warns."""
        contact = self.get(alias)
        if contact.state == CHANGED:
            raise ContactKeyChanged(alias)
        if contact.card.role != "node":
            raise ContactError(f"{alias!r} is a {contact.card.role}, not a node: --via names "
                               "relay nodes (add their node cards with backchannel contacts "
                               "add FILE --alias ALIAS)")
        if contact.card.expires <= now:
            raise ContactError(f"the card of node {alias!r} expired on "
                               f"{format_time(contact.card.expires)}: ask its operator for "
                               "a new one")
        return contact

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "contacts": [c.to_dict() for c in self]}

    @classmethod
    def from_dict(cls, value: object, *, now: datetime) -> ContactBook:
        """Raises :class:`DecodeError` (the caller reports a damaged store)."""
        obj = expect_object(value, required=("v", "contacts"), what="contacts")
        if obj["v"] != 1 or not isinstance(obj["contacts"], list):
            raise DecodeError("contacts: unsupported format")
        contacts: dict[str, Contact] = {}
        for item in obj["contacts"]:
            entry = expect_object(item, required=("alias", "card", "verified", "key_changed",
                                                  "added"), what="contact")
            alias = check_alias(str(entry["alias"]))
            card = load_card(dsse.Envelope.from_dict(entry["card"]), now=now,
                             allow_expired=True)
            verified = entry["verified"]
            if verified is not None and not isinstance(verified, str):
                raise DecodeError("contact: malformed verified field")
            if not isinstance(entry["key_changed"], bool):
                raise DecodeError("contact: malformed key_changed field")
            contacts[alias] = Contact(alias, card, verified, entry["key_changed"],
                                      parse_time(entry["added"], field="contact.added"))
        return cls(contacts)


def contact_safety_number(mine: Card, contact: Contact) -> str:
    return safety_number(mine.verify_key, contact.card.verify_key)


def format_safety_number(number: str) -> str:
    """60 digits as two lines of six groups, the way both screens show them."""
    groups = number.split()
    return " ".join(groups[:6]) + "\n" + " ".join(groups[6:])
