"""The shapes of the ids on the wire, for code that must refuse anything else before
it looks an id up (a database may choke on what can never be an id: a NUL, say).

* An identity id: 32 lower-case base32 characters (:func:`keys.ed25519.identity_id`).
* A digest id (envelopes, statements, content): 43 base64url characters, a SHA-256.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

_IDENTITY_ID: Final = re.compile(r"[a-z2-7]{32}")
_DIGEST_ID: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def is_identity_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _IDENTITY_ID.fullmatch(value) is not None


def is_digest_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _DIGEST_ID.fullmatch(value) is not None
