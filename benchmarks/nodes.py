"""Relay nodes for the benchmarks, driven the way an operator drives them: the
node directory is made by ``backchannel relay init`` and every run is a fresh
``backchannel relay serve`` process (``python -m relay``) on a fresh database.

Members join as they do in production: the operator issues invitations (here
through relay.services.membership on the node's database, as ``relay invite``
does) and each member registers over HTTP with an RFC 9421-signed request.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp

from keys.card import Card
from keys.encoding import b64url_decode, b64url_encode, json_dumps
from keys.httpsig import sign_request
from keys.identity import Identity
from relay.node import NodeDir, read_card
from relay.services.membership import Membership
from relay.services.peering import Peering
from relay.storage.database import Database, sqlite_files
from relay.storage.serve_lock import SUFFIX as SERVE_LOCK_SUFFIX
from relay.websocket import auth_message

from .processes import ServerProcess, python_argv

PASSPHRASE = "benchmark node passphrase (not a secret)"
#: The operator's default rate limit (20 requests/s per member) would cap 64 clients
#: at 1,280 requests/s: the benchmark measures the node, not the limiter.
UNLIMITED = {"BACKCHANNEL_RELAY_RATE_PER_SECOND": "1000000",
             "BACKCHANNEL_RELAY_RATE_BURST": "1000000"}


@dataclass(frozen=True)
class NodeHome:
    path: Path
    card: Card

    @property
    def id(self) -> str:
        return self.card.id


def init_node(path: Path, *, url: str = "http://127.0.0.1:8470",
              name: str = "Benchmark node") -> NodeHome:
    """``backchannel relay init`` (fast key derivation: this keystore protects nothing).
    ``url`` goes on the node's card: peers push to it."""
    env = {**os.environ, "BACKCHANNEL_PASSPHRASE": PASSPHRASE}
    subprocess.run(python_argv("-m", "relay", "init", "--dir", str(path), "--name", name,
                               "--url", url, "--kdf-floor"),
                   check=True, capture_output=True, env=env, timeout=120)
    return NodeHome(path, read_card(NodeDir(path)))


async def pin_peers(home: NodeHome, database: str, peers: Sequence[NodeHome]) -> None:
    """Pin ``peers`` on ``home`` as ``backchannel relay peers add`` does for each card
    file (relay.services.peering on the node's database), in this process rather
    than one process per card."""
    db = Database.open(database)
    try:
        await db.migrate()
        peering = Peering(db, home.id)
        for peer in peers:
            await peering.add(peering.load(NodeDir(peer.path).card.read_bytes()))
    finally:
        await db.dispose()


def relay_server(home: NodeHome, *, port: int, database: str, public_url: str, log: Path,
                 extra_env: dict[str, str] | None = None) -> ServerProcess:
    env = {"BACKCHANNEL_PASSPHRASE": PASSPHRASE, "BACKCHANNEL_RELAY_URL": public_url,
           **UNLIMITED, **(extra_env or {})}
    return ServerProcess(f"relay:{port}",
                         python_argv("-m", "relay", "serve", "--dir", str(home.path),
                                     "--port", str(port), "--database", database),
                         port, log, env)


async def enroll(home: NodeHome, database: str, *, public_url: str, send_url: str,
                 members: Sequence[Identity]) -> None:
    """Invite and register every identity in ``members`` (the node must be running)."""
    db = Database.open(database)
    try:
        membership = Membership(db, home.card, public_url)
        invitations = [(await membership.invite(f"bench {i}", "delegation",
                                                timedelta(hours=2))).text
                       for i in range(len(members))]
    finally:
        await db.dispose()
    async with aiohttp.ClientSession() as session:
        for identity, invitation in zip(members, invitations, strict=True):
            body = json_dumps({"invitation": invitation,
                               "card": identity.card.envelope.to_dict()})
            headers = sign_request(identity.signing_key, method="POST",
                                   url=public_url + "/v1/register", body=body,
                                   created=int(time.time()), nonce=secrets.token_urlsafe(16))
            async with session.post(send_url + "/v1/register", data=body,
                                    headers={**headers,
                                             "Content-Type": "application/json"}) as reply:
                if reply.status != 201:
                    raise RuntimeError(f"registration failed: HTTP {reply.status} "
                                       f"{(await reply.text())[:200]}")


async def open_ws(session: aiohttp.ClientSession, url: str, identity: Identity,
                  node_id: str, *, timeout: float = 60.0) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket session authenticated as ``identity`` (returns after ``ready``)."""
    ws = await session.ws_connect(url + "/v1/ws", autoping=True, timeout=aiohttp.ClientWSTimeout(
        ws_receive=timeout, ws_close=10.0))
    try:
        challenge = await ws.receive_json(timeout=timeout)
        if challenge.get("type") != "challenge" or challenge.get("node") != node_id:
            raise RuntimeError(f"unexpected first WebSocket message {challenge!r}")
        nonce = b64url_decode(challenge["nonce"], max_bytes=32, exact=32)
        sig = identity.signing_key.sign(auth_message(node_id, nonce))
        await ws.send_json({"type": "auth", "id": identity.id, "sig": b64url_encode(sig)})
        ready = await ws.receive_json(timeout=timeout)
        if ready != {"type": "ready"}:
            raise RuntimeError(f"WebSocket authentication failed: {ready!r}")
    except BaseException:
        await ws.close()
        raise
    return ws


def remove_database(db: Path) -> None:
    """A run's SQLite file and what SQLite and `relay serve` keep beside it."""
    for path in (*sqlite_files(db), db.with_name(db.name + SERVE_LOCK_SUFFIX)):
        path.unlink(missing_ok=True)


def count_rows(sqlite_file: Path, table: str) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def count_rows_pg(url: str, table: str) -> int:
    db = Database.open(url)
    try:
        from sqlalchemy import text

        async with db.read() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
    finally:
        await db.dispose()

