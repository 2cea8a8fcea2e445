"""List reconciliation across scripts and transliterations: keys, decisions, and the
precision and recall measured on a generated data set (figures in docs/reconciliation.md)."""

from __future__ import annotations

import json

import pytest
from reconcile_data import generate

from client.reconcile import Thresholds, parse_date, reconcile
from client.transliteration import romanize, skeleton

# The generated set used for the figures. The thresholds were tuned on seeds 1, 2, 3,
# 7 and 2026; this seed was not used for tuning.
SEED = 424242


@pytest.mark.parametrize("spellings", [
    ("Хмельницький", "Khmelnytskyi", "Khmel'nyts'kyi", "Khmelnytskyy", "Khmelnitskiy"),
    ("Щербина", "Shcherbyna", "Shcherbȳna", "Schtscherbyna", "Scherbina", "Chtcherbyna",
     "Shherbina"),
    ("Юрій", "Yurii", "Iurii", "Jurij", "Yuriy", "Iouriy"),
    ("Гнатюк", "Hnatiuk", "Gnatyuk", "Hnatjuk", "Hnatiouk"),
    ("Ілля", "Illia", "Illya", "Ilja"),
    ("Фёдоров", "Fyodorov", "Fedorov"),
    ("Наталья", "Natalia", "Natalya", "Natal'ja"),
    ("Євгенівна", "Yevhenivna", "Ievgenivna", "Jewheniwna"),
    ("Олександр", "Oleksandr", "Olexandr"),
    ("Геннадій", "Hennadii", "Gennadiy", "Genadiy"),
    ("Шевченко", "Shevchenko", "SHEVCHENKO", "Shevtchenko"),
])
def test_spellings_share_a_key(spellings):
    assert len({skeleton(s) for s in spellings}) == 1, [skeleton(s) for s in spellings]


def test_romanize_keeps_words_and_drops_signs():
    assert romanize("Кузьмина-Петрова  Анна") == "kuzmina petrova anna"
    assert romanize(" O'Neil ") == "oneil"
    assert skeleton("") == "" and romanize("—") == ""


@pytest.mark.parametrize(("text", "parsed"), [
    ("1990-04-02", (1990, 4, 2)), ("1990-04", (1990, 4, None)), ("1990", (1990, None, None)),
    ("02.04.1990", (1990, 4, 2)), ("2/4/1990", (1990, 4, 2)),
    ("", None), ("unknown", None), (None, None), (19900402, None),
])
def test_parse_date(text, parsed):
    assert parse_date(text) == parsed


def person(family, given, patronymic="", dob="", **extra):
    entry = {"family_name": family, "given_names": given}
    if patronymic:
        entry["patronymic"] = patronymic
    if dob:
        entry["date_of_birth"] = dob
    entry.update(extra)
    return entry


def test_matches_across_scripts_with_typos_swaps_and_missing_dates():
    left = [
        person("Шевченко", "Тарас", "Григорович", "1990-03-09"),
        person("Кузнецов", "Дмитрий", "Алексеевич", "1985-12-01"),
        person("Гнатюк", "Ілля", "Петрович", "1979-07-30"),
        person("Ковальчук", "Олена", "Іванівна", ""),
        person("Бондаренко", "Василь", "Миколайович", "1994-05-17"),
    ]
    right = [
        person("Ilia", "Hnatiuk", "", "1979-07-30"),                 # swapped
        person("KUZNETSOV", "Dmitriy", "", "1985-12-01"),            # passport, no patronymic
        person("Shevchenko", "Taras", "Hryhorovych", "1990-09-03"),  # day/month swapped
        person("Kovalchuk", "Olena", "Ivanivna", "1988-02-11"),      # no date on the left
        person("Bondarenko", "Vasyl", "", "1994-05-17"),
    ]
    result = reconcile(left, right)
    assert {(m.left, m.right) for m in result.matched} == {(0, 2), (1, 1), (2, 0), (3, 3),
                                                           (4, 4)}
    reasons = {m.left: m.reasons for m in result.matched}
    assert "given and family names swapped" in reasons[2]
    assert "date of birth: near" in reasons[0]
    assert "date of birth: missing" in reasons[3]
    assert not result.ambiguous and not result.unmatched_left and not result.unmatched_right
    assert all(0.86 <= m.confidence <= 1.0 for m in result.matched)


def test_twins_are_told_apart_by_their_given_names():
    left = [person("Мельник", "Андрій", "Петрович", "1999-01-01"),
            person("Мельник", "Олег", "Петрович", "1999-01-01")]
    right = [person("Melnyk", "Oleh", "Petrovych", "1999-01-01"),
             person("Melnyk", "Andrii", "Petrovych", "1999-01-01")]
    result = reconcile(left, right)
    assert {(m.left, m.right) for m in result.matched} == {(0, 1), (1, 0)}


def test_namesakes_without_dates_are_ambiguous_not_matched():
    left = [person("Іваненко", "Петро", dob="1970-01-01"),
            person("Іваненко", "Петро", dob="1981-06-30")]
    right = [person("Ivanenko", "Petro")]
    result = reconcile(left, right)
    assert not result.matched
    assert len(result.ambiguous) == 2
    assert {c.right for a in result.ambiguous for c in a.candidates} == {0}
    assert result.unmatched_right == ()


def test_different_dates_are_never_matched():
    result = reconcile([person("Петренко", "Іван", "Іванович", "1970-01-01")],
                       [person("Petrenko", "Ivan", "Ivanovych", "1982-07-15")])
    assert not result.matched
    assert [a.left for a in result.ambiguous] == [0]
    assert result.ambiguous[0].candidates[0].reasons[-1] == "date of birth: different"


def test_service_numbers_weigh_in():
    same = reconcile([person("Сидоренко", "Ігор", service_number="A-123456")],
                     [person("Sydorenko", "Ihor", service_number="a123456")])
    assert same.matched and "same service number" in same.matched[0].reasons
    different = reconcile([person("Сидоренко", "Ігор", dob="1990-01-01",
                                  service_number="A123456")],
                          [person("Sydorenko", "Ihor", dob="1990-01-01",
                                  service_number="B654321")])
    assert not different.matched


def test_a_shared_family_name_alone_is_not_a_match():
    result = reconcile([person("Ткаченко", "Микола", dob="1990-01-01")],
                       [person("Tkachenko", "Serhii", dob="1990-01-01")])
    assert not result.matched and not result.ambiguous
    assert result.unmatched_left == (0,) and result.unmatched_right == (0,)


def test_odd_input_is_tolerated():
    result = reconcile([{"family_name": "Петренко"}, {"notes": "no name"},
                        {"family_name": 7, "given_names": None}],
                       [{"family_name": "Petrenko"}])
    assert result.unmatched_left[-2:] == (1, 2)
    empty = reconcile([], [])
    assert empty.to_dict() == {"matched": [], "ambiguous": [], "unmatched_left": [],
                               "unmatched_right": []}


def test_result_is_json_serialisable():
    result = reconcile([person("Шевченко", "Тарас", dob="1990-03-09")],
                       [person("Shevchenko", "Taras", dob="1990-03-09")])
    assert json.loads(json.dumps(result.to_dict()))["matched"] == [
        {"left": 0, "right": 0, "confidence": 1.0, "reasons": ["date of birth: same"]}]


def test_generator_is_deterministic_and_realistic():
    data = generate(SEED, 1000)
    again = generate(SEED, 1000)
    assert data.left == again.left and data.right == again.right and data.truth == again.truth
    assert len(data.left) >= 1000 and len(data.right) >= 1000
    assert all(any("\u0400" <= ch <= "\u04ff" for ch in e["family_name"]) for e in data.left)
    cyrillic = [any("\u0400" <= ch <= "\u04ff" for ch in e["family_name"])
                for e in data.right]
    assert cyrillic == ["cyrillic" in note for note in data.notes]
    assert 20 <= sum(cyrillic) <= 0.1 * len(data.right)
    notes = ",".join(data.notes)
    for perturbation in ("typo:family", "typo:given", "swapped", "no-dob", "no-patronymic",
                         "dob-digit", "UkrainianKMU", "RussianICAO", "UkrainianGerman",
                         "name-form", "cyrillic"):
        assert perturbation in notes
    assert sum("date_of_birth" not in e for e in data.left) >= 20
    assert len(data.right) - len(data.truth) >= 100      # distractors on the right only
    assert len(data.left) - len(data.truth) >= 50        # people on the left only


def measure(data, thresholds=None):
    result = reconcile(data.left, data.right, thresholds=thresholds)
    matched = {(m.left, m.right) for m in result.matched}
    correct = len(matched & data.truth)
    in_doubt = {(a.left, c.right) for a in result.ambiguous for c in a.candidates}
    return result, correct / len(matched), correct / len(data.truth), len(in_doubt & data.truth)


def test_precision_and_recall_on_a_generated_set(capsys):
    data = generate(SEED, 1000)
    result, precision, recall, truth_in_doubt = measure(data)
    with capsys.disabled():
        print(f"\nreconciliation seed {SEED}: {len(data.left)} x {len(data.right)}, "
              f"{len(data.truth)} true pairs; matched {len(result.matched)}, precision "
              f"{precision:.4f}, recall {recall:.4f}; ambiguous {len(result.ambiguous)} "
              f"({truth_in_doubt} true pairs among their candidates); "
              f"{result.compared} pairs compared")
    assert precision >= 0.98
    assert recall >= 0.95
    # Given names in the other language's form (Олександр / Александр / Aleksandr).
    forms = {(i, j) for i, j in data.truth if "name-form" in data.notes[j]}
    matched = {(m.left, m.right) for m in result.matched}
    forms_recall = len(forms & matched) / len(forms)
    with capsys.disabled():
        print(f"other-language given-name forms: {len(forms)} true pairs, recall "
              f"{forms_recall:.4f}")
    assert len(forms) >= 50 and forms_recall >= 0.95
    # Blocking: far fewer comparisons than all pairs (structural, not timed).
    assert result.compared < 0.05 * len(data.left) * len(data.right)
    # Every left entry ends up in exactly one bucket.
    buckets = ([m.left for m in result.matched] + [a.left for a in result.ambiguous]
               + list(result.unmatched_left))
    assert sorted(buckets) == list(range(len(data.left)))


def test_stricter_thresholds_trade_recall_for_precision():
    data = generate(SEED + 1, 1000)
    _, precision, recall, _ = measure(data)
    _, strict_precision, strict_recall, _ = measure(data, Thresholds(match=0.95, margin=0.1))
    assert strict_precision >= precision and strict_recall < recall


def test_locate_transferred_persons_in_the_agreed_lists():
    from client.reconcile import agreed_position, locate

    pows = [person("Шевченко", "Тарас", "Григорович", "1990-03-09"),
            person("Гнатюк", "Ілля", "Петрович", "1979-07-30")]
    civilians = [person("Ковальчук", "Олена", "Іванівна", "1988-02-11")]
    agreed = [("digest-pows", pows), ("digest-civilians", civilians)]
    transferred = [person("Kovalchuk", "Olena", "", "1988-02-11"),
                   person("Hnatiuk", "Illia", "", "1979-07-30"),
                   person("Bondarenko", "Vasyl", "", "1994-05-17")]
    located = locate(transferred, agreed)
    assert {i: where[:2] for i, where in located.found.items()} == {
        0: ("digest-civilians", 0), 1: ("digest-pows", 1)}
    assert located.not_found == (2,) and not located.ambiguous
    assert agreed_position(agreed, 2) == ("digest-civilians", 0)
    with pytest.raises(IndexError):
        agreed_position(agreed, 3)
