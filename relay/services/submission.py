"""Accepting envelopes from members.

1. Parse the routing envelope and decode the sealed bytes (size-limited).
2. Check the sender's signature and that the sealed bytes are the named content.
3. Check the sealed structure and the node's rules (relay.rules); an envelope for
   another node must name a first hop this node peers with.
4. In one group-commit job (relay.storage.committer), so one transaction and one
   commit per batch of concurrent requests: the sender must still be an active
   member and the request's nonce fresh (relay.services.auth.record; the nonce is
   recorded even if the submission is refused below). Then, in a savepoint of its
   own: the same envelope already stored → its receipt (idempotent), and for another
   node the push to the first hop queued again unless the envelope is known to have
   arrived (relay.storage.federation.forward_again); its content
   under another envelope id → conflict; for this node's own members: recipients
   must be active members, then store the envelope, one delivery per recipient and
   the node's *accepted* statement; for another node: store the envelope, the
   *accepted* and *relayed* statements, and queue the push to the first hop
   (relay.services.forwarder).
5. Only after the commit is the receipt (or the refusal) returned and the
   recipients (or the forwarder) woken.

Every rejection happens before or inside the transaction, so nothing is ever
half-stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from keys import dsse
from keys.clock import SYSTEM_CLOCK, Clock
from keys.encoding import b64url_decode
from keys.envelope import (
    MAX_ENVELOPE_BYTES,
    Routing,
    check_content,
    parse_routing,
    verify_routing,
)
from keys.errors import DecodeError, VerificationError
from keys.errors import TooLarge as KeysTooLarge
from keys.identity import Identity
from keys.seal import SealedHeader, parse_sealed_unverified
from keys.statements import Statement, make_statement

from .. import errors
from ..notify import CHANNEL, Announcer, Notice
from ..rules import check_submission
from ..storage import federation, mailbox, members
from ..storage.committer import IntegrityError, Tx
from ..storage.database import Database
from ..storage.federation import PeerRow
from .auth import Caller, Proof, record
from .handoff import Handoff, forward_body, hand_over

#: What a job returns when a concurrent process stored the same content first.
_RACE: Final = "race"
#: What a submission's job found: the acceptance, the deliveries to announce, the
#: sender's card for the first push (a new forwarded envelope), and whether a known
#: envelope was queued to its first hop again (relay.storage.federation.forward_again).
_JobResult = tuple["Accepted", list[Notice], bytes | None, bool]


@dataclass(frozen=True)
class Accepted:
    id: str
    receipt: bytes
    created: bool
    size: int


def parse_submission(envelope: object, sealed_b64: object, *, max_sealed: int
                     ) -> tuple[Routing, bytes, SealedHeader]:
    """Step 1 and the structural half of step 3; raises client errors."""
    try:
        routing = parse_routing(dsse.Envelope.from_dict(envelope, max_payload=MAX_ENVELOPE_BYTES))
    except KeysTooLarge as exc:
        raise errors.TooLarge(f"envelope: {exc}") from None
    except DecodeError as exc:
        raise errors.BadRequest(f"malformed envelope: {exc}") from None
    try:
        sealed = b64url_decode(sealed_b64, max_bytes=max_sealed, field="sealed")
    except KeysTooLarge:
        raise errors.TooLarge(f"the sealed message exceeds {max_sealed} bytes") from None
    except DecodeError as exc:
        raise errors.BadRequest(str(exc)) from None
    try:
        header = parse_sealed_unverified(sealed, max_bytes=max_sealed)
    except DecodeError as exc:
        raise errors.BadRequest(f"malformed sealed message: {exc}") from None
    return routing, sealed, header


class Submission:
    def __init__(self, db: Database, node: Identity, announcer: Announcer, *, max_sealed: int,
                 clock: Clock = SYSTEM_CLOCK, wake: Callable[[], None] = lambda: None,
                 handoff: Callable[[Handoff], bool] | None = None) -> None:
        self.db = db
        self.node = node
        self.announcer = announcer
        self.max_sealed = max_sealed
        self.clock = clock
        self.wake = wake
        self.handoff = handoff

    async def submit(self, caller: Caller, proof: Proof, envelope: object,
                     sealed_b64: object) -> Accepted:
        """``proof``: the request's nonce (relay.services.auth), recorded in the same
        transaction as the envelope."""
        # Step 1.
        routing, sealed, header = parse_submission(envelope, sealed_b64,
                                                   max_sealed=self.max_sealed)
        # Step 2.
        if routing.sender != caller.id:
            raise errors.Forbidden("members may only submit envelopes they signed themselves")
        try:
            verify_routing(routing, caller.key)
        except VerificationError:
            raise errors.EnvelopeInvalid("the envelope's signature does not verify") from None
        try:
            check_content(routing, sealed)
        except DecodeError as exc:
            raise errors.EnvelopeInvalid(str(exc)) from None
        # Step 3.
        now = self.clock.now()
        check_submission(routing, header, node_id=self.node.id, caller=caller.id, now=now)
        relayed: Statement | None = None
        first_hop: PeerRow | None = None
        if routing.destination != self.node.id:
            relayed, first_hop = await self._relayed(routing, caller.id)
        # Step 4.
        receipt = make_statement("accepted", routing.id, self.node.signing_key,
                                 clock=self.clock, sender=caller.id)
        body = receipt.to_json()
        at = int(now.timestamp())

        def job(tx: Tx) -> _JobResult | errors.RelayError | str:
            record(tx, proof)
            try:
                with tx.savepoint():
                    return self._store(tx, routing, sealed, receipt.id, body, relayed, at)
            except errors.RelayError as exc:
                return exc  # refused: the nonce stays recorded
            except IntegrityError:
                return _RACE

        # No savepoint around the whole job: record() writes only when it succeeds,
        # and the envelope's work has a savepoint of its own.
        outcome = await self.db.run(job, savepoint=False)
        if isinstance(outcome, errors.RelayError):
            raise outcome
        notices: list[Notice] = []
        card: bytes | None = None
        again = False
        if isinstance(outcome, str):
            # A concurrent submission of the same envelope (or content) by another
            # process won the race.
            stored = await self._existing(routing)
        else:
            stored, notices, card, again = outcome
        # Step 5.
        self.announcer.after_commit(notices)
        if again:
            self.wake()  # the outbox worker builds the push from storage
        elif relayed is not None and stored.created:
            handed = False
            if first_hop is not None and card is not None:
                handed = hand_over(self.handoff, partial(self._handoff, routing, sealed, body,
                                                         relayed, card, first_hop))
            # Only the forward row was queued: a push under way needs no scan (at an
            # intermediary the statements going back do, relay.services.federation).
            if not handed:
                self.wake()
        return stored

    def _handoff(self, routing: Routing, sealed: bytes, receipt: bytes, relayed: Statement,
                 card: bytes, peer: PeerRow) -> Handoff:
        """The first push, as the outbox worker would build it from storage: our
        *accepted* and *relayed* statements, the sender's card and ours."""
        body = forward_body(routing, sealed, (receipt, relayed.to_json()),
                            (card, self.node.card.to_json()))
        return Handoff(peer.id, routing.id, peer.url, body, int(routing.expires.timestamp()))

    async def _relayed(self, routing: Routing, sender: str) -> tuple[Statement, PeerRow]:
        """The origin's *relayed* statement (from the sender to the first hop), once
        it is known that this node can reach that hop, and that hop."""
        first = routing.hops[1]
        peer = await self.db.query(lambda tx: federation.peer_row(tx, first))
        if peer is None:
            raise errors.Unroutable(f"this node does not peer with the first hop of the "
                                    f"envelope's route ({first})")
        return make_statement("relayed", routing.id, self.node.signing_key, clock=self.clock,
                              previous=sender, next=first), peer

    def _store(self, tx: Tx, routing: Routing, sealed: bytes, receipt_id: str, receipt: bytes,
               relayed: Statement | None, now: int) -> _JobResult:
        """Step 4 after the nonce, inside the job's savepoint (runs in the writer)."""
        holder = mailbox.content_holder(tx, routing.content)
        if holder is not None:
            receipt_known = mailbox.first_statement(tx, routing.id, "accepted")
            known = self._known_receipt(routing, holder, receipt_known)
            again = relayed is not None and federation.forward_again(
                tx, routing.hops[1], routing.id, sealed, self.node.id, now)
            return known, [], None, again
        if relayed is None:
            active = members.active_of(tx, routing.to)
            if active != set(routing.to):
                raise errors.NotFound("a recipient is not a member of this node")
        mailbox.add_envelope(
            tx, id=routing.id, content_id=routing.content, sender=routing.sender,
            routing=routing.envelope.to_json(), sealed=sealed, received_at=now,
            expires_at=int(routing.expires.timestamp()))
        mailbox.add_statement(tx, id=receipt_id, envelope_id=routing.id, kind="accepted",
                              signer=self.node.id, recipient=None, at=now, body=receipt)
        notices: list[Notice] = []
        if relayed is None:
            def deliver(tx: Tx) -> None:
                # At the end of the batch: on PostgreSQL the cursor lock is then held
                # from the batch's first delivery to its commit only.
                cursors = mailbox.add_deliveries(tx, routing.id, routing.to)
                notices.extend(Notice(member, cursor, routing.id) for member, cursor in cursors)
                _pg_notify(tx, notices)

            tx.later(deliver)
        else:
            mailbox.add_statement(
                tx, id=relayed.id, envelope_id=routing.id, kind="relayed",
                signer=self.node.id, recipient=None, at=int(relayed.at.timestamp()),
                body=relayed.to_json())
            federation.push_later(tx, relayed.fields["next"], routing.id, [None], now)
            # For the first push (handed to the outbox worker after the commit).
            card = federation.card_bodies(tx, [routing.sender]).get(routing.sender)
            return Accepted(routing.id, receipt, True, len(sealed)), notices, card, False
        return Accepted(routing.id, receipt, True, len(sealed)), notices, None, False

    @staticmethod
    def _known_receipt(routing: Routing, holder: str, receipt: bytes | None) -> Accepted:
        # One lookup by content id answers both questions: the envelope id covers the
        # content id, so the same envelope always holds the same content. (Two separate
        # lookups could straddle a concurrent commit under READ COMMITTED.)
        if holder != routing.id:
            raise errors.Conflict("this content was already submitted under another envelope")
        if receipt is None:  # pragma: no cover - committed in the same transaction
            raise errors.Conflict("this envelope is being stored; retry")
        return Accepted(routing.id, receipt, False, routing.size)

    async def _existing(self, routing: Routing) -> Accepted:
        async with self.db.read() as conn:
            holder = await mailbox.envelope_by_content(conn, routing.content)
            receipt = await mailbox.statement_of(conn, routing.id, "accepted")
        if holder is None:
            raise errors.Conflict("a concurrent submission conflicted with this one; retry")
        return self._known_receipt(routing, holder, receipt)


def _pg_notify(tx: Tx, notices: list[Notice]) -> None:
    """relay.notify.Announcer.in_transaction inside a job: PostgreSQL delivers the
    NOTIFY to every process if, and when, the batch commits (the same payload, read
    by relay.notify.parse_notice)."""
    if not tx.postgres:
        return
    for notice in notices:
        payload = json.dumps({"m": notice.member, "c": notice.cursor, "e": notice.envelope_id})
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload)).fetchall()
