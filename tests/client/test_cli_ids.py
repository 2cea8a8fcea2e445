"""Ids are base64url: one in 64 begins with "-". The command line must still take them."""

from __future__ import annotations

from client.cli import build_parser, flag_options, protect_dash_ids

DASH_ID = "-" + "A" * 20 + "hb" + "x" * 20
PLAIN_ID = "B" * 43


def parse(*argv: str):
    parser = build_parser(argv)
    return parser.parse_args(protect_dash_ids(argv, flag_options(parser)))


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


def test_several_ids_keep_their_order():
    """resend submits named messages in the order given (a proposal before its
    disclosure): moving a dash id behind "--" must not move it past the others."""
    other = "C" * 43
    for ids in ([DASH_ID, PLAIN_ID], [PLAIN_ID, DASH_ID, other], [PLAIN_ID, other, DASH_ID]):
        args = parse("resend", *ids, "--json")
        assert args.id == ids and args.json is True
        assert parse("resend", "--json", *ids).id == ids
        assert parse("resend", "--", *ids).id == ids
        # An option between the ids.
        assert parse("resend", ids[0], "--json", *ids[1:]).id == ids
        assert parse("resend", *ids[:-1], "--home", "/tmp/h", ids[-1]).id == ids


def test_a_flag_before_a_dash_id_takes_no_value():
    assert parse("receipts", "--json", DASH_ID).id == DASH_ID
    assert parse("countersign", "--after-expiry", DASH_ID).id == DASH_ID
