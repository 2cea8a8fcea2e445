"""Invitations on the node side: the hash the node stores and the secret a joining
client presents. The string format itself is :mod:`keys.invitation`, shared with the
client. The node stores only SHA-256 of the secret, so a copy of its database cannot
be used to join.
"""

from __future__ import annotations

import hashlib

from keys.encoding import b64url_decode
from keys.errors import DecodeError
from keys.invitation import (
    MAX_INVITATION_CHARS,
    PREFIX,
    ROLES,
    SECRET_BYTES,
    Invitation,
    encode_invitation,
    parse_invitation,
)

__all__ = ["MAX_INVITATION_CHARS", "PREFIX", "ROLES", "SECRET_BYTES", "Invitation",
           "encode_invitation", "parse_invitation", "presented_secret", "secret_hash"]


def secret_hash(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def presented_secret(value: object) -> bytes:
    """The secret from what a client sent at registration: the whole invitation
    string, or only its b64url ``secret``. Raises :class:`DecodeError`."""
    if not isinstance(value, str):
        raise DecodeError("invitation: expected a string")
    if value.startswith(PREFIX):
        return parse_invitation(value).secret
    return b64url_decode(value, max_bytes=SECRET_BYTES, exact=SECRET_BYTES,
                         field="invitation")
