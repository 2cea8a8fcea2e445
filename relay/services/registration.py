"""Joining the node with an invitation.

1. The invitation secret is hashed; the node looks up the hash and compares it in
   constant time. Unknown, forged, used, revoked and expired invitations get one
   and the same answer (403 ``invitation-invalid``).
2. The card's role must be the role the operator invited.
3. Claiming the invitation and creating the member happen in one transaction:
   two registrations racing with one invitation cannot both succeed.

The caller (handler) has already verified the card and the request signature by
the card's key (proof of possession).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from keys.card import Card
from keys.clock import SYSTEM_CLOCK, Clock
from keys.errors import DecodeError
from keys.identity import Identity

from .. import errors
from ..invitations import presented_secret, secret_hash
from ..storage import members
from ..storage.database import Database


@dataclass(frozen=True)
class Registered:
    id: str
    role: str
    label: str


class Registration:
    def __init__(self, db: Database, node: Identity, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.node = node
        self.clock = clock

    async def register(self, invitation: object, card: Card) -> Registered:
        try:
            secret = presented_secret(invitation)
        except DecodeError as exc:
            raise errors.BadRequest(f"malformed invitation: {exc}") from None
        if card.role not in ("delegation", "intermediary"):
            raise errors.Forbidden("only delegations and intermediaries can join as members")
        digest = secret_hash(secret)
        now = int(self.clock.now().timestamp())
        try:
            async with self.db.write() as conn:
                # Step 1.
                found = await members.invitation_by_hash(conn, digest)
                if found is None or not hmac.compare_digest(found.secret_hash, digest):
                    raise errors.InvitationInvalid(_INVALID)
                now_usable = (found.used_at is None and found.revoked_at is None
                              and found.expires_at > now)
                if not now_usable:
                    raise errors.InvitationInvalid(_INVALID)
                # Step 2.
                if found.role != card.role:
                    raise errors.InvitationInvalid("this invitation is for a different role")
                if await members.get_member(conn, card.id) is not None:
                    raise errors.Conflict("this identity is already registered here")
                # Step 3.
                if not await members.claim_invitation(conn, found.id, card.id, now):
                    raise errors.InvitationInvalid(_INVALID)
                await members.insert_member(
                    conn, id=card.id, role=card.role, label=found.label, card=card.to_json(),
                    signing_key=card.verify_key.raw, invitation_id=found.id, joined_at=now)
        except IntegrityError:
            raise errors.Conflict("this identity is already registered here") from None
        return Registered(card.id, card.role, found.label)


_INVALID = "this invitation is unknown, already used, revoked or expired"
