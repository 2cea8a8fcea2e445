"""The keystore: round trips, wrong passphrase, damage, permissions, weak parameters,
and no key material in repr(), logs or error messages.

Argon2id at FLOOR_PARAMS costs about 0.1 s per derivation; each test notes how many
it runs. Damage is detected before any derivation, so the damage tests are cheap.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.secret
import pytest

from keys import keystore
from keys.clock import FixedClock
from keys.encoding import b64url_decode, b64url_encode, json_dumps
from keys.errors import (
    InsecurePermissions,
    KeystoreCorrupt,
    KeystoreError,
    NotTheOwner,
    WeakKeystoreParameters,
    WrongPassphrase,
)
from keys.files import atomic_write, read_private
from keys.identity import Identity
from keys.kem import SUITE_HYBRID, SUITE_X25519
from keys.keystore import (
    FLOOR_PARAMS,
    KdfParams,
    Unlocked,
    decrypt_keystore,
    encrypt_keystore,
    load_keystore,
    new_unlocked,
    save_keystore,
)
from keys.seal import open_sealed, seal

T0 = FixedClock().current
PASSPHRASE = "correct horse battery staple – Київ"


@pytest.fixture(scope="module")
def unlocked(make_identity: Callable[..., Identity]) -> Unlocked:
    return new_unlocked(make_identity("Keystore Owner"))


@pytest.fixture(scope="module")
def floor_file(unlocked: Unlocked) -> bytes:
    """One keystore file at the floor parameters (1 derivation, shared)."""
    return encrypt_keystore(unlocked, PASSPHRASE, params=FLOOR_PARAMS)


def _fields(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    assert isinstance(value, dict)
    return value


def _rewrite(data: bytes, change: Callable[[dict[str, Any]], None], *,
             fix_check: bool = True) -> bytes:
    """Edit a keystore file's fields; by default recompute the checksum so that only
    the edit itself is wrong (as a deliberate attacker would)."""
    obj = _fields(data)
    change(obj)
    if fix_check:
        kdf = obj["kdf"]
        params = KdfParams(kdf["opslimit"], kdf["memlimit"])
        obj["check"] = b64url_encode(keystore._check_value(
            params, b64url_decode(kdf["salt"], max_bytes=16),
            b64url_decode(obj["nonce"], max_bytes=24),
            b64url_decode(obj["ct"], max_bytes=1 << 16)))
    return json_dumps(obj) + b"\n"


def _secrets(u: Unlocked, passphrase: str = PASSPHRASE) -> Iterator[str]:
    """Every spelling of every secret that must never leak."""
    x_secret, mlkem_seed = u.identity.encryption_key.secrets()
    raw = [u.identity.signing_key.seed(), x_secret, u.local_key]
    if mlkem_seed is not None:
        raw.append(mlkem_seed)
    for value in raw:
        yield value.hex()
        yield b64url_encode(value)
        yield base64.b64encode(value).decode()
        yield repr(value)[2:-1]
        yield b64url_encode(value)[:12]  # even a fragment
    yield passphrase


def _assert_no_secret(text: str, u: Unlocked, passphrase: str = PASSPHRASE) -> None:
    for secret in _secrets(u, passphrase):
        assert secret not in text


# -- changing the passphrase -----------------------------------------------------------

def test_change_passphrase_keeps_the_keys_and_the_cost(tmp_path: Path,
                                                       unlocked: Unlocked) -> None:
    # 6 derivations.
    path = tmp_path / "keystore.json"
    cost = keystore.KdfParams(FLOOR_PARAMS.opslimit + 1, FLOOR_PARAMS.memlimit)
    save_keystore(path, unlocked, PASSPHRASE, params=cost)
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase):
        keystore.change_passphrase(path, "not it", "a new long passphrase")
    assert path.read_bytes() == before  # a wrong current passphrase writes nothing
    keystore.change_passphrase(path, PASSPHRASE, "a new long passphrase")
    with pytest.raises(WrongPassphrase):
        load_keystore(path, PASSPHRASE)
    loaded = load_keystore(path, "a new long passphrase")
    assert loaded.identity.signing_key.seed() == unlocked.identity.signing_key.seed()
    assert loaded.local_key == unlocked.local_key
    kdf = json.loads(path.read_bytes())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (cost.opslimit, cost.memlimit)
    assert kdf["salt"] != json.loads(before)["kdf"]["salt"]  # a fresh salt
    # A copy of the old file still opens with the old passphrase, as documented.
    assert load_keystore(_copy(tmp_path, before), PASSPHRASE).local_key == unlocked.local_key


def test_only_the_owner_changes_a_passphrase(tmp_path: Path, unlocked: Unlocked,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 derivation. Another user (root with sudo, say) would leave a file its owner, the
    # node's service account, cannot read; switching users is what cannot run here.
    path = tmp_path / "keystore.json"
    save_keystore(path, unlocked, PASSPHRASE, params=FLOOR_PARAMS)
    before = path.read_bytes()
    owner = path.stat().st_uid
    monkeypatch.setattr(keystore.os, "geteuid", lambda: owner + 1)
    with pytest.raises(NotTheOwner, match=f"belongs to user id {owner}: change its"):
        keystore.change_passphrase(path, PASSPHRASE, "a new long passphrase")
    assert path.read_bytes() == before


def _copy(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "backup" / "keystore.json"
    atomic_write(path, data)
    return path


# -- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("suite", [SUITE_HYBRID, SUITE_X25519])
def test_save_load_round_trip(tmp_path: Path, make_identity: Callable[..., Identity],
                              alice: Identity, suite: str) -> None:
    # 2 derivations.
    ident = make_identity(f"Owner {suite}", suite=suite)
    original = new_unlocked(ident)
    path = tmp_path / "home" / "keystore.json"
    save_keystore(path, original, PASSPHRASE, params=FLOOR_PARAMS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["keystore.json"]  # no temporary file left
    loaded = load_keystore(path, PASSPHRASE, clock=FixedClock(T0))
    assert loaded.identity.id == ident.id
    assert loaded.identity.card == ident.card
    assert loaded.identity.signing_key.seed() == ident.signing_key.seed()
    assert loaded.identity.encryption_key.secrets() == ident.encryption_key.secrets()
    assert loaded.identity.encryption_key.public == ident.encryption_key.public
    assert loaded.local_key == original.local_key and len(loaded.local_key) == 32
    # The loaded keys work: they open a message sealed to the original card.
    sealed = seal(alice, [ident.card], "note", "hi", allow_classical=True)
    assert open_sealed(sealed.data, loaded.identity,
                       lambda _sid: alice.card).message.body == "hi"


def test_file_format(floor_file: bytes, unlocked: Unlocked) -> None:
    obj = _fields(floor_file)
    assert set(obj) == {"v", "kind", "kdf", "cipher", "nonce", "ct", "check"}
    assert obj["v"] == 1 and obj["kind"] == "backchannel-keystore"
    assert obj["cipher"] == "xsalsa20poly1305"
    assert obj["kdf"] == {"alg": "argon2id13", "opslimit": 3, "memlimit": 64 * 1024 * 1024,
                          "salt": obj["kdf"]["salt"]}
    assert len(b64url_decode(obj["kdf"]["salt"], max_bytes=16)) == 16
    assert len(b64url_decode(obj["nonce"], max_bytes=24)) == 24
    assert floor_file.endswith(b"}\n")
    _assert_no_secret(floor_file.decode(), unlocked)


def test_default_parameters(unlocked: Unlocked) -> None:
    # The one test at the (slow) default parameters: 2 derivations at 256 MiB.
    data = encrypt_keystore(unlocked, PASSPHRASE)
    kdf = _fields(data)["kdf"]
    assert kdf["opslimit"] >= keystore.MIN_OPSLIMIT
    assert kdf["memlimit"] >= keystore.MIN_MEMLIMIT
    assert (kdf["opslimit"], kdf["memlimit"]) == (KdfParams().opslimit, KdfParams().memlimit)
    assert decrypt_keystore(data, PASSPHRASE, clock=FixedClock(T0)).identity.id == (
        unlocked.identity.id)


def test_passphrase_is_nfc_normalised(unlocked: Unlocked) -> None:
    # 2 derivations. "é" typed as one code point or as e + combining accent.
    data = encrypt_keystore(unlocked, "caf\u00e9 Kyiv", params=FLOOR_PARAMS)
    assert decrypt_keystore(data, "cafe\u0301 Kyiv").identity.id == unlocked.identity.id


def test_overwrite_is_atomic_replace(tmp_path: Path, unlocked: Unlocked,
                                     floor_file: bytes) -> None:
    path = tmp_path / "d" / "ks"
    atomic_write(path, b"old")
    atomic_write(path, floor_file)
    assert path.read_bytes() == floor_file
    assert sorted(os.listdir(path.parent)) == ["ks"]


# -- wrong passphrase, damage ---------------------------------------------------------

def test_wrong_passphrase(floor_file: bytes) -> None:
    # 1 derivation.
    with pytest.raises(WrongPassphrase):
        decrypt_keystore(floor_file, PASSPHRASE.upper())


def test_empty_passphrase(floor_file: bytes) -> None:
    with pytest.raises(WrongPassphrase):
        decrypt_keystore(floor_file, "")


def test_truncated_file(floor_file: bytes) -> None:
    # Every cut point except the one that only drops the final newline (still whole).
    assert floor_file[-1:] == b"\n"
    for cut in range(len(floor_file) - 1):
        with pytest.raises(KeystoreCorrupt):
            decrypt_keystore(floor_file[:cut], PASSPHRASE)


def test_truncated_file_on_disk(tmp_path: Path, floor_file: bytes) -> None:
    path = tmp_path / "ks" / "keystore.json"
    for cut in (0, 1, len(floor_file) // 2, len(floor_file) - 2):
        atomic_write(path, floor_file[:cut])
        with pytest.raises(KeystoreCorrupt):
            load_keystore(path, PASSPHRASE)


def test_every_ciphertext_byte_flip(floor_file: bytes) -> None:
    ct = b64url_decode(_fields(floor_file)["ct"], max_bytes=1 << 16)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01

        def change(obj: dict[str, Any], bad: bytes = bytes(bad)) -> None:
            obj["ct"] = b64url_encode(bad)
        with pytest.raises(KeystoreCorrupt):
            decrypt_keystore(_rewrite(floor_file, change, fix_check=False), PASSPHRASE)


def test_raw_byte_flips(floor_file: bytes) -> None:
    # Any damage is reported as damage (or as the weak parameters it produced),
    # never as a wrong passphrase and never as success.
    step = max(1, len(floor_file) // 400)
    for i in range(0, len(floor_file) - 1, step):
        for mask in (0x01, 0x02):
            bad = bytearray(floor_file)
            bad[i] ^= mask
            with pytest.raises((KeystoreCorrupt, WeakKeystoreParameters)):
                decrypt_keystore(bytes(bad), PASSPHRASE)


def test_checksum_fixed_after_tampering_still_fails(floor_file: bytes) -> None:
    # 1 derivation. An attacker can recompute the plain checksum; the MAC still fails.
    def change(obj: dict[str, Any]) -> None:
        ct = bytearray(b64url_decode(obj["ct"], max_bytes=1 << 16))
        ct[20] ^= 1
        obj["ct"] = b64url_encode(bytes(ct))
    with pytest.raises(KeystoreError):
        decrypt_keystore(_rewrite(floor_file, change), PASSPHRASE)


@pytest.mark.parametrize("change", [
    {"v": 2}, {"kind": "other"}, {"cipher": "aes"}, {"extra": 1}, {"nonce": "AAAA"},
    {"ct": ""}, {"check": "AAAA"}, {"kdf": {"alg": "scrypt"}},
])
def test_malformed_fields(floor_file: bytes, change: dict[str, Any]) -> None:
    with pytest.raises(KeystoreCorrupt):
        decrypt_keystore(json_dumps({**_fields(floor_file), **change}), PASSPHRASE)


def _with_plaintext(data: bytes, plaintext: bytes) -> bytes:
    """A keystore whose MAC verifies but whose contents are wrong (a broken writer)."""
    obj = _fields(data)
    kdf = obj["kdf"]
    salt = b64url_decode(kdf["salt"], max_bytes=16)
    key = keystore._derive(PASSPHRASE, salt, FLOOR_PARAMS)
    nonce = b64url_decode(obj["nonce"], max_bytes=24)
    ct = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext

    def change(o: dict[str, Any]) -> None:
        o["ct"] = b64url_encode(ct)
    return _rewrite(data, change)


def test_valid_mac_but_invalid_contents(floor_file: bytes, unlocked: Unlocked,
                                        bob: Identity) -> None:
    # 4 derivations. Never garbage keys: a seed that does not match the card, or
    # anything malformed, is refused.
    good = json.loads(keystore._plaintext(unlocked))
    wrong_card = {**good, "card": bob.card.envelope.to_dict()}
    wrong_suite = {**good, "encryption": {**good["encryption"], "suite": "RSA"}}
    for plaintext in (json_dumps(wrong_card), json_dumps(wrong_suite), b"not json",
                      json_dumps({**good, "local": "AAAA"})):
        with pytest.raises(KeystoreCorrupt):
            decrypt_keystore(_with_plaintext(floor_file, plaintext), PASSPHRASE)


# -- parameters -----------------------------------------------------------------------

@pytest.mark.parametrize(("opslimit", "memlimit"), [
    (2, 64 * 1024 * 1024), (3, 32 * 1024 * 1024), (1, 8192), (2, 32 * 1024 * 1024),
])
def test_weak_parameters_refused_on_load(floor_file: bytes, opslimit: int,
                                         memlimit: int) -> None:
    def change(obj: dict[str, Any]) -> None:
        obj["kdf"]["opslimit"], obj["kdf"]["memlimit"] = opslimit, memlimit
    with pytest.raises(WeakKeystoreParameters):
        decrypt_keystore(_rewrite(floor_file, change), PASSPHRASE)


def test_weak_parameters_refused_on_save(unlocked: Unlocked) -> None:
    for params in (KdfParams(2, keystore.MIN_MEMLIMIT), KdfParams(3, 32 * 1024 * 1024)):
        with pytest.raises(WeakKeystoreParameters):
            encrypt_keystore(unlocked, PASSPHRASE, params=params)


@pytest.mark.parametrize(("opslimit", "memlimit"), [
    (keystore.MAX_OPSLIMIT + 1, keystore.MIN_MEMLIMIT), (3, keystore.MAX_MEMLIMIT + 1),
])
def test_implausible_parameters_refused(floor_file: bytes, opslimit: int,
                                        memlimit: int) -> None:
    def change(obj: dict[str, Any]) -> None:
        obj["kdf"]["opslimit"], obj["kdf"]["memlimit"] = opslimit, memlimit
    with pytest.raises(KeystoreCorrupt):
        decrypt_keystore(_rewrite(floor_file, change), PASSPHRASE)


# -- permissions ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_file_permissions_too_open(tmp_path: Path, floor_file: bytes, mode: int) -> None:
    path = tmp_path / "ks" / "keystore.json"
    atomic_write(path, floor_file)
    path.chmod(mode)
    with pytest.raises(InsecurePermissions, match="chmod 600"):
        load_keystore(path, PASSPHRASE)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770])
def test_directory_permissions_too_open(tmp_path: Path, floor_file: bytes,
                                        unlocked: Unlocked, mode: int) -> None:
    path = tmp_path / "ks" / "keystore.json"
    atomic_write(path, floor_file)
    path.parent.chmod(mode)
    try:
        with pytest.raises(InsecurePermissions, match="chmod 700"):
            load_keystore(path, PASSPHRASE)
        with pytest.raises(InsecurePermissions):
            save_keystore(path, unlocked, PASSPHRASE, params=FLOOR_PARAMS)
        assert path.read_bytes() == floor_file  # nothing half-written
    finally:
        path.parent.chmod(0o700)


def test_read_private_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "ks" / "big"
    atomic_write(path, b"x" * (keystore.MAX_KEYSTORE_BYTES + 10))
    assert len(read_private(path, max_bytes=100)) == 101
    with pytest.raises(KeystoreCorrupt):
        load_keystore(path, PASSPHRASE)


def test_missing_file(tmp_path: Path) -> None:
    (tmp_path / "ks").mkdir(mode=0o700)
    with pytest.raises(FileNotFoundError):
        load_keystore(tmp_path / "ks" / "nope", PASSPHRASE)


# -- no key material in repr, logs or errors ------------------------------------------

def test_no_secrets_in_repr(unlocked: Unlocked) -> None:
    ident = unlocked.identity
    for obj in (ident, ident.signing_key, ident.encryption_key, unlocked, ident.card,
                ident.signing_key.public, ident.encryption_key.public):
        for text in (repr(obj), str(obj)):
            _assert_no_secret(text, unlocked)
    assert ident.id in repr(ident) and ident.id in repr(unlocked)


def test_no_secrets_in_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      unlocked: Unlocked, floor_file: bytes) -> None:
    # 3 derivations.
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "ks" / "keystore.json"
    save_keystore(path, unlocked, PASSPHRASE, params=FLOOR_PARAMS)
    load_keystore(path, PASSPHRASE)
    errors: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: load_keystore(path, PASSPHRASE + "!"),
        lambda: decrypt_keystore(floor_file[:200], PASSPHRASE),
        lambda: decrypt_keystore(floor_file.replace(b'"ct":"', b'"ct":"A'), PASSPHRASE),
        lambda: decrypt_keystore(_with_plaintext(floor_file, b"{"), PASSPHRASE),
    ]
    for attempt in attempts:
        with pytest.raises(KeystoreError) as info:
            attempt()
        errors.append(info.value)
    path.chmod(0o644)
    with pytest.raises(InsecurePermissions) as perm:
        load_keystore(path, PASSPHRASE)
    errors.append(perm.value)
    for error in errors:
        text = "".join(traceback.format_exception(error))
        _assert_no_secret(text, unlocked)
        _assert_no_secret(text, unlocked, PASSPHRASE + "!")
    log_text = caplog.text + "".join(str(r.args) for r in caplog.records)
    _assert_no_secret(log_text, unlocked)
