"""Federation: pinned peers, cards of remote signers, the outbox, envelopes.back_to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_cursor = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("envelopes", sa.Column("back_to", sa.String(64), nullable=True))
    op.create_table(
        "peers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("card", sa.LargeBinary, nullable=False),
        sa.Column("signing_key", sa.LargeBinary(32), nullable=False),
        sa.Column("added_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cards",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("card", sa.LargeBinary, nullable=False),
        sa.Column("added_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", _cursor, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("envelope_id", sa.String(43),
                  sa.ForeignKey("envelopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("statement_id", sa.String(43), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_due", "outbox", ["next_attempt_at"])
    op.create_index("ix_outbox_envelope", "outbox", ["envelope_id"])


def downgrade() -> None:
    for table in ("outbox", "cards", "peers"):
        op.drop_table(table)
    with op.batch_alter_table("envelopes") as batch:
        batch.drop_column("back_to")
