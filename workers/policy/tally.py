"""Which observer runs count toward each region's verdict, recounted only where runs changed.

Every commit needs every region's verdict (the summary, the journal), and with 1,000
observers that is 3,000 runs to look at while a batch changes a few hundred. A run counts
toward a failing quorum or as a fresh passing run only while it is fresh, and the policy
clock never goes back, so a count stays right until the earliest instant a counted run
stops being fresh (its *horizon*) unless a run changes: :class:`Tally` keeps each run's
part and recounts the changed ones; anything else (a new state, other settings, another
failure time, the horizon reached, a change it was not told of) means counting afresh.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from workers.policy.state import ObserverRun, PolicyState

INF = float("inf")
NEITHER, FAILING, FRESH = 0, 1, 2
# Counts are trusted only this far before a horizon, so float rounding cannot make one late.
_MARGIN = 1e-3

Knobs = tuple[int, int, float]
"""``(threshold, recovery_threshold, window_s)``: what a run's part depends on."""


def part(run: ObserverRun, knobs: Knobs, since: float, now: float) -> tuple[int, float]:
    """How ``run`` counts at ``now`` (NEITHER, FAILING or FRESH) and until when it may."""
    k, recovery, window = knobs
    if run.failing:
        if run.count >= k and now - run.times[-k] <= window:
            return FAILING, run.times[-k] + window
    elif run.count >= recovery and run.times[-recovery] > since and now - run.times[-1] <= window:
        return FRESH, run.times[-1] + window
    return NEITHER, INF


class Tally:
    """Each region's failing-quorum and fresh-passing counts at one policy clock."""

    def __init__(
        self,
        state: PolicyState,
        knobs: Knobs,
        runs: Mapping[str, Mapping[str, ObserverRun]],
        now: float,
    ) -> None:
        self.state = state
        self.knobs = knobs
        self.horizon = INF
        self.since = {region: state.failed_at.get(region, -INF) for region in runs}
        self.parts: dict[str, dict[str, int]] = {}
        self.counts: dict[str, list[int]] = {}
        for region, region_runs in runs.items():
            parts = self.parts[region] = {}
            counts = self.counts[region] = [0, 0, 0]
            since = self.since[region]
            for source, run in region_runs.items():
                kind, until = part(run, knobs, since, now)
                parts[source] = kind
                counts[kind] += 1
                self.horizon = min(self.horizon, until)
        self.horizon -= _MARGIN

    def advance(
        self,
        state: PolicyState,
        knobs: Knobs,
        runs: Mapping[str, Mapping[str, ObserverRun]],
        changed: Collection[tuple[str, str]],
        now: float,
    ) -> bool:
        """Recount the ``changed`` runs at ``now``; False if the counts cannot be trusted
        (then build a new Tally)."""
        if state is not self.state or knobs != self.knobs or now >= self.horizon:
            return False
        failed_at = state.failed_at
        if any(failed_at.get(region, -INF) != since for region, since in self.since.items()):
            return False
        for region, source in changed:
            run = runs.get(region, {}).get(source)
            parts = self.parts.get(region)
            if run is None or parts is None:
                return False  # a run removed, or a region unknown: not a change we can follow
            kind, until = part(run, knobs, self.since[region], now)
            before = parts.get(source)
            counts = self.counts[region]
            if before is not None:
                counts[before] -= 1
            parts[source] = kind
            counts[kind] += 1
            self.horizon = min(self.horizon, until - _MARGIN)
        return all(len(self.parts.get(r, ())) == len(rr) for r, rr in runs.items())
