"""Invitation strings: what an operator hands to a future member, out of band.

Format (one line, printed alone on the last line by ``backchannel relay invite``)::

    bcinv1.<b64url(JSON {"url": node URL, "node": node id,
                         "fp": node fingerprint, 30 digits without spaces,
                         "secret": b64url 32 random bytes,
                         "role": "delegation" | "intermediary", "expires": time})>

The URL, node id and fingerprint let the joining client pin the node key at first
contact; the node stores only a hash of the secret. Shared here because both the
node (which writes and redeems them) and the client (which reads them) need the
one definition of the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_object,
    expect_str,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from .errors import DecodeError

PREFIX: Final = "bcinv1."
SECRET_BYTES: Final = 32
ROLES: Final = ("delegation", "intermediary")
#: The JSON is about 250 bytes; 4 KiB bounds a hostile paste.
MAX_INVITATION_CHARS: Final = 4096
# [0-9], not \d: \d also matches non-ASCII digits.
_FP_RE = re.compile(r"[0-9]{30}")


class BadNodeAddress(DecodeError):
    """The invitation's node URL is not an http(s) URL."""


@dataclass(frozen=True)
class Invitation:
    url: str
    node: str
    fingerprint: str
    secret: bytes
    role: str
    expires: datetime

    def __repr__(self) -> str:  # never show the secret
        return f"Invitation(node={self.node!r}, role={self.role!r})"


def encode_invitation(invitation: Invitation) -> str:
    body = json_dumps({"url": invitation.url, "node": invitation.node,
                       "fp": invitation.fingerprint.replace(" ", ""),
                       "secret": b64url_encode(invitation.secret), "role": invitation.role,
                       "expires": format_time(invitation.expires)})
    return PREFIX + b64url_encode(body)


def parse_invitation(text: str) -> Invitation:
    """Parse an invitation string; whitespace (line breaks added by e-mail clients) is
    ignored. Raises :class:`DecodeError`."""
    text = "".join(text.split())
    if len(text) > MAX_INVITATION_CHARS or not text.startswith(PREFIX):
        raise DecodeError("this is not a Backchannel invitation (those start with bcinv1.)")
    raw = b64url_decode(text[len(PREFIX):], max_bytes=MAX_INVITATION_CHARS, field="invitation")
    obj = expect_object(json_loads(raw, max_bytes=MAX_INVITATION_CHARS, what="invitation"),
                        required=("url", "node", "fp", "secret", "role", "expires"),
                        what="invitation")
    url = expect_str(obj, "url", what="invitation", max_len=2048, min_len=1)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadNodeAddress("invitation: the node address is not an http(s) URL")
    node = expect_str(obj, "node", what="invitation", max_len=64, min_len=1)
    fp = expect_str(obj, "fp", what="invitation", max_len=30, min_len=30)
    if not _FP_RE.fullmatch(fp):
        raise DecodeError("invitation: the fingerprint must be 30 digits")
    secret = b64url_decode(obj["secret"], max_bytes=SECRET_BYTES, exact=SECRET_BYTES,
                           field="invitation.secret")
    role = obj["role"]
    if role not in ROLES:
        raise DecodeError("invitation: unknown role")
    return Invitation(url, node, fp, secret, str(role),
                      parse_time(obj["expires"], field="invitation.expires"))
