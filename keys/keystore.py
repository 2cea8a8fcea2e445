"""The keystore: an identity's private keys, encrypted at rest under a passphrase.

File format (UTF-8 JSON, mode 0600 in a 0700 directory)::

    {"v": 1, "kind": "backchannel-keystore",
     "kdf": {"alg": "argon2id13", "opslimit": 3, "memlimit": 268435456, "salt": "<b64url 16>"},
     "cipher": "xsalsa20poly1305", "nonce": "<b64url 24>", "ct": "<b64url>",
     "check": "<b64url 32>"}

``key = Argon2id(passphrase (UTF-8, NFC), salt, opslimit, memlimit)`` (libsodium
``crypto_pwhash``, 32 bytes); ``ct = SecretBox(key).encrypt(plaintext, nonce)``.
``check`` is a plain SHA-256 over the stored fields: it tells a damaged file from a
wrong passphrase (both would otherwise fail the same MAC check). The plaintext is
JSON holding the Ed25519 seed, the encryption private key, the current card and a
random key for the client's local message store.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.secret

from . import dsse
from .card import load_card
from .clock import SYSTEM_CLOCK, Clock, Random, system_random
from .ed25519 import SEED_BYTES, SigningKey
from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_int,
    expect_object,
    expect_version,
    json_dumps,
    json_loads,
)
from .errors import (
    BackchannelError,
    DecodeError,
    KeystoreCorrupt,
    NotTheOwner,
    WeakKeystoreParameters,
    WrongPassphrase,
)
from .files import atomic_write, read_private
from .identity import Identity
from .kem import MLKEM768_SEED_BYTES, SUITES, X25519_BYTES, EncryptionPrivateKey

_argon = nacl.pwhash.argon2id

#: RFC 9106 section 4, second recommended option ("low memory"): t=3, m=64 MiB.
#: libsodium's Argon2id runs one lane, so p cannot be raised; t and m are the floor.
MIN_OPSLIMIT: Final = 3
MIN_MEMLIMIT: Final = 64 * 1024 * 1024
#: Upper bounds, so that a hostile file cannot make us allocate without limit.
MAX_OPSLIMIT: Final = 64
MAX_MEMLIMIT: Final = 4 * 1024 * 1024 * 1024
MAX_KEYSTORE_BYTES: Final = 64 * 1024
LOCAL_KEY_BYTES: Final = 32
_CHECK_DOMAIN = b"backchannel/v1/keystore-check\x00"


@dataclass(frozen=True)
class KdfParams:
    opslimit: int = _argon.OPSLIMIT_MODERATE
    memlimit: int = _argon.MEMLIMIT_MODERATE

    def check(self) -> None:
        if self.opslimit < MIN_OPSLIMIT or self.memlimit < MIN_MEMLIMIT:
            raise WeakKeystoreParameters(
                "this keystore's key-derivation parameters are below the accepted floor "
                "(Argon2id t=3, m=64 MiB); it may have been tampered with")
        if self.opslimit > MAX_OPSLIMIT or self.memlimit > MAX_MEMLIMIT:
            raise KeystoreCorrupt("keystore key-derivation parameters are implausibly large")


#: The floor itself: used by tests and by machines with little memory.
FLOOR_PARAMS: Final = KdfParams(MIN_OPSLIMIT, MIN_MEMLIMIT)


class Unlocked:
    """An opened keystore. ``repr`` shows no secret."""

    __slots__ = ("identity", "local_key")

    def __init__(self, identity: Identity, local_key: bytes) -> None:
        self.identity = identity
        self.local_key = local_key

    def __repr__(self) -> str:
        return f"Unlocked({self.identity!r})"


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return bytes(_argon.kdf(nacl.secret.SecretBox.KEY_SIZE, secret, salt,
                            opslimit=params.opslimit, memlimit=params.memlimit))


def _check_value(params: KdfParams, salt: bytes, nonce: bytes, ct: bytes) -> bytes:
    return hashlib.sha256(_CHECK_DOMAIN + params.opslimit.to_bytes(8, "big")
                          + params.memlimit.to_bytes(8, "big") + salt + nonce + ct).digest()


def _plaintext(unlocked: Unlocked) -> bytes:
    ident = unlocked.identity
    xsecret, mseed = ident.encryption_key.secrets()
    enc: dict[str, Any] = {"suite": ident.encryption_key.suite, "x25519": b64url_encode(xsecret)}
    if mseed is not None:
        enc["mlkem_seed"] = b64url_encode(mseed)
    return json_dumps({"v": 1, "signing": b64url_encode(ident.signing_key.seed()),
                       "encryption": enc, "card": ident.card.envelope.to_dict(),
                       "local": b64url_encode(unlocked.local_key)})


def encrypt_keystore(unlocked: Unlocked, passphrase: str, *, params: KdfParams = KdfParams(),
                     random: Random = system_random) -> bytes:
    params.check()
    salt = random(_argon.SALTBYTES)
    nonce = random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
    ct = box.encrypt(_plaintext(unlocked), nonce).ciphertext
    return json_dumps({
        "v": 1, "kind": "backchannel-keystore",
        "kdf": {"alg": "argon2id13", "opslimit": params.opslimit,
                "memlimit": params.memlimit, "salt": b64url_encode(salt)},
        "cipher": "xsalsa20poly1305", "nonce": b64url_encode(nonce), "ct": b64url_encode(ct),
        "check": b64url_encode(_check_value(params, salt, nonce, ct)),
    }) + b"\n"


@dataclass(frozen=True)
class _Header:
    params: KdfParams
    salt: bytes
    nonce: bytes
    ct: bytes
    check: bytes


def decrypt_keystore(data: bytes, passphrase: str, *, clock: Clock = SYSTEM_CLOCK) -> Unlocked:
    """Raise :class:`WrongPassphrase`, :class:`KeystoreCorrupt` or
    :class:`WeakKeystoreParameters`; never return garbage keys."""
    header = _parse_header(data)
    params, salt, nonce, ct = header.params, header.salt, header.nonce, header.ct
    params.check()
    if not passphrase:
        raise WrongPassphrase()
    if not nacl.bindings.sodium_memcmp(header.check, _check_value(params, salt, nonce, ct)):
        raise KeystoreCorrupt("the keystore file is damaged (checksum mismatch)")
    try:
        plain = nacl.secret.SecretBox(_derive(passphrase, salt, params)).decrypt(ct, nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase() from None
    try:
        return _parse_plaintext(plain, clock)
    except (BackchannelError, ValueError) as exc:
        # The MAC verified, so this is a file written by a broken program, not damage.
        raise KeystoreCorrupt("the keystore decrypted but its contents are invalid") from exc


def _parse_header(data: bytes) -> _Header:
    try:
        obj = expect_object(
            json_loads(data, max_bytes=MAX_KEYSTORE_BYTES, what="keystore"),
            required=("v", "kind", "kdf", "cipher", "nonce", "ct", "check"), what="keystore")
        expect_version(obj, what="keystore")
        if obj["kind"] != "backchannel-keystore" or obj["cipher"] != "xsalsa20poly1305":
            raise DecodeError("not a Backchannel keystore")
        kdf = expect_object(obj["kdf"], required=("alg", "opslimit", "memlimit", "salt"),
                            what="keystore.kdf")
        if kdf["alg"] != "argon2id13":
            raise DecodeError("keystore.kdf: unknown algorithm")
        params = KdfParams(expect_int(kdf, "opslimit", what="kdf", low=1, high=2**32),
                           expect_int(kdf, "memlimit", what="kdf", low=1, high=2**48))
        salt = b64url_decode(kdf["salt"], max_bytes=16, exact=_argon.SALTBYTES, field="salt")
        nonce = b64url_decode(obj["nonce"], max_bytes=24, exact=24, field="nonce")
        ct = b64url_decode(obj["ct"], max_bytes=MAX_KEYSTORE_BYTES, field="ct")
        check = b64url_decode(obj["check"], max_bytes=32, exact=32, field="check")
    except DecodeError as exc:
        raise KeystoreCorrupt(f"the keystore file is damaged or truncated ({exc})") from None
    return _Header(params, salt, nonce, ct, check)


def _parse_plaintext(plain: bytes, clock: Clock) -> Unlocked:
    obj = expect_object(json_loads(plain, max_bytes=MAX_KEYSTORE_BYTES, what="keystore"),
                        required=("v", "signing", "encryption", "card", "local"),
                        what="keystore contents")
    expect_version(obj, what="keystore contents")
    signing = SigningKey(b64url_decode(obj["signing"], max_bytes=SEED_BYTES, exact=SEED_BYTES,
                                       field="signing"))
    enc = expect_object(obj["encryption"], required=("suite", "x25519"),
                        optional=("mlkem_seed",), what="keystore encryption key")
    if enc["suite"] not in SUITES:
        raise DecodeError("unknown encryption suite")
    mseed = None
    if "mlkem_seed" in enc:
        mseed = b64url_decode(enc["mlkem_seed"], max_bytes=MLKEM768_SEED_BYTES,
                              exact=MLKEM768_SEED_BYTES, field="mlkem_seed")
    encryption = EncryptionPrivateKey(
        str(enc["suite"]),
        b64url_decode(enc["x25519"], max_bytes=X25519_BYTES, exact=X25519_BYTES,
                      field="x25519"), mseed)
    # Our own card, authenticated by the keystore's MAC: its validity period must not
    # lock us out of our keys when the local clock is wrong.
    card = load_card(dsse.Envelope.from_dict(obj["card"]), now=clock.now(), allow_expired=True,
                     check_created=False)
    local = b64url_decode(obj["local"], max_bytes=LOCAL_KEY_BYTES, exact=LOCAL_KEY_BYTES,
                          field="local")
    return Unlocked(Identity(signing, encryption, card), local)


def new_unlocked(identity: Identity, random: Random = system_random) -> Unlocked:
    return Unlocked(identity, random(LOCAL_KEY_BYTES))


def save_keystore(path: Path, unlocked: Unlocked, passphrase: str, *,
                  params: KdfParams = KdfParams()) -> None:
    atomic_write(path, encrypt_keystore(unlocked, passphrase, params=params))


def check_owner(path: Path) -> None:
    """Raise :class:`NotTheOwner` unless this process's user owns ``path`` (before a
    rewrite: the new file belongs to whoever writes it)."""
    owner = os.stat(path).st_uid
    if owner != os.geteuid():
        raise NotTheOwner(f"{path} belongs to user id {owner}: change its passphrase as that "
                          "user (e.g. sudo -u USER), or the file written would be unreadable "
                          "to its owner")


def change_passphrase(path: Path, current: str, new: str, *,
                      clock: Clock = SYSTEM_CLOCK) -> Unlocked:
    """Re-encrypt the keystore at ``path`` under ``new``: same keys, a fresh salt and
    nonce, the Argon2id cost it was written with. Raises as :func:`load_keystore`
    (the current passphrase is checked first). The caller holds any lock the file
    needs; copies of the old file still open with ``current``."""
    check_owner(path)
    data = read_private(path, max_bytes=MAX_KEYSTORE_BYTES)
    unlocked = decrypt_keystore(data, current, clock=clock)
    save_keystore(path, unlocked, new, params=_parse_header(data).params)
    return unlocked


def load_keystore(path: Path, passphrase: str, *, clock: Clock = SYSTEM_CLOCK) -> Unlocked:
    """Read and decrypt; also raises :class:`InsecurePermissions` and
    ``FileNotFoundError``."""
    data = read_private(path, max_bytes=MAX_KEYSTORE_BYTES)
    if len(data) > MAX_KEYSTORE_BYTES:
        raise KeystoreCorrupt("the keystore file is too large to be a keystore")
    return decrypt_keystore(data, passphrase, clock=clock)
