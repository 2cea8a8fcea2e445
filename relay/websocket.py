"""WebSocket push of new deliveries.

1. The node sends ``{"type": "challenge", "nonce": <b64url 32 random bytes>,
   "node": <node id>}``.
2. The client answers within ``ws_auth_timeout`` seconds with ``{"type": "auth",
   "id": <member id>, "sig": <b64url Ed25519 signature>}`` over
   ``b"backchannel/v1/ws-auth\\x00" + node id + b"\\x00" + nonce``: the nonce is
   fresh per connection, so an answer cannot be replayed, and naming the node
   keeps an answer from being relayed to another node.
   At most ``ws_unauthenticated_max`` connections may be in this phase at once:
   beyond it the upgrade is refused with a 429 problem (``Retry-After``: the auth
   timeout and the close handshake, :data:`CLOSE_TIMEOUT`), so that connections
   nobody authenticates cannot exhaust the node.
3. Unknown, revoked or wrong signature: close with code 4401 (one answer for all).
   Otherwise ``{"type": "ready"}``, then ``{"type": "envelope", "cursor", "id"}``
   for each delivery committed from then on. A client catches up on anything
   older from the inbox, by cursor.
4. Every ``ws_recheck_seconds`` the node re-reads the membership of everyone
   connected (one task and one read for all sessions, :func:`recheck_members`): a
   member revoked meanwhile (perhaps by another process) is disconnected with 4403.
5. A session more than ``ws_queue_max`` notices behind is closed with 4429.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web

from keys.ed25519 import SIGNATURE_BYTES, VerifyKey
from keys.encoding import b64url_decode, b64url_encode, json_loads
from keys.errors import BackchannelError
from keys.ids import is_identity_id

from . import appkeys
from .logs import note
from .metrics import Metrics
from .notify import OVERFLOW, REVOKED, Subscription
from .storage import members
from .ws_gate import Ticket

AUTH_DOMAIN: Final = b"backchannel/v1/ws-auth\x00"
NONCE_BYTES: Final = 32
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_AUTH_TIMEOUT: Final = 4408
CLOSE_OVERFLOW: Final = 4429
CLOSE_REVOKED: Final = 4403
#: How long a close waits for the client's close frame (aiohttp's default is 10 s):
#: a connection that failed to authenticate must not keep its place that long.
CLOSE_TIMEOUT: Final = 2.0
#: The auth message is about 200 bytes; clients send nothing else.
MAX_MESSAGE: Final = 4096
#: Member ids per query of the shared re-check (well under every driver's bound on
#: bound parameters).
RECHECK_CHUNK: Final = 500
log = logging.getLogger("relay.ws")


def auth_message(node_id: str, nonce: bytes) -> bytes:
    return AUTH_DOMAIN + node_id.encode("ascii") + b"\x00" + nonce


async def _authenticate(request: web.Request, ws: web.WebSocketResponse, nonce: bytes
                        ) -> str | None:
    app = request.app
    try:
        # One deadline for the whole phase: ws.receive(timeout=...) starts its timeout
        # again after each ping or pong it answers itself, so a client that pings and
        # never authenticates would hold its socket for ever.
        async with asyncio.timeout(app[appkeys.CONFIG].ws_auth_timeout):
            msg = await ws.receive()
    except TimeoutError:
        await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"authentication timed out")
        return None
    if msg.type != WSMsgType.TEXT or len(msg.data) > MAX_MESSAGE:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"authentication failed")
        return None
    member_id = None
    try:
        doc = json_loads(msg.data, max_bytes=MAX_MESSAGE, what="auth message")
        # Only an identity id is looked up: a database may fail on what can never be
        # one (PostgreSQL on a NUL), which must read as a failed authentication.
        if (isinstance(doc, dict) and doc.get("type") == "auth" and set(doc) == {"type", "id",
                                                                                  "sig"}
                and is_identity_id(doc["id"])):
            sig = b64url_decode(doc["sig"], max_bytes=SIGNATURE_BYTES, exact=SIGNATURE_BYTES,
                                field="sig")
            async with app[appkeys.DB].read() as conn:
                row = await members.get_member(conn, doc["id"])
            if row is not None and row.active:
                VerifyKey(row.signing_key).verify(auth_message(app[appkeys.NODE].id, nonce),
                                                  sig)
                member_id = row.id
    except (ValueError, BackchannelError):
        member_id = None
    if member_id is None:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"authentication failed")
    return member_id


class _Session(Subscription):
    """A session's push side. Idle, it costs this object and the handler's task (which
    reads the socket); a short-lived task sends while there is something to send."""

    __slots__ = ("live", "metrics", "task", "ws")

    def __init__(self, member: str, limit: int, ws: web.WebSocketResponse,
                 metrics: Metrics) -> None:
        super().__init__(member, limit)
        self.ws = ws
        self.metrics = metrics
        #: False until ``ready`` is on the wire: nothing may overtake it.
        self.live = False
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self.live and self.task is None:
            self.task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while batch := self.take():
                for notice in batch:
                    await self.ws.send_str(json.dumps({"type": "envelope",
                                                       "cursor": notice.cursor,
                                                       "id": notice.envelope_id}))
                    self.sent()
                    self.metrics.ws_pushed.inc()
                    if self.ended is not None:
                        break
            if self.ended == OVERFLOW:
                await self.ws.close(code=CLOSE_OVERFLOW, message=b"too far behind; resync")
            elif self.ended == REVOKED:
                await self.ws.close(code=CLOSE_REVOKED, message=b"membership revoked")
        except (ConnectionError, RuntimeError):
            # The client went away while we were writing; the reader sees the close.
            self.ended = self.ended or "gone"
            self.pending = []
        finally:
            self.task = None


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    # No compression: notices are ~100 bytes, and a deflate context costs far more
    # memory per session than it could ever save.
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE, compress=False,
                               timeout=CLOSE_TIMEOUT)
    if not ws.can_prepare(request).ok:
        await ws.prepare(request)  # raises: not an upgrade, answered 400
    # Before the upgrade, while a refusal can still be an HTTP problem.
    ticket = app[appkeys.WS_GATE].enter()
    try:
        await ws.prepare(request)
        app[appkeys.SOCKETS].add(ws)
        try:
            return await _serve(request, ws, ticket)
        except Exception:
            # After the upgrade no HTTP problem can be answered (the middleware's would
            # be written into the socket): log the type only, close as an internal error.
            log.exception("websocket crash", extra={"event": "ws.crash"})
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
            return ws
    finally:
        ticket.release()


async def _serve(request: web.Request, ws: web.WebSocketResponse, ticket: Ticket
                 ) -> web.WebSocketResponse:
    app = request.app
    nonce = app[appkeys.RANDOM](NONCE_BYTES)
    await ws.send_json({"type": "challenge", "nonce": b64url_encode(nonce),
                        "node": app[appkeys.NODE].id})
    member = await _authenticate(request, ws, nonce)
    ticket.release()
    if member is None:
        return ws
    note(member=member)
    notifier = app[appkeys.NOTIFIER]
    metrics = app[appkeys.METRICS]
    # Subscribed before ``ready``: every delivery committed after it is pushed.
    session = _Session(member, notifier.queue_max, ws, metrics)
    notifier.add(session)
    metrics.ws_sessions.inc()
    try:
        await ws.send_json({"type": "ready"})
        session.live = True
        if session.pending or session.ended is not None:
            session.wake()
        # Clients send nothing after auth; reading answers pings and sees the close
        # (whether the client's, or ours from the push side).
        async for _msg in ws:
            pass
    except (ConnectionError, RuntimeError):
        pass  # the client went away while we were writing
    finally:
        notifier.remove(session)
        metrics.ws_sessions.dec()
        task = session.task
        if task is not None:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
    return ws


async def recheck_members(app: web.Application) -> None:
    """Runs for the node's lifetime: every ``ws_recheck_seconds``, one read of the
    members table for all sessions; members revoked meanwhile (perhaps by another
    process) are disconnected with 4403."""
    interval = app[appkeys.CONFIG].ws_recheck_seconds
    notifier = app[appkeys.NOTIFIER]
    while True:
        await asyncio.sleep(interval)
        connected = sorted(notifier.members())
        if not connected:
            continue
        active: set[str] = set()
        try:
            async with app[appkeys.DB].read() as conn:
                for i in range(0, len(connected), RECHECK_CHUNK):
                    active |= await members.active_among(conn,
                                                         connected[i:i + RECHECK_CHUNK])
        except Exception as exc:  # a database hiccup is not a revocation; check again later
            log.warning("membership recheck failed", extra={
                "event": "ws.recheck_error", "error": type(exc).__name__})
            continue
        for member in connected:
            if member not in active:
                notifier.end_member(member, REVOKED)
