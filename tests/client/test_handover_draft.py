"""Drafting a handover record (client.handover_draft): rows located in the agreed
lists, settlements by an officer, and every refusal, without a node or a profile."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from client.errors import ClientError
from client.handover_draft import (
    Unsettled,
    agreed_lists,
    draft,
    parse_settlements,
    settle_lines,
)
from keys.ed25519 import SigningKey
from keys.listref import entry_digest, salt_list
from keys.proposal import Counts, Terms, Transfer

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
KYIV, MOSCOW = (SigningKey(hashlib.sha256(n.encode()).digest()).id for n in ("kyiv", "moscow"))
ALIASES = {KYIV: "UA", MOSCOW: "me"}
PARTIES = {"ua": KYIV, "me": MOSCOW}


def person(family: str, given: str, dob: str = "") -> dict[str, str]:
    entry = {"family_name": family, "given_names": given}
    if dob:
        entry["date_of_birth"] = dob
    return entry


# Kyiv hands over four (two in a second list), Moscow one.
KYIV_A = [person("Шевченко", "Тарас", "1990-03-09"), person("Коваленко", "Олена", "1985-01-02")]
KYIV_B = [person("Бондаренко", "Андрій", "1975-04-04"),
          person("Бондаренко", "Андрій", "1977-04-04")]
MOSCOW_A = [person("Смирнов", "Иван", "1979-11-30")]
REFS = {name: salt_list(name.encode(), len(entries)) for name, entries in
        (("kyiv-a", KYIV_A), ("kyiv-b", KYIV_B), ("moscow-a", MOSCOW_A))}
TERMS = Terms(
    parties=(KYIV, MOSCOW),
    transfers=(Transfer(KYIV, MOSCOW, (REFS["kyiv-a"].ref(), REFS["kyiv-b"].ref()),
                        Counts(pow=4)),
               Transfer(MOSCOW, KYIV, (REFS["moscow-a"].ref(),), Counts(civilians=1))),
    place="Sumy", window_from=T0, window_to=T0 + timedelta(days=1),
    expires=T0 + timedelta(hours=1))
LISTS = agreed_lists(TERMS, {REFS["kyiv-a"].digest: KYIV_A, REFS["kyiv-b"].digest: KYIV_B,
                             REFS["moscow-a"].digest: MOSCOW_A})
CROSSED = [person("Shevchenko", "Taras", "1990-03-09"), person("Bondarenko", "Andrii"),
           person("Smirnov", "Ivan", "1979-11-30"), person("Nowak", "Jan", "1966-06-06")]


def settled(*values: str) -> dict:
    return parse_settlements(values, len(CROSSED), PARTIES, TERMS)


def test_agreed_lists_number_a_givers_entries_across_its_lists() -> None:
    assert [(x.giver, x.offset, x.category) for x in LISTS] == [
        (KYIV, 0, "pow"), (KYIV, 2, "pow"), (MOSCOW, 0, "civilians")]


def test_unsettled_rows_are_named_with_their_candidates() -> None:
    with pytest.raises(Unsettled) as refused:
        draft(LISTS, CROSSED, {}, ALIASES)
    assert str(refused.value).startswith(
        "2 of 4 persons are not settled: row 2 ambiguous (UA:3 0.90, UA:4 0.90); "
        "row 4 on no agreed list. Settle each with")


def test_settled_rows_become_entries_and_unlisted_persons() -> None:
    salts = iter([bytes([7]) * 32])
    result = draft(LISTS, CROSSED, settled("2=UA:4", "4=unlisted:UA"), ALIASES,
                   random=lambda n: next(salts))
    refs = {giver: [(r.list, r.index, r.category) for r in found]
            for giver, found in result.delivered.items()}
    assert refs == {KYIV: sorted([(REFS["kyiv-a"].digest, 0, "pow"),
                                  (REFS["kyiv-b"].digest, 1, "pow")]),
                    MOSCOW: [(REFS["moscow-a"].digest, 0, "civilians")]}
    # The unlisted person: the giver's category by default, a salted digest kept.
    [(digest, salt, data)] = result.entry_salts
    assert result.unlisted[KYIV][0].digest == digest == entry_digest(salt, data)
    assert result.unlisted[KYIV][0].category == "pow" and b"Nowak" in data
    assert result.placements == [
        "  row 1 Shevchenko Taras (1990-03-09) -> UA:1 Шевченко Тарас (1990-03-09) (1.00)",
        "  row 2 Bondarenko Andrii -> UA:4 Бондаренко Андрій (1977-04-04) (settled)",
        "  row 3 Smirnov Ivan (1979-11-30) -> me:1 Смирнов Иван (1979-11-30) (1.00)",
        "  row 4 Nowak Jan (1966-06-06): handed over by UA without being listed (pow, "
        "settled)"]


def test_an_officer_overrides_a_match_or_skips_a_row() -> None:
    result = draft(LISTS, CROSSED, settled("1=UA:2", "2=skip", "4=skip"), ALIASES)
    assert [(r.list, r.index) for r in result.delivered[KYIV]] == [
        (REFS["kyiv-a"].digest, 1)]
    assert result.unlisted == {} and "skipped (settled)" in result.placements[1]


@pytest.mark.parametrize(("values", "reason"), [
    (("2=UA",), "expected ROW=ALIAS:N"),
    (("9=UA:1",), "the file has rows 1 to 4"),
    (("2=UA:1", "2=skip"), "row 2 is settled twice"),
    (("2=ICRC:1",), "ICRC is not a party of the agreement"),
    (("4=unlisted:UA:prisoners",), "the category is one of pow, civilians"),
    (("2=UA:0",), "entries count from 1"),
])
def test_bad_settlements_are_refused(values: tuple[str, ...], reason: str) -> None:
    with pytest.raises(ClientError, match=reason):
        settled(*values)


def test_an_entry_past_the_givers_lists_is_refused() -> None:
    with pytest.raises(ClientError, match="UA hands over 4 listed persons; there is no "
                                          "entry 5"):
        draft(LISTS, CROSSED, settled("2=UA:5", "4=skip"), ALIASES)


def test_settlement_files_allow_comments_and_blank_lines() -> None:
    assert settle_lines("# decisions of 2 December\n2=UA:4  # born 1977\n\n4=skip\n") == [
        "2=UA:4", "4=skip"]
