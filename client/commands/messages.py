"""``backchannel send``, ``inbox`` and ``read``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.table import Table
from rich.text import Text

from keys.encoding import format_time

from .. import messaging, resend, ui
from ..bodies import KINDS, Note, Other, decode, prepare
from ..errors import BodyError, ClientError
from ..messaging import Listed, Read
from ..namelist import NameList, render_table, to_csv, to_json, visible
from ..negotiation import KINDS as NEGOTIATION_KINDS
from ..negotiation import command_for
from ..profile import OpenProfile
from ..records import ReceivedRecord, Record, SentDraft, SentRecord
from ..relay_client import RelayClient
from .common import (
    SubParsers,
    common_options,
    connected,
    open_profile,
    read_input,
    run_async,
    write_output,
)
from .outbox import warn_interrupted

#: Warnings do not stop a send; past a screenful they only hide the result.
MAX_WARNINGS_SHOWN = 10


def register(sub: SubParsers) -> None:
    common = common_options()
    parser = sub.add_parser(
        "send", parents=[common], help="seal a name list or a note to contacts and send it",
        description="Reads FILE (a CSV or JSON name list, or a text note), signs and "
                    "encrypts it to every --to contact and submits it to your node. Prints "
                    "the envelope id (alone on the last line): the recipient reads it with "
                    "`backchannel read ID`, you follow it with `backchannel receipts ID`.")
    parser.add_argument("--to", action="append", required=True, metavar="ALIAS",
                        help="a contact (repeat for several recipients)")
    parser.add_argument("--via", action="append", default=[], metavar="NODE",
                        help="an intermediary node (a node card in your contacts) the message "
                             "must pass through; repeat in order: --via TR --via ICRC. The "
                             "route is signed into the envelope")
    parser.add_argument("--kind", choices=KINDS, default="namelist",
                        help="what FILE holds (default: namelist)")
    parser.add_argument("file", metavar="FILE", help="the file to send ('-' for stdin)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--allow-classical", action="store_true",
                        help="allow recipients whose cards have only X25519 keys (no "
                             "protection against a future quantum computer)")
    parser.set_defaults(func=run_send)

    parser = sub.add_parser("inbox", parents=[common],
                            help="list messages waiting for you on the node")
    parser.add_argument("--json", action="store_true",
                        help="print as JSON (with --watch: one JSON object per line)")
    parser.add_argument("--watch", action="store_true",
                        help="keep running and show new messages as they arrive "
                             "(WebSocket push, polling if unavailable)")
    parser.add_argument("--exit-after", type=int, metavar="N",
                        help="with --watch: stop after N new messages")
    parser.add_argument("--poll-interval", type=float, default=15.0, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    parser.add_argument("--local", action="store_true",
                        help="list the messages kept in this profile (sent and read), "
                             "without contacting the node")
    parser.set_defaults(func=run_inbox)

    parser = sub.add_parser(
        "read", parents=[common], help="open, verify and show a message",
        description="Fetches the message from the node the first time (then acknowledges it "
                    "with a signed 'opened' receipt) and from the encrypted local store "
                    "afterwards, also offline.")
    parser.add_argument("id", metavar="ID", help="the envelope id shown by inbox or send")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--out", metavar="FILE",
                        help="write the list (csv or json) to FILE, readable only by you")
    parser.add_argument("--bom", action="store_true",
                        help="with --format csv: start with a byte-order mark (for Excel)")
    parser.add_argument("--offline", action="store_true",
                        help="do not contact the node: only messages read before")
    parser.set_defaults(func=run_read)


# --- send ------------------------------------------------------------------------------

def run_send(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    data = read_input(args.file, what="file")
    # Everything that can be refused locally is refused before the node is contacted.
    outgoing = prepare(args.kind, data, args.file if args.file != "-" else "stdin",
                       today=opened.clock.now().date())
    for warning in outgoing.warnings[:MAX_WARNINGS_SHOWN]:
        ui.warn(warning)
    if len(outgoing.warnings) > MAX_WARNINGS_SHOWN:
        ui.warn(f"… and {len(outgoing.warnings) - MAX_WARNINGS_SHOWN} more warnings "
                f"(backchannel namelist check {args.file} shows them all)")
    book = opened.contacts()
    # One warning per alias: a repeated --to names one recipient, a repeated --via is
    # refused when the route is built.
    for alias in dict.fromkeys(args.to):
        contact = book.for_sending(alias, now=opened.clock.now())
        if contact.state != "verified":
            ui.warn(f"{alias} is not verified: compare the safety number with them "
                    f"(backchannel contacts verify {alias}); sending anyway")
    for alias in dict.fromkeys(args.via):
        node = book.for_routing(alias, now=opened.clock.now())
        if node.state != "verified":
            ui.warn(f"node {alias} is not verified: compare its fingerprint with its "
                    f"operator (backchannel contacts verify {alias}); sending anyway")

    async def work() -> messaging.Sent:
        async with connected(opened) as client:
            prepared = await messaging.prepare(opened, client, args.to, outgoing,
                                               allow_classical=args.allow_classical,
                                               via=args.via)
            try:
                with ui.Meter("uploading") as meter:
                    return await messaging.submit(opened, client, prepared, upload=meter)
            except (asyncio.CancelledError, KeyboardInterrupt):
                warn_interrupted(prepared.routing.id)
                raise

    sent = run_async(work())
    record = sent.record
    if args.json:
        ui.print_json({"id": record.routing.id, "kind": record.kind,
                       "summary": outgoing.summary(),
                       "to": [{"alias": a, "id": i} for a, i in record.recipients],
                       "size": record.routing.size,
                       "route": list(record.routing.route),
                       "accepted": format_time(record.accepted.at),
                       "expires": format_time(record.routing.expires), "new": sent.new})
        return 0
    to = ", ".join(a for a, _ in record.recipients)
    via = f" via {', '.join(args.via)}" if args.via else ""
    print(f"Sent {outgoing.summary()} to {to}{via}: sealed {record.routing.size:,} bytes, "
          f"accepted by the node at {format_time(record.accepted.at)}.")
    print("Follow it with: backchannel receipts ID")
    print(record.routing.id)
    return 0


# --- inbox -----------------------------------------------------------------------------

def listed_json(listed: Listed) -> dict[str, Any]:
    item = listed.item
    return {"id": item.id, "cursor": item.cursor,
            "from": {"id": item.routing.sender,
                     "alias": listed.sender.alias if listed.sender else None,
                     "name": listed.sender.card.name if listed.sender else None,
                     "trust": listed.trust},
            "to": list(item.routing.to), "size": item.size,
            "received": format_time(item.received),
            "created": format_time(item.routing.created),
            "expires": format_time(item.routing.expires)}


def _from_text(listed: Listed) -> Text:
    if listed.sender is None:
        return Text(f"{listed.item.routing.sender[:12]}… (unknown sender)", style="yellow")
    style = {"verified": "", "unverified": "yellow"}.get(listed.trust, "bold red")
    label = listed.sender.alias if listed.trust == "verified" else \
        f"{listed.sender.alias} ({listed.trust})"
    return Text(label, style=style)


def inbox_table(items: list[Listed]) -> Table:
    table = Table(header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("from", min_width=8)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("received", no_wrap=True)
    for listed in items:
        table.add_row(listed.item.id, _from_text(listed), f"{listed.item.size:,}",
                      format_time(listed.item.received))
    return table


def local_json(opened: OpenProfile, record: Record | SentDraft, *,
               confirmed: bool = True) -> dict[str, Any]:
    contacts = opened.contacts()

    def alias(identity_id: str) -> str | None:
        contact = contacts.by_id(identity_id)
        return contact.alias if contact else None

    kind, _ = _kind_and_body(record)
    routing = record.routing
    return {"id": routing.id, "direction": "in" if isinstance(record, ReceivedRecord) else "out",
            "kind": kind, "from": {"id": routing.sender, "alias": alias(routing.sender)},
            "to": [{"id": r, "alias": alias(r)} for r in routing.to],
            "created": format_time(routing.created),
            # False: the send ended without the node's answer (backchannel resend ID).
            "confirmed": confirmed}


def run_local(args: argparse.Namespace, opened: OpenProfile) -> int:
    entries = sorted(
        [*(local_json(opened, r) for r in messaging.local_messages(opened)),
         *(local_json(opened, d, confirmed=False) for d in resend.unconfirmed(opened))],
        key=lambda entry: entry["created"])
    if args.json:
        ui.print_json({"messages": entries})
        return 0
    if not entries:
        print("No messages kept in this profile yet.")
        return 0
    table = Table(header_style="bold")
    table.add_column("id", no_wrap=True)
    for column in ("", "kind", "with", "created"):
        table.add_column(column, no_wrap=column == "created")
    for entry in entries:
        out = entry["direction"] == "out"
        people = entry["to"] if out else [entry["from"]]
        names = ", ".join(p["alias"] or f"{p['id'][:12]}…" for p in people)
        direction = "from" if not out else "sent to" if entry["confirmed"] else \
            "UNCONFIRMED, to"
        table.add_row(entry["id"], direction, entry["kind"], Text(names), entry["created"])
    ui.out().print(table)
    if not all(e["confirmed"] for e in entries):
        ui.warn("UNCONFIRMED: the send ended without the node's answer; backchannel resend "
                "ID settles it")
    return 0


def run_inbox(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    if args.local:
        if args.watch:
            raise ClientError("--local lists what this profile keeps; it cannot --watch")
        return run_local(args, opened)
    if args.exit_after is not None and (not args.watch or args.exit_after < 1):
        raise ClientError("--exit-after N needs --watch and N of at least 1")

    async def work() -> list[Listed]:
        async with connected(opened) as client:
            items = await messaging.inbox(opened, client)
            if not args.watch:
                return items
            _show_inbox(args, items, watching=True)
            await _watch(args, opened, client, after=max((i.item.cursor for i in items),
                                                         default=0))
            return []

    items = run_async(work())
    if not args.watch:
        _show_inbox(args, items, watching=False)
    return 0


def _show_inbox(args: argparse.Namespace, items: list[Listed], *, watching: bool) -> None:
    if args.json:
        if watching:
            for listed in items:
                ui.print_json_line(listed_json(listed))
        else:
            ui.print_json({"messages": [listed_json(x) for x in items]})
        return
    if items:
        ui.out().print(inbox_table(items))
        if not watching:
            print("Read one with: backchannel read ID")
    elif not watching:
        print("No new messages.")


async def _watch(args: argparse.Namespace, opened: OpenProfile,
                 client: RelayClient, *, after: int) -> None:
    def on_mode(mode: str) -> None:
        text = {"push": "watching for new messages (push); Ctrl-C to stop",
                "poll": "the node's push channel is unavailable: checking every "
                        f"{args.poll_interval:g} s",
                "unreachable": "the node is unreachable; retrying"}[mode]
        ui.note(text)

    count = 0
    async for item in client.watch(after=after, poll_interval=args.poll_interval,
                                   on_mode=on_mode):
        if await messaging.settle_redelivery(opened, client, item.id):
            continue
        listed = messaging.describe_item(opened, item)
        if args.json:
            ui.print_json_line(listed_json(listed))
        else:
            line = Text(f"new message {item.id} from ")
            line.append_text(_from_text(listed))
            line.append(f", {item.size:,} bytes, {format_time(item.received)}")
            ui.out().print(line)
        count += 1
        if args.exit_after is not None and count >= args.exit_after:
            return


# --- read ------------------------------------------------------------------------------

def run_read(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> Read:
        if args.offline:
            return await messaging.read(opened, None, args.id)
        local = opened.message_record(messaging.check_envelope_id(args.id))
        if isinstance(local, SentRecord) or (isinstance(local, ReceivedRecord) and local.acked):
            return await messaging.read(opened, None, args.id)
        async with connected(opened) as client:
            with ui.Meter("downloading") as meter:
                return await messaging.read(opened, client, args.id, download=meter)

    result = run_async(work())
    for notice in result.notices:
        ui.warn(notice)
    show_message(args, result)
    return 0


def _kind_and_body(record: Record | SentDraft) -> tuple[str, Any]:
    if isinstance(record, ReceivedRecord):
        return record.message.kind, record.message.body
    return record.kind, record.body


def describe_sender(result: Read) -> str:
    record = result.record
    if isinstance(record, SentRecord):
        return "you"
    if result.contact is None:
        return f"{record.sender.name!r} (not in your contacts)"
    state = "" if result.contact.state == "verified" else f", {result.contact.state}"
    return f"{result.contact.alias} ({record.sender.name}{state})"


def show_message(args: argparse.Namespace, result: Read) -> None:
    record = result.record
    kind, raw_body = _kind_and_body(record)
    body = decode(kind, raw_body)
    created = format_time(record.routing.created)
    header = f"{kind} from {describe_sender(result)}, signed {created}, envelope " \
             f"{record.routing.id}"
    if isinstance(body, NameList):
        if args.format == "table" and not args.out:
            console = ui.out()
            console.print(Text(header))
            console.print(render_table(body, title=f"{len(body):,} entries"))
            return
        if args.format == "csv":
            data, defused = to_csv(body, bom=args.bom)
            if defused:
                ui.warn(f"{defused} cell(s) began like a spreadsheet formula and were "
                        "prefixed with ' so that opening the file runs nothing")
        else:
            data = to_json(body)
        _emit(args, data, header, f"{len(body):,} entries")
        return
    if isinstance(body, Note):
        if args.format == "csv":
            raise BodyError(["a note has no CSV form: use --format table or json"])
        if args.format == "json":
            _emit(args, (json.dumps(body.to_body(), ensure_ascii=False, indent=1) + "\n"
                         ).encode(), header, f"{len(body.text):,} characters")
            return
        if args.out:
            _emit(args, body.text.encode("utf-8"), header, f"{len(body.text):,} characters")
            return
        ui.out().print(Text(header))
        ui.out().print(visible(body.text))
        return
    _emit_other(args, body, header)


def _emit_other(args: argparse.Namespace, body: Other, header: str) -> None:
    kind = body.kind
    if kind in NEGOTIATION_KINDS and args.format == "table" and not args.out:
        # Signed JSON with base64 payloads helps no officer; the negotiation commands
        # check and show it.
        ui.out().print(Text(header))
        print(f"This is a negotiation {kind}; see it with {command_for(kind, body.body)}. "
              "(--format json prints the signed document itself.)")
        return
    _emit(args, (json.dumps(body.body, ensure_ascii=False, indent=1) + "\n").encode(),
          header, f"a {kind} (shown as JSON: this version does not interpret it)")


def _emit(args: argparse.Namespace, data: bytes, header: str, summary: str) -> None:
    if args.out:
        write_output(args.out, data, what="output file", private=True)
        print(f"{header}\n{summary} written to {args.out}")
    else:
        ui.note(header)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
