"""Small statistics helpers: percentiles of latency samples, medians of runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method: a value that was
    actually observed, never an interpolation between two."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ms = [s / 1e6 for s in samples_ns]
    return {"p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "max_ms": round(max(ms), 3)}


def median_of(runs: Sequence[dict[str, float]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def medians(runs: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    return {key: round(median_of(runs, key), 3) for key in keys}
