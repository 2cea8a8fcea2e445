"""Drafting a handover record: where each person who crossed goes in the agreed lists.

Pure functions over plain data (no profile, no network), used by ``backchannel
handover record``:

1. :func:`draft` locates every row of the transferred file in the agreed lists with
   the reconciliation matcher (:func:`client.reconcile.locate`);
2. an officer's **settlements** override or complete it, one per row (1-based, as
   ``namelist check`` counts)::

       ROW=ALIAS:N                   entry N (1-based) of all the lists ALIAS hands over
       ROW=unlisted:ALIAS[:CATEGORY] handed over by ALIAS without being on a list
       ROW=skip                      not recorded (typed by mistake, or did not cross)

   ALIAS is a party's alias, or ``me``;
3. a row neither settled nor matched with confidence refuses the draft
   (:class:`Unsettled`), naming every such row and its candidates as ``ALIAS:N``, so
   the officer can settle it.

An unlisted person is named in the record by a salted entry digest
(:func:`keys.listref.entry_digest`); the salt and entry bytes are returned so the
caller keeps them (the digest opens for nobody else). The placements — one line per
row, names included — are for the officer's screen only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from keys.encoding import json_dumps
from keys.handover import EntryRef, Unlisted
from keys.listref import SALT_BYTES, entry_digest
from keys.proposal import CATEGORIES, Terms

from .errors import ClientError
from .reconcile import agreed_position, locate

#: Shown in a refusal; the rest is summarised ("…").
MAX_ROWS_SHOWN: Final = 10
_SETTLE = re.compile(r"(\d+)=(?:(skip)|unlisted:([^:]+)(?::([a-z]+))?|([^:=]+):(\d+))")


class Unsettled(ClientError):
    """Rows of the transferred file that are ambiguous or on no agreed list."""


@dataclass(frozen=True)
class AgreedList:
    """An agreed list whose salt we hold (ours, or disclosed to us), with its entries."""

    giver: str
    category: str
    digest: str
    entries: Sequence[Mapping[str, Any]]
    #: Position of its first entry among all the entries the giver hands over.
    offset: int


def agreed_lists(terms: Terms, opened_lists: Mapping[str, Sequence[Mapping[str, Any]]]
                 ) -> list[AgreedList]:
    """The lists of ``terms`` in order, given each one's entries by digest."""
    lists = []
    for transfer in terms.transfers:
        category = next((c for c in CATEGORIES if transfer.counts.get(c)), "pow")
        offset = 0
        for ref in transfer.lists:
            entries = opened_lists[ref.digest]
            lists.append(AgreedList(transfer.giver, category, ref.digest, entries, offset))
            offset += len(entries)
    return lists


@dataclass(frozen=True)
class Settled:
    """An officer's decision about one row of the transferred file."""

    #: "entry" (an agreed list's entry), "unlisted" or "skip".
    what: str
    giver: str = ""
    #: For "entry": 0-based position among all the giver's entries.
    position: int = -1
    category: str = ""


def settle_lines(text: str) -> list[str]:
    """The decisions of a settlements file: one a line, ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def parse_settlements(values: Sequence[str], rows: int, parties: Mapping[str, str],
                      terms: Terms) -> dict[int, Settled]:
    """``values`` to 0-based row -> decision. ``parties`` maps lower-case aliases
    (and ``me``) to the parties' ids. Raises :class:`ClientError` naming the value."""
    decisions: dict[int, Settled] = {}
    for value in values:
        m = _SETTLE.fullmatch(value.strip())
        if m is None:
            raise ClientError(f"--settle {value[:40]!r}: expected ROW=ALIAS:N, "
                              "ROW=unlisted:ALIAS[:CATEGORY] or ROW=skip")
        row = int(m[1])
        if not 1 <= row <= rows:
            raise ClientError(f"--settle {value[:40]!r}: the file has rows 1 to {rows}")
        if row - 1 in decisions:
            raise ClientError(f"--settle: row {row} is settled twice")
        if m[2]:
            decisions[row - 1] = Settled("skip")
            continue
        alias = m[3] or m[5]
        giver = parties.get(alias.lower())
        if giver is None:
            raise ClientError(f"--settle {value[:40]!r}: {alias} is not a party of the "
                              "agreement (use a party's alias, or 'me')")
        if m[3]:
            category = m[4] or next((c for c in CATEGORIES if terms.transfer_from(
                giver).counts.get(c)), "pow")
            if category not in CATEGORIES:
                raise ClientError(f"--settle {value[:40]!r}: the category is one of "
                                  f"{', '.join(CATEGORIES)}")
            decisions[row - 1] = Settled("unlisted", giver, -1, category)
        else:
            position = int(m[6]) - 1
            if position < 0:
                raise ClientError(f"--settle {value[:40]!r}: entries count from 1")
            decisions[row - 1] = Settled("entry", giver, position)
    return decisions


def describe(entry: Mapping[str, Any]) -> str:
    """``Family Given Patronymic (date of birth)``, for the officer's screen."""
    parts = ("family_name", "given_names", "patronymic")
    text = " ".join(str(entry[p]) for p in parts if entry.get(p))
    dob = entry.get("date_of_birth")
    return f"{text} ({dob})" if dob else text


@dataclass
class Draft:
    """Where each row of the transferred file goes, before anything is signed."""

    delivered: dict[str, list[EntryRef]] = field(default_factory=dict)
    unlisted: dict[str, list[Unlisted]] = field(default_factory=dict)
    #: One line per row, for the officer's screen (names included: never sent).
    placements: list[str] = field(default_factory=list)
    #: (digest, salt, entry bytes) of the unlisted persons, to keep once sent.
    entry_salts: list[tuple[str, bytes, bytes]] = field(default_factory=list)


def draft(lists: Sequence[AgreedList], entries: Sequence[Mapping[str, Any]],
          decisions: Mapping[int, Settled], aliases: Mapping[str, str], *,
          random: Callable[[int], bytes] = secrets.token_bytes) -> Draft:
    """Every row of ``entries`` as an entry reference or an unlisted person (see the
    module doc). ``aliases`` maps the parties' ids to what the officer calls them
    (``me`` for us). Raises :class:`Unsettled` or :class:`ClientError`."""
    located = locate(entries, [(x.digest, x.entries) for x in lists])
    by_digest = {x.digest: x for x in lists}
    per_giver: dict[str, list[AgreedList]] = {}
    for x in lists:
        per_giver.setdefault(x.giver, []).append(x)
    flat = [(x.digest, x.entries) for x in lists]

    def label(digest: str, index: int) -> str:
        x = by_digest[digest]
        return f"{aliases.get(x.giver, x.giver)}:{x.offset + index + 1}"

    result = Draft()

    def deliver(row: int, x: AgreedList, index: int, how: str) -> None:
        result.delivered.setdefault(x.giver, []).append(EntryRef(x.digest, index, x.category))
        result.placements.append(f"  row {row + 1} {describe(entries[row])} -> "
                                 f"{label(x.digest, index)} {describe(x.entries[index])} "
                                 f"({how})")

    ambiguous = {a.left: a for a in located.ambiguous}
    open_rows: list[str] = []
    for row, entry in enumerate(entries):
        decision = decisions.get(row)
        if decision is None:
            if row in located.found:
                digest, index, confidence = located.found[row]
                deliver(row, by_digest[digest], index, f"{confidence:.2f}")
            elif row in ambiguous:
                candidates = ", ".join(f"{label(*agreed_position(flat, c.right))} "
                                       f"{c.confidence:.2f}"
                                       for c in ambiguous[row].candidates[:3])
                open_rows.append(f"row {row + 1} ambiguous ({candidates})")
            else:
                open_rows.append(f"row {row + 1} on no agreed list")
        elif decision.what == "skip":
            result.placements.append(f"  row {row + 1} {describe(entry)}: skipped (settled)")
        elif decision.what == "unlisted":
            salt, data = random(SALT_BYTES), json_dumps(dict(entry))
            digest = entry_digest(salt, data)
            result.entry_salts.append((digest, salt, data))
            result.unlisted.setdefault(decision.giver, []).append(
                Unlisted(digest, decision.category))
            result.placements.append(
                f"  row {row + 1} {describe(entry)}: handed over by "
                f"{aliases.get(decision.giver, decision.giver)} without being listed "
                f"({decision.category}, settled)")
        else:
            offset = decision.position
            for x in per_giver.get(decision.giver, []):
                if offset < len(x.entries):
                    deliver(row, x, offset, "settled")
                    break
                offset -= len(x.entries)
            else:
                count = sum(len(x.entries) for x in per_giver.get(decision.giver, []))
                raise ClientError(f"--settle row {row + 1}: "
                                  f"{aliases.get(decision.giver, decision.giver)} hands "
                                  f"over {count} listed persons; there is no entry "
                                  f"{decision.position + 1}")
    if open_rows:
        more = "; …" if len(open_rows) > MAX_ROWS_SHOWN else ""
        raise Unsettled(f"{len(open_rows)} of {len(entries)} persons are not settled: "
                        + "; ".join(open_rows[:MAX_ROWS_SHOWN]) + more
                        + ". Settle each with --settle ROW=ALIAS:N, "
                        "ROW=unlisted:ALIAS[:CATEGORY] or ROW=skip (backchannel reconcile "
                        "shows the candidates)")
    for refs in result.delivered.values():
        refs.sort(key=lambda r: (r.list, r.index))
    return result
