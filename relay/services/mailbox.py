"""Inbox, fetch, acknowledgement, receipts, and member cards, for members.

Visibility rule, used everywhere: an envelope is visible to its sender and its
recipients only. Anyone else gets 404 ``not-found``, the same answer as for an
envelope that does not exist, so nobody learns about traffic they are not part of.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from keys import dsse
from keys.clock import SYSTEM_CLOCK, Clock
from keys.errors import DecodeError, VerificationError
from keys.identity import Identity
from keys.ids import is_digest_id, is_identity_id
from keys.statements import MAX_STATEMENT_BYTES, Statement, make_statement, verify_statement
from keys.statements import parse_statement as parse_statement_payload

from .. import errors
from ..rules import check_opened
from ..storage import federation, mailbox, members
from ..storage.database import Database
from ..storage.mailbox import Delivery, EnvelopeMeta, InboxItem
from .auth import Caller


@dataclass(frozen=True)
class Fetched:
    routing: bytes
    sealed: bytes
    first_delivery: bool


def parse_statement(value: object) -> Statement:
    try:
        return parse_statement_payload(dsse.Envelope.from_dict(value,
                                                               max_payload=MAX_STATEMENT_BYTES))
    except DecodeError as exc:
        raise errors.BadRequest(f"malformed statement: {exc}") from None


class Mailbox:
    def __init__(self, db: Database, node: Identity, *, page_max: int,
                 clock: Clock = SYSTEM_CLOCK, wake: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.node = node
        self.page_max = page_max
        self.clock = clock
        #: Called after a commit that queued statements for the previous hop.
        self.wake = wake

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    async def _visible(self, conn: AsyncConnection, caller: Caller, envelope_id: str
                       ) -> tuple[EnvelopeMeta, Delivery | None]:
        meta = await mailbox.get_envelope(conn, envelope_id) if is_digest_id(envelope_id) \
            else None
        if meta is None:
            raise errors.NotFound("no such envelope")
        delivery = await mailbox.get_delivery(conn, envelope_id, caller.id)
        if delivery is None and meta.sender != caller.id:
            raise errors.NotFound("no such envelope")
        return meta, delivery

    async def inbox(self, caller: Caller, *, after: int, limit: int) -> tuple[list[InboxItem],
                                                                                int]:
        if after < 0:
            raise errors.BadRequest("after must be a non-negative integer")
        if not 1 <= limit <= self.page_max:
            raise errors.BadRequest(f"limit must be between 1 and {self.page_max}")
        async with self.db.read() as conn:
            items = await mailbox.inbox(conn, caller.id, after=after, limit=limit,
                                        now=self._now())
        return items, (items[-1].cursor if items else after)

    async def fetch(self, caller: Caller, envelope_id: str) -> Fetched:
        """The envelope and its sealed bytes. A recipient's first fetch makes the node
        sign a *delivered* statement for that recipient."""
        now = self._now()
        async with self.db.read() as conn:
            meta, delivery = await self._visible(conn, caller, envelope_id)
            sealed = await mailbox.get_sealed(conn, envelope_id)
        if sealed is None or meta.expires_at <= now:
            raise errors.Gone("this envelope has expired or been purged")
        first = False
        if delivery is not None and delivery.delivered_at is None:
            first = await self._deliver(caller.id, envelope_id, meta.back_to)
            if first and meta.back_to is not None:
                self.wake()
        return Fetched(meta.routing, sealed, first)

    async def _deliver(self, recipient: str, envelope_id: str, back_to: str | None,
                       conn: AsyncConnection | None = None) -> bool:
        statement = make_statement("delivered", envelope_id, self.node.signing_key,
                                   clock=self.clock, recipient=recipient)
        if conn is None:
            async with self.db.write() as own:
                return await self._record_delivery(own, recipient, envelope_id, statement,
                                                   back_to)
        return await self._record_delivery(conn, recipient, envelope_id, statement, back_to)

    async def _record_delivery(self, conn: AsyncConnection, recipient: str, envelope_id: str,
                               statement: Statement, back_to: str | None) -> bool:
        at = int(statement.at.timestamp())
        if not await mailbox.mark_delivered(conn, envelope_id, recipient, at):
            return False  # a concurrent fetch signed it first
        await mailbox.insert_statement(conn, id=statement.id, envelope_id=envelope_id,
                                       kind="delivered", signer=self.node.id,
                                       recipient=recipient, at=at, body=statement.to_json())
        if back_to is not None:
            # The envelope came through peers: the receipt goes back along its route.
            await federation.enqueue(conn, back_to, envelope_id, [statement.id], at)
        return True

    async def ack(self, caller: Caller, envelope_id: str, opened: object | None) -> bool:
        """Acknowledge (idempotent); store a valid *opened* statement, if given, unless
        one from this recipient is already stored. Returns True on the first ack."""
        statement = None
        if opened is not None:
            statement = parse_statement(opened)
            check_opened(statement, envelope_id=envelope_id, caller=caller.id)
            try:
                verify_statement(statement, caller.key)
            except VerificationError:
                raise errors.StatementInvalid("the opened statement's signature does not "
                                              "verify") from None
        now = self._now()
        queued = False
        async with self.db.write() as conn:
            meta, delivery = await self._visible(conn, caller, envelope_id)
            if delivery is None:
                raise errors.NotFound("no such envelope in this inbox")
            if delivery.delivered_at is None:
                queued = await self._deliver(caller.id, envelope_id, meta.back_to, conn)
            first = await mailbox.mark_acked(conn, envelope_id, caller.id, now)
            if statement is not None and await mailbox.statement_of(
                    conn, envelope_id, "opened", caller.id) is None:
                await mailbox.insert_statement(
                    conn, id=statement.id, envelope_id=envelope_id, kind="opened",
                    signer=caller.id, recipient=caller.id, at=int(statement.at.timestamp()),
                    body=statement.to_json())
                if meta.back_to is not None:
                    await federation.enqueue(conn, meta.back_to, envelope_id, [statement.id],
                                             now)
                    queued = True
        if queued and meta.back_to is not None:
            self.wake()
        return first

    async def receipts(self, caller: Caller, envelope_id: str) -> tuple[list[bytes],
                                                                        list[bytes]]:
        """Every statement about the envelope, and the card of each signer this node
        knows (nodes further along a route included), so that the caller can verify
        statements from nodes it has never met."""
        async with self.db.read() as conn:
            await self._visible(conn, caller, envelope_id)
            bodies = await mailbox.statements_for(conn, envelope_id)
            signers = await federation.signers_of(conn, envelope_id)
        cards = await self.db.query(lambda tx: federation.card_bodies(
            tx, [s for s in signers if s != self.node.id]))
        if self.node.id in signers:
            cards[self.node.id] = self.node.card.to_json()
        return bodies, [cards[s] for s in sorted(cards)]

    async def member_card(self, caller: Caller, member_id: str) -> bytes:
        """A member's card, for members; or the card of a sender on another node, for
        the recipients of that sender's envelopes (it came with them). Unknown and
        revoked give the same 404."""
        async with self.db.read() as conn:
            known = is_identity_id(member_id)
            row = await members.get_member(conn, member_id) if known else None
            if row is None and known \
                    and await mailbox.sent_to(conn, sender=member_id, recipient=caller.id):
                remote = await federation.remote_card(conn, member_id)
                if remote is not None:
                    return remote
        if row is None or not row.active:
            raise errors.NotFound("no such member")
        return row.card
