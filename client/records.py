"""What the profile remembers about each message (stored in ``messages/<id>.box``).

A **received** record keeps the sender-signed inner message, the sender's card and
our own *opened* statement, so that the list can be read again offline and its
signature checked again at every reading::

    {"v": 1, "direction": "in", "envelope": <routing envelope DSSE>,
     "inner": <signed inner message DSSE>, "sender_card": <card DSSE>,
     "opened": <opened statement DSSE>, "received": "<time>", "acked": true}

A **sent** record keeps what was sent and to whom, with the cards in force at the
time (they are what a receipt bundle needs), the node's *accepted* statement and
the last receipts fetched::

    {"v": 1, "direction": "out", "envelope": <DSSE>, "message": {"id", "kind", "body"},
     "inner_digest": "<b64url>", "recipients": [{"alias": "RU", "id": "..."}],
     "cards": [<card DSSE>...], "accepted": <statement DSSE>, "sent": "<time>",
     "statements": [<statement DSSE>...]}

An **unconfirmed** record (``drafts/<id>.box``, client.resend) is a sent record
without ``accepted`` and ``statements``, with ``"direction": "out-unconfirmed"``: it
is written just before the submission and replaced by the sent record when the node
confirms it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keys import dsse
from keys.card import Card, load_card
from keys.encoding import (
    b64url_decode,
    b64url_encode,
    expect_object,
    format_time,
    parse_time,
)
from keys.envelope import Routing, parse_routing
from keys.errors import DecodeError
from keys.policy import Signer
from keys.seal import MAX_INNER_BYTES, MESSAGE_TYPE, Message, parse_message_payload
from keys.statements import Statement, load_statement


@dataclass(frozen=True)
class ReceivedRecord:
    routing: Routing
    inner: dsse.Envelope
    message: Message
    sender: Card
    opened: Statement
    received: datetime
    acked: bool

    @property
    def inner_digest(self) -> bytes:
        return self.inner.digest()

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "direction": "in", "envelope": self.routing.envelope.to_dict(),
                "inner": self.inner.to_dict(), "sender_card": self.sender.envelope.to_dict(),
                "opened": self.opened.signed.to_dict() if self.opened.signed else None,
                "received": format_time(self.received), "acked": self.acked}


@dataclass(frozen=True)
class SentDraft:
    """A sent record before the node's *accepted* statement is known (client.resend):
    kept from just before the submission until the node confirms it."""

    routing: Routing
    message_id: str
    kind: str
    body: Any
    inner_digest: bytes
    recipients: tuple[tuple[str, str], ...]
    cards: tuple[Card, ...]
    sent: datetime

    def confirmed(self, accepted: Statement,
                  statements: tuple[Statement, ...] | None = None) -> SentRecord:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(SentDraft)}
        return SentRecord(**fields, accepted=accepted,
                          statements=(accepted,) if statements is None else statements)

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "direction": "out-unconfirmed",
                "envelope": self.routing.envelope.to_dict(),
                "message": {"id": self.message_id, "kind": self.kind, "body": self.body},
                "inner_digest": b64url_encode(self.inner_digest),
                "recipients": [{"alias": a, "id": i} for a, i in self.recipients],
                "cards": [c.envelope.to_dict() for c in self.cards],
                "sent": format_time(self.sent)}


@dataclass(frozen=True)
class SentRecord(SentDraft):
    """A sent message with the node's *accepted* statement and the receipts fetched."""

    accepted: Statement
    statements: tuple[Statement, ...] = ()

    def alias_of(self, identity_id: str) -> str | None:
        return next((alias for alias, rid in self.recipients if rid == identity_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "direction": "out",
                "accepted": _statement_dict(self.accepted),
                "statements": [_statement_dict(s) for s in self.statements]}


Record = ReceivedRecord | SentRecord


def _statement_dict(statement: Statement) -> dict[str, Any]:
    if statement.signed is None:
        raise ValueError("unsigned statement")
    return statement.signed.to_dict()


def _card(value: object, now: datetime) -> Card:
    return load_card(dsse.Envelope.from_dict(value), now=now, allow_expired=True)


def record_from_dict(value: object, *, now: datetime) -> Record:
    """Parse a stored record; for a received one, check the sender's signature on the
    inner message again. Raises :class:`DecodeError` or
    :class:`~keys.errors.VerificationError`."""
    if not isinstance(value, dict) or value.get("v") != 1:
        raise DecodeError("message record: unknown format")
    routing = parse_routing(dsse.Envelope.from_dict(value.get("envelope")))
    if value.get("direction") == "in":
        obj = expect_object(value, required=("v", "direction", "envelope", "inner",
                                             "sender_card", "opened", "received", "acked"),
                            what="message record")
        inner = dsse.Envelope.from_dict(obj["inner"], max_payload=MAX_INNER_BYTES)
        sender = _card(obj["sender_card"], now)
        dsse.verify(inner, Signer(sender.verify_key), payload_type=MESSAGE_TYPE)
        message = parse_message_payload(inner.payload)
        if message.sender != sender.id:
            raise DecodeError("message record: sender mismatch")
        if not isinstance(obj["acked"], bool):
            raise DecodeError("message record: malformed acked")
        return ReceivedRecord(routing, inner, message, sender, load_statement(obj["opened"]),
                              parse_time(obj["received"], field="received"), obj["acked"])
    obj = expect_object(value, required=("v", "direction", "envelope", "message",
                                         "inner_digest", "recipients", "cards", "accepted",
                                         "sent", "statements"), what="message record")
    if obj["direction"] != "out":
        raise DecodeError("message record: unknown direction")
    if not isinstance(obj["statements"], list):
        raise DecodeError("message record: malformed lists")
    return _draft(routing, obj, now).confirmed(
        load_statement(obj["accepted"]), tuple(load_statement(s) for s in obj["statements"]))


def _draft(routing: Routing, obj: dict[str, Any], now: datetime) -> SentDraft:
    msg = expect_object(obj["message"], required=("id", "kind", "body"), what="message")
    recipients = []
    for item in obj["recipients"] if isinstance(obj["recipients"], list) else []:
        entry = expect_object(item, required=("alias", "id"), what="recipient")
        recipients.append((str(entry["alias"]), str(entry["id"])))
    if not isinstance(obj["cards"], list):
        raise DecodeError("message record: malformed lists")
    return SentDraft(
        routing, str(msg["id"]), str(msg["kind"]), msg["body"],
        b64url_decode(obj["inner_digest"], max_bytes=32, exact=32, field="inner_digest"),
        tuple(recipients), tuple(_card(c, now) for c in obj["cards"]),
        parse_time(obj["sent"], field="sent"))


def draft_from_dict(value: object, *, now: datetime) -> SentDraft:
    """Parse a stored :class:`SentDraft`. Raises :class:`DecodeError`."""
    obj = expect_object(value, required=("v", "direction", "envelope", "message",
                                         "inner_digest", "recipients", "cards", "sent"),
                        what="unconfirmed message record")
    if obj["v"] != 1 or obj["direction"] != "out-unconfirmed":
        raise DecodeError("unconfirmed message record: unknown format")
    return _draft(parse_routing(dsse.Envelope.from_dict(obj["envelope"])), obj, now)
