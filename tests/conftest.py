"""Fixtures: a real Redis server per session on a free port, a unique namespace per test;
a real tansu Kafka broker and the worker processes a test starts (aiokafka is not imported
here: tests that do not use Kafka do not pay for it)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from streams.cluster_set import ClusterSet
from streams.connection import connect
from streams.keys import Keys
from streams.replica_set import ReplicaSet
from streams.server import RedisServer
from tests.kafka_broker import TansuBroker
from tests.worker_process import WorkerProcess


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
def replica_set() -> Iterator[ReplicaSet]:
    """A primary, two replicas and three Sentinels (down-after 1 s) for one test."""
    group = ReplicaSet()
    try:
        group.start()
        yield group
    finally:
        for server in group.servers:
            server.resume()  # a test may have left one paused
        group.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterSet]:
    """A Redis Cluster of three primaries for the whole session (tests reshard only slots
    they own: their namespace's, or one of a key of their own)."""
    cluster = ClusterSet()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request: pytest.FixtureRequest, namespace: str) -> str:
    """The session server's URL, then a cluster node's that does NOT own this test's
    namespace (so every client has to follow a MOVED first)."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    cluster: ClusterSet = request.getfixturevalue("redis_cluster")
    return cluster.entry_url(namespace)


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


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One tansu broker for the session, on a free loopback port."""
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_kafka_broker() -> Iterator[TansuBroker]:
    """A broker for one test that pauses or kills it."""
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.send_signal(signal.SIGCONT)  # a test may have left it paused
        broker.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Processes a test starts; every one is killed at the end, whatever happened."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()
