"""Where a passphrase comes from: a file, the environment, or a prompt.

Shared by the delegation CLI and the node's commands. The order is fixed and
documented: ``--passphrase-file`` first, then ``BACKCHANNEL_PASSPHRASE`` (for
automation), then an interactive prompt when there is a terminal.
"""

from __future__ import annotations

import getpass
import hmac
import os
import sys
import unicodedata
from pathlib import Path

from .errors import BackchannelError

ENV_VAR = "BACKCHANNEL_PASSPHRASE"
#: The new passphrase of ``backchannel passphrase`` and ``relay passphrase``, for
#: scripts (the current one still comes from :data:`ENV_VAR`).
NEW_ENV_VAR = "BACKCHANNEL_NEW_PASSPHRASE"
MAX_PASSPHRASE_FILE = 4096


class PassphraseUnavailable(BackchannelError):
    """No passphrase could be obtained without a terminal."""


#: Below this many characters a new passphrase draws a warning. The keystore's KDF
#: (Argon2id) slows each guess, but a short passphrase is still found offline by
#: whoever copies the file.
WEAK_BELOW = 12


def new_passphrase(passphrase_file: Path | None, *, current: str, prompt: str) -> str:
    """The replacement for ``current``: from ``--new-passphrase-file``, else
    :data:`NEW_ENV_VAR`, else a prompt asked twice. Refused when it is the same."""
    new = get_passphrase(passphrase_file, confirm=True, prompt=prompt, env_var=NEW_ENV_VAR,
                         file_option="--new-passphrase-file")
    # NFC, as the key derivation sees them: two spellings of one text are the same key.
    if hmac.compare_digest(unicodedata.normalize("NFC", new).encode("utf-8"),
                           unicodedata.normalize("NFC", current).encode("utf-8")):
        raise PassphraseUnavailable("the new passphrase is the one already in use")
    return new


def weakness(passphrase: str) -> str | None:
    """A warning for a new passphrase that is short, else None. Never quotes it."""
    if len(passphrase) >= WEAK_BELOW:
        return None
    return (f"this passphrase has only {len(passphrase)} characters: whoever copies the "
            f"key file can try short passphrases offline. Use {WEAK_BELOW} or more "
            "characters, e.g. four unrelated words (backchannel passphrase, or relay "
            "passphrase for a node, changes it)")


def get_passphrase(passphrase_file: Path | None = None, *, confirm: bool = False,
                   prompt: str = "Passphrase: ", env_var: str = ENV_VAR,
                   file_option: str = "--passphrase-file") -> str:
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
    env = os.environ.get(env_var)
    if env:
        return env
    if not sys.stdin.isatty():
        raise PassphraseUnavailable(
            f"no passphrase: use {file_option} FILE or set {env_var}, "
            "or run in a terminal")
    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseUnavailable("the passphrase must not be empty")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise PassphraseUnavailable("the two passphrases differ")
    return first
