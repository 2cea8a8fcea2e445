"""Reading request input with limits: body size first, then media type, then JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from keys.encoding import json_loads
from keys.errors import DecodeError
from keys.errors import TooLarge as KeysTooLarge

from . import errors
from .services.auth import SignedParts

_CHUNK = 64 * 1024


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limit`` (by its declared
    length before reading anything, else while streaming): never buffered whole."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise errors.TooLarge(f"the request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise errors.TooLarge(f"the request body exceeds {limit} bytes")
    return bytes(body)


def require_json_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise errors.UnsupportedMediaType("send the body as application/json")


def parse_json_object(body: bytes, *, limit: int, required: tuple[str, ...],
                      optional: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        value = json_loads(body, max_bytes=limit, what="request body")
    except KeysTooLarge as exc:
        raise errors.TooLarge(str(exc)) from None
    except DecodeError as exc:
        raise errors.BadRequest(str(exc)) from None
    if not isinstance(value, dict):
        raise errors.BadRequest("the request body must be a JSON object")
    missing = [k for k in required if k not in value]
    unknown = [k for k in value if k not in required and k not in optional]
    if missing:
        raise errors.BadRequest(f"missing field(s): {', '.join(missing)}")
    if unknown:
        raise errors.BadRequest("unknown field(s): " + ", ".join(repr(k)[:40] for k in unknown[:5]))
    return value


def target_uri(request: web.Request, public_url: str) -> str:
    """The URI a client signed: the node's public URL (which a reverse proxy hides
    from us) followed by the path and query exactly as sent."""
    if public_url:
        return public_url.rstrip("/") + request.raw_path
    return f"{request.scheme}://{request.host}{request.raw_path}"


def signed_parts(request: web.Request, body: bytes, public_url: str) -> SignedParts:
    return SignedParts(request.method, target_uri(request, public_url), request.headers, body)


def int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise errors.BadRequest(f"{name} must be a non-negative integer")
    return int(raw)
