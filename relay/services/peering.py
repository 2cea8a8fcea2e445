"""The operator's side of federation: pin, list and remove peer nodes.

A peer is pinned by its node card, exchanged out of band and compared by
fingerprint with the peer's operator (as members compare safety numbers). Only
pinned peers may push envelopes or statements here, and this node pushes only to
pinned peers, at the URL their card names. Used by the CLI against the node's
database; the running node sees a change at its next request.
"""

from __future__ import annotations

from dataclasses import dataclass

from keys.card import Card, load_card
from keys.clock import SYSTEM_CLOCK, Clock
from keys.errors import BackchannelError

from .. import errors
from ..storage import federation
from ..storage.database import Database
from ..storage.federation import PeerQueue, PeerRow


@dataclass(frozen=True)
class Pinned:
    card: Card
    #: "added", "updated" (a newer card for the same key) or "unchanged".
    outcome: str


def check_peer_card(card: Card, *, own_id: str) -> str:
    """The URL to push to. Raises :class:`errors.BadRequest` for a card that cannot
    be a peer."""
    if card.role != "node":
        raise errors.BadRequest(f"this is the card of a {card.role}, not of a node; members "
                                "join with `backchannel relay invite`")
    if card.id == own_id:
        raise errors.BadRequest("this is this node's own card")
    if card.home is None or card.home.node != card.id:
        raise errors.BadRequest("the node card does not name its own URL (home); export it "
                                "with `backchannel relay card` on that node")
    return card.home.url


class Peering:
    def __init__(self, db: Database, own_id: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.own_id = own_id
        self.clock = clock

    def load(self, data: bytes) -> Card:
        """Parse and verify a node card file (JSON or armored)."""
        try:
            return load_card(data, now=self.clock.now())
        except BackchannelError as exc:
            raise errors.BadRequest(f"not a usable node card: {exc}") from None

    async def add(self, card: Card) -> Pinned:
        url = check_peer_card(card, own_id=self.own_id)
        now = int(self.clock.now().timestamp())
        async with self.db.write() as conn:
            existing = await federation.get_peer(conn, card.id)
            if existing is None:
                await federation.insert_peer(conn, id=card.id, name=card.name, url=url,
                                             card=card.to_json(),
                                             signing_key=card.verify_key.raw, added_at=now)
                return Pinned(card, "added")
            old = load_card(existing.card, now=self.clock.now(), allow_expired=True,
                            check_created=False)
            if card.created <= old.created:
                return Pinned(old, "unchanged")
            # Same id, so the same key: a reissued card (a new URL or name).
            await federation.update_peer(conn, id=card.id, name=card.name, url=url,
                                         card=card.to_json())
            return Pinned(card, "updated")

    async def list(self) -> list[PeerRow]:
        async with self.db.read() as conn:
            return await federation.list_peers(conn)

    async def queues(self) -> dict[str, PeerQueue]:
        """What the outbox holds, by peer; a peer unpinned with pushes still queued
        appears here and not in :meth:`list`."""
        async with self.db.read() as conn:
            return await federation.queues(conn)

    async def remove(self, peer_id: str) -> PeerQueue | None:
        """Unpin ``peer_id``; returns what is still queued for it. Its rows stay:
        envelopes are given up at their expiry (a *failed* statement goes back to the
        sender), receipts wait in case the peer is pinned again, until retention
        purges their envelope."""
        async with self.db.write() as conn:
            if not await federation.delete_peer(conn, peer_id):
                raise errors.NotFound(f"no pinned peer has id {peer_id[:64]}")
        # Read after the commit: a long backlog is not counted under the write lock.
        async with self.db.read() as conn:
            return (await federation.queues(conn, peer_id)).get(peer_id)
