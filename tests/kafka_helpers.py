"""Helpers for the Kafka edge tests: topics, settings, producing and reading records.

The fixtures (``kafka_broker``, ``own_kafka_broker``, ``workers``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka_broker import create_topics

SESSION_MS = 2000  # tansu joins a group in about half the session timeout


class Topics(msgspec.Struct, frozen=True):
    """One test's topic names (unique, so tests can share a broker)."""

    health: str
    events: str
    decisions: str


def new_topics() -> Topics:
    """Fresh topic names."""
    tag = uuid.uuid4().hex[:10]
    return Topics(health=f"h-{tag}", events=f"e-{tag}", decisions=f"d-{tag}")


async def make_topics(
    bootstrap: str, health: int = 4, events: int = 1, decisions: int = 2
) -> Topics:
    """Create fresh health/events/decisions topics with these partition counts."""
    topics = new_topics()
    await create_topics(
        bootstrap, {topics.health: health, topics.events: events, topics.decisions: decisions}
    )
    return topics


def kafka_env(
    bootstrap: str,
    topics: Topics,
    *,
    redis_url: str,
    namespace: str,
    group: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """``FAILOVER_*`` variables for a bridge or mirror process in a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env.update(
        FAILOVER_REGIONS="eu,us,ap",
        FAILOVER_REDIS_URL=redis_url,
        FAILOVER_NAMESPACE=namespace,
        FAILOVER_KAFKA_BOOTSTRAP=bootstrap,
        FAILOVER_KAFKA_HEALTH_TOPIC=topics.health,
        FAILOVER_KAFKA_EVENTS_TOPIC=topics.events,
        FAILOVER_KAFKA_DECISIONS_TOPIC=topics.decisions,
        FAILOVER_KAFKA_GROUP=group or f"bridge-{uuid.uuid4().hex[:8]}",
        FAILOVER_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_MS),
        FAILOVER_KAFKA_IDEMPOTENT="false",  # tansu rejects idempotent producers
        FAILOVER_SHUTDOWN_TIMEOUT_MS="5000",
        PYTHONUNBUFFERED="1",
    )
    env.update({f"FAILOVER_{k.upper()}": v for k, v in extra.items()})
    return env


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Produce (key, value) records with acks=all; returns each one's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=partition)
            for key, value in records
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in metas]


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 15.0) -> list[object]:
    """Every record on ``topic`` right now (up to each partition's highwater), in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # end_offsets() answers wrongly on tansu; highwater() is known after a fetch.
        records: list[object] = []
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(tps) and time.monotonic() < deadline:
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for msgs in batch.values():
                records.extend(msgs)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    done.add(tp)
        assert len(done) == len(tps), f"could not read {topic} to its end"
        return records
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1 when nothing was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        result = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            result[p] = -1 if offset is None else offset
        return result
    finally:
        await consumer.stop()
