"""The leader recreates its consumer group when the input stream is deleted under it."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from streams.keys import Keys
from streams.server import RedisServer
from tests.pipeline_helpers import health, settings_for, start_term


async def test_a_deleted_stream_gets_its_group_back(
    redis_client: aioredis.Redis,
    keys: Keys,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    term = await start_term(redis_client, keys, settings_for(redis_server.url, keys.namespace))
    try:
        while not await redis_client.exists(keys.health):
            await asyncio.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger="workers.coordinator.pipeline"):
            await redis_client.delete(keys.health)
            while not any("vanished" in r.getMessage() for r in caplog.records):
                assert not term.task.done()
                await asyncio.sleep(0.01)
        await redis_client.xadd(keys.health, health("e1", "eu", "o1", "healthy", 1.0))
        while not term.pipeline.stats.applied:
            assert not term.task.done()
            await asyncio.sleep(0.01)
    finally:
        await term.stop()
