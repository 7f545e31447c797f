"""Executors: carry out failover decisions, fenced by epoch, at most once per group.

The library other executors import: :class:`Follower` (follow ``NS:decisions`` through a
group, fence, act, report, ack), :class:`Outcome` (what an action returns) and
:func:`sign` / :func:`verify` (the webhook signature). ``python -m workers.executor`` is
the executor process; ``python -m workers.executor.receiver`` a receiver to test against.
"""

from __future__ import annotations

from workers.executor.follower import Action, Follower
from workers.executor.outcome import Outcome
from workers.executor.signature import sign, verify

__all__ = ["Action", "Follower", "Outcome", "sign", "verify"]
