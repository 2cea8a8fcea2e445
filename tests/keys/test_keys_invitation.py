"""The invitation string format shared by the node and the client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keys.encoding import b64url_encode, json_dumps
from keys.errors import DecodeError
from keys.invitation import (
    PREFIX,
    BadNodeAddress,
    Invitation,
    encode_invitation,
    parse_invitation,
)

EXPIRES = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def make(**changes) -> Invitation:
    fields = {"url": "https://relay.example", "node": "n" * 32, "fingerprint": "1" * 30,
              "secret": bytes(range(32)), "role": "delegation", "expires": EXPIRES}
    fields.update(changes)
    return Invitation(**fields)


def test_round_trip_and_line_breaks():
    text = encode_invitation(make())
    assert parse_invitation(text) == make()
    assert parse_invitation(text[:20] + "\r\n  " + text[20:]) == make()
    assert "secret" not in repr(make()) and bytes(range(32)).hex() not in repr(make())


def raw(**changes) -> str:
    body = {"url": "https://relay.example", "node": "n" * 32, "fp": "1" * 30,
            "secret": b64url_encode(bytes(32)), "role": "delegation",
            "expires": "2026-12-01T09:00:00Z"}
    body.update(changes)
    return PREFIX + b64url_encode(json_dumps(body))


def test_bad_node_address_has_its_own_type():
    with pytest.raises(BadNodeAddress):
        parse_invitation(raw(url="javascript:x"))


@pytest.mark.parametrize("changes", [
    {"fp": "١" * 30}, {"fp": "1" * 29}, {"url": "javascript:x"}, {"role": "node"},
    {"secret": b64url_encode(bytes(31))}, {"extra": 1}, {"expires": "tomorrow"},
])
def test_bad_fields_refused(changes):
    with pytest.raises(DecodeError):
        parse_invitation(raw(**changes))


@pytest.mark.parametrize("text", ["", "bcinv2.abc", PREFIX + "!!", PREFIX + "x" * 5000])
def test_not_an_invitation(text):
    with pytest.raises(DecodeError):
        parse_invitation(text)
