"""ASCII armor: a signed object as a text block that survives email and copy-paste.

::

    -----BEGIN BACKCHANNEL CARD-----
    eyJwYXlsb2FkIjoiZXlKMklqb3hMQ0pwWkNJNkltbDZjR3d6...
    -----END BACKCHANNEL CARD-----

The body is the object's JSON in unpadded base64url, in lines of 64 characters.
Text around the block, indentation, CRLF line ends and e-mail quote markers
(``>``) are ignored. Integrity comes from the signature inside, not the armor.
"""

from __future__ import annotations

import re

from .encoding import b64url_decode, b64url_encode
from .errors import DecodeError, TooLarge

_LINE = 64
_KIND_RE = re.compile(r"[A-Z][A-Z ]{0,40}")


def armor(kind: str, data: bytes) -> str:
    if not _KIND_RE.fullmatch(kind):
        raise ValueError("armor kind must be upper-case words")
    body = b64url_encode(data)
    lines = [body[i:i + _LINE] for i in range(0, len(body), _LINE)]
    return "\n".join([f"-----BEGIN BACKCHANNEL {kind}-----", *lines,
                      f"-----END BACKCHANNEL {kind}-----"]) + "\n"


def dearmor(text: str, kind: str, *, max_bytes: int) -> bytes:
    """Extract the first ``kind`` block from ``text``; raise :class:`DecodeError`."""
    if len(text) > max_bytes * 2 + 4096:
        raise TooLarge(f"armored {kind.lower()} is too large")
    begin, end = f"-----BEGIN BACKCHANNEL {kind}-----", f"-----END BACKCHANNEL {kind}-----"
    body: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        while line.startswith(">"):
            line = line[1:].lstrip()
        if body is None:
            if line == begin:
                body = []
        elif line == end:
            return b64url_decode("".join(body), max_bytes=max_bytes,
                                 field=f"armored {kind.lower()}")
        elif line:
            body.append(line)
    if body is None:
        raise DecodeError(f"no '{begin}' block found")
    raise DecodeError(f"the armored {kind.lower()} is cut off (no END line)")
