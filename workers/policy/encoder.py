"""Encoding the policy state for every commit without re-encoding what did not change.

With many observers ``NS:state`` is mostly observer runs (1,000 observers x 3 regions make
about 0.5 MB), and one batch changes a few hundred runs at most. The policy notes which
runs the hot path changed (:class:`RunChanges`); :class:`StateEncoder` keeps every run's
encoded bytes and re-encodes only those, producing exactly :func:`encode_state`'s bytes:
the complete state, decoded by the next leader like any other.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from workers.policy.state import ObserverRun, PolicyState

RunKey = tuple[str, str]
"""``(region, source)``: one observer's run for one region."""

_encoder = msgspec.json.Encoder()


class RunChanges:
    """Which runs changed since the last :meth:`take_run_changes`, for the policy to note.

    The health hot path notes each run it creates or changes, in that order; anything else
    that touches runs (operator events, expiry, a new state) marks them all as changed.
    """

    _touched: dict[RunKey, None]
    _all_runs_changed: bool

    def _reset_run_changes(self) -> None:
        self._touched = {}
        self._all_runs_changed = True

    def take_run_changes(self) -> Collection[RunKey] | None:
        """The runs changed since the last call, in the order of their first change, or
        None when any run may have changed (or gone); starts noting afresh."""
        touched = None if self._all_runs_changed else self._touched
        self._touched = {}
        self._all_runs_changed = False
        return touched


def _encoded(runs: list[ObserverRun]) -> list[msgspec.Raw]:
    """Each run's JSON, in order: one encoder call for all (one line each, JSON has no raw
    newline), as that is most of the cost of a few hundred small runs."""
    return list(map(msgspec.Raw, _encoder.encode_lines(runs).split(b"\n")))


class StateEncoder:
    """:func:`encode_state` of one policy, re-encoding only the runs it reports changed."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, msgspec.Raw]] | None = None

    def encode(self, state: PolicyState, changed: Collection[RunKey] | None) -> bytes:
        """``encode_state(state)``, given :meth:`RunChanges.take_run_changes` (the runs
        changed since the previous call; None: any may have)."""
        cache = self._runs
        if cache is not None and changed is not None:
            try:
                keys = list(changed)
                fresh = _encoded([state.runs[region][source] for region, source in keys])
                for (region, source), raw in zip(keys, fresh, strict=False):
                    # Assigning keeps a known source's place; a new one is appended to
                    # both dicts in the order of first change, so their orders agree.
                    cache[region][source] = raw
            except KeyError:  # a region or run the notes do not explain: start over
                cache = None
            # Runs are only removed along with a None; a count that differs anyway means
            # the notes missed something, so trust nothing cached.
            if cache is not None and (
                len(cache) != len(state.runs)
                or any(len(cache.get(r, ())) != len(runs) for r, runs in state.runs.items())
            ):
                cache = None
        if cache is None or changed is None:
            cache = self._runs = {
                region: dict(zip(runs, _encoded(list(runs.values())), strict=False))
                for region, runs in state.runs.items()
            }
        # Raw values are written as they are: the same bytes as encoding the runs again.
        return _encoder.encode(msgspec.structs.replace(state, runs=cache))
