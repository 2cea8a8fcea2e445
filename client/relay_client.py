"""``RelayClient``: the one module of the client that talks to a node.

Every request except ``GET /v1/node`` is signed with the member's Ed25519 key (RFC
9421, :func:`keys.httpsig.sign_request`). Whatever the node says is checked before
it is used: the node card against the pin, the *accepted* receipt against the node
key, envelope ids and content ids by recomputation. A node can refuse or withhold
service; it cannot make this client accept something it did not sign.

Errors: network failures become :class:`NodeUnreachable`; RFC 9457 problem
documents become the typed errors of :mod:`client.problems`; answers that do not
follow the protocol become :class:`NodeProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import aiohttp
from aiohttp.payload import BytesPayload
from yarl import URL

from keys import dsse, httpsig
from keys.card import MAX_CARD_BYTES, Card, load_card
from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.encoding import b64url_decode, b64url_encode, json_dumps, json_loads, parse_time
from keys.envelope import Routing, check_content, parse_routing
from keys.errors import BackchannelError, DecodeError
from keys.identity import Identity
from keys.seal import MAX_SEALED_BYTES
from keys.statements import Statement, load_statement, verify_statement

from .errors import (
    NodeKeyMismatch,
    NodeProtocolError,
    NodeUnreachable,
)
from .problems import error_from_response

API_VERSION: Final = 1
WS_AUTH_DOMAIN: Final = b"backchannel/v1/ws-auth\x00"
CLOSE_UNAUTHORIZED: Final = 4401
#: JSON answers other than a fetched envelope are small.
MAX_JSON_ANSWER: Final = 4 * 1024 * 1024
MAX_FETCH_ANSWER: Final = MAX_SEALED_BYTES * 4 // 3 + 256 * 1024
MAX_STATEMENTS: Final = 512
INBOX_PAGE: Final = 100
#: The node answers the WebSocket handshake at once; 30 s covers a slow link.
WS_HANDSHAKE_TIMEOUT: Final = 30.0
_CHUNK = 64 * 1024

class Meter(Protocol):
    """Progress of a transfer: ``start(total)`` once, then ``advance(n)``."""

    def start(self, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...


class _NoMeter:
    def start(self, total: int) -> None:
        return None

    def advance(self, amount: int) -> None:
        return None


NO_METER: Final = _NoMeter()


@dataclass(frozen=True)
class NodeInfo:
    card: Card
    limits: dict[str, int]
    api: int


@dataclass(frozen=True)
class Membership:
    member_id: str
    role: str
    label: str
    node: Card


@dataclass(frozen=True)
class Submitted:
    id: str
    accepted: Statement
    new: bool


@dataclass(frozen=True)
class InboxItem:
    cursor: int
    id: str
    routing: Routing
    size: int
    received: datetime


class _ProgressPayload(BytesPayload):
    """A bytes body written in chunks, reporting each one (upload progress)."""

    def __init__(self, value: bytes, meter: Meter) -> None:
        super().__init__(value, content_type="application/json")
        self._meter = meter

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        data = self._value if content_length is None else self._value[:content_length]
        for start in range(0, len(data), _CHUNK):
            chunk = data[start:start + _CHUNK]
            await writer.write(chunk)
            self._meter.advance(len(chunk))


class RelayClient:
    """A member's connection to its node. ``node`` is the pinned node card (absent
    only before registration)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, identity: Identity, *,
                 node: Card | None = None, clock: Clock = SYSTEM_CLOCK,
                 random: Random = system_random, timeout: float = 120.0) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.identity = identity
        self.node = node
        self.clock = clock
        self.random = random
        # No total: a 16 MiB list on a slow link takes long; a stalled read does not.
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0),
                                             sock_read=timeout)

    # --- transport -----------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> NodeUnreachable:
        if isinstance(exc, TimeoutError):
            why = "it did not answer in time"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            code = exc.os_error.errno
            why = os.strerror(code).lower() if code else "connection failed"
        else:
            why = type(exc).__name__
        return NodeUnreachable(f"cannot reach the node at {self.url} ({why}); check the "
                               "network, or ask the operator whether the node is running")

    def _sign(self, method: str, url: str, body: bytes) -> dict[str, str]:
        return httpsig.sign_request(
            self.identity.signing_key, method=method, url=url, body=body,
            created=int(self.clock.now().timestamp()),
            nonce=b64url_encode(self.random(16)))

    async def _call(self, method: str, path: str, *, body: Any = None, signed: bool = True,
                    max_answer: int = MAX_JSON_ANSWER, upload: Meter = NO_METER,
                    download: Meter = NO_METER) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON). Raises the typed errors."""
        url = self.url + path
        data = b"" if body is None else json_dumps(body)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            headers.update(self._sign(method, url, data))
        payload = _ProgressPayload(data, upload) if body is not None else None
        if body is not None:
            upload.start(len(data))
        try:
            async with self.session.request(method, URL(url, encoded=True), data=payload,
                                            headers=headers, timeout=self.timeout,
                                            allow_redirects=False) as response:
                raw = bytearray()
                download.start(response.content_length or 0)
                async for chunk in response.content.iter_chunked(_CHUNK):
                    raw += chunk
                    download.advance(len(chunk))
                    if len(raw) > max_answer:
                        raise NodeProtocolError("the node's answer is larger than any valid "
                                                "answer")
                status = response.status
                ctype = response.headers.get("Content-Type", "")
                retry = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None
        if status >= 400:
            raise error_from_response(status, ctype, bytes(raw), retry_after=retry)
        if status not in (200, 201) or "json" not in ctype:
            raise NodeProtocolError(f"the node answered HTTP {status} {ctype[:40]!r} where "
                                    "the protocol expects JSON")
        try:
            return status, json_loads(bytes(raw), max_bytes=max_answer, what="answer")
        except DecodeError:
            raise NodeProtocolError("the node's answer is not valid JSON") from None

    @staticmethod
    def _object(value: Any, *keys: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(k in value for k in keys):
            raise NodeProtocolError("the node's answer is missing fields the protocol "
                                    "requires")
        return value

    # --- the node and membership ---------------------------------------------------

    async def node_info(self) -> NodeInfo:
        _, answer = await self._call("GET", "/v1/node", signed=False)
        obj = self._object(answer, "card", "limits", "api")
        if obj["api"] != API_VERSION:
            raise NodeProtocolError(f"the node speaks API version {str(obj['api'])[:10]}, "
                                    f"this program version {API_VERSION}")
        try:
            card = load_card(dsse.Envelope.from_dict(obj["card"], max_payload=MAX_CARD_BYTES),
                             now=self.clock.now())
        except BackchannelError as exc:
            raise NodeProtocolError(f"the node's card is not valid ({exc})") from None
        limits = obj["limits"]
        if not isinstance(limits, dict):
            raise NodeProtocolError("the node's limits are malformed")
        return NodeInfo(card, {k: v for k, v in limits.items()
                               if isinstance(k, str) and isinstance(v, int)
                               and not isinstance(v, bool)}, API_VERSION)

    async def check_pin(self) -> NodeInfo:
        """Fetch the node's card and compare it with the pin. Raises
        :class:`NodeKeyMismatch` (before anything is sent)."""
        info = await self.node_info()
        if self.node is None:
            raise ValueError("no pinned node card")
        if info.card.id != self.node.id:
            raise NodeKeyMismatch(
                f"the node at {self.url} presents a different key (fingerprint "
                f"{info.card.fingerprint}) from the one pinned when you joined (fingerprint "
                f"{self.node.fingerprint}); nothing was sent. Ask the node's operator "
                "whether the key was replaced: if not, someone may be impersonating the node")
        return info

    async def register(self, invitation: str, card: Card) -> Membership:
        """Present the invitation with ``card`` (signed by the card's key: proof of
        possession). The node must answer with the pinned node card."""
        _, answer = await self._call("POST", "/v1/register",
                                     body={"invitation": invitation,
                                           "card": card.envelope.to_dict()})
        obj = self._object(answer, "member", "node")
        member = self._object(obj["member"], "id", "role", "label")
        try:
            node = load_card(dsse.Envelope.from_dict(obj["node"], max_payload=MAX_CARD_BYTES),
                             now=self.clock.now())
        except BackchannelError as exc:
            raise NodeProtocolError(f"the node's card is not valid ({exc})") from None
        if self.node is not None and node.id != self.node.id:
            raise NodeKeyMismatch("the node answered the registration with another key")
        if member["id"] != card.id or not all(isinstance(member[k], str) for k in member):
            raise NodeProtocolError("the node registered another identity than this one")
        return Membership(member["id"], member["role"], member["label"], node)

    async def lookup_card(self, member_id: str) -> Card:
        """A member's card as the node holds it; its id must be ``member_id`` (the id is
        derived from the key, so the node cannot substitute another key)."""
        _, answer = await self._call("GET", f"/v1/members/{member_id}/card")
        try:
            card = load_card(dsse.Envelope.from_dict(self._object(answer, "card")["card"],
                                                     max_payload=MAX_CARD_BYTES),
                             now=self.clock.now(), allow_expired=True)
        except BackchannelError as exc:
            raise NodeProtocolError(f"the node sent an invalid card ({exc})") from None
        if card.id != member_id:
            raise NodeProtocolError("the node sent the card of another identity")
        return card

    # --- sending -------------------------------------------------------------------

    async def submit(self, routing: Routing, sealed: bytes, *,
                     upload: Meter = NO_METER) -> Submitted:
        """Submit a sealed message; return the node's *accepted* statement, verified
        against the pinned node key."""
        if self.node is None:
            raise ValueError("no pinned node card")
        status, answer = await self._call(
            "POST", "/v1/envelopes", upload=upload,
            body={"envelope": routing.envelope.to_dict(), "sealed": b64url_encode(sealed)})
        obj = self._object(answer, "id", "receipt")
        try:
            receipt = load_statement(obj["receipt"])
            verify_statement(receipt, self.node.verify_key)
        except BackchannelError:
            raise NodeProtocolError("the node's receipt does not verify with its pinned "
                                    "key") from None
        if (obj["id"] != routing.id or receipt.kind != "accepted"
                or receipt.envelope != routing.id
                or receipt.fields.get("sender") != self.identity.id):
            raise NodeProtocolError("the node's receipt is not an acceptance of this envelope")
        return Submitted(routing.id, receipt, status == 201)

    # --- receiving -----------------------------------------------------------------

    def _inbox_item(self, value: Any) -> InboxItem:
        obj = self._object(value, "cursor", "id", "envelope", "size", "received")
        try:
            routing = parse_routing(dsse.Envelope.from_dict(obj["envelope"]))
            received = parse_time(obj["received"], field="received")
        except DecodeError as exc:
            raise NodeProtocolError(f"the node listed a malformed envelope ({exc})") from None
        cursor = obj["cursor"]
        if (routing.id != obj["id"] or not isinstance(cursor, int) or isinstance(cursor, bool)
                or obj["size"] != routing.size):
            raise NodeProtocolError("the node's inbox listing does not match its envelopes")
        return InboxItem(cursor, routing.id, routing, routing.size, received)

    async def inbox(self, *, after: int = 0, limit: int = INBOX_PAGE
                    ) -> tuple[list[InboxItem], int]:
        _, answer = await self._call("GET", f"/v1/inbox?after={after}&limit={limit}")
        obj = self._object(answer, "items", "next")
        if not isinstance(obj["items"], list) or not isinstance(obj["next"], int):
            raise NodeProtocolError("the node's inbox listing is malformed")
        items = [self._inbox_item(v) for v in obj["items"]]
        if any(i.cursor <= after for i in items) or obj["next"] < after:
            raise NodeProtocolError("the node's inbox cursors go backwards")
        return items, obj["next"]

    async def inbox_all(self, *, after: int = 0) -> list[InboxItem]:
        """Every unacknowledged item after ``after``, page by page."""
        items: list[InboxItem] = []
        while True:
            page, nxt = await self.inbox(after=after)
            items.extend(page)
            if len(page) < INBOX_PAGE or nxt == after:
                return items
            after = nxt

    async def fetch(self, envelope_id: str, *, download: Meter = NO_METER
                    ) -> tuple[Routing, bytes]:
        """The envelope and the sealed bytes it names (content id checked)."""
        _, answer = await self._call("GET", f"/v1/envelopes/{envelope_id}",
                                     max_answer=MAX_FETCH_ANSWER, download=download)
        obj = self._object(answer, "envelope", "sealed")
        try:
            routing = parse_routing(dsse.Envelope.from_dict(obj["envelope"]))
            sealed = b64url_decode(obj["sealed"], max_bytes=MAX_SEALED_BYTES, field="sealed")
            check_content(routing, sealed)
        except DecodeError as exc:
            raise NodeProtocolError(f"the node sent a damaged envelope ({exc})") from None
        if routing.id != envelope_id:
            raise NodeProtocolError("the node sent another envelope than the one asked for")
        return routing, sealed

    async def ack(self, envelope_id: str, opened: Statement | None) -> None:
        body = {"opened": opened.signed.to_dict() if opened and opened.signed else None}
        _, answer = await self._call("POST", f"/v1/envelopes/{envelope_id}/ack", body=body)
        if self._object(answer, "acknowledged")["acknowledged"] is not True:
            raise NodeProtocolError("the node did not confirm the acknowledgement")

    async def receipts(self, envelope_id: str) -> list[Statement]:
        """The statements the node holds for the envelope (parsed, not yet verified:
        the caller knows which keys to trust)."""
        return (await self.receipts_and_cards(envelope_id))[0]

    async def receipts_and_cards(self, envelope_id: str) -> tuple[list[Statement], list[Card]]:
        """The statements, and the cards the node holds for their signers (nodes
        further along a route, recipients on other nodes). A card is self-signed and
        its id derives from its key, so the node cannot pass off a key as another
        identity's; whose key it is, the fingerprints tell."""
        _, answer = await self._call("GET", f"/v1/envelopes/{envelope_id}/receipts")
        obj = self._object(answer, "statements")
        raw, raw_cards = obj["statements"], obj.get("cards", [])
        if not isinstance(raw, list) or len(raw) > MAX_STATEMENTS:
            raise NodeProtocolError("the node's receipt list is malformed")
        if not isinstance(raw_cards, list) or len(raw_cards) > MAX_STATEMENTS:
            raise NodeProtocolError("the node's card list is malformed")
        try:
            statements = [load_statement(s) for s in raw]
        except DecodeError as exc:
            raise NodeProtocolError(f"the node sent a malformed statement ({exc})") from None
        try:
            cards = [load_card(dsse.Envelope.from_dict(c, max_payload=MAX_CARD_BYTES),
                               now=self.clock.now(), allow_expired=True, check_created=False)
                     for c in raw_cards]
        except BackchannelError as exc:
            raise NodeProtocolError(f"the node sent an invalid card ({exc})") from None
        return statements, cards

    # --- push ----------------------------------------------------------------------

    def ws_auth_message(self, node_id: str, nonce: bytes) -> dict[str, str]:
        signature = self.identity.signing_key.sign(
            WS_AUTH_DOMAIN + node_id.encode("ascii") + b"\x00" + nonce)
        return {"type": "auth", "id": self.identity.id, "sig": b64url_encode(signature)}

    @contextlib.asynccontextmanager
    async def push(self) -> AsyncIterator[AsyncIterator[int]]:
        """A WebSocket session that yields the cursor of each new delivery.

        Raises :class:`NodeUnreachable` if the socket cannot be opened or
        authenticated (the caller falls back to polling) and
        :class:`NodeKeyMismatch` if the node names another node id than the pin."""
        if self.node is None:
            raise ValueError("no pinned node card")
        ws_url = "ws" + self.url[len("http"):] + "/v1/ws"
        try:
            ws = await self.session.ws_connect(URL(ws_url, encoded=True), heartbeat=30.0,
                                               max_msg_size=64 * 1024)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            challenge = await self._ws_json(ws)
            if challenge.get("type") != "challenge" or not isinstance(challenge.get("nonce"),
                                                                      str):
                raise NodeProtocolError("the node's WebSocket did not start with a challenge")
            if challenge.get("node") != self.node.id:
                raise NodeKeyMismatch("the node's WebSocket names another node than the one "
                                      "pinned")
            try:
                nonce = b64url_decode(challenge["nonce"], max_bytes=64, field="nonce")
            except DecodeError:
                raise NodeProtocolError("malformed WebSocket challenge") from None
            await ws.send_str(json.dumps(self.ws_auth_message(self.node.id, nonce)))
            ready = await self._ws_json(ws)
            if ready.get("type") != "ready":
                raise NodeProtocolError("the node did not confirm the WebSocket session")
            yield self._ws_cursors(ws)
        finally:
            await ws.close()

    async def _ws_json(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        try:
            msg = await ws.receive(timeout=WS_HANDSHAKE_TIMEOUT)
        except TimeoutError as exc:
            raise self._unreachable(exc) from None
        if msg.type != aiohttp.WSMsgType.TEXT:
            code = ws.close_code
            if code == CLOSE_UNAUTHORIZED:
                raise NodeUnreachable("the node refused this identity on its WebSocket")
            raise NodeUnreachable("the node closed the WebSocket")
        try:
            value = json_loads(msg.data, max_bytes=64 * 1024, what="message")
        except DecodeError:
            raise NodeProtocolError("the node sent a malformed WebSocket message") from None
        if not isinstance(value, dict):
            raise NodeProtocolError("the node sent a malformed WebSocket message")
        return value

    async def _ws_cursors(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[int]:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                value = json_loads(msg.data, max_bytes=64 * 1024, what="message")
            except DecodeError:
                continue
            if (isinstance(value, dict) and value.get("type") == "envelope"
                    and isinstance(value.get("cursor"), int)):
                yield value["cursor"]

    async def watch(self, *, after: int = 0, poll_interval: float = 15.0,
                    on_mode: Callable[[str], None] = lambda _m: None
                    ) -> AsyncIterator[InboxItem]:
        """New inbox items, forever: pushed over the WebSocket, or polled every
        ``poll_interval`` seconds while the WebSocket is unavailable. ``on_mode`` is
        told "push", "poll" or "unreachable" when that changes."""
        cursor = after
        mode = ""

        def switch(new: str) -> None:
            nonlocal mode
            if new != mode:
                mode = new
                on_mode(new)

        while True:
            try:
                async with self.push() as cursors:
                    switch("push")
                    # Anything that arrived before the socket was ready.
                    for item in await self.inbox_all(after=cursor):
                        cursor = max(cursor, item.cursor)
                        yield item
                    async for pushed in cursors:
                        if pushed <= cursor:
                            continue
                        for item in await self.inbox_all(after=cursor):
                            cursor = max(cursor, item.cursor)
                            yield item
            except NodeUnreachable:
                pass
            # The socket is gone or unavailable: poll until the next attempt.
            try:
                items = await self.inbox_all(after=cursor)
            except NodeUnreachable:
                switch("unreachable")
            else:
                switch("poll")
                for item in items:
                    cursor = max(cursor, item.cursor)
                    yield item
            await asyncio.sleep(poll_interval)
