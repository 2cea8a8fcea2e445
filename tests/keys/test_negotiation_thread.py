"""Proposals, counter-proposals, acceptances and rejections, and the thread they form."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from negotiation_world import World

from keys import dsse
from keys.encoding import json_dumps, json_loads
from keys.errors import DecodeError, TooLarge, UnsupportedVersion, VerificationError
from keys.listref import ListRef
from keys.negotiation_errors import InvalidTerms, NotAcceptable, ThreadBroken, UnknownSigner
from keys.proposal import (
    PROPOSAL_TYPE,
    Counts,
    Proposal,
    Transfer,
    load_message,
    make_decision,
    make_proposal,
    parse_proposal,
    verify_message,
)
from keys.thread import (
    ThreadState,
    accept,
    build_thread,
    counter,
    order_messages,
    reject,
    thread_state,
    verify_thread,
)


@pytest.fixture
def world() -> World:
    return World()


def negotiate(world: World):
    """Kyiv proposes, Moscow counters, Kyiv counters again, Moscow accepts."""
    thread = world.opened()
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.moscow, world.terms(place="Belgorod crossing"),
                        clock=world.clock)
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.kyiv, world.terms(place="Sumy, checkpoint 2"),
                        clock=world.clock)
    world.clock.advance(hours=1)
    _, thread = accept(thread, thread.latest.id, world.moscow, clock=world.clock)
    return thread


# --- proposals -----------------------------------------------------------------------

def test_proposal_round_trip(world):
    proposal = world.propose()
    loaded = load_message(proposal.envelope.to_json())
    assert isinstance(loaded, Proposal)
    assert loaded == proposal
    assert loaded.terms == world.terms()
    assert loaded.author == world.kyiv.id and loaded.supersedes is None
    assert loaded.id == proposal.id and len(loaded.id) == 43
    verify_message(loaded, world.kyiv.public)
    body = json_loads(proposal.envelope.payload, max_bytes=1 << 20)
    assert body["transfers"][0]["counts"] == {"pow": 2, "civilians": 1, "children": 0,
                                              "remains": 0}
    # The payload names lists by salted digest only: no list bytes, no salt.
    assert world.kyiv_list.data not in proposal.envelope.payload
    assert world.kyiv_list.salt.hex() not in proposal.envelope.payload.decode()


def test_proposal_signature_by_someone_else_is_refused(world):
    proposal = world.propose()
    with pytest.raises(VerificationError):
        verify_message(proposal, world.moscow.public)
    forged = dsse.sign(PROPOSAL_TYPE, proposal.envelope.payload, world.moscow)
    with pytest.raises(VerificationError):
        verify_message(parse_proposal(forged), world.kyiv.public)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda w: {"transfers": (Transfer(w.kyiv.id, w.moscow.id, (w.kyiv_list.ref(),),
                                       Counts(pow=45)),
                              w.terms().transfers[1])}, "must add up"),
    (lambda w: {"parties": (w.kyiv.id, w.kyiv.id)}, "different delegations"),
    (lambda w: {"transfers": (w.terms().transfers[0], w.terms().transfers[0])},
     "one transfer from each party"),
    (lambda w: {"transfers": (w.terms().transfers[0],
                              Transfer(w.moscow.id, w.kyiv.id, (w.kyiv_list.ref(),),
                                       Counts(pow=3)))}, "same list"),
    (lambda w: {"guarantors": (w.icrc.id, w.kyiv.id)}, "own guarantor"),
    (lambda w: {"guarantors": (w.icrc.id, w.icrc.id)}, "named twice"),
    (lambda w: {"quorum": 3}, "quorum"),
    (lambda w: {"guarantors": (), "quorum": 1}, "quorum"),
    (lambda w: {"window_to": w.terms().window_from}, "window"),
    (lambda w: {"place": "  "}, "place"),
    (lambda w: {"place": "x" * 201}, "place"),
    (lambda w: {"conditions": "x" * 20_001}, "conditions"),
    (lambda w: {"expires": w.clock.now()}, "expire"),
    # A window already over (a year's typo), and an offer open after the window ends.
    (lambda w: {"window_from": w.clock.now() - timedelta(days=2),
                "window_to": w.clock.now() - timedelta(days=1)}, "handover window ended"),
    (lambda w: {"expires": w.terms().window_to + timedelta(seconds=1)},
     "after the handover window ends"),
])
def test_inconsistent_terms_are_refused(world, change, reason):
    with pytest.raises(InvalidTerms, match=reason):
        world.propose(**change(world))


def test_only_a_party_can_propose(world):
    with pytest.raises(InvalidTerms, match="only one of the two parties"):
        world.propose(signer=world.icrc)


def _resigned(world, mutate) -> dsse.Envelope:
    body = json_loads(world.propose().envelope.payload, max_bytes=1 << 20)
    mutate(body)
    return dsse.sign(PROPOSAL_TYPE, json_dumps(body), world.kyiv)


@pytest.mark.parametrize(("mutate", "error", "reason"), [
    (lambda b: b.update(extra=1), DecodeError, "unknown field"),
    (lambda b: b.pop("quorum"), DecodeError, "missing field"),
    (lambda b: b.update(v=2), UnsupportedVersion, "version 2"),
    (lambda b: b.update(supersedes="abc"), DecodeError, "digest"),
    (lambda b: b.update(parties=["x", "y"]), DecodeError, "identity id"),
    (lambda b: b["transfers"][0]["counts"].pop("remains"), DecodeError, "remains"),
    (lambda b: b["transfers"][0]["counts"].update(pow=-1), DecodeError, "between"),
    (lambda b: b["transfers"][0]["counts"].update(pow=True), DecodeError, "integer"),
    (lambda b: b["transfers"].pop(), DecodeError, "one transfer per party"),
    (lambda b: b.update(window={"from": "2026-12-01", "to": "2026-12-03"}), DecodeError,
     "UTC time"),
    (lambda b: b.update(expires=b["created"]), InvalidTerms, "expires before"),
    (lambda b: b["transfers"][0]["lists"].append(b["transfers"][0]["lists"][0]),
     InvalidTerms, "same list"),
])
def test_malformed_proposals_are_refused(world, mutate, error, reason):
    with pytest.raises(error, match=reason):
        parse_proposal(_resigned(world, mutate))


def test_proposal_size_limit(world):
    envelope = _resigned(world, lambda b: b.update(conditions="x" * 200_000))
    with pytest.raises(TooLarge):
        parse_proposal(envelope)
    with pytest.raises(TooLarge):
        load_message(envelope.to_json())


def test_an_agreement_or_statement_is_not_a_thread_message(world):
    payload = world.propose().envelope.payload
    with pytest.raises(DecodeError, match="not a negotiation message"):
        load_message(dsse.sign("application/vnd.backchannel.agreement+json", payload,
                               world.kyiv).to_json())


# --- thread states -------------------------------------------------------------------

def test_states_through_a_negotiation(world):
    thread = world.opened()
    assert thread_state(thread, world.clock.now()) == ThreadState.OPEN
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.moscow, world.terms(place="Belgorod"), clock=world.clock)
    assert thread.state(world.clock.now()) == ThreadState.COUNTERED
    assert thread.latest.previous == thread.messages[0].id
    world.clock.advance(days=3, hours=2)
    assert thread.state(world.clock.now()) == ThreadState.EXPIRED


def test_accepted_thread(world):
    thread = negotiate(world)
    assert [m.kind for m in thread.messages] == ["proposal", "proposal", "proposal",
                                                 "acceptance"]
    assert thread.state(world.clock.now()) == ThreadState.ACCEPTED
    # Still accepted long after the proposal's expiry: expiry governs acceptance only.
    world.clock.advance(days=30)
    assert thread.state(world.clock.now()) == ThreadState.ACCEPTED
    assert thread.id == thread.messages[0].id
    assert verify_thread(thread.envelopes(), world.keys).messages == thread.messages


def test_rejection_closes_the_thread(world):
    thread = world.opened()
    decision, thread = reject(thread, thread.latest.id, world.moscow, "Not at that crossing",
                              clock=world.clock)
    assert decision.reason == "Not at that crossing"
    assert thread.state(world.clock.now()) == ThreadState.REJECTED
    with pytest.raises(NotAcceptable, match="closed by a rejection"):
        counter(thread, world.moscow, world.terms(), clock=world.clock)
    with pytest.raises(NotAcceptable, match="closed by a rejection"):
        accept(thread, thread.messages[0].id, world.moscow, clock=world.clock)


def test_a_party_may_amend_its_own_latest_proposal(world):
    thread = world.opened()
    _, thread = counter(thread, world.kyiv, world.terms(place="Sumy, gate 3"),
                        clock=world.clock)
    assert thread.state(world.clock.now()) == ThreadState.COUNTERED


def test_a_counter_keeps_the_parties(world):
    with pytest.raises(InvalidTerms, match="keeps the parties"):
        counter(world.opened(), world.moscow,
                world.terms(parties=(world.moscow.id, world.kyiv.id)), clock=world.clock)


# --- what cannot be accepted ---------------------------------------------------------

def test_accepting_a_superseded_proposal_is_refused(world):
    thread = world.opened()
    first = thread.latest.id
    world.clock.advance(hours=1)
    _, thread = counter(thread, world.kyiv, world.terms(place="Sumy, gate 3"),
                        clock=world.clock)
    with pytest.raises(NotAcceptable, match="superseded by a later proposal"):
        accept(thread, first, world.moscow, clock=world.clock)


def test_accepting_an_expired_proposal_is_refused(world):
    thread = world.opened()
    world.clock.advance(days=3)
    with pytest.raises(NotAcceptable, match="expired on 2026-11-26T09:00:00Z"):
        accept(thread, thread.latest.id, world.moscow, clock=world.clock)


def test_a_presented_acceptance_after_expiry_is_refused(world):
    thread = world.opened()
    world.clock.advance(days=4)
    late = make_decision(world.moscow, "acceptance", thread.latest.id, clock=world.clock)
    with pytest.raises(NotAcceptable, match="had expired"):
        build_thread([*thread.messages, late])


def test_accepting_ones_own_proposal_is_refused(world):
    thread = world.opened()
    with pytest.raises(NotAcceptable, match="you made this proposal"):
        accept(thread, thread.latest.id, world.kyiv, clock=world.clock)
    own = make_decision(world.kyiv, "acceptance", thread.latest.id, clock=world.clock)
    with pytest.raises(ThreadBroken, match="cannot accept its own"):
        build_thread([*thread.messages, own])


def test_an_outsider_cannot_accept(world):
    thread = world.opened()
    with pytest.raises(NotAcceptable, match="only the two parties"):
        accept(thread, thread.latest.id, world.icrc, clock=world.clock)


def test_unknown_message_and_decision_are_not_acceptable(world):
    thread = negotiate(world)
    with pytest.raises(NotAcceptable, match="not part of this thread"):
        accept(thread, "A" * 43, world.moscow, clock=world.clock)
    with pytest.raises(NotAcceptable, match="that message is an acceptance, not a proposal"):
        accept(thread, thread.latest.id, world.moscow, clock=world.clock)


# --- broken threads ------------------------------------------------------------------

def test_a_removed_message_is_detected(world):
    messages = list(negotiate(world).messages)
    del messages[1]
    with pytest.raises(ThreadBroken, match="answers a message that is not in the thread: "
                                           "a message was removed"):
        build_thread(messages)


def test_a_removed_opening_is_detected(world):
    messages = list(negotiate(world).messages)
    with pytest.raises(ThreadBroken, match="beginning of the thread is missing"):
        build_thread(messages[1:])


def test_reordered_messages_are_detected(world):
    messages = list(negotiate(world).messages)
    messages[1], messages[2] = messages[2], messages[1]
    with pytest.raises(ThreadBroken, match="out of order"):
        build_thread(messages)
    messages = list(negotiate(World()).messages)
    with pytest.raises(ThreadBroken, match="does not start with a proposal"):
        build_thread([messages[3], *messages[:3]])


def test_a_fork_is_detected(world):
    thread = world.opened()
    world.clock.advance(hours=1)
    a, _ = counter(thread, world.moscow, world.terms(place="A"), clock=world.clock)
    b, _ = counter(thread, world.kyiv, world.terms(place="B"), clock=world.clock)
    with pytest.raises(ThreadBroken, match="both answer message 1"):
        build_thread([thread.latest, a, b])
    with pytest.raises(ThreadBroken, match="forks"):
        order_messages([thread.latest, a, b])


def test_a_duplicated_or_second_opening_message_is_detected(world):
    thread = world.opened()
    with pytest.raises(ThreadBroken, match="repeats message 1"):
        build_thread([thread.latest, thread.latest])
    other = make_proposal(world.moscow, world.terms(place="Elsewhere"), clock=world.clock)
    with pytest.raises(ThreadBroken, match="opens a new negotiation"):
        build_thread([thread.latest, other])


def test_nothing_follows_an_acceptance(world):
    thread = negotiate(world)
    world.clock.advance(hours=1)
    late = make_proposal(world.kyiv, world.terms(place="Later"), supersedes=thread.latest.id,
                         clock=world.clock)
    with pytest.raises(ThreadBroken, match="closed the thread"):
        build_thread([*thread.messages, late])


def test_a_message_by_an_outsider_or_with_other_parties_is_detected(world):
    thread = world.opened()
    outsider = make_decision(world.icrc, "rejection", thread.latest.id, reason="no",
                             clock=world.clock)
    with pytest.raises(ThreadBroken, match="not a party"):
        build_thread([thread.latest, outsider])
    other = make_proposal(world.stranger, world.terms(
        parties=(world.kyiv.id, world.stranger.id),
        transfers=(Transfer(world.kyiv.id, world.stranger.id, (), Counts()),
                   Transfer(world.stranger.id, world.kyiv.id, (), Counts())),
    ), supersedes=thread.latest.id, clock=world.clock)
    with pytest.raises(ThreadBroken, match="not a party"):
        build_thread([thread.latest, other])


def test_a_backdated_answer_is_detected(world):
    thread = world.opened()
    world.clock.advance(hours=-1)
    early = make_decision(world.moscow, "rejection", thread.latest.id, reason="no",
                          clock=world.clock)
    with pytest.raises(ThreadBroken, match="dated before"):
        build_thread([thread.latest, early])


def test_verify_thread_checks_every_signature(world):
    thread = negotiate(world)
    envelopes = list(thread.envelopes())
    # Moscow's counter re-signed by Kyiv: well-linked, but not by its author.
    envelopes[1] = dsse.sign(envelopes[1].payload_type, envelopes[1].payload, world.kyiv)
    envelopes[1] = replace(envelopes[1], signatures=(
        replace(envelopes[1].signatures[0], keyid=world.moscow.id),))
    with pytest.raises(VerificationError):
        verify_thread(envelopes, world.keys)
    with pytest.raises(UnknownSigner, match="no public key"):
        verify_thread(thread.envelopes(), {world.kyiv.id: world.kyiv.public})


def test_order_messages_restores_a_shuffled_thread(world):
    thread = negotiate(world)
    shuffled = list(thread.messages)
    random.Random(4).shuffle(shuffled)
    assert order_messages(shuffled).messages == thread.messages
    with pytest.raises(ThreadBroken, match="missing"):
        order_messages([m for i, m in enumerate(thread.messages) if i != 1])


def test_terms_accessors(world):
    terms = world.terms()
    assert terms.transfer_from(world.moscow.id).counts == Counts(pow=3)
    assert terms.other_party(world.kyiv.id) == world.moscow.id
    assert terms.guarantor_quorum == 2
    assert replace(terms, quorum=1).guarantor_quorum == 1
    assert terms.list_digests() == {world.kyiv_list.digest, world.moscow_list.digest,
                                    world.moscow_extra.digest}
    assert ListRef(world.kyiv_list.digest, 3) == world.kyiv_list.ref()
    with pytest.raises(KeyError):
        terms.other_party(world.icrc.id)
    assert world.terms().expires - world.clock.now() == timedelta(days=3)
