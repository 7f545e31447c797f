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
