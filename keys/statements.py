"""Statements (receipts): signed claims about one envelope, after ETSI EN 319 522.

A DSSE envelope (payload type :data:`STATEMENT_TYPE`) signed by a node or a member::

    {"v": 1, "type": "<kind>", "envelope": "<envelope id>", "by": "<signer id>",
     "at": "<time>", ...kind-specific fields}

=============== ====================== ===========================================
kind            signed by              extra fields
=============== ====================== ===========================================
accepted        sender's home node     ``sender``: the submitting member's id
relayed         each node on the route ``previous``, ``next``: node ids
delivered       recipient's node       ``recipient``: member id
opened          the recipient          ``recipient``, ``inner``: b64url SHA-256 of
                                       the signed inner message's PAE
countersigned   an intermediary        ``statement``: id of the statement it carries
failed          the node that gave up  ``next``: the unreachable hop, ``reason``
=============== ====================== ===========================================

The **statement id** is the b64url SHA-256 of the statement's PAE, never of a
signature (Ed25519 signatures are unique, but a verifier must not depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock
from .ed25519 import SigningKey, VerifyKey
from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_object,
    expect_str,
    expect_version,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from .errors import DecodeError, VerificationError
from .policy import Signer

STATEMENT_TYPE: Final = "application/vnd.backchannel.statement+json"
MAX_STATEMENT_BYTES: Final = 4096
MAX_REASON: Final = 200

#: Extra fields per kind, and which of them hold ids of 32-byte digests.
KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "accepted": ("sender",),
    "relayed": ("previous", "next"),
    "delivered": ("recipient",),
    "opened": ("recipient", "inner"),
    "countersigned": ("statement",),
    "failed": ("next", "reason"),
}
_DIGEST_FIELDS: Final = frozenset({"inner", "statement"})


@dataclass(frozen=True)
class Statement:
    """A parsed statement. ``id`` names it; ``signed`` is the DSSE envelope."""

    id: str
    kind: str
    envelope: str
    by: str
    at: datetime
    fields: Mapping[str, str] = field(default_factory=dict)
    signed: dsse.Envelope | None = None

    def to_json(self) -> bytes:
        if self.signed is None:
            raise ValueError("unsigned statement")
        return self.signed.to_json()


def statement_id(signed: dsse.Envelope) -> str:
    return b64url_encode(signed.digest())


def make_statement(kind: str, envelope: str, signer: SigningKey, *, clock: Clock = SYSTEM_CLOCK,
                   **extra: str) -> Statement:
    """Sign a statement of ``kind`` about envelope id ``envelope``.
    Raises ``ValueError`` when the extra fields do not match the kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown statement kind {kind!r}")
    if set(extra) != set(KINDS[kind]):
        raise ValueError(f"a {kind} statement needs exactly: {', '.join(KINDS[kind])}")
    # The checks parse_statement makes on the fields, with its errors, without parsing
    # back the JSON just written (a node signs a statement per submission).
    given = {"envelope": envelope, "by": signer.id, **extra}
    expect_str(given, "envelope", what="statement", max_len=43, min_len=43)
    b64url_decode(envelope, max_bytes=32, exact=32, field="statement.envelope")
    expect_str(given, "by", what="statement", max_len=64, min_len=1)
    for name in KINDS[kind]:
        limit = MAX_REASON if name == "reason" else 64
        expect_str(given, name, what="statement", max_len=limit, min_len=1)
        if name in _DIGEST_FIELDS:
            b64url_decode(given[name], max_bytes=32, exact=32, field=f"statement.{name}")
    # Whole seconds, as format_time writes and parse_time reads back.
    at = clock.now().astimezone(UTC).replace(microsecond=0)
    body: dict[str, Any] = {"v": 1, "type": kind, "envelope": envelope, "by": signer.id,
                            "at": format_time(at)}
    body.update(extra)
    signed = dsse.sign(STATEMENT_TYPE, json_dumps(body), signer)
    return Statement(statement_id(signed), kind, envelope, signer.id, at,
                     {name: extra[name] for name in KINDS[kind]}, signed)


def parse_statement(signed: dsse.Envelope) -> Statement:
    """Parse a statement's payload (structure only; see :func:`verify_statement`).
    Raises :class:`DecodeError`."""
    if signed.payload_type != STATEMENT_TYPE:
        raise DecodeError("this is not a statement")
    raw = json_loads(signed.payload, max_bytes=MAX_STATEMENT_BYTES, what="statement")
    # isinstance first: `in KINDS` hashes its operand, and a list or object is unhashable.
    if (not isinstance(raw, dict) or not isinstance(raw.get("type"), str)
            or raw["type"] not in KINDS):
        raise DecodeError("statement: missing or unknown type")
    kind = str(raw["type"])
    obj = expect_object(raw, required=("v", "type", "envelope", "by", "at", *KINDS[kind]),
                        what=f"{kind} statement")
    expect_version(obj, what="statement")
    envelope = expect_str(obj, "envelope", what="statement", max_len=43, min_len=43)
    b64url_decode(envelope, max_bytes=32, exact=32, field="statement.envelope")
    by = expect_str(obj, "by", what="statement", max_len=64, min_len=1)
    fields: dict[str, str] = {}
    for name in KINDS[kind]:
        limit = MAX_REASON if name == "reason" else 64
        fields[name] = expect_str(obj, name, what="statement", max_len=limit, min_len=1)
        if name in _DIGEST_FIELDS:
            b64url_decode(fields[name], max_bytes=32, exact=32, field=f"statement.{name}")
    return Statement(statement_id(signed), kind, envelope, by,
                     parse_time(obj["at"], field="statement.at"), fields, signed)


def load_statement(data: bytes | str | dict[str, Any]) -> Statement:
    if isinstance(data, dict):
        signed = dsse.Envelope.from_dict(data, max_payload=MAX_STATEMENT_BYTES)
    else:
        signed = dsse.Envelope.from_json(data, max_payload=MAX_STATEMENT_BYTES)
    return parse_statement(signed)


def verify_statement(statement: Statement, key: VerifyKey) -> None:
    """Check that ``key`` is the statement's ``by`` and signed it.
    Raises :class:`VerificationError`."""
    if statement.signed is None or key.id != statement.by:
        raise VerificationError("the statement was not signed by the identity it names")
    dsse.verify(statement.signed, Signer(key), payload_type=STATEMENT_TYPE)
