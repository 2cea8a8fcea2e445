"""The tables. Alembic migrations under ``relay/migrations`` create exactly these;
a test compares the two."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

#: SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; BIGINT elsewhere.
Cursor = BigInteger().with_variant(Integer(), "sqlite")

members = Table(
    "members", metadata,
    Column("id", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("label", String(200), nullable=False),
    #: The member's identity card, DSSE JSON bytes as it presented them.
    Column("card", LargeBinary, nullable=False),
    #: Raw Ed25519 public key, so that authentication needs no card parsing.
    Column("signing_key", LargeBinary(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("invitation_id", String(32), nullable=False),
    Column("joined_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

invitations = Table(
    "invitations", metadata,
    Column("id", String(32), primary_key=True),
    #: SHA-256 of the secret; the secret itself is never stored.
    Column("secret_hash", LargeBinary(32), nullable=False, unique=True),
    Column("label", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    Column("used_by", String(64), nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

envelopes = Table(
    "envelopes", metadata,
    Column("id", String(43), primary_key=True),
    Column("content_id", String(43), nullable=False, unique=True),
    Column("sender", String(64), nullable=False),
    #: The routing envelope, DSSE JSON bytes as submitted.
    Column("routing", LargeBinary, nullable=False),
    #: NULL once purged (acknowledged by all and retained long enough, or expired).
    Column("sealed", LargeBinary, nullable=True),
    Column("size", Integer, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    #: The peer node this envelope came from, to which statements about it travel
    #: back; NULL when a member submitted it here (this node is its origin).
    Column("back_to", String(64), nullable=True),
    Index("ix_envelopes_expires_at", "expires_at"),
)

deliveries = Table(
    "deliveries", metadata,
    #: The inbox cursor: strictly increasing in commit order (see storage.mailbox).
    Column("cursor", Cursor, primary_key=True, autoincrement=True),
    Column("envelope_id", String(43), ForeignKey("envelopes.id", ondelete="CASCADE"),
           nullable=False),
    Column("recipient", String(64), nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("acked_at", BigInteger, nullable=True),
    UniqueConstraint("envelope_id", "recipient", name="uq_deliveries_envelope_recipient"),
    Index("ix_deliveries_recipient_cursor", "recipient", "cursor"),
    sqlite_autoincrement=True,  # never reuse a cursor after a purge
)

statements = Table(
    "statements", metadata,
    Column("seq", Cursor, primary_key=True, autoincrement=True),
    Column("id", String(43), nullable=False, unique=True),
    Column("envelope_id", String(43), ForeignKey("envelopes.id", ondelete="CASCADE"),
           nullable=False),
    Column("kind", String(16), nullable=False),
    Column("signer", String(64), nullable=False),
    #: The member a delivered/opened statement is about; NULL for the others.
    Column("recipient", String(64), nullable=True),
    Column("at", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Index("ix_statements_envelope", "envelope_id", "at"),
    sqlite_autoincrement=True,
)

nonces = Table(
    "nonces", metadata,
    Column("keyid", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_nonces_expires_at", "expires_at"),
)

#: Peer nodes pinned by the operator (`relay peers add`): the only nodes whose
#: requests are accepted and to which envelopes and statements are pushed.
peers = Table(
    "peers", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    #: The peer's public URL, from its card (``home.url``).
    Column("url", String(2048), nullable=False),
    Column("card", LargeBinary, nullable=False),
    Column("signing_key", LargeBinary(32), nullable=False),
    Column("added_at", BigInteger, nullable=False),
)

#: Identity cards of signers met through federation (senders and recipients on other
#: nodes, nodes further along a route), so that their statements can be verified
#: and handed on with the card that verifies them. Public data only.
cards = Table(
    "cards", metadata,
    Column("id", String(64), primary_key=True),
    Column("card", LargeBinary, nullable=False),
    Column("added_at", BigInteger, nullable=False),
)

#: What this node still has to push to a peer: the envelope itself (``statement_id``
#: NULL, forward to the next hop) or a statement travelling back to the previous hop.
#: A row is deleted only after the peer confirmed, so work survives restarts.
outbox = Table(
    "outbox", metadata,
    Column("seq", Cursor, primary_key=True, autoincrement=True),
    Column("peer", String(64), nullable=False),
    Column("envelope_id", String(43), ForeignKey("envelopes.id", ondelete="CASCADE"),
           nullable=False),
    Column("statement_id", String(43), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    #: Why the last attempt failed: a problem slug or an exception class, no details.
    Column("last_error", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_outbox_due", "next_attempt_at"),
    Index("ix_outbox_envelope", "envelope_id"),
    sqlite_autoincrement=True,
)
