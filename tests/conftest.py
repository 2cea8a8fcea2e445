"""Shared fixtures: fixed time, deterministic randomness, and a few identities.

Identities are session-scoped: key generation is cheap, but the sealing tests use
the same people many times and a stable cast keeps failures readable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import settings

from keys.clock import FixedClock
from keys.identity import Identity
from keys.kem import SUITE_HYBRID, SUITE_X25519

# Hypothesis's 200 ms per-example deadline measures the machine, not the code: a
# 2-core CI machine running three workers stalls longer than that now and then.
settings.register_profile("backchannel", deadline=None)
settings.load_profile("backchannel")

#: The instant every fixed clock starts at (FixedClock's own default).
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lint: runs ruff and mypy over the tree (part of CI; deselect with -m 'not lint')")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules holding a slow or lint test run first, each kept whole and in order.

    pytest-xdist (``--dist loadscope``) hands out modules in collection order; the slow
    ones (nodes and CLI processes started per module, mypy) came last alphabetically
    and ran alone at the end while the other workers sat idle."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    heavy = {module(item) for item in items
             if item.get_closest_marker("slow") or item.get_closest_marker("lint")}
    items.sort(key=lambda item: module(item) not in heavy)  # stable: order kept within


class ShakeRandom:
    """Deterministic bytes: SHAKE-256 over a seed and a call counter."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(n)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def shake_random() -> Callable[[bytes], ShakeRandom]:
    return ShakeRandom


def _make(name: str, role: str = "delegation", suite: str = SUITE_HYBRID) -> Identity:
    return Identity.create(name, role, suite=suite, clock=FixedClock(T0),
                           random=ShakeRandom(f"{name}/{suite}".encode()))


@pytest.fixture(scope="session")
def make_identity() -> Callable[..., Identity]:
    """Factory for further identities (deterministic per name and suite)."""
    return _make


@pytest.fixture(scope="session")
def alice() -> Identity:
    return _make("Alice")


@pytest.fixture(scope="session")
def bob() -> Identity:
    return _make("Bob")


@pytest.fixture(scope="session")
def carol() -> Identity:
    return _make("Carol")


@pytest.fixture(scope="session")
def xavier() -> Identity:
    """An X25519-only identity."""
    return _make("Xavier", suite=SUITE_X25519)
