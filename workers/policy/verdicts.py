"""Per-region verdicts from the observers' runs (DESIGN §6): pure functions of state and time.

A run counts only while it is *fresh*: its latest observation is within ``window`` of now,
so a silent observer's old verdict never makes a region down or an eligible target.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.state import PolicySummary, RegionState
from workers.policy.state import ObserverRun, PolicyConfig, PolicyState
from workers.policy.views import summarize

INF = float("inf")


def failing_quorum(
    runs: Mapping[str, ObserverRun], k: int, window_s: float, now: float
) -> list[str]:
    """The observers whose failing run has ``k`` observations within ``window_s`` of now.

    (A run whose k-th latest observation is in the window is fresh: its latest one is too.)
    """
    return [
        name
        for name, run in runs.items()
        if run.failing and run.count >= k and now - run.times[-k] <= window_s
    ]


def passing(
    runs: Mapping[str, ObserverRun], k: int, window_s: float, now: float, since: float
) -> int:
    """How many observers have a fresh passing run of ``k`` observations all after ``since``."""
    return sum(
        1
        for run in runs.values()
        if not run.failing
        and run.count >= k
        and run.times[-k] > since
        and now - run.times[-1] <= window_s
    )


def passing_expiry(runs: Mapping[str, ObserverRun], k: int, window_s: float) -> float:
    """The earliest instant a passing run of ``k`` observations stops being fresh."""
    return min(
        (run.times[-1] + window_s for run in runs.values() if not run.failing and run.count >= k),
        default=INF,
    )


class Verdicts:
    """The policy's read side: each region's verdict at an instant, and the status view."""

    _state: PolicyState
    _config: PolicyConfig
    _regions: tuple[str, ...]
    _runs: dict[str, dict[str, ObserverRun]]
    _last_seen: dict[str, float]
    _threshold: int
    _recovery: int
    _quorum: int
    _window: float
    _stale_after: float

    def _down(self, region: str, now: float) -> tuple[str | None, list[str]]:
        """Why ``region`` is down at ``now`` and the evidence, or ``(None, [])``."""
        k = self._threshold
        runs = self._runs[region]
        failing = failing_quorum(runs, k, self._window, now)
        if len(failing) >= self._quorum:
            return "quorum_unhealthy", [i for name in sorted(failing) for i in runs[name].ids[-k:]]
        last = self._last_seen.get(region, self._state.first_tick)
        if last is not None and now - last > self._stale_after:
            return "stale", [f"stale:{region}"]
        return None, []

    def _stale_deadline(self, region: str) -> float:
        last = self._last_seen.get(region, self._state.first_tick)
        return INF if last is None else last + self._stale_after

    def _state_at(self, region: str, now: float) -> RegionState:
        if self._down(region, now)[0] is not None:
            return "down"
        runs = self._runs[region]
        if not runs:
            return "unknown"
        failed_at = self._state.failed_at.get(region, -INF)
        fresh = passing(runs, self._recovery, self._window, now, failed_at)
        return "up" if fresh >= self._quorum else "suspect"

    # -- views --------------------------------------------------------------------------

    def region_state(self, region: str) -> RegionState:
        """``up``/``down``/``suspect``/``unknown`` for ``region`` at the policy clock."""
        now = self._state.clock
        if region not in self._runs or now is None:
            return "unknown"
        return self._state_at(region, now)

    def down_reason(self, region: str) -> str | None:
        """Why ``region`` is down at the policy clock (``quorum_unhealthy``/``stale``), or None."""
        now = self._state.clock
        if region not in self._runs or now is None:
            return None
        return self._down(region, now)[0]

    def summary(self) -> PolicySummary:
        """A read-only view of the state for ``status``."""
        verdicts = {
            region: (self.region_state(region), self.down_reason(region))
            for region in self._regions
        }
        return summarize(self._state, verdicts, self._config, len(self._regions))
