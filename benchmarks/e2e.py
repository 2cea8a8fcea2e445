"""Benchmark 2: end-to-end latency, submit → WebSocket push, at half the peak rate.

Receivers hold authenticated WebSocket sessions; senders submit at a fixed rate
(open loop: the schedule never waits for answers) of 50 % of the relay's measured
durable-submit peak. Latency runs from the moment a submission was *scheduled* to
the moment its receiver's push arrives (all in this process, one monotonic clock).
Every envelope acknowledged must be pushed exactly once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from . import loadgen
from .context import Context
from .corpus import sign_requests
from .nodes import enroll, open_ws, relay_server, remove_database
from .processes import free_port
from .stats import latency_summary


async def _receive(ws: aiohttp.ClientWebSocketResponse, arrivals: dict[str, int],
                   duplicates: list[str]) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        doc = json.loads(msg.data)
        if doc.get("type") == "envelope":
            if doc["id"] in arrivals:
                duplicates.append(doc["id"])
            else:
                arrivals[doc["id"]] = time.perf_counter_ns()


async def e2e_run(ctx: Context, run: int, rate: float) -> dict[str, Any]:
    s = ctx.settings
    home, batches, cast = ctx.home, ctx.batches, ctx.cast
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    db = ctx.workdir / f"e2e-{run}.db"
    url = f"sqlite+aiosqlite:///{db}"
    server = relay_server(home, port=port, database=url, public_url=public,
                          log=ctx.logs / f"e2e-{run}.log")
    await server.start()
    arrivals: dict[str, int] = {}
    duplicates: list[str] = []
    try:
        await enroll(home, url, public_url=public, send_url=server.base_url,
                     members=cast.everyone)
        available = min(len(b) for b in batches) * len(batches)
        count = min(available, max(len(batches), int(rate * s.e2e_seconds)))
        queues = sign_requests(cast, batches, host=f"127.0.0.1:{port}", signed_base=public)
        keys = [[sub.envelope_id for sub in batch] for batch in batches]
        async with aiohttp.ClientSession() as session:
            sockets = [await open_ws(session, server.base_url, r, home.id)
                       for r in cast.receivers]
            readers = [asyncio.create_task(_receive(ws, arrivals, duplicates))
                       for ws in sockets]
            sent = await loadgen.open_loop("127.0.0.1", port, queues, keys, rate=rate,
                                           count=count)
            acked = {k for k, v in sent.items() if v.status == 201}
            deadline = time.monotonic() + 30
            while not acked <= arrivals.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for ws in sockets:
                await ws.close()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        await server.kill()
    remove_database(db)
    failed = [v.status for v in sent.values() if v.status != 201]
    missing = acked - arrivals.keys()
    if failed or missing or duplicates:
        raise RuntimeError(f"e2e: {len(failed)} submissions refused (e.g. {failed[:3]}), "
                           f"{len(missing)} acknowledged envelopes never pushed, "
                           f"{len(duplicates)} pushed twice")
    delivery = [arrivals[k] - v.scheduled_ns for k, v in sent.items()]
    ack = [v.acked_ns - v.scheduled_ns for v in sent.values()]
    span = (max(v.scheduled_ns for v in sent.values())
            - min(v.scheduled_ns for v in sent.values())) / 1e9
    return {"target_rate": round(rate, 1), "sent": len(sent),
            "offered_rate": round((len(sent) - 1) / span, 1) if span > 0 else None,
            **latency_summary(delivery),
            "ack": latency_summary(ack)}


async def bench_e2e(ctx: Context, peak: float) -> dict[str, Any]:
    s = ctx.settings
    rate = max(1.0, peak / 2)
    runs = []
    for run in range(s.runs):
        summary = await e2e_run(ctx, run, rate)
        runs.append(summary)
        ctx.say(f"e2e run {run + 1}/{s.runs} at {rate:.0f}/s: p50 {summary['p50_ms']} ms, "
                f"p99 {summary['p99_ms']} ms")
    return {"peak_rate": round(peak, 1), "rate": round(rate, 1),
            "median": {k: round(statistics.median(r[k] for r in runs), 3)
                       for k in ("p50_ms", "p99_ms")},
            "ack_median": {k: round(statistics.median(r["ack"][k] for r in runs), 3)
                           for k in ("p50_ms", "p99_ms")},
            "runs": runs}
