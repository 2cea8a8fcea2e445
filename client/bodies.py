"""Message bodies by kind: what ``send`` reads from a file and ``read`` shows.

=========== ============================================ ===========================
kind        body (JSON, inside the signed sealed message) from a file
=========== ============================================ ===========================
namelist    ``{"v": 1, "entries": [...]}``               CSV or JSON (client.namelist)
note        ``{"v": 1, "text": "..."}``                  UTF-8 text, kept exactly
=========== ============================================ ===========================

Other kinds (proposals, agreements: later issues) are shown as their JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from .errors import BodyError, NoListFound
from .namelist import NameList, from_body, load_namelist

KINDS: Final = ("namelist", "note")
#: A note is a letter, not a document store.
MAX_NOTE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class Note:
    text: str

    def to_body(self) -> dict[str, Any]:
        return {"v": 1, "text": self.text}


@dataclass(frozen=True)
class Other:
    """A body of a kind this version does not interpret."""

    kind: str
    body: Any


Body = NameList | Note | Other


@dataclass(frozen=True)
class Document:
    """A negotiation document (client.negotiation builds the body: DSSE envelopes only)."""

    body_value: dict[str, Any]
    label: str

    def to_body(self) -> dict[str, Any]:
        return self.body_value


@dataclass(frozen=True)
class Outgoing:
    kind: str
    content: NameList | Note | Document
    warnings: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return self.content.to_body()

    def summary(self) -> str:
        if isinstance(self.content, NameList):
            count = len(self.content)
            return f"name list of {count:,} {'entry' if count == 1 else 'entries'}"
        if isinstance(self.content, Document):
            return self.content.label
        return f"note of {len(self.content.text):,} characters"


def parse_note(data: bytes, *, source: str = "") -> Note:
    if len(data) > MAX_NOTE_BYTES:
        raise BodyError([f"a note is at most {MAX_NOTE_BYTES // 1024} KiB"], source=source)
    if b"\x00" in data:
        raise BodyError(["this is not a text file (it contains NUL bytes)"], source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BodyError([f"line {line}: not UTF-8 text"], source=source) from None
    if not text.strip():
        raise BodyError(["the note is empty"], source=source)
    return Note(text)


def prepare(kind: str, data: bytes, filename: str, *, today: date | None) -> Outgoing:
    """Read a file to send as ``kind``. Raises :class:`BodyError` subclasses."""
    if kind == "namelist":
        try:
            parsed = load_namelist(data, filename, today=today)
        except NoListFound as exc:
            # Only here: for a file in the wrong encoding the hint would mislead.
            exc.args = (f"{exc.args[0]} (to send free text, use --kind note)",)
            raise
        return Outgoing(kind, parsed.namelist, parsed.warnings)
    if kind == "note":
        return Outgoing(kind, parse_note(data, source=filename), ())
    raise BodyError([f"unknown kind {kind!r}: use {' or '.join(KINDS)}"])


def decode(kind: str, body: object) -> Body:
    """A received body. Raises :class:`BodyError` when a known kind is malformed."""
    if kind == "namelist":
        return from_body(body)
    if kind == "note":
        if (not isinstance(body, dict) or set(body) != {"v", "text"} or body["v"] != 1
                or not isinstance(body["text"], str)):
            raise BodyError(["the note in this message is malformed"])
        return Note(body["text"])
    return Other(kind, body)
