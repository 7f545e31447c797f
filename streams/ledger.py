"""The state of one executor group (``NS:executor:<group>``): the fence and the record of
which decisions it started and finished, changed only through two scripts.

:meth:`ExecutorLedger.begin` asks whether a consumer may act on a failover decision now
and records it ``started``; :meth:`ExecutorLedger.settle` finishes one decisions entry:
report XADDed to ``NS:events``, record finished, position and epoch moved, entry XACKed,
in one atomic step (see ``streams/lua/executor_*.lua`` for the contracts). Both retry
Redis errors up to ``deadline_s`` and are idempotent, so a retry after a lost reply is safe.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas.errors import ScriptError
from schemas.executor import DecisionRecord, ExecutorGroupState
from streams import scripts
from streams.connection import Client
from streams.errors import translated
from streams.keys import Keys
from streams.replies import text, text_or_none
from streams.retry import call

BeginAnswer = Literal["run", "wait", "settled", "stale", "duplicate", "crashed"]
SettleKind = Literal["failover", "stale", "duplicate", "leader", "ignored"]
_BEGIN_ANSWERS = ("run", "wait", "settled", "stale", "duplicate", "crashed")
_COUNTERS = ("completed", "failed", "stale", "duplicate", "ignored")
# strict=False: the scripts write the epoch as a decimal string (see schemas/executor.py).
_record_decoder = msgspec.json.Decoder(DecisionRecord, strict=False)


class Begun(msgspec.Struct, frozen=True):
    """The answer of :meth:`ExecutorLedger.begin`: what to do, and its detail (see the script)."""

    answer: BeginAnswer
    detail: str


class ExecutorLedger:
    """The fence and records of one executor group under one namespace."""

    def __init__(
        self,
        redis: Client,
        keys: Keys,
        group: str,
        *,
        keep: int = 10000,
        deadline_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.keep = keep
        self.deadline_s = deadline_s
        self.state_key = keys.executor(group)
        self._begin = scripts.register(redis, "executor_begin")
        self._settle = scripts.register(redis, "executor_settle")

    async def begin(
        self,
        entry_id: str,
        decision_id: str,
        epoch: int,
        consumer: str,
        *,
        hold_ms: int,
        max_runs: int,
    ) -> Begun:
        """May ``consumer`` act on this decision now? ``run`` records it started."""
        keys = [self.state_key, self.keys.decisions]
        argv: list[str | int] = [entry_id, decision_id, epoch, consumer, hold_ms, max_runs]

        async def begin() -> Any:
            with translated():
                return await self._begin(keys=keys, args=argv)

        reply = await call(begin, what=f"{self.group} begin", deadline_s=self.deadline_s)
        if not isinstance(reply, list) or len(reply) != 2 or text(reply[0]) not in _BEGIN_ANSWERS:
            raise ScriptError(f"executor_begin answered {reply!r}")
        answer: BeginAnswer = text(reply[0])  # type: ignore[assignment]
        return Begun(answer, text(reply[1]))

    async def settle(
        self,
        entry_id: str,
        kind: SettleKind,
        *,
        decision_id: str = "",
        epoch: int | None = None,
        status: str = "",
        detail: str = "",
        report: bytes = b"",
    ) -> tuple[bool, str]:
        """Settle one entry (see the script); (True, report entry id or '') when done now or
        before, (False, the earlier unsettled entry's id) when it must wait its turn."""
        keys = [
            self.state_key,
            self.keys.executor_order(self.group),
            self.keys.decisions,
            self.keys.events,
        ]
        argv: list[str | bytes | int] = [
            self.group,
            entry_id,
            kind,
            decision_id,
            "" if epoch is None else epoch,
            status,
            detail,
            report,
            self.keep,
        ]

        async def settle() -> Any:
            with translated():
                return await self._settle(keys=keys, args=argv)

        reply = await call(settle, what=f"{self.group} settle", deadline_s=self.deadline_s)
        if not isinstance(reply, list) or not reply or reply[0] not in (0, 1, 2):
            raise ScriptError(f"executor_settle answered {reply!r}")
        if reply[0] == 0:
            return False, text(reply[1])
        return True, text(reply[1]) if reply[0] == 1 else ""

    async def record(self, decision_id: str) -> DecisionRecord | None:
        """The group's record of ``decision_id``, if it still has one."""

        async def read() -> Any:
            with translated():
                return await self.redis.hget(self.state_key, f"d:{decision_id}")

        raw = await call(read, what=f"{self.group} record", deadline_s=self.deadline_s)
        return None if raw is None else _record_decoder.decode(raw)

    async def lag(self) -> tuple[int | None, int]:
        """(entries not yet delivered to the group or None if Redis cannot tell, pending)."""
        return await group_lag(self.redis, self.keys, self.group, deadline_s=self.deadline_s)


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


async def _group_infos(redis: Client, keys: Keys, deadline_s: float) -> list[Any]:
    # XINFO GROUPS only: what a reader of the stream (the mirror) may run under its ACL.
    async def groups() -> Any:
        with translated():
            if not await redis.exists(keys.decisions):
                return []
            return await redis.xinfo_groups(keys.decisions)

    return list(await call(groups, what="decision groups", deadline_s=deadline_s))


async def group_lag(
    redis: Client, keys: Keys, group: str, *, deadline_s: float = 2.0
) -> tuple[int | None, int]:
    """(entries of ``NS:decisions`` not yet delivered to ``group``, None if Redis cannot
    tell, e.g. after an XDEL; entries delivered and not yet acked); (None, 0) without it."""
    for info in await _group_infos(redis, keys, deadline_s):
        if text(_field(info, "name")) == group:
            lag = _field(info, "lag")
            return None if lag is None else int(lag), int(_field(info, "pending") or 0)
    return None, 0


async def read_groups(
    redis: Client, keys: Keys, *, deadline_s: float = 2.0
) -> list[ExecutorGroupState]:
    """Every consumer group on ``NS:decisions`` with, for executor groups, their state."""
    infos = await _group_infos(redis, keys, deadline_s)
    names = [text(_field(info, "name")) for info in infos]

    async def states() -> Any:
        with translated():
            async with redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(
                        keys.executor(name), "position", "epoch", "last", "updated_at", *_COUNTERS
                    )
                return await pipe.execute()

    rows = await call(states, what="executor states", deadline_s=deadline_s) if names else []
    out = []
    for name, info, row in zip(names, infos, rows, strict=True):
        lag = _field(info, "lag")
        position, epoch, last, updated_at, *counts = row
        out.append(
            ExecutorGroupState(
                group=name,
                consumers=int(_field(info, "consumers") or 0),
                pending=int(_field(info, "pending") or 0),
                lag=None if lag is None else int(lag),
                last_delivered_id=text(_field(info, "last-delivered-id")),
                is_executor=position is not None,
                position=text_or_none(position),
                epoch=int(epoch or 0),
                last=None if last is None else _record_decoder.decode(last),
                updated_at=None if updated_at is None else float(updated_at),
                **{name: int(c or 0) for name, c in zip(_COUNTERS, counts, strict=True)},
            )
        )
    return out
