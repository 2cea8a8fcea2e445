"""Negotiation documents on a delegation's profile: what travels, what is kept.

Documents travel as sealed messages of their own kinds; every body holds DSSE
envelopes only (:mod:`keys.proposal`, :mod:`keys.agreement`), never a name::

    proposal     {"v": 1, "proposal": <envelope>}                  (also a counter-proposal)
    acceptance   {"v": 1, "acceptance": <envelope>, "agreement": <envelope>}
    rejection    {"v": 1, "rejection": <envelope>}
    agreement    {"v": 1, "agreement": <envelope>, "thread": [<envelope>, ...]}
    handover     {"v": 1, "handover": <envelope>, "agreement": <envelope>}
    disclosure   {"v": 1, "about": "<proposal or agreement id>",
                  "disclosures": [<disclosure envelope>, ...]}

Guarantors receive the same bodies: terms, list digests and counts. A list and its
salt travel only in a **disclosure** (:mod:`keys.listref`), sealed to one recipient:

* to the other delegation, automatically, with every proposal or counter-proposal
  that brings a new list (both lists of the exchange: the other side must know whom
  it hands over and whom it receives). So both delegations hold every agreed list
  and either can draft the handover record;
* to a guarantor, only when a delegation chooses to (``backchannel disclose``).

The recipient keeps nothing separately: a disclosure is checked (signature of a
party, addressed to us, digest and count of an agreed list) every time it is used
(:func:`check_disclosure`). The delegation that salted a list keeps it in the box
``negsalts/<digest>``.

There is no separate negotiation store: the local copies of sent and received
messages (:mod:`client.records`) *are* the store, and :func:`collect` rebuilds the
threads and agreements from them every time: proposals and decisions only when signed
by their author, and an agreement's or record's copies merged signature by signature,
each kept only if it stands (:func:`keys.cosigning.gather`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from keys import dsse
from keys.agreement import Agreement, parse_agreement
from keys.cosigning import gather
from keys.ed25519 import VerifyKey
from keys.encoding import b64url_decode, b64url_encode
from keys.errors import BackchannelError, VerificationError
from keys.handover import HandoverRecord, parse_handover
from keys.ids import is_digest_id
from keys.listref import (
    MAX_DISCLOSURE_BYTES,
    SaltedList,
    parse_disclosure,
    verify_disclosure,
)
from keys.negotiation_errors import ListMismatch
from keys.proposal import Message, Proposal, Terms, parse_message, verify_message
from keys.thread import Thread, order_messages

from .bodies import Document, Outgoing
from .errors import ClientError
from .profile import OpenProfile
from .records import ReceivedRecord, Record

KINDS: Final = ("proposal", "acceptance", "rejection", "agreement", "handover",
                "disclosure")
#: Disclosures per message: the lists of one exchange (16 per direction at most).
MAX_DISCLOSURES: Final = 32
#: A negotiation envelope carries terms, digests and counts: small.
MAX_PAYLOAD: Final = 256 * 1024
#: Longest thread accepted from a body (a negotiation of 200 rounds is not one).
MAX_THREAD: Final = 200


class NegotiationNotFound(ClientError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} {ident[:60]!r} in this profile's messages: fetch new "
                         "messages with backchannel inbox, or check the id with "
                         "backchannel thread")


def _envelope(value: object) -> dsse.Envelope:
    return dsse.Envelope.from_dict(value, max_payload=MAX_PAYLOAD)


def outgoing(kind: str, label: str, *, about: str | None = None,
             **envelopes: dsse.Envelope | list[dsse.Envelope]) -> Outgoing:
    body: dict[str, Any] = {"v": 1}
    if about is not None:
        body["about"] = about
    for name, value in envelopes.items():
        body[name] = ([e.to_dict() for e in value] if isinstance(value, list)
                      else value.to_dict())
    return Outgoing(kind, Document(body, label), ())


def command_for(kind: str, body: object) -> str:
    """The command that shows a negotiation document of ``kind`` in this profile (for
    ``read``, which would otherwise print its signed JSON). Never raises."""
    try:
        about = body.get("about") if isinstance(body, dict) else None
        if kind == "disclosure" and is_digest_id(about):
            # Echoed only when it is an id: the sender writes it, and it reaches a terminal.
            return f"backchannel disclosed -- {about}"
        if kind == "handover" and isinstance(body, dict):
            record = parse_handover(_envelope(body["handover"]))
            return f"backchannel handover export --out FILE -- {record.id}"
        if isinstance(body, dict):
            for name in ("proposal", "acceptance", "rejection"):
                if name in body:
                    return f"backchannel thread -- {parse_message(_envelope(body[name])).id}"
            if "agreement" in body:
                return f"backchannel thread -- {parse_agreement(_envelope(body['agreement'])).id}"
    except (BackchannelError, KeyError, TypeError):
        pass
    return "backchannel thread, disclosed or handover export"


def _kind_and_body(record: Record) -> tuple[str, Any]:
    if isinstance(record, ReceivedRecord):
        return record.message.kind, record.message.body
    return record.kind, record.body


@dataclass
class Collected:
    """Every negotiation document found in the profile's messages."""

    #: The keys the documents were checked with (:func:`known_keys`).
    keys: Mapping[str, VerifyKey] = field(default_factory=dict)
    #: Proposals and decisions signed by their author (a contact, or us).
    messages: dict[str, Message] = field(default_factory=dict)
    #: Every copy received or sent, parsed (signatures are judged when merged).
    agreements: list[Agreement] = field(default_factory=list)
    handovers: list[HandoverRecord] = field(default_factory=list)
    #: Disclosures received or sent: (about, sender id, envelope), unchecked.
    disclosures: list[tuple[str, str, dsse.Envelope]] = field(default_factory=list)
    #: Documents that did not parse or were not signed by their author (kind,
    #: envelope id, why): shown, never used.
    damaged: list[str] = field(default_factory=list)
    #: Agreement or record id -> signers whose copies carried different signatures
    #: under a key this profile does not know: left out of the merge (filled by
    #: :meth:`agreement` and :func:`handover_of`).
    disputed: dict[str, frozenset[str]] = field(default_factory=dict)

    def thread_of(self, message_id: str) -> Thread:
        """The whole thread containing ``message_id``, checked by order_messages; every
        message in it is signed by its author (:func:`collect` kept no other)."""
        start = self.messages.get(message_id)
        if start is None:
            raise NegotiationNotFound("proposal or decision", message_id)
        root = start
        seen = {root.id}
        while root.previous is not None:
            previous = self.messages.get(root.previous)
            if previous is None or previous.id in seen:
                break
            root = previous
            seen.add(root.id)
        members: list[Message] = [root]
        frontier = {root.id}
        while frontier:
            nxt = [m for m in self.messages.values() if m.previous in frontier]
            members.extend(nxt)
            frontier = {m.id for m in nxt}
        return order_messages(members)

    def agreement(self, ident: str, keys: Mapping[str, VerifyKey]) -> Agreement:
        """The agreement named by its id or by its proposal's id, with the signatures
        of every copy that stand (keys.cosigning.gather): a copy with a
        forged or stray signature, from whoever sent it, hides no other signature."""
        wanted = [a for a in self.agreements if ident in (a.id, a.proposal_id)]
        if not wanted:
            raise NegotiationNotFound("agreement", ident)
        # Copies of one proposal's agreement are the same bytes (its id is theirs).
        terms = wanted[0].terms
        gathered = gather([a.envelope for a in wanted if a.id == wanted[0].id], keys,
                          signers={*terms.parties, *terms.guarantors})
        self.note_disputed(wanted[0].id, gathered.disputed)
        return parse_agreement(gathered.envelope)

    def note_disputed(self, ident: str, disputed: frozenset[str]) -> None:
        if disputed:
            self.disputed[ident] = disputed
        else:
            self.disputed.pop(ident, None)

    def agreement_of_thread(self, thread: Thread, keys: Mapping[str, VerifyKey]
                            ) -> Agreement | None:
        """The agreement over one of ``thread``'s proposals, if this profile has one
        (a thread closes at its acceptance, so there is at most one)."""
        for proposal in thread.messages:
            if isinstance(proposal, Proposal) and any(
                    a.proposal_id == proposal.id for a in self.agreements):
                return self.agreement(proposal.id, keys)
        return None

    def has_handover(self, ident: str) -> bool:
        return any(r.id == ident for r in self.handovers)


def handover_of(found: Collected, ident: str, keys: Mapping[str, VerifyKey]
                ) -> HandoverRecord:
    """The handover record ``ident``, with the signatures of every copy that stand."""
    wanted = [r for r in found.handovers if r.id == ident]
    if not wanted:
        raise NegotiationNotFound("handover record", ident)
    record = wanted[0]
    parties = {p for a in found.agreements if a.id == record.agreement
               for p in a.terms.parties}
    gathered = gather([r.envelope for r in wanted], keys,
                      signers={record.author, *record.witnesses, *parties})
    found.note_disputed(ident, gathered.disputed)
    return parse_handover(gathered.envelope)


def collect(records: Iterable[Record], keys: Mapping[str, VerifyKey]) -> Collected:
    """Every negotiation document of ``records`` (``keys``: :func:`known_keys`). Anyone
    in the contacts can send documents, so each is parsed whole here, and a proposal or
    decision kept only if its author signed it: one junk or forged document must not
    break, fork or supersede a negotiation (it is listed in ``damaged`` instead)."""
    found = Collected(keys=keys)
    for record in records:
        kind, body = _kind_and_body(record)
        if kind not in KINDS:
            continue
        where = f"{kind} {record.routing.id}"
        try:
            if not isinstance(body, dict) or body.get("v") != 1:
                raise ClientError("malformed")
            for name in ("proposal", "acceptance", "rejection"):
                if name in body:
                    message = parse_message(_envelope(body[name]))
                    if _signed_by_author(message, keys, found, where):
                        found.messages[message.id] = message
            if "agreement" in body:
                found.agreements.append(parse_agreement(_envelope(body["agreement"])))
            if "handover" in body:
                found.handovers.append(parse_handover(_envelope(body["handover"])))
            if kind == "disclosure":
                about, items = body.get("about"), body.get("disclosures")
                if not isinstance(about, str) or not isinstance(items, list) or not (
                        0 < len(items) <= MAX_DISCLOSURES):
                    raise ClientError("malformed")
                for value in items:
                    envelope = dsse.Envelope.from_dict(value, max_payload=MAX_DISCLOSURE_BYTES)
                    found.disclosures.append((about, record.routing.sender, envelope))
            thread = body.get("thread", [])
            if not isinstance(thread, list) or len(thread) > MAX_THREAD:
                raise ClientError("malformed")
            for value in thread:
                message = parse_message(_envelope(value))
                if message.id not in found.messages and _signed_by_author(
                        message, keys, found, where):
                    found.messages[message.id] = message
        except BackchannelError:
            found.damaged.append(f"{where}: not a valid negotiation document")
    return found


def _signed_by_author(message: Message, keys: Mapping[str, VerifyKey], found: Collected,
                      where: str) -> bool:
    key = keys.get(message.author)
    if key is None:
        found.damaged.append(f"{where}: {message.id[:12]}… is by {message.author}, who is "
                             "not in your contacts (add and verify their card)")
        return False
    try:
        verify_message(message, key)
    except VerificationError:
        found.damaged.append(f"{where}: {message.id[:12]}… is not signed by its author")
        return False
    return True


def known_keys(opened: OpenProfile) -> dict[str, VerifyKey]:
    """Identity id -> key for this profile and every contact whose key did not change."""
    keys = {opened.identity.id: opened.identity.signing_key.public}
    for contact in opened.contacts():
        if contact.state != "changed":
            keys[contact.card.id] = contact.card.verify_key
    return keys


def save_salted(opened: OpenProfile, salted: SaltedList) -> None:
    with opened.profile.locked():
        opened.store.write(f"negsalts/{salted.digest}",
                           {"salt": b64url_encode(salted.salt),
                            "data": b64url_encode(salted.data), "entries": salted.entries})


def save_entry(opened: OpenProfile, digest: str, salt: bytes, data: bytes) -> None:
    """The salt and bytes of a person handed over unlisted (named by ``digest`` in a
    handover record), kept so that this delegation can open the digest later."""
    with opened.profile.locked():
        opened.store.write(f"negentries/{digest}", {"salt": b64url_encode(salt),
                                                     "data": b64url_encode(data)})


def load_salted(opened: OpenProfile, digest: str) -> SaltedList | None:
    value = opened.store.read(f"negsalts/{digest}")
    if value is None:
        return None
    return SaltedList(b64url_decode(value["salt"], max_bytes=32, exact=32, field="salt"),
                      b64url_decode(value["data"], max_bytes=64 * 1024 * 1024, field="data"),
                      int(value["entries"]))


# --- disclosures -----------------------------------------------------------------------

@dataclass(frozen=True)
class Disclosed:
    """A disclosed list checked against the terms: who hands it over, and the list."""

    sender: str
    giver: str
    salted: SaltedList


def check_disclosure(envelope: dsse.Envelope, sender: str, terms: Terms, me: str,
                     keys: Mapping[str, VerifyKey]) -> Disclosed:
    """A disclosure received from ``sender`` (the message's signed sender), checked:

    1. it parses and its salt and list open the digest it names (else the list was
       altered on the way, or is not the one that was digested);
    2. it is signed by ``sender``, a party of ``terms``, and addressed to ``me``;
    3. its digest is one of the lists of ``terms`` and its entry count is the agreed one.

    Counting the entries of the list bytes is the caller's job (they are a name list).
    Raises :class:`ListMismatch`, :class:`ClientError` or a ``keys`` error."""
    disclosure = parse_disclosure(envelope)
    if sender not in terms.parties or disclosure.sender != sender:
        raise ListMismatch("the disclosure is not signed by a party of the agreement")
    key = keys.get(sender)
    if key is None:
        raise ClientError(f"the discloser {sender} is not in your contacts")
    if disclosure.recipient != me:
        raise ListMismatch("the disclosure is addressed to someone else")
    for transfer in terms.transfers:
        for ref in transfer.lists:
            if ref.digest == disclosure.digest:
                salted = verify_disclosure(disclosure, key, expected_digest=ref.digest)
                if salted.entries != ref.entries:
                    raise ListMismatch(f"the disclosure counts {salted.entries} entries; "
                                       f"the agreed list has {ref.entries}")
                return Disclosed(sender, transfer.giver, salted)
    raise ListMismatch("the disclosed list is not a list of this agreement (its digest "
                       "is none of the agreed lists')")


def salted_list(opened: OpenProfile, found: Collected, digest: str, terms: Terms
                ) -> SaltedList | None:
    """A list of ``terms`` with its salt: our own (we salted it), else one disclosed to
    us by a party (checked by :func:`check_disclosure`); ``None`` if neither."""
    own = load_salted(opened, digest)
    if own is not None:
        return own
    keys = found.keys
    for _, sender, envelope in found.disclosures:
        if sender == opened.identity.id:
            continue
        try:
            disclosed = check_disclosure(envelope, sender, terms, opened.identity.id, keys)
        except BackchannelError:
            continue
        if disclosed.salted.digest == digest:
            return disclosed.salted
    return None


# --- which inbox messages a negotiation command opened and left ------------------------

def skipped(opened: OpenProfile) -> set[str]:
    """Envelope ids opened by a negotiation command and found to be of another kind."""
    value = opened.store.read("negskipped")
    return set(value) if isinstance(value, list) else set()


def save_skipped(opened: OpenProfile, ids: Iterable[str]) -> None:
    with opened.profile.locked():
        opened.store.write("negskipped", sorted(ids))
