"""What the figures were measured on: CPU, cores, memory, Python, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

LIBRARIES = ("aiohttp", "SQLAlchemy", "aiosqlite", "asyncpg", "alembic", "PyNaCl",
             "cryptography", "http-sf", "prometheus-client", "uvloop", "py-spy")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _postgres_version() -> str | None:
    from .postgres import pg_binary

    postgres = pg_binary("postgres")
    if postgres is None:
        return None
    try:
        out = subprocess.run([postgres, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except OSError:
        return None
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    words = out.split()
    return words[2] if len(words) > 2 else (out.strip() or None)


#: Set when the benchmarks run from an exported tree (``git archive``), which has no .git.
COMMIT_ENV = "BACKCHANNEL_BENCH_COMMIT"


def _git_commit(root: Path) -> str | None:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    if shutil.which("git") is None or not (root / ".git").exists():
        return None
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=10, check=False)
    commit = out.stdout.strip()
    if not commit:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "keys",
                            "client", "relay"], capture_output=True, text=True, timeout=10,
                           check=False).stdout.strip()
    # Measurements of uncommitted code say so.
    return commit + (" + uncommitted changes in keys/client/relay" if dirty else "")


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def machine_info(root: Path) -> dict[str, object]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "sqlite": _sqlite_version(),
        "postgresql": _postgres_version(),
        "commit": _git_commit(root),
    }
