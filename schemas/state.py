"""Values the coordinator and the prober leave in Redis for readers (DESIGN §3).

``PolicySummary`` is the ``summary`` field of ``NS:state`` (what ``failoverctl status``
shows); ``RegionSnapshot`` is the value of ``NS:region:health:<region>``. Both are msgspec
JSON, read by other programs too: add fields with defaults, never rename.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas.events import Status

RegionState = Literal["up", "down", "suspect", "unknown"]


class PlannedFailover(msgspec.Struct, frozen=True):
    """A decision before the coordinator stamps it with epoch and leader."""

    decision_id: str
    from_region: str
    to_region: str
    reason: str
    evidence: list[str]
    decided_at: float
    config_version: int | None = None


class RegionSummary(msgspec.Struct, frozen=True):
    """One region as ``status`` shows it."""

    state: RegionState
    drained: bool
    observers: dict[str, str]
    last_seen: float | None
    down_reason: str | None
    suspect_since_failure: float | None = None
    # v2: verdict -> number of observers; ``observers`` names them only when there are few.
    observer_counts: dict[str, int] = {}


class PanicSummary(msgspec.Struct, frozen=True):
    """A panic (fail-static): how many regions are down, since when, held until when."""

    down: int
    regions: int
    since: float
    hold_until: float


class PolicySummary(msgspec.Struct, frozen=True):
    """The policy as ``status`` shows it: the ``summary`` field of ``NS:state``."""

    active_region: str
    clock: float | None
    regions: dict[str, RegionSummary]
    last_decision: PlannedFailover | None
    open_failover: dict[str, Any] | None
    refused: list[dict[str, Any]]
    no_target: str | None
    cooldown_until: float | None = None
    # v2 (issue 10)
    held: str | None = None
    paused: dict[str, Any] | None = None
    panic: PanicSummary | None = None
    config_version: int | None = None
    config: dict[str, Any] | None = None
    observers: int = 0


class ProbeResult(msgspec.Struct, frozen=True):
    """The outcome of probing one target once."""

    region: str
    url: str
    status: Status
    latency_ms: float
    detail: str
    observed_at: float = 0.0


class RegionSnapshot(msgspec.Struct, frozen=True):
    """The value of ``NS:region:health:<region>``: one prober's latest view of a region."""

    region: str
    status: Status
    source: str
    observed_at: float
    targets: list[ProbeResult]
