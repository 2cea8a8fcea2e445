"""Alembic migrations of the node's database (applied by ``relay init`` and ``relay serve``)."""
