"""Alembic environment: the node passes an open connection (see relay.storage.database)."""

from __future__ import annotations

from alembic import context

from relay.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `backchannel relay serve` or `relay init`")

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
