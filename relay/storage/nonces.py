"""Nonces of signed requests, remembered for the signature window (replay protection
that holds across restarts and across processes sharing one database)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .committer import Tx
from .schema import nonces


async def remember(conn: AsyncConnection, keyid: str, nonce: str, expires_at: int) -> bool:
    """Record ``(keyid, nonce)``; False if it was already recorded (a replay)."""
    values = {"keyid": keyid, "nonce": nonce, "expires_at": expires_at}
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            postgresql.insert(nonces).values(values).on_conflict_do_nothing())
    else:
        result = await conn.execute(
            sqlite.insert(nonces).values(values).on_conflict_do_nothing())
    return result.rowcount == 1


def record(tx: Tx, keyid: str, nonce: str, expires_at: int) -> bool:
    """:func:`remember` inside a group-commit job."""
    return bool(tx.execute(
        "INSERT INTO nonces (keyid, nonce, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING", (keyid, nonce, expires_at)).rowcount == 1)


def record_if_active(tx: Tx, keyid: str, nonce: str, expires_at: int) -> bool:
    """:func:`record`, only if ``keyid`` is an active member: one statement for the
    usual case; False for a replay *or* a member no longer active."""
    return bool(tx.execute(
        "INSERT INTO nonces (keyid, nonce, expires_at) SELECT ?, ?, ? WHERE EXISTS "
        "(SELECT 1 FROM members WHERE id = ? AND status = 'active') "
        "ON CONFLICT DO NOTHING", (keyid, nonce, expires_at, keyid)).rowcount == 1)


def record_if_peer(tx: Tx, keyid: str, nonce: str, expires_at: int) -> bool:
    """:func:`record`, only if ``keyid`` is a pinned peer node: False for a replay
    *or* a peer no longer pinned."""
    return bool(tx.execute(
        "INSERT INTO nonces (keyid, nonce, expires_at) SELECT ?, ?, ? WHERE EXISTS "
        "(SELECT 1 FROM peers WHERE id = ?) "
        "ON CONFLICT DO NOTHING", (keyid, nonce, expires_at, keyid)).rowcount == 1)


async def purge(conn: AsyncConnection, now: int) -> int:
    result = await conn.execute(delete(nonces).where(nonces.c.expires_at < now))
    return result.rowcount
