"""An independent reader of docs/protocol.md, written from the specification alone.

It imports no project code (``keys``, ``client``, ``relay``): only the standard library,
PyNaCl (Ed25519 verification and the secretbox, as the specification prescribes),
``cryptography`` (X25519, ML-KEM-768, ChaCha20-Poly1305) and ``argon2-cffi`` (the
reference Argon2 implementation, not libsodium's). HPKE (RFC 9180), the X-Wing combiner
and the HChaCha20 subkey of XChaCha20-Poly1305 are implemented here by hand, so that the
reference code's library calls are checked against a second reading of the standards.
``test_conformance.py`` asserts on this file's syntax tree that it stays that way.

Section numbers in comments refer to docs/protocol.md. Every reader raises a
:class:`Rejected` subclass named after the error families of section 2.8.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import nacl.bindings
import nacl.exceptions
import nacl.signing
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# --- 2.7 limits, as the specification states them -------------------------------------

MAX_JSON_DEPTH = 16
MAX_PAYLOAD_TYPE = 128
MAX_SIGNATURES = 32
MAX_KEYID = 64
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
MAX_CARD_BYTES = 16 * 1024
MAX_NAME, MAX_HOME_NODE, MAX_URL = 200, 64, 2048
MAX_KEYSTORE_BYTES = 65536
MAX_INNER_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 96 * 1024
MIN_PADDED = 1024
MAX_RECIPIENTS = 32
MAX_ENVELOPE_BYTES = 16 * 1024
MAX_ROUTE = 8
MAX_LIFETIME = timedelta(days=30)
MAX_STATEMENT_BYTES = 4096
MAX_REASON = 200
CLOCK_SKEW = timedelta(minutes=5)

CARD_TYPE = "application/vnd.backchannel.card+json"
MESSAGE_TYPE = "application/vnd.backchannel.message+json"
ENVELOPE_TYPE = "application/vnd.backchannel.envelope+json"
STATEMENT_TYPE = "application/vnd.backchannel.statement+json"
HYBRID, CLASSICAL = "MLKEM768-X25519", "X25519"
WRAP_BYTES = {HYBRID: 1168, CLASSICAL: 80}
ROLES = ("delegation", "intermediary", "node")
KINDS: Mapping[str, tuple[str, ...]] = {
    "accepted": ("sender",), "relayed": ("previous", "next"), "delivered": ("recipient",),
    "opened": ("recipient", "inner"), "countersigned": ("statement",),
    "failed": ("next", "reason"),
}
FLOOR_OPS, FLOOR_MEM = 3, 64 * 1024 * 1024
CEILING_OPS, CEILING_MEM = 64, 4 * 1024**3
X25519_P = 2**255 - 19
MLKEM_Q = 3329


# --- 2.8 errors ----------------------------------------------------------------------


class Rejected(Exception):
    """The input was refused (section 1: stop, use nothing, report a typed error)."""


class DecodeError(Rejected):
    pass


class TooLarge(DecodeError):
    pass


class UnsupportedVersion(DecodeError):
    pass


class InvalidKey(DecodeError):
    pass


class VerificationError(Rejected):
    pass


class PolicyNotMet(VerificationError):
    def __init__(self, message: str, *, present: frozenset[str], missing: frozenset[str]):
        super().__init__(message)
        self.present, self.missing = present, missing


class Expired(VerificationError):
    pass


class OpenError(Rejected):
    """10.8: one error, whatever failed."""


class WrongPassphrase(Rejected):
    pass


class KeystoreCorrupt(Rejected):
    pass


class WeakKeystoreParameters(Rejected):
    pass


# --- 2.1 JSON --------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError("duplicate member")
        out[key] = value
    return out


def _no_constant(_name: str) -> Any:
    raise DecodeError("NaN and Infinity are not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError("number out of range")
    return value


def _check_tree(value: Any) -> None:
    # Depth (top level = 1) and lone surrogates, iteratively.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise DecodeError("nested too deeply")
        strings: Iterable[str] = ()
        if isinstance(item, dict):
            strings = item.keys()
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            strings = (item,)
        for string in strings:
            if any(0xD800 <= ord(ch) <= 0xDFFF for ch in string):
                raise DecodeError("lone surrogate")


def json_loads(data: bytes | str, max_bytes: int) -> Any:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise TooLarge("over the size limit")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError("not strict UTF-8 JSON") from exc
    _check_tree(value)
    return value


def members(value: Any, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError("expected an object")
    if not set(required) <= value.keys() or not value.keys() <= set(required) | set(optional):
        raise DecodeError("wrong member set")
    return value


def version(obj: Mapping[str, Any]) -> None:
    v = obj.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise DecodeError("malformed v")
    if v != 1:
        raise UnsupportedVersion("unsupported version")


def text(obj: Mapping[str, Any], key: str, low: int, high: int, *, ascii_only: bool = False) -> str:
    value = obj[key]
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise DecodeError(f"malformed {key}")
    if ascii_only and not value.isascii():
        raise DecodeError(f"{key} must be ASCII")
    return value


def integer(obj: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DecodeError(f"malformed {key}")
    return value


# --- 2.2 / 2.3 base64, 2.4 times -------------------------------------------------------

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64STD = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(value: Any, max_bytes: int, exact: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("expected base64url")
    if len(value) > -(-max_bytes * 4 // 3):
        raise TooLarge("base64url value too long")
    if not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise DecodeError("not unpadded base64url")
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if b64url(data) != value:
        raise DecodeError("non-canonical base64url")
    if exact is not None and len(data) != exact:
        raise DecodeError("wrong length")
    return data


def unb64std(value: Any, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("expected base64")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise TooLarge("base64 value too long")
    normal = value.replace("-", "+").replace("_", "/")
    if not _B64STD.fullmatch(normal):
        raise DecodeError("not padded base64")
    try:
        data = base64.b64decode(normal, validate=True)
    except binascii.Error as exc:
        raise DecodeError("not padded base64") from exc
    if base64.b64encode(data).decode("ascii") != normal:
        raise DecodeError("non-canonical base64")
    return data


def parse_time(value: Any) -> datetime:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise DecodeError("malformed time")
    try:
        return datetime(*(int(g) for g in match.groups()), tzinfo=UTC)
    except ValueError as exc:
        raise DecodeError("no such time") from exc


# --- 3 identity ids, 7 fingerprints ----------------------------------------------------


def identity_id(pk: bytes) -> str:
    digest = hashlib.sha256(b"backchannel/v1/identity-id\x00" + pk).digest()
    return base64.b32encode(digest[:20]).decode("ascii").lower()


def fingerprint(pk: bytes) -> str:
    h = hashlib.sha512(b"backchannel/v1/fingerprint\x00" + pk).digest()
    return " ".join(f"{int.from_bytes(h[5 * i:5 * i + 5], 'big') % 100000:05d}" for i in range(6))


def safety_number(a: bytes, b: bytes) -> str:
    return " ".join(sorted([fingerprint(a), fingerprint(b)]))


# --- 4 DSSE, 5 policies ----------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() \
        + b" " + payload


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def digest(self) -> bytes:
        return hashlib.sha256(pae(self.payload_type, self.payload)).digest()


def envelope_json_limit(max_payload: int) -> int:
    return max_payload * 4 // 3 + 4096 + 32 * 200


def parse_envelope(data: bytes | str | dict[str, Any],
                   max_payload: int = DEFAULT_MAX_PAYLOAD) -> Envelope:
    obj = data if isinstance(data, dict) else json_loads(data, envelope_json_limit(max_payload))
    obj = members(obj, ("payload", "payloadType", "signatures"))
    ptype = text(obj, "payloadType", 1, MAX_PAYLOAD_TYPE)
    payload = unb64std(obj["payload"], max_payload)
    if len(payload) > max_payload:
        raise TooLarge("payload over the limit")
    sigs = obj["signatures"]
    if not isinstance(sigs, list):
        raise DecodeError("signatures must be an array")
    if len(sigs) > MAX_SIGNATURES:
        raise TooLarge("too many signatures")
    out: list[tuple[str, bytes]] = []
    for item in sigs:
        entry = members(item, ("keyid", "sig"))
        keyid = text(entry, "keyid", 1, MAX_KEYID)
        sig = unb64std(entry["sig"], 64)
        if len(sig) != 64:
            raise DecodeError("a signature is 64 bytes")
        if any(k == keyid for k, _ in out):
            raise DecodeError("two signatures with one keyid")
        out.append((keyid, sig))
    return Envelope(ptype, payload, tuple(out))


class Policy:
    def keys(self) -> dict[str, bytes]:
        raise NotImplementedError

    def satisfied(self, signers: frozenset[str]) -> bool:
        raise NotImplementedError


class Signer(Policy):
    def __init__(self, pk: bytes) -> None:
        self.pk, self.id = pk, identity_id(pk)

    def keys(self) -> dict[str, bytes]:
        return {self.id: self.pk}

    def satisfied(self, signers: frozenset[str]) -> bool:
        return self.id in signers


class AtLeast(Policy):
    def __init__(self, count: int, *subs: Policy) -> None:
        if not 1 <= count <= len(subs):
            raise ValueError("count out of range")
        seen: set[str] = set()
        for sub in subs:
            ids = set(sub.keys())
            if ids & seen:
                raise ValueError("a signer appears more than once in a policy")
            seen |= ids
        self.count, self.subs = count, subs

    def keys(self) -> dict[str, bytes]:
        return {k: v for sub in self.subs for k, v in sub.keys().items()}

    def satisfied(self, signers: frozenset[str]) -> bool:
        return sum(sub.satisfied(signers) for sub in self.subs) >= self.count


def all_of(*subs: Policy) -> AtLeast:
    return AtLeast(len(subs), *subs)


def any_of(*subs: Policy) -> AtLeast:
    return AtLeast(1, *subs)


@dataclass(frozen=True)
class Verified:
    payload: bytes
    signers: frozenset[str]
    digest: bytes


def verify(envelope: Envelope, policy: Policy, expected_type: str) -> Verified:
    if envelope.payload_type != expected_type:
        raise VerificationError("wrong payload type")
    known = policy.keys()
    message = pae(envelope.payload_type, envelope.payload)
    valid: set[str] = set()
    for keyid, sig in envelope.signatures:
        if keyid not in known:
            continue
        try:
            nacl.signing.VerifyKey(known[keyid]).verify(message, sig)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise VerificationError("a known key's signature fails") from exc
        valid.add(keyid)
    signers = frozenset(valid)
    if not policy.satisfied(signers):
        raise PolicyNotMet("policy not met", present=signers,
                           missing=frozenset(known) - signers)
    return Verified(envelope.payload, signers, envelope.digest())


# --- 6 cards, 8 armor ------------------------------------------------------------------

_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: 6.2 step 9: scheme, "://", optional userinfo, a non-empty host (a name or address,
#: or an IP literal in brackets), an optional decimal port, then path/query/fragment.
_HTTP_URL = re.compile(r"(?i:https?)://(?:[^/?#@]*@)?(?:\[[^/?#@\[\]]+\]|[^/?#:@\[\]]+)"
                       r"(?::[0-9]*)?(?:[/?#].*)?", re.DOTALL)


@dataclass(frozen=True)
class EncryptionKey:
    suite: str
    x25519: bytes
    mlkem768: bytes | None


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    role: str
    signing_key: bytes
    encryption: EncryptionKey
    created: datetime
    expires: datetime
    home: tuple[str, str] | None
    envelope: Envelope


def check_name(name: str) -> None:
    if any(unicodedata.category(ch) in _UNPRINTABLE for ch in name):
        raise DecodeError("control or format character in the name")
    if unicodedata.category(name[0]) == "Zs" or unicodedata.category(name[-1]) == "Zs":
        raise DecodeError("the name begins or ends with a space")


def check_url(url: str) -> None:
    if not all(0x21 <= ord(ch) <= 0x7E for ch in url) or not _HTTP_URL.fullmatch(url):
        raise DecodeError("home.url must be an http(s) URL")


def check_x25519(pk: bytes) -> None:
    if int.from_bytes(pk, "little") >= X25519_P:
        raise InvalidKey("non-canonical X25519 key")
    try:
        x25519.X25519PrivateKey.generate().exchange(x25519.X25519PublicKey.from_public_bytes(pk))
    except ValueError as exc:  # all-zero output
        raise InvalidKey("low-order X25519 key") from exc


def check_mlkem(pk: bytes) -> None:
    # FIPS 203 encapsulation-key check: the 768 12-bit coefficients of t are below q.
    t = pk[:1152]
    for i in range(0, len(t), 3):
        b0, b1, b2 = t[i], t[i + 1], t[i + 2]
        if (b0 | (b1 & 0x0F) << 8) >= MLKEM_Q or (b1 >> 4 | b2 << 4) >= MLKEM_Q:
            raise InvalidKey("ML-KEM coefficient out of range")


def parse_encryption(value: Any) -> EncryptionKey:
    obj = members(value, ("suite", "x25519"), ("mlkem768",))
    suite = obj["suite"]
    if suite not in (HYBRID, CLASSICAL):
        raise UnsupportedVersion("unknown suite")
    xkey = unb64url(obj["x25519"], 32, 32)
    mkey = unb64url(obj["mlkem768"], 1184, 1184) if "mlkem768" in obj else None
    if (suite == HYBRID) != (mkey is not None):
        raise InvalidKey("mlkem768 is required with, and only with, the hybrid suite")
    if mkey is not None:
        check_mlkem(mkey)
    check_x25519(xkey)
    return EncryptionKey(suite, xkey, mkey)


def dearmor(data: str, kind: str, max_bytes: int) -> bytes:
    if len(data) > 2 * max_bytes + 4096:
        raise TooLarge("armored text too long")
    begin, end = f"-----BEGIN BACKCHANNEL {kind}-----", f"-----END BACKCHANNEL {kind}-----"
    body: list[str] | None = None
    for raw in data.splitlines():
        line = raw.strip()
        while line.startswith(">"):
            line = line[1:].lstrip()
        if body is None:
            if line == begin:
                body = []
        elif line == end:
            return unb64url("".join(body), max_bytes)
        elif line:
            body.append(line)
    raise DecodeError("no complete armored block")


def load_card(data: bytes | str | dict[str, Any], now: datetime, *, allow_expired: bool = False,
              check_created: bool = True) -> Card:
    raw: bytes | str | dict[str, Any] = data
    if not isinstance(data, dict):
        as_text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if "-----BEGIN BACKCHANNEL" in as_text:                                   # step 1
            raw = dearmor(as_text, "CARD", MAX_CARD_BYTES)
    envelope = parse_envelope(raw, MAX_CARD_BYTES)                                 # 2
    if envelope.payload_type != CARD_TYPE:                                         # 3
        raise DecodeError("not a card")
    obj = members(json_loads(envelope.payload, MAX_CARD_BYTES),                    # 4
                  ("v", "id", "name", "role", "signing", "encryption", "created", "expires"),
                  ("home",))
    version(obj)                                                                   # 5
    signing = members(obj["signing"], ("alg", "key"))                              # 6
    if signing["alg"] != "Ed25519":
        raise UnsupportedVersion("unknown signing algorithm")
    pk = unb64url(signing["key"], 32, 32)
    if obj["id"] != identity_id(pk):                                               # 7
        raise DecodeError("id does not match the key")
    name = text(obj, "name", 1, MAX_NAME)                                          # 8
    check_name(name)
    if obj["role"] not in ROLES:
        raise DecodeError("unknown role")
    home = None
    if "home" in obj:                                                              # 9
        h = members(obj["home"], ("node", "url"))
        home = (text(h, "node", 1, MAX_HOME_NODE), text(h, "url", 1, MAX_URL))
        check_url(home[1])
    created, expires = parse_time(obj["created"]), parse_time(obj["expires"])      # 10
    verify(envelope, Signer(pk), CARD_TYPE)                                        # 11
    encryption = parse_encryption(obj["encryption"])                               # 12
    if expires <= created:                                                         # 13
        raise DecodeError("expires before created")
    if check_created and created > now + CLOCK_SKEW:                               # 14
        raise Expired("created in the future")
    if expires <= now and not allow_expired:                                       # 15
        raise Expired("expired")
    return Card(obj["id"], name, obj["role"], pk, encryption, created, expires, home, envelope)


# --- 9 keystores -----------------------------------------------------------------------


@dataclass(frozen=True)
class Keystore:
    seed: bytes
    suite: str
    x25519_secret: bytes
    mlkem_seed: bytes | None
    card: Card
    local: bytes


def keystore_check(ops: int, mem: int, salt: bytes, nonce: bytes, ct: bytes) -> bytes:
    return hashlib.sha256(b"backchannel/v1/keystore-check\x00" + struct.pack(">QQ", ops, mem)
                          + salt + nonce + ct).digest()


def argon2id(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return hash_secret_raw(unicodedata.normalize("NFC", passphrase).encode("utf-8"), salt,
                           time_cost=ops, memory_cost=mem // 1024, parallelism=1, hash_len=32,
                           type=Type.ID, version=0x13)


def decrypt_keystore(data: bytes, passphrase: str, now: datetime) -> Keystore:
    if len(data) > MAX_KEYSTORE_BYTES:                                             # step 1
        raise KeystoreCorrupt("too large")
    try:                                                                           # 2
        obj = members(json_loads(data, MAX_KEYSTORE_BYTES),
                      ("v", "kind", "kdf", "cipher", "nonce", "ct", "check"))
        version(obj)
        if obj["kind"] != "backchannel-keystore" or obj["cipher"] != "xsalsa20poly1305":
            raise DecodeError("not a keystore")
        kdf = members(obj["kdf"], ("alg", "opslimit", "memlimit", "salt"))
        if kdf["alg"] != "argon2id13":
            raise DecodeError("unknown KDF")
        ops, mem = integer(kdf, "opslimit", 1, 2**32), integer(kdf, "memlimit", 1, 2**48)
        salt = unb64url(kdf["salt"], 16, 16)
        nonce = unb64url(obj["nonce"], 24, 24)
        ct = unb64url(obj["ct"], MAX_KEYSTORE_BYTES)
        check = unb64url(obj["check"], 32, 32)
    except DecodeError as exc:
        raise KeystoreCorrupt("malformed") from exc
    if ops < FLOOR_OPS or mem < FLOOR_MEM:                                         # 3
        raise WeakKeystoreParameters("below the floor")
    if ops > CEILING_OPS or mem > CEILING_MEM:
        raise KeystoreCorrupt("above the ceiling")
    if not passphrase:                                                             # 4
        raise WrongPassphrase("empty")
    if not hmac.compare_digest(check, keystore_check(ops, mem, salt, nonce, ct)):  # 5
        raise KeystoreCorrupt("check value mismatch")
    try:                                                                           # 6
        plain = nacl.bindings.crypto_secretbox_open(ct, nonce, argon2id(passphrase, salt, ops,
                                                                         mem))
    except nacl.exceptions.CryptoError as exc:
        raise WrongPassphrase("MAC") from exc
    try:                                                                           # 7
        return _keystore_plaintext(plain, now)
    except (Rejected, ValueError) as exc:
        raise KeystoreCorrupt("invalid contents") from exc


def _keystore_plaintext(plain: bytes, now: datetime) -> Keystore:
    obj = members(json_loads(plain, MAX_KEYSTORE_BYTES),
                  ("v", "signing", "encryption", "card", "local"))
    version(obj)
    seed = unb64url(obj["signing"], 32, 32)
    enc = members(obj["encryption"], ("suite", "x25519"), ("mlkem_seed",))
    if enc["suite"] not in (HYBRID, CLASSICAL):
        raise DecodeError("unknown suite")
    if (enc["suite"] == HYBRID) != ("mlkem_seed" in enc):
        raise DecodeError("mlkem_seed is present iff the suite is hybrid")
    xsecret = unb64url(enc["x25519"], 32, 32)
    mseed = unb64url(enc["mlkem_seed"], 64, 64) if "mlkem_seed" in enc else None
    card = load_card(obj["card"], now, allow_expired=True, check_created=False)
    public = x25519.X25519PrivateKey.from_private_bytes(xsecret).public_key().public_bytes_raw()
    mpublic = None if mseed is None else \
        mlkem.MLKEM768PrivateKey.from_seed_bytes(mseed).public_key().public_bytes_raw()
    if (card.signing_key != bytes(nacl.signing.SigningKey(seed).verify_key)
            or card.encryption != EncryptionKey(enc["suite"], public, mpublic)):
        raise DecodeError("the card does not carry these keys")
    return Keystore(seed, enc["suite"], xsecret, mseed, card, unb64url(obj["local"], 32, 32))


# --- 10 sealed messages ----------------------------------------------------------------


def padme(n: int) -> int:
    if n < 2:
        return n
    e = n.bit_length() - 1
    mask = (1 << (e - e.bit_length())) - 1
    return (n + mask) & ~mask


#: 2.7: the base64url of the largest padded message plus its tag, and of the largest
#: header, plus 1024 bytes of JSON around them.
MAX_PADDED_BYTES = max(MIN_PADDED, padme(MAX_INNER_BYTES + 1))
MAX_SEALED_BYTES = -(-(MAX_PADDED_BYTES + 16) * 4 // 3) + -(-MAX_HEADER_BYTES * 4 // 3) + 1024


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise DecodeError("bad padding")
    return stripped[:-1]


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (32 - n))) & 0xFFFFFFFF


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """draft-irtf-cfrg-xchacha section 2.2: the subkey of XChaCha20."""
    s = [*struct.unpack("<4I", b"expand 32-byte k"), *struct.unpack("<8I", key),
         *struct.unpack("<4I", nonce16)]

    def quarter(a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = _rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = _rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = _rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = _rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        quarter(0, 4, 8, 12)
        quarter(1, 5, 9, 13)
        quarter(2, 6, 10, 14)
        quarter(3, 7, 11, 15)
        quarter(0, 5, 10, 15)
        quarter(1, 6, 11, 12)
        quarter(2, 7, 8, 13)
        quarter(3, 4, 9, 14)
    return struct.pack("<8I", *s[0:4], *s[12:16])


def xchacha20poly1305_decrypt(key: bytes, nonce: bytes, ct: bytes, ad: bytes) -> bytes:
    subkey = hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).decrypt(b"\x00" * 4 + nonce[16:], ct, ad)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)


def hpke_open_base(kem_id: int, shared_secret: bytes, info: bytes, ct: bytes) -> bytes:
    """RFC 9180 key schedule, base mode, HKDF-SHA256 + ChaCha20-Poly1305, sequence 0."""
    sid = b"HPKE" + struct.pack(">HHH", kem_id, 0x0001, 0x0003)
    context = b"\x00" + _labeled_extract(sid, b"", b"psk_id_hash", b"") \
        + _labeled_extract(sid, b"", b"info_hash", info)
    secret = _labeled_extract(sid, shared_secret, b"secret", b"")
    key = _labeled_expand(sid, secret, b"key", context, 32)
    base_nonce = _labeled_expand(sid, secret, b"base_nonce", context, 12)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ct, b"")


@dataclass(frozen=True)
class Recipient:
    """The private side of an identity, as far as opening needs it."""

    id: str
    suite: str
    x25519_secret: bytes
    mlkem_seed: bytes | None = None


def unwrap(me: Recipient, wrap: bytes, info: bytes) -> bytes:
    sk = x25519.X25519PrivateKey.from_private_bytes(me.x25519_secret)
    pk = sk.public_key().public_bytes_raw()
    if me.suite == CLASSICAL:                       # DHKEM(X25519, HKDF-SHA256), 0x0020
        enc, ct = wrap[:32], wrap[32:]
        dh = sk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        kem_sid = b"KEM" + struct.pack(">H", 0x0020)
        eae_prk = _labeled_extract(kem_sid, b"", b"eae_prk", dh)
        shared = _labeled_expand(kem_sid, eae_prk, b"shared_secret", enc + pk, 32)
        return hpke_open_base(0x0020, shared, info, ct)
    if me.mlkem_seed is None:
        raise OpenError()
    enc, ct = wrap[:1120], wrap[1120:]              # X-Wing, 0x647A
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(me.mlkem_seed).decapsulate(ct_m)
    ss_x = sk.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    shared = hashlib.sha3_256(ss_m + ss_x + ct_x + pk + b"\\.//^\\").digest()
    return hpke_open_base(0x647A, shared, info, ct)


@dataclass(frozen=True)
class SealedHeader:
    raw: bytes
    nonce: bytes
    recipients: tuple[tuple[str, str, bytes], ...]
    ct: bytes


def parse_sealed(data: bytes) -> SealedHeader:
    obj = members(json_loads(data, MAX_SEALED_BYTES), ("v", "header", "ct"))
    version(obj)
    raw = unb64url(obj["header"], MAX_HEADER_BYTES)
    ct = unb64url(obj["ct"], MAX_SEALED_BYTES)
    h = members(json_loads(raw, MAX_HEADER_BYTES), ("v", "aead", "nonce", "recipients"))
    version(h)
    if h["aead"] != "XChaCha20-Poly1305":
        raise UnsupportedVersion("unknown AEAD")
    nonce = unb64url(h["nonce"], 24, 24)
    items = h["recipients"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_RECIPIENTS:
        raise DecodeError("recipients")
    wraps = []
    for item in items:
        entry = members(item, ("id", "suite", "wrap"))
        rid = text(entry, "id", 1, 64, ascii_only=True)
        if entry["suite"] not in WRAP_BYTES:
            raise UnsupportedVersion("unknown suite")
        size = WRAP_BYTES[entry["suite"]]
        wraps.append((rid, entry["suite"], unb64url(entry["wrap"], size, size)))
    if len({w[0] for w in wraps}) != len(wraps) or len(ct) < 16:
        raise DecodeError("duplicate recipient or short ciphertext")
    return SealedHeader(raw, nonce, tuple(wraps), ct)


_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")


def parse_message(payload: bytes) -> dict[str, Any]:
    obj = members(json_loads(payload, MAX_INNER_BYTES),
                  ("v", "id", "from", "to", "created", "kind", "body"))
    version(obj)
    text(obj, "id", 1, 32)
    text(obj, "from", 1, 64)
    to = obj["to"]
    if (not isinstance(to, list) or not 1 <= len(to) <= MAX_RECIPIENTS
            or not all(isinstance(t, str) and 1 <= len(t) <= 64 for t in to)
            or len(set(to)) != len(to)):
        raise DecodeError("to")
    parse_time(obj["created"])
    if not isinstance(obj["kind"], str) or not _KIND.fullmatch(obj["kind"]):
        raise DecodeError("kind")
    return obj


@dataclass(frozen=True)
class Opened:
    sender: Card
    message: dict[str, Any]
    inner: Envelope
    inner_digest: bytes
    padded_length: int


def open_sealed(data: bytes, me: Recipient, resolve_sender: Callable[[str], Card], *,
                envelope_to: Sequence[str] | None = None,
                envelope_from: str | None = None) -> Opened:
    try:
        sealed = parse_sealed(data)                                                # step 1
        mine = [w for w in sealed.recipients if w[0] == me.id]                     # 2
        if len(mine) != 1 or mine[0][1] != me.suite:
            raise OpenError()
        info = b"backchannel/v1/wrap\x00" + sealed.nonce + me.id.encode("ascii")
        key = unwrap(me, mine[0][2], info)                                         # 3
        padded = xchacha20poly1305_decrypt(key, sealed.nonce, sealed.ct, sealed.raw)  # 4
        inner = parse_envelope(unpad(padded), MAX_INNER_BYTES)                     # 5
        if inner.payload_type != MESSAGE_TYPE:
            raise OpenError()
        message = parse_message(inner.payload)                                     # 6
        signed_to = set(message["to"])                                             # 7
        if me.id not in signed_to or signed_to != {w[0] for w in sealed.recipients}:
            raise OpenError()
        if envelope_to is not None and signed_to != set(envelope_to):
            raise OpenError()
        if envelope_from is not None and envelope_from != message["from"]:
            raise OpenError()
    except (Rejected, InvalidTag, ValueError):
        raise OpenError() from None
    sender = resolve_sender(message["from"])                                       # 8
    try:                                                                           # 9
        if sender.id != message["from"]:
            raise OpenError()
        verified = verify(inner, Signer(sender.signing_key), MESSAGE_TYPE)
    except Rejected:
        raise OpenError() from None
    return Opened(sender, message, inner, verified.digest, len(padded))


def content_id(sealed: bytes) -> str:
    return b64url(hashlib.sha256(sealed).digest())


# --- 12 routing envelopes, 13 statements -----------------------------------------------


@dataclass(frozen=True)
class Routing:
    id: str
    payload: dict[str, Any]
    hops: tuple[str, ...]
    envelope: Envelope


def _ascii_ids(value: Any, low: int, high: int) -> list[str]:
    if (not isinstance(value, list) or not low <= len(value) <= high
            or not all(isinstance(v, str) and 1 <= len(v) <= 64 and v.isascii() for v in value)
            or len(set(value)) != len(value)):
        raise DecodeError("malformed id list")
    return value


def load_routing(data: bytes | str | dict[str, Any]) -> Routing:
    envelope = parse_envelope(data, MAX_ENVELOPE_BYTES)
    if envelope.payload_type != ENVELOPE_TYPE:
        raise DecodeError("not a routing envelope")
    obj = members(json_loads(envelope.payload, MAX_ENVELOPE_BYTES),
                  ("v", "content", "from", "to", "origin", "route", "destination", "created",
                   "expires", "size"))
    version(obj)
    unb64url(text(obj, "content", 43, 43), 32, 32)
    for key in ("from", "origin", "destination"):
        text(obj, key, 1, 64, ascii_only=True)
    _ascii_ids(obj["to"], 1, MAX_RECIPIENTS)
    route = _ascii_ids(obj["route"], 0, MAX_ROUTE)
    if obj["origin"] in route or obj["destination"] in route:
        raise DecodeError("the route repeats an end")
    created, expires = parse_time(obj["created"]), parse_time(obj["expires"])
    if not created < expires <= created + MAX_LIFETIME:
        raise DecodeError("lifetime")
    integer(obj, "size", 1, MAX_SEALED_BYTES)
    hops = tuple(dict.fromkeys([obj["origin"], *route, obj["destination"]]))
    return Routing(b64url(envelope.digest()), obj, hops, envelope)


def verify_routing(routing: Routing, pk: bytes) -> None:
    if identity_id(pk) != routing.payload["from"]:
        raise VerificationError("not signed by its sender")
    verify(routing.envelope, Signer(pk), ENVELOPE_TYPE)


def check_content(routing: Routing, sealed: bytes) -> None:
    if len(sealed) != routing.payload["size"] or content_id(sealed) != routing.payload["content"]:
        raise DecodeError("not this envelope's content")


@dataclass(frozen=True)
class Statement:
    id: str
    payload: dict[str, Any]
    envelope: Envelope


def load_statement(data: bytes | str | dict[str, Any]) -> Statement:
    envelope = parse_envelope(data, MAX_STATEMENT_BYTES)
    if envelope.payload_type != STATEMENT_TYPE:
        raise DecodeError("not a statement")
    raw = json_loads(envelope.payload, MAX_STATEMENT_BYTES)
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not isinstance(kind, str) or kind not in KINDS:
        raise DecodeError("unknown statement type")
    obj = members(raw, ("v", "type", "envelope", "by", "at", *KINDS[kind]))
    version(obj)
    unb64url(text(obj, "envelope", 43, 43), 32, 32)
    text(obj, "by", 1, 64)
    for name in KINDS[kind]:
        value = text(obj, name, 1, MAX_REASON if name == "reason" else 64)
        if name in ("inner", "statement"):
            unb64url(value, 32, 32)
    parse_time(obj["at"])
    return Statement(b64url(envelope.digest()), obj, envelope)


def verify_statement(statement: Statement, pk: bytes) -> None:
    if identity_id(pk) != statement.payload["by"]:
        raise VerificationError("not signed by the identity it names")
    verify(statement.envelope, Signer(pk), STATEMENT_TYPE)


# --- 14 request signatures -------------------------------------------------------------

_TOKEN = r"[a-z*][a-z0-9_.*-]*"
_MEMBER = re.compile(rf"({_TOKEN})=\(((?:\"[^\"\\]*\"(?: \"[^\"\\]*\")*)?)\)((?:;{_TOKEN}=[^;]+)*)")
_PARAM = re.compile(rf";({_TOKEN})=(-?[0-9]{{1,15}}|\"[^\"\\]*\")")
_BYTES_MEMBER = re.compile(rf"({_TOKEN})=:([A-Za-z0-9+/]*={{0,2}}):")
REQUIRED_COMPONENTS = ("@method", "@target-uri", "content-digest")
DERIVED = ("@method", "@target-uri", "@authority", "@scheme", "@path", "@query")


def _component(name: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    derived = {"@method": method.upper(), "@target-uri": url,
               "@authority": parts.netloc.lower(), "@scheme": parts.scheme.lower(),
               "@path": parts.path or "/", "@query": "?" + parts.query}
    if name in derived:
        return derived[name]
    if name.startswith("@") or name != name.lower():
        raise VerificationError("component not allowed")
    found = [v for k, v in headers.items() if k.lower() == name]
    if len(found) != 1 or len(found[0]) > 4096:
        raise VerificationError("covered header absent or too long")
    return found[0].strip()


def signature_base(components: Sequence[str], params_text: str, method: str, url: str,
                   headers: Mapping[str, str]) -> bytes:
    lines = []
    for name in components:
        value = _component(name, method, url, headers)
        if "\r" in value or "\n" in value:
            raise VerificationError("line break in a component")
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {params_text}')
    base = "\n".join(lines)
    if not base.isascii():
        raise VerificationError("signature base not ASCII")
    return base.encode("ascii")


def verify_request(method: str, url: str, headers: Mapping[str, str], body: bytes,
                   keys: Mapping[str, bytes], now: int, window: int = 300) -> tuple[str, str]:
    """Verify a request signed in canonical RFC 8941 form; return (keyid, nonce)."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _MEMBER.fullmatch(lower.get("signature-input", ""))
    if match is None:
        raise VerificationError("Signature-Input is not exactly one canonical member")
    label, items, params_text = match.groups()
    components = [item.strip('"') for item in items.split(" ")] if items else []
    if (not 0 < len(components) <= 16 or len(set(components)) != len(components)
            or not set(REQUIRED_COMPONENTS) <= set(components)):
        raise VerificationError("covered components")
    params: dict[str, int | str] = {}
    for name, value in _PARAM.findall(params_text):
        if name in params or name not in ("created", "nonce", "keyid", "alg", "expires", "tag"):
            raise VerificationError("signature parameters")
        params[name] = value.strip('"') if value.startswith('"') else int(value)
    if "".join(f";{k}={v}" for k, v in _PARAM.findall(params_text)) != params_text:
        raise VerificationError("signature parameters")
    created, nonce, keyid = params.get("created"), params.get("nonce"), params.get("keyid")
    if (not isinstance(created, int) or not isinstance(nonce, str) or not 1 <= len(nonce) <= 64
            or not isinstance(keyid, str) or not 1 <= len(keyid) <= 64
            or params.get("alg", "ed25519") != "ed25519"):
        raise VerificationError("required parameters")
    expires = params.get("expires")
    if abs(now - created) > window or (expires is not None
                                       and (not isinstance(expires, int) or expires < now)):
        raise Expired("outside the window")
    if keyid not in keys:
        raise VerificationError("unknown key")
    sig_match = _BYTES_MEMBER.fullmatch(lower.get("signature", ""))
    if sig_match is None or sig_match.group(1) != label:
        raise VerificationError("Signature does not carry the labelled signature")
    base = signature_base(components, f"({items}){params_text}", method, url, lower)
    try:
        nacl.signing.VerifyKey(keys[keyid]).verify(base, base64.b64decode(sig_match.group(2),
                                                                          validate=True))
    except (nacl.exceptions.BadSignatureError, ValueError, binascii.Error) as exc:
        raise VerificationError("signature") from exc
    digests = dict(m.groups() for m in (_BYTES_MEMBER.fullmatch(part.strip()) for part in
                                        lower.get("content-digest", "").split(",")) if m)
    expected = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    if not hmac.compare_digest(digests.get("sha-256", ""), expected):
        raise VerificationError("body does not match Content-Digest")
    return keyid, nonce


# --- 17 negotiation documents ----------------------------------------------------------

PROPOSAL_TYPE = "application/vnd.backchannel.proposal+json"
ACCEPTANCE_TYPE = "application/vnd.backchannel.acceptance+json"
REJECTION_TYPE = "application/vnd.backchannel.rejection+json"
AGREEMENT_TYPE = "application/vnd.backchannel.agreement+json"
HANDOVER_TYPE = "application/vnd.backchannel.handover+json"
DISCLOSURE_TYPE = "application/vnd.backchannel.disclosure+json"
CATEGORIES = ("pow", "civilians", "children", "remains")
MAX_PROPOSAL = 128 * 1024
MAX_DECISION = 16 * 1024
MAX_HANDOVER = 4 * 1024 * 1024
MAX_LIST = 16 * 1024 * 1024
MAX_DISCLOSURE = MAX_LIST * 4 // 3 + 4096
MAX_LIST_ENTRIES = 100_000
MAX_EXPORT = 32 * 1024 * 1024
_ID = re.compile(r"[a-z2-7]{32}")


class Refused(VerificationError):
    """A negotiation document that parses but breaks a rule of section 17."""


def document_id(envelope: Envelope) -> str:
    return b64url(envelope.digest())


def list_digest(salt: bytes, data: bytes) -> str:
    assert len(salt) == 32
    return b64url(hashlib.sha256(b"backchannel/v1/namelist-digest\x00" + salt + data).digest())


def _nid(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise DecodeError("expected an identity id")
    return value


def _digest(value: Any) -> str:
    unb64url(value, 32, exact=32)
    return str(value)


def _ids(value: Any, high: int) -> list[str]:
    if not isinstance(value, list) or len(value) > high:
        raise DecodeError("expected a list of identity ids")
    return [_nid(v) for v in value]


def parse_terms(payload: bytes) -> dict[str, Any]:
    """17.3: a proposal's (or agreement's) payload, every rule checked."""
    obj = members(json_loads(payload, MAX_PROPOSAL),
                  ("v", "from", "created", "expires", "supersedes", "parties", "transfers",
                   "place", "window", "conditions", "guarantors", "quorum"))
    version(obj)
    author, parties = _nid(obj["from"]), _ids(obj["parties"], 2)
    if len(parties) != 2 or parties[0] == parties[1] or author not in parties:
        raise Refused("parties")
    if obj["supersedes"] is not None:
        _digest(obj["supersedes"])
    transfers = obj["transfers"]
    if not isinstance(transfers, list) or len(transfers) != 2:
        raise DecodeError("transfers")
    seen: set[str] = set()
    givers = []
    for t in transfers:
        t = members(t, ("from", "to", "lists", "counts"))
        giver, receiver = _nid(t["from"]), _nid(t["to"])
        givers.append(giver)
        if {giver, receiver} != set(parties):
            raise Refused("a transfer goes from one party to the other")
        if not isinstance(t["lists"], list) or len(t["lists"]) > 16:
            raise DecodeError("lists")
        entries = 0
        for ref in t["lists"]:
            ref = members(ref, ("digest", "entries"))
            digest = _digest(ref["digest"])
            if digest in seen:
                raise Refused("a list referenced twice")
            seen.add(digest)
            entries += integer(ref, "entries", 0, MAX_LIST_ENTRIES)
        counts = members(t["counts"], CATEGORIES)
        if sum(integer(counts, c, 0, MAX_LIST_ENTRIES) for c in CATEGORIES) != entries:
            raise Refused("counts do not add up to the lists' entries")
    if sorted(givers) != sorted(parties):
        raise Refused("one transfer from each party")
    text(obj, "place", 1, 200)
    if not obj["place"].strip():
        raise Refused("place")
    window = members(obj["window"], ("from", "to"))
    if not parse_time(window["from"]) < parse_time(window["to"]):
        raise Refused("window")
    if not parse_time(obj["created"]) < parse_time(obj["expires"]):
        raise Refused("expires before it was created")
    text(obj, "conditions", 0, 20_000)
    guarantors = _ids(obj["guarantors"], 8)
    if len(set(guarantors)) != len(guarantors) or set(guarantors) & set(parties):
        raise Refused("guarantors")
    if obj["quorum"] is not None and integer(obj, "quorum", 1, 8) > len(guarantors):
        raise Refused("quorum")
    return obj


def parse_decision(envelope: Envelope) -> dict[str, Any]:
    """17.4."""
    if envelope.payload_type == ACCEPTANCE_TYPE:
        extra: tuple[str, ...] = ()
    elif envelope.payload_type == REJECTION_TYPE:
        extra = ("reason",)
    else:
        raise DecodeError("not a decision")
    obj = members(json_loads(envelope.payload, MAX_DECISION),
                  ("v", "from", "created", "proposal", *extra))
    version(obj)
    _nid(obj["from"])
    parse_time(obj["created"])
    _digest(obj["proposal"])
    if extra:
        text(obj, "reason", 1, 2000)
    return obj


@dataclass(frozen=True)
class ThreadMessage:
    id: str
    kind: str  # proposal, acceptance, rejection
    author: str
    created: datetime
    previous: str | None
    expires: datetime | None
    parties: tuple[str, ...]


def _message(envelope: Envelope, keys: Mapping[str, bytes]) -> ThreadMessage:
    if envelope.payload_type == PROPOSAL_TYPE:
        obj = parse_terms(envelope.payload)
        msg = ThreadMessage(document_id(envelope), "proposal", obj["from"],
                            parse_time(obj["created"]), obj["supersedes"],
                            parse_time(obj["expires"]), tuple(obj["parties"]))
    else:
        obj = parse_decision(envelope)
        kind = "acceptance" if envelope.payload_type == ACCEPTANCE_TYPE else "rejection"
        msg = ThreadMessage(document_id(envelope), kind, obj["from"],
                            parse_time(obj["created"]), obj["proposal"], None, ())
    if msg.author not in keys:
        raise VerificationError("no key for a thread author")
    verify(envelope, Signer(keys[msg.author]), envelope.payload_type)
    return msg


def verify_thread(envelopes: Sequence[Envelope], keys: Mapping[str, bytes]
                  ) -> list[ThreadMessage]:
    """17.5 rules 1-9, in order, and every author's signature."""
    messages = [_message(e, keys) for e in envelopes]
    if not messages:
        raise Refused("empty thread")
    by_id: dict[str, ThreadMessage] = {}
    parties: tuple[str, ...] = ()
    for n, msg in enumerate(messages):
        first = n == 0
        if (msg.kind == "proposal" and msg.previous is None) != first or \
                (first and msg.kind != "proposal"):
            raise Refused("rule 1")
        if msg.id in by_id:
            raise Refused("rule 2")
        if not first:
            before = messages[n - 1]
            if msg.previous != before.id:
                raise Refused("rule 3: removed, reordered or forked")
            if before.kind != "proposal":
                raise Refused("rule 4: the thread is closed")
            if msg.kind != "proposal" and by_id[msg.previous].kind != "proposal":
                raise Refused("rule 5")
        if first:
            parties = msg.parties
        if msg.author not in parties or (msg.kind == "proposal"
                                         and sorted(msg.parties) != sorted(parties)):
            raise Refused("rule 6")
        if not first:
            answered = by_id[str(msg.previous)]
            if msg.kind != "proposal" and answered.author == msg.author:
                raise Refused("rule 7")
            if msg.kind == "acceptance" and answered.expires is not None and \
                    not msg.created < answered.expires:
                raise Refused("rule 8")
            if msg.created < answered.created - CLOCK_SKEW:
                raise Refused("rule 9")
        by_id[msg.id] = msg
    return messages


def agreement_policy(terms: Mapping[str, Any], keys: Mapping[str, bytes]) -> Policy:
    """17.6: both parties and every guarantor (or the quorum of them)."""
    def signer(ident: str) -> Signer:
        if ident not in keys:
            raise VerificationError("no key for a required signer")
        return Signer(keys[ident])
    parts: list[Policy] = [signer(p) for p in terms["parties"]]
    guarantors = terms["guarantors"]
    if guarantors:
        need = len(guarantors) if terms["quorum"] is None else terms["quorum"]
        parts.append(AtLeast(need, *(signer(g) for g in guarantors)))
    return all_of(*parts)


def verify_agreement(envelope: Envelope, keys: Mapping[str, bytes],
                     thread: Sequence[Envelope] = ()) -> dict[str, Any]:
    """17.6: complete, and (with a thread) over the proposal the thread accepted."""
    terms = parse_terms(envelope.payload)
    verify(envelope, agreement_policy(terms, keys), AGREEMENT_TYPE)
    if thread:
        messages = verify_thread(thread, keys)
        last = messages[-1]
        proposal_id = b64url(hashlib.sha256(pae(PROPOSAL_TYPE, envelope.payload)).digest())
        if last.kind != "acceptance" or last.previous != proposal_id:
            raise Refused("the agreement is not over the accepted proposal")
    return terms


def check_disclosure(envelope: Envelope, terms: Mapping[str, Any], me: str,
                     keys: Mapping[str, bytes]) -> bytes:
    """17.7: the list bytes, once everything holds."""
    obj = members(json_loads(envelope.payload, MAX_DISCLOSURE),
                  ("v", "from", "to", "created", "list", "entries", "salt", "data"))
    version(obj)
    sender, recipient = _nid(obj["from"]), _nid(obj["to"])
    parse_time(obj["created"])
    salt = unb64url(obj["salt"], 32, exact=32)
    data = unb64url(obj["data"], MAX_LIST)
    if not data or not hmac.compare_digest(list_digest(salt, data), _digest(obj["list"])):
        raise Refused("the list does not open its digest")
    if sender not in terms["parties"] or sender not in keys:
        raise Refused("not disclosed by a party")
    verify(envelope, Signer(keys[sender]), DISCLOSURE_TYPE)
    if recipient != me:
        raise Refused("addressed to someone else")
    sizes = {r["digest"]: r["entries"] for t in terms["transfers"] for r in t["lists"]}
    if obj["list"] not in sizes or integer(obj, "entries", 0, MAX_LIST_ENTRIES) != \
            sizes[obj["list"]]:
        raise Refused("not an agreed list, or not its count")
    return data


def check_handover(envelope: Envelope, agreement: Envelope, keys: Mapping[str, bytes]
                   ) -> dict[str, Any]:
    """17.8: checks 1-4, the signatures of both parties and every witness, and the
    discrepancies per giver: missing (list, index) pairs and unlisted entry digests."""
    terms = parse_terms(agreement.payload)
    obj = members(json_loads(envelope.payload, MAX_HANDOVER),
                  ("v", "from", "created", "agreement", "place", "at", "transfers",
                   "witnesses", "notes"))
    version(obj)
    if obj["agreement"] != document_id(agreement):
        raise Refused("check 1: another agreement")
    witnesses = _ids(obj["witnesses"], 8)
    if len(set(witnesses)) != len(witnesses) or set(witnesses) & set(terms["parties"]):
        raise Refused("check 3: witnesses")
    agreed = {t["from"]: t for t in terms["transfers"]}
    if not isinstance(obj["transfers"], list) or len(obj["transfers"]) != 2:
        raise DecodeError("transfers")
    result: dict[str, Any] = {}
    pairs = set()
    for t in obj["transfers"]:
        t = members(t, ("from", "to", "delivered", "unlisted"))
        giver = _nid(t["from"])
        pairs.add((giver, _nid(t["to"])))
        if giver not in agreed:
            raise Refused("check 2: not a party's transfer")
        sizes = {r["digest"]: r["entries"] for r in agreed[giver]["lists"]}
        seen: set[tuple[str, int]] = set()
        for ref in t["delivered"]:
            ref = members(ref, ("list", "index", "category"))
            key = (_digest(ref["list"]), integer(ref, "index", 0, MAX_LIST_ENTRIES - 1))
            if ref["category"] not in CATEGORIES:
                raise DecodeError("category")
            if key[0] not in sizes or key[1] >= sizes[key[0]] or key in seen:
                raise Refused("check 4: an entry outside the giver's agreed lists, or twice")
            seen.add(key)
        unlisted = [_digest(members(u, ("digest", "category"))["digest"])
                    for u in t["unlisted"]]
        if len(set(unlisted)) != len(unlisted):
            raise Refused("an unlisted person twice")
        result[giver] = {"missing": sorted((d, i) for d, n in sizes.items() for i in range(n)
                                           if (d, i) not in seen),
                         "unlisted": unlisted}
    if pairs != {(t["from"], t["to"]) for t in terms["transfers"]}:
        raise Refused("check 2: the transfers are not the agreement's")
    for ident in (*terms["parties"], *witnesses):
        if ident not in keys:
            raise VerificationError("no key for a required signer")
    verify(envelope, all_of(*(Signer(keys[i]) for i in (*terms["parties"], *witnesses))),
           HANDOVER_TYPE)
    return result


def verify_export(data: bytes) -> dict[str, Any]:
    """17.10: an exported agreement or handover record, fully verified."""
    obj = json_loads(data, MAX_EXPORT)
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind == "agreement":
        obj = members(obj, ("v", "kind", "agreement", "thread", "keys"))
    elif kind == "handover":
        obj = members(obj, ("v", "kind", "handover", "agreement", "thread", "keys"))
    else:
        raise DecodeError("not an export")
    version(obj)
    if not isinstance(obj["keys"], dict) or len(obj["keys"]) > 64:
        raise DecodeError("keys")
    keys = {}
    for ident, value in obj["keys"].items():
        pk = unb64url(value, 32, exact=32)
        if identity_id(pk) != ident:
            raise Refused("a key listed under another identity's id")
        keys[ident] = pk
    if not isinstance(obj["thread"], list):
        raise DecodeError("thread")
    thread = [parse_envelope(e, MAX_PROPOSAL) for e in obj["thread"]]
    agreement = parse_envelope(obj["agreement"], MAX_PROPOSAL)
    terms = verify_agreement(agreement, keys, thread)
    out: dict[str, Any] = {"agreement": document_id(agreement), "terms": terms}
    if kind == "handover":
        handover = parse_envelope(obj["handover"], MAX_HANDOVER)
        out["handover"] = document_id(handover)
        out["discrepancies"] = check_handover(handover, agreement, keys)
    return out
