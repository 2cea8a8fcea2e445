"""Disclosed lists checked against the signed terms (client.negotiation.check_disclosure):
what ``backchannel disclosed`` and ``handover record`` rely on before they trust a
list that arrived from the other side."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from client.negotiation import check_disclosure
from keys import dsse
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps, json_loads
from keys.errors import VerificationError
from keys.listref import DISCLOSURE_TYPE, SaltedList, make_disclosure, salt_list
from keys.negotiation_errors import ListMismatch
from keys.proposal import Counts, Terms, Transfer

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"disclosure/{name}".encode()).digest())


KYIV, MOSCOW, ICRC, STRANGER = (_key(n) for n in ("kyiv", "moscow", "icrc", "stranger"))
KEYS = {k.id: k.public for k in (KYIV, MOSCOW, ICRC, STRANGER)}
GIVE = salt_list(b'{"v":1,"entries":[{"family_name":"A"},{"family_name":"B"}]}', 2)
RECEIVE = salt_list(b'{"v":1,"entries":[{"family_name":"C"}]}', 1)
TERMS = Terms(
    parties=(KYIV.id, MOSCOW.id),
    transfers=(Transfer(KYIV.id, MOSCOW.id, (GIVE.ref(),), Counts(pow=2)),
               Transfer(MOSCOW.id, KYIV.id, (RECEIVE.ref(),), Counts(pow=1))),
    place="Sumy", window_from=T0 + timedelta(days=8), window_to=T0 + timedelta(days=9),
    expires=T0 + timedelta(days=3), guarantors=(ICRC.id,))


def _forged(salted: SaltedList, *, data: bytes | None = None, entries: int | None = None,
            signer: SigningKey = KYIV, to: str = ICRC.id) -> dsse.Envelope:
    """A disclosure signed by ``signer`` whose fields were changed before signing."""
    payload = json_loads(make_disclosure(signer, salted, to=to).envelope.payload,
                         max_bytes=1 << 20, what="disclosure")
    if data is not None:
        payload["data"] = b64url_encode(data)
    if entries is not None:
        payload["entries"] = entries
    return dsse.sign(DISCLOSURE_TYPE, json_dumps(payload), signer)


def test_a_disclosed_list_opens_its_agreed_digest() -> None:
    envelope = make_disclosure(KYIV, GIVE, to=ICRC.id).envelope
    disclosed = check_disclosure(envelope, KYIV.id, TERMS, ICRC.id, KEYS)
    assert disclosed.giver == KYIV.id and disclosed.salted.data == GIVE.data
    # The other delegation discloses the list it is asked for, too.
    other = make_disclosure(MOSCOW, RECEIVE, to=KYIV.id).envelope
    assert check_disclosure(other, MOSCOW.id, TERMS, KYIV.id, KEYS).giver == MOSCOW.id


@pytest.mark.parametrize(("envelope", "sender", "me", "error", "reason"), [
    # One name changed after the digest was agreed (the party even signed it).
    (_forged(GIVE, data=GIVE.data.replace(b'"B"', b'"X"')), KYIV.id, ICRC.id, ListMismatch,
     "does not match the digest in the proposal"),
    # A list that is not one of the agreement's (its own digest opens, but no agreed one).
    (make_disclosure(KYIV, salt_list(b'{"v":1,"entries":[]}', 0), to=ICRC.id).envelope,
     KYIV.id, ICRC.id, ListMismatch, "not a list of this agreement"),
    # The agreed list with another count claimed.
    (_forged(GIVE, entries=3), KYIV.id, ICRC.id, ListMismatch,
     "counts 3 entries; the agreed list has 2"),
    # Addressed to someone else, passed on by its recipient.
    (make_disclosure(KYIV, GIVE, to=MOSCOW.id).envelope, KYIV.id, ICRC.id, ListMismatch,
     "addressed to someone else"),
    # Signed by someone who is not a party.
    (make_disclosure(STRANGER, GIVE, to=ICRC.id).envelope, STRANGER.id, ICRC.id,
     ListMismatch, "not signed by a party"),
    # The message came from Moscow, the disclosure says Kyiv.
    (make_disclosure(KYIV, GIVE, to=ICRC.id).envelope, MOSCOW.id, ICRC.id, ListMismatch,
     "not signed by a party"),
])
def test_refused_disclosures(envelope: dsse.Envelope, sender: str, me: str,
                             error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        check_disclosure(envelope, sender, TERMS, me, KEYS)


def test_a_disclosure_with_a_bad_signature_is_refused() -> None:
    envelope = make_disclosure(KYIV, GIVE, to=ICRC.id).envelope
    bad = replace(envelope, signatures=tuple(
        replace(s, sig=bytes(64)) for s in envelope.signatures))
    with pytest.raises(VerificationError):
        check_disclosure(bad, KYIV.id, TERMS, ICRC.id, KEYS)


def test_only_a_list_the_final_terms_dropped_counts_as_replaced() -> None:
    """`disclosed` sets aside, as replaced, a list disclosed with an earlier proposal
    whose digest the final terms no longer name; a digest still in the final terms
    that fails their check (another count) is a refusal, never "replaced"."""
    from client.commands.negotiation import _replaced_list

    disclosure = make_disclosure(KYIV, GIVE, to=MOSCOW.id).envelope
    other = salt_list(b'{"v":1,"entries":[{"family_name":"D"},{"family_name":"E"}]}', 2)
    dropped = replace(TERMS, transfers=(
        Transfer(KYIV.id, MOSCOW.id, (other.ref(),), Counts(pow=2)), TERMS.transfers[1]))
    assert _replaced_list(disclosure, KYIV.id, TERMS, dropped, MOSCOW.id, KEYS) == GIVE.digest
    recounted = replace(TERMS, transfers=(
        Transfer(KYIV.id, MOSCOW.id, (replace(GIVE.ref(), entries=3),), Counts(pow=3)),
        TERMS.transfers[1]))
    with pytest.raises(ListMismatch, match="counts 2 entries"):
        check_disclosure(disclosure, KYIV.id, recounted, MOSCOW.id, KEYS)
    assert _replaced_list(disclosure, KYIV.id, TERMS, recounted, MOSCOW.id, KEYS) is None
    assert _replaced_list(disclosure, KYIV.id, None, dropped, MOSCOW.id, KEYS) is None


def test_disclosed_out_names_the_refusal_when_nothing_else_was_disclosed(tmp_path) -> None:
    from argparse import Namespace

    from client.commands.negotiation import _write_disclosed

    args = Namespace(out=str(tmp_path / "list.csv"), giver=None, bom=False)
    with pytest.raises(ListMismatch, match="altered"):
        _write_disclosed(args, [], [], None, {}, ["a list disclosed by UA is refused: altered"])
    assert not (tmp_path / "list.csv").exists()


def test_disclosed_out_picks_one_list_or_says_how(tmp_path) -> None:
    """Several lists: --giver picks one (by the giver's id; `me` resolves to ours
    before this point); without it the command refuses and names the givers; --giver
    and --bom without --out are refused before anything is read."""
    from argparse import Namespace

    from client.commands.negotiation import _write_disclosed, run_disclosed
    from client.errors import ClientError
    from client.namelist import Entry, NameList

    with pytest.raises(ClientError, match="--giver and --bom go with --out FILE"):
        run_disclosed(Namespace(giver="UA", bom=False, out=None))
    lists = [NameList((Entry("Шевченко", "Тарас"),)), NameList((Entry("Smirnov", "Ivan"),))]
    shown = [{"giver": KYIV.id, "list": GIVE.digest, "entries": 1},
             {"giver": MOSCOW.id, "list": RECEIVE.digest, "entries": 1}]
    names = {KYIV.id: "UA"}
    out = tmp_path / "list.csv"
    args = Namespace(out=str(out), giver=None, bom=False)
    with pytest.raises(ClientError, match=r"2 lists are disclosed to you \(handed over by "
                                          rf"UA, {MOSCOW.id}\): pick one with --giver ALIAS"):
        _write_disclosed(args, shown, lists, None, names, [])
    assert not out.exists()
    _write_disclosed(args, shown, lists, MOSCOW.id, names, [])  # --giver me, as Moscow
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith("Smirnov,Ivan")
