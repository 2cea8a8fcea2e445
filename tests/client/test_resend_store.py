"""The local boxes of client.resend without a node: what keep() writes, in which
order, and what sweep() may remove while another send is writing."""

from __future__ import annotations

from pathlib import Path

from client import resend
from client.profile import Profile
from client.records import SentDraft
from keys.clock import FixedClock
from keys.envelope import make_envelope
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS
from keys.seal import seal


def _draft(alice: Identity, bob: Identity) -> tuple[SentDraft, bytes]:
    clock = FixedClock()
    sealed = seal(alice, [bob.card], "note", {"text": "45 for 45"}, clock=clock)
    routing = make_envelope(alice.signing_key, sealed.data, to=[bob.id], origin=bob.id,
                            destination=bob.id, clock=clock)
    draft = SentDraft(routing, sealed.message.id, "note", {"text": "45 for 45"},
                      sealed.inner_digest, (("B", bob.id),), (alice.card, bob.card),
                      clock.now())
    return draft, sealed.data


def test_a_sweep_between_keeps_writes_leaves_the_copy(tmp_path: Path, alice: Identity,
                                                      bob: Identity) -> None:
    """Another send's sweep runs between keep()'s two writes: the copy being written
    must survive it (the draft is written first, so a copy never stands alone)."""
    opened = Profile(tmp_path / "p").create(alice, "pw", params=FLOOR_PARAMS)
    draft, sealed = _draft(alice, bob)
    swept: list[list[str]] = []
    real_save = opened.save_box

    def save_then_sweep(folder: str, envelope_id: str, data: object) -> None:
        real_save(folder, envelope_id, data)
        swept.append(resend.sweep(opened, deep=True))

    opened.save_box = save_then_sweep  # type: ignore[method-assign]
    resend.keep(opened, draft.routing, sealed, draft)
    assert swept == [[], []]
    copy = resend.load_copy(opened, draft.routing.id)
    assert copy is not None and copy.sealed == sealed
    assert resend.kept_ids(opened) == ([], [draft.routing.id])
    # A copy that nothing refers to (neither draft nor sent record) is removed.
    opened.drop_box(resend.DRAFTS, draft.routing.id)
    assert resend.sweep(opened) == [draft.routing.id]
    assert resend.load_copy(opened, draft.routing.id) is None


def test_unconfirmed_messages_are_listed_in_the_order_they_were_kept(
        tmp_path: Path, alice: Identity, bob: Identity) -> None:
    """A stopped command's messages are listed in the order it would have submitted
    them (resend --all), not by id."""
    opened = Profile(tmp_path / "p").create(alice, "pw", params=FLOOR_PARAMS)
    drafts = []
    for text in ("proposal", "disclosure", "third"):
        clock = FixedClock()
        sealed = seal(alice, [bob.card], "note", {"text": text}, clock=clock)
        routing = make_envelope(alice.signing_key, sealed.data, to=[bob.id], origin=bob.id,
                                destination=bob.id, clock=clock)
        drafts.append((SentDraft(routing, sealed.message.id, "note", {"text": text},
                                 sealed.inner_digest, (("B", bob.id),),
                                 (alice.card, bob.card), clock.now()), sealed.data))
    # Kept in the reverse of the ids' order, so that sorting by id would fail.
    drafts.sort(key=lambda d: d[0].routing.id, reverse=True)
    for draft, sealed_bytes in drafts:
        resend.keep(opened, draft.routing, sealed_bytes, draft)
    assert resend.kept_ids(opened)[1] == [d.routing.id for d, _ in drafts]
