"""The ``backchannel`` command.

Sub-commands live in small modules; other packages contribute command groups
through the ``backchannel.commands`` entry-point group (the node's ``relay``
group comes from :mod:`relay.cli` that way), so this package never imports them.

Every error the user can cause ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from keys.errors import BackchannelError

ENTRY_POINT_GROUP = "backchannel.commands"

#: Exit codes: 1 for an error the user can fix, 2 for bad usage (argparse's own).
EXIT_ERROR = 1


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; contributed command groups are loaded only when ``argv`` may need
    them (help, or a command that is not one of ours), since importing the node's
    code costs half a second on every delegation command."""
    parser = argparse.ArgumentParser(
        prog="backchannel",
        description="End-to-end encrypted back-channel messaging with signed receipts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from . import demo
    from .commands import (
        contacts,
        identity,
        messages,
        namelist,
        negotiation,
        node,
        receipts,
        resend,
    )

    for module in (identity, contacts, node, messages, resend, receipts, namelist, negotiation,
                   demo):
        module.register(sub)
    first = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first in sub.choices:
        return parser
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


#: An envelope, statement or document id: 43 characters of unpadded base64url. One in
#: 64 begins with "-", which argparse would take for an option.
_DASH_ID = re.compile(r"-[A-Za-z0-9_-]{42}")


def protect_dash_ids(arguments: Sequence[str]) -> list[str]:
    """Rewrite the command line so that ids beginning with ``-`` reach argparse as
    values: ``--agreement -Ab…`` becomes ``--agreement=-Ab…``, and a positional
    ``-Ab…`` moves after a ``--`` at the end. No option is 43 characters long, so
    nothing else can match; a command line that already has ``--`` is left alone."""
    if "--" in arguments:
        return list(arguments)
    out: list[str] = []
    moved: list[str] = []
    for arg in arguments:
        if _DASH_ID.fullmatch(arg):
            if out and out[-1].startswith("--") and "=" not in out[-1]:
                out[-1] = f"{out[-1]}={arg}"
            else:
                moved.append(arg)
        else:
            out.append(arg)
    return [*out, "--", *moved] if moved else out


def main(argv: Sequence[str] | None = None) -> int:
    arguments = protect_dash_ids(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    try:
        result = args.func(args)
    except BackchannelError as exc:
        print(f"backchannel: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        # A file or socket problem not already turned into a BackchannelError.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"backchannel: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("backchannel: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
