"""The outbox worker: pushes envelopes to the next hop and statements back, with retries.

Each outbox row is one thing to push to one peer: an envelope (forward) or a
statement (back towards the origin). A row is deleted only in the transaction that
records the peer's confirmation, so a crash at any moment leaves the row in place
and the push is repeated after the restart; the peer accepts idempotently (by
envelope id, by statement id), so a repeat never makes a second delivery or a
second receipt.

For one (peer, envelope):

* **envelope**: sent with the statements that travel forward (the origin's
  *accepted*, the *relayed* of the hops up to this one) and the cards that verify
  them and the envelope. Confirmed: the row goes and the node forgets the
  ciphertext (it has handed it on). Refused for good (a 4xx other than the
  transient ones, see :mod:`relay.peer_client`), or still not confirmed when the
  envelope expires: the node signs *failed* (``next`` = the peer, ``reason``), which
  travels back to the sender like any other statement.
* **statements**: every row still pending for that pair goes in one push, in the
  order they were queued, so the far side never holds an *opened* without the
  *delivered* before it. Refused for good: dropped with a warning.

Failures are retried after :func:`relay.backoff.next_attempt` (capped exponential,
jittered), an envelope never later than its expiry. The worker wakes when a
service queues something (same process), when a retry falls due, and every
``federation_poll_seconds`` (rows left by another process or by a crash).
Several processes sharing PostgreSQL may push the same row twice; the far side's
idempotence makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

from keys import dsse
from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.encoding import b64url_encode, json_dumps
from keys.envelope import Routing, parse_routing
from keys.identity import Identity
from keys.statements import make_statement

from ..backoff import next_attempt
from ..config import RelayConfig
from ..metrics import Metrics
from ..peer_client import PeerClient
from ..storage import federation, mailbox
from ..storage.database import Database
from ..storage.federation import OutboxRow
from .federation import MAX_BACK, insert_statements

log = logging.getLogger("relay.federation")

ENVELOPES_PATH: Final = "/v1/federation/envelopes"
STATEMENTS_PATH: Final = "/v1/federation/statements"
#: Rows read per round; more are taken by the next round at once.
BATCH: Final = 200
#: Pushes in flight at once.
CONCURRENCY: Final = 8
_FORWARD_KINDS: Final = ("accepted", "relayed")


def _raw(data: bytes) -> Any:
    return json.loads(data)


class Forwarder:
    def __init__(self, db: Database, node: Identity, client: PeerClient, config: RelayConfig,
                 *, metrics: Metrics, clock: Clock = SYSTEM_CLOCK,
                 random: Random = system_random) -> None:
        self.db = db
        self.node = node
        self.client = client
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.random = random
        self._event = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def wake(self) -> None:
        """Called after a commit that queued something: push now, not at the next poll."""
        self._event.set()

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    async def run(self) -> None:
        while True:
            self._event.clear()
            try:
                more = await self.round()
            except Exception as exc:  # keep the worker alive; the rows stay queued
                log.warning("outbox round failed", extra={"event": "federation.error",
                                                          "error": type(exc).__name__})
                more = False
            if more:
                continue
            idle = await self._idle_time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), idle)

    async def _idle_time(self) -> float:
        async with self.db.read() as conn:
            due = await federation.next_due(conn)
        poll = self.config.federation_poll_seconds
        if due is None:
            return poll
        return min(poll, max(0.0, due - self._now()))

    async def round(self) -> bool:
        """Push everything due now. Returns True when more rows may be due at once."""
        now = self._now()
        async with self.db.read() as conn:
            rows = await federation.due(conn, now, BATCH)
        groups: dict[tuple[str, str, bool], list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault((row.peer, row.envelope_id, row.statement_id is None),
                              []).append(row)
        await asyncio.gather(*(self._attempt(peer, envelope_id, forward, group)
                               for (peer, envelope_id, forward), group in groups.items()))
        return len(rows) == BATCH

    async def _attempt(self, peer: str, envelope_id: str, forward: bool,
                       rows: list[OutboxRow]) -> None:
        async with self._slots:
            if forward:
                await self._push_envelope(peer, envelope_id, rows)
            else:
                await self._push_statements(peer, envelope_id)

    # --- forward -----------------------------------------------------------------------

    async def _push_envelope(self, peer_id: str, envelope_id: str,
                             rows: list[OutboxRow]) -> None:
        seqs = [r.seq for r in rows]
        now = self._now()
        async with self.db.read() as conn:
            meta = await mailbox.get_envelope(conn, envelope_id)
            sealed = await mailbox.get_sealed(conn, envelope_id) if meta else None
            peer = await federation.get_peer(conn, peer_id)
            carried = await federation.statements_of_kinds(conn, envelope_id, _FORWARD_KINDS)
        if meta is None or (sealed is None and meta.expires_at > now):
            # Gone, or already handed on by a concurrent push: nothing left to do.
            async with self.db.write() as conn:
                await federation.delete_rows(conn, seqs)
            return
        routing = parse_routing(dsse.Envelope.from_json(meta.routing))
        last_error = rows[0].last_error or "no attempt"
        if meta.expires_at <= now or sealed is None:
            await self._give_up(routing, meta.back_to, peer_id, seqs,
                                "the next hop could not be reached before the envelope "
                                f"expired (last error: {last_error})", "expired")
            return
        if peer is None:
            await self._retry(rows, "not-a-peer-here", meta.expires_at, "envelope",
                              routing.id, peer_id)
            return
        hops = routing.hops
        here = hops.index(self.node.id)
        # Only what stands before the receiver on the route travels forward (relayed
        # statements of later hops may already have come back to us).
        forward = [(signer, body) for signer, body in carried
                   if signer not in hops or hops.index(signer) <= here]
        body = await self._envelope_body(routing, sealed, forward)
        outcome = await self.client.post(peer.url, ENVELOPES_PATH, body)
        if outcome.ok:
            async with self.db.write() as conn:
                await federation.delete_rows(conn, seqs)
                await federation.drop_sealed(conn, envelope_id)
            self._count("envelope", "ok", routing.id, peer_id, rows[0].attempts + 1)
        elif outcome.transient:
            await self._retry(rows, outcome.error, meta.expires_at, "envelope", routing.id,
                              peer_id)
        else:
            await self._give_up(routing, meta.back_to, peer_id, seqs,
                                f"the next hop refused the envelope ({outcome.error})",
                                "refused")

    async def _envelope_body(self, routing: Routing, sealed: bytes,
                             carried: Sequence[tuple[str, bytes]]) -> bytes:
        signers = [routing.sender, *(signer for signer, _ in carried)]
        cards = await self._cards(signers)
        return json_dumps({"envelope": routing.envelope.to_dict(),
                           "sealed": b64url_encode(sealed),
                           "statements": [_raw(body) for _, body in carried],
                           "cards": [_raw(c) for c in cards]})

    async def _cards(self, signers: Sequence[str]) -> list[bytes]:
        wanted = list(dict.fromkeys(signers))
        async with self.db.read() as conn:
            found = await federation.card_bodies(conn, [i for i in wanted
                                                        if i != self.node.id])
        found[self.node.id] = self.node.card.to_json()
        return [found[i] for i in wanted if i in found]

    async def _retry(self, rows: list[OutboxRow], error: str, deadline: int | None,
                     kind: str, envelope_id: str, peer_id: str) -> None:
        failures = rows[0].attempts + 1
        when = next_attempt(self._now(), failures,
                            initial=self.config.federation_retry_seconds,
                            maximum=self.config.federation_retry_max_seconds,
                            random=self.random)
        if deadline is not None:
            when = min(when, deadline)
        async with self.db.write() as conn:
            await federation.reschedule(conn, [r.seq for r in rows], next_attempt_at=when,
                                        error=error)
        self.metrics.pushes.labels(kind, "retry").inc()
        log.info("push failed; will retry", extra={
            "event": "federation.retry", "kind": kind, "envelope": envelope_id,
            "peer": peer_id, "attempts": failures, "error": error})

    async def _give_up(self, routing: Routing, back_to: str | None, peer_id: str,
                       seqs: list[int], reason: str, outcome: str) -> None:
        failed = make_statement("failed", routing.id, self.node.signing_key, clock=self.clock,
                                next=peer_id, reason=reason[:200])
        now = self._now()
        async with self.db.write() as conn:
            await federation.delete_rows(conn, seqs)
            await federation.drop_sealed(conn, routing.id)
            await insert_statements(conn, routing.id, [failed])
            if back_to is not None:
                await federation.enqueue(conn, back_to, routing.id, [failed.id], now)
        if back_to is not None:
            self.wake()
        self.metrics.pushes.labels("envelope", outcome).inc()
        log.warning("envelope not handed on", extra={
            "event": "federation.failed", "envelope": routing.id, "peer": peer_id,
            "outcome": outcome})

    # --- back --------------------------------------------------------------------------

    async def _push_statements(self, peer_id: str, envelope_id: str) -> None:
        async with self.db.read() as conn:
            pending = (await federation.pending_for(conn, peer_id, envelope_id))[:MAX_BACK]
            found = await federation.statements_by_id(
                conn, [r.statement_id for r in pending if r.statement_id])
            peer = await federation.get_peer(conn, peer_id)
        if not pending:
            return
        seqs = [r.seq for r in pending]
        present = [found[r.statement_id] for r in pending
                   if r.statement_id and r.statement_id in found]
        if not present:
            async with self.db.write() as conn:
                await federation.delete_rows(conn, seqs)
            return
        if peer is None:
            await self._retry(pending, "not-a-peer-here", None, "statements", envelope_id,
                              peer_id)
            return
        cards = await self._cards([signer for signer, _ in present])
        body = json_dumps({"envelope": envelope_id,
                           "statements": [_raw(b) for _, b in present],
                           "cards": [_raw(c) for c in cards]})
        outcome = await self.client.post(peer.url, STATEMENTS_PATH, body)
        if outcome.transient and not outcome.ok:
            await self._retry(pending, outcome.error, None, "statements", envelope_id,
                              peer_id)
            return
        async with self.db.write() as conn:
            await federation.delete_rows(conn, seqs)
        if outcome.ok:
            self._count("statements", "ok", envelope_id, peer_id, pending[0].attempts + 1)
        else:
            self.metrics.pushes.labels("statements", "refused").inc()
            log.warning("statements refused by the previous hop", extra={
                "event": "federation.refused", "envelope": envelope_id, "peer": peer_id,
                "error": outcome.error})

    def _count(self, kind: str, outcome: str, envelope_id: str, peer_id: str,
               attempts: int) -> None:
        self.metrics.pushes.labels(kind, outcome).inc()
        log.info("pushed", extra={"event": "federation.push", "kind": kind,
                                  "envelope": envelope_id, "peer": peer_id,
                                  "attempts": attempts})
