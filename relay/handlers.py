"""HTTP handlers: parse, authenticate, call a service, serialise. No rules here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from keys import dsse
from keys.card import MAX_CARD_BYTES, load_card
from keys.encoding import b64url_encode, format_time, json_dumps
from keys.errors import BackchannelError, Expired

from . import appkeys, errors
from .inputs import int_query, parse_json_object, read_body, require_json_type, signed_parts
from .logs import note
from .metrics import CONTENT_TYPE_LATEST
from .openapi import openapi_document
from .services.auth import Caller, Proof

API_VERSION = 1


def _json(value: Any, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json_dumps(value), content_type="application/json")


def _raw(data: bytes) -> Any:
    # Stored DSSE documents are our own compact JSON; parsing them back costs little
    # and keeps one serialiser.
    return json.loads(data)


async def _member(request: web.Request, body: bytes = b"") -> Caller:
    app = request.app
    return await app[appkeys.AUTH].member(signed_parts(request, body, app[appkeys.CONFIG].url))


async def _json_body(request: web.Request, limit: int) -> bytes:
    body = await read_body(request, limit)
    require_json_type(request)
    return body


async def node_info(request: web.Request) -> web.Response:
    app = request.app
    config = app[appkeys.CONFIG]
    return _json({
        "card": _raw(app[appkeys.NODE].card.to_json()),
        "limits": {"max_sealed_bytes": config.max_sealed_bytes,
                   "max_json_bytes": config.max_json_bytes,
                   "inbox_page_max": config.inbox_page_max,
                   "signature_window": config.signature_window,
                   "rate_per_second": config.rate_per_second,
                   "rate_burst": config.rate_burst},
        "api": API_VERSION,
    })


async def register(request: web.Request) -> web.Response:
    app = request.app
    config = app[appkeys.CONFIG]
    body = await _json_body(request, config.max_json_bytes)
    doc = parse_json_object(body, limit=config.max_json_bytes, required=("invitation", "card"))
    # Registration is the one request from an unknown key: bound it per address too.
    app[appkeys.AUTH].limit(f"addr:{request.remote}")
    try:
        card = load_card(dsse.Envelope.from_dict(doc["card"], max_payload=MAX_CARD_BYTES),
                         now=app[appkeys.CLOCK].now())
    except Expired as exc:
        raise errors.BadRequest(f"card: {exc}") from None
    except BackchannelError as exc:
        raise errors.BadRequest(f"invalid card: {exc}") from None
    await app[appkeys.AUTH].newcomer(signed_parts(request, body, config.url), card.verify_key)
    member = await app[appkeys.REGISTRATION].register(doc["invitation"], card)
    # Its first signed request then needs no database read.
    app[appkeys.AUTH].welcome(member.id, member.role, card.verify_key)
    app[appkeys.METRICS].registrations.inc()
    note(member=member.id)
    return _json({"member": {"id": member.id, "role": member.role, "label": member.label},
                  "node": _raw(app[appkeys.NODE].card.to_json())}, status=201)


async def member_card(request: web.Request) -> web.Response:
    caller = await _member(request)
    note(member=caller.id)
    card = await request.app[appkeys.MAILBOX].member_card(caller, request.match_info["id"])
    return _json({"card": _raw(card)})


def _submission_limit(max_sealed: int) -> int:
    # base64url inflates by 4/3; the routing envelope is at most 16 KiB, itself
    # base64-encoded inside DSSE, plus JSON punctuation.
    return max_sealed * 4 // 3 + 64 * 1024


async def submit(request: web.Request) -> web.Response:
    app = request.app
    config = app[appkeys.CONFIG]
    limit = _submission_limit(config.max_sealed_bytes)
    body = await _json_body(request, limit)
    # The nonce is recorded in the submission's own transaction (one commit for both).
    caller, proof = await app[appkeys.AUTH].verify_member(
        signed_parts(request, body, config.url))
    note(member=caller.id)
    doc = parse_json_object(body, limit=limit, required=("envelope", "sealed"))
    accepted = await app[appkeys.SUBMISSION].submit(caller, proof, doc["envelope"],
                                                    doc["sealed"])
    metrics = app[appkeys.METRICS]
    if accepted.created:
        metrics.accepted.inc()
        metrics.sealed_bytes.inc(accepted.size)
    else:
        metrics.duplicates.inc()
    note(envelope=accepted.id)
    # The receipt is our own compact JSON and the id base64url: spliced in as they
    # are, instead of parsed and serialised again on every submission.
    return web.Response(status=201 if accepted.created else 200,
                        body=b'{"id":"' + accepted.id.encode("ascii") + b'","receipt":'
                        + accepted.receipt + b"}", content_type="application/json")


async def inbox(request: web.Request) -> web.Response:
    caller = await _member(request)
    note(member=caller.id)
    after = int_query(request, "after", 0)
    limit = int_query(request, "limit", 100)
    items, next_cursor = await request.app[appkeys.MAILBOX].inbox(caller, after=after,
                                                                  limit=limit)
    return _json({"items": [{"cursor": item.cursor, "id": item.envelope_id,
                             "envelope": _raw(item.routing), "size": item.size,
                             "received": format_time(datetime.fromtimestamp(item.received_at,
                                                                            UTC))}
                            for item in items],
                  "next": next_cursor})


async def fetch(request: web.Request) -> web.Response:
    caller = await _member(request)
    note(member=caller.id)
    fetched = await request.app[appkeys.MAILBOX].fetch(caller, request.match_info["id"])
    if fetched.first_delivery:
        request.app[appkeys.METRICS].delivered.inc()
    return _json({"envelope": _raw(fetched.routing), "sealed": b64url_encode(fetched.sealed)})


async def ack(request: web.Request) -> web.Response:
    app = request.app
    limit = app[appkeys.CONFIG].max_json_bytes
    body = await _json_body(request, limit)
    caller = await _member(request, body)
    doc = parse_json_object(body, limit=limit, required=(), optional=("opened",))
    note(member=caller.id)
    first = await app[appkeys.MAILBOX].ack(caller, request.match_info["id"], doc.get("opened"))
    if first:
        app[appkeys.METRICS].acked.inc()
    return _json({"acknowledged": True})


async def receipts(request: web.Request) -> web.Response:
    caller = await _member(request)
    note(member=caller.id)
    bodies, cards = await request.app[appkeys.MAILBOX].receipts(caller,
                                                                request.match_info["id"])
    return _json({"statements": [_raw(b) for b in bodies], "cards": [_raw(c) for c in cards]})


def _federation_limit(max_sealed: int) -> int:
    # An envelope push is a submission plus the statements and cards carried with it
    # (at most 32 of each, a few KiB apiece).
    return _submission_limit(max_sealed) + 1024 * 1024


#: Statements coming back: up to 128 statements and 64 cards.
STATEMENTS_LIMIT = 1024 * 1024


async def _peer_doc(request: web.Request, proof: Proof, body: bytes, limit: int,
                    required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    """A peer's JSON document; a malformed one still records the request's nonce
    (which answers a replay or an unpinned peer first)."""
    try:
        return parse_json_object(body, limit=limit, required=required, optional=optional)
    except errors.RelayError:
        await request.app[appkeys.FEDERATION].settle(proof)
        raise


async def federation_envelope(request: web.Request) -> web.Response:
    app = request.app
    limit = _federation_limit(app[appkeys.CONFIG].max_sealed_bytes)
    body = await _json_body(request, limit)
    # The nonce is recorded in the accepting transaction (one commit per push).
    peer, proof = await app[appkeys.AUTH].verify_peer(
        signed_parts(request, body, app[appkeys.CONFIG].url))
    note(member=peer.id)
    doc = await _peer_doc(request, proof, body, limit, ("envelope", "sealed"),
                          ("statements", "cards"))
    received = await app[appkeys.FEDERATION].accept_envelope(peer, proof, doc)
    note(envelope=received.id)
    if received.created:
        app[appkeys.METRICS].federation_received.labels("envelope").inc()
    return _json({"id": received.id, "stored": received.created},
                 status=201 if received.created else 200)


async def federation_statements(request: web.Request) -> web.Response:
    app = request.app
    body = await _json_body(request, STATEMENTS_LIMIT)
    peer, proof = await app[appkeys.AUTH].verify_peer(
        signed_parts(request, body, app[appkeys.CONFIG].url))
    note(member=peer.id)
    doc = await _peer_doc(request, proof, body, STATEMENTS_LIMIT, ("envelope", "statements"),
                          ("cards",))
    stored = await app[appkeys.FEDERATION].accept_statements(peer, proof, doc)
    if isinstance(doc["envelope"], str):
        note(envelope=doc["envelope"][:43])
    app[appkeys.METRICS].federation_received.labels("statements").inc(stored)
    return _json({"stored": stored})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    data = request.app[appkeys.METRICS].render()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(request.app[appkeys.CONFIG]))
