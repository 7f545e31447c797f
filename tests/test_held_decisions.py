"""FAILOVER_MIN_REPLICAS: a decision is visible only once N replicas have it (§4 v2).

Real servers: a single Redis (no replica can ever confirm), and the replica set fixture
(primary + 2 replicas + 3 Sentinels) whose replicas are frozen with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from schemas.codec import decode_entry, encode_data
from schemas.events import FailoverDecision, LeaderChanged
from streams import scripts
from streams.address import RedisTarget
from streams.connection import connect
from streams.keys import Keys
from streams.replica_set import ReplicaSet
from streams.server import RedisServer
from tests.pipeline_helpers import (
    Term,
    backlog,
    decisions,
    eventually,
    failovers,
    health,
    settings_for,
    start_term,
    take_lease,
)
from workers.coordinator.pipeline import LeaderPipeline

T0 = 1_800_000_000.0


async def _outage(redis: aioredis.Redis, keys: Keys) -> None:
    """Make ``us`` up and ``eu`` (active) fail: three observations each, one observer, at
    the current time (two regions: one down is no panic, and none is stale)."""
    now = time.time()
    for i in range(3):
        await redis.xadd(keys.health, health(f"us-{i}", "us", "o1", "healthy", now + i / 1000))
        await redis.xadd(keys.health, health(f"eu-{i}", "eu", "o1", "unhealthy", now + i / 1000))


async def _held(redis: aioredis.Redis, keys: Keys) -> list[object]:
    return [
        decode_entry({b"data": raw}, stream="decisions")
        for raw in await redis.lrange(keys.held_decisions, 0, -1)
    ]


async def test_without_replicas_decisions_are_committed_but_never_visible(
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workers.coordinator.publisher")
    settings = settings_for(redis_server.url, keys.namespace, min_replicas=1, regions="eu,us")
    term = await start_term(redis_client, keys, settings)
    try:
        await _outage(redis_client, keys)

        async def decided() -> bool:
            held = await _held(redis_client, keys)
            return any(isinstance(d, FailoverDecision) for d in held)

        await eventually(decided, what="the decision committed (held)")
        await eventually(lambda: _caught_up(redis_client, keys), what="input acked")
        await asyncio.sleep(1.5)  # several confirmation rounds, none can succeed
        assert await decisions(redis_client, keys) == []
        held = await _held(redis_client, keys)
        assert [type(d) for d in held] == [LeaderChanged, FailoverDecision]
        assert not term.task.done()  # reading and committing go on meanwhile
    finally:
        await term.stop()
    waits = [r.getMessage() for r in caplog.records if "WAIT saw 0 of 1" in r.getMessage()]
    assert len(waits) == 1, waits  # logged once per streak, not per round


async def _caught_up(redis: aioredis.Redis, keys: Keys) -> bool:
    return await backlog(redis, keys) == 0


async def test_a_repeated_publish_round_publishes_nothing_twice(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """The publish script's contract: only the confirm token that is still the mark moves
    decisions, so a round repeated after a lost reply publishes nothing again."""
    term = await take_lease(redis_client, keys, "leader#1")
    publish = scripts.register(redis_client, "publish")
    key_list = [keys.leader, keys.epoch, keys.held_decisions, keys.held_mark, keys.decisions]
    values = [
        encode_data(LeaderChanged(epoch=term.epoch, leader="leader#1", at=T0 + i)) for i in range(3)
    ]
    await redis_client.rpush(keys.held_decisions, *values[:2])

    async def run(confirm: str, count: int, token: str) -> list[object]:
        args = ["leader#1", term.epoch, confirm, count, token, 0]
        reply: list[object] = await publish(keys=key_list, args=args)
        return reply

    assert (await run("", 0, "t1"))[1:] == [[], 2]  # marks the two held
    assert await redis_client.get(keys.held_mark) == b"t1"
    await redis_client.rpush(keys.held_decisions, values[2])  # held after the mark
    first = await run("t1", 2, "t2")
    assert len(first[1]) == 2 and first[2] == 1  # the two it counted, not the third
    again = await run("t1", 2, "t2")  # the same round again: its reply was lost
    assert again[1:] == [[], 1]
    rows = await redis_client.xrange(keys.decisions)
    assert [fields[b"data"] for _, fields in rows] == values[:2]
    assert await redis_client.lrange(keys.held_decisions, 0, -1) == [values[2]]
    # A fenced caller (another epoch) moves nothing and writes nothing.
    assert await publish(keys=key_list, args=["leader#1", term.epoch + 1, "t2", 1, "t3", 0]) == [0]
    assert await redis_client.get(keys.held_mark) == b"t2"


def _sentinel_client(group: ReplicaSet) -> aioredis.Redis:
    return connect(RedisTarget(group.url, sentinels=group.sentinel_addresses))


def _replicas(group: ReplicaSet) -> list[RedisServer]:
    primary = group.primary_port()
    return [s for s in group.servers if s.port != primary]


@pytest.mark.chaos
async def test_decisions_appear_only_once_paused_replicas_resume(
    replica_set: ReplicaSet, keys: Keys
) -> None:
    client = _sentinel_client(replica_set)
    replicas = _replicas(replica_set)
    settings = settings_for(replica_set.url, keys.namespace, min_replicas=1, regions="eu,us")
    term = await start_term(client, keys, settings)
    try:

        async def announced() -> bool:
            return len(await decisions(client, keys)) == 1

        await eventually(announced, what="leader_changed published (replicas up)")
        for server in replicas:
            server.pause()
        await _outage(client, keys)

        async def held() -> bool:
            return any(isinstance(d, FailoverDecision) for d in await _held(client, keys))

        await eventually(held, what="the decision committed (held)")
        await asyncio.sleep(1.5)  # confirmation rounds time out while the replicas sleep
        assert await failovers(client, keys) == []
        for server in replicas:
            server.resume()

        async def visible() -> bool:
            return bool(await failovers(client, keys))

        await eventually(visible, 15, "the decision published after the replicas resumed")
        (decision,) = await failovers(client, keys)
        assert decision.epoch == term.pipeline.epoch
        assert await client.llen(keys.held_decisions) == 0
        # Published only once a replica had it: at that moment some replica holds it, or
        # (the publish replicated too, atomically) has it on the stream.
        on_replicas = []
        for server in replicas:
            direct = connect(server.url)
            try:
                rows = await direct.xrange(keys.decisions)
                found = [decode_entry(f, stream="decisions") for _, f in rows]
                on_replicas.append(decision in found or decision in await _held(direct, keys))
            finally:
                await direct.aclose()
        assert any(on_replicas)
    finally:
        for server in replicas:
            server.resume()
        await term.stop()
        await client.aclose()


@pytest.mark.chaos
async def test_held_decisions_are_published_once_by_the_next_leader(
    replica_set: ReplicaSet, keys: Keys
) -> None:
    """The leader that decided is replaced while its decision is held: it can no longer
    publish it (fenced), the next leader publishes it once, after its own confirmation,
    with the epoch and id it was decided under."""
    client = _sentinel_client(replica_set)
    replicas = _replicas(replica_set)
    settings = settings_for(replica_set.url, keys.namespace, min_replicas=1, regions="eu,us")
    first = await start_term(client, keys, settings, "a#1")
    second: Term | None = None
    try:

        async def announced() -> bool:
            return len(await decisions(client, keys)) == 1

        await eventually(announced, what="leader_changed published (replicas up)")
        for server in replicas:
            server.pause()
        await _outage(client, keys)

        async def held() -> bool:
            return any(isinstance(d, FailoverDecision) for d in await _held(client, keys))

        await eventually(held, what="the decision committed (held)")
        (decided,) = [d for d in await _held(client, keys) if isinstance(d, FailoverDecision)]
        leadership = await take_lease(client, keys, "b#2")  # fences a#1, which still runs
        await asyncio.wait_for(first.task, 15)  # fenced on its next publish round or read
        second = Term(LeaderPipeline(client, keys, settings, leadership))
        await asyncio.sleep(0.5)
        for server in replicas:
            server.resume()

        async def both() -> bool:
            return len(await decisions(client, keys)) == 3

        await eventually(both, 15, "the held decisions published by the next leader")
        await asyncio.sleep(1.0)  # a second publish would show up by now
        rows = [d for _, d in await decisions(client, keys)]
        assert [type(d) for d in rows] == [LeaderChanged, FailoverDecision, LeaderChanged]
        assert rows[1] == decided  # same id, same epoch (a#1's)
        assert isinstance(rows[1], FailoverDecision) and rows[1].epoch == first.pipeline.epoch
        assert isinstance(rows[2], LeaderChanged) and rows[2].leader == "b#2"
        assert await client.llen(keys.held_decisions) == 0
    finally:
        for server in replicas:
            server.resume()
        if second is not None:
            await second.stop()
        await first.stop()
        await client.aclose()
