"""Private files: atomic, durable writes with owner-only permissions."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import InsecurePermissions


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) if needed; refuse one that others can read."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path, what="directory")


def check_private(path: Path, *, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        fix = "700" if what == "directory" else "600"
        raise InsecurePermissions(
            f"{what} {path} is accessible to other users (mode {mode:o}); "
            f"run: chmod {fix} {path}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new
    file, never a mix: temporary file (0600), fsync, rename, fsync of the directory."""
    ensure_private_dir(path.parent)
    # mkstemp: a unique name (a stale temp file from a crash never blocks us) created
    # with O_EXCL and mode 0600.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path, *, max_bytes: int) -> bytes:
    """Read a file that must be private to its owner, with a size limit.

    The mode is checked on the opened descriptor (no race with a chmod or a swapped
    file) and symbolic links are refused."""
    check_private(path.parent, what="directory")
    try:
        # O_NONBLOCK: opening a FIFO put in the file's place would otherwise wait for a
        # writer for ever; it is then refused below like any other non-regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InsecurePermissions(
                f"{path} is a symbolic link; keep the keystore itself in the profile "
                "directory") from None
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        # fdopen would fail naming the descriptor ("Is a directory: 3").
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise InsecurePermissions(
                f"file {path} is accessible to other users (mode {mode:o}); "
                f"run: chmod 600 {path}")
        return handle.read(max_bytes + 1)
