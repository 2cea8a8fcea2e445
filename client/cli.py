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
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def flag_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The option strings, in every command, that take no value (``--json``)."""
    flags: set[str] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.option_strings and action.nargs == 0:
                flags.update(action.option_strings)
    return frozenset(flags)


def _takes_value(arg: str, flags: frozenset[str]) -> bool:
    """Whether ``arg`` is an option whose value is the next argument."""
    return (arg.startswith("-") and "=" not in arg and arg not in flags
            and not _DASH_ID.fullmatch(arg))


def protect_dash_ids(arguments: Sequence[str], flags: frozenset[str] = frozenset()
                     ) -> list[str]:
    """Rewrite the command line so that ids beginning with ``-`` reach argparse as
    values: ``--agreement -Ab…`` becomes ``--agreement=-Ab…``; when an id is a
    positional ``-Ab…``, every positional id moves after a ``--`` at the end, in its
    order (``resend ID1 -Ab… --json ID3`` becomes ``resend --json -- ID1 -Ab… ID3``:
    resend submits in the order given). No option is 43 characters long, so nothing
    else can match; a command line that already has ``--`` is left alone. ``flags``:
    options that take no value (``--json -Ab…`` is not a value)."""
    if "--" in arguments or not any(_DASH_ID.fullmatch(a) for a in arguments):
        return list(arguments)
    out: list[str] = []
    moved: list[str] = []
    previous: str | None = None
    for arg in arguments:
        value = previous is not None and _takes_value(previous, flags)
        if _DASH_ID.fullmatch(arg) and value and out and out[-1].startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
            previous = out[-1]
            continue
        if _DASH_ID.fullmatch(arg) or (_ID.fullmatch(arg) and not value):
            moved.append(arg)
        else:
            out.append(arg)
        previous = arg
    return [*out, "--", *moved] if moved else out


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    # The command is the first argument, which protect_dash_ids never changes: the
    # parser built for it serves both.
    parser = build_parser(given)
    arguments = protect_dash_ids(given, flag_options(parser))
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
