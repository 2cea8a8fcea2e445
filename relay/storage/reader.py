"""Fast reads: a plain function over raw statements, in one thread hop.

Reads through SQLAlchemy's async engine cost a thread hop (aiosqlite) per statement,
fetch and close: a transaction of three small queries took about 5 ms on a two-core
machine, while the same work on a raw connection takes microseconds. The hot paths
(forwarding, accepting a peer's push, routing a submission) read with
:meth:`relay.storage.database.Database.query` instead: the function runs whole on a
connection of its own, inside one read transaction.

SQLite: one ``sqlite3`` connection (read-only: ``query_only``), used from one thread;
in WAL mode it never blocks the writer, and it sees only committed work.
PostgreSQL: a pooled connection through ``run_sync``, as the group committer does.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from .committer import SqliteThread, Tx, pg_tx

T = TypeVar("T")


class SqliteReader(SqliteThread):
    """A read-only connection (``query_only``), used only from one thread."""

    def __init__(self, path: str, busy_ms: int) -> None:
        super().__init__(path, busy_ms, name="relay-reader", readonly=True)

    def _run(self, fn: Callable[[Tx], T]) -> T:
        tx = self._open()
        assert self.conn is not None
        conn = self.conn
        conn.execute("BEGIN")
        try:
            return fn(tx)
        finally:
            # Nothing to keep: a read transaction. A connection that cannot end it is
            # dropped (the next read opens a new one) rather than left inside it.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                self.close()

    async def run(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, fn)



async def pg_read(engine: AsyncEngine, fn: Callable[[Tx], T]) -> T:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: fn(pg_tx(sync)))
