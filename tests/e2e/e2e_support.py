"""Real relay nodes as subprocesses (``backchannel relay serve``) and the
``backchannel`` command, for the multi-node end-to-end tests.

Nodes retry their peers fast (``BACKCHANNEL_RELAY_FEDERATION_*`` in their
environment: 1 s, at most 2 s), so that a peer coming back is reached at once.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cli_process import NODE_PASSPHRASE, Result, free_port
from cli_process import Env as BaseEnv
from cli_process import Node as BaseNode

__all__ = ["NODE_PASSPHRASE", "Env", "Node", "Result", "eventually", "free_port", "parallel"]

T = TypeVar("T")

FAST_FEDERATION = {"BACKCHANNEL_RELAY_FEDERATION_RETRY_SECONDS": "1",
                   "BACKCHANNEL_RELAY_FEDERATION_RETRY_MAX_SECONDS": "2",
                   "BACKCHANNEL_RELAY_FEDERATION_POLL_SECONDS": "1",
                   "BACKCHANNEL_RELAY_FEDERATION_TIMEOUT_SECONDS": "5"}


class Env(BaseEnv):
    """Wide terminal, so that timelines are not wrapped in assertions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base["COLUMNS"] = "160"


class Node(BaseNode):
    serve_env = FAST_FEDERATION

    @property
    def card(self) -> Path:
        """The node's card as ``relay init`` wrote it (what ``relay card`` prints)."""
        return self.directory / "node-card.json"

    @property
    def database(self) -> Path:
        return self.directory / "relay.db"

    def peer(self, other: Node) -> Result:
        return self.env.ok("relay", "peers", "add", "--dir", str(self.directory),
                           str(other.card))

    def pause(self) -> None:
        """SIGSTOP: the node still accepts connections (the kernel queues them)
        but answers nothing, like a peer whose host is overloaded."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()  # a stopped process would hold SIGTERM until continued
        super().stop()

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Read the node's SQLite database (a WAL reader never blocks the node)."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    def files(self) -> list[Path]:
        """The database with its -wal and -shm files (when present), and the log."""
        candidates = [self.database, self.database.with_name("relay.db-wal"),
                      self.database.with_name("relay.db-shm"), self.log]
        return [p for p in candidates if p.exists()]


def eventually(probe: Callable[[], T | None], *, timeout: float = 30.0,
               what: str = "condition", interval: float = 0.1) -> T:
    """Poll ``probe`` (bounded) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def parallel(*calls: Callable[[], T]) -> list[T]:
    """Run independent commands at once (each is a subprocess: threads suffice)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]
