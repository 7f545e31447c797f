"""The failover policy (DESIGN §6): pure, deterministic, applied one event at a time.

Time is an argument: the policy clock is the largest event time (``observed_at`` /
``at``) or tick seen so far. The same history always yields the same decisions and ids.
The settings in force are part of the state (``config_changed`` events change them in
stream order), so a history replays the same whichever process applies it.

Applying a health event is the hot path (the pipeline's throughput rests on it), so the
decision rules are evaluated only when their outcome may have changed since the last
evaluation: an observation that can make the active region down, the clock passing the
next instant at which time alone can change the outcome, or anything at all that can change
a possible target or the number of regions down while the active region is down and no
decision was made. Evaluating more often never changes a result (tests check the lazy
policy against one that evaluates after every event), so the triggers err on the early side.
"""

from __future__ import annotations

import hashlib

import msgspec

from schemas.errors import ConfigError
from schemas.events import (
    ConfigChanged,
    Drain,
    FailoverCompleted,
    FailoverFailed,
    ForgetObserver,
    HealthEvent,
    ManualFailover,
    OperatorEvent,
    Pause,
    Restore,
    Resume,
)
from schemas.state import PlannedFailover
from workers.policy import control
from workers.policy.encoder import RunChanges
from workers.policy.state import (
    MAX_RECENT_EVENTS,
    MAX_REFUSED,
    ObserverRun,
    OpenFailover,
    PolicyConfig,
    PolicyState,
    Refusal,
    initial_state,
)
from workers.policy.verdicts import INF, Verdicts, passing, passing_expiry

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


class Policy(Verdicts, RunChanges):
    """Applies health and operator events in stream order and plans failovers.

    ``config`` seeds the configuration of a state that has none (a new namespace, or a
    state from before configuration lived in Redis); the version in force is the state's.
    ``overrides`` are applied on top of every version (``failoverctl replay --set``).
    """

    # Tests set this to evaluate after every event: the reference the lazy triggers must match.
    _eager = False

    def __init__(
        self,
        config: PolicyConfig,
        state: PolicyState | None = None,
        *,
        overrides: dict[str, int | float] | None = None,
    ) -> None:
        self.seed = config
        self._regions = config.regions
        self._overrides = overrides or {}
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
        if state.config is None:  # a state from before configuration lived in Redis
            state.config = self.seed
            state.config_version = max(state.config_version, 1)
        elif state.config.regions != self._regions:
            # The regions are the deployment's (FAILOVER_REGIONS), never a tunable.
            state.config = msgspec.structs.replace(state.config, regions=self._regions)
        self._state = state
        self._runs = {r: state.runs.setdefault(r, {}) for r in self._regions}
        self._last_seen = state.last_seen
        self._observers = state.observers
        self._keep = 0
        self._reset_run_changes()
        self._configure()

    @property
    def config(self) -> PolicyConfig:
        """The configuration in force (with any replay overrides)."""
        return self._config

    def _configure(self, *, changed: bool = False) -> None:
        """Take the knobs from the version in force; the next event re-evaluates."""
        st = self._state
        assert st.config is not None
        config = st.config.changed(self._overrides) if self._overrides else st.config
        self._config = config
        self._threshold = config.threshold
        self._recovery = config.recovery_threshold
        self._quorum = config.quorum
        self._window = config.window_ms / 1000
        self._stale_after = config.stale_after_ms / 1000
        self._cooldown = config.cooldown_ms / 1000
        self._panic_at = config.panic_fraction * len(self._regions)
        self._panic_hold = config.panic_hold_ms / 1000
        self._max_age = config.manual_max_age_ms / 1000
        self._expiry = config.observer_expiry_ms / 1000
        # Unknown until the next evaluation, so evaluate at the next event.
        self._blocked = True
        self._reason: str | None = None
        self._eligible: frozenset[str] = frozenset(self._regions)
        self._wake_at = -INF
        keep = max(config.threshold, config.recovery_threshold)
        if changed and keep != self._keep:
            control.rekeep(self._runs.values(), self._keep, keep)
        self._keep = keep

    # -- events -------------------------------------------------------------------------

    def apply(self, event: HealthEvent | OperatorEvent) -> list[PlannedFailover]:
        """Apply one event in stream order; return the decisions it causes (usually none)."""
        if type(event) is HealthEvent:
            return self.apply_health(event)
        assert not isinstance(event, HealthEvent)  # a subclass would be a programming error
        return self._apply_operator_event(event)

    def tick(self, now: float) -> list[PlannedFailover]:
        """Advance the clock to ``now`` (the coordinator's tick), expire observers, evaluate."""
        st = self._state
        if st.clock is None or now > st.clock:
            st.clock = now
        if st.first_tick is None:
            st.first_tick = st.clock
        if control.expire(st, self._expiry):
            self._wake_at = -INF
            self._all_runs_changed = True
        return self._evaluate()

    def knows_observer(self, source: str) -> bool:
        """True if ``source`` has runs in the state (the observer bound counts these)."""
        return source in self._observers

    def apply_health(self, event: HealthEvent) -> list[PlannedFailover]:
        """:meth:`apply` for a health event (the leader's hot path calls it directly)."""
        region = event.region
        runs = self._runs.get(region)
        if runs is None:
            return []
        at = event.observed_at
        failing = event.status == "unhealthy"
        source = event.source
        run = runs.get(source)
        flipped = True  # a new run, or one whose verdict this event turns
        if run is None:
            run = runs[source] = ObserverRun(event.status, failing, 1, [event.event_id], [at])
        else:
            times = run.times
            if at <= times[-1] or event.event_id == run.ids[-1]:
                return []  # duplicate or out of order for this observer
            if run.failing is failing:
                flipped = False
                run.count += 1
                times.append(at)
                if len(times) > self._keep:
                    del times[: -self._keep]
                if failing:
                    run.ids.append(event.event_id)
                    if len(run.ids) > self._keep:
                        del run.ids[: -self._keep]
                else:
                    # Only failing runs are evidence; a passing run keeps its last id (for
                    # duplicates), which keeps NS:state small with many observers.
                    run.ids[-1] = event.event_id
            else:
                run.failing = failing
                run.count = 1
                run.ids = [event.event_id]
                run.times = [at]
            run.status = event.status
        self._touched[region, source] = None
        observers = self._observers
        if at > observers.get(source, -INF):
            observers[source] = at
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
                # While the region is down by quorum, more failing evidence changes nothing,
                # nor does a passing run passing again (the quorum counts failing runs; what
                # time changes, _wake_at covers): with 1,000 observers each such report would
                # otherwise recount the region's 1,000 runs.
                if self._reason != "quorum_unhealthy" or (not failing and flipped):
                    return self._evaluate()
            elif failing and run.count >= self._threshold:
                return self._evaluate()
            else:
                # The first observation of a never-observed region starts its staleness clock.
                self._wake_at = min(self._wake_at, at + self._stale_after - _MARGIN)
        elif self._blocked and (
            # A failing observation can make a region a target only by ending its staleness
            # (the other observers may be passing); otherwise it can only stop it being one,
            # or make it down (which counts toward a panic).
            not failing
            or region in self._eligible
            or seen is None
            or clock - seen > self._stale_after
            or run.count >= self._threshold
        ):
            return self._evaluate()
        return []

    def _apply_operator_event(self, event: OperatorEvent) -> list[PlannedFailover]:
        st = self._state
        self._all_runs_changed = True  # rare; drains, forgetting and new keeps touch runs
        key = f"{event.actor}\x00{event.event_id}"
        if key in st.recent_events:
            return []  # redelivered
        st.recent_events.append(key)
        del st.recent_events[:-MAX_RECENT_EVENTS]
        if st.clock is None or event.at > st.clock:
            st.clock = event.at
        decisions: list[PlannedFailover] = []
        why: str | None = None
        if isinstance(event, ManualFailover):
            decisions = self._manual(event)
        elif isinstance(event, Drain | Restore):
            why = control.drain_or_restore(st, self._runs, event)
        elif isinstance(event, FailoverCompleted | FailoverFailed):
            why = control.report(st, event)
            if why is None and isinstance(event, FailoverFailed):
                assert st.open_failover is not None
                self._clear_failed_if_recovered(st.open_failover.to_region)
        elif isinstance(event, Pause | Resume):
            why = control.pause_or_resume(st, event)
        elif isinstance(event, ForgetObserver):
            why = control.forget_event(st, event)
        else:
            assert isinstance(event, ConfigChanged)
            why = control.change_config(st, event)
            if why is None:
                self._configure(changed=True)
        if why is not None:
            self._refuse(event, why)
        return decisions + self._evaluate()

    def _manual(self, event: ManualFailover) -> list[PlannedFailover]:
        st = self._state
        why = control.manual_refusal(st, self._runs, event, self._max_age, self.region_state)
        if why is not None:
            self._refuse(event, why, event.target)
            return []
        return [self._decide(st.active, event.target, "manual", [event.event_id])]

    def _refuse(self, event: OperatorEvent, why: str, target: str | None = None) -> None:
        st = self._state
        kind = type(event).__struct_config__.tag
        region = event.region or "-"
        st.refused.append(
            Refusal(event.event_id, str(kind), event.actor, region, target, why, event.at)
        )
        del st.refused[:-MAX_REFUSED]

    def _clear_failed_if_recovered(self, region: str) -> None:
        st = self._state
        now = st.clock
        assert now is not None
        fresh = passing(self._runs[region], self._recovery, self._window, now, st.failed_at[region])
        if fresh >= self._quorum:
            del st.failed_at[region]

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
            st.no_target = st.held = st.panic_since = None
            st.panic_down = 0
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
        self._judge_panic(now)
        st.held = self._held(now)
        self._wake_at = self._next_change(now, eligible)
        if not eligible:
            st.no_target = f"{active} is down ({reason}) and no other region is up and not drained"
            return []
        st.no_target = None
        if st.held is not None:
            return []
        last = st.last_decision
        if last is not None and now - last.decided_at < self._cooldown:
            return []
        return [self._decide(active, eligible[0], reason, evidence)]

    def _judge_panic(self, now: float) -> None:
        """Enter, stay in or leave a panic: more than panic_fraction of the regions down."""
        st = self._state
        down = sum(1 for r in self._regions if self._down(r, now)[0] is not None)
        if down > self._panic_at:
            st.panic_down = down
            if st.panic_since is None:
                st.panic_since = now
        else:
            st.panic_since = None
            st.panic_down = 0

    def _held(self, now: float) -> str | None:
        st = self._state
        if st.paused is not None:
            return "paused"
        if st.panic_since is not None and now - st.panic_since < self._panic_hold:
            return "panic"
        return None

    def _decide(
        self, from_region: str, to_region: str, reason: str, evidence: list[str]
    ) -> PlannedFailover:
        st = self._state
        now = st.clock
        assert now is not None  # every caller advanced the clock first
        st.decisions += 1
        ident = decision_id(st.decisions, from_region, to_region, evidence)
        decision = PlannedFailover(
            ident, from_region, to_region, reason, evidence, now, st.config_version
        )
        st.last_decision = decision
        st.active = to_region
        st.open_failover = OpenFailover(ident, from_region, to_region, reason, now)
        st.no_target = None
        self._blocked = True
        self._reason = None
        self._wake_at = -INF
        return decision

    def _next_change(self, now: float, eligible: list[str]) -> float:
        """The earliest clock at which time alone may change the outcome while blocked."""
        st = self._state
        wake = INF
        last = st.last_decision
        if last is not None and now - last.decided_at < self._cooldown:
            wake = last.decided_at + self._cooldown
        if st.panic_since is not None and now - st.panic_since < self._panic_hold:
            wake = min(wake, st.panic_since + self._panic_hold)
        k = self._threshold
        for region, runs in self._runs.items():
            for run in runs.values():
                if run.failing and run.count >= k and now - run.times[-k] <= self._window:
                    wake = min(wake, run.times[-k] + self._window)
            # Any region going stale may start a panic; a target's passing runs may go stale.
            wake = min(wake, self._stale_deadline(region))
            if region in eligible:
                wake = min(wake, passing_expiry(runs, self._recovery, self._window))
        return wake - _MARGIN
