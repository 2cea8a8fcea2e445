"""Per-identity token buckets (in memory, per process).

Each process of a multi-process deployment limits on its own, so the effective
limit behind a load balancer is at most ``processes x rate``: the limit protects
each process's resources, which is what it is for.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Bounds the memory an attacker can make us spend on buckets.
MAX_BUCKETS: Final = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``check(key)`` returns 0 when a request may proceed, else the seconds to wait."""

    def __init__(self, rate: float, burst: int, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._now = monotonic
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, key: str) -> int:
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
