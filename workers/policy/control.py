"""What operator and executor events do to the policy state (DESIGN §3, §6), one verb each.

Each returns why the event was refused, or None when it was applied; the rules in
:mod:`workers.policy.rules` record refusals and re-evaluate afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from schemas.errors import ConfigError
from schemas.events import (
    ConfigChanged,
    Drain,
    FailoverCompleted,
    FailoverFailed,
    ForgetObserver,
    ManualFailover,
    Pause,
    Restore,
    Resume,
)
from schemas.state import RegionState
from workers.policy.state import MAX_CONFIG_HISTORY, ConfigChange, ObserverRun, PolicyState
from workers.policy.state import Pause as PauseNote


def drain_or_restore(
    st: PolicyState, regions: Collection[str], event: Drain | Restore
) -> str | None:
    """Forbid or allow a region as a target."""
    if event.region not in regions:
        return f"unknown region {event.region}"
    if isinstance(event, Drain):
        st.drained.setdefault(event.region, event.at)
    else:
        st.drained.pop(event.region, None)
    return None


def manual_refusal(
    st: PolicyState,
    regions: Collection[str],
    event: ManualFailover,
    max_age_s: float,
    region_state: Callable[[str], RegionState],
) -> str | None:
    """Why a manual failover may not happen now, or None."""
    assert st.clock is not None
    target = event.target
    age = st.clock - event.at
    if age > max_age_s:
        return (
            f"expired: requested {age:.0f}s ago, older than"
            f" manual_max_age_ms={max_age_s * 1000:.0f}"
        )
    if event.region not in regions:
        return f"unknown region {event.region}"
    if target not in regions:
        return f"unknown target {target}"
    if event.region != st.active:
        return f"{event.region} is not the active region ({st.active} is)"
    if target == st.active:
        return f"target {target} is already the active region"
    if target in st.drained:
        return f"target {target} is drained"
    target_state = region_state(target)
    if target_state != "up":
        return f"target {target} is {target_state}, not up"
    return None


def report(st: PolicyState, event: FailoverCompleted | FailoverFailed) -> str | None:
    """Record an executor's report against the open failover."""
    open_ = st.open_failover
    if open_ is None or open_.status != "open":
        return "no open failover to report on"
    if event.decision_id is not None:
        matches = event.decision_id == open_.decision_id
    else:
        matches = event.region == open_.to_region
    if not matches:
        return f"does not match the open failover {open_.decision_id}"
    open_.status = "completed" if isinstance(event, FailoverCompleted) else "failed"
    open_.reported_at = event.at
    open_.reported_by = event.actor
    open_.report_event_id = event.event_id
    open_.detail = event.detail
    if isinstance(event, FailoverFailed):
        # The target stays suspect until observed passing again after the failure.
        st.failed_at[open_.to_region] = event.at
    return None


def pause_or_resume(st: PolicyState, event: Pause | Resume) -> str | None:
    """Stop or allow automatic decisions (manual ones always apply)."""
    if isinstance(event, Pause):
        if st.paused is not None:
            return f"already paused by {st.paused.actor}"
        st.paused = PauseNote(event.actor, event.at, event.event_id, event.detail)
        return None
    if st.paused is None:
        return "not paused"
    st.paused = None
    return None


def forget(st: PolicyState, source: str) -> bool:
    """Drop every run of ``source``; False if it is not known."""
    if source not in st.observers:
        return False
    del st.observers[source]
    for runs in st.runs.values():
        runs.pop(source, None)
    return True


def forget_event(st: PolicyState, event: ForgetObserver) -> str | None:
    """An operator's ``forget_observer``."""
    return None if forget(st, event.source) else f"unknown observer {event.source}"


def expire(st: PolicyState, expiry_s: float) -> list[str]:
    """Forget the observers silent for more than ``expiry_s``; their names."""
    now = st.clock
    if now is None:
        return []
    silent = [source for source, seen in st.observers.items() if now - seen > expiry_s]
    for source in silent:
        forget(st, source)
    return silent


def change_config(st: PolicyState, event: ConfigChanged) -> str | None:
    """Put a new configuration version in force, if it is the next one and valid."""
    assert st.config is not None  # the policy seeds it before any event
    if event.version != st.config_version + 1:
        return (
            f"version {event.version} is not the next one (version {st.config_version} is in force)"
        )
    try:
        st.config = st.config.changed(event.config)
    except ConfigError as exc:
        return str(exc)
    st.config_version = event.version
    st.config_history.append(
        ConfigChange(
            event.version, event.actor, event.at, dict(event.config), event.event_id, event.detail
        )
    )
    del st.config_history[:-MAX_CONFIG_HISTORY]
    return None


def rekeep(regions: Iterable[dict[str, ObserverRun]], old: int, keep: int) -> None:
    """Hold every run to a new ``keep``: each keeps its last ``keep`` observations.

    A run longer than the ``old`` keep counts, under a larger one, only the observations
    kept, so a larger threshold never passes on evidence the state no longer has.
    """
    for runs in regions:
        for run in runs.values():
            if keep > old:
                run.count = min(run.count, len(run.times))
            else:
                del run.ids[:-keep]
                del run.times[:-keep]
