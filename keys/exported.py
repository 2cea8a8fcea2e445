"""Exported agreements and handover records, and their offline verification.

An export is one JSON file that anyone can verify without a network or a profile
(``backchannel verify FILE``)::

    {"v": 1, "kind": "agreement",
     "agreement": <DSSE envelope>,
     "thread": [<DSSE envelope>, ...],          (the negotiation, in order; may be [])
     "keys": {"<identity id>": "<b64url Ed25519 public key>", ...}}

    {"v": 1, "kind": "handover",
     "handover": <DSSE envelope>, "agreement": <DSSE envelope>,
     "thread": [...], "keys": {...}}

Nothing in it is trusted without being checked: every document is signed, and an
identity id is a hash of its key (:func:`keys.ed25519.identity_id`), so a key listed
under the wrong id is detected. Which ids are the *right* parties is for the reader
to judge: the report names them, and the CLI maps them to verified contacts.

:func:`verify_exported` never stops at the first failure: it returns a
:class:`Report` listing every check (passed, failed, skipped, or a notice such as
an imbalance of counts, which is a fact recorded in the document, not a fault of it)
and, per document, which required signatures are present or missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from . import dsse
from .agreement import Agreement, agreement_policy, check_agreement_in_thread, parse_agreement
from .cosigning import SignatureStatus, signature_status
from .ed25519 import PUBLIC_KEY_BYTES, VerifyKey
from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_object,
    expect_version,
    json_dumps,
    json_loads,
)
from .errors import BackchannelError, DecodeError
from .handover import (
    MAX_HANDOVER_BYTES,
    HandoverCheck,
    HandoverRecord,
    check_handover,
    handover_policy,
    parse_handover,
)
from .negotiation_errors import UnknownSigner
from .policy import Policy
from .proposal import MAX_PROPOSAL_BYTES
from .thread import MAX_MESSAGES, Thread, verify_thread

BUNDLE_KINDS: Final = ("agreement", "handover")
#: A long negotiation (a hundred rounds of 100 KB proposals) and a full handover record.
MAX_BUNDLE_BYTES: Final = 32 * 1024 * 1024
#: Parties, guarantors, witnesses: a few dozen identities at most.
MAX_BUNDLE_KEYS: Final = 64

PASSED: Final = "passed"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
NOTICE: Final = "notice"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Report:
    """Everything :func:`verify_exported` checked. ``ok`` when no check failed."""

    kind: str
    document: str
    checks: tuple[Check, ...]
    signatures: Mapping[str, SignatureStatus] = field(default_factory=dict)
    handover: HandoverCheck | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "document": self.document, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks],
                "signatures": {k: v.to_dict() for k, v in self.signatures.items()},
                "handover": self.handover.to_dict() if self.handover else None}

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        """A plain-text report, one line per check then the signature summary."""
        names = names or {}
        mark = {PASSED: "ok  ", FAILED: "FAIL", SKIPPED: "skip", NOTICE: "note"}
        out = [f"{self.kind} {self.document}: {'VERIFIED' if self.ok else 'NOT VERIFIED'}"]
        out += [f"  [{mark[c.status]}] {c.name}" + (f": {c.detail}" if c.detail else "")
                for c in self.checks]
        for what, status in self.signatures.items():
            def show(ids: Iterable[str]) -> str:
                return ", ".join(names.get(i, i) for i in ids) or "none"
            out.append(f"  {what} signatures (need {status.required}): present: "
                       f"{show(status.present)}; missing: {show(status.missing)}"
                       + (f"; INVALID: {show(status.invalid)}" if status.invalid else ""))
        if self.handover is not None:
            out += [f"  {line}" for line in self.handover.lines(names)]
        return out


def _keys_dict(keys: Iterable[VerifyKey]) -> dict[str, str]:
    return {k.id: b64url_encode(k.raw) for k in keys}


def _required_keys(ids: Iterable[str], keys: Iterable[VerifyKey]) -> list[VerifyKey]:
    by_id = {k.id: k for k in keys}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UnknownSigner(f"no public key for {missing[0]}: an export carries the key of "
                            "every required signer")
    return list(by_id.values())


def export_agreement(agreement: Agreement, keys: Iterable[VerifyKey],
                     thread: Thread | None = None) -> bytes:
    """The export file for ``agreement``. ``keys`` must include every party and
    guarantor (and every thread author); raises :class:`UnknownSigner` otherwise."""
    terms = agreement.terms
    found = _required_keys([*terms.parties, *terms.guarantors], keys)
    return json_dumps({"v": 1, "kind": "agreement", "agreement": agreement.envelope.to_dict(),
                       "thread": [e.to_dict() for e in (thread.envelopes() if thread else ())],
                       "keys": _keys_dict(found)})


def export_handover(record: HandoverRecord, agreement: Agreement, keys: Iterable[VerifyKey],
                    thread: Thread | None = None) -> bytes:
    """The export file for a handover record and its agreement."""
    terms = agreement.terms
    found = _required_keys([*terms.parties, *terms.guarantors, *record.witnesses], keys)
    return json_dumps({"v": 1, "kind": "handover", "handover": record.envelope.to_dict(),
                       "agreement": agreement.envelope.to_dict(),
                       "thread": [e.to_dict() for e in (thread.envelopes() if thread else ())],
                       "keys": _keys_dict(found)})


def bundle_kind(data: bytes | str) -> str | None:
    """``"agreement"`` or ``"handover"`` if ``data`` looks like an export, else
    ``None`` (for the CLI's ``verify`` to choose a verifier). Raises
    :class:`DecodeError` only for data that is not JSON at all."""
    obj = json_loads(data, max_bytes=MAX_BUNDLE_BYTES, what="file")
    if isinstance(obj, dict) and obj.get("kind") in BUNDLE_KINDS and "v" in obj:
        return str(obj["kind"])
    return None


@dataclass
class _Run:
    """Collects checks; each step runs only if the ones it depends on passed."""

    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.checks.append(Check(name, status, detail))

    def attempt(self, name: str, step: Callable[[], str]) -> bool:
        try:
            detail = step()
        except BackchannelError as exc:
            self.add(name, FAILED, str(exc))
            return False
        self.add(name, PASSED, detail)
        return True


def _parse_keys(value: object, run: _Run, pinned: Mapping[str, VerifyKey]
                ) -> dict[str, VerifyKey]:
    if not isinstance(value, dict) or len(value) > MAX_BUNDLE_KEYS:
        raise DecodeError(f"export: keys must be an object of at most {MAX_BUNDLE_KEYS} keys")
    keys = dict(pinned)
    wrong = []
    for ident, raw in value.items():
        key = VerifyKey(b64url_decode(raw, max_bytes=PUBLIC_KEY_BYTES, exact=PUBLIC_KEY_BYTES,
                                      field="export.keys"))
        if key.id != ident:
            wrong.append(str(ident)[:40])
            continue
        keys.setdefault(ident, key)
    if wrong:
        run.add("keys belong to their identities", FAILED,
                f"the key given for {', '.join(wrong)} is another identity's key")
    else:
        run.add("keys belong to their identities", PASSED, f"{len(value)} key(s)")
    return keys


def _signature_checks(run: _Run, what: str, envelope: dsse.Envelope, policy: Policy,
                      groups: Sequence[tuple[str, Sequence[str], int]]) -> SignatureStatus:
    status = signature_status(envelope, policy)
    if status.invalid:
        run.add(f"{what}: signatures verify", FAILED,
                f"the signature of {', '.join(status.invalid)} does not verify over these "
                "bytes (altered document, or signed over another version)")
    else:
        run.add(f"{what}: signatures verify", PASSED,
                f"{len(status.present)} valid signature(s) by required signers")
    valid = set(status.present)
    for label, ids, need in groups:
        if not ids:
            continue
        have = [i for i in ids if i in valid]
        missing = [i for i in ids if i not in valid]
        detail = f"{len(have)} of {len(ids)} signed, {need} required"
        if missing:
            detail += f"; missing: {', '.join(missing)}"
        run.add(f"{what}: {label}", PASSED if len(have) >= need else FAILED, detail)
    run.add(f"{what}: complete", PASSED if status.complete else FAILED,
            f"requires {status.required}")
    return status


def _load(obj: Mapping[str, Any], name: str, max_payload: int) -> dsse.Envelope:
    return dsse.Envelope.from_dict(obj[name], max_payload=max_payload)


def _agreement_checks(run: _Run, obj: Mapping[str, Any], keys: Mapping[str, VerifyKey],
                      signatures: dict[str, SignatureStatus]) -> Agreement | None:
    holder: list[Agreement] = []

    def parse() -> str:
        holder.append(parse_agreement(_load(obj, "agreement", MAX_PROPOSAL_BYTES)))
        return f"proposal {holder[0].proposal_id}"

    if not run.attempt("agreement is well-formed", parse):
        return None
    agreement = holder[0]
    terms = agreement.terms
    required = [*terms.parties, *terms.guarantors]
    absent = [i for i in required if i not in keys]
    if absent:
        run.add("agreement: keys of every required signer", FAILED,
                f"no key for {', '.join(absent)}")
        return agreement
    signatures["agreement"] = _signature_checks(
        run, "agreement", agreement.envelope, agreement_policy(terms, keys),
        [("both parties signed", terms.parties, 2),
         ("guarantors signed", terms.guarantors, terms.guarantor_quorum)])
    thread_items = obj.get("thread", [])
    if not isinstance(thread_items, list) or len(thread_items) > MAX_MESSAGES:
        raise DecodeError("export: thread must be a list of messages")
    if not thread_items:
        run.add("negotiation thread", SKIPPED, "not included in this export")
        return agreement
    threads: list[Thread] = []

    def thread_ok() -> str:
        envelopes = [dsse.Envelope.from_dict(t, max_payload=MAX_PROPOSAL_BYTES)
                     for t in thread_items]
        threads.append(verify_thread(envelopes, keys))
        return f"{len(envelopes)} message(s), signed and in order"

    if run.attempt("negotiation thread is unbroken", thread_ok):
        run.attempt("agreement is over the accepted proposal",
                    lambda: "accepted on " + check_agreement_in_thread(
                        agreement, threads[0]).created.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return agreement


def verify_exported(data: bytes | str, *, pinned: Mapping[str, VerifyKey] | None = None
                    ) -> Report:
    """Verify an export offline and report every check.

    ``pinned`` are keys the caller already trusts (its contacts); they are used in
    addition to the keys in the file. Raises :class:`DecodeError` only when the file
    is not an export at all; every other problem is a failed check in the report."""
    obj = expect_object(json_loads(data, max_bytes=MAX_BUNDLE_BYTES, what="export"),
                        required=("v", "kind", "agreement", "keys"),
                        optional=("thread", "handover"), what="export")
    expect_version(obj, what="export")
    kind = obj["kind"]
    if kind not in BUNDLE_KINDS:
        raise DecodeError("export: kind must be 'agreement' or 'handover'")
    if (kind == "handover") != ("handover" in obj):
        raise DecodeError("export: a handover export carries exactly one handover record")
    run = _Run()
    keys = _parse_keys(obj["keys"], run, pinned or {})
    signatures: dict[str, SignatureStatus] = {}
    agreement = _agreement_checks(run, obj, keys, signatures)
    if kind == "agreement":
        return Report("agreement", agreement.id if agreement else "?", tuple(run.checks),
                      signatures)
    return _handover_report(run, obj, keys, agreement, signatures)


def _handover_report(run: _Run, obj: Mapping[str, Any], keys: Mapping[str, VerifyKey],
                     agreement: Agreement | None,
                     signatures: dict[str, SignatureStatus]) -> Report:
    holder: list[HandoverRecord] = []

    def parse() -> str:
        holder.append(parse_handover(_load(obj, "handover", MAX_HANDOVER_BYTES)))
        return f"handed over at {holder[0].place!r}"

    if not run.attempt("handover record is well-formed", parse):
        return Report("handover", "?", tuple(run.checks), signatures)
    record = holder[0]
    if agreement is None:
        run.add("handover record refers only to agreed lists", SKIPPED,
                "the agreement could not be read")
        return Report("handover", record.id, tuple(run.checks), signatures)
    results: list[HandoverCheck] = []

    def against_agreement() -> str:
        results.append(check_handover(record, agreement))
        return "every entry is on the giver's agreed lists, once"

    run.attempt("handover record refers only to agreed lists", against_agreement)
    absent = [i for i in record.witnesses if i not in keys]
    if absent:
        run.add("handover: keys of every witness", FAILED, f"no key for {', '.join(absent)}")
    elif all(p in keys for p in agreement.terms.parties):
        terms = agreement.terms
        signatures["handover"] = _signature_checks(
            run, "handover", record.envelope, handover_policy(record, agreement, keys),
            [("both parties signed", terms.parties, 2),
             ("witnesses countersigned", record.witnesses, len(record.witnesses))])
    result = results[0] if results else None
    if result is not None:
        run.add("counts match the agreement", PASSED if result.balanced else NOTICE,
                "; ".join(result.lines()))
        run.add("within the agreed time window", PASSED if result.within_window else NOTICE,
                "" if result.within_window else "the record's time is outside the window")
    return Report("handover", record.id, tuple(run.checks), signatures, result)

