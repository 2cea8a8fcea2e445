"""The node directory and the node's own identity.

Layout of ``--dir DIR`` (mode 0700)::

    relay.toml        configuration (see relay.config)
    node.keystore     the node's private keys (keys.keystore, passphrase-protected)
    node-card.json    the node's public identity card (exported by `relay card`)
    relay.db          the SQLite database, unless ``database`` names PostgreSQL
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keys.card import Card, HomeNode, load_card
from keys.clock import SYSTEM_CLOCK, Clock
from keys.errors import BackchannelError
from keys.files import atomic_write, ensure_private_dir
from keys.identity import Identity
from keys.keystore import KdfParams, load_keystore, new_unlocked, save_keystore
from keys.keystore import change_passphrase as change_keystore_passphrase

from .config import CONFIG_FILE, RelayConfig, render_config
from .errors import NodeDirError

KEYSTORE_FILE: Final = "node.keystore"
CARD_FILE: Final = "node-card.json"
#: Set to "floor" to write keystores with the fastest accepted Argon2id parameters
#: (tests and very small machines only).
KDF_ENV: Final = "BACKCHANNEL_KDF"


@dataclass(frozen=True)
class NodeDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def keystore(self) -> Path:
        return self.path / KEYSTORE_FILE

    @property
    def card(self) -> Path:
        return self.path / CARD_FILE

    def require(self) -> NodeDir:
        if not self.keystore.is_file() or not self.config.is_file():
            raise NodeDirError(f"{self.path} is not a relay node directory; "
                               "create one with `backchannel relay init`")
        return self


def kdf_params(floor: bool = False) -> KdfParams:
    from keys.keystore import FLOOR_PARAMS

    if floor or os.environ.get(KDF_ENV) == "floor":
        return FLOOR_PARAMS
    return KdfParams()


def create_node(node_dir: NodeDir, config: RelayConfig, passphrase: str, *,
                params: KdfParams, clock: Clock = SYSTEM_CLOCK) -> Identity:
    """Create the node key, card and relay.toml. Raises :class:`NodeDirError` if the
    directory already holds a node (never overwrite a node's key)."""
    if node_dir.keystore.exists() or node_dir.config.exists():
        raise NodeDirError(f"{node_dir.path} already holds a relay node")
    ensure_private_dir(node_dir.path)
    first = Identity.create(config.name, "node", clock=clock)
    # The card names the node's own URL (its "home"), which needs the id first.
    identity = first.reissue(home=HomeNode(first.id, config.url), clock=clock)
    save_keystore(node_dir.keystore, new_unlocked(identity), passphrase, params=params)
    atomic_write(node_dir.card, identity.card.to_json() + b"\n")
    atomic_write(node_dir.config, render_config(config).encode("utf-8"))
    return identity


def discard_node(node_dir: NodeDir) -> None:
    """Remove what :func:`create_node` wrote (its key, card and relay.toml), when the
    rest of ``relay init`` failed: nothing was ever served with that key."""
    for path in (node_dir.keystore, node_dir.card, node_dir.config):
        path.unlink(missing_ok=True)


def read_card(node_dir: NodeDir, *, clock: Clock = SYSTEM_CLOCK) -> Card:
    """The node's public card (no passphrase needed)."""
    try:
        data = node_dir.card.read_bytes()
    except FileNotFoundError:
        raise NodeDirError(f"{node_dir.card} is missing; is {node_dir.path} a node "
                           "directory?") from None
    try:
        return load_card(data, now=clock.now(), allow_expired=True)
    except BackchannelError as exc:
        raise NodeDirError(f"{node_dir.card} is not a valid card: {exc}") from None


def change_passphrase(node_dir: NodeDir, current: str, new: str) -> None:
    """Encrypt the node keystore under ``new`` (same key, same KDF cost); the caller
    has checked it with :func:`unlock`. A running node is unaffected: it read the
    key at start."""
    change_keystore_passphrase(node_dir.require().keystore, current, new)


def unlock(node_dir: NodeDir, passphrase: str, *, clock: Clock = SYSTEM_CLOCK) -> Identity:
    """Open the node keystore. Raises keystore errors (wrong passphrase...)."""
    node_dir.require()
    identity = load_keystore(node_dir.keystore, passphrase, clock=clock).identity
    if identity.card.role != "node":
        raise NodeDirError(f"{node_dir.keystore} does not hold a node identity")
    return identity
