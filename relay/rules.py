"""What the node accepts, as plain functions over parsed objects (no I/O).

The services call these after parsing and before touching storage, so every
rejection happens before anything is written.
"""

from __future__ import annotations

from datetime import datetime

from keys.card import CLOCK_SKEW
from keys.envelope import Routing
from keys.seal import SealedHeader
from keys.statements import Statement

from .errors import BadRequest, EnvelopeExpired, Forbidden, StatementInvalid, Unroutable


def check_submission(routing: Routing, sealed: SealedHeader, *, node_id: str, caller: str,
                     now: datetime) -> None:
    """Rules for an envelope submitted by member ``caller`` to node ``node_id``.

    1. The sender is the caller (a member submits only its own envelopes).
    2. Origin and destination are this node, with no intermediaries: federation to
       peer nodes is not offered by this node yet.
    3. The envelope is valid now (created no later than the clock skew allows,
       not expired).
    4. The sealed header's recipients are exactly the envelope's ``to``: otherwise
       no recipient could open it (keys.seal checks the same), so storing it would
       only waste space.

    The caller must already have checked the sender's signature
    (keys.envelope.verify_routing) and the content id (keys.envelope.check_content).
    Recipients being active members is checked against storage by the service.
    """
    # Step 1.
    if routing.sender != caller:
        raise Forbidden("members may only submit envelopes they signed themselves")
    # Step 2.
    if routing.origin != node_id or routing.destination != node_id or routing.route:
        raise Unroutable("the envelope must name this node as origin and destination, "
                         "with no intermediaries")
    # Step 3.
    if routing.created > now + CLOCK_SKEW:
        raise EnvelopeExpired("the envelope was created in the future; check the clock")
    if routing.expires <= now:
        raise EnvelopeExpired("the envelope has expired")
    # Step 4.
    if set(sealed.recipient_ids) != set(routing.to):
        raise BadRequest("the sealed message's recipients differ from the envelope's")


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
