"""Engine creation, per-connection settings, transactions and migrations.

Two transaction kinds, so that SQLite never dead-locks two writers:

* :meth:`Database.read`: a plain (deferred) transaction; in WAL mode readers never
  block the writer.
* :meth:`Database.write`: on SQLite ``BEGIN IMMEDIATE`` (take the write lock first,
  waiting up to ``busy_timeout``, instead of failing when a read transaction tries
  to upgrade), after the process's write lock (shared with the group committer, so
  the node's own writers queue instead of sleeping in SQLite's busy handler); on
  PostgreSQL an ordinary READ COMMITTED transaction.

The commit happens when the ``async with`` block exits without an exception; a
caller acknowledges a submission only after that.

The hot path (submissions, nonces) does not open a transaction per request: it hands
a job to :meth:`Database.run`, the group committer (relay.storage.committer), which
commits the jobs of many requests together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import ConfigError, NodeError
from .committer import Committer, Tx, sqlite_pragmas
from .reader import SqliteReader, pg_read

T = TypeVar("T")

SQLITE_FILE: Final = "relay.db"
MIGRATIONS: Final = Path(__file__).resolve().parent.parent / "migrations"
#: An arbitrary constant naming the relay's PostgreSQL advisory locks.
_PG_MIGRATION_LOCK: Final = 0x6263_7265_6C61_7901
#: Seconds a SQLite writer waits for another one (e.g. `relay invite` while serving).
_SQLITE_BUSY_MS: Final = 30_000


class StorageError(NodeError):
    """The database could not be reached or used."""


def parse_url(url: str) -> URL:
    """``make_url`` with its failures (ArgumentError, or ValueError for a port that
    is not a number) as :class:`ConfigError`; the URL is not repeated (it may hold a
    password)."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError("the database URL is malformed") from None


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (as written: relative to the working directory if
    relative); None for PostgreSQL. Raises :class:`ConfigError` for a SQLite URL that
    names no file by its path: an in-memory database or a URI filename
    (``file:...?uri=true``). The group committer and the reader open
    ``url.database`` with their own ``sqlite3`` connections, without the URL's query:
    they would lose a URI's parameters (``mode=memory``: another database), and
    whether a bare ``file:`` name is read as a URI depends on how SQLite was built."""
    parsed = parse_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    name = parsed.database
    if (not name or name == ":memory:" or name.startswith("file:")
            or "uri" in parsed.query):
        raise ConfigError("a SQLite database URL must name the database file by its path "
                          "(sqlite+aiosqlite:///path/to/relay.db), not in memory or as a "
                          "file: URI")
    return Path(name)


def sqlite_files(db: Path) -> tuple[Path, Path, Path]:
    """A SQLite database file and the two SQLite keeps beside it in WAL mode."""
    return db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")


def sqlite_url(node_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(node_dir / SQLITE_FILE).resolve()}"


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (see _sqlite_begin); pysqlite's own implicit
    # transactions would defeat BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    sqlite_pragmas(dbapi_connection, _SQLITE_BUSY_MS)


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An async engine plus the two kinds of transaction the services use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        #: Serialises this process's SQLite writers (see the module docstring).
        self._write_lock = asyncio.Lock()
        if self.dialect == "sqlite":
            path = engine.url.database
            assert path, "Database.open checked the SQLite file (sqlite_file)"
            self.committer = Committer(sqlite_path=path, busy_ms=_SQLITE_BUSY_MS,
                                       lock=self._write_lock)
            self._reader: SqliteReader | None = SqliteReader(path, _SQLITE_BUSY_MS)
        else:
            self.committer = Committer(engine=engine)
            self._reader = None

    @classmethod
    def open(cls, url: str) -> Database:
        """Create the engine (no I/O yet). Raises :class:`ConfigError`."""
        parsed = parse_url(url)
        if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ConfigError("database URLs must use sqlite+aiosqlite or postgresql+asyncpg")
        if parsed.drivername == "sqlite+aiosqlite":
            sqlite_file(url)  # refuses what the committer would open elsewhere
            engine = create_async_engine(url)
            event.listen(engine.sync_engine, "connect", _sqlite_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        else:
            engine = create_async_engine(url, pool_size=10, max_overflow=10,
                                         pool_pre_ping=True)
        return cls(engine)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self.dialect == "sqlite":
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(sqlite_begin="IMMEDIATE")
                async with conn.begin():
                    yield conn
        else:
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    async def query(self, read: Callable[[Tx], T]) -> T:
        """Run ``read`` (raw statements, no writes) in one read transaction and one
        thread hop: see relay.storage.reader. For the hot paths."""
        if self._reader is not None:
            return await self._reader.run(read)
        return await pg_read(self.engine, read)

    async def run(self, job: Callable[[Tx], T], *, savepoint: bool = True) -> T:
        """Run ``job`` in the next group commit; returns (or raises) what it did, once
        its work is committed. A job that raises has none of its work stored (unless
        ``savepoint=False``: see relay.storage.committer.Committer.submit)."""
        return await self.committer.run(job, savepoint=savepoint)

    async def migrate(self) -> None:
        """Apply every pending Alembic migration. Safe to run from several processes
        at once on PostgreSQL (an advisory lock serialises them)."""
        try:
            async with self.write() as conn:
                if self.is_postgres:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                       {"k": _PG_MIGRATION_LOCK})
                await conn.run_sync(_upgrade)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"cannot migrate the database: {_describe(exc)}") from None

    async def current_revision(self) -> str | None:
        async with self.read() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision())

    async def dispose(self) -> None:
        try:
            await self.committer.close()
        finally:
            try:
                if self._reader is not None:
                    await self._reader.shutdown()
            finally:
                await self.engine.dispose()


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _describe(exc: BaseException) -> str:
    # Driver messages can contain the URL (and so a password); keep only the class
    # and the first line of the original error.
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    first = str(orig).splitlines()[0] if str(orig) else ""
    return f"{type(orig).__name__}: {first[:200]}"
