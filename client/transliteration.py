"""Script-independent comparison keys for Ukrainian and Russian personal names.

Two steps:

1. :func:`romanize` — any script to lower-case ASCII with ``anyascii`` (a maintained
   Unicode-to-ASCII table covering Cyrillic, and every diacritic a Latin rendering
   may carry: ``ȳ``, ``ĭ``, ``ŝ``, combining ligatures, modifier-letter primes).
2. :func:`skeleton` — fold the differences *between romanization systems* into one
   key, so that ``Хмельницький``, ``Khmelnytskyi`` (Ukrainian national system),
   ``Khmel'nyts'kyy`` (BGN/PCGN) and ``Khmelnitskiy`` (Russian-style) come out alike.
   Spellings the table does not fold (``Hmelnitskiy`` with ``х`` written ``h``, the
   German ``Chmelnyzkyj``) come out a letter or two apart, which the fuzzy comparison
   in :mod:`client.reconcile` absorbs.

A third, optional step, :func:`canonical_names`, makes the Russian and Ukrainian
forms of a given name one key (``Алексей``/``Олексій``, ``Николай``/``Микола``): a
curated table (:data:`GIVEN_NAME_FORMS`), because no library holds these pairs.

Why a small table of our own in step 2: the transliteration libraries (anyascii,
unidecode, translitua, iuliia) all go *from Cyrillic* to one Latin system; none maps
a Latin spelling made by one system onto another system's spelling, which is what
comparing two lists needs. The table below is that mapping and nothing more: each
rule names the Cyrillic letter whose renderings it folds. It is deliberately lossy
(``г``/``ґ``/``h``/``g`` become one letter, iotation is dropped): the key is for
finding and scoring candidates, never shown to anyone, and the date of birth and the
other name parts separate the rare collisions it creates.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from anyascii import anyascii

#: (pattern, replacement) applied in order to romanized lower-case text. Digits stand
#: for letters that several systems write with different letter groups.
_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), replacement) for pattern, replacement in (
        (r"ph", "f"),
        (r"x", "ks"),                              # Oleksandr / Olexandr
        (r"schtsch|shch|shh|szcz|chtch", "1"),     # щ: German, national, GOST, Polish, French
        (r"tsch|tch", "2"),                        # ч: German, French
        (r"sch", "1"),                             # щ: "simple" systems
        (r"ch|cz", "2"),                           # ч; "kh" is handled below
        (r"zh|zs", "3"),                           # ж
        (r"sh|sz", "4"),                           # ш
        (r"kh", "5"),                              # х
        (r"ts|tz|tc|c", "6"),                      # ц: ts, tz (German), tc (GOST 2006), c (ISO 9)
        (r"z6", "6"),                              # German -zk- for -цьк-
        (r"h", "g"),                               # г: h (Ukrainian), g (Russian), ґ
        (r"w", "v"),                               # German
        (r"[yj]", "i"),                            # и/і/ї/й/ы and the iotating y/j/i
        (r"ou", "u"),                              # French
        (r"(?<=[^aeiou])io", "e"),                 # ё after a consonant: Fyodorov / Fedorov
        (r"i+", "i"),                              # ii, iy, yi, iji ...
        (r"i(?=[aeou])", ""),                      # ya/ia/ja, yu/iu/ju, ye/ie/je, yo
        (r"(.)\1+", r"\1"),                        # doubled letters: Gennadii / Genadiy
    ))

#: Russian and Ukrainian forms of one given name, Russian form first. Curated by hand:
#: no maintained library maps them (the transliteration libraries map letters, and
#: these differ by more than letters: Алексей/Олексій, Николай/Микола, Анна/Ганна).
#: Only common names of men and women of military age; a name missing here is still
#: compared letter by letter, so it costs a lower confidence, not a wrong match.
GIVEN_NAME_FORMS: Final[tuple[tuple[str, ...], ...]] = (
    ("Александр", "Олександр"), ("Алексей", "Олексій", "Олекса"), ("Анатолий", "Анатолій"),
    ("Андрей", "Андрій"), ("Аркадий", "Аркадій"), ("Арсений", "Арсеній", "Арсен"),
    ("Артём", "Артем"), ("Валерий", "Валерій"), ("Василий", "Василь"),
    ("Виталий", "Віталій"), ("Владимир", "Володимир"), ("Геннадий", "Геннадій"),
    ("Георгий", "Георгій"), ("Григорий", "Григорій"), ("Даниил", "Данило"),
    ("Дмитрий", "Дмитро"), ("Евгений", "Євген"), ("Егор", "Єгор"),
    ("Захар", "Захарій"), ("Игнат", "Ігнат"), ("Илья", "Ілля"),
    ("Кирилл", "Кирило"), ("Константин", "Костянтин"), ("Леонтий", "Леонтій"),
    ("Матвей", "Матвій"), ("Михаил", "Михайло"), ("Никита", "Микита"),
    ("Николай", "Микола", "Миколай"), ("Павел", "Павло"), ("Пётр", "Петро"),
    ("Семён", "Семен"), ("Сергей", "Сергій"), ("Тимофей", "Тимофій"),
    ("Фёдор", "Федір"), ("Юрий", "Юрій"), ("Яков", "Яків"), ("Иван", "Іван"),
    ("Игорь", "Ігор"), ("Вячеслав", "Вʼячеслав"), ("Гавриил", "Гаврило", "Гаврила"),
    ("Варфоломей", "Варфоломій"), ("Зиновий", "Зиновій"), ("Лукьян", "Лукʼян"),
    ("Демьян", "Демʼян"), ("Ефрем", "Єфрем"), ("Елисей", "Єлисей"),
    ("Анна", "Ганна"), ("Анастасия", "Анастасія"), ("Дарья", "Дарина", "Дарʼя"),
    ("Екатерина", "Катерина"), ("Елена", "Олена"), ("Елизавета", "Єлизавета", "Єлисавета"),
    ("Ирина", "Ірина"), ("Мария", "Марія"), ("Надежда", "Надія"),
    ("Наталья", "Наталія", "Наталия"), ("Светлана", "Світлана"), ("Татьяна", "Тетяна"),
    ("Юлия", "Юлія"), ("Вера", "Віра"), ("Виктория", "Вікторія"),
    ("Евгения", "Євгенія"), ("Любовь", "Любов"), ("Ксения", "Ксенія"),
    ("Софья", "Софія"), ("Валерия", "Валерія"), ("Лилия", "Лілія"), ("Алина", "Аліна"),
    ("Клавдия", "Клавдія"), ("Ольга", "Ольга"), ("Людмила", "Людмила"),
)

_NOT_LETTER = re.compile(r"[^a-z0-9]+")
_SPLIT = re.compile(r"[\s\-‐‑–—/,]+")


def romanize(text: str) -> str:
    """Lower-case ASCII letters of ``text`` (any script); apostrophes and soft signs
    vanish, word separators become single spaces."""
    ascii_text = anyascii(unicodedata.normalize("NFC", text)).lower()
    words = (_NOT_LETTER.sub("", w) for w in _SPLIT.split(ascii_text))
    return " ".join(w for w in words if w)


def skeleton_word(word: str) -> str:
    """The comparison key of one romanized word (see the module doc)."""
    for pattern, replacement in _RULES:
        word = pattern.sub(replacement, word)
    return word


def skeleton(text: str) -> str:
    """The comparison key of a name in any script: its words folded and space-joined."""
    return " ".join(skeleton_word(w) for w in romanize(text).split())


def _name_forms() -> dict[str, str]:
    table: dict[str, str] = {}
    for forms in GIVEN_NAME_FORMS:
        canonical = skeleton(forms[0])
        for form in forms:
            table[skeleton(form)] = canonical
    return table


_CANONICAL: Final = _name_forms()


def canonical_names(key: str) -> str:
    """A skeleton (:func:`skeleton`) with every word that is a Russian or Ukrainian
    form of a given name in :data:`GIVEN_NAME_FORMS` replaced by one form, so that
    ``Олександр``, ``Oleksandr``, ``Александр`` and ``Aleksandr`` share a key."""
    return " ".join(_CANONICAL.get(word, word) for word in key.split())
