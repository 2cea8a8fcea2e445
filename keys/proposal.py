"""Negotiation messages: proposals (and counter-proposals), acceptances, rejections.

Each is a DSSE envelope signed by its author, with its own payload type (domain
separation: a signature on an acceptance can never be read as a proposal). The
**message id** is the base64url SHA-256 of the envelope's PAE, like a statement id,
so it names the signed content and not a signature.

Proposal (:data:`PROPOSAL_TYPE`)::

    {"v": 1, "from": "<author id>", "created": "<time>", "expires": "<time>",
     "supersedes": "<id of the previous message in the thread>" | null,
     "parties": ["<delegation id>", "<delegation id>"],
     "transfers": [
       {"from": "<giver id>", "to": "<receiver id>",
        "lists": [{"digest": "<salted list digest>", "entries": 45}],
        "counts": {"pow": 45, "civilians": 0, "children": 0, "remains": 0}},
       {"from": "<the other party>", "to": "<the first>", ...}],
     "place": "Sumy border crossing",
     "window": {"from": "<time>", "to": "<time>"},
     "conditions": "<free text>",
     "guarantors": ["<intermediary id>", ...],
     "quorum": null | <how many guarantors must co-sign; null = all of them>}

A counter-proposal is a proposal whose ``supersedes`` names the message it answers;
either party may also amend its own latest proposal the same way.

Acceptance (:data:`ACCEPTANCE_TYPE`) and rejection (:data:`REJECTION_TYPE`)::

    {"v": 1, "from": "<author id>", "created": "<time>", "proposal": "<proposal id>"}
    (a rejection adds "reason": "<text>")

Rules checked when parsing (any violation is an :class:`InvalidTerms`):

* the two parties differ; there is exactly one transfer from each party to the other;
* every count is present (the four :data:`CATEGORIES`) and the counts of a transfer
  add up to the entries of its lists (every listed person is to be handed over, so
  "listed but not handed over" is always a meaningful discrepancy);
* list digests are unique across the whole proposal;
* guarantors are distinct and are not parties; the quorum is between 1 and their number;
* the window starts before it ends; the proposal expires after it is created.

Thread rules (who may answer what, in which order) live in :mod:`keys.thread`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock
from .ed25519 import SigningKey, VerifyKey
from .encoding import (
    b64url_encode,
    expect_int,
    expect_object,
    expect_str,
    expect_version,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from .errors import DecodeError, VerificationError
from .listref import MAX_ENTRIES, ListRef, parse_digest, parse_id
from .negotiation_errors import InvalidTerms, UnknownSigner
from .policy import Signer

PROPOSAL_TYPE: Final = "application/vnd.backchannel.proposal+json"
ACCEPTANCE_TYPE: Final = "application/vnd.backchannel.acceptance+json"
REJECTION_TYPE: Final = "application/vnd.backchannel.rejection+json"
CATEGORIES: Final = ("pow", "civilians", "children", "remains")

#: Conditions are prose; 20,000 characters is ten pages.
MAX_CONDITIONS: Final = 20_000
MAX_PLACE: Final = 200
MAX_REASON: Final = 2_000
#: Lists per direction: one per category and a few amendments.
MAX_LISTS: Final = 16
#: Guarantors of one agreement: a handful of states and organisations.
MAX_GUARANTORS: Final = 8
#: A proposal with 16 lists, 8 guarantors and full conditions is under 100 KB.
MAX_PROPOSAL_BYTES: Final = 128 * 1024
MAX_DECISION_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class Counts:
    """Numbers of persons per category."""

    pow: int = 0
    civilians: int = 0
    children: int = 0
    remains: int = 0

    @property
    def total(self) -> int:
        return self.pow + self.civilians + self.children + self.remains

    def get(self, category: str) -> int:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        value: int = getattr(self, category)
        return value

    def to_dict(self) -> dict[str, int]:
        return {c: self.get(c) for c in CATEGORIES}

    @classmethod
    def from_mapping(cls, values: Mapping[str, int]) -> Counts:
        unknown = set(values) - set(CATEGORIES)
        if unknown:
            raise InvalidTerms(f"unknown category {sorted(unknown)[0]!r}; "
                               f"use {', '.join(CATEGORIES)}")
        return cls(**{c: values.get(c, 0) for c in CATEGORIES})


@dataclass(frozen=True)
class Transfer:
    """What one party hands over to the other."""

    giver: str
    receiver: str
    lists: tuple[ListRef, ...]
    counts: Counts

    @property
    def entries(self) -> int:
        return sum(ref.entries for ref in self.lists)

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.giver, "to": self.receiver,
                "lists": [ref.to_dict() for ref in self.lists],
                "counts": self.counts.to_dict()}


@dataclass(frozen=True)
class Terms:
    """The terms of a proposal. Validated by :func:`check_terms` when signed or parsed."""

    parties: tuple[str, str]
    transfers: tuple[Transfer, ...]
    place: str
    window_from: datetime
    window_to: datetime
    expires: datetime
    conditions: str = ""
    guarantors: tuple[str, ...] = ()
    quorum: int | None = None

    def transfer_from(self, giver: str) -> Transfer:
        for transfer in self.transfers:
            if transfer.giver == giver:
                return transfer
        raise KeyError(giver)

    def other_party(self, party: str) -> str:
        first, second = self.parties
        if party == first:
            return second
        if party == second:
            return first
        raise KeyError(party)

    @property
    def guarantor_quorum(self) -> int:
        """How many guarantors must co-sign (all of them unless a quorum is stated)."""
        return len(self.guarantors) if self.quorum is None else self.quorum

    def list_digests(self) -> frozenset[str]:
        return frozenset(ref.digest for t in self.transfers for ref in t.lists)


def check_terms(terms: Terms) -> None:
    """Raise :class:`InvalidTerms` unless ``terms`` follow the rules in the module doc."""
    first, second = terms.parties
    if first == second:
        raise InvalidTerms("the two parties must be different delegations")
    givers = sorted(t.giver for t in terms.transfers)
    if len(terms.transfers) != 2 or givers != sorted(terms.parties):
        raise InvalidTerms("there must be exactly one transfer from each party")
    seen: set[str] = set()
    for transfer in terms.transfers:
        if transfer.receiver != terms.other_party(transfer.giver):
            raise InvalidTerms("each transfer goes from one party to the other")
        if len(transfer.lists) > MAX_LISTS:
            raise InvalidTerms(f"at most {MAX_LISTS} lists per transfer")
        for ref in transfer.lists:
            if ref.digest in seen:
                raise InvalidTerms("the same list is referenced twice")
            seen.add(ref.digest)
        if any(not 0 <= transfer.counts.get(c) <= MAX_ENTRIES for c in CATEGORIES):
            raise InvalidTerms(f"counts must be between 0 and {MAX_ENTRIES}")
        if transfer.counts.total != transfer.entries:
            raise InvalidTerms(
                f"the counts of a transfer ({transfer.counts.total}) must add up to the "
                f"entries of its lists ({transfer.entries})")
    if len(terms.guarantors) > MAX_GUARANTORS:
        raise InvalidTerms(f"at most {MAX_GUARANTORS} guarantors")
    if len(set(terms.guarantors)) != len(terms.guarantors):
        raise InvalidTerms("a guarantor is named twice")
    if set(terms.guarantors) & set(terms.parties):
        raise InvalidTerms("a party cannot be its own guarantor")
    if terms.quorum is not None and not 1 <= terms.quorum <= len(terms.guarantors):
        raise InvalidTerms("the quorum must be between 1 and the number of guarantors")
    if not terms.window_from < terms.window_to:
        raise InvalidTerms("the time window must start before it ends")
    if not terms.place.strip() or len(terms.place) > MAX_PLACE:
        raise InvalidTerms(f"the place must be 1 to {MAX_PLACE} characters")
    if len(terms.conditions) > MAX_CONDITIONS:
        raise InvalidTerms(f"the conditions are longer than {MAX_CONDITIONS} characters")


@dataclass(frozen=True)
class Proposal:
    """A parsed proposal (structure and terms checked; see :func:`verify_message`)."""

    id: str
    author: str
    created: datetime
    supersedes: str | None
    terms: Terms
    envelope: dsse.Envelope = field(repr=False)

    kind: ClassVar[str] = "proposal"

    @property
    def previous(self) -> str | None:
        return self.supersedes

    @property
    def expires(self) -> datetime:
        return self.terms.expires


@dataclass(frozen=True)
class Decision:
    """A parsed acceptance or rejection of the proposal ``proposal``."""

    id: str
    kind: str  # "acceptance" or "rejection"
    author: str
    created: datetime
    proposal: str
    reason: str | None
    envelope: dsse.Envelope = field(repr=False)

    @property
    def previous(self) -> str:
        return self.proposal


Message = Proposal | Decision


def message_id(envelope: dsse.Envelope) -> str:
    return b64url_encode(envelope.digest())


def proposal_payload(author: str, terms: Terms, *, created: datetime,
                     supersedes: str | None) -> bytes:
    return json_dumps({
        "v": 1, "from": author, "created": format_time(created),
        "expires": format_time(terms.expires), "supersedes": supersedes,
        "parties": list(terms.parties),
        "transfers": [t.to_dict() for t in terms.transfers],
        "place": terms.place,
        "window": {"from": format_time(terms.window_from), "to": format_time(terms.window_to)},
        "conditions": terms.conditions, "guarantors": list(terms.guarantors),
        "quorum": terms.quorum,
    })


def make_proposal(signer: SigningKey, terms: Terms, *, supersedes: str | None = None,
                  clock: Clock = SYSTEM_CLOCK) -> Proposal:
    """Sign a proposal. Raises :class:`InvalidTerms` (e.g. the signer is not a party,
    or the proposal would already have expired)."""
    check_terms(terms)
    if signer.id not in terms.parties:
        raise InvalidTerms("only one of the two parties can make a proposal")
    now = clock.now()
    # The window's two checks only when signing: terms received keep whatever their
    # author signed. The window first: a window in the past is the mistake to name.
    if terms.window_to <= now:
        raise InvalidTerms(f"the handover window ended on {format_time(terms.window_to)}, "
                           "before this proposal is sent")
    if terms.expires <= now:
        raise InvalidTerms("the proposal would expire before it is sent")
    if terms.expires > terms.window_to:
        raise InvalidTerms(f"the offer would stay open until {format_time(terms.expires)}, "
                           f"after the handover window ends ({format_time(terms.window_to)}): "
                           "an acceptance then could not be kept")
    payload = proposal_payload(signer.id, terms, created=now, supersedes=supersedes)
    return parse_proposal(dsse.sign(PROPOSAL_TYPE, payload, signer))


def _parse_counts(value: object, *, what: str) -> Counts:
    obj = expect_object(value, required=CATEGORIES, what=what)
    return Counts(**{c: expect_int(obj, c, what=what, low=0, high=MAX_ENTRIES)
                     for c in CATEGORIES})


def _parse_transfer(value: object, index: int) -> Transfer:
    what = f"proposal.transfers[{index}]"
    obj = expect_object(value, required=("from", "to", "lists", "counts"), what=what)
    lists = obj["lists"]
    if not isinstance(lists, list) or len(lists) > MAX_LISTS:
        raise DecodeError(f"{what}.lists: expected a list of at most {MAX_LISTS} lists")
    refs = []
    for i, item in enumerate(lists):
        ref = expect_object(item, required=("digest", "entries"), what=f"{what}.lists[{i}]")
        refs.append(ListRef(parse_digest(ref["digest"], field=f"{what}.lists[{i}].digest"),
                            expect_int(ref, "entries", what=f"{what}.lists[{i}]", low=0,
                                       high=MAX_ENTRIES)))
    return Transfer(parse_id(obj["from"], field=f"{what}.from"),
                    parse_id(obj["to"], field=f"{what}.to"), tuple(refs),
                    _parse_counts(obj["counts"], what=f"{what}.counts"))


def _parse_ids(value: object, *, field: str, high: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > high:
        raise DecodeError(f"{field}: expected a list of at most {high} identity ids")
    return tuple(parse_id(v, field=field) for v in value)


def parse_terms(obj: Mapping[str, Any]) -> Terms:
    """Terms from a proposal payload object (already checked for its members)."""
    parties = _parse_ids(obj["parties"], field="proposal.parties", high=2)
    if len(parties) != 2:
        raise DecodeError("proposal.parties: expected exactly two delegations")
    transfers = obj["transfers"]
    if not isinstance(transfers, list) or len(transfers) != 2:
        raise DecodeError("proposal.transfers: expected one transfer per party")
    window = expect_object(obj["window"], required=("from", "to"), what="proposal.window")
    quorum = obj["quorum"]
    if quorum is not None:
        quorum = expect_int(obj, "quorum", what="proposal", low=1, high=MAX_GUARANTORS)
    terms = Terms(
        parties=(parties[0], parties[1]),
        transfers=tuple(_parse_transfer(t, i) for i, t in enumerate(transfers)),
        place=expect_str(obj, "place", what="proposal", max_len=MAX_PLACE, min_len=1),
        window_from=parse_time(window["from"], field="proposal.window.from"),
        window_to=parse_time(window["to"], field="proposal.window.to"),
        expires=parse_time(obj["expires"], field="proposal.expires"),
        conditions=expect_str(obj, "conditions", what="proposal", max_len=MAX_CONDITIONS),
        guarantors=_parse_ids(obj["guarantors"], field="proposal.guarantors",
                              high=MAX_GUARANTORS),
        quorum=quorum,
    )
    check_terms(terms)
    return terms


_PROPOSAL_FIELDS: Final = ("v", "from", "created", "expires", "supersedes", "parties",
                           "transfers", "place", "window", "conditions", "guarantors",
                           "quorum")


def parse_proposal_payload(payload: bytes, envelope: dsse.Envelope) -> Proposal:
    """Parse proposal bytes; ``envelope`` is kept as the signed form (its payload type
    may be the proposal's or an agreement's, whose payload is the same bytes)."""
    obj = expect_object(json_loads(payload, max_bytes=MAX_PROPOSAL_BYTES, what="proposal"),
                        required=_PROPOSAL_FIELDS, what="proposal")
    expect_version(obj, what="proposal")
    author = parse_id(obj["from"], field="proposal.from")
    supersedes = obj["supersedes"]
    if supersedes is not None:
        supersedes = parse_digest(supersedes, field="proposal.supersedes")
    created = parse_time(obj["created"], field="proposal.created")
    terms = parse_terms(obj)
    if author not in terms.parties:
        raise InvalidTerms("the proposal was written by someone who is not a party")
    if terms.expires <= created:
        raise InvalidTerms("the proposal expires before it was created")
    pid = b64url_encode(dsse.Envelope(PROPOSAL_TYPE, payload).digest())
    return Proposal(pid, author, created, supersedes, terms, envelope)


def parse_proposal(envelope: dsse.Envelope) -> Proposal:
    """Parse a proposal envelope (structure and terms; not the signature).
    Raises :class:`DecodeError` or :class:`InvalidTerms`."""
    if envelope.payload_type != PROPOSAL_TYPE:
        raise DecodeError("this is not a proposal")
    return parse_proposal_payload(envelope.payload, envelope)


def make_decision(signer: SigningKey, kind: str, proposal_id: str, *,
                  reason: str | None = None, clock: Clock = SYSTEM_CLOCK) -> Decision:
    """Sign an acceptance or rejection. Prefer :func:`keys.thread.accept` and
    :func:`keys.thread.reject`, which check that the answer is allowed."""
    if kind not in ("acceptance", "rejection"):
        raise ValueError("kind is 'acceptance' or 'rejection'")
    if (kind == "rejection") != (reason is not None):
        raise ValueError("a rejection needs a reason; an acceptance has none")
    body: dict[str, Any] = {"v": 1, "from": signer.id, "created": format_time(clock.now()),
                            "proposal": proposal_id}
    if reason is not None:
        if not reason.strip() or len(reason) > MAX_REASON:
            raise InvalidTerms(f"the reason must be 1 to {MAX_REASON} characters")
        body["reason"] = reason
    ptype = ACCEPTANCE_TYPE if kind == "acceptance" else REJECTION_TYPE
    return parse_decision(dsse.sign(ptype, json_dumps(body), signer))


def parse_decision(envelope: dsse.Envelope) -> Decision:
    """Parse an acceptance or rejection (structure only). Raises :class:`DecodeError`."""
    extra: tuple[str, ...]
    if envelope.payload_type == ACCEPTANCE_TYPE:
        kind, extra = "acceptance", ()
    elif envelope.payload_type == REJECTION_TYPE:
        kind, extra = "rejection", ("reason",)
    else:
        raise DecodeError("this is not an acceptance or a rejection")
    obj = expect_object(json_loads(envelope.payload, max_bytes=MAX_DECISION_BYTES, what=kind),
                        required=("v", "from", "created", "proposal", *extra), what=kind)
    expect_version(obj, what=kind)
    reason = None
    if extra:
        reason = expect_str(obj, "reason", what=kind, max_len=MAX_REASON, min_len=1)
    return Decision(message_id(envelope), kind, parse_id(obj["from"], field=f"{kind}.from"),
                    parse_time(obj["created"], field=f"{kind}.created"),
                    parse_digest(obj["proposal"], field=f"{kind}.proposal"), reason, envelope)


MESSAGE_TYPES: Final = (PROPOSAL_TYPE, ACCEPTANCE_TYPE, REJECTION_TYPE)


def parse_message(envelope: dsse.Envelope) -> Message:
    """Parse any thread message. Raises :class:`DecodeError`."""
    if envelope.payload_type == PROPOSAL_TYPE:
        return parse_proposal(envelope)
    if envelope.payload_type in (ACCEPTANCE_TYPE, REJECTION_TYPE):
        return parse_decision(envelope)
    raise DecodeError("this is not a negotiation message (proposal, acceptance or rejection)")


def load_message(data: bytes | str | dict[str, Any]) -> Message:
    """Parse a thread message from its JSON envelope."""
    if isinstance(data, dict):
        envelope = dsse.Envelope.from_dict(data, max_payload=MAX_PROPOSAL_BYTES)
    else:
        envelope = dsse.Envelope.from_json(data, max_payload=MAX_PROPOSAL_BYTES)
    return parse_message(envelope)


def verify_message(message: Message, key: VerifyKey) -> None:
    """Check that ``key`` is the message's author and signed it.
    Raises :class:`VerificationError`."""
    if key.id != message.author:
        raise VerificationError("the message was not signed by the party it names")
    dsse.verify(message.envelope, Signer(key), payload_type=message.envelope.payload_type)


def resolve_keys(ids: Sequence[str], keys: Mapping[str, VerifyKey]) -> dict[str, VerifyKey]:
    """The keys for ``ids``; raises :class:`~keys.negotiation_errors.UnknownSigner`."""
    out: dict[str, VerifyKey] = {}
    for ident in ids:
        key = keys.get(ident)
        if key is None:
            raise UnknownSigner(f"no public key for {ident}: add its card to your contacts")
        if key.id != ident:
            raise UnknownSigner(f"the key given for {ident} belongs to another identity")
        out[ident] = key
    return out
