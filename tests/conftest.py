"""Fixtures: a real Redis server per session on a free port, a unique namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from streams.connection import connect
from streams.keys import Keys
from streams.server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private server for the whole session (never port 6379)."""
    server = RedisServer()
    assert server.port != 6379
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A private server for one test that kills, pauses or restarts it."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, hash-tagged as a cluster deployment would be."""
    return "{t-" + uuid.uuid4().hex[:12] + "}"


@pytest.fixture
def keys(namespace: str) -> Keys:
    """Key names under this test's namespace."""
    return Keys(namespace)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client to the session server."""
    client = connect(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()
