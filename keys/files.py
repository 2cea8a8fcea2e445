"""Private files: atomic, durable writes with owner-only permissions."""

from __future__ import annotations

import contextlib
import os
import stat
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
    """Read a file that must be private to its owner, with a size limit."""
    check_private(path.parent, what="directory")
    check_private(path, what="file")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    return data
