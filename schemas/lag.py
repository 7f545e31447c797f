"""A lag snapshot of the coordinator group, as :mod:`streams.lag` reads it (plain values)."""

from __future__ import annotations

import msgspec


class StreamLag(msgspec.Struct, frozen=True):
    """One input stream as seen by the consumer group at one instant."""

    stream: str
    kind: str
    length: int
    group_found: bool
    consumers: int
    last_delivered_id: str | None
    lag: int
    lag_exact: bool
    lag_seconds: float
    first_undelivered_id: str | None
    pending: int
    oldest_pending_id: str | None
    oldest_pending_age_seconds: float
    oldest_pending_idle_ms: int
    oldest_pending_deliveries: int

    @property
    def backlog(self) -> int:
        """Entries not yet committed: undelivered plus delivered-but-unacked."""
        return self.lag + self.pending


class StateFields(msgspec.Struct, frozen=True):
    """The raw fields of ``NS:state`` that status shows (decoded by the caller)."""

    summary: bytes | None
    epoch: int | None
    leader: str | None
    updated_at: float | None


class LagReport(msgspec.Struct, frozen=True):
    """Everything one snapshot returns."""

    now_ms: int
    leader: str | None
    lease_ms_left: int | None
    epoch: int
    dlq_length: int
    decisions_length: int
    streams: tuple[StreamLag, ...]
    state: StateFields | None = None
