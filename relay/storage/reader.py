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
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .committer import Tx, sqlite_pragmas

T = TypeVar("T")


class SqliteReader:
    """One read-only connection, used only from one thread."""

    def __init__(self, path: str, busy_ms: int) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="relay-reader")
        self.conn: sqlite3.Connection | None = None
        self.tx: Tx | None = None

    def _open(self) -> tuple[sqlite3.Connection, Tx]:
        if self.conn is None or self.tx is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            sqlite_pragmas(conn, self.busy_ms)
            conn.execute("PRAGMA query_only=ON")
            self.conn = conn
            self.tx = Tx(conn, postgres=False, integrity=sqlite3.IntegrityError)
        return self.conn, self.tx

    def _run(self, fn: Callable[[Tx], T]) -> T:
        conn, tx = self._open()
        conn.execute("BEGIN")
        try:
            return fn(tx)
        finally:
            conn.execute("ROLLBACK")  # nothing to keep: a read transaction

    async def run(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, fn)

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.tx = None

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the pool may be shut down already
            await asyncio.get_running_loop().run_in_executor(self.pool, self._close)
        self.pool.shutdown(wait=True)


async def pg_read(engine: AsyncEngine, fn: Callable[[Tx], T]) -> T:
    def run(sync: Connection) -> T:
        raw = sync.connection.dbapi_connection
        return fn(Tx(raw, postgres=True, integrity=sync.dialect.loaded_dbapi.IntegrityError))

    async with engine.connect() as conn:
        return await conn.run_sync(run)
