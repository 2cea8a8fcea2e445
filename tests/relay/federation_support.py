"""In-process chains of real nodes (each on its own 127.0.0.1 port and SQLite file)
pinned to each other, and what a test needs to drive them."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay_support import Member, Reply, RunningNode, SignedClient, start_node
from sqlalchemy import select

from keys.clock import SYSTEM_CLOCK, Clock
from keys.encoding import b64url_decode, b64url_encode
from keys.envelope import Routing, make_envelope
from keys.identity import Identity
from keys.seal import open_sealed, seal
from keys.statements import Statement, load_statement, make_statement
from relay import appkeys
from relay.services.peering import Peering
from relay.storage import federation, schema
from relay.storage.database import sqlite_url

T = TypeVar("T")
FAST = {"federation_retry_seconds": 1.0, "federation_retry_max_seconds": 2.0,
        "federation_poll_seconds": 0.5, "federation_timeout_seconds": 5.0}


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0,
                     what: str = "condition") -> T:
    """Poll ``probe`` (bounded) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def pin(node: RunningNode, peer: RunningNode | Identity) -> None:
    identity = peer.identity if isinstance(peer, RunningNode) else peer
    await Peering(node.db, node.id).add(identity.card)


async def chain(tmp_path: Path, names: Sequence[str], *, clock: Clock = SYSTEM_CLOCK,
                urls: Sequence[str] | None = None, **overrides: Any) -> list[RunningNode]:
    """Nodes named ``names`` (SQLite files, or the database ``urls``), each peered both
    ways with its neighbours."""
    nodes = []
    for number, name in enumerate(names):
        (tmp_path / name).mkdir()
        url = urls[number] if urls else sqlite_url(tmp_path / name)
        nodes.append(await start_node(url, clock=clock, name=f"{name} node",
                                      **{**FAST, **overrides}))
    for left, right in itertools.pairwise(nodes):
        await pin(left, right)
        await pin(right, left)
    return nodes


@dataclass
class Sent:
    routing: Routing
    sealed: bytes
    reply: Reply


def routed(sender: Member, recipients: list[Member], nodes: Sequence[RunningNode], *,
           clock: Clock = SYSTEM_CLOCK, lifetime_seconds: float = 86400,
           text: str = "45 for 45") -> tuple[Routing, bytes]:
    """An envelope from the first node to the last through the others."""
    from datetime import timedelta

    sealed = seal(sender.identity, [r.card for r in recipients], "note", {"text": text},
                  clock=clock)
    routing = make_envelope(sender.identity.signing_key, sealed.data,
                            to=[r.id for r in recipients], origin=nodes[0].id,
                            route=[n.id for n in nodes[1:-1]], destination=nodes[-1].id,
                            lifetime=timedelta(seconds=lifetime_seconds), clock=clock)
    return routing, sealed.data


async def read_and_ack(recipient: Member, sender: Member, envelope_id: str,
                       clock: Clock = SYSTEM_CLOCK) -> Statement:
    fetched = await recipient.client.fetch(envelope_id)
    assert fetched.status == 200, fetched.body
    sealed = b64url_decode(fetched.body["sealed"], max_bytes=10**8)
    opened = open_sealed(sealed, recipient.identity, lambda _i: sender.card,
                         envelope_to=(recipient.id,))
    statement = make_statement("opened", envelope_id, recipient.identity.signing_key,
                               clock=clock, recipient=recipient.id,
                               inner=b64url_encode(opened.inner_digest))
    assert statement.signed is not None
    assert (await recipient.client.ack(envelope_id, statement.signed.to_dict())).status == 200
    return statement


async def receipts(member: Member, envelope_id: str) -> list[Statement]:
    reply = await member.client.receipts(envelope_id)
    assert reply.status == 200, reply.body
    return [load_statement(s) for s in reply.body["statements"]]


async def outbox(node: RunningNode) -> list[federation.OutboxRow]:
    async with node.db.read() as conn:
        return await federation.outbox_rows(conn)


async def statement_kinds(node: RunningNode, envelope_id: str) -> list[tuple[str, str]]:
    async with node.db.read() as conn:
        rows = await conn.execute(select(schema.statements.c.kind, schema.statements.c.signer)
                                  .where(schema.statements.c.envelope_id == envelope_id)
                                  .order_by(schema.statements.c.seq))
        return [(r.kind, r.signer) for r in rows]


async def sealed_stored(node: RunningNode, envelope_id: str) -> bytes | None:
    async with node.db.read() as conn:
        return (await conn.execute(select(schema.envelopes.c.sealed)
                                   .where(schema.envelopes.c.id == envelope_id))).scalar()


def wake(node: RunningNode) -> None:
    node.app[appkeys.FORWARDER].wake()


async def as_node(pusher: RunningNode | Identity, target: RunningNode) -> SignedClient:
    """A client of ``target`` that signs with a node's key (node-to-node requests)."""
    identity = pusher.identity if isinstance(pusher, RunningNode) else pusher
    return await target.client(identity)


def push_doc(routing: Routing, sealed: bytes, *, statements: Sequence[Statement] = (),
             cards: Sequence[Any] = ()) -> dict[str, Any]:
    return {"envelope": routing.envelope.to_dict(), "sealed": b64url_encode(sealed),
            "statements": [json.loads(s.to_json()) for s in statements],
            "cards": [c.envelope.to_dict() for c in cards]}
