"""``backchannel receipts ID`` and ``backchannel verify FILE``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from keys.card import MAX_CARD_BYTES, Card, load_card
from keys.clock import SYSTEM_CLOCK
from keys.encoding import format_time
from keys.errors import BackchannelError

from .. import messaging, ui
from ..bundle import (
    BUNDLE_KIND,
    BundleReport,
    Check,
    verify_bundle,
    verify_single_statement,
)
from ..errors import BundleInvalid, ClientError
from ..namelist import shown
from ..records import SentRecord
from .common import (
    SubParsers,
    common_options,
    connected,
    open_profile,
    read_input,
    run_async,
    write_output,
)

MAX_BUNDLE_FILE = 4 * 1024 * 1024


def register(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "receipts", parents=[common_options()],
        help="show the signed receipts of a message; export them as a bundle",
        description="Fetches the statements the node holds for the message (accepted, "
                    "delivered, opened), verifies each against the keys you know, and "
                    "shows the timeline. --export writes a receipt bundle that anyone can "
                    "check offline with `backchannel verify FILE`.")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--json", action="store_true", help="print as JSON (see the user guide)")
    parser.add_argument("--export", metavar="FILE", help="write the receipt bundle to FILE")
    parser.add_argument("--offline", action="store_true",
                        help="use the receipts fetched last time; do not contact the node")
    parser.set_defaults(func=run_receipts)

    parser = sub.add_parser(
        "verify", help="check a receipt bundle (or one statement) offline",
        description="Checks every signature in a receipt bundle, that the statements name "
                    "the envelope and come from the right parties in a consistent order, "
                    "and that the file is exactly as exported. Needs no profile and no "
                    "network. Compare the fingerprints it prints with the ones you know.")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--card", action="append", default=[], metavar="CARD",
                        help="a card you trust: for a single statement, the signer's; for a "
                             "bundle, a party that must have signed in it (repeatable)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_verify)


# --- shared display --------------------------------------------------------------------

def _detail(kind: str, fields: dict[str, str], names: dict[str, str]) -> str:
    if kind == "accepted":
        return f"from {names.get(fields['sender'], fields['sender'])}"
    if kind == "delivered":
        recipient = fields["recipient"]
        return f"to {names.get(recipient, recipient)}"
    if kind == "opened":
        return f"digest {fields['inner'][:8]}…"
    if kind == "relayed":
        previous, nxt = fields["previous"], fields["next"]
        return f"{names.get(previous, previous)} → {names.get(nxt, nxt)}"
    if kind == "failed":
        return (f"next {names.get(fields['next'], fields['next'])}: "
                f"{shown(fields['reason'], newlines=False)}")
    return f"statement {fields.get('statement', '')[:12]}…"


def timeline_table(report: BundleReport, names: dict[str, str],
                   content: dict[str, bool] | None = None) -> Table:
    table = Table(header_style="bold")
    table.add_column("time", no_wrap=True)
    table.add_column("statement")
    table.add_column("signed by")
    table.add_column("detail")
    table.add_column("", no_wrap=True)
    for event in report.events:
        st = event.statement
        signer = names.get(st.by) or f"{event.signer.name} ({event.signer.role})"
        detail = _detail(st.kind, dict(st.fields), names)
        if content is not None and st.id in content:
            detail += ", matches what was sent" if content[st.id] else ", CONTENT DIFFERS"
        mark = Text("✓", style="green") if content is None or content.get(st.id, True) \
            else Text("✗", style="bold red")
        table.add_row(format_time(st.at), st.kind, Text(signer), Text(detail), mark)
    return table


def check_lines(checks: tuple[Check, ...]) -> list[Text]:
    return [Text(f"{'✓' if c.ok else '✗'} step {c.step}: {c.text}",
                 style="" if c.ok else "bold red") for c in checks]


def report_json(report: BundleReport, aliases: dict[str, str] | None = None
                ) -> dict[str, Any]:
    aliases = aliases or {}
    return {
        "id": report.envelope_id,
        "envelope": messaging.routing_summary(report.routing),
        "statements": [{"id": e.statement.id, "kind": e.statement.kind, "by": e.statement.by,
                        "by_name": e.signer.name, "by_alias": aliases.get(e.statement.by),
                        "at": format_time(e.statement.at), **dict(e.statement.fields)}
                       for e in report.events],
        "cards": [{"id": c.id, "name": c.name, "role": c.role, "fingerprint": c.fingerprint}
                  for c in report.cards.values()],
        "checks": [{"step": c.step, "ok": c.ok, "text": c.text} for c in report.checks],
        "ok": report.ok,
    }


# --- receipts --------------------------------------------------------------------------

def run_receipts(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> messaging.Receipts:
        if args.offline:
            return await messaging.receipts(opened, None, args.id)
        async with connected(opened) as client:
            return await messaging.receipts(opened, client, args.id)

    result = run_async(work())
    report = result.report
    if result.unknown_signers:
        ui.warn(f"{len(result.unknown_signers)} statement(s) left out: signed by keys this "
                "profile does not know, or not valid")
    for st in result.repeated:
        ui.warn(f"{result.names.get(st.by, st.by)} signed {st.kind} again at "
                f"{format_time(st.at)} (statement {st.id}): the first one is in the bundle. "
                "A node restored from a backup does this when a message is resubmitted")
    if args.export:
        write_output(args.export, result.bundle, what="bundle file")
    record = result.record
    recipients = list(record.routing.to)
    summary = {
        "accepted": report.has("accepted"),
        "delivered": [r for r in recipients if report.has("delivered", r)],
        "opened": [r for r in recipients if report.has("opened", r)],
    }
    if args.json:
        ui.print_json({**report_json(report, result.aliases), "summary": summary,
                       "content_matches": result.content_matches,
                       "repeated": [{"id": st.id, "kind": st.kind, "by": st.by,
                                     "at": format_time(st.at)} for st in result.repeated],
                       "bundle": args.export})
    else:
        console = ui.out()
        direction = "sent by you" if isinstance(record, SentRecord) else "received"
        to = ", ".join(result.names.get(r, r) for r in recipients)
        console.print(Text(f"Envelope {report.envelope_id} ({direction}, to {to})"))
        console.print(timeline_table(report, result.names, result.content_matches))
        for recipient in recipients:
            name = result.names.get(recipient, recipient)
            states = [k for k in ("delivered", "opened") if report.has(k, recipient)]
            console.print(Text(f"{name}: {', '.join(states) if states else 'not delivered yet'}"))
        for line in check_lines(report.checks):
            console.print(line)
        if args.export:
            console.print(f"Receipt bundle written to {args.export}; anyone can check it with "
                          f"backchannel verify {args.export}")
    report.raise_for_failure()
    if not all(result.content_matches.values()):
        raise BundleInvalid("an opened receipt names content other than what this profile "
                            "holds for the message")
    return 0


# --- verify ----------------------------------------------------------------------------

def _cards(paths: list[str]) -> list[Card]:
    cards = []
    for path in paths:
        data = read_input(path, max_bytes=4 * MAX_CARD_BYTES, what="card file")
        try:
            cards.append(load_card(data, now=SYSTEM_CLOCK.now(), allow_expired=True))
        except BackchannelError as exc:
            raise ClientError(f"{path} is not a usable identity card: {exc}") from None
    return cards


def run_verify(args: argparse.Namespace) -> int:
    data = read_input(args.file, max_bytes=MAX_BUNDLE_FILE, what="file")
    cards = _cards(args.card)
    from .negotiation import is_exported, verify_exported_file
    if is_exported(data):
        return verify_exported_file(args, data, cards)
    if BUNDLE_KIND.encode() not in data[:200] and b'"payloadType"' in data:
        statement = verify_single_statement(data, cards)
        st = statement.statement
        if args.json:
            ui.print_json({"statement": {"id": st.id, "kind": st.kind, "envelope": st.envelope,
                                         "by": st.by, "at": format_time(st.at),
                                         **dict(st.fields)},
                           "signer": {"name": statement.signer.name,
                                      "fingerprint": statement.signer.fingerprint},
                           "ok": True})
        else:
            print(f"✓ {st.kind} statement about envelope {st.envelope}, made "
                  f"{format_time(st.at)}, signed by {statement.signer.name} "
                  f"(fingerprint {statement.signer.fingerprint})")
        return 0
    report = verify_bundle(data, now=SYSTEM_CLOCK.now())
    signers = {e.statement.by for e in report.events} | (
        {report.sender.id} if report.sender else set())
    pinned = [Check(8, c.id in signers,
                    f"{c.name} ({c.fingerprint}) {'signed' if c.id in signers else 'DID NOT sign'}"
                    " in this bundle") for c in cards]
    report = BundleReport(report.envelope_id, report.routing, report.sender, report.cards,
                          report.events, (*report.checks, *pinned), report.rejected)
    if args.json:
        ui.print_json(report_json(report))
    else:
        console = ui.out()
        console.print(f"Receipt bundle for envelope {report.envelope_id}")
        parties = Table(header_style="bold", title="parties (compare the fingerprints with "
                                                   "the ones you know)")
        for column in ("role", "name", "id", "fingerprint"):
            parties.add_column(column, no_wrap=column in ("id", "fingerprint"))
        for card in report.cards.values():
            role = "sender" if report.sender and card.id == report.sender.id else card.role
            parties.add_row(role, Text(card.name), card.id, card.fingerprint)
        console.print(parties)
        names = {c.id: f"{c.name} ({c.role})" for c in report.cards.values()}
        console.print(timeline_table(report, names))
        for line in check_lines(report.checks):
            console.print(line)
    report.raise_for_failure()
    return 0
