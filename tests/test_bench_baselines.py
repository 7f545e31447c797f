"""The benchmark's ceilings and peer do the work they are compared on (no timing here).

Each consumer of :mod:`bench.baselines` and :mod:`bench.faststream_peer` must take every
entry of a real stream through its own group, decode it, and acknowledge it: a ceiling that
skipped entries or acks would flatter itself. The percentile helper names a p99 only with
enough samples.
"""

from __future__ import annotations

import msgspec
import pytest
import redis.asyncio as aioredis

from bench import baselines
from bench.faststream_peer import faststream
from bench.history import fill, history
from bench.percentiles import summarize, tail
from streams.keys import Keys
from streams.server import RedisServer

N = 2_345  # not a multiple of any batch size: the last batch is partial


async def test_each_consumer_drains_decodes_and_acks_the_whole_stream(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    await fill(redis_client, keys.health, history(N))
    consumers = (
        (baselines.redis_py, 500),
        (baselines.redis_py_tuned, 500),
        (baselines.thin_hiredis, 500),
        (faststream, 1000),
    )
    for consume, batch in consumers:
        # Each asserts inside that it read and acked exactly N entries, then drops its group.
        rate = await consume(redis_server.url, keys.health, N, batch)
        assert rate > 0
    assert await redis_client.xinfo_groups(keys.health) == []


async def test_a_consumer_that_finds_a_bad_entry_fails_loudly(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    await fill(redis_client, keys.health, history(10))
    await redis_client.xadd(keys.health, {b"data": b'{"type":"health"}'})
    for consume in (baselines.redis_py_tuned, baselines.thin_hiredis):
        with pytest.raises(msgspec.ValidationError, match="Object missing required field"):
            await consume(redis_server.url, keys.health, 11, 500)


def test_p99_needs_100_samples() -> None:
    few = summarize([float(i) for i in range(1, 61)])
    assert "p99_ms" not in few
    assert tail(few) == "max of 60 60.0 ms"
    many = summarize([float(i) for i in range(1, 201)])
    assert many["p99_ms"] == 198.0  # nearest rank: the 198th of 200
    assert tail(many) == "p99 198.0 ms"
    assert many["p50_ms"] == 100.5
