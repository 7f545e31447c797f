"""Per-region verdicts from the observers' runs (DESIGN §6): pure functions of state and time.

A run counts only while it is *fresh*: its latest observation is within ``window`` of now,
so a silent observer's old verdict never makes a region down or an eligible target.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from schemas.state import PolicySummary, RegionState
from workers.policy.state import ObserverRun, PolicyConfig, PolicyState
from workers.policy.tally import FAILING, FRESH, Tally
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
    _tally: Tally | None = None  # the counts behind the last verdicts(changed)

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
        return self._verdict(region, now)[0]

    def _verdict(self, region: str, now: float) -> tuple[RegionState, str | None]:
        """``region``'s state at ``now`` and why it is down, in one pass over its runs
        (what :meth:`_down` and :func:`passing` decide; with 1,000 observers a region has
        1,000 runs and every commit asks for every region)."""
        runs = self._runs[region]
        k, recovery, window = self._threshold, self._recovery, self._window
        since = self._state.failed_at.get(region, -INF)
        failing = fresh = 0
        for run in runs.values():
            if run.failing:
                if run.count >= k and now - run.times[-k] <= window:
                    failing += 1
            elif (
                run.count >= recovery
                and run.times[-recovery] > since
                and now - run.times[-1] <= window
            ):
                fresh += 1
        return self._judge(region, failing, fresh, now)

    def _judge(
        self, region: str, failing: int, fresh: int, now: float
    ) -> tuple[RegionState, str | None]:
        """The verdict from the counts of failing-quorum and fresh passing runs."""
        if failing >= self._quorum:
            return "down", "quorum_unhealthy"
        last = self._last_seen.get(region, self._state.first_tick)
        if last is not None and now - last > self._stale_after:
            return "down", "stale"
        if not self._runs[region]:
            return "unknown", None
        return ("up" if fresh >= self._quorum else "suspect"), None

    # -- views --------------------------------------------------------------------------

    def region_state(self, region: str) -> RegionState:
        """``up``/``down``/``suspect``/``unknown`` for ``region`` at the policy clock."""
        return self.verdict(region)[0]

    def down_reason(self, region: str) -> str | None:
        """Why ``region`` is down at the policy clock (``quorum_unhealthy``/``stale``), or None."""
        return self.verdict(region)[1]

    def verdict(self, region: str) -> tuple[RegionState, str | None]:
        """:meth:`region_state` and :meth:`down_reason` of ``region`` together."""
        now = self._state.clock
        if region not in self._runs or now is None:
            return "unknown", None
        return self._verdict(region, now)

    def verdicts(
        self, changed: Collection[tuple[str, str]] | None = None
    ) -> dict[str, tuple[RegionState, str | None]]:
        """Every region's :meth:`verdict`, in configuration order.

        ``changed``: every ``(region, source)`` run changed since the previous call (what
        ``take_run_changes`` returns); then only those runs are looked at again, unless
        the counts have to be redone anyway (:class:`Tally`). None: look at every run.
        """
        now = self._state.clock
        if now is None:
            return {region: ("unknown", None) for region in self._regions}
        knobs = (self._threshold, self._recovery, self._window)
        tally = self._tally
        if (
            changed is None
            or tally is None
            or not tally.advance(self._state, knobs, self._runs, changed, now)
        ):
            tally = self._tally = Tally(self._state, knobs, self._runs, now)
        counts = tally.counts
        return {
            region: self._judge(region, counts[region][FAILING], counts[region][FRESH], now)
            for region in self._regions
        }

    def summary(
        self, verdicts: Mapping[str, tuple[RegionState, str | None]] | None = None
    ) -> PolicySummary:
        """A read-only view of the state for ``status`` (``verdicts``: :meth:`verdicts`,
        when the caller has them already)."""
        if verdicts is None:
            verdicts = self.verdicts()
        return summarize(self._state, verdicts, self._config, len(self._regions))
