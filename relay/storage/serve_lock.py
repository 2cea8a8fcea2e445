"""One serving process per SQLite database.

Several processes may share a PostgreSQL database: a delivery committed by one reaches
the WebSocket sessions of the others through LISTEN/NOTIFY. SQLite has no such channel,
so a second ``relay serve`` on the same file would store and acknowledge envelopes whose
recipients, connected to the other process, are never told: they would see them only
when they next list their inbox. It is refused at start instead.

The lock is an ``flock`` on a file beside the database, held for the life of the
process: the kernel releases it when the process ends in any way (SIGKILL included),
so a crash never leaves a stale lock behind. The CLI's other commands (``invite``,
``members``, ``revoke``) do not take it: they are single transactions, which SQLite's
own locking serialises with the serving process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from ..errors import NodeError

#: Appended to the database file's name.
SUFFIX = "-serve.lock"


def sqlite_file(database_url: str) -> Path | None:
    """The database file behind a SQLite URL; None for PostgreSQL or an in-memory
    database."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


@contextlib.contextmanager
def serving(database_url: str) -> Iterator[None]:
    """Hold the serve lock of ``database_url``'s SQLite file (nothing for PostgreSQL).
    Raises :class:`NodeError` when another process holds it."""
    path = sqlite_file(database_url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + SUFFIX)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise NodeError(f"cannot open the lock file {lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise NodeError(f"cannot lock {lock_path}: {exc.strerror}") from None
            raise NodeError(
                f"another process already serves the SQLite database {path} "
                f"(pid {_holder(fd)}); a SQLite node runs as one process: stop the "
                "other one, or move the node to PostgreSQL to run several") from None
        # For the message above, in the process that comes second.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
