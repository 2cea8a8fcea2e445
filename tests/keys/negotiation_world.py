"""A small cast for the negotiation tests: two delegations, two guarantors, a witness,
their name lists (salted) and a fixed clock. Deterministic, so failures are readable."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from keys.clock import FixedClock
from keys.ed25519 import SigningKey, VerifyKey
from keys.listref import salt_list
from keys.proposal import Counts, Proposal, Terms, Transfer, make_proposal
from keys.thread import Thread, build_thread

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"negotiation/{name}".encode()).digest())


def rand(label: str):
    counter = [0]

    def random(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(f"{label}/{counter[0]}".encode()).digest(n)

    return random


@dataclass
class World:
    kyiv: SigningKey = field(default_factory=lambda: key("kyiv"))
    moscow: SigningKey = field(default_factory=lambda: key("moscow"))
    icrc: SigningKey = field(default_factory=lambda: key("icrc"))
    vatican: SigningKey = field(default_factory=lambda: key("vatican"))
    stranger: SigningKey = field(default_factory=lambda: key("stranger"))
    clock: FixedClock = field(default_factory=lambda: FixedClock(T0))

    def __post_init__(self) -> None:
        # Kyiv hands over 3 (2 POWs, 1 civilian); Moscow 3 POWs in two lists.
        self.kyiv_list = salt_list(b'[{"family_name":"\xd0\x86\xd0\xb2\xd0\xb0\xd0\xbd\xd0\xbe\xd0\xb2"}]x3',
                                   3, random=rand("kyiv-list"))
        self.moscow_list = salt_list(b'{"entries":["a","b"]}', 2, random=rand("moscow-list"))
        self.moscow_extra = salt_list(b'{"entries":["c"]}', 1, random=rand("moscow-extra"))

    @property
    def keys(self) -> dict[str, VerifyKey]:
        return {k.id: k.public for k in (self.kyiv, self.moscow, self.icrc, self.vatican,
                                         self.stranger)}

    def terms(self, **changes) -> Terms:
        terms = Terms(
            parties=(self.kyiv.id, self.moscow.id),
            transfers=(
                Transfer(self.kyiv.id, self.moscow.id, (self.kyiv_list.ref(),),
                         Counts(pow=2, civilians=1)),
                Transfer(self.moscow.id, self.kyiv.id,
                         (self.moscow_list.ref(), self.moscow_extra.ref()), Counts(pow=3)),
            ),
            place="Sumy border crossing",
            window_from=T0 + timedelta(days=8), window_to=T0 + timedelta(days=10),
            expires=T0 + timedelta(days=3),
            conditions="Transfer by bus; ICRC present at the crossing.",
            guarantors=(self.icrc.id, self.vatican.id),
        )
        return replace(terms, **changes)

    def propose(self, signer: SigningKey | None = None, **changes) -> Proposal:
        return make_proposal(signer or self.kyiv, self.terms(**changes), clock=self.clock)

    def opened(self) -> Thread:
        return build_thread([self.propose()])


def agree(world: World, *, guarantors: tuple[SigningKey, ...] | None = None):
    """Kyiv proposes, Moscow accepts, Kyiv confirms, the guarantors co-sign.
    Returns (thread, agreement)."""
    from keys.agreement import accept_proposal, confirm_agreement, countersign_agreement

    thread = world.opened()
    world.clock.advance(hours=1)
    _, thread, agreement = accept_proposal(thread, thread.latest.id, world.moscow,
                                           clock=world.clock)
    agreement = confirm_agreement(agreement, thread, world.kyiv, world.keys, clock=world.clock)
    for guarantor in (world.icrc, world.vatican) if guarantors is None else guarantors:
        agreement = countersign_agreement(agreement, guarantor, world.keys)
    return thread, agreement
