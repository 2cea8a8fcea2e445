"""Peers, cards of remote signers, and the outbox of pushes to peers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Executable, Table, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .committer import Tx
from .schema import cards, envelopes, outbox, peers, statements


@dataclass(frozen=True)
class PeerRow:
    id: str
    name: str
    url: str
    card: bytes
    signing_key: bytes
    added_at: int


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    peer: str
    envelope_id: str
    #: None: the envelope itself; else a statement travelling back.
    statement_id: str | None
    attempts: int
    next_attempt_at: int
    last_error: str | None
    created_at: int


# --- peers ---------------------------------------------------------------------------

async def get_peer(conn: AsyncConnection, peer_id: str) -> PeerRow | None:
    row = (await conn.execute(select(peers).where(peers.c.id == peer_id))).first()
    return PeerRow(**row._mapping) if row is not None else None


#: The namespace of the per-envelope statements lock (PostgreSQL advisory locks are
#: shared by everything on the server; "bcst").
_PG_STATEMENTS_LOCK: Final = 0x6263_7374


def peer_row(tx: Tx, peer_id: str) -> PeerRow | None:
    """:func:`get_peer` for :meth:`relay.storage.database.Database.query`."""
    row = tx.one("SELECT id, name, url, card, signing_key, added_at FROM peers "
                 "WHERE id = ?", (peer_id,))
    return PeerRow(*row) if row is not None else None


def is_pinned(tx: Tx, peer_id: str) -> bool:
    """Inside a group-commit job: ``peer_id`` is a pinned peer."""
    return tx.one("SELECT 1 FROM peers WHERE id = ?", (peer_id,)) is not None


async def list_peers(conn: AsyncConnection) -> list[PeerRow]:
    rows = await conn.execute(select(peers).order_by(peers.c.added_at, peers.c.id))
    return [PeerRow(**row._mapping) for row in rows]


async def insert_peer(conn: AsyncConnection, *, id: str, name: str, url: str, card: bytes,
                      signing_key: bytes, added_at: int) -> None:
    await conn.execute(insert(peers).values(id=id, name=name, url=url, card=card,
                                            signing_key=signing_key, added_at=added_at))


async def update_peer(conn: AsyncConnection, *, id: str, name: str, url: str,
                      card: bytes) -> None:
    await conn.execute(update(peers).where(peers.c.id == id)
                       .values(name=name, url=url, card=card))


async def delete_peer(conn: AsyncConnection, peer_id: str) -> bool:
    result = await conn.execute(delete(peers).where(peers.c.id == peer_id))
    return result.rowcount == 1


# --- cards ---------------------------------------------------------------------------

def _insert_ignore(conn: AsyncConnection, table: Table) -> Executable:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def store_cards(conn: AsyncConnection, bodies: dict[str, bytes], now: int) -> None:
    """Remember cards (by identity id) not yet known; a known id keeps its card (the
    id is derived from the key, so both cards carry the same key)."""
    if not bodies:
        return
    await conn.execute(_insert_ignore(conn, cards),
                       [{"id": i, "card": b, "added_at": now} for i, b in bodies.items()])


def card_bodies(tx: Tx, ids: Iterable[str]) -> dict[str, bytes]:
    """Cards for ``ids`` among the members, the peers and the cards met through
    federation (the node's own card is the caller's to add)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, bytes] = {}
    for table in ("members", "peers", "cards"):
        missing = [i for i in wanted if i not in found]
        if not missing:
            break
        marks = ", ".join("?" * len(missing))  # only placeholders, one per id
        rows = tx.all(f"SELECT id, card FROM {table} WHERE id IN ({marks})",  # noqa: S608
                      missing)
        found.update({str(row[0]): bytes(row[1]) for row in rows})
    return found


async def remote_card(conn: AsyncConnection, identity_id: str) -> bytes | None:
    """A card met through federation (not a member's)."""
    return (await conn.execute(select(cards.c.card).where(cards.c.id == identity_id))).scalar()


# --- statements ----------------------------------------------------------------------

def statements_by_id(tx: Tx, ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
    """``id -> (signer, body)``."""
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))  # only placeholders, one per id
    rows = tx.all(f"SELECT id, signer, body FROM statements WHERE id IN ({marks})",  # noqa: S608
                  list(ids))
    return {str(row[0]): (str(row[1]), bytes(row[2])) for row in rows}


def statements_of_kinds(tx: Tx, envelope_id: str, kinds: Sequence[str]
                        ) -> list[tuple[str, bytes]]:
    """``(signer, body)`` of the envelope's statements of ``kinds``, in storage order."""
    marks = ", ".join("?" * len(kinds))  # only placeholders, one per kind
    rows = tx.all("SELECT signer, body FROM statements WHERE envelope_id = ? "  # noqa: S608
                  f"AND kind IN ({marks}) ORDER BY seq", (envelope_id, *kinds))
    return [(str(row[0]), bytes(row[1])) for row in rows]


async def signers_of(conn: AsyncConnection, envelope_id: str) -> list[str]:
    rows = await conn.execute(select(statements.c.signer).distinct()
                              .where(statements.c.envelope_id == envelope_id))
    return [row.signer for row in rows]


# --- outbox --------------------------------------------------------------------------

async def enqueue(conn: AsyncConnection, peer: str, envelope_id: str,
                  statement_ids: Sequence[str | None], now: int) -> None:
    if not statement_ids:
        return
    await conn.execute(insert(outbox), [
        {"peer": peer, "envelope_id": envelope_id, "statement_id": sid, "attempts": 0,
         "next_attempt_at": now, "last_error": None, "created_at": now}
        for sid in statement_ids])


def add_transit_envelope(tx: Tx, *, id: str, content_id: str, sender: str, routing: bytes,
                         sealed: bytes, received_at: int, expires_at: int,
                         back_to: str) -> None:
    """An envelope pushed by peer ``back_to``, inside a group-commit job."""
    tx.execute("INSERT INTO envelopes (id, content_id, sender, routing, sealed, size, "
               "received_at, expires_at, back_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (id, content_id, sender, routing, sealed, len(sealed), received_at,
                expires_at, back_to))


def stored_ids(tx: Tx, ids: Sequence[str], kind: str | None = None,
               envelope_id: str | None = None) -> set[str]:
    """Which of the statements ``ids`` (of ``kind``, about ``envelope_id``, if given)
    are stored here."""
    wanted: list[str] = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    marks = ", ".join("?" * len(wanted))  # only placeholders, one per id
    sql = f"SELECT id FROM statements WHERE id IN ({marks})"  # noqa: S608
    if kind is not None:
        sql += " AND kind = ?"
        wanted.append(kind)
    if envelope_id is not None:
        sql += " AND envelope_id = ?"
        wanted.append(envelope_id)
    return {str(row[0]) for row in tx.all(sql, wanted)}


def statement_rows(tx: Tx, envelope_id: str
                   ) -> list[tuple[str, str, str, str | None, bytes | None]]:
    """Id, kind, signer and recipient of every statement stored about an envelope (a
    few dozen at most: one per slot, relay.rules.slot_of), with the body of the
    *countersigned* ones only (the statement they name is in it)."""
    return [(str(r[0]), str(r[1]), str(r[2]), None if r[3] is None else str(r[3]),
             None if r[4] is None else bytes(r[4]))
            for r in tx.all("SELECT id, kind, signer, recipient, CASE WHEN kind = "
                            "'countersigned' THEN body END FROM statements "
                            "WHERE envelope_id = ?", (envelope_id,))]


def lock_statements(tx: Tx, envelope_id: str) -> None:
    """PostgreSQL: hold, until the commit, the lock on storing statements about
    ``envelope_id`` (SQLite has one writer already). Re-entrant within a batch."""
    key = f"statements:{envelope_id}"
    if not tx.postgres or key in tx.held:
        return
    # Two keys: this lock's namespace and the envelope (a hash collision only makes
    # two envelopes take turns).
    tx.execute("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))",
               (_PG_STATEMENTS_LOCK, envelope_id)).fetchall()
    tx.held.add(key)


def keep_cards(tx: Tx, bodies: dict[str, bytes], now: int) -> None:
    """:func:`store_cards` inside a job."""
    for ident, body in bodies.items():
        tx.execute("INSERT INTO cards (id, card, added_at) VALUES (?, ?, ?) "
                   "ON CONFLICT DO NOTHING", (ident, body, now))


def forget_forward(tx: Tx, peer: str, envelope_id: str) -> None:
    """After ``peer`` confirmed the envelope, inside a job: its forward row(s) go, and
    the ciphertext (:func:`drop_sealed`)."""
    tx.execute("DELETE FROM outbox WHERE peer = ? AND envelope_id = ? "
               "AND statement_id IS NULL", (peer, envelope_id))
    tx.execute("UPDATE envelopes SET sealed = NULL WHERE id = ?", (envelope_id,))


def arrived(tx: Tx, envelope_id: str) -> bool:
    """Whether a statement that only the destination or a recipient signs has come
    back: the envelope reached the end of its route."""
    return tx.one("SELECT 1 FROM statements WHERE envelope_id = ? AND kind IN "
                  "('delivered', 'opened', 'countersigned')", (envelope_id,)) is not None


def handed_on(tx: Tx, envelope_id: str, peer: str) -> bool:
    """Whether ``peer`` (our next hop) had taken the envelope before: it signed a
    statement about it, or the envelope arrived."""
    return arrived(tx, envelope_id) or tx.one(
        "SELECT 1 FROM statements WHERE envelope_id = ? AND signer = ?",
        (envelope_id, peer)) is not None


def forward_again(tx: Tx, peer: str, envelope_id: str, sealed: bytes, node_id: str,
                  now: int) -> bool:
    """When an envelope this node forwarded comes again (the sender resubmits it at the
    origin, or the previous hop pushes it again to an intermediary): push it to
    ``peer``, the next hop, once more, unless it is known to have arrived
    (:func:`arrived`), this node gave up on it (*failed*) or a push is still queued.
    The sealed bytes the first push dropped come back with the submission or push.
    Returns whether a push was queued.

    Why: a hop restored from a backup has forgotten the envelopes it took after the
    backup, and the node before it, having handed them on, keeps nothing to push; the
    sender's copy (client.resend) sends them on their way again, hop by hop. Until the
    destination or a recipient signs, nothing tells a finished journey from a broken
    one, so every resubmission before then travels the route again; a hop that still
    holds the envelope answers it as the retry it is, and pushes it on in turn."""
    # PostgreSQL: two processes must not both queue it (and, on a refusal, both sign).
    lock_statements(tx, envelope_id)
    if tx.one("SELECT 1 FROM outbox WHERE envelope_id = ? AND statement_id IS NULL",
              (envelope_id,)) is not None:
        return False
    if arrived(tx, envelope_id) or tx.one(
            "SELECT 1 FROM statements WHERE envelope_id = ? AND kind = 'failed' AND "
            "signer = ?", (envelope_id, node_id)) is not None:
        return False
    tx.execute("UPDATE envelopes SET sealed = ? WHERE id = ? AND sealed IS NULL",
               (sealed, envelope_id))
    push_later(tx, peer, envelope_id, [None], now)
    return True


def forget_rows(tx: Tx, seqs: Sequence[int]) -> None:
    """:func:`delete_rows` inside a job."""
    for seq in seqs:
        tx.execute("DELETE FROM outbox WHERE seq = ?", (seq,))


def push_later(tx: Tx, peer: str, envelope_id: str, statement_ids: Sequence[str | None],
               now: int) -> None:
    """:func:`enqueue` inside a group-commit job (relay.storage.committer)."""
    for sid in statement_ids:
        tx.execute("INSERT INTO outbox (peer, envelope_id, statement_id, attempts, "
                   "next_attempt_at, last_error, created_at) VALUES (?, ?, ?, 0, ?, NULL, ?)",
                   (peer, envelope_id, sid, now, now))


_OUTBOX = ("SELECT seq, peer, envelope_id, statement_id, attempts, next_attempt_at, "
           "last_error, created_at FROM outbox")


def due(tx: Tx, now: int, limit: int, *, skip_seqs: Sequence[int] = (),
        skip_peers: Sequence[str] = ()) -> list[OutboxRow]:
    """Rows due at ``now``, oldest first, except ``skip_seqs`` (being pushed) and the
    rows for ``skip_peers`` (as many pushes in flight as they may have)."""
    sql = _OUTBOX + " WHERE next_attempt_at <= ?"
    params: list[object] = [now]
    # Only placeholders are interpolated, one per value.
    if skip_seqs:
        sql += f" AND seq NOT IN ({', '.join('?' * len(skip_seqs))})"
        params += skip_seqs
    if skip_peers:
        sql += f" AND peer NOT IN ({', '.join('?' * len(skip_peers))})"
        params += skip_peers
    rows = tx.all(sql + " ORDER BY seq LIMIT ?", (*params, limit))
    return [OutboxRow(*row) for row in rows]


def pending_for(tx: Tx, peer: str, envelope_id: str) -> list[OutboxRow]:
    """Every statement row still to push to ``peer`` for the envelope, due or not: a
    push carries them all, in order, so that the far side never sees a later statement
    without an earlier one."""
    rows = tx.all(_OUTBOX + " WHERE peer = ? AND envelope_id = ? "
                  "AND statement_id IS NOT NULL ORDER BY seq", (peer, envelope_id))
    return [OutboxRow(*row) for row in rows]


def forward_rows(tx: Tx, peer: str, envelope_id: str) -> list[OutboxRow]:
    """The row(s) for pushing the envelope itself to ``peer``."""
    rows = tx.all(_OUTBOX + " WHERE peer = ? AND envelope_id = ? AND statement_id IS NULL "
                  "ORDER BY seq", (peer, envelope_id))
    return [OutboxRow(*row) for row in rows]


def next_due(tx: Tx, after: int) -> int | None:
    """When the next row falls due, of those due later than ``after``."""
    row = tx.one("SELECT min(next_attempt_at) FROM outbox WHERE next_attempt_at > ?",
                 (after,))
    return int(row[0]) if row is not None and row[0] is not None else None


async def delete_rows(conn: AsyncConnection, seqs: Sequence[int]) -> None:
    await conn.execute(delete(outbox).where(outbox.c.seq.in_(list(seqs))))


async def hold_rows(conn: AsyncConnection, seqs: Sequence[int], *, until: int) -> None:
    """Keep other processes' scans off rows one worker is pushing (not an attempt)."""
    await conn.execute(update(outbox).where(outbox.c.seq.in_(list(seqs)))
                       .values(next_attempt_at=until))


async def reschedule(conn: AsyncConnection, seqs: Sequence[int], *, next_attempt_at: int,
                     error: str) -> None:
    await conn.execute(update(outbox).where(outbox.c.seq.in_(list(seqs)))
                       .values(attempts=outbox.c.attempts + 1,
                               next_attempt_at=next_attempt_at, last_error=error[:64]))


async def outbox_rows(conn: AsyncConnection) -> list[OutboxRow]:
    rows = await conn.execute(select(outbox).order_by(outbox.c.seq))
    return [OutboxRow(**row._mapping) for row in rows]


@dataclass(frozen=True)
class PeerQueue:
    """What the outbox holds for one peer (pinned or not)."""

    peer: str
    envelopes: int
    #: Statements (receipts) travelling back towards the origin.
    receipts: int
    oldest: int
    next_attempt: int
    attempts: int
    #: The last failure of the row tried most often: a problem slug or an exception
    #: class (the column never holds more).
    last_error: str | None


async def queues(conn: AsyncConnection, peer: str | None = None) -> dict[str, PeerQueue]:
    """The outbox by peer (or for ``peer`` only), for the operator (``relay peers``)."""
    forward = func.sum(case((outbox.c.statement_id.is_(None), 1), else_=0))
    totals = select(outbox.c.peer, forward, func.count(), func.min(outbox.c.created_at),
                    func.min(outbox.c.next_attempt_at), func.max(outbox.c.attempts))
    if peer is not None:
        totals = totals.where(outbox.c.peer == peer)
    found = {}
    for name, envs, count, oldest, due, attempts in await conn.execute(
            totals.group_by(outbox.c.peer)):
        # The failure of the row tried most often, the latest of those: one row per
        # peer, and peers are few.
        last = (await conn.execute(
            select(outbox.c.last_error)
            .where(outbox.c.peer == name, outbox.c.last_error.is_not(None))
            .order_by(outbox.c.attempts.desc(), outbox.c.seq.desc()).limit(1))).scalar()
        found[name] = PeerQueue(name, int(envs), int(count) - int(envs), int(oldest),
                                int(due), int(attempts), last)
    return found


async def drop_sealed(conn: AsyncConnection, envelope_id: str) -> None:
    """Forget the ciphertext of an envelope this node has handed on (or given up on):
    a node in transit keeps metadata and receipts only."""
    await conn.execute(update(envelopes).where(envelopes.c.id == envelope_id)
                       .values(sealed=None))
