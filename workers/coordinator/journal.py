"""The leader's log of what its commits wrote: decisions, dead letters, policy notes.

One line per decision and per dead letter, after the commit that holds them landed (so a
logged decision is one an executor can see); a missing failover target, each region's
state change, each panic / pause change, each new configuration version and each refused
request once, when it changes, not on every commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from schemas.events import DeadLetter
from schemas.state import PlannedFailover, RegionState
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, PolicyState, Refusal, config_differences

# The pipeline's logger: these lines are part of its story, and operators grep for it.
log = logging.getLogger("workers.coordinator.pipeline")

ConfigWatcher = Callable[[int, dict[str, tuple[int | float, int | float]]], None]
"""Told the configuration version in force and how the environment differs from it
(``{name: (environment, in force)}``), at the start of a term and at each new version."""


class Journal:
    """Logs one leadership term's commits."""

    def __init__(self, epoch: int, owner: str, *, on_config: ConfigWatcher | None = None) -> None:
        self.epoch = epoch
        self.owner = owner
        self._on_config = on_config
        self._no_target: str | None = None
        self._last_refusal: Refusal | None = None
        self._regions: dict[str, str] = {}
        self._panic: float | None = None
        self._paused: object = None
        self._held: str | None = None
        self._config_version = 0
        self._env: PolicyConfig | None = None

    def start(self, policy: Policy, env: PolicyConfig) -> None:
        """Note where the term starts (region states, panic, pause), log the configuration
        in force and how the environment differs from it (then once per version)."""
        state = policy.state
        self._regions = {r: policy.region_state(r) for r in policy.config.regions}
        self._panic, self._paused, self._held = state.panic_since, state.paused, state.held
        self._env = env
        self._config_version = state.config_version
        assert state.config is not None
        log.info(
            "configuration version %s in force: %s epoch=%s",
            state.config_version,
            " ".join(f"{k}={v}" for k, v in state.config.tunables().items()),
            self.epoch,
        )
        self._drift(state.config)

    def _drift(self, in_force: PolicyConfig) -> None:
        if self._env is None:
            return
        drift = config_differences(self._env, in_force)
        if self._on_config is not None:
            self._on_config(self._config_version, drift)
        if drift:
            log.warning(
                "environment differs from configuration version %s in force (the version in"
                " force applies; change it with `failoverctl config set`): %s epoch=%s",
                self._config_version,
                ", ".join(f"{k} env={a} in force={b}" for k, (a, b) in drift.items()),
                self.epoch,
            )

    def committed(
        self,
        planned: Sequence[PlannedFailover],
        letters: Sequence[DeadLetter],
        decision_ids: Sequence[str] | None,
        policy: Policy,
        verdicts: Mapping[str, tuple[RegionState, str | None]],
        *,
        held: int = 0,
    ) -> None:
        """Log what one commit put into Redis, then what changed in the policy's notes
        (``verdicts``: each region's state and down reason in the committed state;
        ``held``: decisions waiting for the replicas, not yet on the stream)."""
        ids = decision_ids or ["held" if held else "?"] * len(planned)
        for plan, entry_id in zip(planned, ids, strict=False):
            log.warning(
                "decision %s: failover %s -> %s reason=%s evidence=%s epoch=%s leader=%s entry=%s",
                plan.decision_id,
                plan.from_region,
                plan.to_region,
                plan.reason,
                ",".join(plan.evidence),
                self.epoch,
                self.owner,
                entry_id,
            )
        for letter in letters:
            log.warning(
                "dead letter %s %s (deliveries=%s): %s epoch=%s",
                letter.stream,
                letter.entry_id,
                letter.deliveries,
                letter.reason,
                self.epoch,
            )
        state = policy.state
        self._notes(state)
        self._changes(policy, verdicts)

    def _changes(
        self, policy: Policy, verdicts: Mapping[str, tuple[RegionState, str | None]]
    ) -> None:
        """One line per region state, panic, pause, hold and configuration change."""
        state = policy.state
        for region, (now, reason) in verdicts.items():
            before = self._regions.get(region)
            if now != before:
                self._regions[region] = now
                if before is not None:
                    log.info(
                        "region %s: %s -> %s%s epoch=%s",
                        region,
                        before,
                        now,
                        f" ({reason})" if reason else "",
                        self.epoch,
                    )
        if state.panic_since != self._panic:
            if state.panic_since is not None:
                log.warning(
                    "panic: %s of %s regions down; automatic decisions held for at most %sms"
                    " epoch=%s",
                    state.panic_down,
                    len(policy.config.regions),
                    policy.config.panic_hold_ms,
                    self.epoch,
                )
            else:
                log.info("panic over: automatic decisions allowed epoch=%s", self.epoch)
            self._panic = state.panic_since
        if state.paused != self._paused:
            p = state.paused
            if p is not None:
                log.warning(
                    "paused by %s (%s): no automatic decision until resumed epoch=%s",
                    p.actor,
                    p.reason or "no reason given",
                    self.epoch,
                )
            else:
                log.info("resumed: automatic decisions allowed epoch=%s", self.epoch)
            self._paused = p
        if state.held != self._held:
            if state.held is not None:
                log.info("automatic decision held: %s epoch=%s", state.held, self.epoch)
            self._held = state.held
        if state.config_version != self._config_version:
            self._config_version = state.config_version
            change = state.config_history[-1] if state.config_history else None
            assert state.config is not None
            log.info(
                "configuration version %s in force%s epoch=%s",
                state.config_version,
                ""
                if change is None
                else f" (by {change.actor}: "
                + " ".join(f"{k}={v}" for k, v in change.changes.items())
                + ")",
                self.epoch,
            )
            self._drift(state.config)

    def _notes(self, state: PolicyState) -> None:
        """Log a missing failover target and refused requests once, when they change."""
        if state.no_target != self._no_target:
            self._no_target = state.no_target
            if state.no_target is not None:
                log.error("no failover target: %s epoch=%s", state.no_target, self.epoch)
        if state.refused and state.refused[-1] is not self._last_refusal:
            fresh = []
            for refusal in reversed(state.refused):
                if refusal is self._last_refusal:
                    break
                fresh.append(refusal)
            for refusal in reversed(fresh):
                log.warning(
                    "refused %s %s from %s: %s epoch=%s",
                    refusal.kind,
                    refusal.event_id,
                    refusal.actor,
                    refusal.reason,
                    self.epoch,
                )
            self._last_refusal = state.refused[-1]
