"""The failover policy (DESIGN §6): pure, deterministic, applied one event at a time.

Time is an argument: the policy clock is the largest event time (``observed_at`` /
``at``) or tick seen so far. The same history always yields the same decisions and ids.

Applying a health event is the hot path (the pipeline's throughput rests on it), so the
decision rules are evaluated only when their outcome may have changed since the last
evaluation: an observation that can make the active region down, the clock passing the
next instant at which time alone can change the outcome, or anything at all about the
active region or a possible target while the active region is down and no decision was
made. Evaluating more often than that never changes a result (tests check the lazy policy
against one that evaluates after every event), so the triggers err on the early side.
"""

from __future__ import annotations

import hashlib

import msgspec

from schemas.errors import ConfigError
from schemas.events import (
    Drain,
    FailoverCompleted,
    FailoverEvent,
    FailoverFailed,
    HealthEvent,
    ManualFailover,
    Restore,
)
from schemas.state import PlannedFailover, PolicySummary, RegionState
from workers.policy.state import (
    MAX_RECENT_EVENTS,
    MAX_REFUSED,
    ObserverRun,
    OpenFailover,
    PolicyConfig,
    PolicyState,
    Refusal,
    initial_state,
    summarize,
)

_INF = float("inf")
# Time-based re-evaluation is scheduled this much early so float rounding can never make it
# late; an early evaluation is merely redundant.
_MARGIN = 1e-3


def decision_id(seq: int, from_region: str, to_region: str, evidence: list[str]) -> str:
    """The id of the ``seq``-th decision: a digest of what made it, so replays agree.

    The sequence number is part of the digest because evidence can repeat (a region that
    goes stale twice has the same ``stale:<region>`` evidence both times), and executors
    must never see two different decisions under one id.
    """
    payload = msgspec.json.encode([seq, from_region, to_region, evidence])
    return "d-" + hashlib.sha256(payload).hexdigest()[:16]


class Policy:
    """Applies health and failover events in stream order and plans failovers."""

    # Tests set this to evaluate after every event: the reference the lazy triggers must match.
    _eager = False

    def __init__(self, config: PolicyConfig, state: PolicyState | None = None) -> None:
        self.config = config
        self._regions = config.regions
        self._threshold = config.threshold
        self._recovery = config.recovery_threshold
        self._quorum = config.quorum
        self._window = config.window_ms / 1000
        self._stale_after = config.stale_after_ms / 1000
        self._cooldown = config.cooldown_ms / 1000
        self._keep = max(config.threshold, config.recovery_threshold)
        self.state = initial_state(config) if state is None else state

    @property
    def state(self) -> PolicyState:
        """The complete state, mutated in place; the caller serialises it."""
        return self._state

    @state.setter
    def state(self, state: PolicyState) -> None:
        if state.active not in self._regions:
            raise ConfigError(
                f"policy state's active region {state.active!r} is not one of {self._regions!r}"
            )
        self._state = state
        self._runs = {r: state.runs.setdefault(r, {}) for r in self._regions}
        self._last_seen = state.last_seen
        # Unknown until the next evaluation, so evaluate at the next event.
        self._blocked = True
        self._reason: str | None = None
        self._eligible: frozenset[str] = frozenset(self._regions)
        self._wake_at = -_INF

    # -- events -------------------------------------------------------------------------

    def apply(self, event: HealthEvent | FailoverEvent) -> list[PlannedFailover]:
        """Apply one event in stream order; return the decisions it causes (usually none)."""
        if type(event) is HealthEvent:
            return self._apply_health(event)
        assert not isinstance(event, HealthEvent)  # a subclass would be a programming error
        return self._apply_failover_event(event)

    def tick(self, now: float) -> list[PlannedFailover]:
        """Advance the clock to ``now`` (the coordinator's tick) and evaluate."""
        st = self._state
        if st.clock is None or now > st.clock:
            st.clock = now
        if st.first_tick is None:
            st.first_tick = st.clock
        return self._evaluate()

    def _apply_health(self, event: HealthEvent) -> list[PlannedFailover]:
        region = event.region
        runs = self._runs.get(region)
        if runs is None:
            return []
        at = event.observed_at
        failing = event.status == "unhealthy"
        run = runs.get(event.source)
        if run is None:
            run = runs[event.source] = ObserverRun(event.status, failing, 1, [event.event_id], [at])
        else:
            times = run.times
            if at <= times[-1] or event.event_id == run.ids[-1]:
                return []  # duplicate or out of order for this observer
            if run.failing is failing:
                run.count += 1
                run.ids.append(event.event_id)
                times.append(at)
                if len(times) > self._keep:
                    del run.ids[0]
                    del times[0]
            else:
                run.failing = failing
                run.count = 1
                run.ids = [event.event_id]
                run.times = [at]
            run.status = event.status
        st = self._state
        clock = st.clock
        if clock is None or at > clock:
            st.clock = clock = at
        seen = self._last_seen.get(region)
        if seen is None or at > seen:
            self._last_seen[region] = at
        if region in st.failed_at:
            self._clear_failed_if_recovered(region)

        if self._eager or clock >= self._wake_at:
            return self._evaluate()
        if region == st.active:
            if self._blocked:
                # More failing evidence changes nothing while the region is down by quorum.
                if not failing or self._reason != "quorum_unhealthy":
                    return self._evaluate()
            elif failing and run.count >= self._threshold:
                return self._evaluate()
            else:
                # The first observation of a never-observed region starts its staleness clock.
                self._wake_at = min(self._wake_at, at + self._stale_after - _MARGIN)
        elif self._blocked and (
            # A failing observation can make a region a target only by ending its staleness
            # (the other observers may be passing); otherwise it can only stop it being one.
            not failing
            or region in self._eligible
            or seen is None
            or clock - seen > self._stale_after
        ):
            return self._evaluate()
        return []

    def _apply_failover_event(self, event: FailoverEvent) -> list[PlannedFailover]:
        st = self._state
        key = f"{event.actor}\x00{event.event_id}"
        if key in st.recent_events:
            return []  # redelivered
        st.recent_events.append(key)
        del st.recent_events[:-MAX_RECENT_EVENTS]
        if st.clock is None or event.at > st.clock:
            st.clock = event.at
        decisions: list[PlannedFailover] = []
        if isinstance(event, ManualFailover):
            decisions = self._manual(event)
        elif isinstance(event, Drain | Restore):
            self._drain_or_restore(event)
        else:
            self._report(event)
        return decisions + self._evaluate()

    def _manual(self, event: ManualFailover) -> list[PlannedFailover]:
        st = self._state
        target = event.target
        why = None
        if event.region not in self._runs:
            why = f"unknown region {event.region}"
        elif target not in self._runs:
            why = f"unknown target {target}"
        elif event.region != st.active:
            why = f"{event.region} is not the active region ({st.active} is)"
        elif target == st.active:
            why = f"target {target} is already the active region"
        elif target in st.drained:
            why = f"target {target} is drained"
        else:
            target_state = self.region_state(target)
            if target_state != "up":
                why = f"target {target} is {target_state}, not up"
        if why is not None:
            self._refuse(event, why, target)
            return []
        return [self._decide(st.active, target, "manual", [event.event_id])]

    def _drain_or_restore(self, event: Drain | Restore) -> None:
        st = self._state
        if event.region not in self._runs:
            self._refuse(event, f"unknown region {event.region}")
        elif isinstance(event, Drain):
            st.drained.setdefault(event.region, event.at)
        else:
            st.drained.pop(event.region, None)

    def _report(self, event: FailoverCompleted | FailoverFailed) -> None:
        st = self._state
        open_ = st.open_failover
        if open_ is None or open_.status != "open":
            self._refuse(event, "no open failover to report on")
            return
        if event.decision_id is not None:
            matches = event.decision_id == open_.decision_id
        else:
            matches = event.region == open_.to_region
        if not matches:
            self._refuse(event, f"does not match the open failover {open_.decision_id}")
            return
        open_.status = "completed" if isinstance(event, FailoverCompleted) else "failed"
        open_.reported_at = event.at
        open_.reported_by = event.actor
        open_.report_event_id = event.event_id
        open_.detail = event.detail
        if isinstance(event, FailoverFailed):
            # The target stays suspect until observed passing again after the failure.
            st.failed_at[open_.to_region] = event.at
            self._clear_failed_if_recovered(open_.to_region)

    def _refuse(self, event: FailoverEvent, why: str, target: str | None = None) -> None:
        st = self._state
        kind = type(event).__struct_config__.tag
        st.refused.append(
            Refusal(event.event_id, str(kind), event.actor, event.region, target, why, event.at)
        )
        del st.refused[:-MAX_REFUSED]

    def _clear_failed_if_recovered(self, region: str) -> None:
        failed_at = self._state.failed_at[region]
        k = self._recovery
        fresh = sum(
            1
            for run in self._runs[region].values()
            if not run.failing and run.count >= k and run.times[-k] > failed_at
        )
        if fresh >= self._quorum:
            del self._state.failed_at[region]

    # -- rules --------------------------------------------------------------------------

    def _evaluate(self) -> list[PlannedFailover]:
        st = self._state
        now = st.clock
        if now is None:
            return []
        active = st.active
        reason, evidence = self._down(active, now)
        self._reason = reason
        if reason is None:
            st.no_target = None
            self._blocked = False
            self._wake_at = self._stale_deadline(active) - _MARGIN
            return []
        self._blocked = True
        eligible = [
            r
            for r in self._regions
            if r != active and r not in st.drained and self._state_at(r, now) == "up"
        ]
        self._eligible = frozenset(eligible)
        self._wake_at = self._next_change(now, eligible)
        if not eligible:
            st.no_target = f"{active} is down ({reason}) and no other region is up and not drained"
            return []
        st.no_target = None
        last = st.last_decision
        if last is not None and now - last.decided_at < self._cooldown:
            return []
        return [self._decide(active, eligible[0], reason, evidence)]

    def _decide(
        self, from_region: str, to_region: str, reason: str, evidence: list[str]
    ) -> PlannedFailover:
        st = self._state
        now = st.clock
        assert now is not None  # every caller advanced the clock first
        st.decisions += 1
        ident = decision_id(st.decisions, from_region, to_region, evidence)
        decision = PlannedFailover(ident, from_region, to_region, reason, evidence, now)
        st.last_decision = decision
        st.active = to_region
        st.open_failover = OpenFailover(ident, from_region, to_region, reason, now)
        st.no_target = None
        self._blocked = True
        self._reason = None
        self._wake_at = -_INF
        return decision

    def _down(self, region: str, now: float) -> tuple[str | None, list[str]]:
        """Why ``region`` is down at ``now`` and the evidence, or ``(None, [])``."""
        k = self._threshold
        window = self._window
        failing = [
            name
            for name, run in self._runs[region].items()
            if run.failing and run.count >= k and now - run.times[-k] <= window
        ]
        if len(failing) >= self._quorum:
            runs = self._runs[region]
            return "quorum_unhealthy", [i for name in sorted(failing) for i in runs[name].ids[-k:]]
        last = self._last_seen.get(region, self._state.first_tick)
        if last is not None and now - last > self._stale_after:
            return "stale", [f"stale:{region}"]
        return None, []

    def _stale_deadline(self, region: str) -> float:
        last = self._last_seen.get(region, self._state.first_tick)
        return _INF if last is None else last + self._stale_after

    def _state_at(self, region: str, now: float) -> RegionState:
        if self._down(region, now)[0] is not None:
            return "down"
        runs = self._runs[region]
        if not runs:
            return "unknown"
        k = self._recovery
        failed_at = self._state.failed_at.get(region, -_INF)
        passing = sum(
            1
            for run in runs.values()
            if not run.failing and run.count >= k and run.times[-k] > failed_at
        )
        return "up" if passing >= self._quorum else "suspect"

    def _next_change(self, now: float, eligible: list[str]) -> float:
        """The earliest clock at which time alone may change the outcome while blocked."""
        wake = _INF
        last = self._state.last_decision
        if last is not None and now - last.decided_at < self._cooldown:
            wake = last.decided_at + self._cooldown
        k = self._threshold
        for runs in self._runs.values():
            for run in runs.values():
                if run.failing and run.count >= k and now - run.times[-k] <= self._window:
                    wake = min(wake, run.times[-k] + self._window)
        for region in eligible:
            wake = min(wake, self._stale_deadline(region))
        return wake - _MARGIN

    # -- views --------------------------------------------------------------------------

    def region_state(self, region: str) -> RegionState:
        """``up``/``down``/``suspect``/``unknown`` for ``region`` at the policy clock."""
        now = self._state.clock
        if region not in self._runs or now is None:
            return "unknown"
        return self._state_at(region, now)

    def summary(self) -> PolicySummary:
        """A read-only view of the state for ``status``."""
        now = self._state.clock
        verdicts = {
            region: (self.region_state(region), None if now is None else self._down(region, now)[0])
            for region in self._regions
        }
        return summarize(self._state, verdicts, self._cooldown)
