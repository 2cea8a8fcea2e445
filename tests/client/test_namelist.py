"""Name lists: CSV/JSON import with line-numbered problems, export, round trips."""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from client.errors import InvalidNameList, NotANameList
from client.namelist import (
    FIELDS,
    MAX_ENTRIES,
    Entry,
    NameList,
    check_date_of_birth,
    from_body,
    load_namelist,
    parse_csv,
    parse_json,
    render_table,
    to_csv,
    to_json,
)

HEADER = ",".join(FIELDS)
ROWS = [
    "Шевченко,Тарас,Григорович,1994-03-09,сержант,в/ч А1234,UA-123456,Україна,полонений,",
    "Kovalenko,Olena,,1989-11-02,lieutenant,,,,,",
    'Мар\'яненко,"Ірина, Марія",,1990,,,,,,"line one\nline two"',
]
TODAY = date(2026, 11, 23)


def csv_bytes(*rows: str, header: str = HEADER, bom: bool = False, nl: str = "\n") -> bytes:
    data = nl.join([header, *rows]).encode() + nl.encode()
    return b"\xef\xbb\xbf" + data if bom else data


def test_csv_reads_cyrillic_and_latin_exactly() -> None:
    parsed = parse_csv(csv_bytes(*ROWS), today=TODAY)
    entries = parsed.namelist.entries
    assert len(entries) == 3
    assert entries[0].family_name == "Шевченко"
    assert entries[0].patronymic == "Григорович"
    assert entries[0].unit == "в/ч А1234"
    assert entries[1] == Entry("Kovalenko", "Olena", date_of_birth="1989-11-02",
                               rank="lieutenant")
    assert entries[2].family_name == "Мар'яненко"
    assert entries[2].given_names == "Ірина, Марія"
    assert entries[2].notes == "line one\nline two"
    assert parsed.warnings == ()


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("nl", ["\n", "\r\n"])
def test_bom_and_line_endings_do_not_matter(bom: bool, nl: str) -> None:
    plain = parse_csv(csv_bytes(*ROWS[:2]))
    assert parse_csv(csv_bytes(*ROWS[:2], bom=bom, nl=nl)) == plain


def test_header_aliases_in_three_languages_and_semicolons() -> None:
    data = ("\ufeffПрізвище;Ім'я;По батькові;Дата народження;Звання\n"
            "Бондаренко;Андрій;Петрович;1991-05-17;солдат\n").encode()
    entry = parse_csv(data).namelist.entries[0]
    assert (entry.family_name, entry.given_names, entry.patronymic, entry.date_of_birth,
            entry.rank) == ("Бондаренко", "Андрій", "Петрович", "1991-05-17", "солдат")
    data = "Фамилия\tИмя\tОтчество\n Иванов \tИван\tИванович\n".encode()
    assert parse_csv(data).namelist.entries[0].family_name == "Иванов"
    data = b"Surname,First Name,DOB,Service No.\nSmith,John,1990-01-02,X-1\n"
    entry = parse_csv(data).namelist.entries[0]
    assert (entry.family_name, entry.given_names, entry.date_of_birth,
            entry.service_number) == ("Smith", "John", "1990-01-02", "X-1")


def test_bad_date_is_reported_with_its_line_number() -> None:
    rows = [f"Name{i},Given,,1990-01-01,,,,,," for i in range(15)]
    rows.append("Bad,Date,,1990-13-01,,,,,,")
    with pytest.raises(InvalidNameList) as info:
        parse_csv(csv_bytes(*rows))
    assert str(info.value) == "line 17: date_of_birth '1990-13-01' is not a date (YYYY-MM-DD)"
    assert info.value.problems == [
        "line 17: date_of_birth '1990-13-01' is not a date (YYYY-MM-DD)"]


def test_every_problem_is_collected_with_physical_line_numbers() -> None:
    data = csv_bytes(
        "A,B,,,,,,,,",
        '"Multi",B,,,,,,,,"two\nlines"',        # lines 3-4
        ",NoFamily,,,,,,,,",                      # line 5
        "",                                       # line 6: blank, skipped
        "C,D,,13.01.1990,,,,,,",                  # line 7
        "E,F,,,,,,,",                             # line 8: 9 fields
        "=HYPERLINK(1),G,,,,,,,,",                # line 9
        "H\u202eI,J,,,,,,,,",                     # line 10
        "K,L,,1850-01-01,,,,,,",                  # line 11
        "M,N,,2030-01-01,,,,,,")                  # line 12
    with pytest.raises(InvalidNameList) as info:
        parse_csv(data, today=TODAY, source="list.csv")
    assert info.value.problems == [
        "line 5: family_name is empty (it is required)",
        "line 7: date_of_birth '13.01.1990' is not a date (YYYY-MM-DD)",
        "line 8: expected 10 fields like the header, found 9",
        "line 9: family_name begins with '=', which spreadsheet programs run as a formula",
        "line 10: family_name contains an invisible formatting character (U+202E)",
        "line 11: date_of_birth '1850-01-01' is before 1900",
        "line 12: date_of_birth '2030-01-01' is in the future",
    ]
    message = str(info.value)
    assert message.startswith("list.csv: line 5: family_name is empty")
    assert "and 6 more problems" in message
    assert "\n" not in message


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"\n\n  \n", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "this is not a text file"),
    (b"hello world\nthis is a letter\n", "line 1: no name-list columns found"),
    ("\ufeffprice,amount\n1,2\n".encode(), "line 1: no name-list columns found"),
    (HEADER.encode() + b"\n", "the list has no entries"),
    ("family_name\nШевченко\n".encode("cp1251"), "line 2: not UTF-8 text"),
    ("family_name\nX\n".encode("utf-16"), "the file is UTF-16 text"),
])
def test_files_that_are_not_name_lists(data: bytes, message: str) -> None:
    with pytest.raises(NotANameList) as info:
        parse_csv(data)
    assert message in str(info.value)


def test_header_problems() -> None:
    with pytest.raises(InvalidNameList) as info:
        parse_csv(b"given_names,blood type,surname,last name\nA,B,C,D\n")
    assert info.value.problems == [
        "line 1: columns 3 and 4 are both family_name",
        "line 1: unknown column 'blood type'; accepted columns: " + ", ".join(FIELDS),
    ]
    with pytest.raises(InvalidNameList, match=r"line 1: no family_name column"):
        parse_csv(b"given_names,rank\nA,B\n")


def test_malformed_quoting_names_the_line() -> None:
    with pytest.raises(InvalidNameList, match=r"^line 3: malformed CSV"):
        parse_csv(b'family_name,notes\nA,ok\nB,"x"y"\n')


def test_nfc_and_trimming_but_no_other_change() -> None:
    decomposed = unicodedata.normalize("NFD", "Йосипенко")
    assert decomposed != "Йосипенко"
    entry = parse_csv(f"family_name,given_names\n  {decomposed} ,ЁЛКА\n".encode()
                      ).namelist.entries[0]
    assert entry.family_name == "Йосипенко"
    assert entry.given_names == "ЁЛКА"  # case and letters untouched


def test_warnings_do_not_block() -> None:
    mixed = "Шевчeнко"  # a Latin 'e' inside a Cyrillic word
    data = csv_bytes(f"{mixed},Тарас,,1994-03-09,,,A1,,,", "Петренко,Іван,,,,,A1,,,",
                     "Петренко,Іван,,,,,,,,")
    parsed = parse_csv(data)
    assert len(parsed.namelist) == 3
    assert parsed.warnings == (
        "line 2: family_name mixes Latin and Cyrillic letters in one word "
        "(a look-alike letter typed on the other keyboard layout?)",
        "line 3: same service_number as line 2",
        "line 4: same name and date of birth as line 3",
    )
    assert all(mixed not in w and "Петренко" not in w for w in parsed.warnings)


def test_problem_messages_never_show_names() -> None:
    secret = "Таємниченко"
    data = csv_bytes(f"{secret}\u200b,X,,,,,,,,", f"{secret * 30},X,,,,,,,,")
    with pytest.raises(InvalidNameList) as info:
        parse_csv(data)
    assert all(secret not in p for p in info.value.problems)


def test_csv_round_trip_is_byte_exact_for_canonical_input() -> None:
    data = csv_bytes(*ROWS)
    parsed = parse_csv(data)
    out, defused = to_csv(parsed.namelist)
    assert defused == 0
    assert out == data
    assert parse_csv(out) == parsed
    with_bom, _ = to_csv(parsed.namelist, bom=True)
    assert with_bom.startswith(b"\xef\xbb\xbf") and parse_csv(with_bom) == parsed


def test_csv_export_defuses_formulas_from_received_lists() -> None:
    received = from_body({"v": 1, "entries": [{"family_name": "=cmd|' /C calc'!A0"},
                                              {"family_name": "-", "notes": "-2+3"}]})
    out, defused = to_csv(received)
    assert defused == 2
    assert b"'=cmd" in out and b"'-2+3" in out and b"\n-," in out


def test_json_forms() -> None:
    parsed = parse_csv(csv_bytes(*ROWS))
    body_json = to_json(parsed.namelist)
    assert parse_json(body_json) == parsed
    array = b'[{"family_name": "\xd0\x90", "date_of_birth": "2001-02"}]'
    assert parse_json(array).namelist.entries[0] == Entry("А", date_of_birth="2001-02")
    assert load_namelist(array, "list.dat").namelist == parse_json(array).namelist
    assert load_namelist(csv_bytes(*ROWS), "list").namelist == parsed.namelist


@pytest.mark.parametrize(("data", "cls", "message"), [
    (b'{"name": "x"}', NotANameList, "not a name list"),
    (b'"hello"', NotANameList, "not a name list"),
    (b"[1, 2", NotANameList, "not valid JSON (line 1, column 6)"),
    (b"[]", NotANameList, "no entries"),
    (b'{"v": 2, "entries": []}', NotANameList, "version"),
    (b'[{"family_name": "A"}, 5]', InvalidNameList, "entry 2: expected an object"),
    (b'[{"surname": "A"}]', InvalidNameList, "entry 1: unknown field 'surname'"),
    (b'[{"family_name": 5}]', InvalidNameList, "entry 1: family_name must be a string"),
    (b'[{"family_name": "A", "date_of_birth": "1990-02-30"}]', InvalidNameList,
     "entry 1: date_of_birth '1990-02-30' is not a date (YYYY-MM-DD)"),
])
def test_json_problems(data: bytes, cls: type[Exception], message: str) -> None:
    with pytest.raises(cls) as info:
        parse_json(data)
    assert message in str(info.value)


def test_size_limits() -> None:
    long_name = "А" * 201
    with pytest.raises(InvalidNameList, match="line 2: family_name is longer than 200"):
        parse_csv(csv_bytes(f"{long_name},,,,,,,,,"))
    rows = "\n".join("X" for _ in range(MAX_ENTRIES + 1))
    with pytest.raises(InvalidNameList, match=f"more than {MAX_ENTRIES} entries"):
        parse_csv(f"family_name\n{rows}\n".encode())
    with pytest.raises(NotANameList, match="larger than 16 MiB"):
        parse_csv(b"family_name\n" + b"x" * (16 * 1024 * 1024))


@pytest.mark.parametrize(("value", "ok"), [
    ("1990-01-31", True), ("1990-02", True), ("1990", True), ("2000-02-29", True),
    ("1990-02-30", False), ("1990-1-1", False), ("90-01-01", False), ("1990/01/01", False),
    ("１９９０", False), ("1899-12-31", False), ("2026-11-24", False), ("2026-11-23", True),
])
def test_date_of_birth(value: str, ok: bool) -> None:
    assert (check_date_of_birth(value, today=TODAY) is None) is ok


@pytest.mark.parametrize("body", [
    None, [], {"entries": []}, {"v": 1}, {"v": 2, "entries": []},
    {"v": 1, "entries": {}}, {"v": 1, "entries": [{}]}, {"v": 1, "entries": [{"x": "y"}]},
    {"v": 1, "entries": [{"family_name": 1}]}, {"v": 1, "entries": ["A"]},
    {"v": 1, "entries": [], "extra": 1},
])
def test_received_bodies_are_checked(body: object) -> None:
    with pytest.raises(InvalidNameList):
        from_body(body)


def test_table_shows_used_columns_and_defuses_markup() -> None:
    names = from_body({"v": 1, "entries": [{"family_name": "[bold red]Петро[/]\u202e",
                                            "rank": "солдат"}]})
    console = Console(width=120, record=True, color_system=None)
    console.print(render_table(names, title="t"))
    text = console.export_text()
    assert "[bold red]Петро[/]<U+202E>" in text
    assert "Rank" in text and "Unit" not in text


entry_text = st.text(st.characters(codec="utf-8", categories=("L", "M", "N", "Zs", "P")),
                     max_size=30).map(lambda s: unicodedata.normalize("NFC", s).strip())


@st.composite
def namelists(draw: st.DrawFn) -> NameList:
    count = draw(st.integers(1, 8))
    entries = []
    for _ in range(count):
        values = {name: draw(entry_text) for name in FIELDS if name != "date_of_birth"}
        values["family_name"] = values["family_name"] or "X"
        values = {k: ("x" + v if v and (v[0] in "=+@-") else v) for k, v in values.items()}
        entries.append(Entry(**values))
    return NameList(tuple(entries))


@settings(max_examples=150, deadline=None)
@given(namelists())
def test_round_trip_property(names: NameList) -> None:
    csv_out, _ = to_csv(names)
    assert parse_csv(csv_out).namelist == names
    assert parse_json(to_json(names)).namelist == names
    assert from_body(names.to_body()) == names


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for parse in (parse_csv, parse_json):
        try:
            parse(data)
        except (InvalidNameList, NotANameList) as exc:
            assert str(exc)


def test_entry_fields_match_the_field_list() -> None:
    assert tuple(f.name for f in dataclasses.fields(Entry)) == FIELDS
