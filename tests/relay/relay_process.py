"""Relay nodes as real subprocesses (`python -m relay serve`), for the multi-process
and crash tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from relay_support import Member, SignedClient

from keys.clock import SYSTEM_CLOCK, Clock
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS
from relay.config import RelayConfig
from relay.node import NodeDir, create_node
from relay.services.membership import Membership
from relay.storage.database import Database

PASSPHRASE = "crash-test passphrase"


def make_node_dir(path: Path, *, url: str, database: str = "", port: int = 8470,
                  rate_per_second: float = 20.0) -> Identity:
    config = RelayConfig(name="Process node", url=url, port=port, database=database,
                         rate_per_second=rate_per_second).check()
    return create_node(NodeDir(path), config, PASSPHRASE, params=FLOOR_PARAMS)


@dataclass
class NodeProcess:
    """One `relay serve` process; ``url`` is where to send, ``signed_url`` what to sign."""

    node_dir: Path
    port: int
    signed_url: str
    id: str
    log: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    clock: Clock = SYSTEM_CLOCK
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "BACKCHANNEL_PASSPHRASE": PASSPHRASE,
               "BACKCHANNEL_RELAY_LOG_LEVEL": "warning"}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay", "serve", "--dir", str(self.node_dir),
                "--port", str(self.port), stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line.startswith(b"relay: listening on"):
            raise RuntimeError(f"node did not start: {line!r}; see {self.log}")
        self.starts += 1

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    async def client(self, identity: Identity | None = None) -> SignedClient:
        session = aiohttp.ClientSession()
        self.sessions.append(session)
        return SignedClient(session, self, identity)  # type: ignore[arg-type]

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()
        await self.kill()


async def invite(db: Database, node_dir: Path, url: str, role: str = "delegation") -> str:
    from datetime import timedelta

    from relay.node import read_card

    membership = Membership(db, read_card(NodeDir(node_dir)), url)
    return (await membership.invite("process test", role, timedelta(hours=1))).text


async def join(process: NodeProcess, db: Database, name: str) -> Member:
    identity = Identity.create(name, "delegation")
    client = await process.client(identity)
    reply = await client.register(await invite(db, process.node_dir, process.signed_url))
    assert reply.status == 201, reply.body
    return Member(identity, client)
