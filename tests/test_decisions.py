"""streams.decisions.DecisionsReader: plain reads and the group mode (mirror, executors)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from schemas.errors import GroupMissing
from streams.decisions import DecisionsReader
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


async def test_group_mode_redelivers_until_acked(redis_client: aioredis.Redis, keys: Keys) -> None:
    reader = DecisionsReader(redis_client, keys, group="executor", consumer="c1")
    with pytest.raises(GroupMissing):
        await reader.read(block_ms=None)
    await reader.ensure_group()
    await reader.ensure_group()  # idempotent
    i1 = await redis_client.xadd(keys.decisions, {b"data": b"1"})
    i2 = await redis_client.xadd(keys.decisions, {b"data": b"2"})
    assert [e[0] for e in await reader.read(block_ms=None)] == [i1, i2]
    # A restarted consumer gets its unacked entries first.
    again = DecisionsReader(redis_client, keys, group="executor", consumer="c1")
    assert [e[0] for e in await again.read(block_ms=None)] == [i1, i2]
    assert await again.ack([i1]) == 1
    # Another consumer takes over what c1 left idle.
    other = DecisionsReader(redis_client, keys, group="executor", consumer="c2")
    assert await other.claim_idle(0) == [i2]
    assert [e[0] for e in await other.read(block_ms=None)] == [i2]
    assert await other.ack([i2]) == 1
    assert await other.read(block_ms=10) == []
    i3 = await redis_client.xadd(keys.decisions, {b"data": b"3"})
    assert await other.read(block_ms=10) == [(i3, {b"data": b"3"})]
