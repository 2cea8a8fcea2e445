"""Name lists: the body of a ``namelist`` message, and its CSV and JSON forms.

A name list is a sequence of entries, each naming one person::

    family_name, given_names, patronymic, date_of_birth, rank, unit,
    service_number, citizenship, status, notes

Only ``family_name`` is required. Everything is text; ``date_of_birth`` is ISO 8601
(``YYYY-MM-DD``, or ``YYYY-MM`` / ``YYYY`` when only that much is known).

Body on the wire (inside the signed, sealed message)::

    {"v": 1, "entries": [{"family_name": "Шевченко", "given_names": "Тарас", ...}, ...]}

Entries hold their non-empty fields only, in the order of :data:`FIELDS`.

Text handling (a decision, see ``docs/user-guide.md``): names are kept in the script
they were typed in -- Cyrillic stays Cyrillic, nothing is transliterated, no case
is changed. On import each value is put in Unicode NFC (the composed form every
keyboard produces; it changes no letter, only how an accented letter is encoded) and
stripped of surrounding spaces, which spreadsheets add unnoticed. Control characters
and invisible formatting characters (bidirectional overrides, zero-width spaces) are
refused: they can make a name display differently from what it is. Cells beginning
with ``=``, ``+`` or ``@`` are refused too, because spreadsheet programs run them as
formulas when the list is opened.

Received lists are checked for structure only (a valid list from another program is
shown as signed, unchanged). All functions here are pure: bytes in, values out.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import chain, repeat
from typing import Any, Final

from rich.table import Table
from rich.text import Text

from keys import collector
from keys.encoding import json_dumps, json_loads
from keys.errors import DecodeError

from .errors import InvalidNameList, NoListFound, NotANameList

FIELDS: Final = ("family_name", "given_names", "patronymic", "date_of_birth", "rank", "unit",
                 "service_number", "citizenship", "status", "notes")
REQUIRED: Final = ("family_name",)
NAME_FIELDS: Final = ("family_name", "given_names", "patronymic")
LABELS: Final = {
    "family_name": "Family name", "given_names": "Given names", "patronymic": "Patronymic",
    "date_of_birth": "Born", "rank": "Rank", "unit": "Unit",
    "service_number": "Service no.", "citizenship": "Citizenship", "status": "Status",
    "notes": "Notes",
}

#: Exchanges negotiated so far involve hundreds to a few thousand people; 100,000
#: entries (about 10 MB of CSV) keeps one list well inside one sealed message.
MAX_ENTRIES: Final = 100_000
#: A CSV or JSON file larger than this is refused before it is parsed.
MAX_FILE_BYTES: Final = 16 * 1024 * 1024
#: Longest value per field: names and ranks are short; notes may be a paragraph.
MAX_VALUE: Final = 200
MAX_NOTES: Final = 2000
#: Stop collecting problems after this many: the first screenful is what helps.
MAX_PROBLEMS: Final = 100
#: Years of birth before this are typing errors in a list of living people or remains.
MIN_YEAR: Final = 1900

#: Header spellings accepted on import (compared after :func:`_header_key`), in
#: English, Ukrainian and Russian, as exported by the spreadsheets in use.
ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "family_name": ("family_name", "surname", "last_name", "lastname", "family",
                    "прізвище", "фамилия"),
    "given_names": ("given_names", "given_name", "first_name", "first_names", "firstname",
                    "forename", "forenames", "name", "ім'я", "імя", "ім’я", "имя"),
    "patronymic": ("patronymic", "middle_name", "middle_names", "father's_name",
                   "по_батькові", "отчество"),
    "date_of_birth": ("date_of_birth", "dob", "birth_date", "birthdate", "born",
                      "дата_народження", "дата_рождения"),
    "rank": ("rank", "military_rank", "звання", "військове_звання", "звание",
             "воинское_звание"),
    "unit": ("unit", "military_unit", "військова_частина", "частина", "підрозділ",
             "воинская_часть", "часть", "подразделение"),
    "service_number": ("service_number", "service_no", "service_id", "personal_number",
                       "military_id", "особовий_номер", "личный_номер", "жетон"),
    "citizenship": ("citizenship", "nationality", "громадянство", "гражданство"),
    "status": ("status", "статус", "стан", "состояние"),
    "notes": ("notes", "note", "comment", "comments", "remarks", "примітки", "примітка",
              "примечания", "примечание"),
}
_ALIAS_TO_FIELD: Final = {alias: name for name, aliases in ALIASES.items()
                          for alias in aliases}

_NO_WRAP: Final = frozenset({"family_name", "given_names", "patronymic", "date_of_birth",
                             "service_number"})
_DOB_RE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", re.ASCII)
#: Bidirectional controls, zero-width characters and the BOM: invisible, and able to
#: make a name look like another (the "Trojan Source" family of tricks).
_INVISIBLE: Final = frozenset(
    [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), 0xFEFF,
     0x061C, 0x00AD])


@dataclass(frozen=True)
class Entry:
    """One person. Empty string means "not given"."""

    family_name: str
    given_names: str = ""
    patronymic: str = ""
    date_of_birth: str = ""
    rank: str = ""
    unit: str = ""
    service_number: str = ""
    citizenship: str = ""
    status: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, str]:
        """The non-empty fields, in :data:`FIELDS` order (the wire form)."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name)}

    def values(self) -> tuple[str, ...]:
        return tuple(getattr(self, name) for name in FIELDS)


@dataclass(frozen=True)
class NameList:
    entries: tuple[Entry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    def to_body(self) -> dict[str, Any]:
        return {"v": 1, "entries": [e.to_dict() for e in self.entries]}


@dataclass(frozen=True)
class Parsed:
    """A list read from a file, with warnings that do not block sending
    (look-alike letters from two scripts, repeated people)."""

    namelist: NameList
    warnings: tuple[str, ...]


# --- validation of one value ---------------------------------------------------------

def _header_key(cell: str) -> str:
    text = unicodedata.normalize("NFC", cell).strip().casefold()
    text = re.sub(r"[\s.\-/]+", "_", text)
    return text.strip("_")


def _invisible_or_control(value: str, *, allow_newlines: bool) -> str | None:
    for ch in value:
        code = ord(ch)
        if ch in "\n\t" and allow_newlines:
            continue
        if code in _INVISIBLE:
            return f"an invisible formatting character (U+{code:04X})"
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
            return f"a control or unassigned character (U+{code:04X})"
    return None


def starts_like_formula(value: str) -> bool:
    """Whether a spreadsheet would run this cell as a formula (CSV injection)."""
    if not value:
        return False
    if value[0] in "=+@":
        return True
    return value[0] == "-" and len(value) > 1 and not (value[1].isalpha()
                                                       or value[1].isspace())


def check_date_of_birth(value: str, *, today: date | None) -> str | None:
    """``None`` if ``value`` is ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` and plausible;
    otherwise the reason."""
    match = _DOB_RE.fullmatch(value)
    if match is None:
        return "is not a date (YYYY-MM-DD)"
    year = int(match.group(1))
    month = int(match.group(2) or 1)
    day = int(match.group(3) or 1)
    try:
        when = date(year, month, day)
    except ValueError:
        return "is not a date (YYYY-MM-DD)"
    if year < MIN_YEAR:
        return f"is before {MIN_YEAR}"
    if today is not None and when > today:
        return "is in the future"
    return None


def _mixed_scripts(value: str) -> bool:
    for word in value.split():
        scripts = set()
        for ch in word:
            if ch.isalpha():
                scripts.add(unicodedata.name(ch, "?").split(" ")[0])
        if {"LATIN", "CYRILLIC"} <= scripts:
            return True
    return False


def _clean(name: str, raw: str, where: str, problems: list[str], *,
           today: date | None) -> str:
    """Normalise one imported value; append to ``problems`` if it is not acceptable.
    Values never appear in messages, except dates (they carry no name)."""
    value = unicodedata.normalize("NFC", raw).strip()
    limit = MAX_NOTES if name == "notes" else MAX_VALUE
    if len(value) > limit:
        problems.append(f"{where}: {name} is longer than {limit} characters")
        return value
    bad = _invisible_or_control(value, allow_newlines=name == "notes")
    if bad is not None:
        problems.append(f"{where}: {name} contains {bad}")
    elif starts_like_formula(value):
        problems.append(f"{where}: {name} begins with {value[0]!r}, which spreadsheet "
                        "programs run as a formula")
    elif name == "date_of_birth" and value:
        reason = check_date_of_birth(value, today=today)
        if reason is not None:
            problems.append(f"{where}: date_of_birth {value[:40]!r} {reason}")
    return value


def _make_entry(values: Mapping[str, str], where: str, problems: list[str],
                warnings: list[str], *, today: date | None) -> Entry | None:
    before = len(problems)
    cleaned = {name: _clean(name, values.get(name, ""), where, problems, today=today)
               for name in FIELDS}
    for name in REQUIRED:
        if not cleaned[name]:
            problems.append(f"{where}: {name} is empty (it is required)")
    for name in NAME_FIELDS:
        if _mixed_scripts(cleaned[name]):
            warnings.append(f"{where}: {name} mixes Latin and Cyrillic letters in one word "
                            "(a look-alike letter typed on the other keyboard layout?)")
    if len(problems) > before:
        return None
    return Entry(**cleaned)


def _duplicate_warnings(entries: Sequence[Entry], places: Sequence[str]) -> list[str]:
    out: list[str] = []
    people: dict[tuple[str, ...], str] = {}
    numbers: dict[str, str] = {}
    for entry, where in zip(entries, places, strict=True):
        person = tuple(v.casefold() for v in (entry.family_name, entry.given_names,
                                              entry.patronymic, entry.date_of_birth))
        if person in people:
            out.append(f"{where}: same name and date of birth as {people[person]}")
        else:
            people[person] = where
        if entry.service_number:
            if entry.service_number in numbers:
                out.append(f"{where}: same service_number as {numbers[entry.service_number]}")
            else:
                numbers[entry.service_number] = where
    return out


def _finish(entries: list[Entry], places: list[str], problems: list[str],
            warnings: list[str], source: str) -> Parsed:
    if problems:
        raise InvalidNameList(problems[:MAX_PROBLEMS], source=source)
    if not entries:
        raise NotANameList(["the list has no entries"], source=source)
    warnings.extend(_duplicate_warnings(entries, places))
    return Parsed(NameList(tuple(entries)), tuple(warnings))


# --- CSV ---------------------------------------------------------------------------

def _decode_text(data: bytes, source: str) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise NotANameList([f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"],
                           source=source)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotANameList(["the file is UTF-16 text: save it as 'CSV UTF-8' instead"],
                           source=source)
    if b"\x00" in data:
        raise NotANameList(["this is not a text file (it contains NUL bytes)"], source=source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise NotANameList([f"line {line}: not UTF-8 text; save the file as 'CSV UTF-8' "
                            "(other encodings such as Windows-1251 are not accepted)"],
                           source=source) from None


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _map_header(cells: Sequence[str], line: int, problems: list[str], source: str
                ) -> list[str | None]:
    mapped: list[str | None] = []
    seen: dict[str, int] = {}
    unknown: list[str] = []
    for index, cell in enumerate(cells):
        key = _header_key(cell)
        if not key:
            mapped.append(None)
            continue
        name = _ALIAS_TO_FIELD.get(key)
        if name is None:
            unknown.append(cell.strip()[:40])
            mapped.append(None)
            continue
        if name in seen:
            problems.append(f"line {line}: columns {seen[name] + 1} and {index + 1} are both "
                            f"{name}")
        seen[name] = index
        mapped.append(name)
    if not seen:
        raise NoListFound([f"line {line}: no name-list columns found; the first line must "
                            f"be a header such as {','.join(FIELDS[:4])}"], source=source)
    for cell in unknown:
        problems.append(f"line {line}: unknown column {cell!r}; accepted columns: "
                        f"{', '.join(FIELDS)}")
    for name in REQUIRED:
        if name not in seen:
            spellings = ", ".join(ALIASES[name][1:4])
            problems.append(f"line {line}: no {name} column (also accepted: {spellings})")
    return mapped


def parse_csv(data: bytes, *, today: date | None = None, source: str = "") -> Parsed:
    """Read a name list from CSV bytes (UTF-8, with or without BOM; comma, semicolon
    or tab separated; the first non-empty line is the header, see :data:`ALIASES`).

    Raises :class:`NotANameList` when the file is not a name list at all and
    :class:`InvalidNameList` listing every problem (``line N: ...``) otherwise."""
    text = _decode_text(data, source)
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise NotANameList(["the file is empty"], source=source)
    reader = csv.reader(io.StringIO(text, newline=""),
                        delimiter=_sniff_delimiter(lines[first]), strict=True)
    problems: list[str] = []
    warnings: list[str] = []
    entries: list[Entry] = []
    places: list[str] = []
    columns: list[str | None] | None = None
    previous_end = 0
    try:
        for row in reader:
            line = previous_end + 1
            previous_end = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _map_header(row, line, problems, source)
                continue
            if len(row) != len(columns):
                problems.append(f"line {line}: expected {len(columns)} fields like the "
                                f"header, found {len(row)}")
            elif len(entries) >= MAX_ENTRIES:
                raise InvalidNameList([f"line {line}: more than {MAX_ENTRIES} entries; "
                                       "split the list"], source=source)
            else:
                values = {name: cell for name, cell in zip(columns, row, strict=True)
                          if name is not None}
                entry = _make_entry(values, f"line {line}", problems, warnings, today=today)
                if entry is not None:
                    entries.append(entry)
                    places.append(f"line {line}")
            if len(problems) >= MAX_PROBLEMS:
                break
    except csv.Error as exc:
        problems.append(f"line {previous_end + 1}: malformed CSV ({exc})")
    return _finish(entries, places, problems, warnings, source)


def to_csv(namelist: NameList, *, bom: bool = False) -> tuple[bytes, int]:
    """CSV with the canonical header (the column names :func:`parse_csv` accepts).

    Returns the bytes and how many cells were prefixed with ``'`` because they began
    like a spreadsheet formula (only possible in a list received from elsewhere)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    defused = 0
    for entry in namelist.entries:
        row = []
        for value in entry.values():
            if starts_like_formula(value):
                value = "'" + value
                defused += 1
            row.append(value)
        writer.writerow(row)
    data = out.getvalue().encode("utf-8")
    return (b"\xef\xbb\xbf" + data if bom else data), defused


# --- JSON --------------------------------------------------------------------------

def _entries_array(value: object, source: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "entries" in value:
        extra = set(value) - {"v", "entries"}
        if extra:
            raise NotANameList([f"unknown member(s) {', '.join(sorted(extra))[:80]} next to "
                                "'entries'"], source=source)
        if "v" in value and value["v"] != 1:
            raise NotANameList(["this name list has a version this program does not read"],
                               source=source)
        if isinstance(value["entries"], list):
            return list(value["entries"])
    raise NoListFound(["not a name list: expected a JSON array of entries or an object "
                        "with an 'entries' array"], source=source)


def parse_json(data: bytes, *, today: date | None = None, source: str = "") -> Parsed:
    """Read a name list from JSON: an array of entry objects, or ``{"entries": [...]}``
    (the form :func:`to_json` writes). Entries use the canonical field names.

    Raises like :func:`parse_csv`; problems are numbered ``entry N`` (from 1)."""
    text = _decode_text(data, source)
    try:
        value = json_loads(text, max_bytes=MAX_FILE_BYTES, what="the file")
    except DecodeError as exc:
        raise NotANameList([str(exc)], source=source) from None
    items = _entries_array(value, source)
    if len(items) > MAX_ENTRIES:
        raise InvalidNameList([f"more than {MAX_ENTRIES} entries; split the list"],
                              source=source)
    problems: list[str] = []
    warnings: list[str] = []
    entries: list[Entry] = []
    places: list[str] = []
    for number, item in enumerate(items, start=1):
        where = f"entry {number}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object with fields like family_name")
            continue
        unknown = [k for k in item if k not in FIELDS]
        if unknown:
            problems.append(f"{where}: unknown field {str(unknown[0])[:40]!r}; accepted "
                            f"fields: {', '.join(FIELDS)}")
            continue
        wrong = [k for k, v in item.items() if not isinstance(v, str)]
        if wrong:
            problems.append(f"{where}: {wrong[0]} must be a string")
            continue
        entry = _make_entry(item, where, problems, warnings, today=today)
        if entry is not None:
            entries.append(entry)
            places.append(where)
        if len(problems) >= MAX_PROBLEMS:
            break
    return _finish(entries, places, problems, warnings, source)


def to_json(namelist: NameList) -> bytes:
    """The body form, indented for reading; :func:`parse_json` reads it back."""
    return (json.dumps(namelist.to_body(), ensure_ascii=False, indent=1) + "\n").encode()


def load_namelist(data: bytes, filename: str, *, today: date | None = None) -> Parsed:
    """Read a CSV or JSON name list; the format comes from the extension (``.csv``,
    ``.tsv``, ``.txt``, ``.json``) or, failing that, from the first character."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return parse_json(data, today=today, source=filename)
    if lower.endswith((".csv", ".tsv", ".txt")):
        return parse_csv(data, today=today, source=filename)
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head in (b"[", b"{"):
        return parse_json(data, today=today, source=filename)
    return parse_csv(data, today=today, source=filename)


# --- received bodies -----------------------------------------------------------------

def from_body(body: object) -> NameList:
    """Check the structure of a received ``namelist`` body and return it unchanged.

    Raises :class:`InvalidNameList` (the message is signed, so a failure here means
    the sender's program does not follow the format; the list is not shown)."""
    if not isinstance(body, dict) or set(body) != {"v", "entries"}:
        raise InvalidNameList(["the name list in this message is malformed"])
    if body["v"] != 1:
        raise InvalidNameList(["the name list uses a format version this program does not "
                               "read; upgrade Backchannel"])
    items = body["entries"]
    if not isinstance(items, list) or len(items) > MAX_ENTRIES:
        raise InvalidNameList(["the name list in this message is malformed"])
    if not _entries_well_formed(items):
        for number, item in enumerate(items, start=1):
            if not _entry_well_formed(item):
                raise InvalidNameList([f"entry {number} of the received list is malformed"])
        raise InvalidNameList(["the name list in this message is malformed"])  # unreachable
    # The entries hold only strings: no cycles for the collector to find.
    with collector.paused():
        return NameList(tuple(map(_received_entry, items)))


_FIELD_SET: Final = frozenset(FIELDS)


def _entry_well_formed(item: object) -> bool:
    """One received entry: an object of known fields, all strings of at most
    :data:`MAX_NOTES` characters, with a non-empty family name."""
    return (isinstance(item, dict) and set(item) <= _FIELD_SET
            and all(isinstance(v, str) and len(v) <= MAX_NOTES for v in item.values())
            and bool(item.get("family_name")))


def _entries_well_formed(items: list[Any]) -> bool:
    """``all(map(_entry_well_formed, items))``, column by column: each test runs over
    all 100,000 entries of a large list in C (map, set, chain), not one Python-level
    test per entry. tests/client/test_namelist_received.py checks the equivalence."""
    if not all(issubclass(kind, dict) for kind in set(map(type, items))):
        return False
    if not set(chain.from_iterable(items)) <= _FIELD_SET:
        return False
    if not all(issubclass(kind, str)
               for kind in set(map(type, chain.from_iterable(map(dict.values, items))))):
        return False
    if max(map(len, chain.from_iterable(map(dict.values, items))), default=0) > MAX_NOTES:
        return False
    return all(map(dict.get, items, repeat("family_name")))


def _received_entry(item: dict[str, str]) -> Entry:
    """``Entry(**item)`` for a checked entry, sharing ``item`` as the instance dict.

    The fields an entry leaves out are read from the class (their default, ""), so
    the result compares, hashes and prints as ``Entry(**item)`` does. It saves a
    second dictionary per entry and the frozen dataclass ``__init__`` (ten
    ``object.__setattr__`` calls): for 100,000 entries, ~17 MiB and ~200 ms. The dict
    belongs to the received message body, which nothing modifies."""
    entry = object.__new__(Entry)
    object.__setattr__(entry, "__dict__", item)
    return entry


def encode_body(namelist: NameList) -> bytes:
    return json_dumps(namelist.to_body())


# --- display -----------------------------------------------------------------------

def render_table(namelist: NameList, *, title: str | None = None) -> Table:
    """A rich table with a row number and the columns that hold any value."""
    used = [name for name in FIELDS if any(getattr(e, name) for e in namelist.entries)]
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("#", justify="right", style="dim")
    for name in used:
        # Names, dates and numbers are never broken; other text wraps between words
        # (the longest word of a column, up to 16 characters, keeps its line).
        longest = max((len(w) for e in namelist.entries for w in getattr(e, name).split()),
                      default=0)
        table.add_column(LABELS[name], no_wrap=name in _NO_WRAP, overflow="fold",
                         min_width=min(longest, 16))
    for number, entry in enumerate(namelist.entries, start=1):
        table.add_row(str(number), *(visible(getattr(entry, name)) for name in used))
    return table


def visible(value: str) -> Text:
    """``value`` as plain text for the terminal: never read as rich markup, and with
    control and invisible characters shown as ``<U+202E>`` instead of acting on the
    display (a received list comes from the other side of the table)."""
    return Text(shown(value))


def shown(value: str, *, newlines: bool = True) -> str:
    """:func:`visible` for ``print``: the other side's free text (a place, a reason, a
    relay's failure reason) with escape sequences and invisible characters written as
    ``<U+001B>``, so that they cannot clear, rewrite or hide lines of the terminal."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\n" and newlines:
            out.append(ch)
        elif code in _INVISIBLE or unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
            out.append(f"<U+{code:04X}>")
        else:
            out.append(ch)
    return "".join(out)


def entries_from_rows(rows: Iterable[Mapping[str, str]]) -> NameList:
    """Build a list from trusted mappings (tests, generators); no validation."""
    return NameList(tuple(Entry(**dict(row)) for row in rows))
