"""Negotiation commands: ``reconcile`` (offline) and, as they are wired, the
proposal/agreement/handover commands of issue 6.

``reconcile LIST_A LIST_B`` reads two name lists exactly as ``send`` would
(:func:`client.namelist.load_namelist`) and prints the suggestions of
:func:`client.reconcile.reconcile`: matched pairs with a confidence, ambiguous
entries with their candidates, and entries without a match. The names are shown on
this terminal only; nothing is sent or stored.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from keys.clock import SYSTEM_CLOCK

from .. import ui
from ..errors import BodyError, ClientError
from ..namelist import Entry, NameList, load_namelist
from ..reconcile import Reconciliation, reconcile
from .common import SubParsers, read_input, write_output


def register(sub: SubParsers) -> None:
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


def _label(entry: Entry) -> str:
    parts = [entry.family_name, entry.given_names, entry.patronymic]
    text = " ".join(p for p in parts if p)
    return f"{text} ({entry.date_of_birth})" if entry.date_of_birth else text


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
        console.print(f"  A{m.left + 1} {_label(left.entries[m.left])}  =  "
                      f"B{m.right + 1} {_label(right.entries[m.right])}  "
                      f"{m.confidence:.2f}  [{'; '.join(m.reasons)}]", markup=False)
    console.print(f"Ambiguous, for an officer to decide ({len(result.ambiguous)}):",
                  markup=False)
    for a in result.ambiguous:
        console.print(f"  A{a.left + 1} {_label(left.entries[a.left])}", markup=False)
        for c in a.candidates:
            console.print(f"      ? B{c.right + 1} {_label(right.entries[c.right])}  "
                          f"{c.confidence:.2f}  [{'; '.join(c.reasons)}]", markup=False)
    console.print(f"Only in {args.list_a} ({len(result.unmatched_left)}): "
                  + ", ".join(f"A{i + 1}" for i in result.unmatched_left), markup=False)
    console.print(f"Only in {args.list_b} ({len(result.unmatched_right)}): "
                  + ", ".join(f"B{j + 1}" for j in result.unmatched_right), markup=False)
    return 0
