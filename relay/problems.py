"""RFC 9457 problem details: the body of every error response."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from keys.encoding import json_dumps

from . import errors

TYPE_BASE: Final = "https://backchannel.example/problems/"
MEDIA_TYPE: Final = "application/problem+json"

#: For errors aiohttp raises itself (unknown route, wrong method...).
_BY_STATUS: Final[dict[int, type[errors.RelayError]]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.TooLarge,
    415: errors.UnsupportedMediaType,
}


def problem_type(slug: str) -> str:
    return TYPE_BASE + slug


def response(status: int, slug: str, title: str, detail: str,
             headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": problem_type(slug), "title": title, "status": status, "detail": detail}
    return web.Response(status=status, body=json_dumps(body), headers=headers,
                        content_type=MEDIA_TYPE)


def from_error(exc: errors.RelayError) -> web.Response:
    headers = None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    status = exc.status
    slug, title = exc.slug, exc.title
    detail = str(exc) or title
    if isinstance(exc, errors.NodeError):
        # Never reveal server-side details (paths, database) to a client.
        status, slug, title, detail = 500, "internal", "Internal error", "internal error"
    return response(status, slug, title, detail, headers)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    kind = _BY_STATUS.get(exc.status)
    if kind is None:
        slug, title = ("internal", "Internal error") if exc.status >= 500 else \
            ("bad-request", exc.reason)
    else:
        slug, title = kind.slug, kind.title
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return response(exc.status, slug, title, exc.reason, headers)
