"""Sealed messages: sign, then encrypt to several recipients.

Inner message
    A DSSE envelope (payload type :data:`MESSAGE_TYPE`) signed by the sender over::

        {"v": 1, "id": "<b64url 16 random bytes>", "from": "<sender id>",
         "to": ["<recipient id>", ...], "created": "<time>", "kind": "namelist",
         "body": <any JSON value>}

    The recipient list is *inside* the signature: a recipient that is not in ``to``
    (surreptitious forwarding), or a header whose recipients differ from ``to``
    (misdirection), is rejected.

Sealed message (what nodes carry; opaque to them)::

    {"v": 1, "header": "<b64url header JSON bytes>", "ct": "<b64url ciphertext>"}

    header = {"v": 1, "aead": "XChaCha20-Poly1305", "nonce": "<b64url 24>",
              "recipients": [{"id": "<identity id>", "suite": "MLKEM768-X25519",
                              "wrap": "<b64url HPKE ciphertext>"}, ...]}

    ct   = XChaCha20-Poly1305(K, nonce, ad = header bytes, pad(inner envelope JSON))
    wrap = HPKE-Seal(recipient key, info = "backchannel/v1/wrap" 0x00 nonce id, K)

K is a fresh random 32-byte key. The header is carried as its exact bytes and used as
associated data, so removing, reordering or swapping a wrap breaks decryption.
The content id of a sealed message is SHA-256 of its bytes (see :func:`content_id`).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import nacl.bindings
import nacl.exceptions

from . import dsse
from .card import Card
from .clock import SYSTEM_CLOCK, Clock, Random, system_random
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
    write_b64,
)
from .errors import (
    BackchannelError,
    ClassicalRecipient,
    DecodeError,
    OpenError,
    TooLarge,
    UnsupportedVersion,
)
from .identity import Identity
from .kem import SUITE_HYBRID, SUITES, WRAP_BYTES, UnwrapFailed
from .padding import MIN_PADDED, pad, padme_length, unpadded_length
from .policy import Signer

MESSAGE_TYPE: Final = "application/vnd.backchannel.message+json"
AEAD_NAME: Final = "XChaCha20-Poly1305"
#: 32 recipients covers every delegation, guarantor and witness of a real exchange.
MAX_RECIPIENTS: Final = 32
#: The signed inner message (DSSE JSON, payload in base64): the 100,000-name list of
#: benchmarks/lists.py (names and dates of birth) is 10.4 MiB of JSON, 13.9 MiB here.
MAX_INNER_BYTES: Final = 16 * 1024 * 1024
MAX_HEADER_BYTES: Final = 96 * 1024
#: The largest padded plaintext (Padmé bucket of the largest inner message).
MAX_PADDED_BYTES: Final = max(MIN_PADDED, padme_length(MAX_INNER_BYTES + 1))
#: base64url of the largest ciphertext and header, plus the JSON around them. Derived
#: from the limits above so that everything :func:`seal` accepts can be opened.
MAX_SEALED_BYTES: Final = (((MAX_PADDED_BYTES + 16) * 4 + 2) // 3
                           + (MAX_HEADER_BYTES * 4 + 2) // 3 + 1024)
MAX_KIND: Final = 32
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
MESSAGE_ID_BYTES: Final = 16
_KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_WRAP_INFO = b"backchannel/v1/wrap\x00"


@dataclass(frozen=True)
class Message:
    """The signed content of a sealed message (after :func:`open_sealed`)."""

    id: str
    sender: str
    to: tuple[str, ...]
    created: datetime
    kind: str
    body: Any


@dataclass(frozen=True)
class Sealed:
    data: bytes
    message: Message
    #: Digest of the signed inner message: what an *opened* receipt names.
    inner_digest: bytes

    @property
    def content_id(self) -> str:
        return content_id(self.data)


@dataclass(frozen=True)
class Opened:
    sender: Card
    message: Message
    inner: dsse.Envelope
    inner_digest: bytes


def content_id(data: bytes) -> str:
    """SHA-256 of the sealed bytes, unpadded base64url (43 characters)."""
    return b64url_encode(hashlib.sha256(data).digest())


def _wrap_info(nonce: bytes, recipient_id: str) -> bytes:
    return _WRAP_INFO + nonce + recipient_id.encode("ascii")


def seal(sender: Identity, recipients: Sequence[Card], kind: str, body: Any, *,
         allow_classical: bool = False, clock: Clock = SYSTEM_CLOCK,
         random: Random = system_random) -> Sealed:
    """Sign ``body`` as ``sender`` and encrypt it to every card in ``recipients``.

    Raises ``ValueError`` for programmer errors (no recipients, duplicates, a bad
    kind) and :class:`TooLarge` if the message exceeds :data:`MAX_INNER_BYTES`."""
    if not recipients:
        raise ValueError("a message needs at least one recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
    ids = [c.id for c in recipients]
    if len(set(ids)) != len(ids):
        raise ValueError("a recipient is listed twice")
    if not _KIND_RE.fullmatch(kind):
        raise ValueError("kind must be lower-case letters, digits and hyphens")
    classical = [c for c in recipients if c.encryption.suite != SUITE_HYBRID]
    if classical and not allow_classical:
        # One classical wrap exposes the whole message to a future quantum computer.
        raise ClassicalRecipient(
            f"{classical[0].name!r} has only a classical X25519 key, so this message would "
            "not be protected against a future quantum computer; ask for a hybrid card, "
            "or allow classical recipients explicitly")
    created = clock.now()
    message = Message(b64url_encode(random(MESSAGE_ID_BYTES)), sender.id, tuple(ids),
                      created, kind, body)
    payload = json_dumps({"v": 1, "id": message.id, "from": message.sender,
                          "to": list(message.to), "created": format_time(created),
                          "kind": kind, "body": body})
    inner = dsse.sign(MESSAGE_TYPE, payload, sender.signing_key)
    inner_bytes = inner.to_json()
    inner_digest = inner.digest()
    # A large list is several copies of itself on the way (payload, inner JSON,
    # padded, ciphertext, base64): each is dropped as soon as the next exists.
    del inner, payload
    if len(inner_bytes) > MAX_INNER_BYTES:
        raise TooLarge(f"the message is larger than {MAX_INNER_BYTES // (1024 * 1024)} MiB")

    key = random(KEY_BYTES)
    nonce = random(NONCE_BYTES)
    wraps = [{"id": card.id, "suite": card.encryption.suite,
              "wrap": b64url_encode(card.encryption.wrap(key, _wrap_info(nonce, card.id)))}
             for card in recipients]
    header = json_dumps({"v": 1, "aead": AEAD_NAME, "nonce": b64url_encode(nonce),
                         "recipients": wraps})
    padded = pad(inner_bytes)
    del inner_bytes
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, header, nonce, key)
    del padded
    return Sealed(sealed_json(header, ct), message, inner_digest)


def sealed_json(header: bytes, ct: bytes) -> bytes:
    """``json_dumps({"v": 1, "header": b64url(header), "ct": b64url(ct)})`` byte for
    byte, with the ciphertext encoded straight into the output (base64url needs no
    JSON escaping): no whole-size intermediate copies."""
    out = io.BytesIO()
    out.write(b'{"v":1,"header":"')
    write_b64(out, header, urlsafe=True)
    out.write(b'","ct":"')
    write_b64(out, ct, urlsafe=True)
    out.write(b'"}')
    return out.getvalue()


@dataclass(frozen=True)
class _Wrap:
    id: str
    suite: str
    wrap: bytes


@dataclass(frozen=True)
class SealedHeader:
    """The parsed, *unverified* outer structure of a sealed message."""

    raw_header: bytes
    nonce: bytes
    recipients: tuple[_Wrap, ...]
    ciphertext: bytes

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(w.id for w in self.recipients)


def parse_sealed_unverified(data: bytes, *, max_bytes: int = MAX_SEALED_BYTES) -> SealedHeader:
    """Check the structure of a sealed message without any key. Nodes use this to
    validate what they store; it proves nothing about the contents.

    Raises :class:`DecodeError` (or a subclass)."""
    obj = expect_object(json_loads(data, max_bytes=max_bytes, what="sealed message"),
                        required=("v", "header", "ct"), what="sealed message")
    expect_version(obj, what="sealed message")
    raw_header = b64url_decode(obj["header"], max_bytes=MAX_HEADER_BYTES, field="header")
    ct = b64url_decode(obj["ct"], max_bytes=max_bytes, field="ct")
    header = expect_object(json_loads(raw_header, max_bytes=MAX_HEADER_BYTES, what="header"),
                           required=("v", "aead", "nonce", "recipients"), what="header")
    expect_version(header, what="header")
    if header["aead"] != AEAD_NAME:
        raise UnsupportedVersion("header: unknown content cipher")
    nonce = b64url_decode(header["nonce"], max_bytes=NONCE_BYTES, exact=NONCE_BYTES,
                          field="nonce")
    items = header["recipients"]
    if not isinstance(items, list) or not items:
        raise DecodeError("header: recipients must be a non-empty list")
    if len(items) > MAX_RECIPIENTS:
        raise TooLarge(f"header: more than {MAX_RECIPIENTS} recipients")
    wraps: list[_Wrap] = []
    for item in items:
        entry = expect_object(item, required=("id", "suite", "wrap"), what="recipient")
        rid = expect_str(entry, "id", what="recipient", max_len=64, min_len=1)
        if not rid.isascii():
            raise DecodeError("recipient: id must be ASCII")
        suite = entry["suite"]
        if suite not in SUITES:
            raise UnsupportedVersion("recipient: unknown key-wrapping suite")
        size = WRAP_BYTES[str(suite)]
        wraps.append(_Wrap(rid, str(suite), b64url_decode(entry["wrap"], max_bytes=size,
                                                          exact=size, field="wrap")))
    if len({w.id for w in wraps}) != len(wraps):
        raise DecodeError("header: a recipient is listed twice")
    if len(ct) < nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES:
        raise DecodeError("sealed message: ciphertext too short")
    return SealedHeader(raw_header, nonce, tuple(wraps), ct)


def parse_message_payload(payload: bytes) -> Message:
    """Parse the signed inner payload (structure only). Raises :class:`DecodeError`."""
    obj = expect_object(json_loads(payload, max_bytes=MAX_INNER_BYTES, what="message"),
                        required=("v", "id", "from", "to", "created", "kind", "body"),
                        what="message")
    expect_version(obj, what="message")
    mid = expect_str(obj, "id", what="message", max_len=32, min_len=1)
    sender = expect_str(obj, "from", what="message", max_len=64, min_len=1)
    to = obj["to"]
    if (not isinstance(to, list) or not to or len(to) > MAX_RECIPIENTS
            or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in to)
            or len(set(to)) != len(to)):
        raise DecodeError("message: malformed recipient list")
    kind = expect_str(obj, "kind", what="message", max_len=MAX_KIND, min_len=1)
    if not _KIND_RE.fullmatch(kind):
        raise DecodeError("message: malformed kind")
    return Message(mid, sender, tuple(to), parse_time(obj["created"], field="message.created"),
                   kind, obj["body"])


def open_sealed(data: bytes, me: Identity, resolve_sender: Callable[[str], Card], *,
                envelope_to: Sequence[str] | None = None, envelope_from: str | None = None,
                max_bytes: int = MAX_SEALED_BYTES) -> Opened:
    """Decrypt and verify a sealed message addressed to ``me``.

    ``resolve_sender`` maps the claimed sender id to a card the caller trusts; any
    exception it raises (e.g. "unknown contact") propagates unchanged. ``envelope_to``
    and ``envelope_from`` are the recipients and sender of the routing envelope, when
    there is one: they must match the signed ``to`` and ``from`` (otherwise a node could
    redeliver captured sealed bytes under an envelope of its own making).

    Every other failure raises :class:`OpenError`, the same error whatever the cause.
    """
    try:
        # 1. Structure, and find our wrap.
        sealed = parse_sealed_unverified(data, max_bytes=max_bytes)
        mine = [w for w in sealed.recipients if w.id == me.id]
        if len(mine) != 1 or mine[0].suite != me.encryption_key.suite:
            raise OpenError()
        # 2. Unwrap the content key and decrypt; the header is the associated data.
        key = me.encryption_key.unwrap(mine[0].wrap, _wrap_info(sealed.nonce, me.id))
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed.ciphertext, sealed.raw_header, sealed.nonce, key)
        # A large list is several copies of itself on the way: each is dropped as
        # soon as the next exists, and the inner JSON is parsed from a view.
        recipient_ids = set(sealed.recipient_ids)
        del sealed
        with memoryview(padded) as view:
            inner = dsse.Envelope.from_json(view[:unpadded_length(padded)],
                                            max_payload=MAX_INNER_BYTES)
        del padded
        if inner.payload_type != MESSAGE_TYPE:
            raise OpenError()
        # 3. Recipient checks against the *signed* list (surreptitious forwarding,
        #    misdirection).
        message = parse_message_payload(inner.payload)
        signed_to = set(message.to)
        if me.id not in signed_to or signed_to != recipient_ids:
            raise OpenError()
        if envelope_to is not None and signed_to != set(envelope_to):
            raise OpenError()
        if envelope_from is not None and envelope_from != message.sender:
            raise OpenError()
    except (BackchannelError, UnwrapFailed, nacl.exceptions.CryptoError, ValueError):
        raise OpenError() from None
    # 4. The sender's signature, with the key the caller trusts for that id.
    sender = resolve_sender(message.sender)
    try:
        if sender.id != message.sender:
            raise OpenError()
        verified = dsse.verify(inner, Signer(sender.verify_key), payload_type=MESSAGE_TYPE)
    except BackchannelError:
        raise OpenError() from None
    return Opened(sender, message, inner, verified.digest)
