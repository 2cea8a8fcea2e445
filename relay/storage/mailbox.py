"""Envelopes, their per-recipient deliveries (the inbox) and their statements.

Inbox cursors are the ``deliveries.cursor`` column. A client pages with
``cursor > after``, so a cursor must never become visible *after* a larger one:
on PostgreSQL two transactions could take sequence values 10 and 11 and commit
11 first. :func:`lock_cursor` serialises the inserting transactions (an advisory
lock held until commit), so cursors become visible in increasing order. SQLite has
a single writer, which gives the same guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import and_, delete, exists, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .committer import Tx
from .schema import deliveries, envelopes, outbox, statements

_PG_CURSOR_LOCK = 0x6263_7265_6C61_7902


@dataclass(frozen=True)
class EnvelopeMeta:
    id: str
    content_id: str
    sender: str
    routing: bytes
    size: int
    received_at: int
    expires_at: int
    purged: bool
    #: The peer it came from (statements about it go back there); None at the origin.
    back_to: str | None


@dataclass(frozen=True)
class Delivery:
    cursor: int
    envelope_id: str
    recipient: str
    delivered_at: int | None
    acked_at: int | None


@dataclass(frozen=True)
class InboxItem:
    cursor: int
    envelope_id: str
    routing: bytes
    size: int
    received_at: int


_META = (envelopes.c.id, envelopes.c.content_id, envelopes.c.sender, envelopes.c.routing,
         envelopes.c.size, envelopes.c.received_at, envelopes.c.expires_at,
         envelopes.c.sealed.is_(None).label("purged"), envelopes.c.back_to)


async def get_envelope(conn: AsyncConnection, envelope_id: str) -> EnvelopeMeta | None:
    row = (await conn.execute(select(*_META).where(envelopes.c.id == envelope_id))).first()
    return EnvelopeMeta(**row._mapping) if row is not None else None


def envelope_meta(tx: Tx, envelope_id: str) -> EnvelopeMeta | None:
    """:func:`get_envelope` for :meth:`relay.storage.database.Database.query`."""
    row = tx.one("SELECT id, content_id, sender, routing, size, received_at, expires_at, "
                 "sealed IS NULL, back_to FROM envelopes WHERE id = ?", (envelope_id,))
    if row is None:
        return None
    return EnvelopeMeta(row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6],
                        bool(row[7]), row[8])


def sealed_of(tx: Tx, envelope_id: str) -> bytes | None:
    """:func:`get_sealed` for :meth:`relay.storage.database.Database.query`."""
    row = tx.one("SELECT sealed FROM envelopes WHERE id = ?", (envelope_id,))
    return bytes(row[0]) if row is not None and row[0] is not None else None


async def envelope_by_content(conn: AsyncConnection, content_id: str) -> str | None:
    return (await conn.execute(select(envelopes.c.id)
                               .where(envelopes.c.content_id == content_id))).scalar()


async def get_sealed(conn: AsyncConnection, envelope_id: str) -> bytes | None:
    return (await conn.execute(select(envelopes.c.sealed)
                               .where(envelopes.c.id == envelope_id))).scalar()


async def insert_envelope(conn: AsyncConnection, *, id: str, content_id: str, sender: str,
                          routing: bytes, sealed: bytes, received_at: int,
                          expires_at: int, back_to: str | None = None) -> None:
    await conn.execute(insert(envelopes).values(
        id=id, content_id=content_id, sender=sender, routing=routing, sealed=sealed,
        size=len(sealed), received_at=received_at, expires_at=expires_at, back_to=back_to))


#: How far the inbox cursor leaps each time the node starts. A database restored from
#: a backup would otherwise hand out again cursors its members already hold (and
#: clients skip a cursor at or below their own). Fewer deliveries than this between a
#: backup and its restore is enough; 2**53 / 2**32 leaps stay exact in any JSON client.
CURSOR_LEAP: Final = 1 << 32


async def leap_cursors(conn: AsyncConnection, leap: int = CURSOR_LEAP) -> None:
    """Move the inbox-cursor sequence ``leap`` past where it stands (at start)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(
            "SELECT setval(s, nextval(s) + :leap) "
            "FROM pg_get_serial_sequence('deliveries', 'cursor') AS s"), {"leap": leap})
        return
    # SQLite's AUTOINCREMENT takes the larger of this row and the largest cursor; the
    # row exists from the first delivery on.
    moved = await conn.execute(text(
        "UPDATE sqlite_sequence SET seq = seq + :leap WHERE name = 'deliveries'"),
        {"leap": leap})
    if moved.rowcount == 0:
        await conn.execute(text(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'deliveries', "
            "coalesce(max(cursor), 0) + :leap FROM deliveries"), {"leap": leap})


async def lock_cursor(conn: AsyncConnection) -> None:
    """Serialise delivery inserts until commit (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CURSOR_LOCK})


async def insert_deliveries(conn: AsyncConnection, envelope_id: str,
                            recipients: Sequence[str]) -> list[tuple[str, int]]:
    """One inbox row per recipient; returns ``(recipient, cursor)`` in input order."""
    await lock_cursor(conn)
    rows = await conn.execute(
        insert(deliveries).returning(deliveries.c.recipient, deliveries.c.cursor,
                                     sort_by_parameter_order=True),
        [{"envelope_id": envelope_id, "recipient": r} for r in recipients])
    return [(row.recipient, row.cursor) for row in rows]


async def recipients_of(conn: AsyncConnection, envelope_id: str) -> list[Delivery]:
    rows = await conn.execute(select(deliveries).where(deliveries.c.envelope_id == envelope_id)
                              .order_by(deliveries.c.cursor))
    return [Delivery(**row._mapping) for row in rows]


async def sent_to(conn: AsyncConnection, *, sender: str, recipient: str) -> bool:
    """Has ``sender`` an envelope delivered to ``recipient`` here?"""
    query = (select(deliveries.c.cursor)
             .join(envelopes, envelopes.c.id == deliveries.c.envelope_id)
             .where(deliveries.c.recipient == recipient, envelopes.c.sender == sender)
             .limit(1))
    return (await conn.execute(query)).first() is not None


async def get_delivery(conn: AsyncConnection, envelope_id: str,
                       recipient: str) -> Delivery | None:
    row = (await conn.execute(select(deliveries).where(
        deliveries.c.envelope_id == envelope_id, deliveries.c.recipient == recipient))).first()
    return Delivery(**row._mapping) if row is not None else None


async def mark_delivered(conn: AsyncConnection, envelope_id: str, recipient: str,
                         now: int) -> bool:
    """True for the first delivery only (concurrent fetches race on this update)."""
    result = await conn.execute(update(deliveries).where(
        deliveries.c.envelope_id == envelope_id, deliveries.c.recipient == recipient,
        deliveries.c.delivered_at.is_(None)).values(delivered_at=now))
    return result.rowcount == 1


async def mark_acked(conn: AsyncConnection, envelope_id: str, recipient: str,
                     now: int) -> bool:
    result = await conn.execute(update(deliveries).where(
        deliveries.c.envelope_id == envelope_id, deliveries.c.recipient == recipient,
        deliveries.c.acked_at.is_(None)).values(acked_at=now))
    return result.rowcount == 1


async def inbox(conn: AsyncConnection, recipient: str, *, after: int, limit: int,
                now: int) -> list[InboxItem]:
    """Unacknowledged, unexpired deliveries to ``recipient`` after ``after``."""
    rows = await conn.execute(
        select(deliveries.c.cursor, deliveries.c.envelope_id, envelopes.c.routing,
               envelopes.c.size, envelopes.c.received_at)
        .join(envelopes, envelopes.c.id == deliveries.c.envelope_id)
        .where(deliveries.c.recipient == recipient, deliveries.c.cursor > after,
               deliveries.c.acked_at.is_(None), envelopes.c.expires_at > now,
               envelopes.c.sealed.is_not(None))
        .order_by(deliveries.c.cursor).limit(limit))
    return [InboxItem(**row._mapping) for row in rows]


async def insert_statement(conn: AsyncConnection, *, id: str, envelope_id: str, kind: str,
                           signer: str, recipient: str | None, at: int, body: bytes) -> None:
    await conn.execute(insert(statements).values(
        id=id, envelope_id=envelope_id, kind=kind, signer=signer, recipient=recipient,
        at=at, body=body))


async def statement_of(conn: AsyncConnection, envelope_id: str, kind: str,
                       recipient: str | None = None) -> bytes | None:
    query = select(statements.c.body).where(statements.c.envelope_id == envelope_id,
                                            statements.c.kind == kind)
    if recipient is not None:
        query = query.where(statements.c.recipient == recipient)
    return (await conn.execute(query.order_by(statements.c.seq).limit(1))).scalar()


async def statements_for(conn: AsyncConnection, envelope_id: str) -> list[bytes]:
    rows = await conn.execute(select(statements.c.body)
                              .where(statements.c.envelope_id == envelope_id)
                              .order_by(statements.c.at, statements.c.seq))
    return [row.body for row in rows]


async def purge_sealed(conn: AsyncConnection, *, now: int, acked_before: int) -> int:
    """Drop the sealed bytes of envelopes that expired, or that every recipient
    acknowledged before ``acked_before``. The row stays (receipts, de-duplication)."""
    unacked = exists().where(deliveries.c.envelope_id == envelopes.c.id,
                             deliveries.c.acked_at.is_(None))
    last_ack = (select(func.max(deliveries.c.acked_at))
                .where(deliveries.c.envelope_id == envelopes.c.id).scalar_subquery())
    result = await conn.execute(
        update(envelopes)
        .where(envelopes.c.sealed.is_not(None),
               (envelopes.c.expires_at <= now) | and_(~unacked, last_ack < acked_before))
        .values(sealed=None))
    return result.rowcount


async def purge_envelopes(conn: AsyncConnection, *, expired_before: int) -> int:
    """Delete envelopes (with their deliveries and statements) that expired before
    ``expired_before``. A resubmission of one is refused as expired, so this keeps
    de-duplication permanent."""
    doomed = select(envelopes.c.id).where(envelopes.c.expires_at < expired_before)
    await conn.execute(delete(outbox).where(outbox.c.envelope_id.in_(doomed)))
    await conn.execute(delete(statements).where(statements.c.envelope_id.in_(doomed)))
    await conn.execute(delete(deliveries).where(deliveries.c.envelope_id.in_(doomed)))
    result = await conn.execute(delete(envelopes).where(envelopes.c.expires_at < expired_before))
    return result.rowcount


# --- inside group-commit jobs (relay.storage.committer): the submission hot path -----

def content_holder(tx: Tx, content_id: str) -> str | None:
    """:func:`envelope_by_content` inside a job."""
    row = tx.one("SELECT id FROM envelopes WHERE content_id = ?", (content_id,))
    return None if row is None else str(row[0])


def first_statement(tx: Tx, envelope_id: str, kind: str) -> bytes | None:
    """:func:`statement_of` (any recipient) inside a job."""
    row = tx.one("SELECT body FROM statements WHERE envelope_id = ? AND kind = ? "
                 "ORDER BY seq LIMIT 1", (envelope_id, kind))
    return None if row is None else bytes(row[0])


def add_envelope(tx: Tx, *, id: str, content_id: str, sender: str, routing: bytes,
                 sealed: bytes, received_at: int, expires_at: int) -> None:
    tx.execute("INSERT INTO envelopes (id, content_id, sender, routing, sealed, size, "
               "received_at, expires_at, back_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
               (id, content_id, sender, routing, sealed, len(sealed), received_at, expires_at))


def add_statement(tx: Tx, *, id: str, envelope_id: str, kind: str, signer: str,
                  recipient: str | None, at: int, body: bytes) -> None:
    tx.execute("INSERT INTO statements (id, envelope_id, kind, signer, recipient, at, body) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (id, envelope_id, kind, signer, recipient, at, body))


def add_deliveries(tx: Tx, envelope_id: str, recipients: Sequence[str]
                   ) -> list[tuple[str, int]]:
    """:func:`insert_deliveries` inside a job (same cursor-order guarantee: the
    advisory lock on PostgreSQL, the single writer on SQLite)."""
    if tx.postgres and "cursor" not in tx.held:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_CURSOR_LOCK,)).fetchall()
        tx.held.add("cursor")
    out = []
    for recipient in recipients:
        row = tx.one("INSERT INTO deliveries (envelope_id, recipient) VALUES (?, ?) "
                     "RETURNING cursor", (envelope_id, recipient))
        out.append((recipient, int(row[0])))
    return out
