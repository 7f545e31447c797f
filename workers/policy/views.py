"""Read-only views of the policy state: what ``status`` and ``failoverctl observers`` show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from operator import attrgetter

import msgspec

from schemas.state import PanicSummary, PolicySummary, RegionState, RegionSummary
from workers.policy.state import ObserverRun, PolicyConfig, PolicyState


class ObserverView(msgspec.Struct, frozen=True):
    """One observer's run for one region, as ``failoverctl observers`` lists it."""

    region: str
    status: str
    failing: bool
    run: int
    last_at: float
    fresh: bool


class ObserverRow(msgspec.Struct, frozen=True):
    """One observer: when it was last heard from, and its run per region."""

    source: str
    last_seen: float
    age_s: float | None
    expires_at: float
    runs: list[ObserverView]


def observer_rows(state: PolicyState, config: PolicyConfig) -> list[ObserverRow]:
    """Every observer the state tracks, by name, with freshness judged at the policy clock."""
    now = state.clock
    window = config.window_ms / 1000
    rows = []
    for source in sorted(state.observers):
        seen = state.observers[source]
        views = [
            ObserverView(
                region,
                run.status,
                run.failing,
                run.count,
                run.times[-1],
                now is not None and now - run.times[-1] <= window,
            )
            for region, runs in state.runs.items()
            if (run := runs.get(source)) is not None
        ]
        rows.append(
            ObserverRow(
                source,
                seen,
                None if now is None else now - seen,
                seen + config.observer_expiry_ms / 1000,
                views,
            )
        )
    return rows


MAX_NAMED_OBSERVERS = 20
"""``status`` names the observers of a region up to this many; beyond, it counts them."""


def _named(runs: Mapping[str, ObserverRun]) -> dict[str, str]:
    if len(runs) > MAX_NAMED_OBSERVERS:
        return {}
    return {name: run.status for name, run in runs.items()}


_status = attrgetter("status")


def _counts(runs: Mapping[str, ObserverRun]) -> dict[str, int]:
    # Counter and map count in C (every commit counts every run); first-seen order as before.
    return dict(Counter(map(_status, runs.values())))


def summarize(
    state: PolicyState,
    verdicts: Mapping[str, tuple[RegionState, str | None]],
    config: PolicyConfig,
    n_regions: int,
) -> PolicySummary:
    """The view ``status`` shows, given each region's state and down reason, in order."""
    regions = {
        region: RegionSummary(
            state=verdict,
            drained=region in state.drained,
            observers=_named(state.runs.get(region, {})),
            observer_counts=_counts(state.runs.get(region, {})),
            last_seen=state.last_seen.get(region),
            down_reason=reason,
            suspect_since_failure=state.failed_at.get(region),
        )
        for region, (verdict, reason) in verdicts.items()
    }
    last = state.last_decision
    panic = None
    if state.panic_since is not None:
        hold_until = state.panic_since + config.panic_hold_ms / 1000
        panic = PanicSummary(state.panic_down, n_regions, state.panic_since, hold_until)
    return PolicySummary(
        active_region=state.active,
        clock=state.clock,
        regions=regions,
        last_decision=last,
        open_failover=None
        if state.open_failover is None
        else msgspec.structs.asdict(state.open_failover),
        refused=[msgspec.structs.asdict(r) for r in state.refused],
        no_target=state.no_target,
        cooldown_until=None if last is None else last.decided_at + config.cooldown_ms / 1000,
        held=state.held,
        paused=None if state.paused is None else msgspec.structs.asdict(state.paused),
        panic=panic,
        config_version=state.config_version,
        config=config.tunables(),
        observers=len(state.observers),
    )
