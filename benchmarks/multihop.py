"""Benchmark 5: multi-hop delivery through one and two intermediary nodes.

Four relay nodes, each its own ``backchannel relay serve`` process with its own
SQLite database, pinned to each other as ``backchannel relay peers add`` does
(benchmarks.nodes.pin_peers, in process):

    origin ─→ hop1 ─→ hop2 ─→ destination      (and origin ─→ destination direct)

Senders are members of the origin, receivers of the destination (WebSocket
sessions there). Three paths, each with envelopes whose signed route says so:
direct (no intermediary), through hop1, through hop1 and hop2. Per path and run:

* latency: open-loop submissions to the origin at a fixed low rate, from the
  scheduled send to the push at the destination (the added cost of a hop is the
  difference of the p50s);
* throughput: 64 clients submit back to back for a few seconds; delivered
  envelopes / (last arrival − start).

Every acknowledged envelope must arrive exactly once or the run fails.
:func:`federation_status` says whether relay/ can federate at all.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from . import loadgen
from .context import Context
from .corpus import Submission, make_submissions, sign_requests
from .e2e import _receive
from .nodes import NodeHome, count_rows, enroll, init_node, open_ws, pin_peers, relay_server
from .processes import ServerProcess, free_port
from .stats import latency_summary

RELAY = Path(__file__).resolve().parent.parent / "relay"
_MARKERS = ("peer", "federat", "outbox", "forward")
PATHS = {"direct": ("origin", "destination"),
         "one intermediary": ("origin", "hop1", "destination"),
         "two intermediaries": ("origin", "hop1", "hop2", "destination")}


def federation_status(relay_dir: Path = RELAY) -> dict[str, Any]:
    """Modules of relay/ that look like federation, and whether the node's rules
    still refuse envelopes with intermediaries."""
    modules = sorted(str(p.relative_to(relay_dir.parent)) for p in relay_dir.rglob("*.py")
                     if any(m in p.stem.lower() for m in _MARKERS))
    rules = relay_dir / "rules.py"
    refuses_routes = rules.exists() and "with no intermediaries" in rules.read_text()
    return {"modules": modules, "rules_refuse_routes": refuses_routes,
            "built": bool(modules) and not refuses_routes}


class Chain:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ports = {name: free_port() for name in ("origin", "hop1", "hop2", "destination")}
        self.homes: dict[str, NodeHome] = {}
        self.servers: dict[str, ServerProcess] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def db(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.homes[name].path.resolve() / 'relay.db'}"

    async def start(self) -> None:
        base = self.ctx.workdir / "chain"
        base.mkdir(exist_ok=True)
        for name in self.ports:
            self.homes[name] = init_node(base / name, url=self.url(name),
                                         name=f"Benchmark {name}")
        pairs = {pair for path in PATHS.values() for pair in itertools.pairwise(path)}
        neighbours: dict[str, list[str]] = {name: [] for name in self.ports}
        for left, right in sorted(pairs):
            neighbours[left].append(right)
            neighbours[right].append(left)
        for name, peers in neighbours.items():
            await pin_peers(self.homes[name], self.db(name), [self.homes[p] for p in peers])
        for name, home in self.homes.items():
            server = relay_server(home, port=self.ports[name], database=self.db(name),
                                  public_url=self.url(name),
                                  log=self.ctx.logs / f"chain-{name}.log")
            await server.start()
            self.servers[name] = server
        cast = self.ctx.cast
        await enroll(self.homes["origin"], self.db("origin"), public_url=self.url("origin"),
                     send_url=self.url("origin"), members=cast.senders)
        await enroll(self.homes["destination"], self.db("destination"),
                     public_url=self.url("destination"), send_url=self.url("destination"),
                     members=cast.receivers)

    async def drain(self, timeout: float = 180.0) -> float:
        """Wait until every node's outbox is empty (envelopes forwarded, statements
        sent back); return the seconds it took."""
        started = time.monotonic()
        while True:
            left = sum(count_rows(home.path / "relay.db", "outbox")
                       for home in self.homes.values())
            if left == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"multihop: {left} outbox rows still pending after "
                                   f"{timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.kill()


async def _wait_for(ids: set[str], arrivals: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= arrivals.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _slices(ctx: Context, batches: list[list[Submission]], run: int
            ) -> tuple[list[list[Submission]], list[list[Submission]]]:
    """This run's envelopes of each sender: a few for latency, the rest for load."""
    s = ctx.settings
    per_run = s.hop_per_sender // s.runs
    mine = [b[run * per_run:(run + 1) * per_run] for b in batches]
    lanes = math.ceil(max(1, int(s.hop_rate * s.hop_seconds)) / len(mine))
    return [b[:lanes] for b in mine], [b[lanes:] for b in mine]


async def _latency(ctx: Context, chain: Chain, slow: list[list[Submission]],
                   arrivals: dict[str, int]) -> dict[str, Any]:
    s = ctx.settings
    count = max(1, int(s.hop_rate * s.hop_seconds))
    origin = chain.url("origin")
    host = f"127.0.0.1:{chain.ports['origin']}"
    sent = await loadgen.open_loop("127.0.0.1", chain.ports["origin"],
                                   sign_requests(ctx.cast, slow, host=host, signed_base=origin),
                                   [[x.envelope_id for x in b] for b in slow],
                                   rate=s.hop_rate, count=count)
    refused = [v.status for v in sent.values() if v.status != 201]
    if refused:
        raise RuntimeError(f"multihop: submissions refused: {refused[:5]}")
    await _wait_for(set(sent), arrivals, 60)
    missing = set(sent) - arrivals.keys()
    if missing:
        raise RuntimeError(f"multihop: {len(missing)} acknowledged envelopes never arrived")
    return {**latency_summary([arrivals[k] - v.scheduled_ns for k, v in sent.items()]),
            "latency_envelopes": len(sent)}


async def _throughput(ctx: Context, chain: Chain, fast: list[list[Submission]],
                      arrivals: dict[str, int]) -> dict[str, Any]:
    origin = chain.url("origin")
    host = f"127.0.0.1:{chain.ports['origin']}"
    started = time.perf_counter_ns()
    result = await loadgen.closed_loop("127.0.0.1", chain.ports["origin"],
                                       sign_requests(ctx.cast, fast, host=host,
                                                     signed_base=origin),
                                       duration=ctx.settings.hop_load_seconds,
                                       keep_answers=True)
    if result.first_failure is not None:
        raise RuntimeError(f"multihop: {result.first_failure}")
    acked = {fast[index][position].envelope_id for index, position, _ in result.answers}
    await _wait_for(acked, arrivals, 180)
    missing = acked - arrivals.keys()
    if missing:
        raise RuntimeError(f"multihop: {len(missing)} acknowledged envelopes never arrived")
    last = max(arrivals[k] for k in acked)
    drained = await chain.drain()
    return {"submitted": len(acked), "submit_rate": round(result.rate, 1),
            "delivered_rate": round(len(acked) / ((last - started) / 1e9), 1),
            "drain_s": round(drained, 1)}


async def bench_multihop(ctx: Context) -> dict[str, Any]:
    status = federation_status()
    if not status["built"]:
        return {"measured": False, "status": status,
                "reason": "not measured: federation not built yet (relay/ has no peer or "
                          "outbox code, and relay/rules.py refuses envelopes with "
                          "intermediaries)"}
    s = ctx.settings
    chain = Chain(ctx)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
    try:
        await chain.start()
        ids = {name: home.id for name, home in chain.homes.items()}
        corpus = {name: make_submissions(ctx.cast, ids["origin"], s.hop_per_sender,
                                         path=tuple(ids[n] for n in path))
                  for name, path in PATHS.items()}
        arrivals: dict[str, int] = {}
        duplicates: list[str] = []
        async with aiohttp.ClientSession() as session:
            sockets = [await open_ws(session, chain.url("destination"), r, ids["destination"])
                       for r in ctx.cast.receivers]
            readers = [asyncio.create_task(_receive(ws, arrivals, duplicates))
                       for ws in sockets]
            try:
                for run in range(s.runs):
                    # Latency on idle chains first (outboxes empty), then load.
                    slices = {name: _slices(ctx, corpus[name], run) for name in PATHS}
                    for name in PATHS:
                        await chain.drain()
                        runs[name].append(await _latency(ctx, chain, slices[name][0],
                                                         arrivals))
                    for name in PATHS:
                        summary = runs[name][-1]
                        summary.update(await _throughput(ctx, chain, slices[name][1],
                                                         arrivals))
                        ctx.say(f"multihop run {run + 1}/{s.runs} {name}: p50 "
                                f"{summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
                                f"{summary['delivered_rate']:.0f} delivered/s")
                    if duplicates:
                        raise RuntimeError(f"multihop: {len(duplicates)} envelopes arrived "
                                           "twice")
            finally:
                for ws in sockets:
                    await ws.close()
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
    finally:
        await chain.stop()
    medians = {name: {k: round(statistics.median(r[k] for r in series), 3)
                      for k in ("p50_ms", "p99_ms", "delivered_rate", "submit_rate")}
               for name, series in runs.items()}
    paths = {name: {"median": medians[name], "runs": runs[name]} for name in runs}
    direct = medians["direct"]["p50_ms"]
    one = medians["one intermediary"]["p50_ms"]
    two = medians["two intermediaries"]["p50_ms"]
    return {"measured": True, "status": status, "rate": s.hop_rate, "paths": paths,
            "added_p50_ms": {"first intermediary": round(one - direct, 3),
                             "second intermediary": round(two - one, 3)}}
