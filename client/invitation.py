"""Invitation strings, as printed by ``backchannel relay invite``.

Format (``docs/protocol.md``)::

    bcinv1.<b64url(JSON {"url": node URL, "node": node id,
                         "fp": node fingerprint, 30 digits without spaces,
                         "secret": b64url 32 random bytes,
                         "role": "delegation" | "intermediary", "expires": time})>

The client uses ``url`` to reach the node, then pins the node's key: the card the
node serves must have the id ``node`` and the fingerprint ``fp`` before the secret
is presented. The secret is shown nowhere and never written to the profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from keys.card import Card
from keys.encoding import b64url_decode, expect_object, expect_str, json_loads, parse_time
from keys.errors import DecodeError

from .errors import InvalidInvitation, InvitationExpired, NodeKeyMismatch

PREFIX: Final = "bcinv1."
SECRET_BYTES: Final = 32
ROLES: Final = ("delegation", "intermediary")
MAX_INVITATION_CHARS: Final = 4096
_FP_RE = re.compile(r"[0-9]{30}")


@dataclass(frozen=True)
class Invitation:
    url: str
    node: str
    fingerprint: str
    secret: bytes
    role: str
    expires: datetime
    #: The string as given (sent to the node, which accepts it whole).
    text: str

    def __repr__(self) -> str:  # never show the secret
        return f"Invitation(node={self.node!r}, role={self.role!r})"


def parse_invitation(text: str) -> Invitation:
    """Raises :class:`InvalidInvitation`."""
    text = "".join(text.split())  # line breaks from e-mail clients
    if len(text) > MAX_INVITATION_CHARS or not text.startswith(PREFIX):
        raise InvalidInvitation("this is not a Backchannel invitation (those start with "
                                "bcinv1.); copy the whole last line the operator sent")
    try:
        raw = b64url_decode(text[len(PREFIX):], max_bytes=MAX_INVITATION_CHARS,
                            field="invitation")
        obj = expect_object(json_loads(raw, max_bytes=MAX_INVITATION_CHARS, what="invitation"),
                            required=("url", "node", "fp", "secret", "role", "expires"),
                            what="invitation")
        url = expect_str(obj, "url", what="invitation", max_len=2048, min_len=1)
        node = expect_str(obj, "node", what="invitation", max_len=64, min_len=1)
        fp = expect_str(obj, "fp", what="invitation", max_len=30, min_len=30)
        if not _FP_RE.fullmatch(fp):
            raise DecodeError("the fingerprint must be 30 digits")
        secret = b64url_decode(obj["secret"], max_bytes=SECRET_BYTES, exact=SECRET_BYTES,
                               field="secret")
        role = obj["role"]
        if role not in ROLES:
            raise DecodeError("unknown role")
        expires = parse_time(obj["expires"], field="expires")
    except DecodeError as exc:
        raise InvalidInvitation(f"the invitation is damaged or incomplete ({exc}); copy "
                                "it again, in one piece") from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInvitation("the invitation's node address is not an http(s) URL")
    return Invitation(url.rstrip("/"), node, fp, secret, str(role), expires, text)


def check_not_expired(invitation: Invitation, now: datetime) -> None:
    if invitation.expires <= now:
        raise InvitationExpired("this invitation has expired; ask the node's operator for "
                                "a new one")


def check_node_card(invitation: Invitation, card: Card) -> None:
    """The node's card must be the one the invitation names (trust on first use is
    replaced by trust in the invitation, which came out of band)."""
    if card.role != "node":
        raise NodeKeyMismatch(f"the server at {invitation.url} is not a Backchannel node "
                              "(its card is not a node card)")
    if card.id != invitation.node or card.fingerprint.replace(" ", "") != invitation.fingerprint:
        raise NodeKeyMismatch(
            f"the node at {invitation.url} presents a key that is not the one in the "
            "invitation: do not join; tell the operator (someone may be impersonating "
            "the node)")
