"""streams.decisions: plain reads, and a reader's own group (mirror, executors)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from schemas.errors import GroupMissing
from streams.decisions import DecisionsGroup, DecisionsReader
from streams.keys import Keys


async def test_plain_reads(redis_client: aioredis.Redis, keys: Keys) -> None:
    reader = DecisionsReader(redis_client, keys)
    assert await reader.follow("0-0", block_ms=10) == []
    i1 = await redis_client.xadd(keys.decisions, {b"data": b"1"})
    i2 = await redis_client.xadd(keys.decisions, {b"data": b"2"})
    assert [e[0] for e in await reader.last(1)] == [i2]
    assert [e[0] for e in await reader.range()] == [i1, i2]
    assert [e[0] for e in await reader.range(i2.decode())] == [i2]
    assert [e[0] for e in await reader.read_all(i1.decode(), deadline_s=1.0)] == [i2]
    assert await reader.follow(i1.decode(), block_ms=10) == [(i2, {b"data": b"2"})]


async def test_group_redelivers_until_acked_and_claims_from_the_dead(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = DecisionsGroup(redis_client, keys, "executor", "c1", claim_idle_ms=60_000)
    with pytest.raises(GroupMissing):
        await group.read(10, 10)
    await group.ensure()
    await group.ensure()  # idempotent
    i1 = await redis_client.xadd(keys.decisions, {b"data": b"1"})
    i2 = await redis_client.xadd(keys.decisions, {b"data": b"2"})
    assert [e[0] for e in await group.read(10, 10)] == [i1, i2]
    # Not acked: the same consumer gets them again, in order, before anything newer.
    assert [e[0] for e in await group.read(10, 10)] == [i1, i2]
    # A restarted consumer (same name) gets its unacked entries first.
    again = DecisionsGroup(redis_client, keys, "executor", "c1", claim_idle_ms=60_000)
    assert [e[0] for e in await again.read(10, 10)] == [i1, i2]
    await again.ack([i1])
    # Another consumer takes over what c1 left idle (claim_idle_ms 0: at once).
    other = DecisionsGroup(redis_client, keys, "executor", "c2", claim_idle_ms=0)
    assert [e[0] for e in await other.read(10, 10)] == [i2]
    await other.ack([i2])
    assert await other.read(10, 10) == []
    i3 = await redis_client.xadd(keys.decisions, {b"data": b"3"})
    assert await other.read(10, 10) == [(i3, {b"data": b"3"})]
