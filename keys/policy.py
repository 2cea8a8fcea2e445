"""Signing policies: which signers an envelope needs before it is trusted.

Policies compose and fail closed, after sigstore's ``AllOf``/``AnyOf``::

    AllOf(Signer(kyiv), Signer(moscow), AtLeast(1, Signer(icrc), Signer(vatican)))

reads "both delegations and at least one guarantor".
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .ed25519 import VerifyKey
from .errors import PolicyNotMet


class Policy(ABC):
    @abstractmethod
    def keys(self) -> dict[str, VerifyKey]:
        """Every key this policy may count, by identity id."""

    @abstractmethod
    def satisfied(self, signers: frozenset[str]) -> bool:
        """Whether ``signers`` (ids with a valid signature) meet this policy."""

    @abstractmethod
    def describe(self) -> str:
        """A human description, e.g. ``all of (a, b)``."""

    def check(self, signers: frozenset[str]) -> None:
        """Raise :class:`PolicyNotMet` unless satisfied."""
        if not self.satisfied(signers):
            known = frozenset(self.keys())
            raise PolicyNotMet(
                f"required signatures missing: need {self.describe()}",
                present=signers & known, missing=known - signers)


class Signer(Policy):
    """One specific identity must have signed."""

    def __init__(self, key: VerifyKey, label: str | None = None) -> None:
        self.key = key
        self.label = label or key.id

    def keys(self) -> dict[str, VerifyKey]:
        return {self.key.id: self.key}

    def satisfied(self, signers: frozenset[str]) -> bool:
        return self.key.id in signers

    def describe(self) -> str:
        return self.label


class AtLeast(Policy):
    """At least ``count`` of the sub-policies must be satisfied."""

    def __init__(self, count: int, *policies: Policy) -> None:
        if not 1 <= count <= len(policies):
            raise ValueError("count must be between 1 and the number of policies")
        seen: set[str] = set()
        for policy in policies:
            ids = set(policy.keys())
            if ids & seen:
                # AtLeast(2, Signer(a), Signer(a)) would be met by a alone.
                raise ValueError("a signer appears more than once in a policy")
            seen |= ids
        self.count = count
        self.policies = policies

    def keys(self) -> dict[str, VerifyKey]:
        out: dict[str, VerifyKey] = {}
        for policy in self.policies:
            out.update(policy.keys())
        return out

    def satisfied(self, signers: frozenset[str]) -> bool:
        return sum(p.satisfied(signers) for p in self.policies) >= self.count

    def describe(self) -> str:
        inner = ", ".join(p.describe() for p in self.policies)
        if self.count == len(self.policies):
            return f"all of ({inner})"
        return f"at least {self.count} of ({inner})"


class AllOf(AtLeast):
    def __init__(self, *policies: Policy) -> None:
        super().__init__(len(policies), *policies)


class AnyOf(AtLeast):
    def __init__(self, *policies: Policy) -> None:
        super().__init__(1, *policies)
