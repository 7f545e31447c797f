"""Latency summaries that only name a percentile when there are enough samples for it.

A p99 needs at least 100 samples (with fewer, the "p99" is the slowest sample or close to
it); below that the summary has no ``p99_ms`` and the text says "max of N" instead.
"""

from __future__ import annotations

import math
import statistics

P99_MIN_SAMPLES = 100


def summarize(values_ms: list[float], digits: int = 2) -> dict[str, float]:
    """``p50_ms``, ``max_ms`` and ``n``; ``p99_ms`` (nearest rank) only with >= 100 samples."""
    ordered = sorted(values_ms)
    out: dict[str, float] = {
        "p50_ms": round(statistics.median(ordered), digits),
        "max_ms": round(ordered[-1], digits),
        "n": len(ordered),
    }
    if len(ordered) >= P99_MIN_SAMPLES:
        out["p99_ms"] = round(ordered[math.ceil(0.99 * len(ordered)) - 1], digits)
    return out


def tail(summary: dict[str, float]) -> str:
    """The tail as text: ``p99 X ms`` when there are enough samples, else ``max of N X ms``."""
    if "p99_ms" in summary:
        return f"p99 {summary['p99_ms']} ms"
    return f"max of {int(summary['n'])} {summary['max_ms']} ms"


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values_ms: list[float], digits: int = 3) -> dict[str, float]:
    """``n``, ``p50_ms``, ``p99_ms`` (nearest rank), ``min_ms`` and ``max_ms`` of
    ``values_ms``; with fewer than 100 samples the "p99" is at or near the maximum, so the
    printed tables say "max of N" beside it (see :func:`tail`)."""
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "p50_ms": round(nearest_rank(values_ms, 50), digits),
        "p99_ms": round(nearest_rank(values_ms, 99), digits),
        "min_ms": round(min(values_ms), digits),
        "max_ms": round(max(values_ms), digits),
    }
