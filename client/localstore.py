"""The encrypted local store: contacts, the node pin and messages, at rest.

Everything the profile keeps besides the keystore lives in *boxes*: one file per
object, ``<name>.box``, written atomically with owner-only permissions
(:func:`keys.files.atomic_write`). A box is::

    b"BCLOCAL1" || nonce (24) || XSalsa20-Poly1305(key, {"v": 1, "name": "<name>", "data": ...})

with ``key = BLAKE2b-256(key=local_key, person="bc-local-store")`` and ``local_key``
the random key kept inside the keystore. The box names itself inside the encryption,
so a box copied over another one (or from another profile) is refused rather than
read as the wrong object. Nothing in the file names is secret: box names are fixed
words and envelope ids (hashes).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.secret

from keys.encoding import json_dumps, json_loads
from keys.errors import DecodeError
from keys.files import atomic_write, read_private

from .errors import StoreCorrupt

MAGIC: Final = b"BCLOCAL1"
#: A message box holds the signed inner message: up to 16 MiB of JSON in base64.
MAX_BOX_BYTES: Final = 48 * 1024 * 1024
_NAME_RE = re.compile(r"[a-z]+(?:/[A-Za-z0-9_-]{1,64})?", re.ASCII)
_PERSON = b"bc-local-store"


def _derive(local_key: bytes) -> bytes:
    return hashlib.blake2b(b"v1", key=local_key, person=_PERSON,
                           digest_size=nacl.secret.SecretBox.KEY_SIZE).digest()


class LocalStore:
    """Boxes under ``root``. Names are ``word`` or ``word/id`` (a sub-directory)."""

    def __init__(self, root: Path, local_key: bytes) -> None:
        self.root = root
        self._box = nacl.secret.SecretBox(_derive(local_key))

    def path(self, name: str) -> Path:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"bad box name {name!r}")
        return self.root / f"{name}.box"

    def write(self, name: str, data: Any) -> None:
        plain = json_dumps({"v": 1, "name": name, "data": data})
        atomic_write(self.path(name), MAGIC + bytes(self._box.encrypt(plain)))

    def read(self, name: str) -> Any | None:
        """The stored value, or ``None`` if there is no such box. Raises
        :class:`StoreCorrupt` for a damaged box or one that is not ``name``."""
        path = self.path(name)
        try:
            raw = read_private(path, max_bytes=MAX_BOX_BYTES)
        except FileNotFoundError:
            return None
        damaged = StoreCorrupt(f"the local file {path} is damaged or belongs to another "
                               "profile; restore it from a backup or delete it")
        if len(raw) > MAX_BOX_BYTES or not raw.startswith(MAGIC):
            raise damaged
        try:
            plain = self._box.decrypt(raw[len(MAGIC):])
            obj = json_loads(plain, max_bytes=MAX_BOX_BYTES, what="local file")
        except (nacl.exceptions.CryptoError, DecodeError):
            raise damaged from None
        if (not isinstance(obj, dict) or set(obj) != {"v", "name", "data"} or obj["v"] != 1
                or obj["name"] != name):
            raise damaged
        return obj["data"]

    def delete(self, name: str) -> None:
        """Remove a box (nothing if there is none)."""
        self.path(name).unlink(missing_ok=True)

    def names(self, folder: str) -> Iterator[str]:
        """Names of the boxes in ``folder`` (e.g. ``messages``), sorted."""
        directory = self.root / folder
        try:
            files = sorted(os.listdir(directory))
        except FileNotFoundError:
            return
        for file in files:
            if file.endswith(".box") and _NAME_RE.fullmatch(f"{folder}/{file[:-4]}"):
                yield f"{folder}/{file[:-4]}"
