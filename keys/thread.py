"""Negotiation threads: the order of proposals, counter-proposals and decisions.

A thread is the sequence of messages (see :mod:`keys.proposal`) that starts with an
opening proposal (``supersedes`` null). Every later message names the **id of the
message just before it** (``supersedes`` for a proposal, ``proposal`` for a decision),
so the chain of digests fixes the whole sequence: neither side can later present a
different order, drop a message in the middle or splice in another thread.

What the chain cannot show is a thread *cut short at the end*; a verifier holding an
agreement checks that the agreement is over the thread's last proposal and that an
acceptance follows it (:func:`keys.agreement.check_agreement_in_thread`).

The rules, in the order :func:`build_thread` checks them for message *n*:

==== ==============================================================================
 1   message 1 is a proposal with ``supersedes`` null; no other message is
 2   no message appears twice
 3   message *n* names message *n-1* (otherwise: removed, reordered, or a fork)
 4   nothing follows an acceptance or a rejection (they close the thread)
 5   a decision answers a proposal, not another decision
 6   the author is one of the two parties; a proposal keeps the same parties
 7   a party does not accept or reject its own proposal
 8   an acceptance is dated before the proposal it accepts expires
 9   no message is dated before the one it answers (beyond :data:`CLOCK_SKEW`)
==== ==============================================================================

States (:class:`ThreadState`), from the last message and the time:

=========== ===========================================================
open        the opening proposal, unanswered and not expired
countered   a later proposal (counter or amendment), not expired
expired     the last message is a proposal whose expiry has passed
accepted    the last message is an acceptance (closed)
rejected    the last message is a rejection (closed)
=========== ===========================================================

Nothing here checks signatures except :func:`verify_thread`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock
from .ed25519 import SigningKey, VerifyKey
from .encoding import format_time
from .negotiation_errors import InvalidTerms, NotAcceptable, ThreadBroken
from .proposal import (
    Decision,
    Message,
    Proposal,
    Terms,
    make_decision,
    make_proposal,
    parse_message,
    resolve_keys,
    verify_message,
)

#: Tolerated clock difference between the two delegations' laptops.
CLOCK_SKEW: Final = timedelta(minutes=5)
#: A negotiation of a few hundred rounds is already extraordinary.
MAX_MESSAGES: Final = 1_000


class ThreadState(StrEnum):
    OPEN = "open"
    COUNTERED = "countered"
    EXPIRED = "expired"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Thread:
    """A checked sequence of messages. Construct with :func:`build_thread` or
    :func:`verify_thread`; one that exists is well-linked."""

    messages: tuple[Message, ...]

    @property
    def id(self) -> str:
        """The thread id: the id of the opening proposal."""
        return self.messages[0].id

    @property
    def root(self) -> Proposal:
        first = self.messages[0]
        if not isinstance(first, Proposal):  # build_thread guarantees it
            raise TypeError("a thread starts with a proposal")
        return first

    @property
    def parties(self) -> tuple[str, str]:
        return self.root.terms.parties

    @property
    def latest(self) -> Message:
        return self.messages[-1]

    @property
    def latest_proposal(self) -> Proposal:
        for message in reversed(self.messages):
            if isinstance(message, Proposal):
                return message
        raise TypeError("a thread starts with a proposal")

    def find(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None

    def index(self, message_id: str) -> int:
        for i, message in enumerate(self.messages):
            if message.id == message_id:
                return i
        raise KeyError(message_id)

    def state(self, now: datetime) -> ThreadState:
        return thread_state(self, now)

    def envelopes(self) -> tuple[dsse.Envelope, ...]:
        return tuple(m.envelope for m in self.messages)


def _label(index: int) -> str:
    return f"message {index + 1}"


def _check_link(messages: Sequence[Message], i: int, positions: Mapping[str, int]) -> None:
    message = messages[i]
    previous = message.previous
    if previous is None:
        raise ThreadBroken(f"{_label(i)} opens a new negotiation; a thread has only one "
                           "opening proposal")
    if previous == messages[i - 1].id:
        return
    where = positions.get(previous)
    if where is None:
        raise ThreadBroken(f"{_label(i)} answers a message that is not in the thread: "
                           f"a message was removed between {_label(i - 1)} and {_label(i)}")
    if where > i:
        raise ThreadBroken(f"the messages are out of order: {_label(i)} answers "
                           f"{_label(where)}, which comes after it")
    for j in range(where + 1, i):
        if messages[j].previous == previous:
            raise ThreadBroken(f"{_label(j)} and {_label(i)} both answer {_label(where)}: "
                               "the thread forks, so its order is not fixed")
    raise ThreadBroken(f"{_label(i)} answers {_label(where)}, not {_label(i - 1)}: "
                       "the messages were reordered or one was removed")


def build_thread(messages: Sequence[Message]) -> Thread:
    """Check that ``messages``, in the order given, form one thread (rules 1-9 in the
    module doc). Signatures are not checked: see :func:`verify_thread`.

    Raises :class:`ThreadBroken` (naming the message at fault and why) or
    :class:`NotAcceptable` (an acceptance of an expired proposal)."""
    if not messages:
        raise ThreadBroken("the thread is empty")
    if len(messages) > MAX_MESSAGES:
        raise ThreadBroken(f"a thread has at most {MAX_MESSAGES} messages")
    # Rule 1.
    first = messages[0]
    if not isinstance(first, Proposal):
        raise ThreadBroken("the thread does not start with a proposal")
    if first.supersedes is not None:
        raise ThreadBroken("message 1 answers an earlier message: the beginning of the "
                           "thread is missing")
    # Rule 2.
    positions: dict[str, int] = {}
    for i, message in enumerate(messages):
        if message.id in positions:
            raise ThreadBroken(f"{_label(i)} repeats {_label(positions[message.id])}")
        positions[message.id] = i
    parties = first.terms.parties
    for i in range(1, len(messages)):
        message, before = messages[i], messages[i - 1]
        # Rule 3.
        _check_link(messages, i, positions)
        # Rule 4.
        if isinstance(before, Decision):
            raise ThreadBroken(f"{_label(i)} follows the {before.kind} in {_label(i - 1)}, "
                               "which closed the thread")
        # Rule 6.
        if message.author not in parties:
            raise ThreadBroken(f"{_label(i)} was written by someone who is not a party")
        if isinstance(message, Proposal) and message.terms.parties != parties:
            raise ThreadBroken(f"{_label(i)} changes the parties of the negotiation")
        if isinstance(message, Decision):
            # Rule 7 (rule 5 holds: ``before`` is a proposal, checked by rule 4).
            if message.author == before.author:
                raise ThreadBroken(f"{_label(i)}: a party cannot {_verb(message)} its own "
                                   "proposal")
            # Rule 8.
            if message.kind == "acceptance" and message.created >= before.terms.expires:
                raise NotAcceptable(
                    f"{_label(i)} accepts a proposal that had expired on "
                    f"{format_time(before.terms.expires)}")
        # Rule 9.
        if message.created < before.created - CLOCK_SKEW:
            raise ThreadBroken(f"{_label(i)} is dated before the message it answers")
    return Thread(tuple(messages))


def _article(decision: Decision) -> str:
    return "an" if decision.kind == "acceptance" else "a"


def _verb(decision: Decision) -> str:
    return "accept" if decision.kind == "acceptance" else "reject"


def verify_thread(envelopes: Sequence[dsse.Envelope], keys: Mapping[str, VerifyKey]) -> Thread:
    """Parse ``envelopes`` (in order), check every author's signature with ``keys``
    (identity id to key) and the thread rules.

    Raises :class:`DecodeError`, :class:`VerificationError`, :class:`UnknownSigner`,
    :class:`ThreadBroken` or :class:`NotAcceptable`."""
    if len(envelopes) > MAX_MESSAGES:
        raise ThreadBroken(f"a thread has at most {MAX_MESSAGES} messages")
    messages = [parse_message(e) for e in envelopes]
    thread = build_thread(messages)
    for message in messages:
        key = resolve_keys([message.author], keys)[message.author]
        verify_message(message, key)
    return thread


def order_messages(messages: Sequence[Message]) -> Thread:
    """Put a set of stored messages (any order) into thread order and check it.

    For a local store that does not keep arrival order. Raises :class:`ThreadBroken`
    if the messages do not form exactly one unbroken chain (several openings, a
    fork, or a gap)."""
    by_previous: dict[str | None, list[Message]] = {}
    for message in messages:
        by_previous.setdefault(message.previous, []).append(message)
    roots = by_previous.get(None, [])
    if len(roots) != 1:
        raise ThreadBroken("these messages do not have exactly one opening proposal")
    ordered = [roots[0]]
    while True:
        answers = by_previous.get(ordered[-1].id, [])
        if not answers:
            break
        if len(answers) > 1:
            raise ThreadBroken(f"two messages answer {_label(len(ordered) - 1)}: the "
                               "thread forks")
        ordered.append(answers[0])
        if len(ordered) > len(messages):
            raise ThreadBroken("the messages answer each other in a loop")
    if len(ordered) != len(messages):
        raise ThreadBroken("some messages are not connected to the thread: one in "
                           "between is missing")
    return build_thread(ordered)


def thread_state(thread: Thread, now: datetime) -> ThreadState:
    latest = thread.latest
    if isinstance(latest, Decision):
        return ThreadState.ACCEPTED if latest.kind == "acceptance" else ThreadState.REJECTED
    if now >= latest.terms.expires:
        return ThreadState.EXPIRED
    return ThreadState.OPEN if latest.supersedes is None else ThreadState.COUNTERED


def check_answerable(thread: Thread, proposal_id: str, party: str, now: datetime, *,
                     action: str = "accept") -> Proposal:
    """The proposal ``proposal_id`` if ``party`` may accept or reject it now.

    Raises :class:`NotAcceptable` with the reason: not in this thread, not a
    proposal, the thread is closed, superseded by a later message, the party's own
    proposal, not a party, or expired."""
    message = thread.find(proposal_id)
    if message is None:
        raise NotAcceptable(f"cannot {action}: {proposal_id[:12]}… is not part of this thread")
    if not isinstance(message, Proposal):
        raise NotAcceptable(f"cannot {action}: that message is {_article(message)} "
                            f"{message.kind}, "
                            "not a proposal")
    latest = thread.latest
    if isinstance(latest, Decision):
        raise NotAcceptable(f"cannot {action}: the negotiation was already closed by "
                            f"{_article(latest)} {latest.kind} on {format_time(latest.created)}")
    if latest.id != message.id:
        later = thread.index(latest.id) - thread.index(message.id)
        raise NotAcceptable(
            f"cannot {action}: this proposal was superseded by a later proposal "
            f"({latest.id[:12]}…, {later} message(s) later, {format_time(latest.created)}); "
            "only the latest proposal can be answered")
    if party not in thread.parties:
        raise NotAcceptable(f"cannot {action}: only the two parties can answer a proposal")
    if party == message.author:
        raise NotAcceptable(f"cannot {action}: you made this proposal; only the other "
                            "party can answer it (send a new proposal to amend it)")
    if now >= message.terms.expires:
        raise NotAcceptable(f"cannot {action}: this proposal expired on "
                            f"{format_time(message.terms.expires)}")
    return message


def _extend(thread: Thread, message: Message) -> Thread:
    return build_thread((*thread.messages, message))


def counter(thread: Thread, signer: SigningKey, terms: Terms, *,
            clock: Clock = SYSTEM_CLOCK) -> tuple[Proposal, Thread]:
    """Sign a proposal that supersedes the thread's last message (a counter-proposal,
    or an amendment of one's own latest proposal). Returns it and the longer thread.

    Raises :class:`NotAcceptable` if the thread is closed, :class:`InvalidTerms`
    for bad terms or a change of parties."""
    latest = thread.latest
    if isinstance(latest, Decision):
        raise NotAcceptable(f"cannot counter: the negotiation was already closed by "
                            f"{_article(latest)} {latest.kind} on {format_time(latest.created)}")
    if terms.parties != thread.parties:
        raise InvalidTerms("a counter-proposal keeps the parties of the negotiation, in "
                           "the same order")
    proposal = make_proposal(signer, terms, supersedes=latest.id, clock=clock)
    return proposal, _extend(thread, proposal)


def accept(thread: Thread, proposal_id: str, signer: SigningKey, *,
           clock: Clock = SYSTEM_CLOCK) -> tuple[Decision, Thread]:
    """Sign the acceptance of the latest proposal. To produce the agreement at the
    same time use :func:`keys.agreement.accept_proposal`.
    Raises :class:`NotAcceptable`."""
    check_answerable(thread, proposal_id, signer.id, clock.now(), action="accept")
    decision = make_decision(signer, "acceptance", proposal_id, clock=clock)
    return decision, _extend(thread, decision)


def reject(thread: Thread, proposal_id: str, signer: SigningKey, reason: str, *,
           clock: Clock = SYSTEM_CLOCK) -> tuple[Decision, Thread]:
    """Sign the rejection of the latest proposal; it closes the thread (to go on
    negotiating, send a counter-proposal instead). Raises :class:`NotAcceptable`."""
    check_answerable(thread, proposal_id, signer.id, clock.now(), action="reject")
    decision = make_decision(signer, "rejection", proposal_id, reason=reason, clock=clock)
    return decision, _extend(thread, decision)
