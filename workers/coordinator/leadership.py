"""The vocabulary of an election: the elector's timing, one term of leadership, why a term
ends, and the callbacks an :class:`~workers.coordinator.elector.Elector` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal

import msgspec

from schemas.errors import ConfigError
from workers.settings import DEFAULTS, MIN_REELECT_MS, PREFIX, Settings, lease_timing_problems

DemotionReason = Literal[
    "lost", "renew_deadline", "work_ended", "redis_unavailable", "shutdown", "step_down"
]


class ElectorTiming(msgspec.Struct, frozen=True):
    """All the elector's intervals in milliseconds."""

    ttl_ms: int
    renew_interval_ms: int
    renew_deadline_ms: int
    retry_period_ms: int
    reelect_delay_ms: int = DEFAULTS.reelect_delay_ms
    reelect_jitter_ms: int = DEFAULTS.reelect_jitter_ms
    min_reelect_ms: int = MIN_REELECT_MS
    follower_jitter_ms: int = 10
    min_replicas: int = 0

    def __post_init__(self) -> None:
        """Refuse timings that would let a leader outlive its lease or spin."""
        problems = lease_timing_problems(
            self.ttl_ms, self.renew_interval_ms, self.renew_deadline_ms
        )
        if problems:
            raise ConfigError(
                "elector timing: "
                + "; ".join(f"{PREFIX}{name} {rule}, got {value}" for name, rule, value in problems)
            )
        if self.retry_period_ms <= 0:
            raise ConfigError(
                f"elector timing: retry_period_ms must be > 0, got {self.retry_period_ms}"
            )
        negative = [
            name
            for name in (
                "reelect_delay_ms",
                "reelect_jitter_ms",
                "min_reelect_ms",
                "follower_jitter_ms",
                "min_replicas",
            )
            if getattr(self, name) < 0
        ]
        if negative:
            raise ConfigError(f"elector timing: {', '.join(negative)} must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> ElectorTiming:
        """Derive the timing from settings; the retry period equals the renew interval."""
        return cls(
            ttl_ms=settings.lease_ttl_ms,
            renew_interval_ms=settings.renew_interval_ms,
            renew_deadline_ms=settings.renew_deadline_ms,
            retry_period_ms=settings.renew_interval_ms,
            reelect_delay_ms=settings.reelect_delay_ms,
            reelect_jitter_ms=settings.reelect_jitter_ms,
            min_replicas=settings.min_replicas,
        )


class Leadership(msgspec.Struct, frozen=True):
    """One term of leadership: who, under which epoch, since when (monotonic seconds)."""

    owner: str
    epoch: int
    acquired_at: float
    elected_at: float


Work = Callable[[Leadership], Coroutine[Any, Any, None]]
OnElected = Callable[[Leadership], None]
OnDemoted = Callable[[Leadership, DemotionReason], None]
MayLead = Callable[[], Coroutine[Any, Any, str | None]]
"""Asked before every election attempt: None to campaign, else why this process may not lead."""
