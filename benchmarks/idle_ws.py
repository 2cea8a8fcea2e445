"""Benchmark 3: server memory per idle, authenticated WebSocket session.

One relay process, fresh database; and, in the same run, the ``ws`` baseline
server (benchmarks.baseline_server: aiohttp sessions with the same handshake shape
and nothing else). The harness opens sessions (challenge, signed
answer, ``ready``) in bounded concurrent batches, spread over the members, up to
each target count in turn, waits for the server to settle and reads its resident
set size (VmRSS). Per-session cost = (RSS at N − RSS with none) / N. The file
descriptor limit is raised in both processes (resource.setrlimit).
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import aiohttp

from .context import Context
from .nodes import enroll, open_ws, relay_server, remove_database
from .processes import ServerProcess, fd_limit, free_port, python_argv, raise_fd_limit
from .submit import ROOT_PYTHONPATH

MIB = 1024 * 1024
#: Handshakes in flight at once (the listen backlog is 128 in aiohttp).
OPENING = 64


async def _settled_rss(read: Any, pause: float = 1.0) -> int:
    await asyncio.sleep(pause)
    return int(read())


async def idle_run(ctx: Context, run: int, kind: str) -> dict[str, Any]:
    """One run against ``kind``: "relay" or "baseline"."""
    s = ctx.settings
    home, cast = ctx.home, ctx.cast
    limit = raise_fd_limit()
    targets = [n for n in s.idle_counts if n + 256 <= limit]
    skipped = [n for n in s.idle_counts if n not in targets]
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    db = ctx.workdir / f"idle-{run}.db"
    url = f"sqlite+aiosqlite:///{db}"
    if kind == "relay":
        server = relay_server(home, port=port, database=url, public_url=public,
                              log=ctx.logs / f"idle-{run}.log")
    else:
        server = ServerProcess(f"ws:{port}", python_argv(
            "-m", "benchmarks.baseline_server", "ws", "--port", str(port), "--node", home.id),
            port, ctx.logs / f"idle-ws-{run}.log", {"PYTHONPATH": ROOT_PYTHONPATH},
            ready=b"baseline: listening on")
    await server.start()
    points: list[dict[str, Any]] = []
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        if kind == "relay":
            await enroll(home, url, public_url=public, send_url=server.base_url,
                         members=cast.everyone)
        members = cast.everyone
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            # One session opened and closed first, so that the baseline includes the
            # code paths (and their imports and caches) every session uses.
            first = await open_ws(session, server.base_url, members[0], home.id)
            await first.close()
            base = await _settled_rss(server.rss)
            gate = asyncio.Semaphore(OPENING)

            async def one(index: int) -> aiohttp.ClientWebSocketResponse:
                async with gate:
                    return await open_ws(session, server.base_url,
                                         members[index % len(members)], home.id)

            loop = asyncio.get_running_loop()
            for target in targets:
                started = loop.time()
                sockets += await asyncio.gather(*(one(i) for i in range(len(sockets),
                                                                        target)))
                opened_in = loop.time() - started
                rss = await _settled_rss(server.rss, 2.0)
                alive = sum(1 for ws in sockets if not ws.closed)
                if alive != target:
                    raise RuntimeError(f"idle: {target - alive} of {target} sessions closed")
                points.append({"sessions": target, "rss_mib": round(rss / MIB, 1),
                               "per_session_kib": round((rss - base) / target / 1024, 2),
                               "open_seconds": round(opened_in, 1)})
                ctx.say(f"idle run {run + 1}/{s.runs} {kind}: {target} sessions, RSS "
                        f"{rss / MIB:.1f} MiB ({(rss - base) / target / 1024:.1f} KiB each)")
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    finally:
        await server.kill()
    remove_database(db)
    return {"base_rss_mib": round(base / MIB, 1), "points": points,
            "fd_limit": limit, "not_reached": skipped}


def _series(runs: list[dict[str, Any]]) -> dict[str, Any]:
    counts = [p["sessions"] for p in runs[0]["points"]]
    median = []
    for i, n in enumerate(counts):
        median.append({
            "sessions": n,
            "rss_mib": round(statistics.median(r["points"][i]["rss_mib"] for r in runs), 1),
            "per_session_kib": round(statistics.median(r["points"][i]["per_session_kib"]
                                                       for r in runs), 2),
            "open_seconds": round(statistics.median(r["points"][i]["open_seconds"]
                                                    for r in runs), 1)})
    return {"median": median, "runs": runs}


async def bench_idle(ctx: Context) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "relay": []}
    for run in range(ctx.settings.runs):
        for kind in runs:
            runs[kind].append(await idle_run(ctx, run, kind))
    relay = _series(runs["relay"])
    return {**relay, "baseline": _series(runs["baseline"]), "fd_limit": fd_limit(),
            "not_reached": runs["relay"][0]["not_reached"]}
