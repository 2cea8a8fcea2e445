"""What the node accepts, as plain functions over parsed objects (no I/O).

The services call these after parsing and before touching storage, so every
rejection happens before anything is written.
"""

from __future__ import annotations

from datetime import datetime

from keys.card import CLOCK_SKEW
from keys.envelope import Routing
from keys.ids import is_identity_id
from keys.seal import SealedHeader
from keys.statements import Statement

from .errors import BadRequest, EnvelopeExpired, Forbidden, StatementInvalid, Unroutable


def check_submission(routing: Routing, sealed: SealedHeader, *, node_id: str, caller: str,
                     now: datetime) -> None:
    """Rules for an envelope submitted by member ``caller`` to node ``node_id``.

    1. The sender is the caller (a member submits only its own envelopes).
    2. The origin is this node. An envelope for this node's own members names no
       intermediaries (a route that leaves and comes back is a loop). Whether this
       node peers with the next hop is checked by the service against storage.
    3. The envelope is valid now (created no later than the clock skew allows,
       not expired).
    4. The sealed header's recipients are exactly the envelope's ``to``: otherwise
       no recipient could open it (keys.seal checks the same), so storing it would
       only waste space.
    5. Every recipient and node it names is an identity id (the keys layer takes any
       short ASCII id; what is looked up must be one that can exist).

    The caller must already have checked the sender's signature
    (keys.envelope.verify_routing) and the content id (keys.envelope.check_content).
    Recipients being active members is checked against storage by the service.
    """
    # Step 1.
    if routing.sender != caller:
        raise Forbidden("members may only submit envelopes they signed themselves")
    # Step 2.
    if routing.origin != node_id:
        raise Unroutable("the envelope must name this node (the sender's home node) as "
                         "its origin")
    if routing.destination == node_id and routing.route:
        raise Unroutable("an envelope for this node's own members cannot pass through "
                         "intermediaries")
    # Steps 3 to 5.
    _check_envelope(routing, sealed, now)


def _check_envelope(routing: Routing, sealed: SealedHeader, now: datetime) -> None:
    # PostgreSQL fails on a NUL in an id rather than finding nothing.
    if not all(is_identity_id(i) for i in (*routing.to, *routing.hops)):
        raise BadRequest("the envelope names a recipient or node by something that is not "
                         "an identity id")
    if routing.created > now + CLOCK_SKEW:
        raise EnvelopeExpired("the envelope was created in the future; check the clock")
    if routing.expires <= now:
        raise EnvelopeExpired("the envelope has expired")
    if set(sealed.recipient_ids) != set(routing.to):
        raise BadRequest("the sealed message's recipients differ from the envelope's")


def check_fresh(routing: Routing, sealed: SealedHeader, *, now: datetime) -> None:
    """An envelope pushed by a peer is valid now and its sealed header's recipients are
    the envelope's (as for a submission)."""
    _check_envelope(routing, sealed, now)


def check_transit(routing: Routing, *, node_id: str, pusher: str) -> None:
    """Where an envelope pushed to node ``node_id`` by the peer node ``pusher`` may come from.

    1. This node is on the route after the origin (the origin takes envelopes from its
       members only).
    2. The pusher is the hop just before this node: a node never accepts an envelope
       that skipped a hop, or that comes from a node the sender did not name there.

    Only a route read from an envelope whose sender's signature verified is the
    sender's: the caller checks that before storing anything (a known envelope id
    already covers the exact payload).
    """
    hops = routing.hops
    # Step 1.
    if node_id not in hops or node_id == routing.origin:
        raise Unroutable("this node is not on the envelope's route")
    # Step 2.
    expected = hops[hops.index(node_id) - 1]
    if pusher != expected:
        raise Unroutable(f"the envelope skips a hop: this node takes it only from the node "
                         f"before it on the route ({expected})")


def _position(statement: Statement, routing: Routing) -> int:
    hops = routing.hops
    if statement.by not in hops:
        raise StatementInvalid(f"a {statement.kind} statement is signed by a node that is "
                               "not on the envelope's route")
    return hops.index(statement.by)


def _check_relayed(statement: Statement, routing: Routing, index: int) -> None:
    hops = routing.hops
    if index == len(hops) - 1:
        raise StatementInvalid(f"a {statement.kind} statement is signed by the destination, "
                               "which hands envelopes to its members instead")
    fields = statement.fields
    if fields["next"] != hops[index + 1]:
        raise StatementInvalid(f"a {statement.kind} statement names the wrong next hop")
    if statement.kind == "relayed":
        previous = routing.sender if index == 0 else hops[index - 1]
        if fields["previous"] != previous:
            raise StatementInvalid("a relayed statement names the wrong previous hop")


def check_carried(statement: Statement, routing: Routing, *, node_id: str,
                  forward: bool) -> None:
    """Is ``statement`` one that a peer may hand to node ``node_id`` about ``routing``?

    *Forward* (with the envelope, from the previous hop): the origin's *accepted* for
    the envelope's sender, and *relayed* statements of the hops before this node.
    *Back* (from the next hop): statements of the parties after this node -- *relayed*,
    *failed* and (intermediaries only) *countersigned* by later nodes, *delivered* by
    the destination to a recipient, *opened* by a recipient itself.

    A *relayed* names the hop before the signer (the sender, for the origin) and the
    hop after it; a *failed* names the hop after it. Signatures are checked by the
    caller, with the signer's card. Raises :class:`StatementInvalid`.
    """
    if statement.envelope != routing.id:
        raise StatementInvalid("a statement names another envelope")
    hops = routing.hops
    here = hops.index(node_id)
    kind = statement.kind
    if kind in ("delivered", "opened"):
        recipient = statement.fields["recipient"]
        if forward or recipient not in routing.to:
            raise StatementInvalid(f"a {kind} statement does not belong here")
        if kind == "delivered" and statement.by != routing.destination:
            raise StatementInvalid("a delivered statement is not signed by the destination")
        if kind == "opened" and statement.by != recipient:
            raise StatementInvalid("an opened statement is not signed by its recipient")
        return
    if kind == "accepted":
        if not forward or statement.by != routing.origin \
                or statement.fields["sender"] != routing.sender:
            raise StatementInvalid("an accepted statement does not belong here")
        return
    index = _position(statement, routing)
    if forward and (kind != "relayed" or index >= here):
        raise StatementInvalid(f"a {kind} statement cannot travel with the envelope from "
                               "this place on the route")
    if not forward and index <= here:
        raise StatementInvalid(f"a {kind} statement from a node before this one cannot "
                               "come back from the next hop")
    if kind in ("relayed", "failed"):
        _check_relayed(statement, routing, index)
    elif kind == "countersigned" and statement.by not in routing.route:
        raise StatementInvalid("only intermediaries countersign")


#: What a party states about an envelope once: (kind, signer, subject), the subject
#: being the recipient (*delivered*, *opened*) or the statement countersigned.
Slot = tuple[str, str, str]


def slot_of(statement: Statement) -> Slot:
    """A signer states each thing about an envelope once: it accepts or relays it, or
    fails to pass it on, once; the destination delivers it to a recipient once; a
    recipient opens it once; an intermediary countersigns an *opened* once. Any
    second statement in the same slot (another time, another reason) adds nothing a
    party could rely on, and unchecked it would let one signer fill the nodes on the
    way back with as many as it cares to sign."""
    fields = statement.fields
    return (statement.kind, statement.by,
            fields.get("recipient") or fields.get("statement") or "")


def check_carried_once(statements: list[Statement]) -> None:
    """Forward, an envelope carries one statement per slot: the origin's *accepted*
    and one *relayed* per hop before this node (at most ten in all). More would not
    be something an honest hop sends, and passed on they would exceed what the next
    hop takes, which would refuse the envelope for a fault that is not its own.
    Raises :class:`StatementInvalid`."""
    seen: set[Slot] = set()
    for statement in statements:
        slot = slot_of(statement)
        if slot in seen:
            raise StatementInvalid(f"two {statement.kind} statements by {statement.by} "
                                   "travel with the envelope")
        seen.add(slot)


def check_opened(statement: Statement, *, envelope_id: str, caller: str) -> None:
    """An *opened* statement presented with an acknowledgement must be about this
    envelope, by this caller, for this caller. (Its signature is checked by the
    service against the caller's card.)"""
    if statement.kind != "opened":
        raise StatementInvalid("an acknowledgement carries an opened statement")
    if statement.envelope != envelope_id:
        raise StatementInvalid("the opened statement names another envelope")
    if statement.by != caller or statement.fields.get("recipient") != caller:
        raise StatementInvalid("the opened statement must be signed by and name the caller")
