"""Benchmark 1 (and 6): durable submit throughput.

Every run starts the server under test as its own process on a fresh database,
then the load generator (this process) opens one keep-alive connection per client
and sends pre-signed requests back to back (closed loop). The three servers see
the same request bytes:

* ``bare``: aiohttp accepting the POST (benchmarks.baseline_server bare);
* ``verify``: the same plus one Ed25519 verification and a group-committed
  SQLite insert (WAL, synchronous=FULL), answered after its batch's commit;
* ``crypto``: ``verify`` plus the rest of the cryptography a relay submission
  cannot avoid (a second verification, a hash, the receipt's signature), no parsing;
* ``protocol``: ``crypto`` storing the relay's four rows instead of one;
* ``relay``: ``backchannel relay serve`` (SQLite by default, or PostgreSQL).

``bare_1k`` is the issue's reference workload (a 1 KiB POST) on the bare server.

After each run the server is killed with SIGKILL and the database is counted:
every request that was answered 201 must be in it (acknowledged only after commit).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import loadgen
from .context import Context
from .corpus import plain_request, sign_requests
from .nodes import count_rows, count_rows_pg, enroll, relay_server, remove_database
from .processes import ServerProcess, free_port, own_cpu_seconds, python_argv
from .stats import latency_summary

#: The protocol baseline's tables: every acknowledged request has a row in each.
PROTOCOL_TABLES = ("nonces", "submissions", "statements", "deliveries")
ROOT_PYTHONPATH = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p)


def _summarise(result: loadgen.LoadResult, server_cpu: float, client_cpu: float
               ) -> dict[str, Any]:
    lat = latency_summary(result.latencies_ns) if result.latencies_ns else {}
    return {"rate": round(result.rate, 1), **lat, "completed": result.completed,
            "elapsed_s": round(result.elapsed, 3),
            "server_cpu_s": round(server_cpu, 3), "loadgen_cpu_s": round(client_cpu, 3),
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, result.completed), 4),
            "statuses": {str(k): v for k, v in sorted(result.statuses.items())}}


def _check(result: loadgen.LoadResult, what: str) -> None:
    if result.first_failure is not None:
        raise RuntimeError(f"{what}: unexpected answer {result.first_failure}")
    if result.completed == 0:
        raise RuntimeError(f"{what}: no request completed")


async def _measure(ctx: Context, servers: list[ServerProcess], queues: list[list[bytes]], *,
                   cycle: bool, what: str) -> tuple[loadgen.LoadResult, dict[str, Any]]:
    s = ctx.settings
    cpu0 = sum(server.cpu() for server in servers)
    own0 = own_cpu_seconds()
    result = await loadgen.closed_loop("127.0.0.1", [server.port for server in servers], queues,
                                       duration=s.duration, warmup=s.warmup, cycle=cycle)
    cpu1 = sum(server.cpu() for server in servers)
    own1 = own_cpu_seconds()
    _check(result, what)
    return result, _summarise(result, cpu1 - cpu0, own1 - own0)


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


async def baseline_run(ctx: Context, series_name: str, run: int) -> dict[str, Any]:
    """One run of a baseline server: ``bare``, ``bare_1k``, ``verify``, ``crypto``
    or ``protocol``, with the suffix ``_uvloop`` for the same server on uvloop's event
    loop."""
    loop = "uvloop" if series_name.endswith("_uvloop") else "asyncio"
    kind = series_name.removesuffix("_uvloop")
    port = free_port()
    durable = kind in ("verify", "crypto", "protocol")
    argv = python_argv("-m", "benchmarks.baseline_server",
                       kind if durable else "bare", "--port", str(port), "--loop", loop)
    db = ctx.workdir / f"{series_name}-{run}.db"
    if durable:
        keys = ctx.workdir / "bench-keys.json"
        keys.write_text(json.dumps([base64.b64encode(i.signing_key.public.raw).decode()
                                    for i in ctx.cast.senders]))
        argv += ["--db", str(db), "--keys", str(keys)]
    server = ServerProcess(f"{series_name}:{port}", argv, port,
                           ctx.logs / f"{series_name}-{run}.log",
                           {"PYTHONPATH": ROOT_PYTHONPATH},
                           ready=b"baseline: listening on")
    await server.start()
    try:
        host = f"127.0.0.1:{port}"
        if kind == "bare_1k":
            queues = [[plain_request(host)] * (ctx.settings.warmup + 1)
                      for _ in range(ctx.settings.clients)]
        else:
            queues = sign_requests(ctx.cast, ctx.batches, host=host,
                                   signed_base=f"http://{host}")
        result, summary = await _measure(ctx, [server], queues, cycle=True, what=kind)
    finally:
        await server.kill()
    if durable:
        acked = result.completed + result.warmup_acked
        tables = PROTOCOL_TABLES if kind == "protocol" else ("submissions",)
        for table in tables:
            stored = count_rows(db, table)
            if stored < acked:
                raise RuntimeError(f"{kind} baseline: {acked} acknowledged but {stored} "
                                   f"rows in {table}")
        summary["stored_rows"] = count_rows(db, "submissions")
        remove_database(db)
    summary["request_bytes"] = len(queues[0][0])
    return summary


DatabaseFactory = Callable[[int], Awaitable[str]]


async def relay_run(ctx: Context, run: int, *, database: DatabaseFactory | None = None,
                    processes: int = 1, label: str = "relay", clients: int | None = None
                    ) -> dict[str, Any]:
    """One run of ``processes`` relay processes sharing one fresh database
    (``clients``: concurrent senders, default all of the cast's). Several processes
    need PostgreSQL: a second one on a SQLite file is refused (ADR 0015)."""
    home = ctx.home
    batches = ctx.batches[:clients] if clients is not None else ctx.batches
    if database is None:
        db_file = ctx.workdir / f"relay-{run}.db"
        url = f"sqlite+aiosqlite:///{db_file.resolve()}"
    else:
        db_file = None
        url = await database(run)
    ports = [free_port() for _ in range(processes)]
    public = f"http://127.0.0.1:{ports[0]}"
    servers = [relay_server(home, port=port, database=url, public_url=public,
                            log=ctx.logs / f"{label}-{run}-{i}.log")
               for i, port in enumerate(ports)]
    try:
        for server in servers:  # one at a time: each applies the migrations at start
            await server.start()
        await enroll(home, url, public_url=public, send_url=servers[0].base_url,
                     members=ctx.cast.everyone)
        queues = sign_requests(ctx.cast, batches, host=f"127.0.0.1:{ports[0]}",
                               signed_base=public)
        result, summary = await _measure(ctx, servers, queues, cycle=False, what=label)
    finally:
        for server in servers:
            await server.kill()  # SIGKILL: what was acknowledged must already be stored
    acked = result.completed + result.warmup_acked
    if db_file is not None:
        stored = count_rows(db_file, "envelopes")
        remove_database(db_file)
    else:
        stored = await count_rows_pg(url, "envelopes")
    summary["stored_rows"] = stored
    summary["acknowledged"] = acked
    summary["request_bytes"] = len(queues[0][0])
    summary["processes"] = processes
    if stored != acked:
        raise RuntimeError(f"{label}: {acked} envelopes acknowledged but {stored} stored")
    return summary


def series(runs: list[dict[str, Any]]) -> dict[str, Any]:
    median = {key: round(statistics.median(r[key] for r in runs), 3)
              for key in ("rate", "p50_ms", "p99_ms", "server_cpu_ms_per_request")}
    return {"median": median, "runs": runs}


async def bench_submit(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    kinds = ["bare_1k", "bare", "verify", "crypto", "protocol", "relay"]
    if have_uvloop():
        # The same baselines on uvloop: what choosing the event loop is worth.
        kinds[1:1] = ["bare_1k_uvloop"]
        kinds[4:4] = ["verify_uvloop"]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    ctx.batches  # noqa: B018 - seal the corpus before any server starts
    for run in range(s.runs):
        # Interleaved, so that drift of the machine during the benchmark hits every
        # series alike.
        for kind in kinds:
            if kind == "relay":
                summary = await relay_run(ctx, run)
            else:
                summary = await baseline_run(ctx, kind, run)
            runs[kind].append(summary)
            ctx.say(f"submit run {run + 1}/{s.runs} {kind}: {summary['rate']:.0f} req/s, "
                    f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
    out = {kind: series(r) for kind, r in runs.items()}
    relay = out["relay"]["median"]["rate"]
    out["ratios"] = {
        "relay_over_bare": round(relay / out["bare"]["median"]["rate"], 4),
        "relay_over_verify": round(relay / out["verify"]["median"]["rate"], 4),
        "verify_over_bare": round(out["verify"]["median"]["rate"]
                                  / out["bare"]["median"]["rate"], 4),
        "relay_over_protocol": round(relay / out["protocol"]["median"]["rate"], 4),
        "crypto_over_verify": round(out["crypto"]["median"]["rate"]
                                    / out["verify"]["median"]["rate"], 4),
        "protocol_over_verify": round(out["protocol"]["median"]["rate"]
                                      / out["verify"]["median"]["rate"], 4),
    }
    out["config"] = {"clients": s.clients, "duration_s": s.duration,
                     "warmup_per_client": s.warmup, "runs": s.runs,
                     "envelopes_per_sender": s.per_sender,
                     "plaintext_bytes": 1024, "recipients_per_envelope": 1}
    return out
