"""The profile directory: one delegation's identity and everything it keeps locally.

Location: ``--home DIR``, else ``$BACKCHANNEL_HOME``, else ``~/.backchannel``; mode
0700. Contents::

    keystore.json          the identity's private keys (keys.keystore: Argon2id + SecretBox)
    contacts.box           the contact list            } encrypted with the keystore's
    node.box               the pinned node             } local key (client.localstore)
    messages/<id>.box      one per message sent or received
    .lock                  serialises writers (an `inbox --watch` next to a `send`)

Nothing readable is stored outside the keystore's protection: not the contacts'
names, not the node's address, not a message.

``BACKCHANNEL_KDF=floor`` makes *new* keystores use the RFC 9106 floor parameters
(Argon2id t=3, m=64 MiB) instead of libsodium's "moderate" ones (t=3, m=256 MiB).
It is meant for test suites, which create many profiles; on a real laptop leave it
unset. The parameters are stored in the keystore, so opening one never depends on
the variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from keys import dsse
from keys.card import Card, load_card
from keys.clock import SYSTEM_CLOCK, Clock
from keys.encoding import expect_object, format_time, json_loads, parse_time
from keys.errors import BackchannelError, DecodeError
from keys.files import ensure_private_dir
from keys.identity import Identity
from keys.keystore import (
    FLOOR_PARAMS,
    MAX_KEYSTORE_BYTES,
    KdfParams,
    Unlocked,
    change_passphrase,
    load_keystore,
    new_unlocked,
    save_keystore,
)

from .contacts import ContactBook
from .errors import (
    BadSetting,
    MessageError,
    NoProfile,
    NotRegistered,
    ProfileExists,
    StoreCorrupt,
)
from .localstore import LocalStore
from .records import Record, record_from_dict

ENV_HOME: Final = "BACKCHANNEL_HOME"
ENV_KDF: Final = "BACKCHANNEL_KDF"
KEYSTORE_FILE: Final = "keystore.json"
KDF_CHOICES: Final[Mapping[str, KdfParams]] = {"moderate": KdfParams(), "floor": FLOOR_PARAMS}


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    value = env.get(ENV_HOME)
    return Path(value).expanduser() if value else Path.home() / ".backchannel"


def kdf_params_from_env(environ: Mapping[str, str] | None = None) -> KdfParams:
    """Key-derivation parameters for a new keystore (see the module docstring)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_KDF, "").strip().lower()
    if not value:
        return KdfParams()
    params = KDF_CHOICES.get(value)
    if params is None:
        raise BadSetting(f"{ENV_KDF}={value[:20]!r} is not understood: use "
                         f"{' or '.join(KDF_CHOICES)} (or leave it unset)")
    return params


@dataclass(frozen=True)
class NodePin:
    """The node this profile joined, pinned by its card (its key)."""

    url: str
    card: Card
    member_id: str
    role: str
    label: str
    registered: datetime
    limits: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "card": self.card.envelope.to_dict(),
                "member": {"id": self.member_id, "role": self.role, "label": self.label},
                "registered": format_time(self.registered), "limits": dict(self.limits)}

    @classmethod
    def from_dict(cls, value: object, *, now: datetime) -> NodePin:
        obj = expect_object(value, required=("url", "card", "member", "registered", "limits"),
                            what="node pin")
        member = expect_object(obj["member"], required=("id", "role", "label"),
                               what="node pin member")
        limits = obj["limits"]
        if not isinstance(limits, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in limits.items()):
            raise DecodeError("node pin: malformed limits")
        if not all(isinstance(member[k], str) for k in member) or not isinstance(obj["url"],
                                                                                  str):
            raise DecodeError("node pin: malformed member")
        card = load_card(dsse.Envelope.from_dict(obj["card"]), now=now, allow_expired=True)
        return cls(obj["url"], card, member["id"], member["role"], member["label"],
                   parse_time(obj["registered"], field="node pin registered"), dict(limits))


class Profile:
    """A profile directory, locked or not. Opening it needs the passphrase."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def keystore_path(self) -> Path:
        return self.home / KEYSTORE_FILE

    def exists(self) -> bool:
        return self.keystore_path.exists()

    def create(self, identity: Identity, passphrase: str, *,
               params: KdfParams | None = None) -> OpenProfile:
        """Write a new keystore. Raises :class:`ProfileExists`, or
        :class:`~keys.errors.InsecurePermissions` for a directory others can read."""
        ensure_private_dir(self.home)
        with self.locked():
            if self.exists():
                raise ProfileExists(self.home)
            unlocked = new_unlocked(identity)
            save_keystore(self.keystore_path, unlocked, passphrase,
                          params=params or kdf_params_from_env())
        return OpenProfile(self, unlocked)

    def open(self, passphrase: str, *, clock: Clock = SYSTEM_CLOCK) -> OpenProfile:
        """Raises :class:`NoProfile`, :class:`~keys.errors.WrongPassphrase`,
        :class:`~keys.errors.KeystoreCorrupt` or
        :class:`~keys.errors.InsecurePermissions`."""
        if not self.exists():
            raise NoProfile(self.home)
        return OpenProfile(self, load_keystore(self.keystore_path, passphrase, clock=clock),
                           clock=clock)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the profile's write lock (advisory, released on exit or crash)."""
        ensure_private_dir(self.home)
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def stored_kdf_params(self) -> KdfParams:
        """The parameters the keystore was written with (kept on re-encryption)."""
        try:
            obj = json_loads(self.keystore_path.read_bytes(), max_bytes=MAX_KEYSTORE_BYTES,
                             what="keystore")
            return KdfParams(int(obj["kdf"]["opslimit"]), int(obj["kdf"]["memlimit"]))
        except (DecodeError, KeyError, TypeError, ValueError):
            return kdf_params_from_env()


class OpenProfile:
    """An unlocked profile: the identity and the encrypted local store."""

    def __init__(self, profile: Profile, unlocked: Unlocked, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.profile = profile
        self.unlocked = unlocked
        self.clock = clock
        self.store = LocalStore(profile.home, unlocked.local_key)

    @property
    def identity(self) -> Identity:
        return self.unlocked.identity

    @property
    def home(self) -> Path:
        return self.profile.home

    def change_passphrase(self, current: str, new: str) -> None:
        """Encrypt the keystore under ``new`` (same keys, same KDF cost). The local
        store's key is inside the keystore, so nothing else is re-encrypted; copies
        of the keystore file made before still open with the old passphrase."""
        with self.profile.locked():
            change_passphrase(self.profile.keystore_path, current, new, clock=self.clock)

    def replace_identity(self, identity: Identity, passphrase: str) -> None:
        """Save a reissued card (same keys) into the keystore."""
        if identity.signing_key.public != self.identity.signing_key.public:
            raise ValueError("replace_identity keeps the same keys")
        unlocked = Unlocked(identity, self.unlocked.local_key)
        with self.profile.locked():
            save_keystore(self.profile.keystore_path, unlocked, passphrase,
                          params=self.profile.stored_kdf_params())
        self.unlocked = unlocked

    # --- contacts ----------------------------------------------------------------

    def contacts(self) -> ContactBook:
        data = self.store.read("contacts")
        if data is None:
            return ContactBook()
        try:
            return ContactBook.from_dict(data, now=self.clock.now())
        except DecodeError as exc:
            raise StoreCorrupt(f"the contact list is damaged ({exc})") from None

    def save_contacts(self, book: ContactBook) -> None:
        self.store.write("contacts", book.to_dict())

    @contextlib.contextmanager
    def editing_contacts(self) -> Iterator[ContactBook]:
        """Read, let the caller change, and write back the contact list under the lock
        (only if the block finishes without an exception)."""
        with self.profile.locked():
            book = self.contacts()
            yield book
            self.save_contacts(book)

    # --- the node ----------------------------------------------------------------

    def node_pin(self) -> NodePin | None:
        data = self.store.read("node")
        if data is None:
            return None
        try:
            return NodePin.from_dict(data, now=self.clock.now())
        except DecodeError as exc:
            raise StoreCorrupt(f"the saved node pin is damaged ({exc})") from None

    def require_node(self) -> NodePin:
        pin = self.node_pin()
        if pin is None:
            raise NotRegistered()
        return pin

    def save_node_pin(self, pin: NodePin) -> None:
        with self.profile.locked():
            self.store.write("node", pin.to_dict())

    # --- messages ----------------------------------------------------------------

    def message_data(self, envelope_id: str) -> Any | None:
        return self.store.read(f"messages/{envelope_id}")

    def message_record(self, envelope_id: str) -> Record | None:
        """The parsed record of a message sent or read (client.records), or None."""
        data = self.message_data(envelope_id)
        if data is None:
            return None
        try:
            return record_from_dict(data, now=self.clock.now())
        except BackchannelError as exc:
            raise MessageError(f"the local copy of {envelope_id} is damaged ({exc})"
                               ) from None

    def has_message(self, envelope_id: str) -> bool:
        """Whether a record is kept, without reading (decrypting) it."""
        return self.box_written("messages", envelope_id) is not None

    def save_message_data(self, envelope_id: str, data: Any) -> None:
        with self.profile.locked():
            self.store.write(f"messages/{envelope_id}", data)

    def message_ids(self) -> list[str]:
        return self.box_ids("messages")

    # --- other per-envelope boxes (client.resend) --------------------------------

    def box_data(self, folder: str, envelope_id: str) -> Any | None:
        return self.store.read(f"{folder}/{envelope_id}")

    def save_box(self, folder: str, envelope_id: str, data: Any) -> None:
        with self.profile.locked():
            self.store.write(f"{folder}/{envelope_id}", data)

    def drop_box(self, folder: str, envelope_id: str) -> None:
        with self.profile.locked():
            self.store.delete(f"{folder}/{envelope_id}")

    def box_written(self, folder: str, envelope_id: str) -> datetime | None:
        """When the box was last written (its file's modification time)."""
        try:
            mtime = self.store.path(f"{folder}/{envelope_id}").stat().st_mtime
        except FileNotFoundError:
            return None
        return datetime.fromtimestamp(mtime, tz=UTC)

    def box_ids(self, folder: str) -> list[str]:
        return [name.split("/", 1)[1] for name in self.store.names(folder)]
