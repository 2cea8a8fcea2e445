"""``backchannel namelist check FILE``: validate a list before sending it."""

from __future__ import annotations

import argparse

from keys.clock import SYSTEM_CLOCK

from .. import ui
from ..errors import BodyError
from ..namelist import load_namelist, render_table
from .common import SubParsers, read_input


def register(sub: SubParsers) -> None:
    group = sub.add_parser("namelist", help="work with name lists offline")
    nsub = group.add_subparsers(dest="namelist_command", metavar="COMMAND")
    nsub.required = True
    parser = nsub.add_parser(
        "check", help="check a CSV or JSON name list and show every problem",
        description="Reads the list exactly as send would, prints every problem with its "
                    "line number (exit status 1 if there is any), then the warnings.")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--show", action="store_true", help="print the list as a table")
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    data = read_input(args.file, what="list")
    try:
        parsed = load_namelist(data, args.file, today=SYSTEM_CLOCK.now().date())
    except BodyError as exc:
        for problem in exc.problems:
            print(problem)
        ui.note(f"{args.file}: {len(exc.problems)} problem(s); nothing was sent")
        return 1
    for warning in parsed.warnings:
        ui.warn(warning)
    if args.show:
        ui.out().print(render_table(parsed.namelist))
    print(f"{args.file}: {len(parsed.namelist):,} entries, no problems"
          + (f", {len(parsed.warnings)} warning(s)" if parsed.warnings else ""))
    return 0
