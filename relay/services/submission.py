"""Accepting envelopes from members.

1. Parse the routing envelope and decode the sealed bytes (size-limited).
2. Check the sender's signature and that the sealed bytes are the named content.
3. Check the sealed structure and the node's rules (relay.rules); an envelope for
   another node must name a first hop this node peers with.
4. In one transaction: the same envelope already stored → its receipt (idempotent);
   its content under another envelope id → conflict; for this node's own members:
   recipients must be active members, then store the envelope, one delivery per
   recipient and the node's *accepted* statement; for another node: store the
   envelope, the *accepted* and *relayed* statements, and queue the push to the
   first hop (relay.services.forwarder).
5. Only after the commit is the receipt returned and the recipients (or the
   forwarder) woken.

Every rejection happens before or inside the transaction, so nothing is ever
half-stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

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
from ..notify import Announcer, Notice
from ..rules import check_submission
from ..storage import federation, mailbox, members
from ..storage.database import Database
from .auth import Caller


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
                 clock: Clock = SYSTEM_CLOCK, wake: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.node = node
        self.announcer = announcer
        self.max_sealed = max_sealed
        self.clock = clock
        self.wake = wake

    async def submit(self, caller: Caller, envelope: object, sealed_b64: object) -> Accepted:
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
        relayed = None
        if routing.destination != self.node.id:
            relayed = await self._relayed(routing, caller.id)
        # Step 4.
        receipt = make_statement("accepted", routing.id, self.node.signing_key,
                                 clock=self.clock, sender=caller.id)
        body = receipt.to_json()
        try:
            stored, notices = await self._store(routing, sealed, receipt.id, body, relayed,
                                                int(now.timestamp()))
        except IntegrityError:
            # A concurrent submission of the same envelope (or content) won the race.
            stored, notices = await self._existing(routing), []
        # Step 5.
        self.announcer.after_commit(notices)
        if relayed is not None and stored.created:
            self.wake()
        return stored

    async def _relayed(self, routing: Routing, sender: str) -> Statement:
        """The origin's *relayed* statement (from the sender to the first hop), once
        it is known that this node can reach that hop."""
        first = routing.hops[1]
        async with self.db.read() as conn:
            peer = await federation.get_peer(conn, first)
        if peer is None:
            raise errors.Unroutable(f"this node does not peer with the first hop of the "
                                    f"envelope's route ({first})")
        return make_statement("relayed", routing.id, self.node.signing_key, clock=self.clock,
                              previous=sender, next=first)

    async def _store(self, routing: Routing, sealed: bytes, receipt_id: str, receipt: bytes,
                     relayed: Statement | None, now: int) -> tuple[Accepted, list[Notice]]:
        notices: list[Notice] = []
        async with self.db.write() as conn:
            known = await self._known(conn, routing)
            if known is not None:
                return known, []
            if relayed is None:
                active = await members.active_among(conn, routing.to)
                if active != set(routing.to):
                    raise errors.NotFound("a recipient is not a member of this node")
            await mailbox.insert_envelope(
                conn, id=routing.id, content_id=routing.content, sender=routing.sender,
                routing=routing.envelope.to_json(), sealed=sealed, received_at=now,
                expires_at=int(routing.expires.timestamp()))
            await mailbox.insert_statement(
                conn, id=receipt_id, envelope_id=routing.id, kind="accepted",
                signer=self.node.id, recipient=None, at=now, body=receipt)
            if relayed is None:
                cursors = await mailbox.insert_deliveries(conn, routing.id, routing.to)
                notices = [Notice(member, cursor, routing.id) for member, cursor in cursors]
                await self.announcer.in_transaction(conn, notices)
            else:
                await mailbox.insert_statement(
                    conn, id=relayed.id, envelope_id=routing.id, kind="relayed",
                    signer=self.node.id, recipient=None, at=int(relayed.at.timestamp()),
                    body=relayed.to_json())
                await federation.enqueue(conn, relayed.fields["next"], routing.id, [None], now)
        return Accepted(routing.id, receipt, True, len(sealed)), notices

    async def _known(self, conn: AsyncConnection, routing: Routing) -> Accepted | None:
        # One lookup by content id answers both questions: the envelope id covers the
        # content id, so the same envelope always holds the same content. (Two separate
        # lookups could straddle a concurrent commit under READ COMMITTED.)
        holder = await mailbox.envelope_by_content(conn, routing.content)
        if holder is None:
            return None
        if holder != routing.id:
            raise errors.Conflict("this content was already submitted under another envelope")
        receipt = await mailbox.statement_of(conn, routing.id, "accepted")
        if receipt is None:  # pragma: no cover - committed in the same transaction
            raise errors.Conflict("this envelope is being stored; retry")
        return Accepted(routing.id, receipt, False, routing.size)

    async def _existing(self, routing: Routing) -> Accepted:
        async with self.db.read() as conn:
            known = await self._known(conn, routing)
        if known is None:
            raise errors.Conflict("a concurrent submission conflicted with this one; retry")
        return known
