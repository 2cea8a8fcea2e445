"""Authenticating signed requests (RFC 9421, keys.httpsig) and limiting their rate.

For a member's request, in order:

1. Verify the signature with the key of the member named by ``keyid`` (a key this
   node does not know is answered like a bad signature: 401).
2. Refuse a revoked member (403) - only after step 1, so the answer goes to the
   key's holder alone.
3. Rate-limit per identity (429) - after step 1, so nobody can spend another
   member's budget.
4. Remember the nonce for the window (401 ``replay`` if already seen). The nonce is
   committed to the database, so the protection survives restarts and holds
   across processes sharing PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keys import httpsig
from keys.clock import SYSTEM_CLOCK, Clock
from keys.ed25519 import VerifyKey

from .. import errors
from ..ratelimit import RateLimiter
from ..storage import federation, members, nonces
from ..storage.database import Database


@dataclass(frozen=True)
class Caller:
    """An authenticated, active member."""

    id: str
    role: str
    key: VerifyKey


@dataclass(frozen=True)
class Peer:
    """An authenticated peer node (pinned by the operator)."""

    id: str
    key: VerifyKey


@dataclass(frozen=True)
class SignedParts:
    """What a handler extracts from an HTTP request for verification."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


class _KeyNeeded(Exception):
    def __init__(self, keyid: str) -> None:
        self.keyid = keyid


_ERRORS: dict[type[httpsig.HttpSignatureError], type[errors.Unauthorized]] = {
    httpsig.SignatureMissing: errors.SignatureMissing,
    httpsig.SignatureExpired: errors.SignatureExpired,
    httpsig.SignatureInvalid: errors.SignatureInvalid,
}


class Authenticator:
    def __init__(self, db: Database, limiter: RateLimiter, *, window: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.limiter = limiter
        self.window = window
        self.clock = clock

    def _verify(self, parts: SignedParts, resolve: Mapping[str, VerifyKey] | None
                ) -> httpsig.SignedRequest:
        def resolve_key(keyid: str) -> VerifyKey | None:
            if resolve is None:
                raise _KeyNeeded(keyid)
            return resolve.get(keyid)

        try:
            return httpsig.verify_request(
                method=parts.method, url=parts.url, headers=parts.headers, body=parts.body,
                resolve_key=resolve_key, now=int(self.clock.now().timestamp()),
                window=self.window)
        except httpsig.HttpSignatureError as exc:
            raise _ERRORS.get(type(exc), errors.SignatureInvalid)(str(exc)) from None

    def keyid_of(self, parts: SignedParts) -> str:
        """The signer's claimed keyid, after every check that needs no key (format,
        covered components, time window). Raises the signature problems."""
        try:
            self._verify(parts, None)
        except _KeyNeeded as needed:
            return needed.keyid
        raise errors.SignatureInvalid("the request signature does not verify")  # unreachable

    async def member(self, parts: SignedParts) -> Caller:
        """Authenticate a member's request (steps 1-4 of the module docstring)."""
        keyid = self.keyid_of(parts)
        async with self.db.read() as conn:
            row = await members.get_member(conn, keyid)
        # Step 1.
        if row is None:
            raise errors.SignatureInvalid("the signing key is not known here")
        key = VerifyKey(row.signing_key)
        signed = self._verify(parts, {row.id: key})
        # Step 2.
        if not row.active:
            raise errors.Forbidden("this membership has been revoked")
        # Step 3.
        self.limit(row.id)
        # Step 4.
        await self.remember(signed)
        return Caller(row.id, row.role, key)

    async def peer(self, parts: SignedParts) -> Peer:
        """Authenticate a node-to-node request: signed (as a member's is) by the key of
        a pinned peer node. Peers are not rate-limited: each is one operator's node,
        pinned on purpose, and carries many members' traffic."""
        keyid = self.keyid_of(parts)
        async with self.db.read() as conn:
            row = await federation.get_peer(conn, keyid)
        if row is None:
            raise errors.NotAPeer("this node does not peer with the signing key; its "
                                  "operator pins peers with `backchannel relay peers add`")
        key = VerifyKey(row.signing_key)
        signed = self._verify(parts, {row.id: key})
        await self.remember(signed)
        return Peer(row.id, key)

    async def newcomer(self, parts: SignedParts, key: VerifyKey) -> None:
        """Proof of possession for registration: the request is signed by ``key``."""
        keyid = self.keyid_of(parts)
        if keyid != key.id:
            raise errors.SignatureInvalid("registration must be signed by the card's key")
        signed = self._verify(parts, {key.id: key})
        self.limit(key.id)
        await self.remember(signed)

    def limit(self, key: str) -> None:
        wait = self.limiter.check(key)
        if wait:
            raise errors.RateLimited("too many requests; slow down", retry_after=wait)

    async def remember(self, signed: httpsig.SignedRequest) -> None:
        # The nonce must be refused until its signature is out of the window on
        # either side of the clock.
        expires = signed.created + self.window + 1
        async with self.db.write() as conn:
            fresh = await nonces.remember(conn, signed.keyid, signed.nonce, expires)
        if not fresh:
            raise errors.Replay("this signed request was already received")
