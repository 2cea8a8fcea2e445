"""Salted digests of name lists, and disclosures that open them.

A proposal never carries names: it names each list by a **salted digest**::

    digest = b64url(SHA-256("backchannel/v1/namelist-digest" 0x00 || salt || list bytes))

``salt`` is 32 random bytes kept by the delegation that made the list; ``list bytes``
are the exact bytes of the list as exchanged (no re-serialisation, like DSSE). Without
the salt a guarantor who sees the digest cannot confirm a guessed list: with it, and
only with it, the digest opens. The salt has a fixed length, so the concatenation is
unambiguous.

A **disclosure** hands the salt and the list to one named recipient (a guarantor, or
the other delegation) as a DSSE envelope (payload type :data:`DISCLOSURE_TYPE`)
signed by the disclosing delegation and sent sealed like any message::

    {"v": 1, "from": "<discloser id>", "to": "<recipient id>", "created": "<time>",
     "list": "<digest>", "entries": 45, "salt": "<b64url 32>", "data": "<b64url list bytes>"}

:func:`check_list` recomputes the digest; a mismatch raises
:class:`~keys.negotiation_errors.ListMismatch`. Counting the entries is the caller's
job (``keys`` does not parse name lists).

Persons handed over without being on a list are named in a handover record by an
**entry digest** built the same way under its own domain string
(:func:`entry_digest`), so witnesses see that someone was handed over, not who.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock, Random, system_random
from .ed25519 import SigningKey, VerifyKey
from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_int,
    expect_object,
    expect_version,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from .errors import DecodeError, VerificationError
from .ids import is_identity_id
from .negotiation_errors import ListMismatch
from .policy import Signer

DISCLOSURE_TYPE: Final = "application/vnd.backchannel.disclosure+json"
SALT_BYTES: Final = 32
DIGEST_CHARS: Final = 43
#: The same bound as a sealed message's content: a 100,000-name list is about 4 MB.
MAX_LIST_BYTES: Final = 16 * 1024 * 1024
#: A list bigger than any exchange ever made (the largest had a few hundred names).
MAX_ENTRIES: Final = 100_000
MAX_DISCLOSURE_BYTES: Final = MAX_LIST_BYTES * 4 // 3 + 4096

_LIST_DOMAIN = b"backchannel/v1/namelist-digest\x00"
_ENTRY_DOMAIN = b"backchannel/v1/handover-entry\x00"


def _salted(domain: bytes, salt: bytes, data: bytes) -> str:
    if len(salt) != SALT_BYTES:
        raise ValueError("a salt is 32 bytes")
    return b64url_encode(hashlib.sha256(domain + salt + data).digest())


def list_digest(salt: bytes, data: bytes) -> str:
    """The salted digest of a name list's exact bytes (43 base64url characters)."""
    return _salted(_LIST_DOMAIN, salt, data)


def entry_digest(salt: bytes, data: bytes) -> str:
    """The salted digest of one entry handed over without being on an agreed list."""
    return _salted(_ENTRY_DOMAIN, salt, data)


def check_list(digest: str, salt: bytes, data: bytes) -> None:
    """Raise :class:`ListMismatch` unless ``salt`` and ``data`` open ``digest``."""
    if len(salt) != SALT_BYTES or not hmac.compare_digest(list_digest(salt, data), digest):
        raise ListMismatch("the disclosed list does not match the digest in the proposal: "
                           "it is not the agreed list, or the salt is wrong")


def parse_digest(value: object, *, field: str) -> str:
    """Check that ``value`` is a 43-character base64url SHA-256 digest."""
    if not isinstance(value, str) or len(value) != DIGEST_CHARS:
        raise DecodeError(f"{field}: expected a 43-character digest")
    b64url_decode(value, max_bytes=32, exact=32, field=field)
    return value


def parse_id(value: object, *, field: str) -> str:
    """Check that ``value`` is an identity id (32 lower-case base32 characters)."""
    if not is_identity_id(value):
        raise DecodeError(f"{field}: expected an identity id")
    return value


@dataclass(frozen=True)
class ListRef:
    """A name list as a proposal names it: its salted digest and how many entries it has."""

    digest: str
    entries: int

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "entries": self.entries}


@dataclass(frozen=True)
class SaltedList:
    """A list with the salt its owner keeps; never sent except in a disclosure."""

    salt: bytes
    data: bytes
    entries: int

    @property
    def digest(self) -> str:
        return list_digest(self.salt, self.data)

    def ref(self) -> ListRef:
        return ListRef(self.digest, self.entries)

    def __repr__(self) -> str:
        return f"SaltedList(digest={self.digest!r}, entries={self.entries})"


def salt_list(data: bytes, entries: int, *, random: Random = system_random) -> SaltedList:
    """Draw a fresh salt for a list. Raises ``ValueError`` on an impossible size."""
    if not 0 < len(data) <= MAX_LIST_BYTES:
        raise ValueError(f"a list is 1 byte to {MAX_LIST_BYTES} bytes")
    if not 0 <= entries <= MAX_ENTRIES:
        raise ValueError(f"a list has 0 to {MAX_ENTRIES} entries")
    return SaltedList(random(SALT_BYTES), data, entries)


@dataclass(frozen=True)
class Disclosure:
    """A parsed disclosure. Existing means well-formed *and* the digest opens."""

    sender: str
    recipient: str
    created: datetime
    list: SaltedList
    envelope: dsse.Envelope

    @property
    def digest(self) -> str:
        return self.list.digest


def make_disclosure(signer: SigningKey, salted: SaltedList, *, to: str,
                    clock: Clock = SYSTEM_CLOCK) -> Disclosure:
    """Sign a disclosure of ``salted`` to the identity ``to``."""
    payload = json_dumps({
        "v": 1, "from": signer.id, "to": to, "created": format_time(clock.now()),
        "list": salted.digest, "entries": salted.entries, "salt": b64url_encode(salted.salt),
        "data": b64url_encode(salted.data),
    })
    return parse_disclosure(dsse.sign(DISCLOSURE_TYPE, payload, signer))


def parse_disclosure(envelope: dsse.Envelope) -> Disclosure:
    """Parse a disclosure and check that its salt and list open its digest (the
    signature is checked by :func:`verify_disclosure`). Raises :class:`DecodeError`
    or :class:`ListMismatch`."""
    if envelope.payload_type != DISCLOSURE_TYPE:
        raise DecodeError("this is not a list disclosure")
    obj = expect_object(json_loads(envelope.payload, max_bytes=MAX_DISCLOSURE_BYTES,
                                   what="disclosure"),
                        required=("v", "from", "to", "created", "list", "entries", "salt",
                                  "data"),
                        what="disclosure")
    expect_version(obj, what="disclosure")
    sender = parse_id(obj["from"], field="disclosure.from")
    recipient = parse_id(obj["to"], field="disclosure.to")
    digest = parse_digest(obj["list"], field="disclosure.list")
    entries = expect_int(obj, "entries", what="disclosure", low=0, high=MAX_ENTRIES)
    salt = b64url_decode(obj["salt"], max_bytes=SALT_BYTES, exact=SALT_BYTES,
                         field="disclosure.salt")
    data = b64url_decode(obj["data"], max_bytes=MAX_LIST_BYTES, field="disclosure.data")
    if not data:
        raise DecodeError("disclosure.data: the list is empty")
    check_list(digest, salt, data)
    return Disclosure(sender, recipient, parse_time(obj["created"], field="disclosure.created"),
                      SaltedList(salt, data, entries), envelope)


def load_disclosure(data: bytes | str) -> Disclosure:
    return parse_disclosure(dsse.Envelope.from_json(data, max_payload=MAX_DISCLOSURE_BYTES))


def verify_disclosure(disclosure: Disclosure, sender: VerifyKey, *,
                      expected_digest: str | None = None) -> SaltedList:
    """Check the discloser's signature and, when given, that the disclosed list is the
    one named ``expected_digest`` (e.g. in an agreement). Raises
    :class:`VerificationError` or :class:`ListMismatch`."""
    if sender.id != disclosure.sender:
        raise VerificationError("the disclosure was not signed by the identity it names")
    dsse.verify(disclosure.envelope, Signer(sender), payload_type=DISCLOSURE_TYPE)
    if expected_digest is not None and not hmac.compare_digest(disclosure.digest,
                                                               expected_digest):
        raise ListMismatch("the disclosed list is not the list named in the agreement")
    return disclosure.list
