"""Accepting pushes from peer nodes: envelopes going forward, statements coming back.

An envelope pushed by peer P to this node N (``POST /v1/federation/envelopes``):

1. P signed the request with a pinned peer's key (the handler, through
   :meth:`Authenticator.verify_peer`); that P is still pinned and the request's nonce
   are checked in step 8's transaction (relay.services.auth.record).
2. Parse the envelope and the sealed bytes (size-limited).
3. N is on the route after the origin and P is the hop just before N
   (:func:`relay.rules.check_transit`).
4. An envelope id already stored here is answered 200 and nothing else happens: a
   retry or a replay never makes a second delivery, a second *relayed*, a second push.
5. The sender's card (carried with the envelope) verifies the envelope's signature,
   so the route read in step 3 is the one the sender signed; the sealed bytes are its
   content; it is valid now and addressed as its header says.
6. The statements carried with it (*accepted* by the origin, *relayed* by the hops
   before N) each verify with their signer's card and stand where they claim.
7. At the destination every recipient is an active member; elsewhere, N peers with
   the next hop.
8. One transaction (a job of the node's group commit, relay.storage.committer):
   P is still pinned and the nonce is new (recorded even if what follows is
   refused, as for a member's submission); then, in a savepoint, the envelope (with
   P as the hop statements go back to), the carried statements and cards; at the
   destination one delivery per recipient; elsewhere N's
   *relayed* statement, a push of the envelope to the next hop and a push of the
   *relayed* statement back to P. After the commit the forward push is handed to
   the outbox worker ready to send (:class:`Handoff`).

Statements pushed back by peer P to N (``POST /v1/federation/statements``): N holds
the envelope and P is the hop after N on its route; every statement verifies with
its signer's card and comes from a party after N (:func:`relay.rules.check_carried`);
a *countersigned* one names an *opened* statement. In one transaction (a group-commit
job) the new ones are stored, an intermediary countersigns each new *opened*
statement, and all that is new goes on back towards the origin. Statements already
stored are skipped, so a retried push stores nothing twice.

Any refusal happens before the transaction or inside its savepoint: nothing is
half-stored. A push refused before its transaction, or answered from what is stored
(step 4), records its nonce in a job of its own, which answers first that P is no
longer pinned or that the request is a replay: one commit per push either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from keys import dsse
from keys.card import MAX_CARD_BYTES, Card, load_card
from keys.clock import SYSTEM_CLOCK, Clock
from keys.envelope import Routing, check_content, parse_routing, verify_routing
from keys.errors import BackchannelError, DecodeError, VerificationError
from keys.identity import Identity
from keys.ids import is_digest_id
from keys.statements import Statement, load_statement, make_statement, verify_statement

from .. import errors
from ..notify import Announcer, Notice, notify_in_job
from ..rules import Slot, check_carried, check_carried_once, check_fresh, check_transit, slot_of
from ..storage import federation, mailbox, members
from ..storage.committer import IntegrityError as JobIntegrityError
from ..storage.committer import Tx
from ..storage.database import Database
from ..storage.federation import PeerRow
from ..storage.mailbox import EnvelopeMeta
from .auth import Peer, Proof, record
from .handoff import Handoff, forward_body, hand_over
from .mailbox import parse_statement
from .submission import parse_submission

#: A route has at most 10 nodes: an *accepted* and 9 *relayed* travel forward.
MAX_CARRIED: Final = 32
#: Back: per recipient (at most 32) a *delivered*, an *opened* and up to 8
#: *countersigned*, plus the nodes' own statements; pushes are cut to this size.
MAX_BACK: Final = 128
MAX_CARDS: Final = 64
#: Verified cards remembered (by their exact envelope) at most; the oldest goes first.
MAX_VERIFIED_CARDS: Final = 4096
_NODE_KINDS: Final = frozenset({"accepted", "relayed", "delivered", "countersigned", "failed"})
#: A statements job's outcome when a constraint broke (its savepoint rolled back).
_RACE: Final = "race"


@dataclass(frozen=True)
class Received:
    id: str
    created: bool


@dataclass(frozen=True)
class _Stored:
    """Step 4's answer: the envelope is stored already (its nonce still to record).
    At an intermediary, with the next hop and the pushed sealed bytes (checked against
    the envelope's content id), so that the envelope can travel on again
    (relay.storage.federation.forward_again)."""

    id: str
    next_hop: str | None = None
    sealed: bytes | None = None


class _Refused(Exception):
    """A refusal inside the accepting job, after the request's nonce was recorded."""

    def __init__(self, problem: errors.RelayError) -> None:
        self.problem = problem


def parse_cards(value: object, now: datetime,
                verified: dict[dsse.Envelope, Card] | None = None) -> dict[str, Card]:
    """Cards carried in a push, by identity id (self-signatures checked; expiry is
    judged against each statement's time by whoever verifies a bundle).

    ``verified``: cards already verified, by envelope. Read without an expiry or
    creation check, a card is a function of its envelope's exact bytes (payload and
    signatures), so a card seen before is not verified again: every push carries the
    sender's and the nodes' cards, the same few over and over."""
    if value is None:
        return {}
    if not isinstance(value, list) or len(value) > MAX_CARDS:
        raise errors.BadRequest(f"cards must be a list of at most {MAX_CARDS}")
    cards: dict[str, Card] = {}
    for item in value:
        try:
            envelope = dsse.Envelope.from_dict(item, max_payload=MAX_CARD_BYTES)
            card = verified.get(envelope) if verified is not None else None
            if card is None:
                card = load_card(envelope, now=now, allow_expired=True, check_created=False)
                if verified is not None:
                    if len(verified) >= MAX_VERIFIED_CARDS:
                        del verified[next(iter(verified))]
                    verified[envelope] = card
        except BackchannelError as exc:
            raise errors.BadRequest(f"invalid card: {exc}") from None
        cards[card.id] = card
    return cards


def parse_statements(value: object, limit: int) -> list[Statement]:
    if not isinstance(value, list) or len(value) > limit:
        raise errors.BadRequest(f"statements must be a list of at most {limit}")
    return [parse_statement(item) for item in value]


def check_signed(statement: Statement, card: Card | None) -> None:
    """``statement`` verifies with ``card``, the card of the identity it names as ``by``
    (identity ids derive from keys, so nobody else's card can match)."""
    if card is None:
        raise errors.StatementInvalid(f"no card was given for the signer of a "
                                      f"{statement.kind} statement")
    if (card.role == "node") != (statement.kind in _NODE_KINDS):
        raise errors.StatementInvalid(f"a {statement.kind} statement is signed by the wrong "
                                      "kind of party")
    try:
        verify_statement(statement, card.verify_key)
    except VerificationError:
        raise errors.StatementInvalid(f"a {statement.kind} statement by {statement.by} does "
                                      "not verify: it was altered or forged") from None


def card_payload(cards: Iterable[Card]) -> dict[str, bytes]:
    return {c.id: c.to_json() for c in cards}


def _slots(rows: Iterable[tuple[str, str, str, str | None, bytes | None]]
           ) -> tuple[set[Slot], set[str]]:
    """The slots taken by stored statements (storage.federation.statement_rows), and
    the ids of the stored *opened* ones; a *countersigned* one's subject is in its body."""
    taken: set[Slot] = set()
    opened: set[str] = set()
    for ident, kind, signer, recipient, body in rows:
        subject = recipient or ""
        if body is not None:
            subject = load_statement(body).fields["statement"]
        elif kind == "opened":
            opened.add(ident)
        taken.add((kind, signer, subject))
    return taken, opened


def add_statements(tx: Tx, envelope_id: str, statements: Iterable[Statement]) -> None:
    """:func:`insert_statements` inside a group-commit job."""
    for st in statements:
        mailbox.add_statement(tx, id=st.id, envelope_id=envelope_id, kind=st.kind,
                              signer=st.by, recipient=st.fields.get("recipient"),
                              at=int(st.at.timestamp()), body=st.to_json())


async def insert_statements(conn: AsyncConnection, envelope_id: str,
                            statements: Iterable[Statement]) -> None:
    for st in statements:
        await mailbox.insert_statement(conn, id=st.id, envelope_id=envelope_id, kind=st.kind,
                                       signer=st.by, recipient=st.fields.get("recipient"),
                                       at=int(st.at.timestamp()), body=st.to_json())


class Federation:
    def __init__(self, db: Database, node: Identity, announcer: Announcer, *,
                 max_sealed: int, clock: Clock = SYSTEM_CLOCK,
                 wake: Callable[[], None] = lambda: None,
                 handoff: Callable[[Handoff], bool] | None = None) -> None:
        self.db = db
        self.node = node
        self.announcer = announcer
        self.max_sealed = max_sealed
        self.clock = clock
        self.wake = wake
        self.handoff = handoff
        self._verified: dict[dsse.Envelope, Card] = {}

    def _not_given(self, ids: Iterable[str], given: Mapping[str, Card]) -> list[str]:
        """Which cards of ``ids`` must be read here (not carried, not ours)."""
        return [i for i in dict.fromkeys(ids) if i not in given and i != self.node.id]

    def _cards_for(self, given: Mapping[str, Card], bodies: Mapping[str, bytes]
                   ) -> dict[str, Card]:
        """The cards carried in the request, ours, and those read here (``bodies``)."""
        found = dict(given)
        found[self.node.id] = self.node.card
        for ident, body in bodies.items():
            found[ident] = load_card(body, now=self.clock.now(), allow_expired=True,
                                     check_created=False)
        return found

    # --- envelopes going forward -------------------------------------------------------

    async def settle(self, proof: Proof) -> None:
        """The request's nonce in a job of its own (a push with no job of its own)."""
        await self.db.run(lambda tx: record(tx, proof), savepoint=False)

    async def accept_envelope(self, peer: Peer, proof: Proof, doc: Mapping[str, Any]
                              ) -> Received:
        """Steps 2-8; ``proof``: the request's nonce (relay.services.auth), recorded in
        step 8's transaction."""
        try:
            outcome = await self._accept_envelope(peer, proof, doc)
        except _Refused as refused:
            raise refused.problem from None  # refused in the job: the nonce is recorded
        except errors.RelayError:
            await self.settle(proof)  # a replay or an unpinned peer is answered as such
            raise
        if isinstance(outcome, _Stored):
            if await self._settle_stored(proof, outcome):
                self.wake()
            return Received(outcome.id, False)
        return outcome

    async def _settle_stored(self, proof: Proof, stored: _Stored) -> bool:
        """The nonce of a push of an envelope held here, and at an intermediary the push
        to the next hop queued again if the journey beyond may have been broken by a
        restore (as at the origin, relay.services.submission). Returns whether it was."""
        now = int(self.clock.now().timestamp())

        def job(tx: Tx) -> bool:
            record(tx, proof)
            if stored.next_hop is None or stored.sealed is None:
                return False
            if federation.peer_row(tx, stored.next_hop) is None:
                return False
            return federation.forward_again(tx, stored.next_hop, stored.id, stored.sealed,
                                            self.node.id, now)

        return bool(await self.db.run(job, savepoint=False))

    async def _accept_envelope(self, peer: Peer, proof: Proof, doc: Mapping[str, Any]
                               ) -> Received | _Stored:
        # Step 2.
        routing, sealed, header = parse_submission(doc["envelope"], doc["sealed"],
                                                   max_sealed=self.max_sealed)
        # Step 3.
        check_transit(routing, node_id=self.node.id, pusher=peer.id)
        # Parsed before step 4 so that one read serves steps 4 to 7; a refusal waits
        # until step 4 has answered a repeated push with 200.
        refusal: errors.RelayError | None = None
        given: dict[str, Card] = {}
        carried: list[Statement] = []
        try:
            given = parse_cards(doc.get("cards"), self.clock.now(), self._verified)
            carried = parse_statements(doc.get("statements", []), MAX_CARRIED)
        except errors.RelayError as exc:
            refusal = exc
        next_hop = routing.next_hop(self.node.id)
        wanted = self._not_given([routing.sender, *(s.by for s in carried)], given)

        def read(tx: Tx) -> tuple[dict[str, bytes], PeerRow | None] | None:
            # Step 4.
            if mailbox.envelope_meta(tx, routing.id) is not None:
                return None
            return (federation.card_bodies(tx, wanted),
                    None if next_hop is None else federation.peer_row(tx, next_hop))

        found = await self.db.query(read)
        if found is None:
            if next_hop is None or refusal is not None:
                return _Stored(routing.id)
            try:
                check_content(routing, sealed)
            except DecodeError:
                return _Stored(routing.id)  # answered as before, but carried no further
            return _Stored(routing.id, next_hop, sealed)
        if refusal is not None:
            raise refusal
        cards = self._cards_for(given, found[0])
        next_peer = found[1]
        # Step 5.
        sender = cards.get(routing.sender)
        if sender is None:
            raise errors.EnvelopeInvalid("the sender's card did not come with the envelope")
        try:
            verify_routing(routing, sender.verify_key)
        except VerificationError:
            raise errors.EnvelopeInvalid("the envelope's signature does not verify with its "
                                         "sender's card: it was altered on the way") from None
        try:
            check_content(routing, sealed)
        except DecodeError as exc:
            raise errors.EnvelopeInvalid(str(exc)) from None
        now = self.clock.now()
        check_fresh(routing, header, now=now)
        # Step 6.
        for statement in carried:
            check_carried(statement, routing, node_id=self.node.id, forward=True)
            check_signed(statement, cards.get(statement.by))
        check_carried_once(carried)
        # Step 7 (recipients: inside the transaction).
        if next_hop is not None and next_peer is None:
            raise errors.Unroutable("this node does not peer with the next hop on the "
                                    f"envelope's route ({next_hop})")
        relayed = None
        if next_hop is not None:
            relayed = make_statement("relayed", routing.id, self.node.signing_key,
                                     clock=self.clock, previous=peer.id, next=next_hop)
        # Step 8.
        keep = card_payload(c for i, c in cards.items()
                            if i != self.node.id and (i == routing.sender
                                                      or any(s.by == i for s in carried)))
        notices = await self._store(routing, sealed, peer, proof, carried, keep, relayed,
                                    int(now.timestamp()))
        if notices is None:  # stored already, or a concurrent push of it won
            return Received(routing.id, False)
        self.announcer.after_commit(notices)
        if relayed is not None and next_peer is not None:
            hand_over(self.handoff, partial(self._handoff, routing, sealed, carried, relayed,
                                            cards, next_peer.id, next_peer.url))
        if relayed is not None:
            self.wake()  # for the relayed statement going back to the pusher
        return Received(routing.id, True)

    def _handoff(self, routing: Routing, sealed: bytes, carried: list[Statement],
                 relayed: Statement, cards: Mapping[str, Card], peer: str, url: str
                 ) -> Handoff:
        """The push the outbox worker would build from storage: the statements that
        stand before the next hop (those carried, in order, then ours) and the cards of
        the sender and their signers."""
        hops = routing.hops
        here = hops.index(self.node.id)
        forward = [s for s in [*dict((s.id, s) for s in carried).values(), relayed]
                   if s.by not in hops or hops.index(s.by) <= here]
        signers = dict.fromkeys([routing.sender, *(s.by for s in forward)])
        body = forward_body(routing, sealed, (s.to_json() for s in forward),
                            (cards[i].to_json() for i in signers if i in cards))
        return Handoff(peer, routing.id, url, body, int(routing.expires.timestamp()))

    async def _store(self, routing: Routing, sealed: bytes, peer: Peer, proof: Proof,
                     carried: list[Statement], cards: dict[str, bytes],
                     relayed: Statement | None, now: int) -> list[Notice] | None:
        """Step 8 as one job of the node's group commit (relay.storage.committer);
        None when the envelope was already stored. Raises :class:`_Refused` for a
        refusal after the nonce was recorded."""
        carried = list({s.id: s for s in carried}.values())

        def job(tx: Tx) -> list[Notice] | errors.RelayError | None:
            record(tx, proof)
            try:
                with tx.savepoint():
                    return store(tx)
            except errors.RelayError as exc:
                return exc  # refused: the nonce stays recorded
            except JobIntegrityError:
                return None  # a concurrent push of the same envelope won

        def store(tx: Tx) -> list[Notice] | None:
            # The envelope id covers the content id: one lookup answers both "stored
            # already?" and "this content under another envelope?".
            holder = mailbox.content_holder(tx, routing.content)
            if holder == routing.id:
                return None
            if holder is not None:
                raise errors.Conflict("this content is already stored under another envelope")
            if relayed is None and members.active_of(tx, routing.to) != set(routing.to):
                raise errors.NotFound("a recipient is not a member of this node")
            federation.add_transit_envelope(
                tx, id=routing.id, content_id=routing.content, sender=routing.sender,
                routing=routing.envelope.to_json(), sealed=sealed, received_at=now,
                expires_at=int(routing.expires.timestamp()), back_to=peer.id)
            known = federation.stored_ids(tx, [s.id for s in carried])
            add_statements(tx, routing.id, [s for s in carried if s.id not in known])
            federation.keep_cards(tx, cards, now)
            if relayed is None:
                notices: list[Notice] = []

                def deliver(tx: Tx) -> None:
                    # At the end of the batch, as submissions do: on PostgreSQL the
                    # inbox-cursor lock is then held from the batch's first delivery
                    # to its commit only, never while other jobs run (which could
                    # block other batches or deadlock with them).
                    cursors = mailbox.add_deliveries(tx, routing.id, routing.to)
                    notices.extend(Notice(member, cursor, routing.id)
                                   for member, cursor in cursors)
                    notify_in_job(tx, notices)

                tx.later(deliver)
                return notices
            add_statements(tx, routing.id, [relayed])
            federation.push_later(tx, relayed.fields["next"], routing.id, [None], now)
            federation.push_later(tx, peer.id, routing.id, [relayed.id], now)
            return []

        # No savepoint around the whole job: record() writes only when it succeeds,
        # and the envelope's work has a savepoint of its own.
        try:
            outcome = await self.db.run(job, savepoint=False)
        except IntegrityError:
            return None  # a concurrent push of the same envelope won
        if isinstance(outcome, errors.RelayError):
            raise _Refused(outcome)
        return outcome

    # --- statements coming back --------------------------------------------------------

    async def accept_statements(self, peer: Peer, proof: Proof, doc: Mapping[str, Any]
                                ) -> int:
        """``proof``: the request's nonce (relay.services.auth), recorded in the
        transaction that stores the statements."""
        try:
            return await self._accept_statements(peer, proof, doc)
        except _Refused as refused:
            raise refused.problem from None  # refused in the job: the nonce is recorded
        except errors.RelayError:
            await self.settle(proof)  # a replay or an unpinned peer is answered as such
            raise

    async def _accept_statements(self, peer: Peer, proof: Proof, doc: Mapping[str, Any]
                                 ) -> int:
        envelope_id = doc["envelope"]
        if not is_digest_id(envelope_id):
            raise errors.BadRequest("envelope must be an envelope id")
        statements = parse_statements(doc["statements"], MAX_BACK)
        given = parse_cards(doc.get("cards"), self.clock.now(), self._verified)
        wanted = self._not_given((s.by for s in statements), given)
        targets = {s.fields["statement"] for s in statements if s.kind == "countersigned"}
        opened_here = {s.id for s in statements if s.kind == "opened"}

        def read(tx: Tx) -> tuple[EnvelopeMeta, dict[str, bytes], set[str]] | None:
            meta = mailbox.envelope_meta(tx, envelope_id)
            if meta is None:
                return None
            return (meta, federation.card_bodies(tx, wanted),
                    federation.stored_ids(tx, sorted(targets - opened_here), kind="opened",
                                          envelope_id=envelope_id))

        found = await self.db.query(read)
        if found is None:
            raise errors.NotFound("no such envelope")
        meta, bodies, stored = found
        routing = parse_routing(dsse.Envelope.from_json(meta.routing))
        if routing.next_hop(self.node.id) != peer.id:
            raise errors.Forbidden("statements about this envelope come back only from "
                                   "the next hop on its route")
        cards = self._cards_for(given, bodies)
        for statement in statements:
            check_carried(statement, routing, node_id=self.node.id, forward=False)
            check_signed(statement, cards.get(statement.by))
        missing = targets - opened_here - stored
        if missing:
            raise errors.StatementInvalid("a countersigned statement names a statement this "
                                          "node has not seen")
        keep = card_payload(c for i, c in cards.items()
                            if i != self.node.id and any(s.by == i for s in statements))
        intermediary = self.node.id in routing.route
        now = int(self.clock.now().timestamp())
        # Signed before the job (which runs in the writer): countersignatures for the
        # opened statements, used for those that turn out to be new.
        counters = {s.id: make_statement("countersigned", routing.id, self.node.signing_key,
                                         clock=self.clock, statement=s.id)
                    for s in statements if intermediary and s.kind == "opened"}
        back_to = meta.back_to

        def job(tx: Tx) -> list[Statement] | str:
            record(tx, proof)
            try:
                with tx.savepoint():
                    return store(tx)
            except JobIntegrityError:
                return _RACE

        def store(tx: Tx) -> list[Statement]:
            # One statement per slot (relay.rules.slot_of): the first one stored stays;
            # another in its place is neither stored nor passed on (and an identical
            # retry is no news). Only the signer can sign for its slots.
            # Concurrent pushes about one envelope (PostgreSQL runs batches side by
            # side) take turns here, each reading what the other stored.
            federation.lock_statements(tx, routing.id)
            taken, opened = _slots(federation.statement_rows(tx, routing.id))
            new = []
            # Countersignatures last: each must name an *opened* stored or kept here
            # (one whose slot was taken is not passed on, nor may its countersignature
            # be, or the previous hop would refuse the whole push).
            for statement in sorted(statements, key=lambda s: s.kind == "countersigned"):
                slot = slot_of(statement)
                if slot in taken or (statement.kind == "countersigned"
                                     and statement.fields["statement"] not in opened):
                    continue
                taken.add(slot)
                new.append(statement)
                if statement.kind == "opened":
                    opened.add(statement.id)
            new += [counters[s.id] for s in new if s.id in counters]
            add_statements(tx, routing.id, new)
            federation.keep_cards(tx, keep, now)
            if back_to is not None:
                federation.push_later(tx, back_to, routing.id, [s.id for s in new], now)
            return new

        # No savepoint around the whole job: record() writes only when it succeeds, and
        # the statements' work has a savepoint of its own.
        outcome = await self.db.run(job, savepoint=False)
        if isinstance(outcome, str):
            # Pushes about one envelope take turns (lock_statements), so no other push
            # can have stored these first: whatever broke a constraint rolled back the
            # whole push, which must not be answered 2xx (the pusher would forget it).
            # A 500 is retried.
            raise _Refused(errors.NodeError("the statements could not be stored"))
        if outcome and back_to is not None:
            self.wake()
        return len(outcome)
