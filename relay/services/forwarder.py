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
  travels back to the sender like any other statement -- unless the push was queued
  again (relay.storage.federation.forward_again) for an envelope the peer had taken
  before (federation.handed_on): then it is dropped, since nothing failed to get
  through.
* **statements**: every row still pending for that pair goes in one push, in the
  order they were queued, so the far side never holds an *opened* without the
  *delivered* before it (unless that one was refused and dropped, below). Refused for
  good because of a statement (``statement-invalid``) when it carried several: each
  is pushed alone, in the same order, so that one statement the previous hop refuses
  does not take the honest ones with it; what is refused alone is dropped with a
  warning, and at the first temporary failure the rest waits, together. Any other
  refusal drops the push with a warning.

Failures are retried after :func:`relay.backoff.next_attempt` (capped exponential,
jittered), an envelope never later than its expiry. The worker wakes when a
service queues something (same process), when a push ends, when a retry falls due,
and every ``federation_poll_seconds`` (rows left by another process or by a crash).
Each due (peer, envelope) is pushed by its own short-lived task as soon as a slot
is free (:data:`CONCURRENCY`, :data:`PER_PEER`): an envelope never waits for
another peer's push, and a peer that hangs holds only its own slots. An
origin that has just stored a member's envelope for another node, and an intermediary
that has just stored a pushed one, hand the push over ready-made
(:meth:`Forwarder.handoff`: body built from what the storing transaction had in hand),
so it starts without reading anything back; the outbox row stays the record
and is deleted only after the peer confirmed, as for every push.
Several processes sharing PostgreSQL may push the same row twice; the far side's
idempotence makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from keys import dsse
from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.encoding import json_dumps
from keys.envelope import Routing, parse_routing
from keys.identity import Identity
from keys.statements import make_statement

from ..backoff import next_attempt
from ..config import RelayConfig
from ..metrics import Metrics
from ..peer_client import Outcome, PeerClient
from ..storage import federation, mailbox
from ..storage.committer import Tx
from ..storage.database import Database
from ..storage.federation import OutboxRow, PeerRow
from ..storage.mailbox import EnvelopeMeta
from .federation import MAX_BACK, insert_statements
from .handoff import Handoff, forward_body

log = logging.getLogger("relay.federation")

ENVELOPES_PATH: Final = "/v1/federation/envelopes"
STATEMENTS_PATH: Final = "/v1/federation/statements"
#: Rows read per scan; a full scan is followed by another at once.
BATCH: Final = 200
#: Pushes in flight at once, in all, and to one peer (so that a peer that accepts
#: connections and never answers holds at most this many until the timeout).
CONCURRENCY: Final = 16
PER_PEER: Final = 4
#: How long statements due for a (peer, envelope) wait for company before their push.
COALESCE_SECONDS: Final = 0.05
#: The refusal that names a statement (relay.rules, relay.services.federation): only
#: then is a refused statements push split, one statement per push.
_STATEMENT_REFUSED: Final = "statement-invalid"
#: How long a split keeps other processes' scans off its rows (it re-queues them
#: itself at its first temporary failure, or deletes them as it goes).
_SPLIT_HOLD_SECONDS: Final = 600
#: Prepared forward pushes kept for the worker at most (sealed bytes included).
PREPARED_BYTES: Final = 16 * 1024 * 1024
#: After a push crashed on our side (e.g. the database), its rows wait this long.
REST_SECONDS: Final = 1.0
_FORWARD_KINDS: Final = ("accepted", "relayed")


def _raw(data: bytes) -> Any:
    return json.loads(data)


def _pick(cards: dict[str, bytes], signers: Sequence[str]) -> list[bytes]:
    """The cards of ``signers``, each once, in order of first appearance."""
    return [cards[i] for i in dict.fromkeys(signers) if i in cards]


_Key = tuple[str, str, bool]


@dataclass(frozen=True)
class _Stored:
    """What a forward push needs from storage, read in one transaction."""

    rows: list[OutboxRow]
    meta: EnvelopeMeta | None
    sealed: bytes | None
    peer: PeerRow | None
    carried: list[tuple[str, bytes]]
    cards: dict[str, bytes]


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
        #: Pushes in flight, by (peer, envelope, forward), with the seqs they carry.
        self._running: dict[_Key, tuple[asyncio.Task[None], list[int]]] = {}
        #: Forward pushes built by the accepting service (:meth:`handoff`), oldest first.
        self._prepared: dict[_Key, Handoff] = {}
        self._prepared_bytes = 0
        #: Keys whose last attempt crashed (the database, not the peer, failed): not
        #: tried again before this loop time, so a persistent fault cannot spin.
        self._resting: dict[_Key, float] = {}
        #: Statement keys seen due and held back (:data:`COALESCE_SECONDS`), since when.
        self._seen: dict[_Key, float] = {}
        #: A scan left due rows for a running push to finish first.
        self._deferred = False
        self._stopped = False

    def wake(self) -> None:
        """Called after a commit that queued something: push now, not at the next poll."""
        self._event.set()

    def handoff(self, ready: Handoff) -> bool:
        """Called after the commit that queued a forward push, with the push built from
        what the transaction had in hand: it starts at once, without reading back the
        envelope, its statements and cards (nor scanning the outbox), if a slot is free;
        otherwise the next scan finds the row and still uses the prepared body.

        Returns whether the push started: if not, the caller must :meth:`wake` the
        worker. A push that started needs no scan: its end (confirmed, rescheduled or
        crashed) deletes the row or wakes the worker itself."""
        if self._stopped:
            return False  # shutting down: the row waits for the next start
        key = (ready.peer, ready.envelope_id, True)
        if key in self._running:
            return False  # a scan found the row first and pushes it from storage
        self._prepared[key] = ready
        self._prepared_bytes += len(ready.body)
        while self._prepared_bytes > PREPARED_BYTES and len(self._prepared) > 1:
            oldest = next(iter(self._prepared))
            self._prepared_bytes -= len(self._prepared.pop(oldest).body)
        _, per_peer = self._in_flight()
        if len(self._running) >= CONCURRENCY or per_peer.get(ready.peer, 0) >= PER_PEER:
            return False
        self._running[key] = (asyncio.create_task(self._attempt(key, None)), [])
        return True

    def _take_prepared(self, key: _Key) -> Handoff | None:
        ready = self._prepared.pop(key, None)
        if ready is not None:
            self._prepared_bytes -= len(ready.body)
        return ready

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    async def run(self) -> None:
        """Start a push for every due (peer, envelope) as soon as it is due and a slot
        is free; never wait for one push to start another, so a slow or dead peer
        delays only its own pushes (at most :data:`PER_PEER` of its slots)."""
        try:
            while True:
                self._event.clear()
                try:
                    idle = await self.dispatch()
                except Exception as exc:  # keep the worker alive; the rows stay queued
                    log.warning("outbox scan failed", extra={"event": "federation.error",
                                                             "error": type(exc).__name__})
                    idle = REST_SECONDS
                if idle > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._event.wait(), idle)
        finally:
            self._stopped = True
            running = [task for task, _ in self._running.values()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _in_flight(self) -> tuple[list[int], dict[str, int]]:
        seqs: list[int] = []
        per_peer: dict[str, int] = {}
        for (peer, _, _), (_, rows) in self._running.items():
            seqs += rows
            per_peer[peer] = per_peer.get(peer, 0) + 1
        return seqs, per_peer

    async def dispatch(self) -> float:
        """Start pushes for what is due now (one read: the due rows and when the next
        falls due). Returns how long to sleep unless woken; 0 to scan again at once.
        Rows left for a running push of the same key, or for a full peer, are
        :attr:`_deferred`: the end of a push wakes the scan for them."""
        poll = self.config.federation_poll_seconds
        if len(self._running) >= CONCURRENCY:
            self._deferred = True
            return poll
        now = self._now()
        clock = asyncio.get_running_loop().time()
        self._resting = {k: t for k, t in self._resting.items() if t > clock}
        seqs, per_peer = self._in_flight()
        full = [p for p, n in per_peer.items() if n >= PER_PEER]
        rows, later = await self.db.query(lambda tx: (
            federation.due(tx, now, BATCH, skip_seqs=seqs, skip_peers=full),
            federation.next_due(tx, after=now)))
        if any(n >= PER_PEER for n in per_peer.values()):
            self._deferred = True  # the full peers' rows were not even read
        groups: dict[_Key, list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault((row.peer, row.envelope_id, row.statement_id is None),
                              []).append(row)
        _, per_peer = self._in_flight()  # handoffs may have started pushes meanwhile
        started = False
        seen = self._seen
        self._seen = {}
        hold = 0.0
        for key, group in groups.items():
            peer = key[0]
            if key in self._resting:
                continue
            if not key[2]:
                # Statements travel back after a short wait, so that those following
                # close behind (the next hop's relayed, a delivered) go in the same
                # push, and the forward path keeps the CPU meanwhile.
                first = self._seen[key] = seen.get(key, clock)
                if clock - first < COALESCE_SECONDS:
                    hold = max(hold, COALESCE_SECONDS - (clock - first))
                    continue
            if key[2] and key in self._running:
                # A handed-over push under way (its row is not among the skipped seqs):
                # it ends by deleting the row or by waking the worker itself, so no scan
                # is owed when it ends.
                continue
            if (len(self._running) >= CONCURRENCY or key in self._running
                    or per_peer.get(peer, 0) >= PER_PEER):
                self._deferred = True
                continue
            self._seen.pop(key, None)
            per_peer[peer] = per_peer.get(peer, 0) + 1
            task = asyncio.create_task(self._attempt(key, group))
            self._running[key] = (task, [r.seq for r in group])
            started = True
        if started and len(rows) == BATCH:
            return 0.0
        if hold:
            poll = min(poll, hold)
        if self._resting:
            poll = min(poll, max(0.05, min(self._resting.values()) - clock))
        if later is not None:
            poll = min(poll, float(later - now))
        return poll

    async def _attempt(self, key: _Key, rows: list[OutboxRow] | None) -> None:
        peer, envelope_id, forward = key
        try:
            if forward:
                await self._push_envelope(peer, envelope_id, rows)
            else:
                await self._push_statements(peer, envelope_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the rows stay queued; this key rests a little
            self._resting[key] = asyncio.get_running_loop().time() + REST_SECONDS
            self._event.set()  # the scan's timeout must cover the rest
            log.warning("push crashed", extra={"event": "federation.error", "peer": peer,
                                               "envelope": envelope_id,
                                               "error": type(exc).__name__})
        finally:
            del self._running[key]
            if self._deferred:
                self._deferred = False
                self._event.set()

    # --- forward -----------------------------------------------------------------------

    async def _push_envelope(self, peer_id: str, envelope_id: str,
                             rows: list[OutboxRow] | None) -> None:
        """``rows``: the outbox rows of this push, or None (a :meth:`handoff`: read them
        only if the outcome needs them)."""
        now = self._now()
        ready = self._take_prepared((peer_id, envelope_id, True))
        if ready is not None and ready.expires_at > now:
            outcome = await self.client.post(ready.url, ENVELOPES_PATH, ready.body)
            if outcome.ok:
                await self._handed_on(peer_id, envelope_id)
                self._count("envelope", "ok", envelope_id, peer_id,
                            rows[0].attempts + 1 if rows else 1)
                return
            meta, rows = await self.db.query(lambda tx: (
                mailbox.envelope_meta(tx, envelope_id),
                federation.forward_rows(tx, peer_id, envelope_id)))
            if meta is None or not rows:
                return  # gone meanwhile (handed on by a concurrent push, or purged)
            await self._decide(outcome, rows, meta.expires_at, meta.back_to,
                               parse_routing(dsse.Envelope.from_json(meta.routing)), peer_id)
            return
        given = rows

        def read(tx: Tx) -> _Stored:
            todo = given if given is not None else federation.forward_rows(tx, peer_id,
                                                                            envelope_id)
            if not todo:  # handed on meanwhile: the sealed bytes need not be read
                return _Stored(todo, None, None, None, [], {})
            meta = mailbox.envelope_meta(tx, envelope_id)
            carried = federation.statements_of_kinds(tx, envelope_id, _FORWARD_KINDS)
            return _Stored(
                todo, meta, mailbox.sealed_of(tx, envelope_id) if meta else None,
                federation.peer_row(tx, peer_id), carried,
                self._card_map(tx, [meta.sender, *(s for s, _ in carried)]) if meta else {})

        stored = await self.db.query(read)
        rows, meta, sealed, peer, carried, known = (
            stored.rows, stored.meta, stored.sealed, stored.peer, stored.carried,
            stored.cards)
        if not rows:
            return
        seqs = [r.seq for r in rows]
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
        cards = _pick(known, [routing.sender, *(signer for signer, _ in forward)])
        body = forward_body(routing, sealed, (b for _, b in forward), cards)
        outcome = await self.client.post(peer.url, ENVELOPES_PATH, body)
        await self._decide(outcome, rows, meta.expires_at, meta.back_to, routing, peer_id)

    async def _handed_on(self, peer_id: str, envelope_id: str) -> None:
        """The peer confirmed: the forward row goes, and the ciphertext (one job of the
        node's group commit)."""
        await self.db.run(lambda tx: federation.forget_forward(tx, peer_id, envelope_id))

    async def _decide(self, outcome: Outcome, rows: list[OutboxRow], expires_at: int,
                      back_to: str | None, routing: Routing, peer_id: str) -> None:
        seqs = [r.seq for r in rows]
        if outcome.ok:
            await self._handed_on(peer_id, routing.id)
            self._count("envelope", "ok", routing.id, peer_id, rows[0].attempts + 1)
        elif outcome.transient:
            await self._retry(rows, outcome.error, expires_at, "envelope", routing.id,
                              peer_id)
        else:
            await self._give_up(routing, back_to, peer_id, seqs,
                                f"the next hop refused the envelope ({outcome.error})",
                                "refused")

    def _card_map(self, tx: Tx, signers: Sequence[str]) -> dict[str, bytes]:
        """Cards of ``signers`` known here (members, peers, cards met), and ours."""
        found = federation.card_bodies(tx, [i for i in dict.fromkeys(signers)
                                            if i != self.node.id])
        found[self.node.id] = self.node.card.to_json()
        return found

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
        self._event.set()  # the scan's timeout must cover the new due time
        self.metrics.pushes.labels(kind, "retry").inc()
        log.info("push failed; will retry", extra={
            "event": "federation.retry", "kind": kind, "envelope": envelope_id,
            "peer": peer_id, "attempts": failures, "error": error})

    async def _give_up(self, routing: Routing, back_to: str | None, peer_id: str,
                       seqs: list[int], reason: str, outcome: str) -> None:
        if await self.db.query(lambda tx: federation.handed_on(tx, routing.id, peer_id)):
            # A push queued again (relay.storage.federation.forward_again) of an
            # envelope the next hop had taken before: nothing failed to get through.
            async with self.db.write() as conn:
                await federation.delete_rows(conn, seqs)
                await federation.drop_sealed(conn, routing.id)
            self.metrics.pushes.labels("envelope", outcome).inc()
            log.info("repeated push given up; the next hop had the envelope", extra={
                "event": "federation.repeat_given_up", "envelope": routing.id,
                "peer": peer_id, "reason": reason})
            return
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
        def read(tx: Tx) -> tuple[list[OutboxRow], dict[str, tuple[str, bytes]],
                                  PeerRow | None, dict[str, bytes]]:
            pending = federation.pending_for(tx, peer_id, envelope_id)[:MAX_BACK]
            if not pending:
                return pending, {}, None, {}
            found = federation.statements_by_id(
                tx, [r.statement_id for r in pending if r.statement_id])
            return (pending, found, federation.peer_row(tx, peer_id),
                    self._card_map(tx, [signer for signer, _ in found.values()]))

        pending, found, peer, known = await self.db.query(read)
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
        outcome = await self._post_statements(peer, envelope_id, present, known)
        if outcome.transient and not outcome.ok:
            await self._retry(pending, outcome.error, None, "statements", envelope_id,
                              peer_id)
            return
        if outcome.ok or len(present) == 1 or outcome.error != _STATEMENT_REFUSED:
            await self.db.run(lambda tx: federation.forget_rows(tx, seqs))
            self._statements_done(outcome, envelope_id, peer_id, pending[0].attempts + 1)
            return
        # Refused for good because of a statement, and the push carried several: one
        # bad statement (a signer the previous hop does not accept, a version it does
        # not know) must not take the honest ones with it. Each goes alone, in the
        # order queued; at the first temporary failure the rest wait together, in
        # order, for the next attempt (an *opened* must not overtake its *delivered*,
        # nor a countersignature the *opened* it names).
        self._statements_done(outcome, envelope_id, peer_id, pending[0].attempts + 1)
        hold = self._now() + _SPLIT_HOLD_SECONDS
        async with self.db.write() as conn:
            # Other processes' scans leave the rows alone while this one splits.
            await federation.hold_rows(conn, seqs, until=hold)
        for index, row in enumerate(pending):
            found_row = found.get(row.statement_id) if row.statement_id else None
            alone = (await self._post_statements(peer, envelope_id, [found_row], known)
                     if found_row is not None else None)
            if alone is not None and alone.transient and not alone.ok:
                await self._retry(pending[index:], alone.error, None, "statements",
                                  envelope_id, peer_id)
                return
            await self.db.run(partial(federation.forget_rows, seqs=[row.seq]))
            if alone is not None:
                self._statements_done(alone, envelope_id, peer_id, row.attempts + 1)

    async def _post_statements(self, peer: PeerRow, envelope_id: str,
                               present: list[tuple[str, bytes]],
                               known: dict[str, bytes]) -> Outcome:
        cards = _pick(known, [signer for signer, _ in present])
        body = json_dumps({"envelope": envelope_id,
                           "statements": [_raw(b) for _, b in present],
                           "cards": [_raw(c) for c in cards]})
        return await self.client.post(peer.url, STATEMENTS_PATH, body)

    def _statements_done(self, outcome: Outcome, envelope_id: str, peer_id: str,
                         attempts: int) -> None:
        if outcome.ok:
            self._count("statements", "ok", envelope_id, peer_id, attempts)
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
