"""Submitting the same envelope again: ``backchannel resend``.

A submission can end without the sender knowing whether the node took it: the
connection drops after the node's commit, the answer times out, or the node is later
restored from a backup older than the submission. Sending the list again would make a
second envelope, under a new id, that the recipients get as well. Instead the client
keeps the exact bytes it submitted and submits *them* again: a node stores an envelope
once (by content id), so a resubmission returns the receipt already given, or, on a
node that lost the envelope, stores it now. Either way the recipients get it once.

Two boxes per envelope in the encrypted local store (client.localstore):

* ``copies/<id>``: ``{"v": 1, "envelope": <routing envelope DSSE>, "sealed":
  "<b64url>"}``, written before the first submission and kept until the envelope
  expires (after that no node accepts it).
* ``drafts/<id>``: the sent record without the node's *accepted* statement
  (client.records.SentDraft), written before the first submission and removed when
  the node's acceptance is known (``messages/<id>`` then holds the sent record).

A copy holds only what every node on the route already holds (the sealed bytes are
encrypted to the recipients); a draft holds what the sent record will hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from keys import dsse
from keys.card import CLOCK_SKEW
from keys.encoding import b64url_decode, b64url_encode, expect_object, format_time
from keys.envelope import MAX_LIFETIME, Routing, check_content, parse_routing
from keys.errors import BackchannelError, DecodeError, VerificationError
from keys.seal import MAX_SEALED_BYTES
from keys.statements import Statement, verify_statement

from .errors import MessageError, NodeError, RelayRejected, StoreCorrupt
from .profile import OpenProfile
from .records import SentDraft, SentRecord, draft_from_dict
from .relay_client import NO_METER, Meter, RelayClient

COPIES: Final = "copies"
DRAFTS: Final = "drafts"
#: A draft younger than this without its copy may belong to a send writing it now.
_KEEPING: Final = timedelta(minutes=1)
#: Refusals that hold only until the officer acts (the clock) or waits (the rate limit).
_TRY_AGAIN: Final = frozenset({401, 429})


class NoCopyKept(MessageError):
    def __init__(self, envelope_id: str) -> None:
        super().__init__(f"this profile keeps no copy of message {envelope_id} to submit "
                         "again (only of messages it sent, until they expire): check the id "
                         "with backchannel inbox --local")


class NeverSubmitted(MessageError):
    """A draft without its copy: the send stopped between keep()'s writes."""


class CopyExpired(MessageError):
    """The envelope expired before the node confirmed it; nothing can resubmit it."""


def _sentence(cause: BackchannelError) -> str:
    return str(cause).rstrip(".")


def _messages(count: int) -> str:
    return "1 message" if count == 1 else f"{count} messages"


def _following(rest: Sequence[str]) -> str:
    return "the message after it" if len(rest) == 1 else f"the {len(rest)} messages after it"


def _after(rest: Sequence[str]) -> str:
    """The messages after one, with their verb."""
    return f"{_following(rest)} {'is' if len(rest) == 1 else 'are'}"


class SendUncertain(NodeError):
    """The submission's outcome is unknown: the node may hold the envelope or not."""

    def __init__(self, envelope_id: str, cause: BackchannelError, *,
                 rest: Sequence[str] = ()) -> None:
        # ``rest``: a command sending several messages (client.commands.outbox)
        # kept them all before submitting the first, and went no further than this one.
        if rest:
            ids = " ".join((envelope_id, *rest))
            text = (f"{_sentence(cause)}. The node may or may not have accepted message "
                    f"{envelope_id}, and this command stopped there: {_after(rest)} "
                    f"sealed and kept, not submitted. Run backchannel resend {ids} to "
                    f"finish it (the node keeps one copy of an envelope, so the "
                    f"recipients get each once)")
        else:
            text = (f"{_sentence(cause)}. The node may or may not have accepted message "
                    f"{envelope_id}: run backchannel resend {envelope_id} (the node "
                    f"keeps one copy of an envelope, so the recipients get it once)")
        super().__init__(text)
        self.envelope_id = envelope_id
        self.cause = cause


class CommandStopped(NodeError):
    """A command sending several messages stopped on a refusal after submitting some
    of them. ``waiting``: the refusal only asks to wait (the rate limit, this
    computer's clock), and the refused message is kept with the rest; otherwise it
    is gone and the rest is kept (each message goes to its own node or is a
    document of its own)."""

    def __init__(self, cause: BackchannelError, *, submitted: Sequence[str], refused: str,
                 rest: Sequence[str], waiting: bool) -> None:
        done = (f"This command had submitted {_messages(len(submitted))} "
                f"({' '.join(submitted)})")
        if waiting:
            kept: tuple[str, ...] = (refused, *rest)
            these = f"it and {_following(rest)} are" if rest else "it is"
            text = (f"{_sentence(cause)}. {done}; the node did not take message {refused} "
                    f"for now: {these} sealed and kept. When the cause is dealt "
                    f"with (the rate limit has passed, or this computer's clock is right), "
                    f"run backchannel resend {' '.join(kept)} to finish the command")
        else:
            kept = tuple(rest)
            text = (f"{_sentence(cause)}. {done}; message {refused} was refused and is not "
                    f"kept" + (f"; {_after(rest)} sealed and kept: run backchannel resend "
                               f"{' '.join(rest)} to send {'it' if len(rest) == 1 else 'them'}"
                               if rest else ""))
        super().__init__(text)


@dataclass(frozen=True)
class Copy:
    routing: Routing
    sealed: bytes


@dataclass(frozen=True)
class Resent:
    record: SentRecord
    #: The node's *accepted* statement this time (a new one when ``new``).
    accepted: Statement
    #: True: the node did not hold the envelope and stored it now (it was lost, or the
    #: first submission never reached it). False: it already held it.
    new: bool
    #: True: the node's acceptance was not known to this profile before.
    confirmed: bool


def keep(opened: OpenProfile, routing: Routing, sealed: bytes, draft: SentDraft) -> None:
    """Before the first submission: the draft record, then the bytes to submit again.
    In this order a copy always has a draft or a sent record beside it, and
    :func:`sweep` (in a concurrent ``send``) can tell an orphan copy from one being
    written."""
    opened.save_box(DRAFTS, routing.id, draft.to_dict())
    opened.save_box(COPIES, routing.id, {"v": 1, "envelope": routing.envelope.to_dict(),
                                         "sealed": b64url_encode(sealed)})


def refused(opened: OpenProfile, envelope_id: str) -> None:
    """The node refused the submission for good: nothing to submit again."""
    opened.drop_box(DRAFTS, envelope_id)
    opened.drop_box(COPIES, envelope_id)


def asks_to_wait(exc: BackchannelError) -> bool:
    """A refusal that holds only until the officer waits (the rate limit) or fixes this
    computer's clock: nothing is wrong with the envelope."""
    return isinstance(exc, RelayRejected) and exc.status in _TRY_AGAIN


def is_refusal(exc: BackchannelError) -> bool:
    """Whether an error from a first submission says the node did not store the
    envelope. A 4xx problem document does (the node answers it without committing),
    but a 409: "being stored" or "conflicted" asks to retry. A 5xx, a lost connection
    or an answer that does not follow the protocol leave it open."""
    return isinstance(exc, RelayRejected) and 400 <= exc.status < 500 and exc.status != 409


def confirm(opened: OpenProfile, draft: SentDraft, accepted: Statement) -> SentRecord:
    """The node's acceptance is known: the draft becomes the sent record."""
    record = draft.confirmed(accepted)
    opened.save_message_data(draft.routing.id, record.to_dict())
    opened.drop_box(DRAFTS, draft.routing.id)
    return record


def load_copy(opened: OpenProfile, envelope_id: str) -> Copy | None:
    data = opened.box_data(COPIES, envelope_id)
    if data is None:
        return None
    try:
        obj = expect_object(data, required=("v", "envelope", "sealed"), what="kept copy")
        routing = parse_routing(dsse.Envelope.from_dict(obj["envelope"]))
        sealed = b64url_decode(obj["sealed"], max_bytes=MAX_SEALED_BYTES, field="sealed")
        if obj["v"] != 1 or routing.id != envelope_id:
            raise DecodeError("kept copy: not this envelope")
        check_content(routing, sealed)
    except BackchannelError as exc:
        raise StoreCorrupt(f"the kept copy of message {envelope_id} is damaged ({exc}); "
                           "send the list again with backchannel send") from None
    return Copy(routing, sealed)


def _draft(opened: OpenProfile, envelope_id: str) -> SentDraft | None:
    data = opened.box_data(DRAFTS, envelope_id)
    if data is None:
        return None
    try:
        draft = draft_from_dict(data, now=opened.clock.now())
        if draft.routing.id != envelope_id:
            raise DecodeError("not this envelope")
    except BackchannelError as exc:
        raise StoreCorrupt(f"the unconfirmed record of message {envelope_id} is damaged "
                           f"({exc})") from None
    return draft


def _sent_record(opened: OpenProfile, envelope_id: str) -> SentRecord | None:
    record = opened.message_record(envelope_id)
    return record if isinstance(record, SentRecord) else None


def kept_ids(opened: OpenProfile) -> tuple[list[str], list[str]]:
    """Messages whose acceptance is known and whose copy is kept (what ``resend --all``
    submits again after a node's restore), and unconfirmed ones (each needs the
    officer's ``resend ID``: an interrupted send may have been meant to stop), oldest
    first (a stopped command's in the order it would have submitted them)."""
    drafts = set(opened.box_ids(DRAFTS))

    def written(envelope_id: str) -> tuple[datetime, str]:
        # A command keeps its messages' drafts in the order it submits them.
        return (opened.box_written(DRAFTS, envelope_id) or datetime.max.replace(tzinfo=UTC),
                envelope_id)

    return sorted(set(opened.box_ids(COPIES)) - drafts), sorted(drafts, key=written)


def unconfirmed(opened: OpenProfile) -> list[SentDraft]:
    """The drafts of messages whose send ended without the node's answer."""
    return [d for d in (_draft(opened, i) for i in opened.box_ids(DRAFTS)) if d is not None]


def sweep(opened: OpenProfile, *, deep: bool = False) -> list[str]:
    """Drop the copies of expired envelopes whose acceptance is known: no node takes
    them any more. Unconfirmed ones stay for :func:`resend` to settle.

    ``deep`` reads every copy for its expiry; otherwise only copies written longer ago
    than any envelope can live are dropped (a file's age costs a ``stat``, reading a
    large list's copy costs its decryption, on every send)."""
    now = opened.clock.now()
    dropped = []
    for envelope_id in opened.box_ids(COPIES):
        if opened.box_written(DRAFTS, envelope_id) is not None:
            continue
        if not opened.has_message(envelope_id):
            # Neither draft nor record (keep() writes the draft first, confirm() the
            # record before dropping the draft): a copy that nothing refers to.
            expired = True
        elif deep:
            try:
                copy = load_copy(opened, envelope_id)
            except StoreCorrupt:
                continue  # named by resend, not removed behind the officer's back
            expired = copy is not None and _expired(copy.routing, now)
        else:
            written = opened.box_written(COPIES, envelope_id)
            expired = written is not None and written + MAX_LIFETIME < now
        if expired:
            opened.drop_box(COPIES, envelope_id)
            dropped.append(envelope_id)
    return dropped


async def resend(opened: OpenProfile, client: RelayClient, envelope_id: str, *,
                 upload: Meter = NO_METER) -> Resent:
    """Submit a kept envelope again.

    1. The profile keeps the envelope's copy, and its draft until the node confirmed
       it, else its sent record (a draft left beside a sent record is stale: the
       record wins). The node still presents the pinned key.
    2. Unexpired: submit the same bytes. The node's *accepted* statement verifies with
       the pinned key (RelayClient.submit). A refusal (a 4xx other than those that
       only ask to wait or retry) is final only if the node holds no acceptance of
       the envelope either (its checks run before it looks the envelope up, so it can
       refuse an envelope it accepted before, e.g. from a member since revoked).
    3. Expired: no node accepts it any more. Unconfirmed, the node may have accepted
       it before; its receipts say. Without an acceptance the copy is dropped and the
       draft kept: the node may also have purged or lost the envelope after delivering
       it, so whether it arrived is for the recipients to say.
    4. Remember: a draft becomes the sent record; a sent record gains the new
       acceptance of a node that had lost the envelope.
    """
    # Step 1.
    copy = load_copy(opened, envelope_id)
    record = _sent_record(opened, envelope_id)
    draft = None
    if record is not None:
        opened.drop_box(DRAFTS, envelope_id)
    else:
        draft = _draft(opened, envelope_id)
    if copy is None or (draft is None and record is None):
        if draft is not None and not _expired(draft.routing, opened.clock.now()):
            written = opened.box_written(DRAFTS, envelope_id)
            if written is not None and opened.clock.now() - written < _KEEPING:
                raise MessageError(f"message {envelope_id} is being sent (its copy is "
                                   "being written); try again in a minute")
            # keep() stopped between its two writes: nothing was submitted.
            opened.drop_box(DRAFTS, envelope_id)
            raise NeverSubmitted(f"message {envelope_id} was never submitted: its send "
                                 "stopped before it; send the list again with "
                                 "backchannel send")
        if draft is not None:
            raise CopyExpired(f"message {envelope_id} was not confirmed by the node before "
                              "it expired, and no node accepts it any more; ask the "
                              "recipients whether it arrived, else send the list again "
                              "with backchannel send")
        raise NoCopyKept(envelope_id)
    await client.check_pin()
    routing = copy.routing
    expires = format_time(routing.expires)
    # Step 2.
    if not _expired(routing, opened.clock.now()):
        try:
            submitted = await client.submit(routing, copy.sealed, upload=upload)
            accepted, new = submitted.accepted, submitted.new
        except RelayRejected as exc:
            if not is_refusal(exc) or asks_to_wait(exc):
                raise
            found = await _acceptance(client, routing, opened) if draft else None
            if found is None:
                refused(opened, envelope_id)
                raise
            accepted, new = found, False
    # Step 3.
    elif record is not None:
        opened.drop_box(COPIES, envelope_id)
        raise CopyExpired(f"message {envelope_id} expired at {expires}: no node accepts "
                          f"it any more (your node accepted it at "
                          f"{format_time(record.accepted.at)}; backchannel receipts "
                          f"{envelope_id} shows what became of it)")
    else:
        found = await _acceptance(client, routing, opened)
        if found is None:
            opened.drop_box(COPIES, envelope_id)
            raise CopyExpired(f"message {envelope_id} expired at {expires} and your node "
                              "holds no acceptance of it: either it never reached the node, "
                              "or the node has since purged or lost it; ask the recipients "
                              "whether it arrived, else send the list again with "
                              "backchannel send")
        accepted, new = found, False
    # Step 4.
    if draft is not None:
        return Resent(confirm(opened, draft, accepted), accepted, new, True)
    # Read again: the submission may have taken minutes, and receipts may have been
    # fetched meanwhile.
    record = _sent_record(opened, envelope_id) or record
    assert record is not None
    if accepted.id != record.accepted.id and all(s.id != accepted.id
                                                  for s in record.statements):
        record = dataclasses.replace(record, statements=(*record.statements, accepted))
        opened.save_message_data(envelope_id, record.to_dict())
    return Resent(record, accepted, new, False)


def _expired(routing: Routing, now: datetime) -> bool:
    """Expired for every node, even one whose clock is behind ours (CLOCK_SKEW)."""
    return routing.expires + CLOCK_SKEW <= now


async def _acceptance(client: RelayClient, routing: Routing,
                      opened: OpenProfile) -> Statement | None:
    """The pinned node's *accepted* statement for ``routing`` among its receipts."""
    try:
        statements, _ = await client.receipts_and_cards(routing.id)
    except RelayRejected as exc:
        if exc.status == 404:
            return None
        raise
    pin = opened.require_node()
    for statement in statements:
        if (statement.kind != "accepted" or statement.by != pin.card.id
                or statement.envelope != routing.id
                or statement.fields.get("sender") != opened.identity.id
                or not routing.created - CLOCK_SKEW <= statement.at
                <= routing.expires + CLOCK_SKEW):
            continue
        try:
            verify_statement(statement, pin.card.verify_key)
        except VerificationError:
            continue
        return statement
    return None

