"""Members and invitations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .committer import Tx
from .schema import invitations, members

ACTIVE = "active"
REVOKED = "revoked"


@dataclass(frozen=True)
class MemberRow:
    id: str
    role: str
    label: str
    card: bytes
    signing_key: bytes
    status: str
    invitation_id: str
    joined_at: int
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class InvitationRow:
    id: str
    secret_hash: bytes
    label: str
    role: str
    created_at: int
    expires_at: int
    used_at: int | None
    used_by: str | None
    revoked_at: int | None


async def insert_invitation(conn: AsyncConnection, *, id: str, secret_hash: bytes, label: str,
                            role: str, created_at: int, expires_at: int) -> None:
    await conn.execute(insert(invitations).values(
        id=id, secret_hash=secret_hash, label=label, role=role, created_at=created_at,
        expires_at=expires_at))


async def invitation_by_hash(conn: AsyncConnection, secret_hash: bytes) -> InvitationRow | None:
    row = (await conn.execute(
        select(invitations).where(invitations.c.secret_hash == secret_hash))).first()
    return InvitationRow(**row._mapping) if row is not None else None


async def list_invitations(conn: AsyncConnection) -> list[InvitationRow]:
    rows = await conn.execute(select(invitations).order_by(invitations.c.created_at))
    return [InvitationRow(**row._mapping) for row in rows]


async def claim_invitation(conn: AsyncConnection, invitation_id: str, member_id: str,
                           now: int) -> bool:
    """Mark the invitation used, if it still can be; False if another request won."""
    result = await conn.execute(
        update(invitations)
        .where(invitations.c.id == invitation_id, invitations.c.used_at.is_(None),
               invitations.c.revoked_at.is_(None), invitations.c.expires_at > now)
        .values(used_at=now, used_by=member_id))
    return result.rowcount == 1


async def revoke_invitation(conn: AsyncConnection, invitation_id: str, now: int) -> bool:
    result = await conn.execute(
        update(invitations)
        .where(invitations.c.id == invitation_id, invitations.c.used_at.is_(None),
               invitations.c.revoked_at.is_(None))
        .values(revoked_at=now))
    return result.rowcount == 1


async def get_member(conn: AsyncConnection, member_id: str) -> MemberRow | None:
    row = (await conn.execute(select(members).where(members.c.id == member_id))).first()
    return MemberRow(**row._mapping) if row is not None else None


@dataclass(frozen=True)
class MemberKey:
    id: str
    role: str
    signing_key: bytes
    active: bool


async def recent_keys(conn: AsyncConnection, limit: int) -> list[MemberKey]:
    """The keys of the ``limit`` members who joined last (for warming the key cache
    at start; no cards: 100,000 of them would be hundreds of MiB)."""
    rows = await conn.execute(
        select(members.c.id, members.c.role, members.c.signing_key, members.c.status)
        .order_by(members.c.joined_at.desc(), members.c.id).limit(limit))
    return [MemberKey(r.id, r.role, bytes(r.signing_key), r.status == ACTIVE) for r in rows]


async def insert_member(conn: AsyncConnection, *, id: str, role: str, label: str, card: bytes,
                        signing_key: bytes, invitation_id: str, joined_at: int) -> None:
    await conn.execute(insert(members).values(
        id=id, role=role, label=label, card=card, signing_key=signing_key, status=ACTIVE,
        invitation_id=invitation_id, joined_at=joined_at))


async def list_members(conn: AsyncConnection) -> list[MemberRow]:
    rows = await conn.execute(select(members).order_by(members.c.joined_at, members.c.id))
    return [MemberRow(**row._mapping) for row in rows]


async def revoke_member(conn: AsyncConnection, member_id: str, now: int) -> bool:
    result = await conn.execute(
        update(members).where(members.c.id == member_id, members.c.status == ACTIVE)
        .values(status=REVOKED, revoked_at=now))
    return result.rowcount == 1


async def active_among(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    wanted = list(ids)
    rows = await conn.execute(select(members.c.id).where(members.c.id.in_(wanted),
                                                         members.c.status == ACTIVE))
    return {row.id for row in rows}


# --- inside group-commit jobs (relay.storage.committer) ------------------------------

def status_of(tx: Tx, member_id: str) -> str | None:
    row = tx.one("SELECT status FROM members WHERE id = ?", (member_id,))
    return None if row is None else str(row[0])


def active_of(tx: Tx, ids: Iterable[str]) -> set[str]:
    wanted = list(ids)
    if not wanted:
        return set()
    # Only placeholders are interpolated, one per id.
    marks = ", ".join("?" * len(wanted))
    rows = tx.all(f"SELECT id FROM members WHERE status = ? AND id IN ({marks})",  # noqa: S608
                  (ACTIVE, *wanted))
    return {str(row[0]) for row in rows}
