"""Running the ``backchannel`` command as a subprocess, as a new user would: the
result type, a clean environment, and free loopback ports. Shared by the client and
multi-node end-to-end tests."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, AnyStr, ClassVar

from relay.storage.database import SQLITE_FILE, sqlite_files

NODE_PASSPHRASE = "node passphrase"
#: A node starts in about a second; 60 s bounds a hung start on a loaded machine.
START_TIMEOUT = 60


def first_line(proc: subprocess.Popen[Any], stream: IO[AnyStr] | None,
               timeout: float = START_TIMEOUT) -> AnyStr:
    """The next line ``proc`` writes to ``stream``; a process still silent after
    ``timeout`` seconds is killed (the read then ends empty) instead of hanging CI."""
    assert stream is not None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        return stream.readline()
    finally:
        timer.cancel()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one-line error (and that there is exactly one line)."""
        lines = self.err.strip().splitlines()
        assert self.code == 1, (self.code, self.out, self.err)
        assert len(lines) == 1, self.err
        assert lines[0].startswith("backchannel: error: "), self.err
        return lines[0].removeprefix("backchannel: error: ")


@dataclass
class Env:
    root: Path
    base: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # COLUMNS/LINES: pytest-xdist's workers set them (80x24), which would make the
        # CLI's tables terminal-wide instead of the width it uses for a pipe.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BACKCHANNEL_") and k not in ("COLUMNS", "LINES")}
        # A HOME of our own: nothing may fall back to the developer's ~/.backchannel.
        env.update({"HOME": str(self.root / "home"), "BACKCHANNEL_KDF": "floor",
                    "PYTHONUNBUFFERED": "1"})
        self.base = env

    def run(self, *args: str, home: str | None = None, passphrase: str | None = None,
            stdin: str | None = None, timeout: float = 120) -> Result:
        env = dict(self.base)
        if home is not None:
            env["BACKCHANNEL_HOME"] = str(self.root / home)
        if passphrase is not None:
            env["BACKCHANNEL_PASSPHRASE"] = passphrase
        proc = subprocess.run([sys.executable, "-m", "client", *args], env=env,
                              input=stdin if stdin is not None else "", capture_output=True,
                              text=True, timeout=timeout, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: str | None) -> Result:
        result = self.run(*args, **kw)  # type: ignore[arg-type]
        assert result.code == 0, (args, result.out, result.err)
        return result


#: Test nodes listen below the kernel's ephemeral range (32768-60999 by default), in a
#: block per xdist worker: between the moment a port is chosen and the moment a node
#: binds it (again, after a restart), no outgoing connection and no ``bind(0)`` of
#: another test can take it, as they could in the ephemeral range.
PORT_BASE = 20000
PORT_BLOCK = 1500
_WORKERS = 8
_next_port = itertools.count(random.randrange(PORT_BLOCK))


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A loopback port free now, from this worker's block (``bind(0)`` where the
    blocks would overlap the ephemeral range)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % _WORKERS if worker.isdigit() else 0
    if _ephemeral_low() >= PORT_BASE + _WORKERS * PORT_BLOCK:
        start = PORT_BASE + index * PORT_BLOCK
        for _ in range(PORT_BLOCK):
            port = start + next(_next_port) % PORT_BLOCK
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """A relay node as ``backchannel relay init`` / ``serve`` subprocesses."""

    env: Env
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    #: Extra environment for ``relay serve`` (subclasses tune the node).
    serve_env: ClassVar[dict[str, str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory.parent / f"{self.directory.name}.log"

    def init(self, name: str) -> str:
        """Create the node; returns its id."""
        out = self.env.ok("relay", "init", "--dir", str(self.directory), "--name", name,
                          "--url", self.url, "--port", str(self.port),
                          passphrase=NODE_PASSPHRASE).out
        return out.split("node id:", 1)[1].split()[0]

    def invite(self, label: str) -> str:
        result = self.env.ok("relay", "invite", "--dir", str(self.directory), "--name", label)
        return result.out.strip().splitlines()[-1]

    def start(self) -> None:
        env = {**self.env.base, **self.serve_env, "BACKCHANNEL_PASSPHRASE": NODE_PASSPHRASE}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "client", "relay", "serve", "--dir",
                 str(self.directory)], env=env, stdout=subprocess.PIPE, stderr=log)
        line = first_line(self.proc, self.proc.stdout)
        assert line.startswith(b"relay: listening on"), (line, self.log.read_text())

    def back_up(self, target: Path) -> None:
        """An online backup of the node's SQLite database (operator guide, section 6)."""
        source = sqlite3.connect(self.directory / SQLITE_FILE)
        try:
            with closing(sqlite3.connect(target)) as copy:
                source.backup(copy)
        finally:
            source.close()

    def restore(self, backup: Path) -> None:
        """The operator guide's restore: stop, remove the database with its -wal and
        -shm, put the backup in its place (0600), start."""
        self.stop()
        database = self.directory / SQLITE_FILE
        for path in sqlite_files(database):
            path.unlink(missing_ok=True)
        database.write_bytes(backup.read_bytes())
        database.chmod(0o600)
        self.start()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no checkpoint of the WAL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

