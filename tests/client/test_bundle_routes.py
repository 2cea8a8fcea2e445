"""Receipt bundles of envelopes that crossed several nodes: route order, the route
checks of step 7, and times along the route (no network: statements are made with
the nodes' keys on a fixed clock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from client.bundle import encode_bundle, make_bundle, verify_bundle, without_repeats
from keys.clock import FixedClock
from keys.encoding import b64url_encode
from keys.envelope import make_envelope
from keys.identity import Identity
from keys.seal import seal
from keys.statements import Statement, make_statement

T0 = FixedClock().current


class Journey:
    """Kyiv node → Istanbul node → Geneva node → Moscow node, one minute a step."""

    def __init__(self, make_identity: Callable[..., Identity]) -> None:
        self.ua, self.ru = make_identity("Kyiv HQ"), make_identity("Moscow delegation")
        self.nodes = [make_identity(n, "node") for n in ("Kyiv node", "Istanbul node",
                                                         "Geneva node", "Moscow node")]
        kyiv, ist, gen, mos = self.nodes
        self.clock = FixedClock(T0)
        sealed = seal(self.ua, [self.ru.card], "note", {"text": "45 for 45"}, clock=self.clock)
        self.routing = make_envelope(self.ua.signing_key, sealed.data, to=[self.ru.id],
                                     origin=kyiv.id, route=[ist.id, gen.id],
                                     destination=mos.id, clock=self.clock)
        self.accepted = self.make("accepted", kyiv, sender=self.ua.id)
        self.relayed = [self.make("relayed", kyiv, previous=self.ua.id, next=ist.id),
                        self.make("relayed", ist, previous=kyiv.id, next=gen.id),
                        self.make("relayed", gen, previous=ist.id, next=mos.id)]
        self.delivered = self.make("delivered", mos, recipient=self.ru.id)
        self.opened = self.make("opened", self.ru, recipient=self.ru.id,
                                inner=b64url_encode(b"\x05" * 32))
        self.countersigned = [self.make("countersigned", gen, statement=self.opened.id),
                              self.make("countersigned", ist, statement=self.opened.id)]
        self.cards = [self.ua.card, self.ru.card, *(n.card for n in self.nodes)]

    def make(self, kind: str, who: Identity, **fields: str) -> Statement:
        self.clock.advance(minutes=1)
        return make_statement(kind, self.routing.id, who.signing_key, clock=self.clock,
                              **fields)

    def all(self) -> list[Statement]:
        return [self.accepted, *self.relayed, self.delivered, self.opened,
                *self.countersigned]

    def verify(self, statements: list[Statement]):
        bundle = encode_bundle(make_bundle(self.routing, statements, self.cards))
        return verify_bundle(bundle, now=T0 + timedelta(days=1))


@pytest.fixture(scope="module")
def journey(make_identity: Callable[..., Identity]) -> Journey:
    return Journey(make_identity)


def failed_steps(report) -> list[int]:
    return [c.step for c in report.checks if not c.ok]


def test_the_whole_journey_verifies_in_route_order(journey: Journey) -> None:
    # Whatever order they are given in, the bundle holds them in route order.
    report = journey.verify(journey.all()[::-1])
    assert report.ok, report.checks
    assert [e.statement.kind for e in report.events] == [
        "accepted", "relayed", "relayed", "relayed", "delivered", "opened",
        "countersigned", "countersigned"]
    assert [e.statement.by for e in report.events][6:] == [journey.nodes[2].id,
                                                            journey.nodes[1].id]
    route = report.checks[-1]
    assert route.step == 7 and route.text == (
        "route Kyiv node → Istanbul node → Geneva node → Moscow node, as the sender signed "
        "it; relayed by 3 of 3 nodes; delivered; opened; countersigned by 2 of 2 "
        "intermediaries")


def test_route_order_does_not_depend_on_clocks(journey: Journey) -> None:
    """Same-second statements (the usual case) still read as the journey."""
    clock = FixedClock(T0 + timedelta(minutes=1))
    kyiv, ist, gen, mos = journey.nodes
    rid = journey.routing.id
    statements = [make_statement("relayed", rid, n.signing_key, clock=clock, previous=p,
                                 next=x)
                  for n, p, x in ((gen, ist.id, mos.id), (ist, kyiv.id, gen.id),
                                  (kyiv, journey.ua.id, ist.id))]
    report = journey.verify([journey.accepted, *statements])
    assert [e.statement.by for e in report.events] == [kyiv.id, kyiv.id, ist.id, gen.id]


@pytest.mark.parametrize("partial", [
    lambda j: [j.accepted],
    lambda j: [j.accepted, j.relayed[0]],
    lambda j: [j.accepted, *j.relayed],
    lambda j: [j.accepted, *j.relayed, j.delivered],
    # The recipient's view: the opened statement has not travelled back yet.
    lambda j: [j.accepted, *j.relayed, j.delivered, j.opened],
])
def test_partial_journeys_verify(journey: Journey, partial) -> None:
    report = journey.verify(partial(journey))
    assert report.ok, report.checks


@pytest.mark.parametrize("drop,reason", [
    (lambda j: j.accepted, "no accepted statement"),
    (lambda j: j.relayed[0], "a hop is missing"),
    (lambda j: j.relayed[1], "a hop is missing"),
    (lambda j: j.relayed[2], "a hop is missing"),
    (lambda j: j.delivered, "no delivered statement"),
    (lambda j: j.countersigned[0], "countersigned by some intermediaries but not by"),
    (lambda j: j.countersigned[1], "countersigned by some intermediaries but not by"),
])
def test_a_statement_missing_from_the_journey_fails_step_7(journey: Journey, drop,
                                                            reason: str) -> None:
    gone = drop(journey)
    report = journey.verify([s for s in journey.all() if s is not gone])
    assert failed_steps(report) == [7], report.checks
    assert reason in report.checks[-1].text


def test_statements_in_the_wrong_place_fail_step_5(journey: Journey) -> None:
    kyiv, ist, gen, mos = journey.nodes
    wrong = [
        journey.make("relayed", gen, previous=kyiv.id, next=mos.id),     # hides Istanbul
        journey.make("relayed", ist, previous=kyiv.id, next=mos.id),     # skips Geneva
        journey.make("relayed", kyiv, previous=ist.id, next=ist.id),     # not the sender
        journey.make("relayed", mos, previous=gen.id, next=kyiv.id),     # the destination
        journey.make("failed", gen, next=kyiv.id, reason="x"),           # wrong next hop
        journey.make("countersigned", mos, statement=journey.opened.id),  # not intermediary
        journey.make("countersigned", kyiv, statement=journey.opened.id),
        journey.make("countersigned", gen, statement=journey.delivered.id),  # not an opened
        journey.make("relayed", journey.ru, previous=gen.id, next=mos.id),  # not a node
    ]
    for statement in wrong:
        report = journey.verify([*journey.all(), statement])
        assert 5 in failed_steps(report), statement.fields
        assert report.rejected == (statement.id,)


def test_a_hop_twice_fails(journey: Journey) -> None:
    kyiv, ist, gen, _mos = journey.nodes
    again = journey.make("relayed", ist, previous=kyiv.id, next=gen.id)
    report = journey.verify([*journey.all(), again])
    assert failed_steps(report) == [7]
    assert "appears twice" in report.checks[-1].text


def test_repeats_give_way_to_the_first_but_contradictions_stay(journey: Journey) -> None:
    """A node restored from a backup accepts and relays a resubmitted envelope again
    (client.resend): the same statements, later. The sender's bundle keeps the first
    of each; a hop that relayed to another node is not a repeat and still fails."""
    kyiv, ist, gen, _mos = journey.nodes
    later = FixedClock(T0 + timedelta(hours=2))
    again = [make_statement("accepted", journey.routing.id, kyiv.signing_key, clock=later,
                            sender=journey.ua.id),
             make_statement("relayed", journey.routing.id, ist.signing_key, clock=later,
                            previous=kyiv.id, next=gen.id)]
    everything = [*again, *journey.all()]
    assert failed_steps(journey.verify(everything)) == [7]
    kept, repeated = without_repeats(everything)
    assert sorted(s.id for s in kept) == sorted(s.id for s in journey.all())
    assert sorted(s.id for s in repeated) == sorted(s.id for s in again)
    assert journey.verify(kept).ok
    elsewhere = make_statement("relayed", journey.routing.id, ist.signing_key, clock=later,
                               previous=kyiv.id, next=journey.nodes[3].id)
    kept, repeated = without_repeats([*journey.all(), elsewhere])
    assert repeated == []
    report = journey.verify(kept)
    assert not report.ok and report.rejected == (elsewhere.id,)


def test_times_along_the_route(journey: Journey) -> None:
    _kyiv, ist, gen, mos = journey.nodes
    early = FixedClock(T0 + timedelta(seconds=30))
    late = FixedClock(T0 + timedelta(hours=1))
    relayed_i = make_statement("relayed", journey.routing.id, ist.signing_key, clock=late,
                               previous=journey.nodes[0].id, next=gen.id)
    relayed_g = make_statement("relayed", journey.routing.id, gen.signing_key,
                               clock=FixedClock(T0 + timedelta(minutes=10)),
                               previous=ist.id, next=mos.id)
    report = journey.verify([journey.accepted, journey.relayed[0], relayed_i, relayed_g])
    assert failed_steps(report) == [6]
    assert "relayed before the previous hop relayed it" in report.checks[-2].text
    first = make_statement("countersigned", journey.routing.id, ist.signing_key, clock=early,
                           statement=journey.opened.id)
    second = make_statement("countersigned", journey.routing.id, gen.signing_key, clock=late,
                            statement=journey.opened.id)
    report = journey.verify([journey.accepted, *journey.relayed, journey.delivered,
                             journey.opened, first, second])
    assert 6 in failed_steps(report)
    text = report.checks[-2].text
    assert "countersigned before it was opened" in text
    assert "countersigned before the next intermediary countersigned it" in text


def test_a_failed_hop_ends_the_journey(journey: Journey) -> None:
    _kyiv, ist, gen, _mos = journey.nodes
    failed = journey.make("failed", ist, next=gen.id, reason="the next hop could not be "
                          "reached before the envelope expired")
    report = journey.verify([journey.accepted, *journey.relayed[:2], failed])
    assert report.ok, report.checks
    assert "failed" in report.checks[-1].text
    # Istanbul cannot have failed to hand on what it never took.
    report = journey.verify([journey.accepted, journey.relayed[0], failed])
    assert failed_steps(report) == [7]
