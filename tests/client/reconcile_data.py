"""Deterministic test data for list reconciliation (seeded; same data on every machine).

A *left* list in Cyrillic (Ukrainian names in Ukrainian, Russian names in Russian)
and a *right* list of Latin renderings of most of the same people, as the other
side's officers would type them from passports, old registers or by ear:

* romanization systems vary per entry (translitua's implementations: Ukrainian
  national KMU 2010, passport 2007, BGN/PCGN, GOST 1971, British, French, German,
  1996 national; Russian ICAO 2013, international passport 1997, GOST 2006,
  "simple", Telegram, driver's licence); the matcher under test uses a different
  library (anyascii) so the test is not circular;
* the given name in the other language's form (``Олександр`` written ``Александр`` or
  ``Aleksandr``, ``Николай`` written ``Микола``), sometimes left in Cyrillic, as the
  other side's register writes it;
* typos (substitution by a keyboard neighbour, deletion, transposition, doubling);
* given and family names swapped; family names in capitals; patronymics dropped
  (Latin passports carry none); missing dates of birth on either side; a wrong
  digit or swapped day and month in a date;
* distractors that are not the same person: siblings and twins (same family name
  and patronymic, other given name, sometimes the same date of birth), namesakes
  (same family and given name, other date), people on one list only.

Names come from Faker's ``uk_UA`` and ``ru_RU`` name tables, drawn with a Zipf-like
weighting so that common names are common (which is what makes namesakes).

``python -m tests.client.reconcile_data [SEED] [SIZE]`` prints a sample.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta

import translitua
from faker.providers.person.ru_RU import Provider as RussianNames
from faker.providers.person.uk_UA import Provider as UkrainianNames

from client.transliteration import GIVEN_NAME_FORMS

UKRAINIAN_SYSTEMS = (
    (translitua.UkrainianKMU, 40), (translitua.UkrainianPassport2007, 15),
    (translitua.UkrainianBGN, 12), (translitua.UkrainianNational1996, 8),
    (translitua.UkrainianGOST1971, 7), (translitua.UkrainianBritish, 6),
    (translitua.UkrainianFrench, 4), (translitua.UkrainianGerman, 4),
    (translitua.UkrainianSimple, 4),
)
RUSSIAN_SYSTEMS = (
    (translitua.RussianICAO, 35), (translitua.RussianInternationalPassport1997, 20),
    (translitua.RussianGOST2006, 12), (translitua.RussianSimple, 12),
    (translitua.RussianTelegram, 6), (translitua.RussianDriverLicense, 15),
)
RANKS = ("soldier", "senior soldier", "junior sergeant", "sergeant", "lieutenant",
         "senior lieutenant", "captain", "major")
KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"
#: Every Russian or Ukrainian form of a given name -> its forms in the other language.
#: The pairs are the matcher's own curated table: the data set measures matching with
#: the table, not how many names the table covers (see docs/reconciliation.md).
OTHER_FORMS = {form: [f for f in forms if f != form] for forms in GIVEN_NAME_FORMS
               for form in forms}


@dataclass
class Person:
    key: int
    lang: str  # "uk" or "ru"
    female: bool
    family: str
    given: str
    patronymic: str
    dob: date
    service_number: str | None


@dataclass
class DataSet:
    left: list[dict[str, str]]
    right: list[dict[str, str]]
    #: (left index, right index) of every pair naming the same person.
    truth: set[tuple[int, int]] = field(default_factory=set)
    #: What was done to each right entry (for failure analysis).
    notes: list[str] = field(default_factory=list)


class _Pool:
    """Zipf-weighted draws from a name table (order shuffled per seed)."""

    def __init__(self, rng: random.Random, names: tuple[str, ...] | list[str]) -> None:
        self.names = list(dict.fromkeys(names))
        rng.shuffle(self.names)
        self.weights = [1 / (i + 1) ** 0.8 for i in range(len(self.names))]

    def draw(self, rng: random.Random) -> str:
        return rng.choices(self.names, self.weights)[0]


class _Names:
    def __init__(self, rng: random.Random) -> None:
        u, r = UkrainianNames, RussianNames
        self.pools = {
            ("uk", False): (_Pool(rng, u.last_names_male), _Pool(rng, u.first_names_male),
                            _Pool(rng, u.middle_names_male)),
            ("uk", True): (_Pool(rng, u.last_names_female), _Pool(rng, u.first_names_female),
                           _Pool(rng, u.middle_names_female)),
            ("ru", False): (_Pool(rng, r.last_names_male), _Pool(rng, r.first_names_male),
                            _Pool(rng, r.middle_names_male)),
            ("ru", True): (_Pool(rng, r.last_names_female), _Pool(rng, r.first_names_female),
                           _Pool(rng, r.middle_names_female)),
        }

    def person(self, rng: random.Random, key: int) -> Person:
        lang = "uk" if rng.random() < 0.7 else "ru"
        female = rng.random() < 0.15
        family, given, patronymic = (p.draw(rng) for p in self.pools[(lang, female)])
        child = rng.random() < 0.05
        start = date(2008, 1, 1) if child else date(1962, 1, 1)
        span = 4000 if child else 15000
        dob = start + timedelta(days=rng.randrange(span))
        number = None if rng.random() < 0.4 else f"{rng.choice('ABCDEFGH')}{rng.randrange(10**6):06d}"
        return Person(key, lang, female, family, given, patronymic, dob, number)

    def sibling(self, rng: random.Random, of: Person, key: int, twin: bool) -> Person:
        given_pool = self.pools[(of.lang, of.female)][1]
        given = of.given
        while given == of.given:
            given = given_pool.draw(rng)
        dob = of.dob if twin else of.dob + timedelta(days=rng.randrange(400, 4000))
        return Person(key, of.lang, of.female, of.family, given, of.patronymic, dob, None)

    def namesake(self, rng: random.Random, of: Person, key: int) -> Person:
        patronymic = self.pools[(of.lang, of.female)][2].draw(rng)
        dob = of.dob + timedelta(days=rng.choice((-1, 1)) * rng.randrange(200, 6000))
        return Person(key, of.lang, of.female, of.family, of.given, patronymic, dob, None)


def _weighted(rng: random.Random, options):
    return rng.choices([o for o, _ in options], [w for _, w in options])[0]


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        neighbours = KEYBOARD[max(0, KEYBOARD.find(word[i].lower()) - 1):
                              KEYBOARD.find(word[i].lower()) + 2] or "e"
        return word[:i] + rng.choice(neighbours) + word[i + 1:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def _cyrillic(rng: random.Random, p: Person, *, missing_dob: bool) -> dict[str, str]:
    entry = {"family_name": p.family, "given_names": p.given, "patronymic": p.patronymic}
    if not missing_dob:
        entry["date_of_birth"] = p.dob.isoformat()
    if p.service_number:
        entry["service_number"] = p.service_number
    entry["rank"] = rng.choice(RANKS)
    entry["citizenship"] = "UA" if p.lang == "uk" else "RU"
    return entry


def _latin(rng: random.Random, p: Person, notes: list[str]) -> dict[str, str]:
    system = _weighted(rng, UKRAINIAN_SYSTEMS if p.lang == "uk" else RUSSIAN_SYSTEMS)
    done = [system.__name__ if hasattr(system, "__name__") else str(system)[:20]]
    given_form = p.given
    other_forms = OTHER_FORMS.get(p.given)
    if other_forms and rng.random() < 0.3:
        # The other side's register writes the given name in its own language:
        # Олександр as Александр (or Aleksandr), Николай as Микола (or Mykola).
        given_form = rng.choice(other_forms)
        done.append("name-form")
        if rng.random() < 0.4:
            done.append("cyrillic")
            system = None
    if system is None:
        family, given, patronymic = p.family, given_form, p.patronymic
    else:
        family = translitua.translit(p.family, system)
        given = translitua.translit(given_form, system)
        patronymic = translitua.translit(p.patronymic, system)
    if rng.random() < 0.15:
        if rng.random() < 0.6:
            family = _typo(rng, family)
            done.append("typo:family")
        else:
            given = _typo(rng, given)
            done.append("typo:given")
    if rng.random() < 0.3:
        family = family.upper()
    entry = {"family_name": family, "given_names": given}
    if rng.random() < 0.5:
        entry["patronymic"] = patronymic
    else:
        done.append("no-patronymic")
    if rng.random() < 0.07:
        entry["family_name"], entry["given_names"] = entry["given_names"], entry["family_name"]
        done.append("swapped")
    roll = rng.random()
    if roll < 0.08:
        done.append("no-dob")
    elif roll < 0.11:
        text = p.dob.isoformat()
        digits = [i for i, c in enumerate(text) if c.isdigit() and i >= 2]
        i = rng.choice(digits)
        new = str((int(text[i]) + rng.randrange(1, 9)) % 10)
        candidate = text[:i] + new + text[i + 1:]
        try:
            date.fromisoformat(candidate)
            entry["date_of_birth"] = candidate
            done.append("dob-digit")
        except ValueError:
            entry["date_of_birth"] = text
    elif roll < 0.12 and p.dob.day <= 12 and p.dob.day != p.dob.month:
        entry["date_of_birth"] = p.dob.replace(month=p.dob.day, day=p.dob.month).isoformat()
        done.append("dob-swap")
    else:
        entry["date_of_birth"] = p.dob.isoformat()
    if p.service_number and rng.random() < 0.5:
        entry["service_number"] = p.service_number
    notes.append(",".join(done))
    return entry


def generate(seed: int = 2026, size: int = 1000) -> DataSet:
    """``size`` people on the left list; about ``0.9 * size`` of them, plus about
    ``0.12 * size`` distractors, on the right list (shuffled)."""
    rng = random.Random(seed)
    names = _Names(rng)
    people: list[Person] = []
    left_people: list[Person] = []
    while len(left_people) < size:
        p = names.person(rng, len(people))
        people.append(p)
        left_people.append(p)
        # Brothers and twins both on the left list: only the names tell them apart.
        if rng.random() < 0.04 and len(left_people) < size:
            s = names.sibling(rng, p, len(people), twin=rng.random() < 0.5)
            people.append(s)
            left_people.append(s)
    on_right = [p for p in left_people if rng.random() < 0.9]
    distractors: list[Person] = []
    for _ in range(size * 12 // 100):
        of = rng.choice(left_people)
        kind = rng.random()
        if kind < 0.35:
            d = names.sibling(rng, of, len(people) + len(distractors), twin=rng.random() < 0.4)
        elif kind < 0.7:
            d = names.namesake(rng, of, len(people) + len(distractors))
        else:
            d = names.person(rng, len(people) + len(distractors))
        distractors.append(d)
    right_people = on_right + distractors
    rng.shuffle(right_people)

    data = DataSet(left=[], right=[])
    left_index: dict[int, int] = {}
    for p in left_people:
        left_index[p.key] = len(data.left)
        data.left.append(_cyrillic(rng, p, missing_dob=rng.random() < 0.04))
    for p in right_people:
        if p.key in left_index:
            data.truth.add((left_index[p.key], len(data.right)))
        data.right.append(_latin(rng, p, data.notes))
    return data


def main(argv: list[str]) -> None:
    seed = int(argv[1]) if len(argv) > 1 else 2026
    size = int(argv[2]) if len(argv) > 2 else 1000
    data = generate(seed, size)
    print(f"left {len(data.left)}, right {len(data.right)}, same person {len(data.truth)}")
    for left, right in sorted(data.truth)[:15]:
        print(data.left[left], "|", data.right[right], "|", data.notes[right])


if __name__ == "__main__":
    main(sys.argv)
