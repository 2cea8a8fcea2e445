"""The group committer (relay.storage.committer) on a real SQLite file and a real
PostgreSQL database: one transaction per batch, a savepoint per job, nothing
acknowledged before the commit, nothing of a batch stored when its commit fails."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import defaultdict

import pytest
from aiohttp import web
from relay_support import Member, RunningNode, sealed_for, start_node
from sqlalchemy import text

from keys.encoding import b64url_encode
from keys.identity import Identity
from relay.app import create_app
from relay.storage import mailbox, nonces
from relay.storage.committer import CommitFailed, IntegrityError, Tx
from relay.storage.database import SQLITE_FILE, Database, sqlite_url


async def _migrated(url: str) -> Database:
    db = Database.open(url)
    await db.migrate()
    return db


async def _nonces(db: Database) -> set[str]:
    async with db.read() as conn:
        rows = await conn.execute(text("SELECT nonce FROM nonces"))
        return {row.nonce for row in rows}


def _remember(nonce: str) -> object:
    def job(tx: Tx) -> bool:
        return nonces.record(tx, "k", nonce, 2**40)
    return job


async def test_a_failing_job_leaves_the_rest_of_its_batch_alone(database_url: str):
    db = await _migrated(database_url)
    try:
        def fails(tx: Tx) -> None:
            nonces.record(tx, "k", "b", 2**40)
            raise ValueError("refused")

        def breaks_a_constraint(tx: Tx) -> None:
            nonces.record(tx, "k", "c", 2**40)
            tx.execute("INSERT INTO nonces (keyid, nonce, expires_at) VALUES (?, ?, ?)",
                       ("k", "a", 1))  # "a" is recorded by the first job of the batch

        before = db.committer.batches
        # Queued without yielding to the loop: the writer takes all four at once.
        futures = [db.committer.submit(_remember("a")), db.committer.submit(fails),
                   db.committer.submit(breaks_a_constraint), db.committer.submit(_remember("d"))]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert db.committer.batches == before + 1
        assert outcomes[0] is True and outcomes[3] is True
        assert isinstance(outcomes[1], ValueError)
        assert isinstance(outcomes[2], IntegrityError)
        assert await _nonces(db) == {"a", "d"}
        # The same nonce again: the job runs, finds it recorded.
        assert await db.run(_remember("a")) is False
    finally:
        await db.dispose()


async def test_a_failed_commit_fails_every_job_of_the_batch(database_url: str):
    db = await _migrated(database_url)
    try:
        # A foreign key checked only at COMMIT: the job itself succeeds, the commit
        # of its batch does not.
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t_parent (id INTEGER PRIMARY KEY)"))
            await conn.execute(text(
                "CREATE TABLE t_child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL "
                "REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED)"))

        def orphan(tx: Tx) -> str:
            tx.execute("INSERT INTO t_child (id, parent) VALUES (?, ?)", (1, 99))
            return "inserted"

        futures = [db.committer.submit(_remember("a")), db.committer.submit(orphan),
                   db.committer.submit(_remember("b"))]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, CommitFailed) for o in outcomes), outcomes
        assert await _nonces(db) == set()
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t_child"))).scalar() == 0
        # The writer recovers: the next batch commits.
        assert await db.run(_remember("c")) is True
        assert await _nonces(db) == {"c"}
    finally:
        await db.dispose()


async def _restart(stopped: RunningNode) -> RunningNode:
    """The same node (identity, configuration, database) started again, on a new port."""
    app = create_app(stopped.config, node=stopped.identity, database_url=stopped.database_url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningNode(stopped.identity, stopped.config, stopped.database_url,
                       f"http://127.0.0.1:{port}", runner, Database.open(stopped.database_url),
                       signed_url=stopped.config.url)


async def test_replayed_requests_are_refused_after_a_restart(database_url: str):
    """Nonces are committed with the request's work, also when the submission was
    refused: a replay to a restarted node is refused without being processed."""
    first = await start_node(database_url)
    try:
        alice, bob = await first.join("Kyiv"), await first.join("Moscow")
        stranger = Member(Identity.create("Nobody", "delegation"), alice.client)
        sent = []
        for recipients, status in (([bob], 201), ([stranger], 404)):
            routing, sealed = sealed_for(alice, recipients, first.id)
            body = (b'{"envelope":' + routing.envelope.to_json() + b',"sealed":"'
                    + b64url_encode(sealed).encode() + b'"}')
            headers = alice.client.signed_headers("POST", "/v1/envelopes", body)
            reply = await alice.client.send("POST", "/v1/envelopes", body=body,
                                            headers=headers)
            assert reply.status == status, reply.body
            sent.append((body, headers))
        counts = await first.counts()
    finally:
        await first.stop()

    second = await _restart(first)
    try:
        client = await second.client(alice.identity)
        for body, headers in sent:
            (await client.send("POST", "/v1/envelopes", body=body,
                               headers=headers)).problem(401, "replay")
        assert await second.counts() == counts
        # A fresh signature of the refused submission is processed (and refused).
        routing, sealed = sealed_for(alice, [stranger], first.id)
        (await client.submit(routing, sealed)).problem(404, "not-found")
    finally:
        await second.stop()


async def test_concurrent_submissions_all_stored_with_increasing_cursors(database_url: str):
    node = await start_node(database_url)
    try:
        senders = [await node.join(f"Sender {i}") for i in range(3)]
        receivers = [await node.join(f"Receiver {i}") for i in range(2)]
        work = [(s, sealed_for(s, receivers if i % 3 == 0 else [receivers[i % 2]], node.id))
                for s in senders for i in range(30)]
        replies = await asyncio.gather(*(s.client.submit(r, sealed)
                                         for s, (r, sealed) in work))
        assert [r.status for r in replies] == [201] * len(work)
        expected: dict[str, set[str]] = defaultdict(set)
        for _s, (routing, _sealed) in work:
            for recipient in routing.to:
                expected[recipient].add(routing.id)
        for receiver in receivers:
            page = (await receiver.client.inbox(limit=500)).body["items"]
            cursors = [item["cursor"] for item in page]
            assert all(a < b for a, b in itertools.pairwise(cursors))
            assert {item["id"] for item in page} == expected[receiver.id]
        counts = await node.counts()
        assert counts["envelopes"] == len(work)
        assert counts["deliveries"] == sum(len(ids) for ids in expected.values())
        # The same envelopes again, concurrently: idempotent, nothing new stored.
        again = await asyncio.gather(*(s.client.submit(r, sealed)
                                       for s, (r, sealed) in work[:20]))
        assert [r.status for r in again] == [200] * 20
        assert await node.counts() == counts
    finally:
        await node.stop()


@pytest.mark.parametrize("jobs", [1, 700])
async def test_every_queued_job_is_committed(database_url: str, jobs: int):
    """More jobs than one batch holds (relay.storage.committer.MAX_BATCH)."""
    db = await _migrated(database_url)
    try:
        outcomes = await asyncio.gather(*(db.run(_remember(f"n{i}")) for i in range(jobs)))
        assert outcomes == [True] * jobs
        assert len(await _nonces(db)) == jobs
    finally:
        await db.dispose()


async def test_work_deferred_to_the_end_of_a_batch(database_url: str):
    """Tx.later: run after every job (in job order), dropped with a failed job's
    savepoint, and failing the whole batch when it fails."""
    db = await _migrated(database_url)
    try:
        def deferring(nonce: str, *, then_fail: bool = False) -> object:
            def job(tx: Tx) -> str:
                tx.later(lambda tx: nonces.record(tx, "later", nonce, 2**40) and None)
                if then_fail:
                    raise ValueError("refused")
                return nonce
            return job

        outcomes = await asyncio.gather(
            db.committer.submit(deferring("a")),
            db.committer.submit(deferring("b", then_fail=True)),
            db.committer.submit(deferring("c")), return_exceptions=True)
        assert outcomes[0] == "a" and outcomes[2] == "c"
        assert isinstance(outcomes[1], ValueError)
        assert await _nonces(db) == {"a", "c"}

        def failing_later(tx: Tx) -> str:
            tx.later(lambda tx: tx.execute("INSERT INTO nowhere VALUES (1)") and None)
            return "done"

        outcomes = await asyncio.gather(db.committer.submit(_remember("d")),
                                        db.committer.submit(failing_later),
                                        return_exceptions=True)
        assert all(isinstance(o, CommitFailed) for o in outcomes), outcomes
        assert await _nonces(db) == {"a", "c"}
    finally:
        await db.dispose()


async def test_a_statement_failing_outside_a_savepoint_fails_the_whole_batch(database_url: str):
    """A job queued with savepoint=False whose statement fails: on PostgreSQL the whole
    transaction is then aborted and its COMMIT silently rolls back, so no job of the
    batch may be answered as committed."""
    db = await _migrated(database_url)
    try:
        def bad_statement(tx: Tx) -> None:
            tx.execute("SELECT no_such_column FROM nonces")

        futures = [db.committer.submit(_remember("a")),
                   db.committer.submit(bad_statement, savepoint=False),
                   db.committer.submit(_remember("b"))]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        stored = await _nonces(db)
        for nonce, outcome in (("a", outcomes[0]), ("b", outcomes[2])):
            assert (outcome is True and nonce in stored) or isinstance(outcome, CommitFailed), \
                (outcomes, stored)
        assert isinstance(outcomes[1], Exception)
        assert await db.run(_remember("c")) is True
    finally:
        await db.dispose()


async def test_a_lock_taken_in_a_rolled_back_savepoint_is_taken_again(database_url: str):
    """PostgreSQL releases the inbox-cursor lock taken inside a savepoint that is rolled
    back: the next job of the batch that inserts deliveries must take it again, or
    cursors could become visible out of order."""
    db = await _migrated(database_url)
    try:
        def takes_the_lock_then_fails(tx: Tx) -> None:
            mailbox.add_deliveries(tx, "no-envelope", [])
            raise ValueError("refused after taking the lock")

        def takes_the_lock(tx: Tx) -> bool:
            mailbox.add_deliveries(tx, "no-envelope", [])
            if not tx.postgres:
                return True  # SQLite: the single writer orders the cursors
            row = tx.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND pid = pg_backend_pid() AND granted")
            return bool(row[0] == 1)

        futures = [db.committer.submit(takes_the_lock_then_fails),
                   db.committer.submit(takes_the_lock)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(outcomes[0], ValueError)
        assert outcomes[1] is True
    finally:
        await db.dispose()


async def test_fast_reads_see_committed_work_only_and_never_write(database_url: str):
    """Database.query (relay.storage.reader): one read transaction over raw statements
    that sees every committed job and nothing of a job still running."""
    db = await _migrated(database_url)
    try:
        def count(tx: Tx) -> int:
            return int(tx.one("SELECT count(*) FROM nonces")[0])

        assert await db.query(count) == 0
        await db.run(_remember("a"))
        assert await db.query(count) == 1
        if db.is_postgres:
            await db.run(_remember("b"))
        else:
            # A job waiting inside its transaction (in the writer's thread): its row
            # is not visible yet. (PostgreSQL's batches run on the loop's thread.)
            inside, release = asyncio.Event(), asyncio.Event()
            loop = asyncio.get_running_loop()

            def slow(tx: Tx) -> None:
                nonces.record(tx, "k", "b", 2**40)
                loop.call_soon_threadsafe(inside.set)
                asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)

            pending = asyncio.ensure_future(db.run(slow))
            await asyncio.wait_for(inside.wait(), 10)
            assert await db.query(count) == 1
            release.set()
            await pending
        assert await db.query(count) == 2
        if not db.is_postgres:
            # SQLite's reader is read-only; (PostgreSQL's transaction is rolled back.)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await db.query(lambda tx: tx.execute(
                    "INSERT INTO nonces (keyid, nonce, expires_at) VALUES ('k', 'c', 1)"))
        assert await db.query(count) == 2
        # A read that fails leaves no transaction open behind it.
        def fails(tx: Tx) -> None:
            count(tx)
            raise ValueError("refused")

        with pytest.raises(ValueError):
            await db.query(fails)
        assert await db.query(count) == 2
        assert await _nonces(db) == {"a", "b"}
    finally:
        await db.dispose()


async def test_closing_lets_a_started_batch_finish_and_fails_the_rest(tmp_path):
    """Closing the node while a batch is in the writer's hands: its callers get the
    real outcome (the work commits), not "shutting down"; jobs still queued behind it
    fail and store nothing. (SQLite: PostgreSQL's batches run on the loop's thread.)"""
    db = await _migrated(sqlite_url(tmp_path))
    inside, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(tx: Tx) -> bool:
        loop.call_soon_threadsafe(inside.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        return nonces.record(tx, "k", "started", 2**40)

    started = db.committer.submit(slow)
    await asyncio.wait_for(inside.wait(), 10)
    queued = db.committer.submit(_remember("queued"))  # one writer: waits its turn
    closing = asyncio.ensure_future(db.dispose())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the started batch
    # Work arriving while the node closes is refused at once, never started later.
    late = db.committer.submit(_remember("late"))
    assert late.done()
    with pytest.raises(CommitFailed, match="shutting down"):
        await late
    release.set()
    await asyncio.wait_for(closing, 10)
    assert await started is True
    with pytest.raises(CommitFailed, match="shutting down"):
        await queued
    with sqlite3.connect(tmp_path / SQLITE_FILE) as conn:
        assert {n for (n,) in conn.execute("SELECT nonce FROM nonces")} == {"started"}


class _RollbackFails:
    """A sqlite3 connection whose ROLLBACK fails (a disk error cannot be provoked on
    demand); everything else goes to the real connection."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)

    def close(self) -> None:
        self.real.close()


async def test_a_reader_that_cannot_end_its_read_is_replaced(tmp_path):
    """A connection left inside its read transaction would serve an old snapshot (and
    refuse the next BEGIN) forever: it is dropped, and the next read opens a new one."""
    db = await _migrated(sqlite_url(tmp_path))
    try:
        def count(tx: Tx) -> int:
            return int(tx.one("SELECT count(*) FROM nonces")[0])

        assert await db.query(count) == 0
        reader = db._reader
        assert reader is not None and reader.conn is not None
        reader.conn = _RollbackFails(reader.conn)  # type: ignore[assignment]
        assert await db.query(count) == 0  # the read itself succeeds
        await db.run(_remember("a"))
        assert await db.query(count) == 1  # a new connection, a new snapshot
        assert isinstance(reader.conn, sqlite3.Connection)
    finally:
        await db.dispose()


async def test_dispose_closes_the_reader_and_engine_when_the_committer_fails(tmp_path,
                                                                            monkeypatch):
    db = await _migrated(sqlite_url(tmp_path))
    assert await db.query(lambda tx: tx.one("SELECT 1")[0]) == 1
    reader = db._reader
    assert reader is not None

    async def broken_close(**_: object) -> None:
        raise RuntimeError("the writer thread died")

    monkeypatch.setattr(db.committer, "close", broken_close)
    with pytest.raises(RuntimeError, match="writer thread died"):
        await db.dispose()
    assert reader.conn is None  # closed in its thread
    with pytest.raises(RuntimeError):  # and the thread ended
        reader.pool.submit(lambda: None)
    assert db.engine.pool.checkedin() == 0  # disposed: its idle connection closed
