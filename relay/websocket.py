"""WebSocket push of new deliveries.

1. The node sends ``{"type": "challenge", "nonce": <b64url 32 random bytes>,
   "node": <node id>}``.
2. The client answers within ``ws_auth_timeout`` seconds with ``{"type": "auth",
   "id": <member id>, "sig": <b64url Ed25519 signature>}`` over
   ``b"backchannel/v1/ws-auth\\x00" + node id + b"\\x00" + nonce``: the nonce is
   fresh per connection, so an answer cannot be replayed, and naming the node
   keeps an answer from being relayed to another node.
3. Unknown, revoked or wrong signature: close with code 4401 (one answer for all).
   Otherwise ``{"type": "ready"}``, then ``{"type": "envelope", "cursor", "id"}``
   for each delivery committed from then on. A client catches up on anything
   older from the inbox, by cursor.
4. Every ``ws_recheck_seconds`` the session re-reads the membership: a member
   revoked meanwhile (perhaps by another process) is disconnected with 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Final

from aiohttp import WSMsgType, web

from keys.ed25519 import SIGNATURE_BYTES, VerifyKey
from keys.encoding import b64url_decode, b64url_encode
from keys.errors import BackchannelError

from . import appkeys
from .logs import note
from .storage import members

AUTH_DOMAIN: Final = b"backchannel/v1/ws-auth\x00"
NONCE_BYTES: Final = 32
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_AUTH_TIMEOUT: Final = 4408
CLOSE_OVERFLOW: Final = 4429
CLOSE_REVOKED: Final = 4403
#: The auth message is about 200 bytes; clients send nothing else.
MAX_MESSAGE: Final = 4096
log = logging.getLogger("relay.ws")


def auth_message(node_id: str, nonce: bytes) -> bytes:
    return AUTH_DOMAIN + node_id.encode("ascii") + b"\x00" + nonce


async def _authenticate(request: web.Request, ws: web.WebSocketResponse, nonce: bytes
                        ) -> str | None:
    app = request.app
    try:
        msg = await ws.receive(timeout=app[appkeys.CONFIG].ws_auth_timeout)
    except TimeoutError:
        await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"authentication timed out")
        return None
    if msg.type != WSMsgType.TEXT or len(msg.data) > MAX_MESSAGE:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"authentication failed")
        return None
    member_id = None
    try:
        doc = json.loads(msg.data)
        if (isinstance(doc, dict) and doc.get("type") == "auth" and set(doc) == {"type", "id",
                                                                                  "sig"}
                and isinstance(doc["id"], str) and len(doc["id"]) <= 64):
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


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    app[appkeys.SOCKETS].add(ws)
    nonce = app[appkeys.RANDOM](NONCE_BYTES)
    await ws.send_json({"type": "challenge", "nonce": b64url_encode(nonce),
                        "node": app[appkeys.NODE].id})
    member = await _authenticate(request, ws, nonce)
    if member is None:
        return ws
    note(member=member)
    notifier = app[appkeys.NOTIFIER]
    metrics = app[appkeys.METRICS]
    sub = notifier.subscribe(member)
    metrics.ws_sessions.inc()
    reader = asyncio.create_task(_drain(ws))
    overflow = asyncio.create_task(sub.overflowed.wait())
    revoked = asyncio.create_task(_until_revoked(request, member))
    try:
        await ws.send_json({"type": "ready"})
        while not ws.closed:
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({getter, reader, overflow, revoked},
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if overflow in done:
                    await ws.close(code=CLOSE_OVERFLOW, message=b"too far behind; resync")
                elif revoked in done:
                    await ws.close(code=CLOSE_REVOKED, message=b"membership revoked")
                break
            notice = getter.result()
            await ws.send_json({"type": "envelope", "cursor": notice.cursor,
                                "id": notice.envelope_id})
            metrics.ws_pushed.inc()
    except (ConnectionError, RuntimeError):
        pass  # the client went away while we were writing
    finally:
        notifier.unsubscribe(sub)
        metrics.ws_sessions.dec()
        for task in (reader, overflow, revoked):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return ws


async def _until_revoked(request: web.Request, member: str) -> None:
    app = request.app
    interval = app[appkeys.CONFIG].ws_recheck_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            async with app[appkeys.DB].read() as conn:
                row = await members.get_member(conn, member)
        except Exception:  # a database hiccup is not a revocation; check again later
            log.warning("membership recheck failed", extra={"event": "ws.recheck_error"})
            continue
        if row is None or not row.active:
            return


async def _drain(ws: web.WebSocketResponse) -> None:
    """Consume client frames (pings are answered by aiohttp) until the socket closes."""
    async for _msg in ws:
        pass
