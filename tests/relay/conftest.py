"""Fixtures for the relay tests: a backend parameter (SQLite file, or a database on a
throwaway PostgreSQL server started from the machine's binaries) and a node.

Without PostgreSQL binaries the PostgreSQL half is skipped locally but FAILS when
the CI environment variable is set: CI must never skip those tests silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from cli_process import free_port
from relay_support import RunningNode, start_node

from relay.storage.database import sqlite_url


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user,
                                     database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        await self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        # Keeps the throwaway cluster small (each database is about 8 MB on disk).
        name = url.rsplit("/", 1)[1]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if os.environ.get("CI"):
            pytest.fail(message + " and CI is set: install the postgresql package")
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="bc-pg-"))
    run_as: dict[str, str] = {}
    if os.geteuid() == 0:
        # initdb refuses to run as root; use the postgres account (or nobody).
        account = "postgres"
        try:
            pwd.getpwnam(account)
        except KeyError:
            account = "nobody"
        shutil.chown(base, user=account)
        run_as = {"user": account}
    data, log = base / "data", base / "server.log"
    subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, cwd=base, **run_as)
    port = free_port()
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c max_connections=300 -c synchronous_commit=off")
    subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60",
                    "start"], check=True, capture_output=True, cwd=base, **run_as)
    try:
        yield PgServer("127.0.0.1", port)
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=base, **run_as)
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = await server.create_database()
    yield url
    await server.drop_database(url)


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[RunningNode]:
    started = await start_node(database_url)
    try:
        yield started
    finally:
        await started.stop()
