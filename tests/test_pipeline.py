"""The leader pipeline in-process against a real Redis: order, takeover, fencing, ticks."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from schemas.codec import encode_entry
from schemas.errors import RedisUnavailable
from schemas.events import FailoverDecision, LeaderChanged, ManualFailover
from streams.commit import FENCED, Batch, Committed, Committer, Fenced
from streams.connection import connect
from streams.group import ConsumerGroup
from streams.keys import GROUP, Keys
from streams.server import RedisServer
from tests.group_reads import read_entries
from tests.pipeline_helpers import (
    Term,
    backlog,
    dead_letters,
    decisions,
    eventually,
    failovers,
    health,
    leader_changes,
    settings_for,
    start_term,
    summary,
    take_lease,
)
from tests.waiting import wait_for
from workers.coordinator.pipeline import LeaderPipeline
from workers.policy.state import decode_state

T0 = 1_800_000_000.0


async def _outage(redis: aioredis.Redis, keys: Keys, n: int = 3, start: int = 0) -> list[str]:
    """Make ``us`` up and ``eu`` (active) fail by one observer; return the eu event ids."""
    ids = []
    for i in range(start, start + n):
        await redis.xadd(keys.health, health(f"us-{i}", "us", "o1", "healthy", T0 + i))
        await redis.xadd(keys.health, health(f"eu-{i}", "eu", "o1", "unhealthy", T0 + i))
        ids.append(f"eu-{i}")
    return ids


async def test_leader_writes_leader_changed_first_then_decisions_with_its_epoch(
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workers.coordinator.pipeline")
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings)
    try:
        eu_ids = await _outage(redis_client, keys)
        await eventually(lambda: _has_failover(redis_client, keys), what="a decision")
        await eventually(lambda: _caught_up(redis_client, keys), what="pending 0")
    finally:
        await term.stop()
    rows = await decisions(redis_client, keys)
    first, second = rows[0][1], rows[1][1]
    epoch = term.pipeline.epoch
    assert first == LeaderChanged(epoch=epoch, leader="leader#1", at=first.at)
    assert isinstance(second, FailoverDecision)
    assert (second.epoch, second.leader) == (epoch, "leader#1")
    assert (second.from_region, second.to_region) == ("eu", "us")
    assert second.reason == "quorum_unhealthy"
    assert second.evidence == eu_ids
    assert len(rows) == 2
    state = await redis_client.hgetall(keys.state)
    assert int(state[b"epoch"]) == epoch
    assert state[b"leader"] == b"leader#1"
    assert abs(float(state[b"updated_at"]) - time.time()) < 60
    assert decode_state(state[b"policy"]).active == "us"
    assert (await summary(redis_client, keys))["active_region"] == "us"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decision ")]
    assert lines == [
        f"decision {second.decision_id}: failover eu -> us reason=quorum_unhealthy "
        f"evidence={','.join(eu_ids)} epoch={epoch} leader=leader#1 entry={rows[1][0]}"
    ]


async def _has_failover(redis: aioredis.Redis, keys: Keys) -> bool:
    return bool(await failovers(redis, keys))


async def _caught_up(redis: aioredis.Redis, keys: Keys) -> bool:
    return await backlog(redis, keys) == 0


async def test_a_new_leader_continues_from_the_committed_state(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    first = await start_term(redis_client, keys, settings, "a#1")
    await _outage(redis_client, keys, n=2)  # one short of the threshold
    await eventually(lambda: _caught_up(redis_client, keys), what="first batch committed")
    await first.stop()
    second = await start_term(redis_client, keys, settings, "b#2")
    try:
        await _outage(redis_client, keys, n=1, start=2)  # the third failing observation
        await eventually(lambda: _has_failover(redis_client, keys), what="a decision")
    finally:
        await second.stop()
    (decision,) = await failovers(redis_client, keys)
    assert decision.evidence == ["eu-0", "eu-1", "eu-2"]
    assert decision.epoch == second.pipeline.epoch
    assert [c.leader for c in await leader_changes(redis_client, keys)] == ["a#1", "b#2"]


async def test_pending_entries_of_a_dead_leader_are_claimed_and_applied_in_order(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace, threshold=5)
    dead = await take_lease(redis_client, keys, "dead#1")
    group = ConsumerGroup(redis_client, keys, dead.owner, dead.epoch)
    await group.ensure()
    eu_ids = await _outage(redis_client, keys, n=3)
    taken = await read_entries(group, [0, 1], 100)  # read, never acked: the leader "died"
    assert taken != [[], []]
    eu_ids += await _outage(redis_client, keys, n=2, start=3)  # undelivered yet
    term = await start_term(redis_client, keys, settings, "new#2")
    try:
        await eventually(lambda: _has_failover(redis_client, keys), what="a decision")
        await eventually(lambda: _caught_up(redis_client, keys), what="pending 0")
    finally:
        await term.stop()
    assert term.pipeline.stats.claimed == 6
    (decision,) = await failovers(redis_client, keys)
    # Five failing observations in a row: only true if the claimed three came first.
    assert decision.evidence == eu_ids
    consumers = await redis_client.xinfo_consumers(keys.health, GROUP)
    assert [c["name"] for c in consumers] == [b"new#2"]


async def test_merge_order_across_streams_does_not_depend_on_batch_size(
    redis_client: aioredis.Redis, redis_server: RedisServer, namespace: str
) -> None:
    outcomes = []
    for batch_size in (1, 2, 3, 500):
        keys = Keys(f"{namespace}-{batch_size}")
        settings = settings_for(
            redis_server.url, keys.namespace, batch_size=batch_size, recovery_threshold=3
        )
        # Explicit ids: us becomes up at 3-1, the manual failover comes at 4-1, after it.
        for i, entry_id in enumerate(("1-1", "2-1", "3-1")):
            fields = health(f"us-{i}", "us", "o1", "healthy", T0 + i)
            await redis_client.xadd(keys.health, fields, id=entry_id)
        manual = ManualFailover(
            event_id="m1", region="eu", actor="op", at=T0 + 3, target="us", detail=None
        )
        await redis_client.xadd(keys.events, encode_entry(manual), id="4-1")
        await redis_client.xadd(
            keys.health, health("us-9", "us", "o1", "healthy", T0 + 9), id="5-1"
        )
        term = await start_term(redis_client, keys, settings)
        try:
            await eventually(lambda k=keys: _caught_up(redis_client, k), what="caught up")
        finally:
            await term.stop()
        outcomes.append([(d.reason, d.to_region) for d in await failovers(redis_client, keys)])
    assert outcomes == [[("manual", "us")]] * 4


async def test_entries_delivered_too_often_become_dead_letters(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace, max_deliveries=5)
    dead = await take_lease(redis_client, keys, "dead#1")
    group = ConsumerGroup(redis_client, keys, dead.owner, dead.epoch)
    await group.ensure()
    poison = await redis_client.xadd(keys.health, health("p", "us", "o1", "healthy", T0))
    fine = await redis_client.xadd(keys.health, health("f", "us", "o2", "healthy", T0))
    assert await read_entries(group, [0], 10) != []
    # As if four earlier leaders had died holding the poison entry, three holding the other.
    await redis_client.xclaim(keys.health, GROUP, "dead#1", 0, [poison], retrycount=5)
    await redis_client.xclaim(keys.health, GROUP, "dead#1", 0, [fine], retrycount=4)
    term = await start_term(redis_client, keys, settings, "new#2")
    try:
        await eventually(lambda: _caught_up(redis_client, keys), what="pending 0")
    finally:
        await term.stop()
    (letter,) = await dead_letters(redis_client, keys)
    assert letter.entry_id == poison.decode()
    assert letter.deliveries == 6
    assert "delivered 6 times" in letter.reason and "FAILOVER_MAX_DELIVERIES=5" in letter.reason
    assert letter.raw == [("data", health("p", "us", "o1", "healthy", T0)[b"data"].decode())]
    observers = (await summary(redis_client, keys))["regions"]["us"]["observers"]
    assert observers == {"o2": "healthy"}  # the entry delivered 5 times was applied


async def test_an_entry_deleted_while_pending_becomes_a_dead_letter(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    dead = await take_lease(redis_client, keys, "dead#1")
    group = ConsumerGroup(redis_client, keys, dead.owner, dead.epoch)
    await group.ensure()
    gone = await redis_client.xadd(keys.events, {b"data": b"{}"})
    assert await read_entries(group, [1], 10) != []
    await redis_client.xdel(keys.events, gone)
    term = await start_term(redis_client, keys, settings, "new#2")
    try:
        await eventually(lambda: _has_dlq(redis_client, keys), what="dead letter")
    finally:
        await term.stop()
    (letter,) = await dead_letters(redis_client, keys)
    assert (letter.stream, letter.entry_id, letter.raw) == (keys.events, gone.decode(), [])
    assert "deleted" in letter.reason


async def _has_dlq(redis: aioredis.Redis, keys: Keys) -> bool:
    return bool(await redis.xlen(keys.dlq))


async def test_a_fenced_idle_leader_stops_at_once_and_leaves_nothing_running(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings, "old#1")
    await _outage(redis_client, keys, n=1)
    await eventually(lambda: _caught_up(redis_client, keys), what="first batch")
    await take_lease(redis_client, keys, "new#2")  # the old leader's lease is gone
    await asyncio.wait_for(term.task, timeout=2.0)  # it notices on its next read and returns
    before = await decisions(redis_client, keys)
    await _outage(redis_client, keys, n=3, start=1)
    # Nothing may happen for a while: no read or commit task of the ended term still runs.
    # (A leader paused mid-round that resumes is the next test.)
    await asyncio.sleep(0.3)
    assert await decisions(redis_client, keys) == before
    assert await backlog(redis_client, keys) == 6  # nothing taken by the fenced ex-leader


class _CommitGate:
    """Holds a pipeline between its read and its commit: the first batch with acks after
    :meth:`arm` waits for ``release`` before it is sent; every commit's result is kept."""

    def __init__(self, committer: Committer) -> None:
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.batch: Batch | None = None
        self.results: list[Committed | Fenced] = []
        commit = committer.commit

        async def gated(batch: Batch, token: str) -> Committed | Fenced:
            if self.armed and self.batch is None and (batch.acks[0] or batch.acks[1]):
                self.batch = batch
                self.held.set()
                await self.release.wait()
            result = await commit(batch, token)
            self.results.append(result)
            return result

        committer.commit = gated  # type: ignore[method-assign]

    def arm(self) -> None:
        """Hold the next commit that acknowledges input."""
        self.armed = True


async def _written(redis: aioredis.Redis, keys: Keys) -> object:
    """Everything a commit can write: decisions, dead letters, state, and the group's acks."""
    pending = [await redis.xpending(stream, GROUP) for stream in keys.input_streams]
    return (
        await redis.xrange(keys.decisions),
        await redis.xrange(keys.dlq),
        await redis.hgetall(keys.state),
        [(p["pending"], p["min"], p["max"]) for p in pending],
    )


async def test_a_paused_leader_resuming_after_a_takeover_is_fenced_and_writes_nothing(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings, "old#1")
    gate = _CommitGate(term.pipeline.committer)
    await _outage(redis_client, keys, n=1)
    await eventually(lambda: _caught_up(redis_client, keys), what="first batch")
    gate.arm()
    # In one transaction, so the old leader reads it in one round: the rest of the outage
    # (a decision) and an entry that is not an event (a dead letter).
    async with redis_client.pipeline(transaction=True) as pipe:
        for i in range(1, 4):
            pipe.xadd(keys.health, health(f"us-{i}", "us", "o1", "healthy", T0 + i))
            pipe.xadd(keys.health, health(f"eu-{i}", "eu", "o1", "unhealthy", T0 + i))
        pipe.xadd(keys.events, {b"data": b"{}"})
        await pipe.execute()
    # The old leader has read, applied and sealed its batch, and is paused before sending it.
    await wait_for(gate.held.is_set, 10, "the old leader to hold its batch before commit")
    held = gate.batch
    assert held is not None
    assert held.decisions and held.dead_letters and len(held.acks[0]) + len(held.acks[1]) == 7
    old_epoch = term.pipeline.epoch
    new = await take_lease(redis_client, keys, "new#2")  # a new epoch begins meanwhile
    assert new.epoch > old_epoch
    before = await _written(redis_client, keys)
    gate.release.set()  # the old leader resumes and tries to write
    await asyncio.wait_for(term.task, timeout=2.0)  # fenced: it returns
    assert gate.results[-1] is FENCED
    assert await _written(redis_client, keys) == before
    assert await failovers(redis_client, keys) == []
    assert await redis_client.xlen(keys.dlq) == 0
    assert await backlog(redis_client, keys) == 7  # none acked: the next leader takes them all
    state = await redis_client.hgetall(keys.state)
    assert state[b"epoch"] == str(old_epoch).encode()  # the last commit is the old term's first


async def test_ticks_turn_silence_into_staleness(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(
        redis_server.url, keys.namespace, stale_after_ms=400, tick_ms=20, regions="eu,us"
    )
    term = await start_term(redis_client, keys, settings)
    try:
        deadline = time.monotonic() + 10
        i = 0
        # Only us is observed (healthy, with current times); eu is never heard from.
        while not await failovers(redis_client, keys):
            assert time.monotonic() < deadline, "no stale decision"
            await redis_client.xadd(
                keys.health, health(f"us-{i}", "us", "o1", "healthy", time.time())
            )
            i += 1
            await asyncio.sleep(0.05)
    finally:
        await term.stop()
    (decision,) = await failovers(redis_client, keys)
    assert (decision.reason, decision.evidence, decision.to_region) == ("stale", ["stale:eu"], "us")


async def test_health_of_an_unknown_region_is_applied_and_acked(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings)
    try:
        await redis_client.xadd(keys.health, health("x", "mars", "o1", "unhealthy", T0))
        await redis_client.xadd(keys.health, health("y", "us", "o1", "healthy", T0))
        await eventually(lambda: _caught_up(redis_client, keys), what="caught up")
    finally:
        await term.stop()
    assert await redis_client.xlen(keys.dlq) == 0
    assert term.pipeline.stats.applied == 2
    assert "mars" not in (await summary(redis_client, keys))["regions"]


async def test_cancelling_the_term_is_prompt_when_idle(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace, tick_ms=5000)
    term = await start_term(redis_client, keys, settings)
    await eventually(lambda: _idle(term, redis_client), what="the idle wait")
    start = time.monotonic()
    await term.stop()
    assert time.monotonic() - start < 0.5


async def _idle(term: Term, redis: aioredis.Redis) -> bool:
    """Announced, first tick committed, nothing to read: the term is in its idle wait (it
    polls for input rather than block in XREAD, so Redis shows no blocked client)."""
    if term.pipeline.stats.commits < 2:
        return False
    return term.pipeline.intake.empty and await backlog(redis, term.pipeline.keys) == 0


async def _announced(redis: aioredis.Redis, keys: Keys) -> bool:
    return bool(await leader_changes(redis, keys))


@pytest.mark.chaos
async def test_redis_outage_raises_redis_unavailable_within_the_deadline(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(own_redis_server.url, keys.namespace, lease_ttl_ms=1000)
    redis = connect(own_redis_server.url, socket_timeout=0.5)
    try:
        leadership = await take_lease(redis, keys, "a#1")
        pipeline = LeaderPipeline(redis, keys, settings, leadership)
        task = asyncio.create_task(pipeline.run())
        await eventually(lambda: _announced(redis, keys), what="leader_changed")
        own_redis_server.pause()
        start = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(task, timeout=5)
        assert time.monotonic() - start < settings.renew_deadline_ms / 1000 + 1.0
    finally:
        own_redis_server.resume()
        await redis.aclose()


async def test_the_leader_trims_acked_input_older_than_the_retention(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # Without trimming, NS:health grows by every probe round forever and Redis runs out of
    # memory: the leader drops what the group has acked once it is older than the retention.
    settings = settings_for(redis_server.url, keys.namespace, input_retention_ms=200)
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.xadd(keys.health, health(f"h{i}", "us", "o1", "healthy", T0 + i))
        await pipe.execute()
    term = await start_term(redis_client, keys, settings)
    try:
        await eventually(lambda: _caught_up(redis_client, keys), what="caught up")
        await asyncio.sleep(0.3)  # older than the retention now

        async def trimmed() -> bool:
            return bool(await redis_client.xlen(keys.health) < 1000)

        await eventually(trimmed, what="the next trim (every 10 ticks)")
    finally:
        await term.stop()
    assert term.pipeline.stats.applied == 1000  # every entry was applied before it went
    assert await backlog(redis_client, keys) == 0
