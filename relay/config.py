"""The node's configuration: ``relay.toml`` in the node directory, then environment
variables, then command-line flags (each layer overrides the one before).

Every key has one flat name, unique across sections, so that the environment
variable is always ``BACKCHANNEL_RELAY_`` + the key in upper case (for example
``BACKCHANNEL_RELAY_PORT=8443``, ``BACKCHANNEL_RELAY_DATABASE=postgresql+asyncpg://…``).
The defaults are the safe ones: loopback only, bounded sizes and rates.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from keys.seal import MAX_SEALED_BYTES

from .errors import ConfigError

CONFIG_FILE: Final = "relay.toml"
ENV_PREFIX: Final = "BACKCHANNEL_RELAY_"
MAX_CONFIG_BYTES: Final = 64 * 1024

#: Which section of relay.toml each key lives in (the file is grouped for humans).
SECTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "node": ("name", "url"),
    "server": ("host", "port", "database"),
    "limits": ("max_sealed_bytes", "max_json_bytes", "inbox_page_max", "signature_window",
               "ws_auth_timeout", "ws_unauthenticated_max", "ws_queue_max",
               "ws_recheck_seconds"),
    "rate": ("rate_per_second", "rate_burst"),
    "retention": ("acknowledged_retention_days", "receipt_retention_days",
                  "purge_interval_seconds"),
    "federation": ("federation_retry_seconds", "federation_retry_max_seconds",
                   "federation_timeout_seconds", "federation_poll_seconds"),
    "log": ("log_level", "log_format"),
}

_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RelayConfig:
    """Validated configuration. Build with :func:`load_config`."""

    # [node]
    name: str = ""
    url: str = ""
    # [server]
    host: str = "127.0.0.1"
    port: int = 8470
    #: Empty: SQLite file ``relay.db`` in the node directory.
    database: str = ""
    # [limits]
    #: A 100,000-name list seals to about 6 MB; 8 MiB leaves room for padding.
    max_sealed_bytes: int = 8 * 1024 * 1024
    #: Every request other than an envelope submission is a small JSON document.
    max_json_bytes: int = 64 * 1024
    inbox_page_max: int = 500
    #: RFC 9421 ``created`` must be within this many seconds of the node's clock.
    signature_window: int = 300
    ws_auth_timeout: float = 10.0
    #: WebSocket connections open at once that have not authenticated yet (anyone can
    #: open one; each holds a socket and about 20 KB until ``ws_auth_timeout``).
    ws_unauthenticated_max: int = 512
    #: Pushes queued for one slow WebSocket client before it is disconnected.
    ws_queue_max: int = 1000
    #: How often an open WebSocket session re-checks its membership (revocation).
    ws_recheck_seconds: float = 30.0
    # [rate]
    #: Token bucket per identity: sustained requests per second, and burst size.
    rate_per_second: float = 20.0
    rate_burst: int = 100
    # [retention]
    #: Sealed bytes are dropped this long after every recipient acknowledged.
    acknowledged_retention_days: float = 7.0
    #: Envelope metadata and receipts are deleted this long after expiry.
    receipt_retention_days: float = 90.0
    purge_interval_seconds: float = 600.0
    # [federation]
    #: First delay before retrying a peer that could not be reached; it doubles on
    #: each failure (with jitter) up to the maximum.
    federation_retry_seconds: float = 2.0
    #: Ten minutes: a peer that comes back is reached within that, and a peer that is
    #: down for days costs a few hundred attempts per envelope.
    federation_retry_max_seconds: float = 600.0
    #: Connect and read timeout of one push to a peer (a stalled read, not the total).
    federation_timeout_seconds: float = 30.0
    #: How often the outbox is checked when nothing woke it (work left by another
    #: process sharing PostgreSQL, or by a crash).
    federation_poll_seconds: float = 30.0
    # [log]
    log_level: str = "info"
    log_format: str = "json"

    def check(self) -> RelayConfig:
        """Raise :class:`ConfigError` naming the first invalid key; return ``self``."""
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ConfigError("url must start with https:// (or http:// for tests)")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be between 0 and 65535")
        if self.database and not self.database.startswith(("sqlite+aiosqlite://",
                                                           "postgresql+asyncpg://")):
            raise ConfigError("database must be a sqlite+aiosqlite:// or "
                              "postgresql+asyncpg:// URL")
        if not 1024 <= self.max_sealed_bytes <= MAX_SEALED_BYTES:
            raise ConfigError(f"max_sealed_bytes must be between 1024 and {MAX_SEALED_BYTES}")
        if not 4096 <= self.max_json_bytes <= 1024 * 1024:
            raise ConfigError("max_json_bytes must be between 4096 and 1048576")
        if not 1 <= self.inbox_page_max <= 10_000:
            raise ConfigError("inbox_page_max must be between 1 and 10000")
        if not 10 <= self.signature_window <= 3600:
            raise ConfigError("signature_window must be between 10 and 3600 seconds")
        if not 0 < self.ws_auth_timeout <= 300:
            raise ConfigError("ws_auth_timeout must be between 0 and 300 seconds")
        if not (math.isfinite(self.ws_recheck_seconds)
                and 0.05 <= self.ws_recheck_seconds <= 3600):
            raise ConfigError("ws_recheck_seconds must be between 0.05 and 3600")
        if not 1 <= self.ws_unauthenticated_max <= 1_000_000:
            raise ConfigError("ws_unauthenticated_max must be between 1 and 1000000")
        if not 1 <= self.ws_queue_max <= 1_000_000:
            raise ConfigError("ws_queue_max must be between 1 and 1000000")
        if not (math.isfinite(self.rate_per_second) and self.rate_per_second > 0):
            raise ConfigError("rate_per_second must be a positive number")
        if self.rate_burst < 1:
            raise ConfigError("rate_burst must be at least 1")
        for key in ("acknowledged_retention_days", "receipt_retention_days"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be zero or a positive number of days")
        if not (math.isfinite(self.purge_interval_seconds)
                and self.purge_interval_seconds >= 1):
            raise ConfigError("purge_interval_seconds must be at least 1")
        if not (math.isfinite(self.federation_retry_seconds)
                and 1 <= self.federation_retry_seconds <= 3600):
            raise ConfigError("federation_retry_seconds must be between 1 and 3600")
        if not (math.isfinite(self.federation_retry_max_seconds)
                and self.federation_retry_seconds <= self.federation_retry_max_seconds
                <= 86_400):
            raise ConfigError("federation_retry_max_seconds must be between "
                              "federation_retry_seconds and 86400")
        if not (math.isfinite(self.federation_timeout_seconds)
                and 1 <= self.federation_timeout_seconds <= 600):
            raise ConfigError("federation_timeout_seconds must be between 1 and 600")
        if not (math.isfinite(self.federation_poll_seconds)
                and 0.1 <= self.federation_poll_seconds <= 3600):
            raise ConfigError("federation_poll_seconds must be between 0.1 and 3600")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.log_format not in ("json", "text"):
            raise ConfigError("log_format must be json or text")
        return self


_TYPES: Final[dict[str, type]] = {f.name: type(f.default) for f in fields(RelayConfig)}
_KEY_SECTION: Final = {key: section for section, keys in SECTIONS.items() for key in keys}


def _coerce(key: str, value: Any, *, source: str) -> Any:
    want = _TYPES[key]
    if want is bool or isinstance(value, bool):
        raise ConfigError(f"{source}: {key} has the wrong type")
    if isinstance(value, str) and want is not str:
        try:
            value = want(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a {want.__name__}") from None
    if want is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, want):
        raise ConfigError(f"{source}: {key} must be a {want.__name__}")
    return value


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run `backchannel relay init` first") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key, value in table.items():
            if _KEY_SECTION.get(key) != section:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
            values[key] = _coerce(key, value, source=str(path))
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in _TYPES:
            # Only our own prefix is inspected, so a typo is an error, not silence.
            raise ConfigError(f"unknown environment variable {name}")
        values[key] = _coerce(key, value, source=name)
    return values


def load_config(node_dir: Path | None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                defaults: Mapping[str, Any] | None = None) -> RelayConfig:
    """``defaults`` (in place of the built-in ones; ``None`` values are ignored), then
    the file (if ``node_dir`` is given), then environment, then ``overrides`` (flags;
    ``None`` values are ignored). Raises :class:`ConfigError`."""
    values: dict[str, Any] = {key: value for key, value in (defaults or {}).items()
                              if value is not None}
    if node_dir is not None:
        values.update(_from_toml(node_dir / CONFIG_FILE))
    values.update(_from_env(os.environ if environ is None else environ))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, source=f"--{key.replace('_', '-')}")
    return replace(RelayConfig(), **values).check()


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return repr(value)


def render_config(config: RelayConfig) -> str:
    """The relay.toml written by ``relay init``: every key, with its value."""
    lines = ["# Backchannel relay node configuration. Every key can be overridden by an",
             "# environment variable BACKCHANNEL_RELAY_<KEY> and by command-line flags.",
             "# See docs/operator-guide.md for what each key means."]
    for section, keys in SECTIONS.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(getattr(config, key))}" for key in keys)
    return "\n".join(lines) + "\n"
