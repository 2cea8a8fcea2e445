"""``backchannel resend``: submit a sent envelope again, the same bytes (client.resend)."""

from __future__ import annotations

import argparse
from typing import Any

from keys.encoding import format_time
from keys.errors import BackchannelError

from .. import resend, ui
from ..errors import ClientError
from ..messaging import check_envelope_id
from ..resend import Resent
from .common import SubParsers, common_options, connected, open_profile, run_async


def register(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "resend", parents=[common_options()],
        help="submit a message again, the same envelope, after an uncertain send",
        description="Submits the exact envelope sent before (this profile keeps a copy "
                    "until it expires). Use it when a send ended without the node's "
                    "answer, or when the node's operator restored it from a backup: the "
                    "node keeps one copy of an envelope, so the recipients get it once.")
    # Not an argparse group: a positional taking several values there refuses --all
    # alone. run_resend checks that exactly one of the two is given.
    parser.add_argument("id", metavar="ID", nargs="*",
                        help="the message's envelope id; several are submitted in the "
                             "order given (as a stopped command names them)")
    parser.add_argument("--all", action="store_true",
                        help="every message this profile keeps a copy of and the node "
                             "confirmed")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_resend, usage_error=parser.error)


def _outcome(resent: Resent) -> str:
    accepted = format_time(resent.accepted.at)
    if resent.new:
        return f"the node did not hold it and accepted it now, at {accepted}"
    return f"the node holds it (accepted at {accepted})"


def _json(resent: Resent) -> dict[str, Any]:
    return {"id": resent.record.routing.id, "new": resent.new, "confirmed": resent.confirmed,
            "accepted": format_time(resent.accepted.at)}


def run_resend(args: argparse.Namespace) -> int:
    if args.all and args.id:
        args.usage_error("name messages or give --all, not both")
    if not args.all and not args.id:
        args.usage_error("name the message to submit again (its envelope id), or give "
                         "--all")
    for envelope_id in args.id:
        check_envelope_id(envelope_id)
    opened = open_profile(args)
    dropped = resend.sweep(opened, deep=bool(args.all))
    unconfirmed: list[str] = []
    if args.all:
        ids, unconfirmed = resend.kept_ids(opened)
    else:
        ids = list(dict.fromkeys(args.id))
    stopped: list[BackchannelError] = []

    async def work() -> tuple[list[Resent], list[tuple[str, str]]]:
        done: list[Resent] = []
        failed: list[tuple[str, str]] = []
        async with connected(opened) as client:
            for envelope_id in ids:
                try:
                    with ui.Meter("uploading") as meter:
                        done.append(await resend.resend(opened, client, envelope_id,
                                                        upload=meter))
                except BackchannelError as exc:
                    failed.append((envelope_id, str(exc)))
                    if not args.all:
                        # Named messages go in order (a command's proposal before its
                        # disclosure): the first failure ends the run.
                        stopped.append(exc)
                        break
        return done, failed

    done, failed = run_async(work()) if ids else ([], [])
    if stopped and len(ids) == 1:
        raise stopped[0]
    if args.json:
        ui.print_json({"resent": [_json(r) for r in done],
                       "failed": [{"id": i, "error": e} for i, e in failed],
                       "not_tried": ids[len(done) + len(failed):] if stopped else [],
                       "unconfirmed": unconfirmed,
                       "expired_copies_removed": dropped})
    elif args.all or len(ids) > 1:
        if not ids and not unconfirmed:
            print("This profile keeps no message to submit again.")
        for resent in done:
            print(f"{resent.record.routing.id}: {_outcome(resent)}")
        for envelope_id, error in failed:
            print(f"{envelope_id}: FAILED: {error}")
        for envelope_id in unconfirmed:
            print(f"{envelope_id}: not confirmed by the node (its send ended without an "
                  f"answer, or a command stopped before submitting it); not submitted: "
                  f"run backchannel resend {envelope_id} if it must go")
    else:
        resent = done[0]
        print(f"Submitted again: {_outcome(resent)}.")
        if resent.confirmed:
            print("The node's acceptance is now kept with the message.")
        print("Follow it with: backchannel receipts ID")
        print(resent.record.routing.id)
    if stopped:
        failing, *after = ids[len(done):]
        before = f"{len(done)} of {len(ids)} submitted before it"
        if opened.box_written(resend.COPIES, failing) is not None:
            raise ClientError(f"message {failing} could not be submitted again ({before}); "
                              f"to go on from there: backchannel resend "
                              f"{' '.join((failing, *after))}")
        rest = (f"; the rest were not tried: backchannel resend {' '.join(after)}"
                if after else "")
        raise ClientError(f"message {failing} cannot be submitted again ({before}){rest}")
    if failed:
        raise ClientError(f"{len(failed)} of {len(ids)} messages could not be submitted "
                          "again (listed above)")
    return 0
