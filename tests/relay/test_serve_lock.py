"""relay.storage.serve_lock: one serving process per SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.errors import ConfigError, NodeError
from relay.storage.database import Database, sqlite_file, sqlite_url
from relay.storage.serve_lock import SUFFIX, serving


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


def test_names_of_one_file_share_one_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    db = (tmp_path / "relay.db").resolve()
    (tmp_path / "alias").mkdir()
    (tmp_path / "alias" / "relay.db").symlink_to(db)
    monkeypatch.chdir(tmp_path)
    names = [f"sqlite+aiosqlite:///{db}", "sqlite+aiosqlite:///relay.db",
             "sqlite+aiosqlite:///./alias/../relay.db",
             f"sqlite+aiosqlite:///{tmp_path / 'alias' / 'relay.db'}",
             "sqlite+aiosqlite:///relay.db?timeout=5"]
    with serving(names[0]):
        for name in names[1:]:
            with pytest.raises(NodeError, match="already serves"), serving(name):
                pass  # pragma: no cover - never entered


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://",
                                 "sqlite+aiosqlite:///file:relay.db?uri=true",
                                 "sqlite+aiosqlite:///relay.db?mode=rwc&uri=true",
                                 "sqlite+aiosqlite:///file:relay.db"])
def test_a_sqlite_url_must_name_a_file_by_its_path(url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The group committer and the reader open the database with plain sqlite3: a URI
    # filename would be one file for the engine and another for them.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="by its path"), serving(url):
        pass  # pragma: no cover - never entered
    with pytest.raises(ConfigError, match="by its path"):
        Database.open(url)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_that_is_not_a_plain_file_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    lock = tmp_path / ("relay.db" + SUFFIX)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    lock.symlink_to(victim)
    with pytest.raises(NodeError, match="cannot open the lock file"), serving(url):
        pass  # pragma: no cover - never entered
    assert victim.read_text() == "keep me\n"
    lock.unlink()
    os.mkfifo(lock)
    with pytest.raises(NodeError, match="not a regular file"), serving(url):
        pass  # pragma: no cover - never entered


def test_a_malformed_url_is_a_config_error() -> None:
    for url in ("sqlite+aiosqlite://h:abc/relay.db", "not a url"):
        with pytest.raises(ConfigError, match="malformed"), serving(url):
            pass  # pragma: no cover - never entered
        with pytest.raises(ConfigError, match="malformed"):
            Database.open(url)
