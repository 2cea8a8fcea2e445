"""Receipt bundles: the evidence for one envelope, verifiable offline by anyone.

Format (UTF-8 JSON, exactly as :func:`encode_bundle` writes it)::

    {
     "v": 1,
     "kind": "backchannel-receipt-bundle",
     "envelope": <routing envelope DSSE, signed by the sender>,
     "statements": [<statement DSSE>, ...],
     "cards": [<identity card DSSE>, ...]
    }

Nothing in it is taken on trust: ``v`` and ``kind`` are constants, every other
byte is inside a signed DSSE envelope, and everything derived -- the envelope id,
the statement ids, which card belongs to which signer -- is recomputed. The file
must be byte-for-byte what :func:`encode_bundle` produces from its own contents
(statements in time order, the sender's card first, then each signer's card in the
order it first signs, one space of indentation), so that changing any byte at all,
even a space or the alphabet of a base64 string, makes verification fail.

The cards are self-signed, so a bundle proves that *the keys named in it* signed;
whose keys those are is established by comparing their fingerprints with the ones
exchanged out of band (``verify`` prints them).

Verification (:func:`verify_bundle`) runs these steps and reports each:

1. structure: the JSON members, versions and sizes (a failure here stops);
2. canonical form: the bytes are the canonical encoding of what was parsed;
3. cards: each card's self-signature and key; no duplicate, none unused;
4. envelope: signed by the sender it names, whose card is present;
5. statements: each names this envelope, is signed by the card of its ``by``,
   was made while that card was valid, and comes from the right party at the right
   place -- *accepted* by the origin node, *relayed* by a node on the route other
   than the destination naming its neighbours (the sender before the origin),
   *failed* by such a node naming the next hop, *delivered* by the destination node
   to a listed recipient, *opened* by a listed recipient itself, *countersigned* by
   an intermediary naming an *opened* statement of the bundle;
6. times: each statement no earlier (within ``skew``) than the ones it follows on
   the route (accepted, relayed hop by hop, delivered, opened, countersigned from
   the last intermediary back to the first), none before the envelope was created,
   nothing accepted, relayed or delivered after it expired;
7. route: the statements form the route the sender signed, without gaps or
   repeats -- at most one of each (per hop, per recipient); anything at all needs
   the origin's *accepted*; a statement from a hop needs the *relayed* of every hop
   before it, a *delivered* needs all of them, an *opened* the *delivered* to that
   recipient; an *opened* statement is countersigned by every intermediary (it came
   back to the origin along the route) or by none (it has not travelled yet).

Statements are stored in route order (by :func:`route_rank`, then time), so that
the file reads as the journey: accepted, relayed hop by hop, delivered and opened,
then the countersignatures from the last intermediary back to the first.

What a bundle does *not* show is what was inside the message: an *opened*
statement carries the digest of the signed inner message, which only the sender and
the recipients can match against the content.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from keys import dsse
from keys.card import MAX_CARD_BYTES, Card, load_card
from keys.encoding import expect_object, json_loads
from keys.envelope import MAX_ENVELOPE_BYTES, Routing, parse_routing, verify_routing
from keys.errors import BackchannelError, DecodeError
from keys.statements import MAX_STATEMENT_BYTES, Statement, parse_statement, verify_statement

from .errors import BundleInvalid

BUNDLE_KIND: Final = "backchannel-receipt-bundle"
#: 32 recipients, a route of 8 nodes, each signing a few statements: ~100 KB.
MAX_BUNDLE_BYTES: Final = 4 * 1024 * 1024
MAX_STATEMENTS: Final = 512
MAX_CARDS: Final = 64
#: Clocks of nodes and laptops differ; the same tolerance as for cards.
CLOCK_SKEW: Final = timedelta(minutes=5)
KIND_ORDER: Final = {"accepted": 0, "relayed": 1, "delivered": 2, "opened": 3,
                     "countersigned": 4, "failed": 5}


@dataclass(frozen=True)
class Bundle:
    routing: Routing
    statements: tuple[Statement, ...]
    cards: tuple[Card, ...]


def route_rank(statement: Statement, routing: Routing) -> tuple[int, int]:
    """Where a statement stands on the envelope's journey: accepted (0); relayed or
    failed by the hop at index i (1, i); delivered and opened (2); countersigned by
    the hop at index i (3, -i: they are made on the way back); anything else last."""
    hops = routing.hops
    kind = statement.kind
    if kind == "accepted":
        return (0, 0)
    if kind in ("relayed", "failed") and statement.by in hops:
        return (1, hops.index(statement.by))
    if kind in ("delivered", "opened"):
        return (2, 0)
    if kind == "countersigned" and statement.by in hops:
        return (3, -hops.index(statement.by))
    return (4, 0)


def _order(statements: Iterable[Statement], routing: Routing) -> tuple[Statement, ...]:
    unique = {s.id: s for s in statements}
    return tuple(sorted(unique.values(),
                        key=lambda s: (route_rank(s, routing), s.at, KIND_ORDER[s.kind],
                                       s.by, s.id)))


def without_repeats(statements: Iterable[Statement]
                    ) -> tuple[list[Statement], list[Statement]]:
    """The earliest of statements that say the same thing at different times (same
    kind, signer, envelope and fields), and the later ones set aside: a node restored
    from a backup accepts or delivers a resubmitted envelope again (client.resend).
    Statements that differ in anything but their time stay, so that two contradicting
    ones still fail step 7; the repeats are shown to the officer, not dropped."""
    first: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], Statement] = {}
    unique = {st.id: st for st in statements}
    for st in unique.values():
        key = (st.kind, st.by, st.envelope, tuple(sorted(st.fields.items())))
        kept = first.get(key)
        if kept is None or (st.at, st.id) < (kept.at, kept.id):
            first[key] = st
    chosen = {st.id for st in first.values()}
    return list(first.values()), [st for st in unique.values() if st.id not in chosen]


def make_bundle(routing: Routing, statements: Iterable[Statement],
                cards: Iterable[Card]) -> Bundle:
    """Assemble a bundle: statements deduplicated and ordered, and exactly the cards
    needed (the sender's, then each signer's). Raises ``ValueError`` if a needed card
    is not among ``cards``."""
    by_id = {c.id: c for c in cards}
    ordered = _order(statements, routing)
    needed = list(dict.fromkeys([routing.sender, *(s.by for s in ordered)]))
    missing = [i for i in needed if i not in by_id]
    if missing:
        raise ValueError(f"no card for {', '.join(missing)}")
    return Bundle(routing, ordered, tuple(by_id[i] for i in needed))


def _signed(statement: Statement) -> dict[str, Any]:
    if statement.signed is None:
        raise ValueError("unsigned statement")
    return statement.signed.to_dict()


def encode_bundle(bundle: Bundle) -> bytes:
    """The one canonical encoding of ``bundle``."""
    obj = {"v": 1, "kind": BUNDLE_KIND, "envelope": bundle.routing.envelope.to_dict(),
           "statements": [_signed(s) for s in bundle.statements],
           "cards": [c.envelope.to_dict() for c in bundle.cards]}
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Check:
    step: int
    ok: bool
    text: str


@dataclass(frozen=True)
class Event:
    """One verified statement, with the card of its signer."""

    statement: Statement
    signer: Card

    @property
    def subject(self) -> str | None:
        fields = self.statement.fields
        return fields.get("recipient") or fields.get("next") or fields.get("statement")


@dataclass(frozen=True)
class BundleReport:
    envelope_id: str
    routing: Routing
    sender: Card | None
    cards: dict[str, Card]
    events: tuple[Event, ...]
    checks: tuple[Check, ...]
    #: Raw statements that failed (kept for display).
    rejected: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def raise_for_failure(self) -> None:
        failure = self.first_failure()
        if failure is not None:
            raise BundleInvalid(f"the receipt bundle does not verify: step {failure.step}: "
                                f"{failure.text}")

    def has(self, kind: str, subject: str | None = None) -> bool:
        return any(e.statement.kind == kind and (subject is None or e.subject == subject)
                   for e in self.events)


def parse_bundle_unverified(data: bytes) -> tuple[dsse.Envelope, list[dsse.Envelope],
                                                  list[dsse.Envelope]]:
    """Step 1: the structure. Raises :class:`BundleInvalid`."""
    try:
        obj = expect_object(json_loads(data, max_bytes=MAX_BUNDLE_BYTES, what="bundle"),
                            required=("v", "kind", "envelope", "statements", "cards"),
                            what="bundle")
        if obj["v"] != 1 or isinstance(obj["v"], bool):
            raise DecodeError("bundle: unsupported version")
        if obj["kind"] != BUNDLE_KIND:
            raise DecodeError("bundle: this is not a receipt bundle")
        statements, cards = obj["statements"], obj["cards"]
        if not isinstance(statements, list) or len(statements) > MAX_STATEMENTS:
            raise DecodeError(f"bundle: statements must be a list of at most {MAX_STATEMENTS}")
        if not isinstance(cards, list) or not 0 < len(cards) <= MAX_CARDS:
            raise DecodeError(f"bundle: cards must be a list of 1 to {MAX_CARDS}")
        envelope = dsse.Envelope.from_dict(obj["envelope"], max_payload=MAX_ENVELOPE_BYTES)
        signed = [dsse.Envelope.from_dict(s, max_payload=MAX_STATEMENT_BYTES)
                  for s in statements]
        card_envelopes = [dsse.Envelope.from_dict(c, max_payload=MAX_CARD_BYTES)
                          for c in cards]
    except DecodeError as exc:
        raise BundleInvalid(f"this is not a well-formed receipt bundle ({exc})") from None
    return envelope, signed, card_envelopes


def _place_problem(statement: Statement, routing: Routing) -> str | None:
    """For *relayed* and *failed*: ``None`` if the signer is a node of the route that
    hands on (not the destination) and names its neighbours; else why not."""
    hops = routing.hops
    kind = statement.kind
    if statement.by not in hops or statement.by == hops[-1]:
        return f"{kind} by a node that does not hand the envelope on along its route"
    index = hops.index(statement.by)
    if statement.fields["next"] != hops[index + 1]:
        return f"{kind} names another next hop than the route the sender signed"
    previous = routing.sender if index == 0 else hops[index - 1]
    if kind == "relayed" and statement.fields["previous"] != previous:
        return "relayed names another previous hop than the route the sender signed"
    return None


def _party_check(statement: Statement, signer: Card, routing: Routing,
                 opened_ids: set[str]) -> str | None:
    """``None`` if the right kind of party signed ``statement``; else why not."""
    kind, fields = statement.kind, statement.fields
    if kind == "accepted":
        if statement.by != routing.origin or signer.role != "node":
            return "accepted, but not by the sender's node named in the envelope"
        if fields["sender"] != routing.sender:
            return "accepted for another sender than the envelope's"
    elif kind == "delivered":
        if statement.by != routing.destination or signer.role != "node":
            return "delivered, but not by the recipients' node named in the envelope"
        if fields["recipient"] not in routing.to:
            return "delivered to someone who is not a recipient of the envelope"
    elif kind == "opened":
        if fields["recipient"] != statement.by or statement.by not in routing.to:
            return "opened by someone who is not a recipient of the envelope"
        if signer.role == "node":
            return "an opened statement must come from the recipient, not a node"
    elif kind in ("relayed", "failed"):
        if signer.role != "node":
            return f"{kind}, but not by a node"
        return _place_problem(statement, routing)
    elif kind == "countersigned":
        if statement.by not in routing.route or signer.role != "node":
            return "countersigned by a node that is not an intermediary of the route"
        if fields["statement"] not in opened_ids:
            return "countersigns a statement that is not an opened statement of the bundle"
    return None


def _time_checks(routing: Routing, events: Sequence[Event], skew: timedelta) -> list[str]:
    problems: list[str] = []
    hops = routing.hops
    accepted: list[datetime] = []
    relayed: dict[int, datetime] = {}
    delivered: dict[str, datetime] = {}
    opened: dict[str, datetime] = {}
    for event in events:
        st = event.statement
        if st.kind == "accepted":
            accepted.append(st.at)
        elif st.kind == "relayed":
            relayed.setdefault(hops.index(st.by), st.at)
        elif st.kind == "delivered":
            delivered.setdefault(st.fields["recipient"], st.at)
        elif st.kind == "opened":
            opened.setdefault(st.id, st.at)

    def before(earlier: datetime | None, later: datetime, text: str) -> None:
        if earlier is not None and later < earlier - skew:
            problems.append(text)

    first_accepted = min(accepted) if accepted else None
    for event in events:
        st, at = event.statement, event.statement.at
        if at < routing.created - skew:
            problems.append(f"{st.kind} statement dated before the envelope was created")
        if st.kind in ("accepted", "delivered", "relayed") and at > routing.expires + skew:
            problems.append(f"{st.kind} statement dated after the envelope expired")
        if st.kind == "relayed":
            index = hops.index(st.by)
            before(first_accepted, at, "relayed before it was accepted")
            before(relayed.get(index - 1), at, "relayed before the previous hop relayed it")
        elif st.kind == "failed":
            before(relayed.get(hops.index(st.by)), at, "failed before it was relayed")
        elif st.kind == "delivered":
            before(first_accepted, at, "delivered before it was accepted")
            before(relayed.get(len(hops) - 2), at, "delivered before the last hop relayed it")
        elif st.kind == "opened":
            before(delivered.get(st.by), at, "opened before it was delivered")
        elif st.kind == "countersigned":
            target = st.fields["statement"]
            index = hops.index(st.by)
            before(opened.get(target), at, "countersigned before it was opened")
            later_hops = [e.statement.at for e in events
                          if e.statement.kind == "countersigned"
                          and e.statement.fields["statement"] == target
                          and hops.index(e.statement.by) == index + 1]
            before(min(later_hops, default=None), at,
                   "countersigned before the next intermediary countersigned it")
    return list(dict.fromkeys(problems))


def _step_key(st: Statement) -> tuple[str, str]:
    """What a statement is the one step of: per hop, per recipient, per countersigned
    statement and intermediary."""
    if st.kind in ("delivered", "opened"):
        return (st.kind, st.fields["recipient"])
    if st.kind == "countersigned":
        return (st.kind, f"{st.by} {st.fields['statement']}")
    return (st.kind, st.by)


def _name(ident: str, cards: dict[str, Card]) -> str:
    card = cards.get(ident)
    return f"{card.name} ({ident})" if card is not None else ident


def _route_checks(routing: Routing, events: Sequence[Event],
                  cards: dict[str, Card]) -> list[str]:
    """Step 7: the statements form the route the sender signed, without gaps."""
    problems: list[str] = []
    hops = routing.hops
    kinds = [e.statement for e in events]
    counts: dict[tuple[str, str], int] = {}
    for st in kinds:
        key = _step_key(st)
        counts[key] = counts.get(key, 0) + 1
    if any(n > 1 for n in counts.values()):
        problems.append("a hop or a recipient appears twice for the same step")
    if not kinds:
        return problems
    if not any(st.kind == "accepted" for st in kinds):
        problems.append("no accepted statement by the origin, although the bundle shows "
                        "the envelope further on")
    relayed = {hops.index(st.by) for st in kinds if st.kind == "relayed"}
    reach = 0
    for st in kinds:
        if st.kind == "relayed":
            reach = max(reach, hops.index(st.by))
        elif st.kind == "failed":
            reach = max(reach, hops.index(st.by) + 1)
        elif st.kind in ("delivered", "opened", "countersigned"):
            reach = max(reach, len(hops) - 1)
    missing = [_name(hops[i], cards) for i in range(reach) if i not in relayed]
    if missing:
        problems.append(f"a hop is missing: no relayed statement by {', '.join(missing)}, "
                        "although the envelope went further")
    delivered = {st.fields["recipient"] for st in kinds if st.kind == "delivered"}
    if any(st.kind == "opened" and st.by not in delivered for st in kinds):
        problems.append("opened, but the bundle has no delivered statement for that "
                        "recipient")
    intermediaries = set(routing.route)
    for st in kinds:
        if st.kind != "opened":
            continue
        signers = {c.by for c in kinds
                   if c.kind == "countersigned" and c.fields["statement"] == st.id}
        if signers and signers != intermediaries:
            absent = [_name(i, cards) for i in routing.route if i not in signers]
            problems.append(f"an opened statement is countersigned by some intermediaries "
                            f"but not by {', '.join(absent)}")
    return problems


def _route_summary(routing: Routing, events: Sequence[Event], cards: dict[str, Card]) -> str:
    def name(ident: str) -> str:
        card = cards.get(ident)
        return card.name if card is not None else ident[:12] + "…"

    kinds = [e.statement for e in events]
    path = " → ".join(name(h) for h in routing.hops)
    relayed = len({st.by for st in kinds if st.kind == "relayed"})
    parts = [f"route {path}, as the sender signed it"]
    if len(routing.hops) > 1:
        parts.append(f"relayed by {relayed} of {len(routing.hops) - 1} nodes")
    done = [k for k in ("delivered", "opened", "failed") if any(st.kind == k for st in kinds)]
    parts.extend(done)
    if routing.route and any(st.kind == "opened" for st in kinds):
        signers = {st.by for st in kinds if st.kind == "countersigned"}
        parts.append(f"countersigned by {len(signers)} of {len(routing.route)} intermediaries")
    return "; ".join(parts)


def verify_bundle(data: bytes, *, now: datetime, skew: timedelta = CLOCK_SKEW
                  ) -> BundleReport:
    """Verify a bundle file's bytes; see the module docstring for the steps.

    Raises :class:`BundleInvalid` when the structure is unreadable (step 1);
    otherwise returns a report whose ``checks`` say what passed and what failed
    (call :meth:`BundleReport.raise_for_failure`)."""
    checks: list[Check] = []

    def check(step: int, ok: bool, text: str) -> None:
        checks.append(Check(step, ok, text))

    # Step 1: structure.
    envelope, signed_statements, card_envelopes = parse_bundle_unverified(data)
    try:
        routing = parse_routing(envelope)
    except DecodeError as exc:
        raise BundleInvalid(f"the bundle's envelope is malformed ({exc})") from None
    statements: list[Statement] = []
    for number, signed in enumerate(signed_statements, start=1):
        try:
            statements.append(parse_statement(signed))
        except DecodeError as exc:
            raise BundleInvalid(f"statement {number} of the bundle is malformed ({exc})"
                                ) from None
    check(1, True, f"structure: 1 envelope, {len(statements)} statements, "
                   f"{len(card_envelopes)} cards")

    # Step 3 (before 2, whose re-encoding needs the parsed cards): cards.
    cards: dict[str, Card] = {}
    card_order: list[Card] = []
    card_problems: list[str] = []
    for number, card_envelope in enumerate(card_envelopes, start=1):
        try:
            card = load_card(card_envelope, now=now, allow_expired=True)
        except BackchannelError as exc:
            card_problems.append(f"card {number} does not verify ({exc})")
            continue
        if card.id in cards:
            card_problems.append(f"card {number} appears twice")
            continue
        cards[card.id] = card
        card_order.append(card)
    used = {routing.sender, *(s.by for s in statements)}
    unused = [c.id for c in card_order if c.id not in used]
    if unused:
        card_problems.append(f"{len(unused)} card(s) sign nothing in the bundle")

    # Step 2: canonical form (recomputed from everything parsed).
    ordered = _order(statements, routing)
    wanted = dict.fromkeys([routing.sender, *(s.by for s in ordered)])
    canonical_cards = tuple(cards[i] for i in wanted if i in cards)
    canonical = encode_bundle(Bundle(routing, ordered, canonical_cards))
    same = canonical == data
    check(2, same, "canonical form: the file is exactly as exported" if same else
          "canonical form: the file is not exactly as exported (a byte was changed, "
          "added or removed, or statements or cards were reordered)")
    check(3, not card_problems,
          "; ".join(card_problems) if card_problems else
          f"cards: {len(cards)} self-signed cards, each used")

    # Step 4: the envelope.
    sender = cards.get(routing.sender)
    if sender is None:
        check(4, False, "envelope: the sender's card is not in the bundle")
    else:
        try:
            verify_routing(routing, sender.verify_key)
            check(4, True, f"envelope {routing.id}: signed by its sender")
        except BackchannelError:
            check(4, False, "envelope: the sender's signature does not verify")

    # Step 5: statements.
    events: list[Event] = []
    rejected: list[str] = []
    opened_ids = {s.id for s in statements if s.kind == "opened"}
    for statement in ordered:
        label = f"{statement.kind} statement {statement.id[:12]}…"
        signer = cards.get(statement.by)
        problem: str | None = None
        if statement.envelope != routing.id:
            problem = "names another envelope"
        elif signer is None:
            problem = "its signer's card is not in the bundle"
        else:
            try:
                verify_statement(statement, signer.verify_key)
            except BackchannelError:
                problem = "the signature does not verify"
            else:
                if not signer.created - skew <= statement.at <= signer.expires:
                    problem = "made while the signer's card was not valid"
                else:
                    problem = _party_check(statement, signer, routing, opened_ids)
        if problem is None and signer is not None:
            events.append(Event(statement, signer))
            check(5, True, f"{label}: signed by {signer.name} ({signer.role})")
        else:
            rejected.append(statement.id)
            check(5, False, f"{label}: {problem}")

    # Step 6: times.
    time_problems = _time_checks(routing, events, skew)
    check(6, not time_problems, "; ".join(time_problems) if time_problems else
          f"times: consistent within {int(skew.total_seconds() // 60)} minutes")

    # Step 7: the route.
    route_problems = _route_checks(routing, events, cards)
    check(7, not route_problems, "route: " + "; ".join(route_problems) if route_problems
          else _route_summary(routing, events, cards))
    return BundleReport(routing.id, routing, sender, cards, tuple(events), tuple(checks),
                        tuple(rejected))


@dataclass(frozen=True)
class StatementReport:
    statement: Statement
    signer: Card


def verify_single_statement(data: bytes, cards: Sequence[Card]) -> StatementReport:
    """Verify one statement (a DSSE JSON file) against the signer's card, which must
    be among ``cards``. Raises :class:`BundleInvalid`."""
    try:
        signed = dsse.Envelope.from_json(data, max_payload=MAX_STATEMENT_BYTES)
        statement = parse_statement(signed)
    except DecodeError as exc:
        raise BundleInvalid(f"this is not a well-formed statement ({exc})") from None
    # As for bundles, the file must be exactly our encoding (no alternative base64).
    if data.rstrip(b"\n") != signed.to_json():
        raise BundleInvalid("the statement file is not exactly as exported")
    signer = next((c for c in cards if c.id == statement.by), None)
    if signer is None:
        raise BundleInvalid(f"the statement is signed by {statement.by}: pass that "
                            "identity's card with --card FILE to check it")
    try:
        verify_statement(statement, signer.verify_key)
    except BackchannelError:
        raise BundleInvalid("the statement's signature does not verify: it was altered "
                            "or is not from the card given") from None
    if not signer.created - CLOCK_SKEW <= statement.at <= signer.expires:
        raise BundleInvalid("the statement was made while the signer's card was not valid")
    return StatementReport(statement, signer)

