"""Handover records: who was actually handed over under an agreement.

A DSSE envelope (payload type :data:`HANDOVER_TYPE`) signed by both delegations and
countersigned by every named witness (an intermediary such as the Red Cross)::

    {"v": 1, "from": "<author id>", "created": "<time>", "agreement": "<agreement id>",
     "place": "Sumy border crossing", "at": "<time of the handover>",
     "transfers": [
       {"from": "<giver id>", "to": "<receiver id>",
        "delivered": [{"list": "<list digest>", "index": 0, "category": "pow"}, ...],
        "unlisted": [{"digest": "<entry digest>", "category": "civilians"}, ...]},
       {"from": "<the other party>", ...}],
     "witnesses": ["<intermediary id>", ...], "notes": "<free text>"}

**Entry references.** A person on an agreed list is named by the list's salted
digest and the entry's position in the list (0-based, in the order of the exact list
bytes the digest covers). We chose list digest + index over a per-entry salted
digest because the agreement already commits to each list's bytes and size: an index
is checkable against the agreement alone (no per-entry salts to agree on first),
opens to a name exactly when the list is disclosed, and reveals nothing else to a
witness. A person handed over *without* being listed is named by an entry digest
(:func:`keys.listref.entry_digest`) so witnesses see that, not who.

**What is computed, not stored.** The record holds only facts both sides sign
(delivered and unlisted entries, place, time). Discrepancies — listed but not handed
over, handed over but not listed — and the balance of counts per category against
the agreement are recomputed by :func:`check_handover` every time, so there is
nothing in the record a verifier could disagree with.

:func:`check_handover` rejects (:class:`~keys.negotiation_errors.HandoverRejected`)
a record about another agreement, transfers that are not the agreement's, and any
reference outside the giver's agreed lists (an unknown list, the other side's list,
an index past the end of a list, the same entry twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from . import dsse
from .agreement import AGREEMENT_TYPE, Agreement, parties_policy, require_parties
from .clock import SYSTEM_CLOCK, Clock
from .cosigning import SignatureStatus, merge_signatures, signature_status
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
from .errors import DecodeError
from .listref import MAX_ENTRIES, parse_digest, parse_id
from .negotiation_errors import HandoverRejected, NotASigner
from .policy import AllOf, Policy, Signer
from .proposal import CATEGORIES, MAX_GUARANTORS, MAX_PLACE, Counts, resolve_keys

HANDOVER_TYPE: Final = "application/vnd.backchannel.handover+json"
#: Per transfer; the largest exchanges so far were a few hundred persons.
MAX_HANDED_OVER: Final = 20_000
#: 2 x 20,000 references of about 80 bytes each, plus notes.
MAX_HANDOVER_BYTES: Final = 4 * 1024 * 1024
MAX_NOTES: Final = 20_000
MAX_WITNESSES: Final = MAX_GUARANTORS


@dataclass(frozen=True, order=True)
class EntryRef:
    """Entry ``index`` of the agreed list ``list``, handed over as ``category``."""

    list: str
    index: int
    category: str = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.list, "index": self.index, "category": self.category}


@dataclass(frozen=True)
class Unlisted:
    """A person handed over who was on no agreed list (named by an entry digest)."""

    digest: str
    category: str

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "category": self.category}


@dataclass(frozen=True)
class HandedOver:
    giver: str
    receiver: str
    delivered: tuple[EntryRef, ...]
    unlisted: tuple[Unlisted, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.giver, "to": self.receiver,
                "delivered": [e.to_dict() for e in self.delivered],
                "unlisted": [u.to_dict() for u in self.unlisted]}


@dataclass(frozen=True)
class HandoverRecord:
    """A parsed record (structure only; see :func:`check_handover`)."""

    id: str
    author: str
    created: datetime
    agreement: str
    place: str
    at: datetime
    transfers: tuple[HandedOver, ...]
    witnesses: tuple[str, ...]
    notes: str
    envelope: dsse.Envelope = field(repr=False)

    def transfer_from(self, giver: str) -> HandedOver:
        for transfer in self.transfers:
            if transfer.giver == giver:
                return transfer
        raise KeyError(giver)

    def to_json(self) -> bytes:
        return self.envelope.to_json()


def _category(obj: Mapping[str, Any], what: str) -> str:
    value = obj["category"]
    if value not in CATEGORIES:
        raise DecodeError(f"{what}.category: must be one of {', '.join(CATEGORIES)}")
    return str(value)


def _parse_handed_over(value: object, index: int) -> HandedOver:
    what = f"handover.transfers[{index}]"
    obj = expect_object(value, required=("from", "to", "delivered", "unlisted"), what=what)
    delivered, unlisted = obj["delivered"], obj["unlisted"]
    for name, items in (("delivered", delivered), ("unlisted", unlisted)):
        if not isinstance(items, list) or len(items) > MAX_HANDED_OVER:
            raise DecodeError(f"{what}.{name}: expected a list of at most "
                              f"{MAX_HANDED_OVER} entries")
    refs = []
    for i, item in enumerate(delivered):
        w = f"{what}.delivered[{i}]"
        ref = expect_object(item, required=("list", "index", "category"), what=w)
        refs.append(EntryRef(parse_digest(ref["list"], field=f"{w}.list"),
                             expect_int(ref, "index", what=w, low=0, high=MAX_ENTRIES - 1),
                             _category(ref, w)))
    extra = []
    for i, item in enumerate(unlisted):
        w = f"{what}.unlisted[{i}]"
        entry = expect_object(item, required=("digest", "category"), what=w)
        extra.append(Unlisted(parse_digest(entry["digest"], field=f"{w}.digest"),
                              _category(entry, w)))
    if len({u.digest for u in extra}) != len(extra):
        raise DecodeError(f"{what}.unlisted: the same person is listed twice")
    return HandedOver(parse_id(obj["from"], field=f"{what}.from"),
                      parse_id(obj["to"], field=f"{what}.to"), tuple(refs), tuple(extra))


def parse_handover(envelope: dsse.Envelope) -> HandoverRecord:
    """Parse a handover record (structure only). Raises :class:`DecodeError`."""
    if envelope.payload_type != HANDOVER_TYPE:
        raise DecodeError("this is not a handover record")
    obj = expect_object(json_loads(envelope.payload, max_bytes=MAX_HANDOVER_BYTES,
                                   what="handover record"),
                        required=("v", "from", "created", "agreement", "place", "at",
                                  "transfers", "witnesses", "notes"),
                        what="handover record")
    expect_version(obj, what="handover record")
    transfers = obj["transfers"]
    if not isinstance(transfers, list) or len(transfers) != 2:
        raise DecodeError("handover.transfers: expected one transfer per party")
    parsed = tuple(_parse_handed_over(t, i) for i, t in enumerate(transfers))
    if parsed[0].giver == parsed[1].giver or parsed[0].giver == parsed[0].receiver:
        raise DecodeError("handover.transfers: expected one transfer from each party to "
                          "the other")
    witnesses = obj["witnesses"]
    if not isinstance(witnesses, list) or len(witnesses) > MAX_WITNESSES:
        raise DecodeError(f"handover.witnesses: at most {MAX_WITNESSES} identity ids")
    wits = tuple(parse_id(w, field="handover.witnesses") for w in witnesses)
    if len(set(wits)) != len(wits):
        raise DecodeError("handover.witnesses: a witness is named twice")
    return HandoverRecord(
        id=b64url_encode(envelope.digest()),
        author=parse_id(obj["from"], field="handover.from"),
        created=parse_time(obj["created"], field="handover.created"),
        agreement=parse_digest(obj["agreement"], field="handover.agreement"),
        place=expect_str(obj, "place", what="handover", max_len=MAX_PLACE, min_len=1),
        at=parse_time(obj["at"], field="handover.at"),
        transfers=parsed, witnesses=wits,
        notes=expect_str(obj, "notes", what="handover", max_len=MAX_NOTES),
        envelope=envelope)


def load_handover(data: bytes | str | dict[str, Any]) -> HandoverRecord:
    if isinstance(data, dict):
        return parse_handover(dsse.Envelope.from_dict(data, max_payload=MAX_HANDOVER_BYTES))
    return parse_handover(dsse.Envelope.from_json(data, max_payload=MAX_HANDOVER_BYTES))


@dataclass(frozen=True)
class TransferCheck:
    """One direction of a handover compared with the agreement."""

    giver: str
    receiver: str
    agreed: Counts
    handed_over: Counts
    unlisted: Counts
    #: Listed but not handed over: (list digest, index), sorted.
    missing: tuple[tuple[str, int], ...]
    #: Handed over but not listed: entry digests.
    not_listed: tuple[str, ...]

    @property
    def balanced(self) -> bool:
        return not self.missing and not self.not_listed and self.handed_over == self.agreed

    def shortfall(self) -> dict[str, int]:
        """Per category, agreed minus handed over from the lists (negative: more)."""
        return {c: self.agreed.get(c) - self.handed_over.get(c) for c in CATEGORIES
                if self.agreed.get(c) != self.handed_over.get(c)}

    def describe(self, names: Mapping[str, str]) -> str:
        giver = names.get(self.giver, self.giver)
        receiver = names.get(self.receiver, self.receiver)
        parts = [f"{giver} → {receiver}: {self.handed_over.total} of {self.agreed.total} "
                 "agreed handed over"]
        per = [f"{c} {self.handed_over.get(c)}/{self.agreed.get(c)}" for c in CATEGORIES
               if self.agreed.get(c) or self.handed_over.get(c)]
        if per:
            parts[0] += f" ({', '.join(per)})"
        if self.missing:
            parts.append(f"{len(self.missing)} listed but not handed over")
        if self.not_listed:
            parts.append(f"{len(self.not_listed)} handed over but not listed")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.giver, "to": self.receiver, "agreed": self.agreed.to_dict(),
                "handed_over": self.handed_over.to_dict(),
                "unlisted": self.unlisted.to_dict(),
                "missing": [{"list": d, "index": i} for d, i in self.missing],
                "not_listed": list(self.not_listed), "balanced": self.balanced}


@dataclass(frozen=True)
class HandoverCheck:
    """A record checked against its agreement: discrepancies and balance."""

    record: str
    agreement: str
    transfers: tuple[TransferCheck, ...]
    within_window: bool

    @property
    def balanced(self) -> bool:
        """Every direction handed over exactly what was agreed, nobody unlisted."""
        return all(t.balanced for t in self.transfers)

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        """Plain sentences for an officer, e.g.
        ``kyiv → moscow: 43 of 45 agreed handed over (pow 43/45); 2 listed but not
        handed over``. ``names`` maps ids to aliases."""
        names = names or {}
        out = [t.describe(names) for t in self.transfers]
        first, second = self.transfers
        total_a = first.handed_over.total + first.unlisted.total
        total_b = second.handed_over.total + second.unlisted.total
        agreed_equal = first.agreed.total == second.agreed.total
        if agreed_equal and total_a != total_b:
            out.append(f"imbalance: {first.agreed.total} for {second.agreed.total} was "
                       f"agreed, but {total_a} and {total_b} were handed over")
        elif self.balanced:
            out.append("balanced: both sides handed over exactly what was agreed")
        if not self.within_window:
            out.append("the handover took place outside the agreed time window")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "agreement": self.agreement,
                "transfers": [t.to_dict() for t in self.transfers],
                "within_window": self.within_window, "balanced": self.balanced}


def _count(categories: Sequence[str]) -> Counts:
    return Counts.from_mapping({c: sum(1 for x in categories if x == c) for c in CATEGORIES})


def check_handover(record: HandoverRecord, agreement: Agreement) -> HandoverCheck:
    """Check ``record`` against ``agreement`` and compute its discrepancies.

    Raises :class:`HandoverRejected` with the reason for any reference outside the
    agreed lists (see the module doc). Imbalances are *not* errors: they are facts,
    reported in the result."""
    terms = agreement.terms
    # Step 1: the record is about this agreement and its two transfers.
    if record.agreement != agreement.id:
        raise HandoverRejected("this handover record is about another agreement")
    if {(t.giver, t.receiver) for t in record.transfers} != {
            (t.giver, t.receiver) for t in terms.transfers}:
        raise HandoverRejected("the record's transfers are not between the agreement's "
                               "parties")
    if set(record.witnesses) & set(terms.parties):
        raise HandoverRejected("a party cannot witness its own handover")
    all_lists = {ref.digest: t.giver for t in terms.transfers for ref in t.lists}
    checks = []
    for handed in record.transfers:
        agreed = terms.transfer_from(handed.giver)
        sizes = {ref.digest: ref.entries for ref in agreed.lists}
        # Step 2: every reference is inside the giver's agreed lists, once.
        seen: set[tuple[str, int]] = set()
        for ref in handed.delivered:
            position = f"entry {ref.index} of list {ref.list[:12]}…"
            if ref.list not in sizes:
                if ref.list in all_lists:
                    raise HandoverRejected(
                        f"{position} is on the list the other side hands over, not on "
                        "the giver's agreed lists")
                raise HandoverRejected(f"{position} is not on any list of the agreement")
            if ref.index >= sizes[ref.list]:
                raise HandoverRejected(f"{position} does not exist: that agreed list has "
                                       f"{sizes[ref.list]} entries")
            if (ref.list, ref.index) in seen:
                raise HandoverRejected(f"{position} is recorded as handed over twice")
            seen.add((ref.list, ref.index))
        # Step 3: discrepancies and counts.
        missing = tuple(sorted((ref.digest, i) for ref in agreed.lists
                               for i in range(ref.entries) if (ref.digest, i) not in seen))
        checks.append(TransferCheck(
            giver=handed.giver, receiver=handed.receiver, agreed=agreed.counts,
            handed_over=_count([r.category for r in handed.delivered]),
            unlisted=_count([u.category for u in handed.unlisted]),
            missing=missing, not_listed=tuple(u.digest for u in handed.unlisted)))
    # Report in the agreement's order of parties.
    checks.sort(key=lambda c: terms.parties.index(c.giver))
    within = terms.window_from <= record.at <= terms.window_to
    return HandoverCheck(record.id, agreement.id, tuple(checks), within)


def make_handover(signer: SigningKey, agreement: Agreement, *, place: str, at: datetime,
                  delivered: Mapping[str, Sequence[EntryRef]],
                  unlisted: Mapping[str, Sequence[Unlisted]] | None = None,
                  witnesses: Sequence[str] = (), notes: str = "",
                  clock: Clock = SYSTEM_CLOCK) -> HandoverRecord:
    """Draft and sign a handover record. ``delivered`` and ``unlisted`` map each
    giver's id to its entries. Raises :class:`NotASigner` (not a party),
    :class:`HandoverRejected` or :class:`DecodeError` (bad place, notes, witnesses)."""
    terms = agreement.terms
    if signer.id not in terms.parties:
        raise NotASigner("only one of the two parties can record a handover")
    unknown = (set(delivered) | set(unlisted or {})) - set(terms.parties)
    if unknown:
        raise HandoverRejected("entries are given for someone who is not a party")
    transfers = [HandedOver(t.giver, t.receiver, tuple(delivered.get(t.giver, ())),
                            tuple((unlisted or {}).get(t.giver, ()))) for t in terms.transfers]
    payload = json_dumps({
        "v": 1, "from": signer.id, "created": format_time(clock.now()),
        "agreement": agreement.id, "place": place, "at": format_time(at),
        "transfers": [t.to_dict() for t in transfers], "witnesses": list(witnesses),
        "notes": notes,
    })
    if len(payload) > MAX_HANDOVER_BYTES:
        raise HandoverRejected("the record is too large")
    record = parse_handover(dsse.sign(HANDOVER_TYPE, payload, signer))
    check_handover(record, agreement)
    return record


def handover_policy(record: HandoverRecord, agreement: Agreement,
                    keys: Mapping[str, VerifyKey]) -> Policy:
    """Both parties and every witness the record names."""
    found = resolve_keys([*agreement.terms.parties, *record.witnesses], keys)
    return AllOf(*(Signer(k) for k in found.values()))


def handover_status(record: HandoverRecord, agreement: Agreement,
                    keys: Mapping[str, VerifyKey]) -> SignatureStatus:
    return signature_status(record.envelope, handover_policy(record, agreement, keys))


def sign_handover(record: HandoverRecord, agreement: Agreement,
                  signer: SigningKey) -> HandoverRecord:
    """The other party's signature, after checking the record against the agreement.
    Raises :class:`NotASigner` or :class:`HandoverRejected`."""
    if signer.id not in agreement.terms.parties:
        raise NotASigner("only the parties sign a handover record; witnesses countersign")
    check_handover(record, agreement)
    if signer.id in record.envelope.signer_ids():
        return record
    return parse_handover(dsse.cosign(record.envelope, signer))


def countersign_handover(record: HandoverRecord, agreement: Agreement, signer: SigningKey,
                         keys: Mapping[str, VerifyKey]) -> HandoverRecord:
    """A witness's countersignature. The witness must be named in the record and both
    parties must have signed it. Raises :class:`NotASigner`,
    :class:`HandoverRejected`, :class:`~keys.errors.PolicyNotMet` or
    :class:`~keys.errors.VerificationError`."""
    if signer.id not in record.witnesses:
        raise NotASigner("you are not named as a witness of this handover")
    check_handover(record, agreement)
    require_parties(record.envelope, agreement.terms.parties, "the handover record")
    dsse.verify(record.envelope, parties_policy(agreement.terms, keys),
                payload_type=HANDOVER_TYPE)
    if signer.id in record.envelope.signer_ids():
        return record
    return parse_handover(dsse.cosign(record.envelope, signer))


def add_handover_signatures(record: HandoverRecord, returned: dsse.Envelope,
                            keys: Mapping[str, VerifyKey]) -> HandoverRecord:
    """Merge the signatures of a returned copy (see :func:`keys.cosigning.merge_signatures`)."""
    return parse_handover(merge_signatures(record.envelope, returned, keys))


def verify_handover(record: HandoverRecord, agreement: Agreement,
                    keys: Mapping[str, VerifyKey]) -> HandoverCheck:
    """Full check: both parties signed the agreement; the record is about it and
    refers only to its lists; both parties and every witness signed the record.
    Returns the discrepancies. Raises :class:`HandoverRejected`,
    :class:`~keys.errors.VerificationError` or :class:`~keys.errors.PolicyNotMet`."""
    dsse.verify(agreement.envelope, parties_policy(agreement.terms, keys),
                payload_type=AGREEMENT_TYPE)
    result = check_handover(record, agreement)
    dsse.verify(record.envelope, handover_policy(record, agreement, keys),
                payload_type=HANDOVER_TYPE)
    return result
