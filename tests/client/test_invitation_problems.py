"""Invitation strings and the node's problem documents (pure parts of joining and
talking to a node)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.errors import (
    Forbidden,
    InvalidInvitation,
    InvitationExpired,
    InvitationRejected,
    NodeKeyMismatch,
    NodeProtocolError,
    NotFound,
    RateLimited,
    RelayRejected,
    TooLargeForNode,
    Unauthorized,
)
from client.invitation import check_node_card, check_not_expired, parse_invitation
from client.problems import _THEN, error_from_response
from keys.clock import FixedClock
from keys.encoding import b64url_encode, format_time, json_dumps
from keys.identity import Identity

T0 = FixedClock().current


def invitation(node: Identity, **over: object) -> str:
    obj: dict[str, object] = {"url": "http://127.0.0.1:8700/", "node": node.id,
                              "fp": node.card.fingerprint.replace(" ", ""),
                              "secret": b64url_encode(b"s" * 32), "role": "delegation",
                              "expires": format_time(T0 + timedelta(days=1))}
    obj.update(over)
    return "bcinv1." + b64url_encode(json_dumps(obj))


@pytest.fixture(scope="module")
def node(make_identity: Callable[..., Identity]) -> Identity:
    return make_identity("Geneva node", "node")


def test_parse_and_pin(node: Identity, alice: Identity) -> None:
    text = invitation(node)
    inv = parse_invitation("  " + text[:30] + "\n" + text[30:] + "\n")
    assert inv.url == "http://127.0.0.1:8700" and inv.node == node.id
    assert inv.role == "delegation" and inv.text == text
    assert "secret" not in repr(inv) and "c3Nz" not in repr(inv)
    check_not_expired(inv, T0)
    with pytest.raises(InvitationExpired, match="ask the node's operator"):
        check_not_expired(inv, T0 + timedelta(days=2))
    check_node_card(inv, node.card)
    with pytest.raises(NodeKeyMismatch, match="not a Backchannel node"):
        check_node_card(inv, alice.card)


def test_a_node_with_another_key_is_refused(node: Identity,
                                            make_identity: Callable[..., Identity]) -> None:
    impostor = make_identity("Impostor", "node")
    with pytest.raises(NodeKeyMismatch, match="do not join"):
        check_node_card(parse_invitation(invitation(node)), impostor.card)
    same_id_other_fp = parse_invitation(invitation(node, fp="0" * 30))
    with pytest.raises(NodeKeyMismatch):
        check_node_card(same_id_other_fp, node.card)


@pytest.mark.parametrize("text", [
    "", "hello", "bcinv1.", "bcinv1.!!!", "bcinv2.eyJ9",
    "bcinv1." + b64url_encode(b"{}"),
    "bcinv1." + b64url_encode(b"[1]"),
])
def test_malformed_invitations(text: str) -> None:
    with pytest.raises(InvalidInvitation):
        parse_invitation(text)


@pytest.mark.parametrize("override", [
    {"fp": "1234"}, {"fp": "x" * 30}, {"secret": "short"}, {"role": "node"},
    {"expires": "tomorrow"}, {"url": "ftp://x"}, {"url": "127.0.0.1:80"}, {"extra": 1},
])
def test_invitations_with_bad_fields(node: Identity, override: dict[str, object]) -> None:
    with pytest.raises(InvalidInvitation):
        parse_invitation(invitation(node, **override))


def problem(slug: str, detail: str = "why") -> bytes:
    return json_dumps({"type": f"https://backchannel.example/problems/{slug}",
                       "title": "t", "status": 400, "detail": detail})


@pytest.mark.parametrize(("slug", "status", "cls", "text"), [
    ("signature-expired", 401, Unauthorized, "check this computer's clock"),
    ("unauthorized", 401, Unauthorized, "revoked"),
    ("replay", 401, Unauthorized, "try again"),
    ("forbidden", 403, Forbidden, "refused"),
    ("invitation-invalid", 403, InvitationRejected, "ask the operator for a new one"),
    ("not-found", 404, NotFound, "no such item"),
    ("gone", 410, NotFound, "expired"),
    ("too-large", 413, TooLargeForNode, "larger than the node accepts"),
    ("unroutable", 400, RelayRejected, "cannot route this envelope: why; check the route: "
                                       "your node must peer with the next node on it (the "
                                       "first --via node"),
])
def test_problem_slugs_map_to_errors(slug: str, status: int, cls: type[RelayRejected],
                                     text: str) -> None:
    error = error_from_response(status, "application/problem+json", problem(slug))
    assert type(error) is cls
    # The node's detail ("why") follows the advice; an action, where there is one, last.
    then = _THEN.get(slug)
    assert text in str(error) and str(error).endswith(": why" + (f"; {then}" if then else ""))
    assert isinstance(error, RelayRejected) and error.slug == slug and error.status == status


def test_problem_details_are_cleaned_and_cut() -> None:
    error = error_from_response(429, "application/problem+json",
                                problem("rate-limited", "slow\n\x1b[31mdown" + "x" * 500),
                                retry_after="7")
    assert isinstance(error, RateLimited)
    text = str(error)
    assert "\n" not in text and "\x1b" not in text and text.endswith("; try again in 7 s")
    assert len(text) < 450


@pytest.mark.parametrize(("ctype", "body"), [
    ("text/html", b"<html>bad gateway</html>"),
    ("application/problem+json", b"not json"),
    ("application/problem+json", b"[1]"),
])
def test_non_problem_answers(ctype: str, body: bytes) -> None:
    assert isinstance(error_from_response(502, ctype, body), NodeProtocolError)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300),
                 st.binary(max_size=300).map(lambda b: "bcinv1." + b64url_encode(b))))
def test_invitation_parser_only_raises_its_error(text: str) -> None:
    try:
        parse_invitation(text)
    except InvalidInvitation as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 599), st.text(max_size=40), st.binary(max_size=300))
def test_any_answer_becomes_a_typed_error(status: int, ctype: str, body: bytes) -> None:
    error = error_from_response(status, ctype, body)
    assert isinstance(error, RelayRejected | NodeProtocolError)
    assert "\n" not in str(error)


def test_invitation_with_a_non_http_node_address_is_refused_plainly():
    from client.errors import InvalidInvitation
    from keys.encoding import b64url_encode, json_dumps

    body = {"url": "ftp://relay.example", "node": "n" * 32, "fp": "1" * 30,
            "secret": b64url_encode(bytes(32)), "role": "delegation",
            "expires": "2030-01-01T00:00:00Z"}
    with pytest.raises(InvalidInvitation, match=r"node address is not an http\(s\) URL"):
        parse_invitation("bcinv1." + b64url_encode(json_dumps(body)))
