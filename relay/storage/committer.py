"""Group commit: one writer runs the queued *jobs* of many requests in one transaction.

A job is a plain function over a :class:`Tx` (raw DBAPI statements, ``?``
placeholders on both backends). :meth:`Committer.run` queues a job and resolves
once the transaction that holds its work has committed, never before:

1. The writer takes everything queued (at most :data:`MAX_BATCH` jobs), begins one
   transaction (``BEGIN IMMEDIATE`` on SQLite) and runs each job inside its own
   ``SAVEPOINT``: a job that raises (a conflict, a replay, a refused recipient) rolls
   back its own work only, and its caller gets the exception.
2. One ``COMMIT`` (one fsync with ``synchronous=FULL``) for the whole batch. If the
   commit fails, every job of the batch fails: none of them was acknowledged.
3. Only then are the callers' futures resolved, in one wake-up of the event loop.

SQLite: the writer is one sync ``sqlite3`` connection (same pragmas as the engine's)
used from a dedicated thread, so fsync never blocks the event loop. Every other
in-process writer (:meth:`relay.storage.database.Database.write`) takes the same
asyncio lock as a batch, so the node's writers queue in FIFO order instead of
sleeping in SQLite's busy handler; other processes (the CLI) still meet
``busy_timeout``.

PostgreSQL: a batch runs on one pooled connection through ``run_sync``; up to
:data:`PG_BATCHES_IN_FLIGHT` batches per process are in flight at once, and several
processes commit concurrently. Work that holds a lock until the commit (the inbox
cursor's advisory lock) is deferred to the end of its batch (:meth:`Tx.later`).

See docs/decisions/0010-group-commit.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import NodeError

T = TypeVar("T")

#: Jobs per transaction at most; a longer queue is committed in several batches.
MAX_BATCH: Final = 512
#: PostgreSQL batches committing at once in one process (SQLite: one).
PG_BATCHES_IN_FLIGHT: Final = 4
#: What a job hears when the node closes before its batch started.
SHUTTING_DOWN: Final = "the node is shutting down"
#: How long closing waits for a PostgreSQL batch already started (SQLite: see close).
CLOSE_GRACE_SECONDS: Final = 10.0


class IntegrityError(Exception):
    """A job broke a constraint (on either backend); its savepoint was rolled back."""


class CommitFailed(NodeError):
    """The batch's transaction could not be begun or committed: nothing of it is stored
    (answered 500, logged as a node error without details)."""


class Tx:
    """A job's view of the batch transaction: raw statements and nested savepoints."""

    def __init__(self, raw: Any, *, postgres: bool, integrity: type[BaseException]) -> None:
        self._raw = raw
        self.postgres = postgres
        self._integrity = integrity
        self._cursor = raw.cursor()
        self._sql: dict[str, str] = {}
        self._depth = 0
        self._later: list[Callable[[Tx], None]] = []
        #: Names of transaction-scoped locks already taken in this batch.
        self.held: set[str] = set()
        #: Set when a statement failed outside every savepoint (or a rollback to one
        #: failed): PostgreSQL has then aborted the whole transaction, and its COMMIT
        #: would silently roll back, so the batch must fail as a whole.
        self.broken = False

    def _translate(self, sql: str) -> str:
        if not self.postgres:
            return sql
        done = self._sql.get(sql)
        if done is None:
            parts = sql.split("?")
            done = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
            self._sql[sql] = done
        return done

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the DBAPI cursor (fetch from it, or rowcount)."""
        cursor = self._cursor
        try:
            cursor.execute(self._translate(sql), tuple(params))
        except self._integrity as exc:
            self.broken = self.broken or self._depth == 0
            raise IntegrityError(type(exc).__name__) from None
        except BaseException:
            self.broken = self.broken or self._depth == 0
            raise
        return cursor

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())

    def later(self, work: Callable[[Tx], None]) -> None:
        """Run ``work`` after every job of the batch, just before the commit (dropped if
        the savepoint around this call is rolled back). For the work that holds a lock
        until the commit (the inbox-cursor lock on PostgreSQL): the lock is then taken
        once per batch and held for the shortest time. If ``work`` raises, the whole
        batch fails."""
        self._later.append(work)

    def _finish(self) -> None:
        later, self._later = self._later, []
        for work in later:
            work(self)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Work that is undone alone if it raises; the exception propagates."""
        self._depth += 1
        name = f"sp{self._depth}"
        mark = len(self._later)
        # Locks taken inside are released by a rollback to the savepoint (PostgreSQL
        # does so for transaction-level advisory locks too): forget them as well, or a
        # later job would skip taking the inbox-cursor lock it no longer holds.
        held = set(self.held)
        self._cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            del self._later[mark:]
            self.held = held
            try:
                self._cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
                self._cursor.execute(f"RELEASE SAVEPOINT {name}")
            except BaseException:
                # The transaction is in an unknown state (SQLite may have rolled it
                # back whole after an I/O error): nothing of this batch may commit.
                self.broken = True
                raise
            raise
        else:
            self._cursor.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1


Job = Callable[[Tx], Any]


class _Bare:
    """A job run without a savepoint of its own (see :meth:`Committer.submit`)."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, tx: Tx) -> Any:
        return self.job(tx)


_Entry = tuple[Job, "asyncio.Future[Any]"]
#: ``(True, value)`` or ``(False, exception)`` per job.
_Outcome = tuple[bool, Any]


def _run_jobs(tx: Tx, jobs: Sequence[Job]) -> list[_Outcome]:
    tx._later = []
    tx.held = set()
    tx.broken = False
    outcomes: list[_Outcome] = []
    for job in jobs:
        mark = len(tx._later)
        try:
            if isinstance(job, _Bare):
                value = job(tx)
            else:
                with tx.savepoint():
                    value = job(tx)
        except Exception as exc:
            if tx.broken:
                raise CommitFailed(f"a job broke the transaction ({type(exc).__name__})"
                                   ) from exc
            del tx._later[mark:]
            outcomes.append((False, exc))
        else:
            outcomes.append((True, value))
    tx._finish()
    return outcomes


def sqlite_pragmas(raw: Any, busy_ms: int) -> None:
    """The settings of every connection to the node's SQLite file (engine and writer)."""
    cursor = raw.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged envelope
        # survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    finally:
        cursor.close()


class SqliteThread:
    """One ``sqlite3`` connection to the node's file, opened on first use and used
    only from one thread (its pool's)."""

    def __init__(self, path: str, busy_ms: int, *, name: str, readonly: bool = False) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.readonly = readonly
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None
        self.tx: Tx | None = None

    def _open(self) -> Tx:
        if self.tx is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            sqlite_pragmas(conn, self.busy_ms)
            if self.readonly:
                conn.execute("PRAGMA query_only=ON")
            self.conn = conn
            self.tx = Tx(conn, postgres=False, integrity=sqlite3.IntegrityError)
        return self.tx

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.tx = None

    async def shutdown(self) -> None:
        """Close the connection in its own thread, then end the thread."""
        with contextlib.suppress(RuntimeError):  # the pool may be shut down already
            await asyncio.get_running_loop().run_in_executor(self.pool, self.close)
        self.pool.shutdown(wait=True)


class _SqliteWriter(SqliteThread):
    def __init__(self, path: str, busy_ms: int) -> None:
        super().__init__(path, busy_ms, name="relay-committer")

    def batch(self, jobs: Sequence[Job]) -> list[_Outcome]:
        tx = self._open()
        assert self.conn is not None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            outcomes = _run_jobs(tx, jobs)
            self.conn.execute("COMMIT")
        except Exception as exc:
            # A failed COMMIT (e.g. a deferred constraint) can leave the transaction
            # open: end it, so that the next batch starts clean.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise CommitFailed(f"{type(exc).__name__}: {exc}") from exc
        return outcomes


def pg_tx(sync: Connection) -> Tx:
    """A :class:`Tx` over the asyncpg adapter's connection behind ``sync`` (inside
    ``run_sync``)."""
    return Tx(sync.connection.dbapi_connection, postgres=True,
              integrity=sync.dialect.loaded_dbapi.IntegrityError)


def _pg_batch(jobs: Sequence[Job], sync: Connection) -> list[_Outcome]:
    return _run_jobs(pg_tx(sync), jobs)


class Committer:
    """The queue and the writer task (started on first use, in the running loop)."""

    def __init__(self, *, engine: AsyncEngine | None = None, sqlite_path: str | None = None,
                 busy_ms: int = 30_000, lock: asyncio.Lock | None = None) -> None:
        if (engine is None) == (sqlite_path is None):
            raise ValueError("a committer needs either a PostgreSQL engine or a SQLite path")
        self._engine = engine
        self._sqlite = _SqliteWriter(sqlite_path, busy_ms) if sqlite_path is not None else None
        self._lock = lock
        self._queue: list[_Entry] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        #: Set by :meth:`close`: new work is refused, the writer is not restarted.
        self._closing = False
        #: Counters, for tests and benchmarks: committed batches and jobs.
        self.batches = 0
        self.jobs = 0

    def submit(self, job: Job, *, savepoint: bool = True) -> asyncio.Future[Any]:
        """Queue ``job``; the future resolves after the commit holding its work.
        Jobs queued before the writer wakes share one transaction.

        ``savepoint=False`` saves two statements (a round trip each on PostgreSQL) for a
        job that needs no savepoint of its own: one that writes nothing before it may
        raise, and guards its later work with :meth:`Tx.savepoint` itself."""
        if not savepoint:
            job = _Bare(job)
        loop = asyncio.get_running_loop()
        if self._closing:
            refused: asyncio.Future[Any] = loop.create_future()
            refused.set_exception(CommitFailed(SHUTTING_DOWN))
            return refused
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._serve(), name="relay-committer")
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((job, future))
        assert self._wake is not None
        self._wake.set()
        return future

    async def run(self, job: Callable[[Tx], T], *, savepoint: bool = True) -> T:
        result: T = await self.submit(job, savepoint=savepoint)
        return result

    async def _serve(self) -> None:
        assert self._wake is not None
        wake = self._wake
        # SQLite has one writer; on PostgreSQL a batch mostly waits for round trips,
        # so a few batches are in flight at once (each on its own connection).
        slots = asyncio.Semaphore(1 if self._sqlite is not None else PG_BATCHES_IN_FLIGHT)
        while True:
            await wake.wait()
            wake.clear()
            while self._queue:
                await slots.acquire()
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                if not batch:
                    slots.release()
                    break
                task = asyncio.create_task(self._commit(batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                task.add_done_callback(lambda _t: slots.release())

    async def _commit(self, batch: list[_Entry]) -> None:
        jobs = [job for job, _ in batch]
        try:
            if self._sqlite is not None:
                loop = asyncio.get_running_loop()
                lock = self._lock or contextlib.nullcontext()
                async with lock:
                    outcomes = await loop.run_in_executor(self._sqlite.pool,
                                                          self._sqlite.batch, jobs)
            else:
                assert self._engine is not None
                try:
                    async with self._engine.connect() as conn, conn.begin():
                        outcomes = await conn.run_sync(lambda sync: _pg_batch(jobs, sync))
                except Exception as exc:
                    raise CommitFailed(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(CommitFailed(SHUTTING_DOWN))
            raise
        except Exception as exc:
            failure = exc if isinstance(exc, CommitFailed) else CommitFailed(repr(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        self.batches += 1
        self.jobs += len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away (cancelled); the work is committed
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def close(self, *, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Refuse new work, let the batches already started end, fail those never started.

        A started batch is in the database's hands: cancelling its wait would tell its
        callers "shutting down" for work that may well commit a moment later. On SQLite
        the writer thread cannot be stopped anyway, so its batch is waited for (SQLite's
        busy timeout bounds it); on PostgreSQL a batch gets ``grace`` seconds, then its
        connection is cancelled (and its transaction rolled back)."""
        self._closing = True
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            running = tuple(self._running)
            if running:
                wait = None if self._sqlite is not None else grace
                _, late = await asyncio.wait(running, timeout=wait)
                for task in late:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            for _, future in self._queue:
                if not future.done():
                    future.set_exception(CommitFailed(SHUTTING_DOWN))
            self._queue.clear()
            if self._sqlite is not None:
                await self._sqlite.shutdown()
