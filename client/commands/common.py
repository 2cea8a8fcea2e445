"""What every sub-command shares: the profile location and the passphrase."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import aiohttp

from keys.clock import SYSTEM_CLOCK, Clock
from keys.passphrase import get_passphrase

from ..errors import ClientError, NoProfile
from ..profile import OpenProfile, Profile, default_home
from ..relay_client import RelayClient

T = TypeVar("T")

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: Files given on the command line are read with a bound (name lists are the largest).
MAX_INPUT_BYTES = 16 * 1024 * 1024 + 1


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("profile")
    group.add_argument("--home", type=Path, metavar="DIR",
                       help="profile directory (default: $BACKCHANNEL_HOME or ~/.backchannel)")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE",
                       help="read the passphrase from FILE (else $BACKCHANNEL_PASSPHRASE, "
                            "else a prompt)")
    return parent


def profile_of(args: argparse.Namespace) -> Profile:
    home: Path | None = args.home
    return Profile(home.expanduser() if home else default_home())


def open_profile(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> OpenProfile:
    return unlock(args, clock=clock)[0]


def unlock(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK
           ) -> tuple[OpenProfile, str]:
    """The open profile and the passphrase (for commands that re-save the keystore)."""
    profile = profile_of(args)
    if not profile.exists():
        raise NoProfile(profile.home)  # before asking for a passphrase
    passphrase = get_passphrase(args.passphrase_file)
    return profile.open(passphrase, clock=clock), passphrase


def read_input(path: str, *, max_bytes: int = MAX_INPUT_BYTES, what: str = "file") -> bytes:
    """Read a file named on the command line (``-`` is stdin), with a size bound."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ClientError(f"{what} {path} is too large (more than {max_bytes // 1024} KiB)")
    return data


def write_output(path: str, data: bytes, *, what: str = "file", private: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all: a new file renamed over the
    target, so a failed write leaves no partial file, an existing file's permissions
    are not inherited and a symbolic link at ``path`` is replaced, not followed.
    ``private`` files (decrypted names) are readable by their owner only; others get
    0644 less the umask."""
    target = Path(path)
    tmp: Path | None = None
    try:
        if _special(target):
            # A pipe, a terminal, /dev/stdout: there is no file to replace.
            with open(target, "wb") as handle:
                handle.write(data)
            return
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as handle:
            if not private:
                os.fchmod(handle.fileno(), 0o644 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ClientError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _special(path: Path) -> bool:
    """Whether ``path`` (followed) exists and is neither a regular file nor a directory."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def connected(opened: OpenProfile, url: str | None = None
                    ) -> AsyncIterator[RelayClient]:
    """A client for the profile's pinned node (or ``url`` before joining one)."""
    pin = None if url is not None else opened.require_node()
    async with aiohttp.ClientSession() as session:
        yield RelayClient(session, url or (pin.url if pin else ""), opened.identity,
                          node=pin.card if pin else None, clock=opened.clock)
