"""The operator's side of membership: issue invitations, list and revoke members.

Used by the CLI against the node's database (the node need not be running; on
SQLite the write waits for the serving process's lock, see storage.database)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from keys.card import Card
from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.encoding import b64url_encode

from .. import errors
from ..invitations import ROLES, SECRET_BYTES, Invitation, encode_invitation, secret_hash
from ..storage import members
from ..storage.database import Database
from ..storage.members import InvitationRow, MemberRow

#: An invitation travels out of band and is used within days; a month is generous.
MAX_INVITATION_LIFETIME = timedelta(days=30)
MAX_LABEL = 200
#: Refused in labels: controls, line and paragraph separators, surrogates, private use
#: and unassigned code points. (Other format characters stay: zero-width joiners are
#: part of how Persian and Indic names are written.)
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs", "Co", "Cn"})
#: Bidi embeddings, overrides and isolates: they reorder what follows on the line.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _displayable(label: str) -> bool:
    return not any(ch in _BIDI_CONTROLS or unicodedata.category(ch) in _REFUSED_CATEGORIES
                   for ch in label)


@dataclass(frozen=True)
class Issued:
    id: str
    text: str
    role: str
    expires: datetime


class Membership:
    def __init__(self, db: Database, node_card: Card, url: str, *, clock: Clock = SYSTEM_CLOCK,
                 random: Random = system_random) -> None:
        self.db = db
        self.node_card = node_card
        self.url = url
        self.clock = clock
        self.random = random

    async def invite(self, label: str, role: str, lifetime: timedelta) -> Issued:
        if role not in ROLES:
            raise errors.BadRequest(f"role must be one of {', '.join(ROLES)}")
        if not label.strip() or len(label) > MAX_LABEL:
            raise errors.BadRequest(f"the label must be 1 to {MAX_LABEL} characters")
        if not _displayable(label):
            # A newline, a terminal escape or a bidi override would forge or reorder
            # lines of `relay members`.
            raise errors.BadRequest("the label must be printable text: no line breaks, "
                                    "control characters or direction overrides")
        if not timedelta(minutes=1) <= lifetime <= MAX_INVITATION_LIFETIME:
            raise errors.BadRequest("an invitation must expire between 1 minute and 30 days "
                                    "from now")
        if not self.url:
            raise errors.ConfigError("the node has no url in relay.toml; invitations carry it")
        now = self.clock.now()
        secret = self.random(SECRET_BYTES)
        invitation_id = _invitation_id(self.random)
        invitation = Invitation(self.url, self.node_card.id, self.node_card.fingerprint,
                                secret, role, now + lifetime)
        async with self.db.write() as conn:
            await members.insert_invitation(
                conn, id=invitation_id, secret_hash=secret_hash(secret), label=label,
                role=role, created_at=int(now.timestamp()),
                expires_at=int(invitation.expires.timestamp()))
        return Issued(invitation_id, encode_invitation(invitation), role, invitation.expires)

    async def members(self) -> list[MemberRow]:
        async with self.db.read() as conn:
            return await members.list_members(conn)

    async def invitations(self) -> list[InvitationRow]:
        async with self.db.read() as conn:
            return await members.list_invitations(conn)

    async def revoke(self, ident: str) -> str:
        """Revoke a member, or a pending invitation, by id. Returns which it was."""
        now = int(self.clock.now().timestamp())
        async with self.db.write() as conn:
            if await members.revoke_member(conn, ident, now):
                return "member"
            if await members.revoke_invitation(conn, ident, now):
                return "invitation"
            row = await members.get_member(conn, ident)
        if row is not None:
            raise errors.Conflict(f"member {ident} is already revoked")
        raise errors.NotFound(f"no active member or pending invitation has id {ident}")


def _invitation_id(random: Random) -> str:
    """72 random bits in base64url, never beginning with ``-``: operators type these
    ids on command lines, where a leading ``-`` reads as an option (1 draw in 64)."""
    while True:
        candidate = b64url_encode(random(9))
        if not candidate.startswith("-"):
            return candidate

