"""Benchmark 6: the durable-submit run on PostgreSQL, with one and two relay
processes sharing the database.

A throwaway cluster is started from the machine's PostgreSQL binaries (initdb,
pg_ctl) in a temporary directory, with the *durable* settings a production node
would use (``fsync=on``, ``synchronous_commit=on``: unlike the test suite's
cluster, which turns them off for speed). Each run gets a fresh database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import Context
from .processes import free_port
from .submit import relay_run


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    async def create_database(self, *, collate_c: bool = False) -> str:
        """A fresh database; ``collate_c``: with the C collation (Synapse insists on it)."""
        import asyncpg

        name = "bench_" + uuid.uuid4().hex[:12]
        collation = (" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
                     if collate_c else "")
        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user,
                                     database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{collation}')
        finally:
            await conn.close()
        return self.url(name)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A durable PostgreSQL cluster on 127.0.0.1, removed afterwards. Raises
    :class:`FileNotFoundError` without the server binaries."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    base = Path(tempfile.mkdtemp(prefix="bc-bench-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb refuses to run as root
        account = "postgres"
        try:
            pwd.getpwnam(account)
        except KeyError:
            account = "nobody"
        shutil.chown(base, user=account)
        run_as = {"user": account}
    data, log = base / "data", base / "server.log"
    subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, cwd=base, **run_as)
    port = free_port()
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=on "
               "-c synchronous_commit=on -c max_connections=200 -c shared_buffers=256MB")
    subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60",
                    "start"], check=True, capture_output=True, cwd=base, **run_as)
    try:
        yield Cluster("127.0.0.1", port)
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd=base, **run_as)
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


async def bench_postgres(ctx: Context) -> dict[str, Any]:
    if pg_binary("initdb") is None or pg_binary("pg_ctl") is None:
        return {"available": False,
                "reason": "PostgreSQL server binaries (initdb, pg_ctl) not found"}
    s = ctx.settings
    out: dict[str, Any] = {"available": True,
                           "settings": "fsync=on, synchronous_commit=on, shared_buffers=256MB"}
    with throwaway_cluster() as cluster:
        async def database(_run: int) -> str:
            return await cluster.create_database()

        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for run in range(s.runs):
            for processes in (1, 2):
                summary = await relay_run(ctx, run, database=database, processes=processes,
                                          label=f"relay-pg{processes}")
                runs[processes].append(summary)
                ctx.say(f"postgres run {run + 1}/{s.runs}, {processes} relay process(es): "
                        f"{summary['rate']:.0f} req/s, p50 {summary['p50_ms']} ms, "
                        f"p99 {summary['p99_ms']} ms")
    for processes, series in runs.items():
        out[f"processes_{processes}"] = {
            "median": {k: round(statistics.median(r[k] for r in series), 3)
                       for k in ("rate", "p50_ms", "p99_ms", "server_cpu_ms_per_request")},
            "runs": series}
    return out
