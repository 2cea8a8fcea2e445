"""Authenticating signed requests (RFC 9421, keys.httpsig) and limiting their rate.

For a member's request, in order:

1. Verify the signature with the key of the member named by ``keyid`` (a key this
   node does not know is answered like a bad signature: 401). Keys are cached in
   memory: an identity id is derived from its key, so a cached key never goes stale.
2. Refuse a member known to be revoked (403) - only after step 1, so the answer goes
   to the key's holder alone.
3. Rate-limit per identity (429) - after step 1, so nobody can spend another
   member's budget.
4. In the request's group-commit job (relay.storage.committer), transactionally:
   refuse a revoked member (403; the database is the authority, never the cache),
   then record the nonce for the window (401 ``replay`` if already seen). The nonce
   is committed to the database, so the protection survives restarts and holds
   across processes sharing PostgreSQL. A submission records the nonce in its own
   job (relay.services.submission), so one commit covers both; other requests use
   :meth:`Authenticator.member`, whose job does this step alone.

A peer node's request (:meth:`Authenticator.verify_peer`) is verified the same way
with the key of a pinned peer (cached like members' keys: a node id derives from its
key); a key this node has not pinned is refused (403 ``not-a-peer``). In the job that
accepts the push, transactionally: refuse a peer no longer pinned (403, the database
being the authority), then record the nonce (401 ``replay``). A push refused before
its job still records its nonce, in a job of its own (relay.services.federation), so
a replay is answered ``replay`` whatever the first answer was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from keys import httpsig
from keys.clock import SYSTEM_CLOCK, Clock
from keys.ed25519 import VerifyKey

from .. import errors
from ..ratelimit import RateLimiter
from ..storage import federation, members, nonces
from ..storage.committer import Tx
from ..storage.database import Database

#: Member keys cached at most (the oldest entry goes first).
MAX_CACHED_KEYS: Final = 100_000


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


@dataclass
class _Known:
    caller: Caller
    #: Set once a transaction saw the membership revoked (revocation is final).
    revoked: bool = False


@dataclass
class _KnownPeer:
    peer: Peer
    #: Set once a transaction found the peer no longer pinned (the entry is then
    #: dropped and the database asked again).
    removed: bool = False


NOT_A_PEER: Final = ("this node does not peer with the signing key; its operator pins "
                     "peers with `backchannel relay peers add`")


@dataclass(frozen=True)
class Proof:
    """A verified request whose nonce is still to be recorded, in the request's job."""

    keyid: str
    nonce: str
    expires: int
    #: The member's cache entry, for a member's request (checked for revocation).
    member: _Known | None = None
    #: The peer's cache entry, for a peer node's request (checked for being pinned).
    peer: _KnownPeer | None = None


def record(tx: Tx, proof: Proof) -> None:
    """Step 4, inside a group-commit job: raises :class:`errors.Forbidden` for a
    revoked member, :class:`errors.NotAPeer` for a peer no longer pinned,
    :class:`errors.Replay` for a nonce already recorded. Writes nothing unless it
    returns (so a job may call it without a savepoint)."""
    if proof.peer is not None:
        fresh = nonces.record_if_peer(tx, proof.keyid, proof.nonce, proof.expires)
        if not fresh and not federation.is_pinned(tx, proof.keyid):
            proof.peer.removed = True
            raise errors.NotAPeer(NOT_A_PEER)
    elif proof.member is None:
        fresh = nonces.record(tx, proof.keyid, proof.nonce, proof.expires)
    else:
        fresh = nonces.record_if_active(tx, proof.keyid, proof.nonce, proof.expires)
        if not fresh and members.status_of(tx, proof.keyid) != members.ACTIVE:
            proof.member.revoked = True
            raise errors.Forbidden("this membership has been revoked")
    if not fresh:
        raise errors.Replay("this signed request was already received")


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


def _need_key(keyid: str) -> VerifyKey | None:
    raise _KeyNeeded(keyid)


class Authenticator:
    def __init__(self, db: Database, limiter: RateLimiter, *, window: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.limiter = limiter
        self.window = window
        self.clock = clock
        self._known: dict[str, _Known] = {}
        self._peers: dict[str, _KnownPeer] = {}

    def _verify(self, parts: SignedParts, resolve_key: Callable[[str], VerifyKey | None]
                ) -> httpsig.SignedRequest:
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
            self._verify(parts, _need_key)
        except _KeyNeeded as needed:
            return needed.keyid
        raise errors.SignatureInvalid("the request signature does not verify")  # unreachable

    def _cached_key(self, keyid: str) -> VerifyKey | None:
        known = self._known.get(keyid)
        if known is None:
            raise _KeyNeeded(keyid)
        return known.caller.key

    async def preload(self) -> int:
        """Cache the keys of the members who joined last (at most
        :data:`MAX_CACHED_KEYS`), so that the first request of each after a restart
        costs no database read: under load, dozens of such reads at once queue for
        the connection pool and made the first second's answers take up to half a
        second. Returns how many were loaded."""
        async with self.db.read() as conn:
            rows = await members.recent_keys(conn, MAX_CACHED_KEYS)
        for row in reversed(rows):  # oldest first: the first to go when the cache is full
            self._remember(row)
        return len(rows)

    def welcome(self, member_id: str, role: str, key: VerifyKey) -> None:
        """Cache the key of a member who has just registered (committed)."""
        self._cache(_Known(Caller(member_id, role, key)))

    def _remember(self, row: members.MemberRow | members.MemberKey) -> _Known:
        return self._cache(_Known(Caller(row.id, row.role, VerifyKey(row.signing_key)),
                                  revoked=not row.active))

    def _cache(self, known: _Known) -> _Known:
        old = self._known.get(known.caller.id)
        if old is not None and old.revoked:
            return old  # revocation is final: never forgotten by a cache refill
        if old is None and len(self._known) >= MAX_CACHED_KEYS:
            del self._known[next(iter(self._known))]
        self._known[known.caller.id] = known
        return known

    async def _member_key(self, keyid: str) -> _Known | None:
        known = self._known.get(keyid)
        if known is not None:
            return known
        async with self.db.read() as conn:
            row = await members.get_member(conn, keyid)
        if row is None:
            return None  # not cached: it may register later
        return self._remember(row)

    async def verify_member(self, parts: SignedParts) -> tuple[Caller, Proof]:
        """Steps 1-3 of the module docstring; step 4 is left to the caller's job
        (:func:`record` with the returned proof)."""
        # Step 1, in one pass when the key is cached (parsing the signature headers
        # twice is a good share of a submission's CPU).
        try:
            signed = self._verify(parts, self._cached_key)
            known = self._known[signed.keyid]
        except _KeyNeeded as needed:
            loaded = await self._member_key(needed.keyid)
            if loaded is None:
                raise errors.SignatureInvalid("the signing key is not known here") from None
            known = loaded
            signed = self._verify(parts, {known.caller.id: known.caller.key}.get)
        caller = known.caller
        # Step 2.
        if known.revoked:
            raise errors.Forbidden("this membership has been revoked")
        # Step 3.
        self.limit(caller.id)
        return caller, self._proof(signed, known)

    async def member(self, parts: SignedParts) -> Caller:
        """Authenticate a member's request (steps 1-4 of the module docstring)."""
        caller, proof = await self.verify_member(parts)
        await self.db.run(lambda tx: record(tx, proof), savepoint=False)
        return caller

    def _cached_peer_key(self, keyid: str) -> VerifyKey | None:
        known = self._peers.get(keyid)
        if known is None or known.removed:
            raise _KeyNeeded(keyid)
        return known.peer.key

    async def verify_peer(self, parts: SignedParts) -> tuple[Peer, Proof]:
        """A node-to-node request: signed (as a member's is) by the key of a pinned
        peer node. Whether the peer is still pinned, and the nonce, are left to the
        caller's job (:func:`record` with the returned proof). Peers are not
        rate-limited: each is one operator's node, pinned on purpose, and carries
        many members' traffic."""
        try:
            signed = self._verify(parts, self._cached_peer_key)
            return self._peer_proof(signed, self._peers[signed.keyid])
        except _KeyNeeded:
            pass
        except errors.Unauthorized:
            # A refusal with a cached key: asked again below, so the answer is the
            # one the database gives (a peer removed meanwhile is "not a peer").
            pass
        keyid = self.keyid_of(parts)
        self._peers.pop(keyid, None)
        row = await self.db.query(lambda tx: federation.peer_row(tx, keyid))
        if row is None:
            raise errors.NotAPeer(NOT_A_PEER)
        known = _KnownPeer(Peer(row.id, VerifyKey(row.signing_key)))
        signed = self._verify(parts, {row.id: known.peer.key}.get)
        if len(self._peers) >= MAX_CACHED_KEYS:
            del self._peers[next(iter(self._peers))]
        self._peers[keyid] = known
        return self._peer_proof(signed, known)

    def _peer_proof(self, signed: httpsig.SignedRequest, known: _KnownPeer
                    ) -> tuple[Peer, Proof]:
        return known.peer, Proof(signed.keyid, signed.nonce,
                                 signed.created + self.window + 1, peer=known)

    async def peer(self, parts: SignedParts) -> Peer:
        """:meth:`verify_peer` with the nonce recorded in a job of its own."""
        peer, proof = await self.verify_peer(parts)
        await self.settle(proof)
        return peer

    async def newcomer(self, parts: SignedParts, key: VerifyKey) -> None:
        """Proof of possession for registration: the request is signed by ``key``."""
        keyid = self.keyid_of(parts)
        if keyid != key.id:
            raise errors.SignatureInvalid("registration must be signed by the card's key")
        signed = self._verify(parts, {key.id: key}.get)
        self.limit(key.id)
        await self.remember(signed)

    def limit(self, key: str) -> None:
        wait = self.limiter.check(key)
        if wait:
            raise errors.RateLimited("too many requests; slow down", retry_after=wait)

    def _proof(self, signed: httpsig.SignedRequest, member: _Known | None = None) -> Proof:
        # The nonce must be refused until its signature is out of the window on
        # either side of the clock.
        return Proof(signed.keyid, signed.nonce, signed.created + self.window + 1, member)

    async def remember(self, signed: httpsig.SignedRequest) -> None:
        await self.settle(self._proof(signed))

    async def settle(self, proof: Proof) -> None:
        """Step 4 in a job of its own (for a request whose work has no job, or was
        refused before it)."""
        await self.db.run(lambda tx: record(tx, proof), savepoint=False)
