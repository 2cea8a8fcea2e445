"""Where a passphrase comes from: a file, the environment, or a prompt.

Shared by the delegation CLI and the node's commands. The order is fixed and
documented: ``--passphrase-file`` first, then ``BACKCHANNEL_PASSPHRASE`` (for
automation), then an interactive prompt when there is a terminal.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from .errors import BackchannelError

ENV_VAR = "BACKCHANNEL_PASSPHRASE"
MAX_PASSPHRASE_FILE = 4096


class PassphraseUnavailable(BackchannelError):
    """No passphrase could be obtained without a terminal."""


def get_passphrase(passphrase_file: Path | None = None, *, confirm: bool = False,
                   prompt: str = "Passphrase: ") -> str:
    if passphrase_file is not None:
        try:
            with passphrase_file.open("rb") as handle:
                raw = handle.read(MAX_PASSPHRASE_FILE + 1)
        except OSError as exc:
            raise PassphraseUnavailable(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror}") from None
        if len(raw) > MAX_PASSPHRASE_FILE:
            raise PassphraseUnavailable("passphrase file is too large")
        try:
            # One trailing newline is what editors and `echo` add; it is not part of it.
            text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise PassphraseUnavailable("passphrase file is not UTF-8 text") from None
        if not text:
            raise PassphraseUnavailable("passphrase file is empty")
        return text
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    if not sys.stdin.isatty():
        raise PassphraseUnavailable(
            f"no passphrase: use --passphrase-file FILE or set {ENV_VAR}, "
            "or run in a terminal")
    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseUnavailable("the passphrase must not be empty")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise PassphraseUnavailable("the two passphrases differ")
    return first
