"""Injectable time and randomness.

Protocol code never calls ``datetime.now`` or ``os.urandom`` directly: it takes a
:class:`Clock` and a :data:`Random` so that tests can run on fixed time and
deterministic bytes (the test-vector generator relies on this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import nacl.utils

#: A source of random bytes: ``random(n)`` returns ``n`` bytes.
Random = Callable[[int], bytes]

system_random: Random = nacl.utils.random


class Clock:
    """The wall clock, truncated to whole seconds (the precision of our formats)."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0)


@dataclass
class FixedClock(Clock):
    """A clock that only moves when told to; for tests."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current = self.current + timedelta(**delta)


SYSTEM_CLOCK = Clock()
