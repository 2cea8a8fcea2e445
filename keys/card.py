"""Identity cards: who an identity is, signed by its own Ed25519 key.

A card is a DSSE envelope with payload type :data:`CARD_TYPE` whose payload is::

    {"v": 1, "id": "<identity id>", "name": "...", "role": "delegation",
     "signing": {"alg": "Ed25519", "key": "<b64url 32 bytes>"},
     "encryption": {"suite": "MLKEM768-X25519", "x25519": "<b64url>", "mlkem768": "<b64url>"},
     "home": {"node": "<node identity id>", "url": "https://..."},      (optional)
     "created": "2026-11-23T09:00:00Z", "expires": "2028-11-23T09:00:00Z"}

:func:`load_card` checks, in order: the structure, that ``id`` derives from the
signing key, the self-signature, the key validity (low-order points), and the
validity period at ``now``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from . import dsse
from .armor import armor, dearmor
from .ed25519 import PUBLIC_KEY_BYTES, VerifyKey
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
from .errors import DecodeError, Expired, UnsupportedVersion
from .kem import (
    MLKEM768_PUBLIC_BYTES,
    SUITE_HYBRID,
    SUITE_X25519,
    X25519_BYTES,
    EncryptionPublicKey,
)
from .policy import Signer

CARD_TYPE: Final = "application/vnd.backchannel.card+json"
ROLES: Final = ("delegation", "intermediary", "node")
MAX_NAME: Final = 200
MAX_URL: Final = 2048
#: A hybrid card is about 2.5 KB; 16 KiB leaves room and bounds the parser.
MAX_CARD_BYTES: Final = 16 * 1024
#: Tolerated clock difference between the card's creator and us.
CLOCK_SKEW: Final = timedelta(minutes=5)
ARMOR_KIND: Final = "CARD"

_FP_DOMAIN = b"backchannel/v1/fingerprint\x00"
_UNPRINTABLE: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class HomeNode:
    node: str
    url: str


@dataclass(frozen=True)
class Card:
    """A verified identity card. Construct with :func:`load_card` or :meth:`Identity.card`."""

    id: str
    name: str
    role: str
    verify_key: VerifyKey
    encryption: EncryptionPublicKey
    created: datetime
    expires: datetime
    home: HomeNode | None
    envelope: dsse.Envelope

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.verify_key)

    def to_json(self) -> bytes:
        return self.envelope.to_json()

    def armored(self) -> str:
        return armor(ARMOR_KIND, self.to_json())

    def __repr__(self) -> str:
        return f"Card(id={self.id!r}, role={self.role!r})"


def fingerprint(key: VerifyKey) -> str:
    """30 decimal digits in six groups of five, for reading aloud over a phone.

    Each group is five bytes of SHA-512 over the signing key, reduced mod 100000
    (after Signal's safety numbers). About 100 bits: a second preimage is out of reach.
    """
    digest = hashlib.sha512(_FP_DOMAIN + key.raw).digest()
    groups = [int.from_bytes(digest[i * 5:i * 5 + 5], "big") % 100000 for i in range(6)]
    return " ".join(f"{g:05d}" for g in groups)


def safety_number(a: VerifyKey, b: VerifyKey) -> str:
    """60 digits for a pair of identities, identical on both sides whatever the order."""
    first, second = sorted([fingerprint(a), fingerprint(b)])
    return f"{first} {second}"


def card_payload(*, name: str, role: str, verify_key: VerifyKey,
                 encryption: EncryptionPublicKey, created: datetime, expires: datetime,
                 home: HomeNode | None) -> dict[str, Any]:
    enc: dict[str, Any] = {"suite": encryption.suite, "x25519": b64url_encode(encryption.x25519)}
    if encryption.mlkem768 is not None:
        enc["mlkem768"] = b64url_encode(encryption.mlkem768)
    payload: dict[str, Any] = {
        "v": 1, "id": verify_key.id, "name": name, "role": role,
        "signing": {"alg": "Ed25519", "key": b64url_encode(verify_key.raw)},
        "encryption": enc,
        "created": format_time(created), "expires": format_time(expires),
    }
    if home is not None:
        payload["home"] = {"node": home.node, "url": home.url}
    return payload


def _printable(text: str) -> bool:
    # Control characters, bidi overrides and other format characters let a name spoof
    # another on an officer's terminal (or inject escape sequences into it).
    return not any(unicodedata.category(ch) in _UNPRINTABLE for ch in text) \
        and text == text.strip()


def _check_url(url: str) -> str:
    # Only visible ASCII: urlsplit silently strips or tolerates control characters.
    if not all(0x21 <= ord(ch) <= 0x7E for ch in url):
        raise DecodeError("card.home.url must be an http(s) URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a non-numeric port
    except ValueError:
        raise DecodeError("card.home.url must be an http(s) URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DecodeError("card.home.url must be an http(s) URL")
    return url


def _parse_encryption(value: object) -> EncryptionPublicKey:
    obj = expect_object(value, required=("suite", "x25519"), optional=("mlkem768",),
                        what="card.encryption")
    suite = obj["suite"]
    if suite not in (SUITE_HYBRID, SUITE_X25519):
        raise UnsupportedVersion(f"card.encryption: unknown suite {str(suite)[:40]!r}")
    xkey = b64url_decode(obj["x25519"], max_bytes=X25519_BYTES, exact=X25519_BYTES,
                         field="card.encryption.x25519")
    mkey = None
    if "mlkem768" in obj:
        mkey = b64url_decode(obj["mlkem768"], max_bytes=MLKEM768_PUBLIC_BYTES,
                             exact=MLKEM768_PUBLIC_BYTES, field="card.encryption.mlkem768")
    return EncryptionPublicKey(str(suite), xkey, mkey)


def load_card(data: bytes | str | dsse.Envelope, *, now: datetime,
              allow_expired: bool = False, check_created: bool = True) -> Card:
    """Parse and verify a card (JSON envelope, armored block, or parsed envelope).

    ``allow_expired`` accepts a card past its expiry (to read old records);
    ``check_created=False`` also accepts one created "in the future", for a card read
    back from our own keystore on a machine whose clock has gone backwards.

    Raises :class:`DecodeError` (malformed, or a weak key: :class:`InvalidKey`),
    :class:`VerificationError` (bad self-signature) or :class:`Expired`.
    """
    if isinstance(data, dsse.Envelope):
        envelope = data
    else:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raw: bytes | str = data
        if "-----BEGIN BACKCHANNEL" in text:
            raw = dearmor(text, ARMOR_KIND, max_bytes=MAX_CARD_BYTES)
        envelope = dsse.Envelope.from_json(raw, max_payload=MAX_CARD_BYTES)
    if envelope.payload_type != CARD_TYPE:
        raise DecodeError("this is not an identity card")
    obj = expect_object(json_loads(envelope.payload, max_bytes=MAX_CARD_BYTES, what="card"),
                        required=("v", "id", "name", "role", "signing", "encryption",
                                  "created", "expires"),
                        optional=("home",), what="card")
    expect_version(obj, what="card")
    signing = expect_object(obj["signing"], required=("alg", "key"), what="card.signing")
    if signing["alg"] != "Ed25519":
        raise UnsupportedVersion("card.signing: only Ed25519 is supported")
    verify_key = VerifyKey(b64url_decode(signing["key"], max_bytes=PUBLIC_KEY_BYTES,
                                         exact=PUBLIC_KEY_BYTES, field="card.signing.key"))
    if obj["id"] != verify_key.id:
        raise DecodeError("card: id does not match its signing key")
    name = expect_str(obj, "name", what="card", max_len=MAX_NAME, min_len=1)
    if not _printable(name):
        raise DecodeError("card: the name contains control or formatting characters")
    role = obj["role"]
    if role not in ROLES:
        raise DecodeError(f"card: role must be one of {', '.join(ROLES)}")
    home = None
    if "home" in obj:
        h = expect_object(obj["home"], required=("node", "url"), what="card.home")
        home = HomeNode(expect_str(h, "node", what="card.home", max_len=64, min_len=1),
                        _check_url(expect_str(h, "url", what="card.home", max_len=MAX_URL,
                                              min_len=1)))
    created = parse_time(obj["created"], field="card.created")
    expires = parse_time(obj["expires"], field="card.expires")
    dsse.verify(envelope, Signer(verify_key), payload_type=CARD_TYPE)
    encryption = _parse_encryption(obj["encryption"])
    if expires <= created:
        raise DecodeError("card: expires before it was created")
    if check_created and created > now + CLOCK_SKEW:
        raise Expired("this card was created in the future; check the clocks")
    if expires <= now and not allow_expired:
        raise Expired(f"this card expired on {format_time(expires)}; ask for a new one")
    return Card(verify_key.id, name, str(role), verify_key, encryption, created, expires,
                home, envelope)


def encode_card_payload(payload: dict[str, Any]) -> bytes:
    return json_dumps(payload)
