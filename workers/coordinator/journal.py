"""The leader's log of what its commits wrote: decisions, dead letters, policy notes.

One line per decision and per dead letter, after the commit that holds them landed (so a
logged decision is one an executor can see); a missing failover target and refused
requests once each, when they change, not on every commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from schemas.events import DeadLetter
from schemas.state import PlannedFailover
from workers.policy.state import PolicyState, Refusal

# The pipeline's logger: these lines are part of its story, and operators grep for it.
log = logging.getLogger("workers.coordinator.pipeline")


class Journal:
    """Logs one leadership term's commits."""

    def __init__(self, epoch: int, owner: str) -> None:
        self.epoch = epoch
        self.owner = owner
        self._no_target: str | None = None
        self._last_refusal: Refusal | None = None

    def committed(
        self,
        planned: Sequence[PlannedFailover],
        letters: Sequence[DeadLetter],
        decision_ids: Sequence[str] | None,
        state: PolicyState,
    ) -> None:
        """Log what one commit put into Redis, then what changed in the policy's notes."""
        ids = decision_ids or ["?"] * len(planned)
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
        self._notes(state)

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
