"""Negotiation commands: ``propose``, ``counter``, ``accept``, ``reject``,
``countersign``, ``thread`` (with ``--export`` for offline verification), ``disclose``
and ``disclosed``, ``handover record|sign|export``, and ``reconcile`` (offline).

``handover record`` locates every person of the transferred file in the agreed lists
(ours, or disclosed to us with the proposal: either delegation can record). Rows the
matcher cannot place with confidence are refused, naming each row and its candidates,
until an officer settles them (``--settle ROW=ALIAS:N``, ``ROW=unlisted:ALIAS[:CAT]``,
``ROW=skip``, or ``--settle-file``); an unlisted person is recorded by a salted entry
digest whose salt stays in this profile (box ``negentries/<digest>``).

Documents travel as sealed messages of the kinds in :mod:`client.negotiation`, one
message per destination node (``--via`` routes them like ``send --via``). A command
that needs the other side's documents first opens the new messages in the inbox: the
node cannot tell a proposal from a name list (both are sealed), so each new message
from a contact is opened once; negotiation documents are stored and acknowledged as
``backchannel read`` would, any other kind is left unacknowledged in the inbox for
``read`` and remembered (box ``negskipped``) so that it is not opened again.

``reconcile LIST_A LIST_B`` reads two name lists exactly as ``send`` would
(:func:`client.namelist.load_namelist`) and prints the suggestions of
:func:`client.reconcile.reconcile`: matched pairs with a confidence, ambiguous
entries with their candidates, and entries without a match. The names are shown on
this terminal only; nothing is sent or stored.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from keys import dsse
from keys.agreement import (
    Agreement,
    accept_proposal,
    agreement_status,
    confirm_agreement,
    countersign_agreement,
)
from keys.card import Card
from keys.clock import SYSTEM_CLOCK
from keys.cosigning import SignatureStatus
from keys.ed25519 import VerifyKey
from keys.encoding import format_time, json_loads, parse_time
from keys.errors import BackchannelError, PolicyNotMet
from keys.exported import bundle_kind, export_agreement, export_handover, verify_exported
from keys.handover import (
    HandoverCheck,
    HandoverRecord,
    check_handover,
    countersign_handover,
    handover_status,
    make_handover,
    sign_handover,
)
from keys.listref import (
    SaltedList,
    check_list,
    make_disclosure,
    parse_disclosure,
    salt_list,
)
from keys.negotiation_errors import ListMismatch
from keys.proposal import CATEGORIES, Counts, Decision, Proposal, Terms, Transfer, make_proposal
from keys.thread import Thread, counter, reject

from .. import messaging, ui
from ..bodies import Outgoing
from ..errors import BodyError, BundleInvalid, ClientError
from ..handover_draft import (
    AgreedList,
    Draft,
    agreed_lists,
    describe,
    parse_settlements,
    settle_lines,
)
from ..handover_draft import draft as make_draft
from ..namelist import NameList, encode_body, from_body, load_namelist, shown, to_csv
from ..negotiation import (
    KINDS,
    Collected,
    check_disclosure,
    collect,
    handover_of,
    known_keys,
    outgoing,
    salted_list,
    save_entry,
    save_salted,
    save_skipped,
    skipped,
)
from ..profile import OpenProfile
from ..reconcile import Reconciliation, reconcile
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
from .outbox import send_document, sending


def _via_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--via", action="append", default=[], metavar="NODE",
                        help="an intermediary node the documents must pass through, as "
                             "with send --via (repeat in order: --via TR --via ICRC); a "
                             "recipient on one of these nodes is reached by the route up "
                             "to it")
    return parent


def register(sub: SubParsers) -> None:
    common = common_options()
    via = _via_options()
    parser = sub.add_parser(
        "propose", parents=[common, via], help="propose an exchange to another delegation",
        description="Salts and digests both name lists (the names never leave this "
                    "profile), signs the terms and sends the proposal to the other "
                    "delegation and to every guarantor.")
    parser.add_argument("--to", required=True, metavar="ALIAS",
                        help="the other delegation (a contact)")
    parser.add_argument("--guarantor", action="append", default=[], metavar="ALIAS",
                        help="a guarantor who must co-sign the agreement (repeatable)")
    parser.add_argument("--quorum", type=int, metavar="N",
                        help="only N of the guarantors need to co-sign (default: all)")
    parser.add_argument("--give", required=True, metavar="FILE",
                        help="the name list of those you hand over (CSV or JSON)")
    parser.add_argument("--receive", required=True, metavar="FILE",
                        help="the name list of those you receive (CSV or JSON)")
    parser.add_argument("--give-as", default="pow", choices=CATEGORIES, metavar="CATEGORY",
                        help=f"category of everyone in --give ({', '.join(CATEGORIES)}; "
                             "default pow)")
    parser.add_argument("--receive-as", default="pow", choices=CATEGORIES,
                        metavar="CATEGORY", help="category of everyone in --receive")
    parser.add_argument("--place", required=True, metavar="TEXT")
    parser.add_argument("--window", required=True, metavar="FROM/TO",
                        help="dates (YYYY-MM-DD, UTC) or RFC 3339 times")
    parser.add_argument("--expires", metavar="WHEN",
                        help="when the offer lapses (default: in 3 days, or when the "
                             "window ends if sooner)")
    parser.add_argument("--text", metavar="FILE", help="conditions, as UTF-8 text")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the lists and terms and show them; sign and send nothing")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_propose)

    parser = sub.add_parser(
        "counter", parents=[common, via], help="answer a proposal with changed terms",
        description="Signs a counter-proposal that supersedes the thread's last message. "
                    "Terms not given are kept from the latest proposal; --give and "
                    "--receive are from your side.")
    parser.add_argument("id", metavar="ID", help="the proposal answered (its thread's last)")
    parser.add_argument("--give", metavar="FILE")
    parser.add_argument("--receive", metavar="FILE")
    parser.add_argument("--give-as", default="pow", choices=CATEGORIES, metavar="CATEGORY")
    parser.add_argument("--receive-as", default="pow", choices=CATEGORIES,
                        metavar="CATEGORY")
    parser.add_argument("--place", metavar="TEXT")
    parser.add_argument("--window", metavar="FROM/TO")
    parser.add_argument("--expires", metavar="WHEN",
                        help="default: in 3 days, or when the window ends if sooner")
    parser.add_argument("--text", metavar="FILE", help="new conditions, as UTF-8 text")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_counter)

    parser = sub.add_parser(
        "reject", parents=[common, via], help="reject the latest proposal (closes the thread)")
    parser.add_argument("id", metavar="ID", help="the proposal id")
    parser.add_argument("--reason", required=True, metavar="TEXT")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_reject)

    parser = sub.add_parser(
        "accept", parents=[common, via], help="accept the latest proposal of a thread",
        description="Checks the whole thread, signs an acceptance and the agreement "
                    "(the exact bytes of the proposal) and sends both to the proposer "
                    "and the guarantors.")
    parser.add_argument("id", metavar="ID", help="the proposal id (backchannel thread)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_accept)

    parser = sub.add_parser(
        "countersign", parents=[common, via], help="sign an agreement as a party or guarantor",
        description="The proposer confirms an accepted agreement; a guarantor co-signs "
                    "the same bytes once both parties have signed. The signed copy goes "
                    "to every other party and guarantor.")
    parser.add_argument("id", metavar="ID", help="the agreement id or its proposal's id")
    parser.add_argument("--after-expiry", action="store_true",
                        help="confirm an acceptance although your proposal has expired "
                             "(its date is the acceptor's to write: only if you know it "
                             "reached you in time)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_countersign)

    parser = sub.add_parser(
        "thread", parents=[common], help="a negotiation as a timeline",
        description="Every proposal and decision of the thread, in order, checked "
                    "(signatures, chain of digests, expiry), and the agreement's "
                    "signatures present and missing.")
    parser.add_argument("id", metavar="ID", help="any message id of the thread, or the "
                                                 "agreement id")
    parser.add_argument("--export", metavar="FILE",
                        help="write the agreement and thread for backchannel verify FILE")
    parser.add_argument("--offline", action="store_true",
                        help="do not fetch new messages first")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_thread)

    group = sub.add_parser("handover", help="record who was actually handed over")
    hsub = group.add_subparsers(dest="handover_command", metavar="COMMAND")
    hsub.required = True
    parser = hsub.add_parser(
        "record", parents=[common, via], help="draft and sign a handover record",
        description="Finds every person of FILE in the agreed lists (as reconcile does) "
                    "and records them by list digest and position, signs the record and "
                    "sends it to the other delegation and the witnesses. Either "
                    "delegation can record (each holds both lists: its own, and the "
                    "other's as disclosed with the proposal). A row that is ambiguous or "
                    "on no list must be settled: --settle ROW=ALIAS:N (entry N of the "
                    "lists ALIAS hands over; 'me' for yours), ROW=unlisted:ALIAS[:CATEGORY] "
                    "(handed over by ALIAS without being listed) or ROW=skip.")
    parser.add_argument("--agreement", required=True, metavar="ID")
    parser.add_argument("--transferred", required=True, metavar="FILE",
                        help="name list of those actually handed over, both directions")
    parser.add_argument("--place", required=True, metavar="TEXT")
    parser.add_argument("--at", metavar="WHEN", help="time of the handover (default: now)")
    parser.add_argument("--witness", action="append", default=[], metavar="ALIAS")
    parser.add_argument("--notes", default="", metavar="TEXT")
    parser.add_argument("--settle", action="append", default=[], metavar="ROW=DECISION",
                        help="settle row ROW (1-based, as namelist check counts) of FILE by "
                             "hand: ALIAS:N, unlisted:ALIAS[:CATEGORY] or skip (repeatable)")
    parser.add_argument("--settle-file", metavar="FILE",
                        help="decisions, one ROW=DECISION a line ('#' starts a comment)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show where each row goes and the differences from the "
                             "agreement; sign and send nothing")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_handover_record)
    parser = hsub.add_parser("sign", parents=[common, via],
                             help="the other delegation signs a handover record")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_handover_sign)
    parser = hsub.add_parser("export", parents=[common],
                             help="write a handover record for backchannel verify FILE")
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--out", required=True, metavar="FILE")
    parser.add_argument("--offline", action="store_true")
    parser.set_defaults(func=run_handover_export)

    parser = sub.add_parser(
        "disclose", parents=[common, via], help="disclose an agreed list to a guarantor",
        description="Sends one of the agreement's name lists with its salt, sealed to "
                    "ALIAS only, so that its digest in the agreement opens for them "
                    "(backchannel disclosed ID checks it on their side). Guarantors "
                    "otherwise see counts and digests, never names. The other delegation "
                    "receives both lists with each proposal; disclosing to it again "
                    "re-sends one.")
    parser.add_argument("--agreement", required=True, metavar="ID",
                        help="the agreement id or its proposal's id")
    parser.add_argument("--list", required=True, choices=("give", "receive"),
                        help="the list you hand over (give) or receive")
    parser.add_argument("--to", required=True, metavar="ALIAS",
                        help="a guarantor of these terms, or the other party (no one else)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_disclose)

    parser = sub.add_parser(
        "disclosed", parents=[common], help="the lists disclosed to you, checked",
        description="Every list of the agreement (or proposal) ID that a party disclosed "
                    "to you, checked against the digest and count in the signed terms: "
                    "a list that does not open its digest is refused.")
    parser.add_argument("id", metavar="ID", help="the agreement id or a proposal id")
    parser.add_argument("--out", metavar="FILE",
                        help="also write the list (CSV, readable only by you) to FILE, e.g. "
                             "for backchannel reconcile; with several lists, pick one "
                             "with --giver")
    parser.add_argument("--giver", metavar="ALIAS",
                        help="with --out: the list handed over by this contact (me: by you)")
    parser.add_argument("--bom", action="store_true",
                        help="with --out: start with a byte-order mark (for Excel)")
    parser.add_argument("--offline", action="store_true",
                        help="do not fetch new messages first")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_disclosed)

    parser = sub.add_parser(
        "reconcile", help="match two name lists written in different scripts",
        description="Suggests which entries of LIST_A and LIST_B name the same person "
                    "(Cyrillic and Latin renderings, typos, swapped names, missing dates). "
                    "Matched pairs carry a confidence in [0, 1]; ambiguous entries need an "
                    "officer's decision. Nothing is sent.")
    parser.add_argument("list_a", metavar="LIST_A", help="CSV or JSON name list")
    parser.add_argument("list_b", metavar="LIST_B", help="CSV or JSON name list")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (entry numbers are 1-based)")
    parser.add_argument("--out", metavar="FILE",
                        help="also write the JSON result to FILE (readable by you only)")
    parser.set_defaults(func=run_reconcile)


def _load(path: str) -> NameList:
    data = read_input(path, what="list")
    try:
        return load_namelist(data, path, today=SYSTEM_CLOCK.now().date()).namelist
    except BodyError as exc:
        first = exc.problems[0] if exc.problems else "malformed"
        more = f" (and {len(exc.problems) - 1} more; see namelist check)" \
            if len(exc.problems) > 1 else ""
        raise ClientError(f"{path}: {first}{more}") from None


def result_json(result: Reconciliation, left: NameList, right: NameList) -> dict[str, Any]:
    """The result with 1-based entry numbers (as ``namelist check`` counts lines of
    people) and the entries themselves, so the file stands on its own."""
    def pair(m: Any) -> dict[str, Any]:
        return {"a": m.left + 1, "b": m.right + 1, "confidence": round(m.confidence, 3),
                "reasons": list(m.reasons), "entry_a": left.entries[m.left].to_dict(),
                "entry_b": right.entries[m.right].to_dict()}
    return {
        "v": 1,
        "counts": {"a": len(left), "b": len(right), "matched": len(result.matched),
                   "ambiguous": len(result.ambiguous),
                   "unmatched_a": len(result.unmatched_left),
                   "unmatched_b": len(result.unmatched_right)},
        "matched": [pair(m) for m in result.matched],
        "ambiguous": [{"a": a.left + 1, "entry_a": left.entries[a.left].to_dict(),
                       "candidates": [pair(c) for c in a.candidates]}
                      for a in result.ambiguous],
        "unmatched_a": [{"a": i + 1, "entry_a": left.entries[i].to_dict()}
                        for i in result.unmatched_left],
        "unmatched_b": [{"b": j + 1, "entry_b": right.entries[j].to_dict()}
                        for j in result.unmatched_right],
    }


def run_reconcile(args: argparse.Namespace) -> int:
    left, right = _load(args.list_a), _load(args.list_b)
    result = reconcile([e.to_dict() for e in left.entries],
                       [e.to_dict() for e in right.entries])
    document = result_json(result, left, right)
    if args.out:
        write_output(args.out, (json.dumps(document, ensure_ascii=False, indent=1) + "\n"
                                ).encode(), what="result", private=True)
    if args.json:
        ui.print_json(document)
        return 0
    console = ui.out()
    console.print(f"Matched ({len(result.matched)}):", markup=False)
    for m in result.matched:
        console.print(f"  A{m.left + 1} {describe(left.entries[m.left].to_dict())}  =  "
                      f"B{m.right + 1} {describe(right.entries[m.right].to_dict())}  "
                      f"{m.confidence:.2f}  [{'; '.join(m.reasons)}]", markup=False)
    console.print(f"Ambiguous, for an officer to decide ({len(result.ambiguous)}):",
                  markup=False)
    for a in result.ambiguous:
        console.print(f"  A{a.left + 1} {describe(left.entries[a.left].to_dict())}", markup=False)
        for c in a.candidates:
            console.print(f"      ? B{c.right + 1} {describe(right.entries[c.right].to_dict())}  "
                          f"{c.confidence:.2f}  [{'; '.join(c.reasons)}]", markup=False)
    console.print(f"Only in {args.list_a} ({len(result.unmatched_left)}): "
                  + ", ".join(f"A{i + 1}" for i in result.unmatched_left), markup=False)
    console.print(f"Only in {args.list_b} ({len(result.unmatched_right)}): "
                  + ", ".join(f"B{j + 1}" for j in result.unmatched_right), markup=False)
    return 0


# --- propose / accept / countersign / thread ----------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def parse_when(value: str, *, field: str, end_of_day: bool = False) -> datetime:
    """An RFC 3339 time, or a date (UTC; the end of that day when ``end_of_day``)."""
    text = value.strip()
    if _DATE.fullmatch(text):
        text += "T23:59:59Z" if end_of_day else "T00:00:00Z"
    try:
        return parse_time(text, field=field)
    except BackchannelError:
        raise ClientError(f"{field} {value[:40]!r} is not a date (YYYY-MM-DD) or an RFC 3339 "
                          "time") from None


def parse_window(value: str) -> tuple[datetime, datetime]:
    start, sep, end = value.partition("/")
    if not sep:
        raise ClientError("--window is FROM/TO, e.g. 2026-12-01/2026-12-03")
    return (parse_when(start, field="--window start"),
            parse_when(end, field="--window end", end_of_day=True))


def _counts(category: str, entries: int) -> Counts:
    return Counts(**{category: entries})


def _names(opened: OpenProfile) -> dict[str, str]:
    names = {c.card.id: c.alias for c in opened.contacts()}
    names[opened.identity.id] = "you"
    return names


async def _fetch_new(opened: OpenProfile, client: RelayClient) -> None:
    """Open the new inbox messages of contacts; keep and acknowledge the negotiation
    documents only (see the module doc). Messages of unknown senders are left for
    ``backchannel read``, which shows who the node says they are."""
    done = skipped(opened)
    left: set[str] = set()
    for listed in await messaging.inbox(opened, client):
        ident = listed.item.routing.id
        if ident in done:
            left.add(ident)
            continue
        if listed.sender is None or listed.trust == "BAD SIGNATURE":
            continue
        try:
            await messaging.read(opened, client, ident, kinds=KINDS)
        except messaging.OtherKind:
            left.add(ident)
        except BackchannelError as exc:
            ui.warn(f"message {ident} could not be read: {exc}")
    if left != done:
        # Only ids still pending: the box stays as small as the inbox.
        save_skipped(opened, left)


def _disclose_to(opened: OpenProfile, about: str, recipient: str,
                 lists: Sequence[SaltedList]) -> Outgoing:
    """A disclosure message: ``lists`` with their salts, signed for ``recipient`` only."""
    envelopes = [make_disclosure(opened.identity.signing_key, salted, to=recipient,
                                 clock=opened.clock).envelope for salted in lists]
    return outgoing("disclosure", f"{len(lists)} disclosed list(s) of {about}",
                    about=about, disclosures=envelopes)


def _collect(opened: OpenProfile) -> Collected:
    found = collect(messaging.local_messages(opened), known_keys(opened))
    for what in found.damaged:
        ui.warn(f"{what} (ignored)")
    return found


def run_propose(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    now = opened.clock.now()
    book = opened.contacts()
    other = book.for_sending(args.to, now=now)
    guarantors = [book.for_sending(alias, now=now) for alias in args.guarantor]
    window_from, window_to = parse_window(args.window)
    expires = (parse_when(args.expires, field="--expires", end_of_day=True) if args.expires
               else default_expiry(now, window_to))
    give = _load(args.give)
    receive = _load(args.receive)
    conditions = ""
    if args.text:
        try:
            conditions = read_input(args.text, max_bytes=64 * 1024, what="text").decode()
        except UnicodeDecodeError:
            raise ClientError(f"{args.text} is not UTF-8 text") from None
    salted_give = salt_list(encode_body(give), len(give))
    salted_receive = salt_list(encode_body(receive), len(receive))
    me = opened.identity.id
    terms = Terms(
        parties=(me, other.card.id),
        transfers=(Transfer(me, other.card.id, (salted_give.ref(),),
                            _counts(args.give_as, len(give))),
                   Transfer(other.card.id, me, (salted_receive.ref(),),
                            _counts(args.receive_as, len(receive)))),
        place=args.place, window_from=window_from, window_to=window_to, expires=expires,
        conditions=conditions, guarantors=tuple(g.card.id for g in guarantors),
        quorum=args.quorum)
    proposal = make_proposal(opened.identity.signing_key, terms, clock=opened.clock)
    summary = (f"{len(give):,} for {len(receive):,} at {args.place}, "
               f"{format_time(window_from)} to {format_time(window_to)}; the offer "
               f"expires {format_time(expires)}")
    if args.dry_run:
        # Checked as for real (lists, contacts, terms), then dropped: the proposal was
        # signed in memory only, and no salt is kept.
        who = ", ".join(args.guarantor) or "none"
        if args.json:
            ui.print_json({"kind": "proposal", "dry_run": True, "to": other.card.id,
                           "guarantors": [g.card.id for g in guarantors],
                           "give": len(give), "receive": len(receive), "place": args.place,
                           "window": [format_time(window_from), format_time(window_to)],
                           "expires": format_time(expires)})
            return 0
        print(f"Would propose to {args.to}: {summary}. Guarantors: {who}. Both lists "
              f"would be disclosed to {args.to}.")
        print("Dry run: nothing was signed or sent.")
        return 0
    save_salted(opened, salted_give)
    save_salted(opened, salted_receive)

    async def work() -> tuple[list[str], list[str]]:
        async with connected(opened) as client:
            async with sending(opened, client) as box:
                sent = await box.add([*terms.parties, *terms.guarantors],
                                     outgoing("proposal", f"proposal {proposal.id}",
                                              proposal=proposal.envelope), args.via)
                # The other delegation gets both lists (see client.negotiation).
                disclosed = await box.add([other.card.id], _disclose_to(
                    opened, proposal.id, other.card.id, [salted_give, salted_receive]),
                    args.via)
            return sent, disclosed

    envelope_ids, disclosed = run_async(work())
    return _report_sent(args, "proposal", proposal.id, envelope_ids,
                        f"Proposed: {summary}. Both lists are disclosed to "
                        f"{args.to} (message {', '.join(disclosed)}).",
                        {"disclosed": disclosed})


def default_expiry(now: datetime, window_to: datetime) -> datetime:
    """Three days to answer, but never past the handover window's end (an acceptance
    after it could not be kept)."""
    return min(now + timedelta(days=3), window_to)


def _report_sent(args: argparse.Namespace, what: str, ident: str, envelope_ids: list[str],
                 summary: str, extra: dict[str, Any] | None = None) -> int:
    if args.json:
        ui.print_json({"kind": what, "id": ident,
                       "message": envelope_ids[0] if envelope_ids else None,
                       "messages": envelope_ids, **(extra or {})})
        return 0
    print(summary)
    if envelope_ids:
        print(f"Sent as message{'s' if len(envelope_ids) > 1 else ''} "
              f"{', '.join(envelope_ids)}.")
    print(f"{what.capitalize()} id: {ident}")
    return 0


def _conditions(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return read_input(path, max_bytes=64 * 1024, what="text").decode()
    except UnicodeDecodeError:
        raise ClientError(f"{path} is not UTF-8 text") from None


def run_counter(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    now = opened.clock.now()
    changes: dict[str, Any] = {}
    if args.expires:
        changes["expires"] = parse_when(args.expires, field="--expires", end_of_day=True)
    if args.window:
        changes["window_from"], changes["window_to"] = parse_window(args.window)
    if args.place:
        changes["place"] = args.place
    conditions = _conditions(args.text)
    if conditions is not None:
        changes["conditions"] = conditions
    lists = [(side, _load(path), category) for side, path, category in
             (("give", args.give, args.give_as), ("receive", args.receive, args.receive_as))
             if path]
    me = opened.identity

    async def work() -> tuple[Proposal, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            thread = found.thread_of(args.id)
            if isinstance(thread.latest, Proposal) and thread.latest.id != args.id:
                raise ClientError(f"{args.id} is not the last message of its thread "
                                  f"({thread.latest.id} is): answer that one")
            latest = thread.latest_proposal
            transfers = list(latest.terms.transfers)
            salted = []
            for side, namelist, category in lists:
                s_list = salt_list(encode_body(namelist), len(namelist))
                salted.append(s_list)
                for i, t in enumerate(transfers):
                    if (t.giver == me.id) == (side == "give"):
                        transfers[i] = Transfer(t.giver, t.receiver, (s_list.ref(),),
                                                _counts(category, len(namelist)))
            terms = replace(latest.terms, transfers=tuple(transfers), **changes)
            if not args.expires:
                terms = replace(terms, expires=default_expiry(now, terms.window_to))
            proposal, thread = counter(thread, me.signing_key, terms, clock=opened.clock)
            for s_list in salted:
                save_salted(opened, s_list)
            async with sending(opened, client) as box:
                sent = await box.add([*terms.parties, *terms.guarantors],
                                     outgoing("proposal", f"counter-proposal {proposal.id}",
                                              proposal=proposal.envelope), args.via)
                if salted:
                    other = terms.other_party(me.id)
                    sent += await box.add([other], _disclose_to(opened, proposal.id, other,
                                                                salted), args.via)
            return proposal, sent

    proposal, envelope_id = run_async(work())
    return _report_sent(args, "proposal", proposal.id, envelope_id,
                        f"Counter-proposal sent; it supersedes {args.id}.",
                        {"supersedes": args.id})


def run_reject(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> tuple[Decision, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            thread = found.thread_of(args.id)
            decision, thread = reject(thread, args.id, opened.identity.signing_key,
                                      args.reason, clock=opened.clock)
            proposal = thread.find(args.id)
            assert isinstance(proposal, Proposal)  # reject checked it
            sent = await send_document(
                opened, client, [*proposal.terms.parties, *proposal.terms.guarantors],
                outgoing("rejection", f"rejection of {args.id}", rejection=decision.envelope),
                args.via)
            return decision, sent

    decision, envelope_id = run_async(work())
    return _report_sent(args, "rejection", decision.id, envelope_id,
                        "Rejected; the negotiation is closed.", {"proposal": args.id})


def run_accept(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> tuple[Agreement, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            thread = found.thread_of(args.id)
            decision, thread, agreement = accept_proposal(
                thread, args.id, opened.identity.signing_key, clock=opened.clock)
            proposal = thread.find(args.id)
            assert isinstance(proposal, Proposal)  # accept_proposal checked it
            sent = await send_document(
                opened, client, [proposal.author, *agreement.terms.guarantors],
                outgoing("acceptance", f"acceptance of {args.id}",
                         acceptance=decision.envelope, agreement=agreement.envelope),
                args.via)
            return agreement, sent

    agreement, envelope_id = run_async(work())
    return _report_sent(args, "agreement", agreement.id, envelope_id,
                        "Accepted; you signed the agreement. The proposer confirms it with "
                        "backchannel countersign, then the guarantors co-sign.",
                        {"proposal": args.id})


def run_countersign(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> tuple[str, str, SignatureStatus, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            keys = found.keys
            if found.has_handover(args.id):
                record, agreed, status = countersign_handover_record(opened, client, found,
                                                                     args.id)
                sent = await send_document(
                    opened, client, [*agreed.terms.parties, *record.witnesses],
                    outgoing("handover", f"handover record {record.id}",
                             handover=record.envelope, agreement=agreed.envelope), args.via)
                return "handover record", record.id, status, sent
            agreement = found.agreement(args.id, keys)
            me = opened.identity
            thread: Thread | None = None
            if me.id in agreement.terms.parties:
                thread = found.thread_of(agreement.proposal_id)
                agreement = confirm_agreement(agreement, thread, me.signing_key, keys,
                                              clock=opened.clock,
                                              after_expiry=args.after_expiry)
            else:
                agreement = countersign_agreement(agreement, me.signing_key, keys)
            status = agreement_status(agreement, keys)
            envelopes = list(thread.envelopes()) if thread else []
            sent = await send_document(
                opened, client, [*agreement.terms.parties, *agreement.terms.guarantors],
                outgoing("agreement", f"agreement {agreement.id}",
                         agreement=agreement.envelope, thread=envelopes), args.via)
            return "agreement", agreement.id, status, sent

    names = _names(opened)
    try:
        what, ident, status, envelope_id = run_async(work())
    except PolicyNotMet as exc:
        # keys names signers by id; the officer knows them by alias.
        text = str(exc)
        for signer in sorted(exc.missing | exc.present, key=len, reverse=True):
            if signer in names:
                text = text.replace(signer, names[signer])
        raise PolicyNotMet(text, exc.present, exc.missing) from None
    state = "complete" if status.complete else (
        f"missing {', '.join(names.get(i, i) for i in status.missing)}")
    return _report_sent(args, what, ident, envelope_id,
                        f"Signed. Signatures: {len(status.present)} present; {state}.",
                        {"signatures": status.to_dict()})


def _warn_disputed(found: Collected, ident: str, names: Mapping[str, str]) -> None:
    """Signatures left out of a merge because copies disagree under a key this profile
    does not know: the officer can settle it by adding that signer's card."""
    for signer in sorted(found.disputed.get(ident, ())):
        ui.warn(f"the signature of {names.get(signer, signer)} on {ident[:12]}… arrived in "
                "copies that differ, so at least one is forged; it is left out. To keep the "
                "genuine one, add that signer's card and compare its fingerprint "
                "(backchannel contacts add FILE), or, if it is a contact whose key changed, "
                "verify the new key (backchannel contacts verify ALIAS)")


def _timeline(thread: Thread, names: dict[str, str], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for number, message in enumerate(thread.messages, start=1):
        row: dict[str, Any] = {"n": number, "id": message.id, "kind": message.kind,
                               "author": message.author,
                               "author_alias": names.get(message.author),
                               "created": format_time(message.created)}
        if isinstance(message, Proposal):
            terms = message.terms
            row.update({"supersedes": message.supersedes, "place": terms.place,
                        "window": [format_time(terms.window_from),
                                   format_time(terms.window_to)],
                        "expires": format_time(terms.expires),
                        "transfers": [{"from": t.giver, "to": t.receiver,
                                       "entries": t.counts.total,
                                       "counts": {c: t.counts.get(c) for c in CATEGORIES},
                                       "lists": [r.digest for r in t.lists]}
                                      for t in terms.transfers],
                        "guarantors": list(terms.guarantors), "quorum": terms.quorum,
                        "conditions": terms.conditions})
        elif isinstance(message, Decision):
            row.update({"proposal": message.proposal, "reason": message.reason})
        rows.append(row)
    return rows


def _read_documents(args: argparse.Namespace
                    ) -> tuple[OpenProfile, Collected, Mapping[str, VerifyKey]]:
    """The profile and every negotiation document in it, after fetching new ones from
    the node unless ``--offline``."""
    opened = open_profile(args)
    if not args.offline:
        async def work() -> None:
            async with connected(opened) as client:
                await _fetch_new(opened, client)
        run_async(work())
    found = _collect(opened)
    return opened, found, found.keys


def run_thread(args: argparse.Namespace) -> int:
    opened, found, keys = _read_documents(args)
    agreement: Agreement | None = None
    ident = args.id
    if ident not in found.messages:
        agreement = found.agreement(ident, keys)
        ident = agreement.proposal_id
    thread = found.thread_of(ident)
    if agreement is None:
        agreement = found.agreement_of_thread(thread, keys)
    now = opened.clock.now()
    names = _names(opened)
    status = agreement_status(agreement, keys) if agreement else None
    if args.export:
        if agreement is None:
            raise ClientError("this thread has no agreement to export yet")
        write_output(args.export, export_agreement(agreement, keys.values(), thread) + b"\n",
                     what="export")
    timeline = _timeline(thread, names, now)
    if args.json:
        ui.print_json({"thread": thread.id, "state": thread.state(now).value,
                       "messages": timeline,
                       "agreement": None if agreement is None else {
                           "id": agreement.id, "proposal": agreement.proposal_id,
                           "signatures": status.to_dict() if status else None,
                           "disputed": sorted(found.disputed.get(agreement.id, ()))}})
        return 0
    print(f"Thread {thread.id}: {thread.state(now).value}")
    for row in timeline:
        who = row["author_alias"] or row["author"]
        line = f"  {row['n']}. {row['created']}  {row['kind']:<10} by {who}  {row['id']}"
        print(line)
        if row["kind"] == "proposal":
            for t in row["transfers"]:
                counts = ", ".join(f"{c} {n}" for c, n in t["counts"].items() if n)
                print(f"       {names.get(t['from'], t['from'])} -> "
                      f"{names.get(t['to'], t['to'])}: {t['entries']} ({counts})")
            print(f"       at {shown(row['place'], newlines=False)}, {row['window'][0]} to "
                  f"{row['window'][1]}; expires {row['expires']}")
        elif row.get("reason"):
            print(f"       reason: {shown(row['reason'], newlines=False)}")
    if agreement is not None and status is not None:
        print(f"Agreement {agreement.id}: "
              + ("complete" if status.complete else "incomplete"))
        print("  signed by: " + (", ".join(names.get(i, i) for i in status.present) or "-"))
        if status.missing:
            print("  missing:   " + ", ".join(names.get(i, i) for i in status.missing))
        _warn_disputed(found, agreement.id, names)
    if args.export:
        print(f"Exported to {args.export}: check it with backchannel verify {args.export}")
    return 0


# --- backchannel verify FILE, for exported agreements and handover records -----------

def is_exported(data: bytes) -> bool:
    """Whether ``verify`` should read ``data`` as an exported agreement or record."""
    try:
        return bundle_kind(data) is not None
    except BackchannelError:
        return False


def verify_exported_file(args: argparse.Namespace, data: bytes, cards: Sequence[Card]
                         ) -> int:
    """Offline: every check, and the signatures present and missing. Cards given with
    ``--card`` are pinned (their key must be the one in the file) and name the ids."""
    report = verify_exported(data, pinned={c.id: c.verify_key for c in cards})
    names = {c.id: f"{c.name} ({c.role})" for c in cards}
    if args.json:
        ui.print_json(report.to_dict())
    else:
        for line in report.lines(names):
            print(line)
    if not report.ok:
        first = report.failures()[0]
        raise BundleInvalid(f"{args.file}: {first.name}"
                            + (f": {first.detail}" if first.detail else ""))
    return 0


# --- handover record / sign / export -------------------------------------------------

def _agreed_lists(opened: OpenProfile, found: Collected, agreement: Agreement
                  ) -> list[AgreedList]:
    """Every agreed list, opened with the salt we hold. Raises :class:`ClientError`
    when one is neither ours nor disclosed to us."""
    opened_lists: dict[str, list[dict[str, Any]]] = {}
    for ref in (r for t in agreement.terms.transfers for r in t.lists):
        salted = salted_list(opened, found, ref.digest, agreement.terms)
        if salted is None:
            raise ClientError(f"this profile holds neither the salt of the agreed list "
                              f"{ref.digest[:12]}… nor a disclosure of it: ask the "
                              "delegation that made it to record the handover, or to "
                              "disclose the list to you")
        check_list(ref.digest, salted.salt, salted.data)
        entries = [e.to_dict() for e in from_body(json_loads(
            salted.data, max_bytes=len(salted.data), what="list")).entries]
        if len(entries) != ref.entries:
            raise ClientError(f"the agreed list {ref.digest[:12]}… has {len(entries)} "
                              f"entries, not the {ref.entries} agreed")
        opened_lists[ref.digest] = entries
    return agreed_lists(agreement.terms, opened_lists)


def _party_aliases(opened: OpenProfile, agreement: Agreement) -> dict[str, str]:
    """Party id -> the alias an officer types (``me`` for us)."""
    book = opened.contacts()
    out = {}
    for party in agreement.terms.parties:
        contact = book.by_id(party)
        if party == opened.identity.id:
            out[party] = "me"
        elif contact is not None:
            out[party] = contact.alias
    return out


def _settle_lines(path: str) -> list[str]:
    try:
        return settle_lines(read_input(path, max_bytes=1024 * 1024,
                                       what="settlements").decode())
    except UnicodeDecodeError:
        raise ClientError(f"{path} is not UTF-8 text") from None


def run_handover_record(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    transferred = _load(args.transferred)
    at = parse_when(args.at, field="--at") if args.at else opened.clock.now()
    book = opened.contacts()
    witnesses = [book.for_sending(a, now=opened.clock.now()).card.id for a in args.witness]
    settle = list(args.settle) + (_settle_lines(args.settle_file) if args.settle_file else [])

    async def work() -> tuple[HandoverRecord, HandoverCheck, Draft, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            keys = found.keys
            agreement = found.agreement(args.agreement, keys)
            aliases = _party_aliases(opened, agreement)
            decisions = parse_settlements(settle, len(transferred),
                                          {a.lower(): i for i, a in aliases.items()},
                                          agreement.terms)
            lists = _agreed_lists(opened, found, agreement)
            draft = make_draft(lists, [e.to_dict() for e in transferred.entries], decisions,
                               aliases)
            record = make_handover(opened.identity.signing_key, agreement, place=args.place,
                                   at=at, delivered=draft.delivered, unlisted=draft.unlisted,
                                   witnesses=witnesses, notes=args.notes, clock=opened.clock)
            check = check_handover(record, agreement)
            if args.dry_run:
                return record, check, draft, []
            for digest, salt, data in draft.entry_salts:
                save_entry(opened, digest, salt, data)
            sent = await send_document(
                opened, client, [*agreement.terms.parties, *witnesses],
                outgoing("handover", f"handover record {record.id}", handover=record.envelope,
                         agreement=agreement.envelope), args.via)
            return record, check, draft, sent

    record, check, draft, envelope_ids = run_async(work())
    if args.json and args.dry_run:
        ui.print_json({"kind": "handover record", "dry_run": True, "check": check.to_dict()})
        return 0
    if not args.json:
        print(f"Placed ({len(draft.placements)} rows of {args.transferred}):")
        for line in draft.placements:
            print(line)
        for line in check.lines(_names(opened)):
            print(line)
    if args.dry_run:
        print("Dry run: nothing was signed or sent.")
        return 0
    return _report_sent(args, "handover record", record.id, envelope_ids,
                        "Recorded and signed; the other delegation signs with backchannel "
                        "handover sign, then the witnesses countersign.",
                        {"check": check.to_dict()})


def _handover_and_agreement(opened: OpenProfile, found: Collected, ident: str
                            ) -> tuple[HandoverRecord, Agreement]:
    record = handover_of(found, ident, found.keys)
    return record, found.agreement(record.agreement, found.keys)


def run_handover_sign(args: argparse.Namespace) -> int:
    opened = open_profile(args)

    async def work() -> tuple[HandoverRecord, HandoverCheck, list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            record, agreement = _handover_and_agreement(opened, _collect(opened), args.id)
            record = sign_handover(record, agreement, opened.identity.signing_key)
            check = check_handover(record, agreement)
            sent = await send_document(
                opened, client, [*agreement.terms.parties, *record.witnesses],
                outgoing("handover", f"handover record {record.id}", handover=record.envelope,
                         agreement=agreement.envelope), args.via)
            return record, check, sent

    record, check, envelope_id = run_async(work())
    if not args.json:
        for line in check.lines(_names(opened)):
            print(line)
    return _report_sent(args, "handover record", record.id, envelope_id, "Signed.",
                        {"check": check.to_dict()})


def countersign_handover_record(opened: OpenProfile, client: RelayClient, found: Collected,
                                ident: str) -> Any:
    """``countersign ID`` for a handover record: a witness's countersignature."""
    keys = found.keys
    record, agreement = _handover_and_agreement(opened, found, ident)
    record = countersign_handover(record, agreement, opened.identity.signing_key, keys)
    return record, agreement, handover_status(record, agreement, keys)


def run_handover_export(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    if not args.offline:
        async def work() -> None:
            async with connected(opened) as client:
                await _fetch_new(opened, client)
        run_async(work())
    found = _collect(opened)
    record, agreement = _handover_and_agreement(opened, found, args.id)
    keys = found.keys
    try:
        thread: Thread | None = found.thread_of(agreement.proposal_id)
    except ClientError:
        thread = None
    write_output(args.out, export_handover(record, agreement, keys.values(), thread) + b"\n",
                 what="export")
    status = handover_status(record, agreement, keys)
    print(f"Handover record {record.id}: " + ("complete" if status.complete else "incomplete"))
    names = _names(opened)
    for ident in (record.id, agreement.id):  # the export carries both
        _warn_disputed(found, ident, names)
    print(f"Exported to {args.out}: check it with backchannel verify {args.out}")
    return 0


# --- disclose / disclosed --------------------------------------------------------------

@dataclass(frozen=True)
class _Scope:
    """What an agreement or proposal id names, for disclosures."""

    #: The terms in force: the agreement's, else the thread's latest proposal's.
    terms: Terms
    #: Every id a disclosure of this negotiation may be made ``about``.
    idents: frozenset[str]
    #: The terms of the thread's earlier proposals, by id: a counter-proposal replaces
    #: lists, and one disclosed with the proposal it replaced is no longer in force.
    earlier: Mapping[str, Terms]


def _terms_of(found: Collected, ident: str, keys: Mapping[str, Any]) -> _Scope:
    """The terms named by an agreement id, or by the id of any message of its
    negotiation (then its agreement's terms, if it has one, else the latest
    proposal's), and every id a disclosure of them may be made about."""
    try:
        named = found.agreement(ident, keys)
    except ClientError:
        if ident not in found.messages:
            raise
        thread = found.thread_of(ident)
        agreement = found.agreement_of_thread(thread, keys)
    else:
        if named.proposal_id not in found.messages:  # it came without its thread
            return _Scope(named.terms, frozenset({ident, named.id, named.proposal_id}), {})
        thread = found.thread_of(named.proposal_id)
        agreement = named
    final = agreement.proposal if agreement is not None else thread.latest_proposal
    ids = {ident, *(m.id for m in thread.messages)}
    if agreement is not None:
        ids.add(agreement.id)
    earlier = {m.id: m.terms for m in thread.messages
               if isinstance(m, Proposal) and m.id != final.id}
    return _Scope(final.terms, frozenset(ids), earlier)


def _write_disclosed(args: argparse.Namespace, shown: list[dict[str, Any]],
                     lists: list[NameList], giver: str | None,
                     names: Mapping[str, str], refused: list[str]) -> None:
    picked = [(item, namelist) for item, namelist in zip(shown, lists, strict=True)
              if giver is None or item["giver"] == giver]
    if not picked and refused:
        raise ListMismatch(refused[0])  # the reason, not "nothing disclosed"
    if not picked:
        raise ClientError("no list " + (f"handed over by {args.giver} " if giver else "")
                          + "of these terms has been disclosed to you: nothing written")
    if len(picked) > 1:
        who = sorted({names.get(i["giver"], i["giver"]) for i, _ in picked})
        raise ClientError(f"{len(picked)} lists are disclosed to you (handed over by "
                          f"{', '.join(who)}): pick one with --giver ALIAS (me: the list "
                          "you hand over)"
                          + ("" if giver is None else " and check which list you mean"))
    item, namelist = picked[0]
    data, defused = to_csv(namelist, bom=args.bom)
    if defused:
        ui.warn(f"{defused} cell(s) began like a spreadsheet formula and were prefixed with "
                "' so that opening the file runs nothing")
    write_output(args.out, data, what="output file", private=True)
    ui.note(f"List {item['list']} ({item['entries']:,} entries) written to {args.out}")


def _replaced_list(envelope: dsse.Envelope, sender: str, earlier: Terms | None,
                   terms: Terms, me: str, keys: Mapping[str, Any]) -> str | None:
    """The digest of a disclosure that checks against ``earlier`` (an earlier
    proposal's terms) and names no list of ``terms``, or None: a list a
    counter-proposal replaced is not a refusal; an altered one, or one still in the
    terms that fails their check (another count), is."""
    if earlier is None:
        return None
    try:
        digest = parse_disclosure(envelope).digest
        if any(ref.digest == digest for t in terms.transfers for ref in t.lists):
            return None
        return check_disclosure(envelope, sender, earlier, me, keys).salted.digest
    except BackchannelError:
        return None


def run_disclose(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    recipient = opened.contacts().for_sending(args.to, now=opened.clock.now())
    me = opened.identity.id

    async def work() -> tuple[list[str], list[str]]:
        async with connected(opened) as client:
            await _fetch_new(opened, client)
            found = _collect(opened)
            keys = found.keys
            terms = _terms_of(found, args.agreement, keys).terms
            if me not in terms.parties:
                raise ClientError("only a party of the agreement discloses its lists")
            if recipient.card.id == me:
                raise ClientError("you hold your own lists: disclose them to someone else")
            if recipient.card.id not in (*terms.guarantors, terms.other_party(me)):
                # Names go to the other delegation and, on request, a guarantor of
                # these terms: never to a contact picked by a mistyped --to.
                raise ClientError(f"{args.to} is neither a guarantor nor the other party "
                                  "of these terms: lists are disclosed to them only")
            transfer = (terms.transfer_from(me) if args.list == "give"
                        else terms.transfer_from(terms.other_party(me)))
            lists = []
            for ref in transfer.lists:
                salted = salted_list(opened, found, ref.digest, terms)
                if salted is None:
                    raise ClientError(f"this profile does not hold the list {ref.digest[:12]}…")
                lists.append(salted)
            sent = await send_document(
                opened, client, [recipient.card.id],
                _disclose_to(opened, args.agreement, recipient.card.id, lists), args.via)
            return [ref.digest for ref in transfer.lists], sent

    digests, envelope_ids = run_async(work())
    if args.json:
        ui.print_json({"kind": "disclosure", "lists": digests, "to": recipient.card.id,
                       "messages": envelope_ids})
        return 0
    print(f"Disclosed the list you {args.list} to {args.to} (list digest "
          f"{', '.join(digests)}); they check it with backchannel disclosed.")
    print(f"Sent as message {', '.join(envelope_ids)}.")
    return 0


def run_disclosed(args: argparse.Namespace) -> int:
    if (args.giver or args.bom) and not args.out:
        raise ClientError("--giver and --bom go with --out FILE")
    opened, found, keys = _read_documents(args)
    giver = (None if not args.giver else opened.identity.id if args.giver == "me"
             else opened.contacts().get(args.giver).card.id)
    scope = _terms_of(found, args.id, keys)
    terms, me = scope.terms, opened.identity.id
    names = _names(opened)
    shown: list[dict[str, Any]] = []
    lists: list[NameList] = []
    refused: list[str] = []
    replaced: set[str] = set()
    seen: set[str] = set()
    for about, sender, envelope in found.disclosures:
        if about not in scope.idents or sender == me:
            continue
        who = names.get(sender, sender)
        try:
            disclosed = check_disclosure(envelope, sender, terms, me, keys)
        except BackchannelError as exc:
            earlier = _replaced_list(envelope, sender, scope.earlier.get(about), terms, me,
                                     keys)
            if earlier is not None:
                replaced.add(earlier)
            else:
                refused.append(f"a list disclosed by {who} is refused: {exc}")
            continue
        if disclosed.salted.digest in seen:
            continue  # disclosed again with a later proposal
        seen.add(disclosed.salted.digest)
        try:
            namelist = from_body(json_loads(disclosed.salted.data,
                                            max_bytes=len(disclosed.salted.data),
                                            what="list"))
        except BackchannelError as exc:
            refused.append(f"a list disclosed by {who} is refused: {exc}")
            continue
        if len(namelist) != disclosed.salted.entries:
            refused.append(f"a list disclosed by {who} is refused: it has {len(namelist)} "
                           f"entries, the agreement {disclosed.salted.entries}")
            continue
        transfer = terms.transfer_from(disclosed.giver)
        shown.append({"from": sender, "giver": disclosed.giver, "receiver": transfer.receiver,
                      "list": disclosed.salted.digest, "entries": len(namelist),
                      "names": [e.to_dict() for e in namelist.entries]})
        lists.append(namelist)
    if args.json:
        ui.print_json({"id": args.id, "lists": shown, "refused": refused,
                       "replaced": sorted(replaced)})
    else:
        for item in shown:
            print(f"List {item['list']} ({names.get(item['giver'], item['giver'])} -> "
                  f"{names.get(item['receiver'], item['receiver'])}), disclosed by "
                  f"{names.get(item['from'], item['from'])}: {item['entries']} entries, "
                  "matches the digest and count in the signed terms")
            for number, entry in enumerate(item["names"], start=1):
                print(f"  {number}. {describe(entry)}")
        if replaced:
            print(f"{len(replaced)} list{'s' if len(replaced) > 1 else ''} disclosed with an "
                  "earlier proposal of this negotiation "
                  f"{'are' if len(replaced) > 1 else 'is'} not shown: a later proposal "
                  "replaced it with another list.")
        if not shown and not refused:
            print("No list of these terms has been disclosed to you.")
    if args.out:
        _write_disclosed(args, shown, lists, giver, names, refused)
    if refused:
        raise ListMismatch(refused[0])
    return 0
