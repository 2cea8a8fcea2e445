"""When to try a peer again: capped exponential backoff with jitter (pure)."""

from __future__ import annotations

import math

from keys.clock import Random


def retry_delay(failures: int, *, initial: float, maximum: float, draw: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 after the first).

    The delay doubles from ``initial`` up to ``maximum``; "equal jitter" then picks a
    point in its upper half (``draw`` in [0, 1)), so that the nodes retrying a peer
    that comes back do not all knock at the same second, yet none waits less than half.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    base = min(maximum, initial * 2.0 ** min(failures - 1, 62))
    return base / 2 + base / 2 * draw


def uniform(random: Random) -> float:
    """A float in [0, 1) from the injectable random source (53 bits: a double holds no
    more, and 56 would round up to 1.0)."""
    return (int.from_bytes(random(7), "big") >> 3) / 2.0 ** 53


def next_attempt(now: int, failures: int, *, initial: float, maximum: float,
                 random: Random) -> int:
    """The whole second of the next attempt (times are stored in whole seconds)."""
    delay = retry_delay(failures, initial=initial, maximum=maximum, draw=uniform(random))
    return now + max(1, math.ceil(delay))
