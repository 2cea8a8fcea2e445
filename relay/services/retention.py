"""Periodic purge: old nonces, sealed bytes no longer needed, expired envelopes."""

from __future__ import annotations

from dataclasses import dataclass

from keys.clock import SYSTEM_CLOCK, Clock

from ..config import RelayConfig
from ..storage import mailbox, nonces
from ..storage.database import Database

_DAY = 86_400


@dataclass(frozen=True)
class Purged:
    nonces: int
    sealed: int
    envelopes: int


class Retention:
    def __init__(self, db: Database, config: RelayConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.config = config
        self.clock = clock

    async def purge(self) -> Purged:
        now = int(self.clock.now().timestamp())
        ack_keep = int(self.config.acknowledged_retention_days * _DAY)
        receipt_keep = int(self.config.receipt_retention_days * _DAY)
        async with self.db.write() as conn:
            gone_nonces = await nonces.purge(conn, now)
        async with self.db.write() as conn:
            sealed = await mailbox.purge_sealed(conn, now=now, acked_before=now - ack_keep + 1)
        async with self.db.write() as conn:
            rows = await mailbox.purge_envelopes(conn, expired_before=now - receipt_keep)
        return Purged(gone_nonces, sealed, rows)
