"""relay.storage.serve_lock: one serving process per SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.errors import NodeError
from relay.storage.database import sqlite_url
from relay.storage.serve_lock import SUFFIX, serving, sqlite_file


def test_the_second_holder_is_refused_and_the_lock_is_released(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with serving(url):
        lock = tmp_path / ("relay.db" + SUFFIX)
        assert lock.read_text().strip() == str(os.getpid())
        assert lock.stat().st_mode & 0o777 == 0o600
        # flock locks belong to open files: a second open in the same process
        # conflicts as another process's would.
        with pytest.raises(NodeError, match=rf"already serves .*\(pid {os.getpid()}\)"), \
                serving(url):
            pass  # pragma: no cover - never entered
    with serving(url):
        pass


def test_the_lock_is_released_when_the_body_raises(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with pytest.raises(RuntimeError), serving(url):
        raise RuntimeError("start-up failed")
    with serving(url):
        pass


def test_other_databases_take_no_lock(tmp_path: Path) -> None:
    assert sqlite_file("postgresql+asyncpg://u@localhost/db") is None
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file(sqlite_url(tmp_path)) == (tmp_path / "relay.db").resolve()
    with serving("postgresql+asyncpg://u@localhost/db"), \
            serving("postgresql+asyncpg://u@localhost/db"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_lock_file_is_a_node_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "relay.db"
    with pytest.raises(NodeError, match="cannot open the lock file"), \
            serving(f"sqlite+aiosqlite:///{missing}"):
        pass  # pragma: no cover - never entered
