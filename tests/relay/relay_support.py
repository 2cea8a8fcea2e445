"""A real node on a 127.0.0.1 port, and a small signed client written for the tests
(the tests cannot import client/, which is developed separately)."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

from keys.card import Card, HomeNode
from keys.clock import SYSTEM_CLOCK, Clock
from keys.encoding import b64url_encode
from keys.envelope import Routing, make_envelope
from keys.httpsig import sign_request
from keys.identity import Identity
from keys.seal import seal
from relay.app import create_app
from relay.config import RelayConfig
from relay.services.membership import Membership
from relay.storage import schema
from relay.storage.database import Database
from relay.websocket import auth_message

PROBLEM_BASE = "https://backchannel.example/problems/"
TABLES = ("members", "invitations", "envelopes", "deliveries", "statements")


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any
    raw: bytes

    def problem(self, status: int, slug: str) -> Reply:
        """Assert this is the RFC 9457 problem ``slug`` with ``status``."""
        assert self.status == status, (self.status, self.body)
        assert self.headers["Content-Type"].startswith("application/problem+json"), self.headers
        assert self.body["type"] == PROBLEM_BASE + slug, self.body
        assert self.body["status"] == status
        assert isinstance(self.body["title"], str) and isinstance(self.body["detail"], str)
        return self


class SignedClient:
    """Signs every request as ``identity`` with keys.httpsig (RFC 9421)."""

    def __init__(self, session: aiohttp.ClientSession, node: RunningNode,
                 identity: Identity | None) -> None:
        self.session = session
        self.node = node
        self.identity = identity

    def signed_headers(self, method: str, path: str, body: bytes, *, created: int | None = None,
                       nonce: str | None = None, identity: Identity | None = None
                       ) -> dict[str, str]:
        who = identity or self.identity
        assert who is not None
        return sign_request(who.signing_key, method=method, url=self.node.signed_url + path,
                            body=body,
                            created=created or int(self.node.clock.now().timestamp()),
                            nonce=nonce or secrets.token_urlsafe(16))

    async def send(self, method: str, path: str, *, body: bytes = b"",
                   headers: dict[str, str] | None = None,
                   content_type: str | None = "application/json") -> Reply:
        all_headers = dict(headers or {})
        if content_type is not None and body:
            all_headers["Content-Type"] = content_type
        async with self.session.request(method, self.node.url + path, data=body or None,
                                        headers=all_headers) as resp:
            raw = await resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return Reply(resp.status, resp.headers, parsed, raw)

    async def call(self, method: str, path: str, doc: Any = None, *, body: bytes | None = None,
                   created: int | None = None, nonce: str | None = None,
                   identity: Identity | None = None,
                   content_type: str | None = "application/json") -> Reply:
        data = body if body is not None else (b"" if doc is None else json.dumps(doc).encode())
        headers = self.signed_headers(method, path, data, created=created, nonce=nonce,
                                      identity=identity)
        return await self.send(method, path, body=data, headers=headers,
                               content_type=content_type)

    # The API, one method per endpoint.
    async def register(self, invitation: str, card: Card | None = None) -> Reply:
        assert self.identity is not None
        card = card or self.identity.card
        return await self.call("POST", "/v1/register",
                               {"invitation": invitation, "card": card.envelope.to_dict()})

    async def submit(self, routing: Routing, sealed: bytes) -> Reply:
        return await self.call("POST", "/v1/envelopes",
                               {"envelope": routing.envelope.to_dict(),
                                "sealed": b64url_encode(sealed)})

    async def inbox(self, after: int = 0, limit: int | None = None) -> Reply:
        query = f"?after={after}" + (f"&limit={limit}" if limit is not None else "")
        return await self.call("GET", "/v1/inbox" + query)

    async def fetch(self, envelope_id: str) -> Reply:
        return await self.call("GET", f"/v1/envelopes/{envelope_id}")

    async def ack(self, envelope_id: str, opened: Any = None) -> Reply:
        return await self.call("POST", f"/v1/envelopes/{envelope_id}/ack", {"opened": opened})

    async def receipts(self, envelope_id: str) -> Reply:
        return await self.call("GET", f"/v1/envelopes/{envelope_id}/receipts")

    async def card_of(self, member_id: str) -> Reply:
        return await self.call("GET", f"/v1/members/{member_id}/card")

    async def websocket(self) -> aiohttp.ClientWebSocketResponse:
        """Connect and authenticate; returns after the node's ``ready``."""
        assert self.identity is not None
        ws = await self.session.ws_connect(self.node.url + "/v1/ws")
        challenge = await ws.receive_json(timeout=10)
        assert challenge["type"] == "challenge" and challenge["node"] == self.node.id
        from keys.encoding import b64url_decode

        nonce = b64url_decode(challenge["nonce"], max_bytes=32, exact=32)
        sig = self.identity.signing_key.sign(auth_message(self.node.id, nonce))
        await ws.send_json({"type": "auth", "id": self.identity.id, "sig": b64url_encode(sig)})
        ready = await ws.receive_json(timeout=10)
        assert ready == {"type": "ready"}
        return ws


@dataclass
class Member:
    identity: Identity
    client: SignedClient

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def card(self) -> Card:
        return self.identity.card


@dataclass
class RunningNode:
    identity: Identity
    config: RelayConfig
    database_url: str
    url: str
    runner: web.AppRunner
    db: Database
    #: The URL clients sign (the node's public URL); equal to ``url`` unless behind a proxy.
    signed_url: str = ""
    #: The node's clock; the test client signs with it too.
    clock: Clock = SYSTEM_CLOCK
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def app(self) -> web.Application:
        return self.runner.app

    def membership(self, clock: Clock = SYSTEM_CLOCK) -> Membership:
        return Membership(self.db, self.identity.card, self.config.url, clock=clock)

    async def invite(self, label: str = "test member", role: str = "delegation",
                     lifetime: timedelta = timedelta(days=1), clock: Clock = SYSTEM_CLOCK
                     ) -> str:
        return (await self.membership(clock).invite(label, role, lifetime)).text

    async def session(self) -> aiohttp.ClientSession:
        """An HTTP session closed with the node."""
        session = aiohttp.ClientSession()
        self.sessions.append(session)
        return session

    async def client(self, identity: Identity | None = None) -> SignedClient:
        return SignedClient(await self.session(), self, identity)

    async def join(self, name: str = "Member", role: str = "delegation") -> Member:
        identity = Identity.create(name, role)
        client = await self.client(identity)
        reply = await client.register(await self.invite(label=f"label of {name}", role=role))
        assert reply.status == 201, reply.body
        return Member(identity, client)

    async def counts(self) -> dict[str, int]:
        out = {}
        async with self.db.read() as conn:
            for name in TABLES:
                table = schema.metadata.tables[name]
                out[name] = int((await conn.execute(select(func.count()).select_from(table)))
                                .scalar_one())
        return out

    async def stop(self) -> None:
        for session in self.sessions:
            await session.close()
        await self.runner.cleanup()
        await self.db.dispose()


async def start_node(database_url: str, *, clock: Clock = SYSTEM_CLOCK,
                     public_url: str | None = None, **overrides: Any) -> RunningNode:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = replace(RelayConfig(name="Test node", url=public_url or url), **overrides).check()
    first = Identity.create(config.name, "node")
    identity = first.reissue(home=HomeNode(first.id, config.url))
    app = create_app(config, node=identity, database_url=database_url, clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningNode(identity, config, database_url, url, runner, Database.open(database_url),
                       signed_url=config.url, clock=clock)


def sealed_for(sender: Member | Identity, recipients: list[Member], node_id: str, *,
               clock: Clock = SYSTEM_CLOCK, lifetime: timedelta = timedelta(days=1),
               destination: str | None = None, body: Any = None) -> tuple[Routing, bytes]:
    who = sender.identity if isinstance(sender, Member) else sender
    sealed = seal(who, [r.card for r in recipients], "note",
                  body if body is not None else {"text": "45 for 45"}, clock=clock)
    routing = make_envelope(who.signing_key, sealed.data, to=[r.id for r in recipients],
                            origin=node_id, destination=destination or node_id,
                            lifetime=lifetime, clock=clock)
    return routing, sealed.data
