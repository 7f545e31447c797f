"""Follow ``NS:decisions`` and act on each failover decision once per group, fenced by epoch.

:class:`Follower` is the library an executor is built on (``python -m workers.executor`` is
one). It reads the decisions through its group (:class:`streams.decisions.DecisionsGroup`),
settles every entry in stream order, one action at a time per group, and for each entry:

- ``leader_changed``: no action; the group's epoch moves up to it;
- ``failover``: asks the group's ledger (:class:`streams.ledger.ExecutorLedger`) whether it
  may act: a decision whose epoch is lower than one the group has seen is skipped and
  reported ``failover_failed`` (stale); a decision id the group already finished is skipped
  (duplicate); otherwise the decision is recorded ``started`` and the action runs with the
  decision's id and epoch, which the resource should check too. Its outcome is reported
  ``failover_completed`` / ``failover_failed`` on ``NS:events`` in the same atomic step that
  finishes the record and acks the entry;
- anything else (not understood, trimmed): acked and counted, never acted on.

Crash between the action and the record. The record says ``started`` before the action
runs; a consumer that finds a started decision whose holder died (its hold, the longest the
action can take with its retries, has run out) sends it again with the same decision id and
epoch and ``run`` > 1: the resource must treat a repeated decision id as done (idempotency
key). After ``max_runs`` starts without an outcome (an action that kills its executor) the
decision is reported failed instead of being sent again. So a decision is applied at most
once by a resource that dedupes on the decision id, and a completed decision is never sent
again whatever crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from schemas.codec import DATA_FIELD, decode_entry, encode_data
from schemas.errors import DecodeError, FailoverError, GroupMissing
from schemas.events import FailoverCompleted, FailoverDecision, FailoverFailed, LeaderChanged
from streams.connection import Client
from streams.decisions import DecisionsGroup
from streams.keys import Keys
from streams.ledger import ExecutorLedger, SettleKind
from workers.executor.metrics import ExecutorMetrics
from workers.executor.outcome import Outcome
from workers.settings import DEFAULTS

Action = Callable[[FailoverDecision, bytes, int], Awaitable[Outcome]]
"""Carries out one decision: (decision, its JSON as on the stream, run) -> outcome."""

log = logging.getLogger(__name__)

WAIT_S = 0.05  # pause before asking again when an earlier entry is another consumer's
PAUSE_S = 0.5  # pause after a Redis outage before reading again


class Follower:
    """One consumer of an executor group: reads, fences, acts, reports, acks."""

    def __init__(
        self,
        redis: Client,
        keys: Keys,
        group: str,
        consumer: str,
        action: Action,
        *,
        hold_ms: int,
        claim_idle_ms: int = DEFAULTS.executor.claim_idle_ms,
        max_runs: int = 3,
        batch_size: int = 10,
        block_ms: int = 200,
        metrics: ExecutorMetrics | None = None,
        deadline_s: float = 10.0,
    ) -> None:
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.action = action
        self.hold_ms = hold_ms
        self.max_runs = max_runs
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.metrics = metrics
        self.reader = DecisionsGroup(
            redis, keys, group, consumer, claim_idle_ms=claim_idle_ms, deadline_s=deadline_s
        )
        self.ledger = ExecutorLedger(redis, keys, group, deadline_s=deadline_s)
        self.acted = 0
        # Outcomes not yet settled (Redis failed after the action): settled, never re-run.
        self._outcomes: dict[str, Outcome] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set; Redis outages are waited out, never skipped."""
        await self.reader.ensure()
        while not stop.is_set():
            try:
                entries = await self.reader.read(self.batch_size, self.block_ms)
                for entry_id, fields in entries:
                    if stop.is_set():
                        break
                    if not await self.handle(entry_id.decode(), fields):
                        await _pause(stop, WAIT_S)  # not our turn yet: ask again shortly
                        break
            except GroupMissing:  # the stream or the group was deleted: make them again
                log.warning("executor %s: the group is gone; creating it again", self.group)
                await self.reader.ensure()
            except FailoverError as exc:  # RedisUnavailable: wait and read again
                if not exc.retriable:
                    raise
                log.error("executor %s: %s; retrying", self.group, exc)  # noqa: TRY400
                await _pause(stop, PAUSE_S)

    async def handle(self, entry_id: str, fields: dict[bytes, bytes] | None) -> bool:
        """Settle one entry; False when an earlier entry must be settled first."""
        if fields is None:  # trimmed away while pending
            log.warning(
                "executor %s: decision %s was trimmed before it was read", self.group, entry_id
            )
            return await self._settle(entry_id, "ignored")
        try:
            entry = decode_entry(fields, stream="decisions")
        except DecodeError as exc:
            log.warning(
                "executor %s: entry %s not understood (%s); skipped", self.group, entry_id, exc
            )
            return await self._settle(entry_id, "ignored")
        if isinstance(entry, LeaderChanged):
            done = await self._settle(entry_id, "leader", epoch=entry.epoch)
            if done and self.metrics:
                self.metrics.saw_epoch(entry.epoch)
            return done
        assert isinstance(entry, FailoverDecision)
        return await self._failover(entry_id, entry, fields.get(DATA_FIELD, b""))

    async def _failover(self, entry_id: str, decision: FailoverDecision, body: bytes) -> bool:
        outcome = self._outcomes.get(entry_id)
        if outcome is None:
            begun = await self.ledger.begin(
                entry_id,
                decision.decision_id,
                decision.epoch,
                self.consumer,
                hold_ms=self.hold_ms,
                max_runs=self.max_runs,
            )
            if begun.answer == "wait":
                log.debug("executor %s: %s waits: %s", self.group, entry_id, begun.detail)
                return False
            if begun.answer == "settled":
                return await self._settle(entry_id, "ignored")  # only acks it again
            if begun.answer == "stale":
                return await self._skip(entry_id, decision, "stale", begun.detail)
            if begun.answer == "duplicate":
                return await self._skip(entry_id, decision, "duplicate", begun.detail)
            if begun.answer == "crashed":
                outcome = Outcome.failed(
                    f"the executor stopped {begun.detail} times while carrying this decision"
                    " out; not sent again (check the resource by hand)"
                )
            else:
                outcome = await self._act(decision, body, int(begun.detail))
            self._outcomes[entry_id] = outcome
        report = self._report(decision, outcome)
        done = await self._settle(
            entry_id,
            "failover",
            decision_id=decision.decision_id,
            epoch=decision.epoch,
            status="completed" if outcome.ok else "failed",
            detail=outcome.detail,
            report=encode_data(report),
        )
        if done:
            del self._outcomes[entry_id]
            log.info(
                "executor %s: %s %s -> %s (epoch %d): %s",
                self.group,
                decision.decision_id,
                decision.from_region,
                decision.to_region,
                decision.epoch,
                ("completed" if outcome.ok else "FAILED") + f", {outcome.detail}",
            )
            if self.metrics:
                self.metrics.saw_epoch(decision.epoch)
        return done

    async def _act(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
        if run > 1:
            log.warning(
                "executor %s: %s was started before by a consumer that stopped; sending it"
                " again (run %d, same decision id and epoch)",
                self.group,
                decision.decision_id,
                run,
            )
        started = time.monotonic()
        outcome = await self.action(decision, body, run)
        self.acted += 1
        if self.metrics:
            self.metrics.acted(outcome.ok, time.monotonic() - started)
        return outcome

    async def _skip(
        self,
        entry_id: str,
        decision: FailoverDecision,
        reason: Literal["stale", "duplicate"],
        detail: str,
    ) -> bool:
        report: bytes = b""
        if reason == "stale":
            why = (
                f"skipped: epoch {decision.epoch} is lower than epoch {detail} already seen"
                f" by executor group {self.group}"
            )
            report = encode_data(self._report(decision, Outcome.failed(why)))
        else:
            why = f"skipped: decision id already {detail} by executor group {self.group}"
        log.warning(
            "executor %s: %s (entry %s) %s", self.group, decision.decision_id, entry_id, why
        )
        done = await self._settle(
            entry_id,
            reason,
            decision_id=decision.decision_id,
            epoch=decision.epoch,
            detail=why,
            report=report,
        )
        if done and self.metrics:
            self.metrics.skipped(reason)
        return done

    def _report(
        self, decision: FailoverDecision, outcome: Outcome
    ) -> FailoverCompleted | FailoverFailed:
        kind = FailoverCompleted if outcome.ok else FailoverFailed
        return kind(
            event_id=f"executor:{self.group}:{decision.decision_id}",
            region=decision.to_region,
            actor=self.consumer,
            at=time.time(),
            detail=outcome.detail or None,
            decision_id=decision.decision_id,
        )

    async def _settle(
        self,
        entry_id: str,
        kind: SettleKind,
        *,
        decision_id: str = "",
        epoch: int | None = None,
        status: str = "",
        detail: str = "",
        report: bytes = b"",
    ) -> bool:
        done, _ = await self.ledger.settle(
            entry_id,
            kind,
            decision_id=decision_id,
            epoch=epoch,
            status=status,
            detail=detail,
            report=report,
        )
        if done:
            self.reader.settled([entry_id.encode()])
        return done


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
