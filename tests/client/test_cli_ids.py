"""Ids are base64url: one in 64 begins with "-". The command line must still take them."""

from __future__ import annotations

from client.cli import build_parser, protect_dash_ids

DASH_ID = "-" + "A" * 20 + "hb" + "x" * 20
PLAIN_ID = "B" * 43


def parse(*argv: str):
    arguments = protect_dash_ids(argv)
    return build_parser(arguments).parse_args(arguments)


def test_positional_dash_id_with_options_after_it():
    args = parse("read", DASH_ID, "--format", "csv")
    assert args.id == DASH_ID
    assert args.format == "csv"


def test_dash_id_as_option_value():
    args = parse("handover", "record", "--agreement", DASH_ID, "--transferred", "f.csv",
                 "--place", "Sumy")
    assert args.agreement == DASH_ID


def test_plain_ids_and_explicit_double_dash_untouched():
    assert protect_dash_ids(["read", PLAIN_ID, "--format", "csv"]) == [
        "read", PLAIN_ID, "--format", "csv"]
    assert protect_dash_ids(["read", "--", DASH_ID]) == ["read", "--", DASH_ID]
    assert parse("receipts", DASH_ID, "--json").json is True


def test_short_options_are_not_mistaken_for_ids():
    assert protect_dash_ids(["read", "-h"]) == ["read", "-h"]
