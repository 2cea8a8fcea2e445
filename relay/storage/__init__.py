"""The node's storage: SQLAlchemy Core tables and the queries the services need.

SQLite (aiosqlite, WAL, ``synchronous=FULL``) is the embedded default; PostgreSQL
(asyncpg) is the scale path. Times are stored as integer Unix seconds so that both
backends compare them the same way.
"""
