"""Baseline servers, each run as its own process by the benchmark harness:

``bare``
    aiohttp, one route accepting any POST: read the body, answer 201 with a small
    JSON document. The ceiling of the HTTP stack on this machine.
``verify``
    The same, plus what a durable submission cannot avoid: one Ed25519 signature
    check (PyNaCl) of the body, and an insert into SQLite (WAL,
    ``synchronous=FULL``) with *group commit*: requests queue their rows, one
    writer thread commits everything queued as one transaction, and each request is
    answered only after the commit that holds its row.
``crypto``
    The ``verify`` server doing the cryptography a relay submission cannot avoid,
    and nothing else: no parsing of the body, no validation, no logging. Two
    Ed25519 verifications (the request's RFC 9421 signature and the envelope's;
    here the same check twice, which costs the same), the content's SHA-256 and one
    Ed25519 signature (the node's *accepted* receipt, returned in the answer); the
    ``verify`` server's one row.
``protocol``
    ``crypto`` storing what the relay stores for a submission: its four rows
    (nonce, envelope, statement, delivery) with the relay's keys and indexes
    (random 43-character ids), group-committed. The floor of a relay on this stack
    with this schema; the relay's distance from it is its parsing, validation and
    framework.
``ws``
    aiohttp WebSocket sessions with the relay's handshake shape (challenge, any
    answer, ``ready``) and nothing else: no database, no verification, one task
    per session. The floor for the idle-session memory benchmark.

Usage: ``python -m benchmarks.baseline_server {bare,verify,crypto,protocol,ws} --port P [--db FILE]
[--keys FILE] [--node ID] [--loop asyncio|uvloop]``; prints ``baseline: listening on ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

READY = "baseline: listening on"
_OK = b'{"accepted":true}'


async def bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=201, body=_OK, content_type="application/json")


_SUBMISSIONS = ("CREATE TABLE IF NOT EXISTS submissions (seq INTEGER PRIMARY KEY, "
                "sender INTEGER NOT NULL, body BLOB NOT NULL)",)
#: The relay's tables for one submission, with their keys and indexes
#: (relay/storage/schema.py), minus columns the writes leave NULL.
_PROTOCOL = (
    "CREATE TABLE IF NOT EXISTS nonces (keyid TEXT NOT NULL, nonce TEXT NOT NULL, "
    "expires_at INTEGER NOT NULL, PRIMARY KEY (keyid, nonce))",
    "CREATE INDEX IF NOT EXISTS ix_nonces_expires_at ON nonces (expires_at)",
    "CREATE TABLE IF NOT EXISTS submissions (id TEXT PRIMARY KEY, "
    "content_id TEXT NOT NULL UNIQUE, sender INTEGER NOT NULL, body BLOB NOT NULL, "
    "size INTEGER NOT NULL, received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_submissions_expires_at ON submissions (expires_at)",
    "CREATE TABLE IF NOT EXISTS statements (seq INTEGER PRIMARY KEY, "
    "id TEXT NOT NULL UNIQUE, envelope_id TEXT NOT NULL REFERENCES submissions (id), "
    "kind TEXT NOT NULL, at INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_statements_envelope ON statements (envelope_id, at)",
    "CREATE TABLE IF NOT EXISTS deliveries (cursor INTEGER PRIMARY KEY, "
    "envelope_id TEXT NOT NULL REFERENCES submissions (id), recipient TEXT NOT NULL, "
    "UNIQUE (envelope_id, recipient))",
    "CREATE INDEX IF NOT EXISTS ix_deliveries_recipient_cursor "
    "ON deliveries (recipient, cursor)",
)

#: One request's rows: (nonce row, envelope row, statement row, delivery row), or
#: the ``verify`` server's single (sender, body).
Row = tuple[Any, ...]


class GroupCommit:
    """One writer; every request waits for the commit that includes its rows."""

    def __init__(self, path: Path, *, protocol: bool = False) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.protocol = protocol
        for statement in _PROTOCOL if protocol else _SUBMISSIONS:
            self.db.execute(statement)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="committer")
        self.queue: list[tuple[Row, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.batches = 0
        self.rows = 0
        self.task: asyncio.Task[None] | None = None

    def _commit(self, rows: list[Row]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        if self.protocol:
            # One statement per table and batch: the floor, not the relay's per-job
            # savepoints and lookups.
            self.db.executemany("INSERT INTO nonces VALUES (?, ?, ?)", [r[0] for r in rows])
            self.db.executemany("INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [r[1] for r in rows])
            self.db.executemany("INSERT INTO statements (id, envelope_id, kind, at, body) "
                                "VALUES (?, ?, ?, ?, ?)", [r[2] for r in rows])
            self.db.executemany("INSERT INTO deliveries (envelope_id, recipient) "
                                "VALUES (?, ?)", [r[3] for r in rows])
        else:
            self.db.executemany("INSERT INTO submissions (sender, body) VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                continue
            try:
                await loop.run_in_executor(self.pool, self._commit, [row for row, _ in batch])
            except Exception as exc:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)

    async def add(self, row: Row) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.queue.append((row, waiter))
        self.wake.set()
        await waiter


def verify_app(db: Path, keys_file: Path, *, kind: str = "verify") -> web.Application:
    keys = [VerifyKey(base64.b64decode(k)) for k in json.loads(keys_file.read_text())]
    protocol = kind == "protocol"
    crypto = kind != "verify"
    committer = GroupCommit(db, protocol=protocol)
    node = SigningKey.generate()
    sequence = itertools.count()

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            sender = int(request.headers["X-Bench-Key"])
            signature = base64.b64decode(request.headers["X-Bench-Sig"])
            keys[sender].verify(body, signature)
            if crypto:
                keys[sender].verify(body, signature)
        except (KeyError, ValueError, IndexError, BadSignatureError):
            return web.Response(status=401, text="bad signature")
        if not crypto:
            await committer.add((sender, body))
            return web.Response(status=201, body=_OK, content_type="application/json")
        # The harness cycles through its requests: a sequence number keeps the keys
        # unique where the relay would have answered a repeat from its store.
        seq = next(sequence)
        content = f"{hashlib.sha256(body).hexdigest()}.{seq}"
        envelope = f"{hashlib.sha256(signature).hexdigest()}.{seq}"
        now = int(time.time())
        receipt = node.sign(f'{{"kind":"accepted","envelope":"{envelope}","at":{now}}}'
                            .encode("ascii"))
        if not protocol:
            await committer.add((sender, body))
            return web.Response(status=201, body=base64.b64encode(bytes(receipt)),
                                content_type="application/json")
        await committer.add((
            (str(sender), f"{request.headers.get('Signature', '')}.{seq}", now + 300),
            (envelope, content, sender, body, len(body), now, now + 86400),
            (envelope, envelope, "accepted", now, bytes(receipt)),
            (envelope, f"receiver-{sender}")))
        return web.Response(status=201, body=base64.b64encode(bytes(receipt)),
                            content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"batches": committer.batches, "rows": committer.rows})

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        committer.task = asyncio.create_task(committer.run())
        yield
        committer.task.cancel()
        committer.pool.shutdown(wait=True)
        committer.db.close()

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/stats", stats)
    app.router.add_post("/{tail:.*}", handler)
    return app


def ws_app(node_id: str) -> web.Application:
    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        nonce = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        await ws.send_json({"type": "challenge", "nonce": nonce, "node": node_id})
        await ws.receive(timeout=10)
        await ws.send_json({"type": "ready"})
        async for _msg in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/ws", session)
    return app


def bare_app() -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", bare)
    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    print(f"{READY} http://127.0.0.1:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_server")
    parser.add_argument("kind", choices=("bare", "verify", "crypto", "protocol", "ws"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--keys", type=Path)
    parser.add_argument("--node", default="baseline", help="node id in the ws challenge")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    if args.kind in ("verify", "crypto", "protocol"):
        if args.db is None or args.keys is None:
            parser.error(f"{args.kind} needs --db and --keys")
        app = verify_app(args.db, args.keys, kind=args.kind)
    elif args.kind == "ws":
        app = ws_app(args.node)
    else:
        app = bare_app()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(app, args.port))
    else:
        asyncio.run(serve(app, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
