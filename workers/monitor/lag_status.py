"""Burrow-style consumer status over a sliding window of lag samples (pure: no I/O, no clock).

Rules, checked in order on the samples of one (stream, group); "backlog" is the entries not
yet committed (undelivered lag + pending):

- STOP: no leader holds the lease, or the group does not exist while there is backlog
  (nobody is reading);
- OK: the backlog was zero in some sample of the window (the reader caught up), or the
  window is not full yet;
- STALL: backlog in every sample and the position never moved (the group's last delivered
  id did not change and no pending entry was acknowledged);
- WARN: the position moves but the backlog never shrank across the window and grew overall;
- OK otherwise.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from schemas.lag import LagReport, StreamLag

LagStatus = Literal["OK", "WARN", "STALL", "STOP"]
STATUSES: tuple[LagStatus, ...] = ("OK", "WARN", "STALL", "STOP")


class GroupSample(msgspec.Struct, frozen=True):
    """What the evaluation needs from one snapshot of one stream."""

    at_ms: int
    leader: bool
    group_found: bool
    lag: int
    pending: int
    delivered_id: str | None
    lag_seconds: float = 0.0
    oldest_pending_idle_ms: int = 0

    @property
    def backlog(self) -> int:
        """Entries not yet committed."""
        return self.lag + self.pending

    @classmethod
    def of(cls, report: LagReport, stream: StreamLag) -> GroupSample:
        """Extract the sample of ``stream`` from a snapshot."""
        return cls(
            at_ms=report.now_ms,
            leader=report.leader is not None,
            group_found=stream.group_found,
            lag=stream.lag,
            pending=stream.pending,
            delivered_id=stream.last_delivered_id,
            lag_seconds=stream.lag_seconds,
            oldest_pending_idle_ms=stream.oldest_pending_idle_ms,
        )


class Verdict(msgspec.Struct, frozen=True):
    """A status and the reason in words."""

    status: LagStatus
    reason: str


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict (STOP > STALL > WARN > OK); OK if there are none."""
    found = [*verdicts]
    if not found:
        return Verdict("OK", "nothing to evaluate")
    return max(found, key=lambda v: STATUSES.index(v.status))


def _stopped(latest: GroupSample) -> Verdict | None:
    if not latest.leader:
        return Verdict("STOP", "no leader holds the lease: nobody is reading")
    if not latest.group_found and latest.backlog > 0:
        return Verdict("STOP", f"group does not exist: nobody reads {latest.backlog} entries")
    return None


def evaluate(samples: Sequence[GroupSample], *, window: int) -> Verdict:
    """Status of one group on one stream from its last ``window`` samples, oldest first."""
    if not samples:
        return Verdict("OK", "no samples yet")
    recent = list(samples)[-window:]
    latest = recent[-1]
    stopped = _stopped(latest)
    if stopped is not None:
        return stopped
    if any(s.backlog == 0 for s in recent):
        return Verdict("OK", "caught up within the window")
    if len(recent) < window:
        return Verdict("OK", f"collecting samples ({len(recent)}/{window})")
    pairs = list(itertools.pairwise(recent))
    moved = any(b.delivered_id != a.delivered_id or b.pending < a.pending for a, b in pairs)
    span_s = (latest.at_ms - recent[0].at_ms) / 1000
    if not moved:
        return Verdict(
            "STALL", f"backlog {latest.backlog} and nothing read or committed for {span_s:.1f}s"
        )
    if all(b.backlog >= a.backlog for a, b in pairs) and latest.backlog > recent[0].backlog:
        return Verdict(
            "WARN",
            f"backlog grew from {recent[0].backlog} to {latest.backlog} over {span_s:.1f}s",
        )
    return Verdict("OK", f"reading; backlog {latest.backlog}")


def evaluate_instant(sample: GroupSample, *, window_s: float) -> Verdict:
    """Status from one snapshot, for ``status``: STOP, STALL or OK (WARN needs a window).

    Exact for STALL: entries are delivered in id order, so an entry still undelivered
    ``window_s`` after it was added means no read happened in that time; a pending entry
    idle that long means nothing was committed.
    """
    stopped = _stopped(sample)
    if stopped is not None:
        return stopped
    if sample.backlog == 0:
        return Verdict("OK", "caught up")
    if sample.lag > 0 and sample.lag_seconds > window_s:
        return Verdict(
            "STALL", f"oldest undelivered entry waiting {sample.lag_seconds:.1f}s: nothing read"
        )
    if sample.pending > 0 and sample.oldest_pending_idle_ms > window_s * 1000:
        idle_s = sample.oldest_pending_idle_ms / 1000
        return Verdict("STALL", f"oldest pending entry unacknowledged for {idle_s:.1f}s")
    return Verdict("OK", f"reading; backlog {sample.backlog}")


class LagWindow:
    """The sliding window of samples of one (stream, group)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.samples: deque[GroupSample] = deque(maxlen=window)

    def add(self, sample: GroupSample) -> Verdict:
        """Append a sample and evaluate the window."""
        self.samples.append(sample)
        return evaluate(self.samples, window=self.window)
