"""Initial schema: members, invitations, envelopes, deliveries, statements, nonces.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_cursor = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("card", sa.LargeBinary, nullable=False),
        sa.Column("signing_key", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("invitation_id", sa.String(32), nullable=False),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "envelopes",
        sa.Column("id", sa.String(43), primary_key=True),
        sa.Column("content_id", sa.String(43), nullable=False, unique=True),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("routing", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_envelopes_expires_at", "envelopes", ["expires_at"])
    op.create_table(
        "deliveries",
        sa.Column("cursor", _cursor, primary_key=True, autoincrement=True),
        sa.Column("envelope_id", sa.String(43),
                  sa.ForeignKey("envelopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("delivered_at", sa.BigInteger, nullable=True),
        sa.Column("acked_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("envelope_id", "recipient",
                            name="uq_deliveries_envelope_recipient"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_deliveries_recipient_cursor", "deliveries", ["recipient", "cursor"])
    op.create_table(
        "statements",
        sa.Column("seq", _cursor, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(43), nullable=False, unique=True),
        sa.Column("envelope_id", sa.String(43),
                  sa.ForeignKey("envelopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("signer", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_statements_envelope", "statements", ["envelope_id", "at"])
    op.create_table(
        "nonces",
        sa.Column("keyid", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_nonces_expires_at", "nonces", ["expires_at"])


def downgrade() -> None:
    for table in ("nonces", "statements", "deliveries", "envelopes", "invitations", "members"):
        op.drop_table(table)
