"""The leader's pipeline (DESIGN §5): one term of leadership, from election to fencing.

On election: load ``NS:state``, write ``leader_changed`` through the fenced commit, claim
every entry still pending in the group (earlier leaders' unfinished batches) and prune the
consumers left empty. Then loop: fenced read → decode (bad entries become dead letters) →
policy → one fenced commit per batch (state, decisions, dead letters, acks; while a backlog
drains under a large state, several batches per commit: :mod:`workers.coordinator.rounds`).
FENCED ends the term at once; Redis outages raise :class:`~schemas.errors.RedisUnavailable` out of
:meth:`LeaderPipeline.run` and the elector steps down.

**Order.** Entries are applied in the order :mod:`workers.coordinator.intake` defines: by entry id
across both streams, independent of batch sizes and leader changes.

**Overlap.** While busy, the next fenced read is in flight while a batch is decoded and
applied, and the previous batch's commit is in flight too; but a commit is sent only once
the one before it is known to have landed, so commits land in order and a failed commit
is never followed by a later one (the policy may run ahead in memory; a term that ends
throws that away, and the next leader starts from the last commit).

**Time.** The policy is fed wall time (``time.time()``) at most every ``FAILOVER_TICK_MS``
between batches; tick decisions go out in the same commit as the batch they follow (with
no acks when idle). Idle waiting polls whether input is waiting (a yes/no script, 0.5-4 ms
apart, 1 ms at most for its first 20 ms) for at most 100 ms (and no longer than the next
tick), so cancellation is prompt; a blocking XREAD would wake the leader with the next
entry whole, whatever its size.

**Unknown regions.** A health event about a region not in ``FAILOVER_REGIONS`` is a valid
wire event: it is applied (the policy ignores it) and acked, never dead-lettered, so a
fleet can add a region to its producers before its coordinators. Failover events naming an
unknown region are refused by the policy and kept in its state for ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from schemas.codec import encode_data
from schemas.errors import GroupMissing
from schemas.events import LeaderChanged
from streams.cancel import reraise_lost_cancel
from streams.commit import Batch, Committed, Committer, Fenced
from streams.connection import Client
from streams.errors import translated
from streams.group import ConsumerGroup, RawRead
from streams.keys import Keys
from streams.retry import call
from streams.state import read_policy_state
from workers.coordinator.intake import Intake, Run
from workers.coordinator.journal import ConfigWatcher, Journal
from workers.coordinator.leadership import Leadership
from workers.coordinator.publisher import Publisher
from workers.coordinator.rounds import Work, carries
from workers.coordinator.stamp import StateStamp
from workers.coordinator.upkeep import claim_pending, trim_input
from workers.monitor.metrics import CoordinatorMetrics
from workers.policy.apply import DELETED, Applier, stamp
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, config_differences, decode_state
from workers.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_BLOCK_MS = 100
# Input retention is enforced every this many ticks (10 s by default): trimming is cheap,
# but there is no need to pay it on every round.
_TRIM_EVERY_TICKS = 10


class PipelineStats(msgspec.Struct):
    """Counters of one term (read by benchmarks and tests)."""

    applied: int = 0
    dead_letters: int = 0
    decisions: int = 0
    commits: int = 0
    claimed: int = 0


class LeaderPipeline:
    """One leadership term: claim, then read → decode → apply → commit until fenced."""

    def __init__(
        self,
        redis: Client,
        keys: Keys,
        settings: Settings,
        leadership: Leadership,
        *,
        clock: Callable[[], float] = time.time,
        metrics: CoordinatorMetrics | None = None,
        on_config: ConfigWatcher | None = None,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.keys = keys
        self.settings = settings
        self.owner = leadership.owner
        self.epoch = leadership.epoch
        self.group = ConsumerGroup(
            redis, keys, self.owner, self.epoch, max_entry_bytes=settings.max_entry_bytes
        )
        self.committer = Committer(
            redis,
            keys,
            self.owner,
            self.epoch,
            decisions_maxlen=settings.decisions_maxlen,
            dlq_maxlen=settings.dlq_maxlen,
            hold=settings.min_replicas > 0,
        )
        self.publisher = Publisher.for_term(redis, keys, settings, leadership)
        self.config = PolicyConfig.from_settings(settings)
        self.policy: Policy | None = None
        self.applier: Applier | None = None
        self.stats = PipelineStats()
        self._clock = clock
        self._count = settings.batch_size
        self._tick_s = settings.tick_ms / 1000
        self._retention_ms = settings.input_retention_ms
        self._deadline_s = settings.renew_deadline_ms / 1000
        self._streams = keys.input_streams
        self.intake = Intake(len(self._streams))
        self._stamp = StateStamp(self.epoch, self.owner, clock)
        self.journal = Journal(self.epoch, self.owner, on_config=on_config)

    # -- the term -----------------------------------------------------------------------

    async def run(self) -> None:
        """Lead until fenced (returns) or cancelled; RedisUnavailable propagates."""
        await self._io(self.group.ensure, "create group")
        self.policy = await self._load()
        self.applier = Applier(
            self.policy,
            self._streams,
            max_deliveries=self.settings.max_deliveries,
            max_clock_skew_ms=self.settings.max_clock_skew_ms,
            max_observers=self.settings.max_observers,
            observers=self.settings.observers,
            max_entry_bytes=self.settings.max_entry_bytes,
        )
        self.journal.start(self.policy, self.config)
        self.publisher.start()
        next_tick = next_trim = time.monotonic()
        prefetch: asyncio.Task[bool | None] | None = None
        inflight: asyncio.Task[bool] | None = None
        carried: Work | None = None
        try:
            if not await self._announce() or not await self._claim():
                return
            while True:
                reraise_lost_cancel()
                if prefetch is None:
                    read_any = await self._read()
                else:
                    read_any = await prefetch
                    prefetch = None
                if read_any is None or self.publisher.ended():
                    return  # fenced on read or on publish
                ready = self.intake.take_ready()
                if ready:
                    # Busy: Redis serves the next read while this batch is applied.
                    prefetch = asyncio.create_task(self._read(), name="prefetch")
                    await asyncio.sleep(0)  # let it send before the CPU-bound apply
                # Applying in memory may run ahead of the previous commit; sending may not:
                # each commit goes out only once the one before it is known to have landed.
                work, carried = self._apply(ready, carried), None
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(work)
                    next_tick = now + self._tick_s
                if self._retention_ms and now >= next_trim:
                    next_trim = now + self._tick_s * _TRIM_EVERY_TICKS
                    if not await self._trim():
                        return
                if carries(work, sum(len(e) for _, e in ready), self._count, self._stamp.size):
                    carried = work  # a backlog round under a large state: commit it later
                    continue
                sealed = self._seal(work)
                if inflight is not None:
                    committed = await inflight
                    inflight = None
                    if not committed:
                        return
                if sealed:
                    inflight = asyncio.create_task(self._send(work), name="commit")
                    # Send it now, not at the next await (which finds the read done and does
                    # not yield): Redis then applies it before the read that is sent next.
                    await asyncio.sleep(0)
                if prefetch is None and not read_any and self.intake.empty:
                    if inflight is not None:
                        committed = await inflight
                        inflight = None
                        if not committed:
                            return
                    wait_ms = min(_MAX_BLOCK_MS, int((next_tick - time.monotonic()) * 1000) + 1)
                    if wait_ms > 0:
                        await self._wait(wait_ms)
        finally:
            # An abandoned read leaves its entries pending for the next term; an abandoned
            # commit either landed whole or not at all.
            for task in (prefetch, inflight):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await self.publisher.stop()

    async def _trim(self) -> bool:
        """Bound the input streams by the retention; False when fenced."""
        return await trim_input(
            self._io, self.group, retention_ms=self._retention_ms, epoch=self.epoch
        )

    async def _wait(self, block_ms: int) -> None:
        await self._io(lambda: self.group.wait(self.intake.seen, block_ms), "wait")

    async def _io(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``op`` under the retry policy; Redis errors come out as the project's own."""
        with translated():
            result = await call(op, what=what, deadline_s=self._deadline_s)
        reraise_lost_cancel()  # a demoted leader must not run on until fenced
        return result

    @property
    def config_drift(self) -> dict[str, tuple[int | float, int | float]]:
        """Policy settings whose environment value differs from the version in force:
        ``{name: (environment, in force)}`` (empty before the state is loaded)."""
        if self.policy is None:
            return {}
        return config_differences(self.config, self.policy.config)

    @property
    def config_version(self) -> int | None:
        """The configuration version in force (None before the state is loaded)."""
        return None if self.policy is None else self.policy.state.config_version

    async def _load(self) -> Policy:
        raw = await self._io(lambda: read_policy_state(self.redis, self.keys), "load state")
        if raw is None:
            log.info(
                "no committed policy state: starting fresh, configuration version 1 from the"
                " environment epoch=%s",
                self.epoch,
            )
            return Policy(self.config)
        # A corrupt or incompatible state raises (DecodeError / ConfigError): starting over
        # could re-emit decisions, so the process stops loudly instead.
        return Policy(self.config, decode_state(raw))

    async def _announce(self) -> bool:
        """Write ``leader_changed`` (and the loaded state) first, fenced."""
        changed = LeaderChanged(epoch=self.epoch, leader=self.owner, at=self._clock())
        batch = Batch(decisions=[encode_data(changed)])
        self._add_state(batch)
        result = await self._commit_batch(batch)
        if isinstance(result, Fenced):
            return False
        # The elector logged the change; this is the decision that records it.
        log.debug("leader_changed committed epoch=%s leader=%s", self.epoch, self.owner)
        if self.metrics is not None:
            self.metrics.decided("leader_changed")
        return True

    async def _claim(self) -> bool:
        """Take every entry pending in the group, in id order per stream; prune consumers."""

        def record(claimed: int) -> None:
            self.stats.claimed = claimed

        return await claim_pending(
            self._io,
            self.group,
            self.intake,
            count=self._count,
            epoch=self.epoch,
            on_claimed=record,
        )

    # -- one round ----------------------------------------------------------------------

    async def _read(self) -> bool | None:
        """Fill the buffers from the group; True if anything arrived, None when fenced."""
        want = self.intake.wanted(self._count)
        if not want:
            return True
        attempts = 0

        async def op() -> RawRead | Fenced:
            nonlocal attempts
            attempts += 1
            # A retry may follow a reply lost in transit: ask for our own pending entries
            # after the last ids we saw first, so none is stranded unapplied.
            after = [self.intake.seen[i] for i in want] if attempts > 1 else None
            return await self.group.read_raw(want, self._count, after)

        try:
            got = await self._io(op, "read")
        except GroupMissing:
            log.warning("consumer group vanished (stream deleted?); recreating it")
            await self._io(self.group.ensure, "create group")
            none: list[list[Any]] = [[] for _ in self._streams]
            got = RawRead(entries=none, redelivered=[[] for _ in self._streams])
        if isinstance(got, Fenced):
            log.error("fenced on read: another leader took over epoch=%s", self.epoch)
            return None
        if got.server_ms is not None:
            self.intake.server_ms = got.server_ms
        for i in want:
            entries = got.entries[i]
            full = len(entries) >= self._count or (got.cut is not None and got.cut[i])
            self.intake.add(i, entries, full=full, redelivered=got.redelivered[i])
        return any(got.entries[i] for i in want)

    def _apply(self, runs: list[Run], carried: Work | None) -> Work:
        """Decode and apply the runs in order; collect acks, decisions, dead letters (added
        to ``carried``, rounds not committed yet, if any)."""
        applier = self.applier
        assert applier is not None  # set by run() before the first round
        work = carried if carried is not None else Work()
        work.rounds += 1
        out = work.out
        before = out.applied
        for stream, entry_id in self.intake.take_orphans():
            applier.dead(out, stream, entry_id, fields=None, deliveries=0, reason=DELETED)
        acks = work.batch.acks
        deliveries = self.intake.deliveries
        for stream, entries in runs:
            acks.setdefault(stream, []).extend([entry[0] for entry in entries])
            applier.apply(stream, entries, out, deliveries[stream], self.intake.server_ms)
        self.stats.applied += out.applied - before
        return work

    def _tick(self, work: Work) -> None:
        assert self.policy is not None
        work.out.planned.extend(self.policy.tick(self._clock()))
        work.ticked = True

    def _seal(self, work: Work) -> bool:
        """Complete a round's batch (decisions, state); False if there is nothing to commit."""
        batch = work.batch
        for plan in work.out.planned:
            batch.decisions.append(encode_data(stamp(plan, self.epoch, self.owner)))
        for letter in work.out.letters:
            batch.dead_letters.append(encode_data(letter))
        if work.ticked or not batch.empty:
            self._add_state(batch)
        work.verdicts = self._stamp.verdicts
        return not batch.empty

    async def _send(self, work: Work) -> bool:
        """Commit a sealed batch and log what it wrote; False when fenced."""
        result = await self._commit_batch(work.batch)
        if isinstance(result, Fenced):
            return False
        planned, letters = work.out.planned, work.out.letters
        assert self.policy is not None
        self.journal.committed(
            planned, letters, result.decision_ids, self.policy, work.verdicts, held=result.held
        )
        self.stats.decisions += len(planned)
        self.stats.dead_letters += len(letters)
        if self.metrics is not None:
            self.metrics.decided("failover", len(planned))
            self.metrics.dead_lettered(len(letters))
        return True

    def _add_state(self, batch: Batch) -> None:
        """Stamp ``batch`` with who commits it, and the policy state if it changed."""
        assert self.policy is not None
        self._stamp.stamp(batch, self.policy)

    async def _commit_batch(self, batch: Batch) -> Committed | Fenced:
        token = self.committer.next_token()
        start = time.perf_counter()
        result = await self._io(lambda: self.committer.commit(batch, token), "commit")
        if self.metrics is not None:
            fenced = isinstance(result, Fenced)
            self.metrics.committed(time.perf_counter() - start, fenced=fenced)
        if isinstance(result, Fenced):
            log.error("fenced on commit: batch abandoned, stepping down epoch=%s", self.epoch)
            return result
        self.stats.commits += 1
        if result.held:
            self.publisher.poke()
        return result
