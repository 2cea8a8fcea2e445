"""``backchannel contacts add|list|verify|remove``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table
from rich.text import Text

from keys.card import MAX_CARD_BYTES, load_card
from keys.encoding import format_time
from keys.errors import BackchannelError

from .. import ui
from ..contacts import (
    CHANGED,
    UNVERIFIED,
    VERIFIED,
    Contact,
    contact_safety_number,
    format_safety_number,
)
from ..errors import ContactError
from .common import SubParsers, common_options, open_profile, read_input

STATE_STYLE = {VERIFIED: "green", UNVERIFIED: "yellow", CHANGED: "bold red"}


def register(sub: SubParsers) -> None:
    common = common_options()
    contacts = sub.add_parser("contacts", help="the other parties' identity cards")
    csub = contacts.add_subparsers(dest="contacts_command", metavar="COMMAND")
    csub.required = True

    parser = csub.add_parser("add", parents=[common], help="add (or update) a contact's card")
    parser.add_argument("file", metavar="FILE", help="the card file they sent ('-' for stdin)")
    parser.add_argument("--alias", required=True,
                        help="a short name for this contact, e.g. RU or ICRC")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_add)

    parser = csub.add_parser("list", parents=[common], help="list contacts")
    parser.add_argument("--json", action="store_true", help="print as JSON (see the user guide)")
    parser.set_defaults(func=run_list)

    parser = csub.add_parser(
        "verify", parents=[common], help="show the safety number and mark the contact verified",
        description="Read the 60-digit safety number to the contact over a channel you trust "
                    "(phone, in person); when it matches on both screens, confirm.")
    parser.add_argument("alias", metavar="ALIAS")
    parser.add_argument("--yes", action="store_true",
                        help="confirm without asking (you compared the number already)")
    parser.set_defaults(func=run_verify)

    parser = csub.add_parser("remove", parents=[common], help="remove a contact")
    parser.add_argument("alias", metavar="ALIAS")
    parser.set_defaults(func=run_remove)


def contact_json(contact: Contact) -> dict[str, Any]:
    card = contact.card
    return {"alias": contact.alias, "id": card.id, "name": card.name, "role": card.role,
            "fingerprint": card.fingerprint, "state": contact.state,
            "expires": format_time(card.expires),
            "node": card.home.node if card.home else None,
            "added": format_time(contact.added)}


def run_add(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    now = opened.clock.now()
    data = read_input(args.file, max_bytes=4 * MAX_CARD_BYTES, what="card file")
    try:
        card = load_card(data, now=now)
    except BackchannelError as exc:
        raise ContactError(f"{args.file} is not a usable identity card: {exc}") from None
    with opened.editing_contacts() as book:
        result = book.add(args.alias, card, me=opened.identity.id, now=now)
    contact = result.contact
    if args.json:
        ui.print_json({"outcome": result.outcome, "contact": contact_json(contact)})
    elif result.outcome == "key-changed":
        ui.warn(f"the card for {args.alias!r} carries a DIFFERENT KEY than before. "
                f"Nothing will be sent to {args.alias} until you compare the new safety "
                f"number with them: backchannel contacts verify {args.alias}")
    else:
        verb = {"added": "Added", "updated": "Updated", "unchanged": "Already had"}[
            result.outcome]
        ui.out().print(Text(f"{verb} {contact.alias}: {card.name} ({card.role}), "
                            f"fingerprint {card.fingerprint}"))
        if contact.state != VERIFIED and card.role == "node":
            ui.out().print(f"A relay node: route through it with send --via {contact.alias}. "
                           "Not verified yet: compare its fingerprint with the node's "
                           f"operator, then run backchannel contacts verify {contact.alias}")
        elif contact.state != VERIFIED:
            ui.out().print(f"Not verified yet: compare the safety number with them, then run "
                           f"backchannel contacts verify {contact.alias}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    book = opened.contacts()
    if args.json:
        ui.print_json({"contacts": [contact_json(c) for c in book]})
        return 0
    if not len(book):
        ui.out().print("No contacts yet: backchannel contacts add FILE --alias ALIAS")
        return 0
    table = Table(header_style="bold")
    for column in ("alias", "name", "role", "state"):
        table.add_column(column, overflow="fold")
    table.add_column("fingerprint", no_wrap=True)
    for contact in book:
        table.add_row(contact.alias, Text(contact.card.name), contact.card.role,
                      Text(contact.state, style=STATE_STYLE[contact.state]),
                      contact.card.fingerprint)
    ui.out().print(table)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    contact = opened.contacts().get(args.alias)
    mine = opened.identity.card
    digits = contact_safety_number(mine, contact)
    console = ui.out()
    console.print(Text(f"Contact {contact.alias}: {contact.card.name} ({contact.card.role})"))
    if contact.state == CHANGED:
        console.print(Text("This contact's key CHANGED since it was added or verified.",
                           style="bold red"))
    console.print(f"  their fingerprint  {contact.card.fingerprint}")
    console.print(f"  your fingerprint   {mine.fingerprint}")
    console.print("Safety number (the same 60 digits must appear on both screens):")
    for line in format_safety_number(digits).splitlines():
        console.print(f"  {line}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ContactError("not confirmed: after comparing the safety number, run again "
                               "with --yes (or in a terminal)")
        answer = input(f"Does {contact.alias} read you exactly these digits? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise ContactError(f"not verified: {contact.alias} stays "
                               f"{contact.state}")
    with opened.editing_contacts() as book:
        if book.get(args.alias).card.id != contact.card.id:
            raise ContactError("the contact changed while you were comparing; run the "
                               "command again")
        book.verify(args.alias)
    console.print(f"{contact.alias} is now verified.")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    with opened.editing_contacts() as book:
        removed = book.remove(args.alias)
    ui.out().print(f"Removed {removed.alias}.")
    return 0
