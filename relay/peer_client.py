"""Pushing to peer nodes: the node's one outbound HTTP client.

Every request is signed with the node's own key exactly as members sign theirs
(RFC 9421 through :func:`keys.httpsig.sign_request`: ``@method``, ``@target-uri`` =
the peer's public URL from its card, ``content-digest``, ``created``, ``nonce``).
An answer is reduced to what the forwarder needs to decide: delivered, try again
later, or refused for good.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

import aiohttp
from yarl import URL

from keys import httpsig
from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.encoding import b64url_encode, json_loads
from keys.errors import DecodeError
from keys.identity import Identity

from .problems import TYPE_BASE

#: Answers of peers are small JSON documents.
MAX_ANSWER: Final = 64 * 1024
#: Statuses after which the same push may succeed later: the peer is overloaded or
#: failing (5xx, 429, 408), our clock or its nonce memory disagree (401), or its
#: operator has not pinned us yet (403).
TRANSIENT: Final = frozenset({401, 403, 408, 425, 429})


@dataclass(frozen=True)
class Outcome:
    """``ok``: the peer stored it (now or before). Otherwise ``transient`` tells whether
    to retry; ``error`` is a short code for logs and statements (a problem slug, an
    HTTP status or an exception class: never a message, which could quote data)."""

    ok: bool
    transient: bool
    error: str


class PeerClient:
    def __init__(self, node: Identity, *, timeout: float, clock: Clock = SYSTEM_CLOCK,
                 random: Random = system_random) -> None:
        self.node = node
        self.clock = clock
        self.random = random
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                             sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def post(self, base_url: str, path: str, body: bytes) -> Outcome:
        url = base_url.rstrip("/") + path
        headers = httpsig.sign_request(self.node.signing_key, method="POST", url=url,
                                       body=body, created=int(self.clock.now().timestamp()),
                                       nonce=b64url_encode(self.random(16)))
        headers["Content-Type"] = "application/json"
        try:
            async with self._get_session().post(URL(url, encoded=True), data=body,
                                                headers=headers,
                                                allow_redirects=False) as response:
                status = response.status
                raw = await response.content.read(MAX_ANSWER)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, True, type(exc).__name__)
        if 200 <= status < 300:
            return Outcome(True, False, "")
        slug = _slug(raw) or f"http-{status}"
        return Outcome(False, status >= 500 or status in TRANSIENT, slug)


def _slug(raw: bytes) -> str | None:
    with contextlib.suppress(DecodeError):
        doc = json_loads(raw, max_bytes=MAX_ANSWER, what="problem")
        kind = doc.get("type") if isinstance(doc, dict) else None
        if isinstance(kind, str) and kind.startswith(TYPE_BASE):
            slug = kind[len(TYPE_BASE):]
            if slug.isascii() and 0 < len(slug) <= 40 and all(
                    c.isalnum() or c == "-" for c in slug):
                return slug
    return None
