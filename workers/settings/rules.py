"""The rules relating several ``FAILOVER_*`` variables, each written once.

The loader applies them to a role's values (naming the variables); :class:`ElectorTiming`
applies :func:`lease_timing_problems` to timings built in code.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.settings.setting import MIN_REELECT_MS, PREFIX, Values

Problem = tuple[str, str, object]  # (variable without prefix, rule broken, offending value)


def lease_timing_problems(ttl_ms: int, interval_ms: int, deadline_ms: int) -> list[Problem]:
    """The broken links of 0 < renew interval < renew deadline < lease TTL (the one copy)."""
    problems: list[Problem] = []
    if interval_ms <= 0:
        problems.append(("RENEW_INTERVAL_MS", "must be > 0", interval_ms))
    elif interval_ms >= deadline_ms:
        rule = f"must be < {PREFIX}RENEW_DEADLINE_MS ({deadline_ms})"
        problems.append(("RENEW_INTERVAL_MS", rule, interval_ms))
    if deadline_ms >= ttl_ms:
        problems.append(
            ("RENEW_DEADLINE_MS", f"must be < {PREFIX}LEASE_TTL_MS ({ttl_ms})", deadline_ms)
        )
    return problems


def _lease(v: Values) -> list[Problem]:
    return lease_timing_problems(v["LEASE_TTL_MS"], v["RENEW_INTERVAL_MS"], v["RENEW_DEADLINE_MS"])


def _reelect(v: Values) -> list[Problem]:
    delay, jitter = v["REELECT_DELAY_MS"], v["REELECT_JITTER_MS"]
    if delay - jitter >= MIN_REELECT_MS:
        return []
    rule = (
        f"{PREFIX}REELECT_DELAY_MS - {PREFIX}REELECT_JITTER_MS must be >= {MIN_REELECT_MS}"
        f" (delay {delay})"
    )
    return [("REELECT_JITTER_MS", rule, jitter)]


def _skew(v: Values) -> list[Problem]:
    skew, stale = v["MAX_CLOCK_SKEW_MS"], v["STALE_AFTER_MS"]
    if skew < stale:
        return []
    rule = f"must be < {PREFIX}STALE_AFTER_MS ({stale}) or 0 to turn the check off"
    return [("MAX_CLOCK_SKEW_MS", rule, skew)]


def _expiry(v: Values) -> list[Problem]:
    expiry, window = v["OBSERVER_EXPIRY_MS"], v["WINDOW_MS"]
    if expiry >= window:
        return []
    return [("OBSERVER_EXPIRY_MS", f"must be >= {PREFIX}WINDOW_MS ({window})", expiry)]


# Rules relating several variables: (the variables compared, the check). A rule runs only
# for a role that reads all of them, and only when each of them parsed.
RULES: tuple[tuple[tuple[str, ...], Callable[[Values], list[Problem]]], ...] = (
    (("LEASE_TTL_MS", "RENEW_INTERVAL_MS", "RENEW_DEADLINE_MS"), _lease),
    (("REELECT_DELAY_MS", "REELECT_JITTER_MS"), _reelect),
    (("STALE_AFTER_MS", "MAX_CLOCK_SKEW_MS"), _skew),
    (("WINDOW_MS", "OBSERVER_EXPIRY_MS"), _expiry),
)
