"""What an executor group keeps in ``NS:executor:<group>`` (DESIGN §8b), read by ``status``.

The hash is written only by the executor scripts (``streams/lua/executor_*.lua``): the
group's ``position`` (last settled decisions entry), ``epoch`` (highest seen), ``last``
(the record of the last finished decision), counters per outcome, and one record
``d:<decision_id>`` per started or finished decision. Records are JSON written by Lua
(cjson): times are milliseconds of the Redis server's clock, as floats; the epoch is a
decimal string there (cjson keeps 14 significant digits, an epoch has 16), read as an int.
"""

from __future__ import annotations

from typing import Literal

import msgspec

RecordStatus = Literal["started", "completed", "failed"]


class DecisionRecord(msgspec.Struct, frozen=True):
    """One decision as an executor group handled it."""

    decision_id: str
    epoch: int
    entry: str
    status: RecordStatus
    runs: int = 1
    consumer: str | None = None
    started_at: float | None = None
    held_until: float | None = None
    finished_at: float | None = None
    detail: str | None = None
    report: str | None = None


class ExecutorGroupState(msgspec.Struct, frozen=True):
    """One consumer group on ``NS:decisions`` and, for an executor group, its own state."""

    group: str
    consumers: int
    pending: int
    lag: int | None
    last_delivered_id: str
    is_executor: bool
    position: str | None = None
    epoch: int = 0
    last: DecisionRecord | None = None
    completed: int = 0
    failed: int = 0
    stale: int = 0
    duplicate: int = 0
    ignored: int = 0
    updated_at: float | None = None
