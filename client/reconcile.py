"""Reconciliation of two name lists written in different scripts or transliterations.

Pure functions: entries in (mappings with ``family_name``, ``given_names``,
``patronymic``, ``date_of_birth``, ``service_number``...), a :class:`Reconciliation`
out. Nothing is stored, logged or printed here: the entries are names of prisoners.

Method (measured figures and their limits are in ``docs/reconciliation.md``):

1. **Keys.** Every name part is romanized with ``anyascii`` and folded to a
   script-independent skeleton (:mod:`client.transliteration`), so ``Щербина``,
   ``Shcherbyna`` and ``Scherbina`` share a key; the Russian and Ukrainian forms of
   a given name (``Алексей``/``Олексій``) share one too (a curated table).
2. **Blocking.** Candidate pairs are only those sharing a block: the same full date of
   birth, or the same first three skeleton letters of any family- or given-name word.
   A given/family swap still shares blocks; so does a typo in one name part. Blocks
   larger than :data:`MAX_BLOCK` pairs (a very common name) are skipped — the other
   keys of those entries still apply — so the work stays near-linear.
3. **Scoring** (``rapidfuzz``): name similarity per part on the skeletons (the mean
   of Jaro-Winkler and Indel similarity), family and given names also compared
   crosswise (a swap costs a little), the patronymic when both lists have one; then
   multiplied by the date-of-birth factor (:data:`DOB_FACTORS`: same, same year/month
   only, missing, a one-digit slip or swapped day and month, different). The same
   service number on both sides lifts the score; different ones lower it.
4. **Decision**, greedily from the best pair down, one-to-one: a pair is *matched*
   when its confidence is at least :data:`Thresholds.match` and beats every other
   still-free candidate of either entry by :data:`Thresholds.margin`; otherwise, if
   it is at least :data:`Thresholds.candidate`, the entry is *ambiguous* with its
   candidates listed for an officer to decide; entries without any candidate are
   *unmatched*.

The confidence is a score in [0, 1], not a probability; the thresholds were chosen
on generated data (``tests/client/reconcile_data.py``) for precision first.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rapidfuzz.distance import Indel, JaroWinkler

from .transliteration import canonical_names, skeleton

#: A single block larger than this many pairs is skipped (see step 2).
MAX_BLOCK: Final = 20_000
#: Date of birth evidence, multiplied into the name similarity.
DOB_FACTORS: Final[Mapping[str, float]] = {
    "same": 1.0,
    "same-partial": 0.95,   # only a year (and month) on one side, and they agree
    "missing": 0.9,         # one side has no date: the names must carry it
    "near": 0.9,            # one digit differs, or day and month swapped
    "different": 0.65,      # never matched, at most a candidate for an officer
}
_DATE_ISO = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_DATE_DMY = re.compile(r"(\d{1,2})[./](\d{1,2})[./](\d{4})")


@dataclass(frozen=True)
class Thresholds:
    match: float = 0.86
    candidate: float = 0.62
    margin: float = 0.05


@dataclass(frozen=True)
class Match:
    left: int
    right: int
    confidence: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"left": self.left, "right": self.right,
                "confidence": round(self.confidence, 3), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Ambiguous:
    """An entry of the left list with several plausible (or one weak) candidates."""

    left: int
    candidates: tuple[Match, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"left": self.left, "candidates": [c.to_dict() for c in self.candidates]}


@dataclass(frozen=True)
class Reconciliation:
    matched: tuple[Match, ...]
    ambiguous: tuple[Ambiguous, ...]
    unmatched_left: tuple[int, ...]
    unmatched_right: tuple[int, ...]
    compared: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"matched": [m.to_dict() for m in self.matched],
                "ambiguous": [a.to_dict() for a in self.ambiguous],
                "unmatched_left": list(self.unmatched_left),
                "unmatched_right": list(self.unmatched_right)}


@dataclass(frozen=True)
class _Keys:
    family: str
    given: str
    patronymic: str
    dob: tuple[int, int | None, int | None] | None
    service: str
    blocks: tuple[tuple[str, str], ...] = field(default=())


def parse_date(value: object) -> tuple[int, int | None, int | None] | None:
    """``YYYY-MM-DD``, ``YYYY-MM``, ``YYYY`` or ``DD.MM.YYYY`` to (year, month, day);
    ``None`` for anything else (treated as missing, never as an error)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    iso = _DATE_ISO.fullmatch(text)
    if iso:
        year, month, day = iso.groups()
        return int(year), int(month) if month else None, int(day) if day else None
    dmy = _DATE_DMY.fullmatch(text)
    if dmy:
        day, month, year = dmy.groups()
        return int(year), int(month), int(day)
    return None


def _text(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    return value if isinstance(value, str) else ""


def _keys(entry: Mapping[str, Any]) -> _Keys:
    # Name forms in both parts: a swapped entry still compares given with given.
    family = canonical_names(skeleton(_text(entry, "family_name")))
    given = canonical_names(skeleton(_text(entry, "given_names")))
    patronymic = skeleton(_text(entry, "patronymic"))
    dob = parse_date(entry.get("date_of_birth"))
    service = re.sub(r"[^0-9a-z]", "", _text(entry, "service_number").lower())
    blocks: set[tuple[str, str]] = {("n", word[:3]) for word in f"{family} {given}".split()
                                    if len(word) >= 2}
    if dob is not None and dob[2] is not None:
        blocks.add(("d", f"{dob[0]}-{dob[1]}-{dob[2]}"))
    if service:
        blocks.add(("s", service))
    return _Keys(family, given, patronymic, dob, service, tuple(sorted(blocks)))


def _similar(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    return (JaroWinkler.normalized_similarity(a, b) + Indel.normalized_similarity(a, b)) / 2


def _dob_evidence(a: _Keys, b: _Keys) -> str:
    if a.dob is None or b.dob is None:
        return "missing"
    if a.dob == b.dob:
        return "same" if a.dob[2] is not None else "same-partial"
    if None in a.dob or None in b.dob:
        common = [x == y for x, y in zip(a.dob, b.dob, strict=True)
                  if x is not None and y is not None]
        return "same-partial" if all(common) else "different"
    if (a.dob[1], a.dob[2]) == (b.dob[2], b.dob[1]):
        return "near"
    text_a = f"{a.dob[0]:04d}{a.dob[1]:02d}{a.dob[2]:02d}"
    text_b = f"{b.dob[0]:04d}{b.dob[1]:02d}{b.dob[2]:02d}"
    if sum(x != y for x, y in zip(text_a, text_b, strict=True)) == 1:
        return "near"
    return "different"


def score(a: _Keys, b: _Keys) -> tuple[float, tuple[str, ...]]:
    """Confidence that ``a`` and ``b`` name the same person, with the reasons."""
    straight = (_similar(a.family, b.family), _similar(a.given, b.given))
    crossed = (_similar(a.family, b.given), _similar(a.given, b.family))
    reasons: list[str] = []
    family, given = straight
    if sum(crossed) > sum(straight) + 0.1:
        family, given = crossed[0] - 0.02, crossed[1] - 0.02
        reasons.append("given and family names swapped")
    if a.patronymic and b.patronymic:
        patronymic = _similar(a.patronymic, b.patronymic)
        names = 0.5 * family + 0.3 * given + 0.2 * patronymic
    else:
        names = 0.6 * family + 0.4 * given
    # Both the family and the given name must resemble: a shared family name alone
    # (brothers) or a shared given name alone (strangers) is not the same person.
    names = min(names, (family + given) / 2 + 0.05, min(family, given) + 0.2)
    evidence = _dob_evidence(a, b)
    confidence = names * DOB_FACTORS[evidence]
    reasons.append(f"date of birth: {evidence}")
    if evidence == "missing" and not (a.patronymic and b.patronymic) and not (
            a.service and b.service):
        reasons.append("names only: nothing else to compare")
    if a.service and b.service:
        if a.service == b.service:
            confidence = min(1.0, confidence + 0.1)
            reasons.append("same service number")
        else:
            confidence *= 0.7
            reasons.append("different service numbers")
    return max(0.0, confidence), tuple(reasons)


def _candidate_pairs(left: Sequence[_Keys], right: Sequence[_Keys]) -> set[tuple[int, int]]:
    by_block: dict[tuple[str, str], tuple[list[int], list[int]]] = defaultdict(
        lambda: ([], []))
    for i, keys in enumerate(left):
        for block in keys.blocks:
            by_block[block][0].append(i)
    for j, keys in enumerate(right):
        for block in keys.blocks:
            if block in by_block:
                by_block[block][1].append(j)
    pairs: set[tuple[int, int]] = set()
    for lefts, rights in by_block.values():
        if not rights or len(lefts) * len(rights) > MAX_BLOCK:
            continue
        pairs.update((i, j) for i in lefts for j in rights)
    return pairs


def reconcile(left: Sequence[Mapping[str, Any]], right: Sequence[Mapping[str, Any]], *,
              thresholds: Thresholds | None = None) -> Reconciliation:
    """Match the entries of ``left`` with those of ``right`` (see the module doc).

    Indexes in the result refer to positions in the two sequences."""
    limits = thresholds or Thresholds()
    left_keys = [_keys(e) for e in left]
    right_keys = [_keys(e) for e in right]
    scored: list[Match] = []
    pairs = _candidate_pairs(left_keys, right_keys)
    for i, j in pairs:
        confidence, reasons = score(left_keys[i], right_keys[j])
        if confidence >= limits.candidate:
            scored.append(Match(i, j, confidence, reasons))
    scored.sort(key=lambda m: (-m.confidence, m.left, m.right))
    by_left: dict[int, list[Match]] = defaultdict(list)
    by_right: dict[int, list[Match]] = defaultdict(list)
    for m in scored:
        by_left[m.left].append(m)
        by_right[m.right].append(m)

    taken_left: set[int] = set()
    taken_right: set[int] = set()
    doubtful: set[int] = set()
    matched: list[Match] = []
    for m in scored:
        if m.left in taken_left or m.right in taken_right:
            continue
        rivals = [o.confidence for o in by_left[m.left]
                  if o is not m and o.right not in taken_right]
        rivals += [o.confidence for o in by_right[m.right]
                   if o is not m and o.left not in taken_left]
        runner_up = max(rivals, default=0.0)
        if m.confidence >= limits.match and m.confidence - runner_up >= limits.margin:
            matched.append(m)
            taken_left.add(m.left)
            taken_right.add(m.right)
        else:
            doubtful.add(m.left)
            doubtful.update(o.left for o in by_right[m.right])
    ambiguous = []
    in_doubt_right: set[int] = set()
    for i in sorted(doubtful - taken_left):
        candidates = tuple(o for o in by_left[i] if o.right not in taken_right)
        if candidates:
            ambiguous.append(Ambiguous(i, candidates))
            in_doubt_right.update(o.right for o in candidates)
    in_doubt_left = {a.left for a in ambiguous}
    unmatched_left = tuple(i for i in range(len(left))
                           if i not in taken_left and i not in in_doubt_left)
    unmatched_right = tuple(j for j in range(len(right))
                            if j not in taken_right and j not in in_doubt_right)
    matched.sort(key=lambda m: m.left)
    return Reconciliation(tuple(matched), tuple(ambiguous), unmatched_left, unmatched_right,
                          compared=len(pairs))


@dataclass(frozen=True)
class Located:
    """Where the persons of a transferred list stand in the agreed lists.

    ``found`` maps a transferred entry's index to (list digest, index in that list,
    confidence); ``ambiguous`` and ``not_found`` hold transferred indexes an officer
    must resolve (``not_found`` are "handed over but not listed" unless corrected)."""

    found: Mapping[int, tuple[str, int, float]]
    ambiguous: tuple[Ambiguous, ...]
    not_found: tuple[int, ...]


def locate(transferred: Sequence[Mapping[str, Any]],
           agreed: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
           thresholds: Thresholds | None = None) -> Located:
    """Find each entry of ``transferred`` (who actually crossed) in the ``agreed``
    lists, given as (list digest, entries) pairs — the step before a handover record
    names entries by list digest and index (:class:`keys.handover.EntryRef`).

    Ambiguous candidates in the result refer to positions in the concatenation of the
    agreed lists; use :func:`agreed_position` to turn one into (digest, index)."""
    flat: list[Mapping[str, Any]] = []
    for _, entries in agreed:
        flat.extend(entries)
    result = reconcile(transferred, flat, thresholds=thresholds)
    found = {m.left: (*agreed_position(agreed, m.right), m.confidence)
             for m in result.matched}
    return Located(found, result.ambiguous, result.unmatched_left)


def agreed_position(agreed: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                    flat_index: int) -> tuple[str, int]:
    """(list digest, index in that list) of position ``flat_index`` of the
    concatenated agreed lists. Raises ``IndexError`` past the end."""
    offset = flat_index
    for digest, entries in agreed:
        if offset < len(entries):
            return digest, offset
        offset -= len(entries)
    raise IndexError(flat_index)
