"""Errors raised by the relay node.

Every error a client can cause maps to one RFC 9457 problem: a stable ``slug``
(the last segment of its ``type`` URI, never renamed once published) and an HTTP
status. Messages are safe to show: they never contain a name, a token, an
invitation secret, a passphrase or contents (the node has none).

Two families: :class:`ClientError` (the caller sent something wrong or is not
allowed) and :class:`NodeError` (this node cannot do its job: configuration,
storage). The CLI prints either as one line.
"""

from __future__ import annotations

from typing import ClassVar

from keys.errors import BackchannelError


class RelayError(BackchannelError):
    """Base class of every error raised on purpose by :mod:`relay`."""

    slug: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"


class NodeError(RelayError):
    """The node itself cannot work: bad configuration, missing files, storage."""


class ConfigError(NodeError):
    """The node's configuration (relay.toml, environment, flags) is invalid."""


class NodeDirError(NodeError):
    """The node directory is missing, incomplete or already initialised."""


class ClientError(RelayError):
    """The request was refused because of what the caller sent or who the caller is."""

    slug = "bad-request"
    status = 400
    title = "Bad request"


class BadRequest(ClientError):
    """Malformed JSON, base64, envelope, statement or card."""


class EnvelopeInvalid(ClientError):
    """The routing envelope's signature or content id does not match."""

    slug = "envelope-invalid"
    title = "Envelope invalid"


class Unroutable(ClientError):
    """The envelope does not name this node as its origin and destination."""

    slug = "unroutable"
    title = "Envelope not routable through this node"


class EnvelopeExpired(ClientError):
    """The envelope is past its expiry time (or was created in the future)."""

    slug = "expired"
    title = "Expired"


class Gone(ClientError):
    """The envelope existed but has expired or been purged."""

    slug = "gone"
    status = 410
    title = "Gone"


class StatementInvalid(ClientError):
    """An opened statement does not verify, or does not name this envelope and caller."""

    slug = "statement-invalid"
    title = "Statement invalid"


class TooLarge(ClientError):
    slug = "too-large"
    status = 413
    title = "Request body too large"


class UnsupportedMediaType(ClientError):
    slug = "unsupported-media-type"
    status = 415
    title = "Unsupported media type"


class Unauthorized(ClientError):
    """The request is not signed by a key this node knows."""

    slug = "unauthorized"
    status = 401
    title = "Unauthorized"


class SignatureMissing(Unauthorized):
    slug = "signature-missing"
    title = "Signature missing"


class SignatureInvalid(Unauthorized):
    slug = "signature-invalid"
    title = "Signature invalid"


class SignatureExpired(Unauthorized):
    slug = "signature-expired"
    title = "Signature outside the time window"


class Replay(Unauthorized):
    """The (key, nonce) pair of a signed request was already used."""

    slug = "replay"
    title = "Replayed request"


class Forbidden(ClientError):
    """Known caller, not allowed (revoked member, wrong role)."""

    slug = "forbidden"
    status = 403
    title = "Forbidden"


class NotAPeer(ClientError):
    """A node-to-node request signed by a key this node has not pinned as a peer."""

    slug = "not-a-peer"
    status = 403
    title = "Not a peer"


class InvitationInvalid(ClientError):
    """Unknown, already used, expired or forged invitation: deliberately one answer."""

    slug = "invitation-invalid"
    status = 403
    title = "Invitation invalid"


class NotFound(ClientError):
    """Unknown or not visible to the caller: deliberately one answer for both."""

    slug = "not-found"
    status = 404
    title = "Not found"


class MethodNotAllowed(ClientError):
    slug = "method-not-allowed"
    status = 405
    title = "Method not allowed"


class Conflict(ClientError):
    slug = "conflict"
    status = 409
    title = "Conflict"


class RateLimited(ClientError):
    slug = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
