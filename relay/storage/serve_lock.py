"""One serving process per SQLite database.

Several processes may share a PostgreSQL database: a delivery committed by one reaches
the WebSocket sessions of the others through LISTEN/NOTIFY. SQLite has no such channel,
so a second ``relay serve`` on the same file would store and acknowledge envelopes whose
recipients, connected to the other process, are never told: they would see them only
when they next list their inbox. It is refused at start instead.

The lock is an ``flock`` on a file beside the database, held for the life of the
process: the kernel releases it when the process ends in any way (SIGKILL included),
so a crash never leaves a stale lock behind. It names the file, not the database:
a hard link to the database under another name, or a lock file deleted while the
node runs, escapes it (ADR 0015). The CLI's other commands (``invite``,
``members``, ``revoke``) do not take it: they are single transactions, which SQLite's
own locking serialises with the serving process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator

from ..errors import NodeError
from .database import sqlite_file

#: Appended to the database file's name.
SUFFIX = "-serve.lock"


@contextlib.contextmanager
def serving(database_url: str) -> Iterator[None]:
    """Hold the serve lock of ``database_url``'s SQLite file (nothing for PostgreSQL).
    Raises :class:`NodeError` when another process holds it, ConfigError for a SQLite
    URL that names no file (relay.storage.database.sqlite_file)."""
    named = sqlite_file(database_url)
    if named is None:
        yield
        return
    # Resolved: a symlink to the file, or a relative path, names the same lock.
    path = named.resolve()
    lock_path = path.with_name(path.name + SUFFIX)
    try:
        # Not through a symlink: the pid is written into whatever this opens.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NodeError(f"cannot open the lock file {lock_path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NodeError(f"the lock file {lock_path} is not a regular file; remove it")
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise NodeError(f"cannot write the lock file {lock_path}: {exc.strerror}"
                            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
