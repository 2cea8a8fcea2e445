"""The other side's free text on the terminal: escapes shown, never acted on."""

from __future__ import annotations

from client.commands.receipts import _detail
from client.namelist import shown, visible


def test_escapes_and_invisible_characters_are_written_out() -> None:
    hostile = "Sumy\x1b]0;owned\x07\x1b[2J\u202eevil"
    assert shown(hostile) == "Sumy<U+001B>]0;owned<U+0007><U+001B>[2J<U+202E>evil"
    assert shown("two\nlines") == "two\nlines"
    assert shown("two\nlines", newlines=False) == "two<U+000A>lines"
    assert visible(hostile).plain == shown(hostile)
    assert shown("Шевченко, Тарас") == "Шевченко, Тарас"


def test_a_relays_failure_reason_cannot_rewrite_the_receipts_table() -> None:
    detail = _detail("failed", {"next": "n" * 32, "reason": "down\x1b[8m hidden\x1b[0m"}, {})
    assert "\x1b" not in detail and "<U+001B>[8m hidden" in detail
