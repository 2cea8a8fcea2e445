"""Waking WebSocket clients when a delivery is committed.

:class:`Notifier` fans out, inside one process, to the member's open WebSocket
sessions (:class:`Subscription`: a list of pending notices and a wake-up call). With
SQLite (one process) the submission service dispatches after its commit. With
PostgreSQL the submission transaction issues ``pg_notify`` (delivered by the server
only if, and when, the transaction commits) and every process LISTENs
(:class:`PgListener`), so a delivery submitted through one process reaches sessions
held by another; the submitting process hears its own notice too.

Notices are hints: a client that reconnects or falls behind (overflow) catches up from
the inbox by cursor, which is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .storage.committer import Tx
from .storage.database import Database

CHANNEL: Final = "backchannel_deliveries"
log = logging.getLogger("relay.notify")


@dataclass(frozen=True)
class Notice:
    member: str
    cursor: int
    envelope_id: str


#: Why a subscription ended: the session fell too far behind, or its member was revoked.
OVERFLOW: Final = "overflow"
REVOKED: Final = "revoked"


class Subscription:
    """One session's notices not yet sent, kept small because a node holds thousands
    of idle sessions: no queue, no event, no task; the session overrides :meth:`wake`,
    which is called whenever there is something to send or the session must end."""

    __slots__ = ("ended", "limit", "member", "outstanding", "pending")

    def __init__(self, member: str, limit: int) -> None:
        self.member = member
        self.limit = limit
        #: Notices offered and not yet taken (:meth:`take`), oldest first.
        self.pending: list[Notice] = []
        #: Offered and not yet sent (:meth:`sent`): what overflow is judged on.
        self.outstanding = 0
        #: ``None`` while the session should live; else :data:`OVERFLOW` or :data:`REVOKED`.
        self.ended: str | None = None

    def wake(self) -> None:
        """Something to do (override): send :meth:`take`, then end if :attr:`ended`."""

    def offer(self, notice: Notice) -> None:
        if self.ended is not None:
            return
        if self.outstanding >= self.limit:
            self.end(OVERFLOW)
            return
        self.pending.append(notice)
        self.outstanding += 1
        self.wake()

    def take(self) -> list[Notice]:
        batch, self.pending = self.pending, []
        return batch

    def sent(self) -> None:
        self.outstanding -= 1

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.pending = []
            self.wake()


class Notifier:
    """In-process fan-out of notices to subscribed sessions."""

    def __init__(self, *, queue_max: int = 1000) -> None:
        self.queue_max = queue_max
        # A list per member: most members hold one or two sessions.
        self._subs: dict[str, list[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        self._subs.setdefault(sub.member, []).append(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.member)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self._subs[sub.member]

    @property
    def sessions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def members(self) -> set[str]:
        """Members holding at least one session."""
        return set(self._subs)

    def end_member(self, member: str, reason: str) -> None:
        for sub in tuple(self._subs.get(member, ())):
            sub.end(reason)

    def dispatch(self, notice: Notice) -> None:
        for sub in tuple(self._subs.get(notice.member, ())):
            sub.offer(notice)


class Announcer:
    """What the submission service calls: inside the transaction, then after commit."""

    def __init__(self, db: Database, notifier: Notifier) -> None:
        self.db = db
        self.notifier = notifier

    async def in_transaction(self, conn: AsyncConnection, notices: Sequence[Notice]) -> None:
        if not self.db.is_postgres:
            return
        for notice in notices:
            payload = json.dumps({"m": notice.member, "c": notice.cursor, "e": notice.envelope_id})
            await conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                               {"channel": CHANNEL, "payload": payload})

    def after_commit(self, notices: Sequence[Notice]) -> None:
        if self.db.is_postgres:
            return  # every process, this one included, hears the NOTIFY
        for notice in notices:
            self.notifier.dispatch(notice)


def notify_in_job(tx: Tx, notices: Sequence[Notice]) -> None:
    """:meth:`Announcer.in_transaction` inside a group-commit job: on PostgreSQL the
    NOTIFY reaches every process if, and when, the batch commits."""
    if not tx.postgres:
        return
    for notice in notices:
        payload = json.dumps({"m": notice.member, "c": notice.cursor, "e": notice.envelope_id})
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload)).fetchall()


def parse_notice(payload: str) -> Notice | None:
    try:
        obj = json.loads(payload)
        notice = Notice(str(obj["m"]), int(obj["c"]), str(obj["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return notice


class PgListener:
    """Holds one PostgreSQL connection LISTENing on :data:`CHANNEL`; reconnects with
    backoff when it drops."""

    def __init__(self, db: Database, notifier: Notifier) -> None:
        self.db = db
        self.notifier = notifier
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notice = parse_notice(payload)
        if notice is not None:
            self.notifier.dispatch(notice)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-pg-listener")
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()  # re-raise the startup failure

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            lost = asyncio.Event()
            try:
                async with self.db.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    driver.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await driver.add_listener(CHANNEL, self._on_notify)
                    self.ready.set()
                    delay = 0.5
                    try:
                        await lost.wait()
                    finally:
                        with contextlib.suppress(Exception):
                            await driver.remove_listener(CHANNEL, self._on_notify)
                log.warning("listener connection lost", extra={"event": "notify.lost"})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.ready.is_set():
                    raise
                log.warning("listener reconnect failed",
                            extra={"event": "notify.retry", "error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
