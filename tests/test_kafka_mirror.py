"""The decision mirror (NS:decisions -> Kafka) against a real tansu broker and a real Redis."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from schemas.codec import encode_entry
from schemas.errors import KafkaUnavailable
from schemas.events import FailoverDecision, LeaderChanged
from streams.keys import Keys
from streams.server import RedisServer, free_port
from tests.kafka_broker import TansuBroker
from tests.kafka_helpers import (
    Topics,
    kafka_env,
    make_topics,
    read_topic,
)
from tests.waiting import wait_for
from tests.worker_process import WorkerProcess
from workers.kafka.mirror import MIRROR_GROUP, run_mirror
from workers.settings import Settings, load_settings

pytestmark = pytest.mark.kafka


def failover(n: int, to: str, frm: str = "eu") -> FailoverDecision:
    """A failover decision as the leader would commit it."""
    return FailoverDecision(
        decision_id=f"d{n}",
        epoch=1,
        leader="c1#abc",
        from_region=frm,
        to_region=to,
        reason="down",
        evidence=[f"e{n}"],
        decided_at=1_700_000_000.0 + n,
    )


def settings_for(
    broker: TansuBroker, topics: Topics, redis_url: str, keys: Keys, **extra: str
) -> Settings:
    """Settings as the mirror process would load them."""
    return load_settings(
        kafka_env(broker.bootstrap, topics, redis_url=redis_url, namespace=keys.namespace, **extra)
    )


class MirrorTask:
    """``run_mirror`` as a task of this test, stopped like SIGTERM stops it."""

    def __init__(self, settings: Settings, claim_idle_ms: int | None = None) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_mirror(settings, self.stop, claim_idle_ms=claim_idle_ms)
        )

    async def close(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 30)

    def crash(self) -> None:
        """Cancel without a clean stop, as a dying process would vanish."""
        self.task.cancel()


@pytest.fixture
async def mirrors() -> AsyncIterator[list[MirrorTask]]:
    started: list[MirrorTask] = []
    try:
        yield started
    finally:
        for mirror in started:
            mirror.task.cancel()
        await asyncio.gather(*(m.task for m in started), return_exceptions=True)


async def pending(redis: aioredis.Redis, keys: Keys) -> int:
    """Decisions delivered to the mirror group and not yet acked."""
    info = await redis.xpending(keys.decisions, MIRROR_GROUP)
    return int(info["pending"])


async def test_decisions_reach_kafka_keyed_in_order_and_acked(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    mirrors: list[MirrorTask],
) -> None:
    topics = await make_topics(kafka_broker.bootstrap, decisions=2)
    entries = [
        encode_entry(LeaderChanged(epoch=1, leader="c1#abc", at=1_700_000_000.0)),
        encode_entry(failover(1, "us")),
        encode_entry(failover(2, "ap", frm="us")),
        {b"data": b'{"type":"from_a_newer_leader","x":1}'},  # mirrored unkeyed, not dropped
        encode_entry(failover(3, "us", frm="ap")),
    ]
    # Two decisions exist before the mirror starts: its group starts at the beginning.
    ids = [await redis_client.xadd(keys.decisions, entries[0])]
    ids.append(await redis_client.xadd(keys.decisions, entries[1]))
    port = free_port()
    settings = settings_for(
        kafka_broker, topics, redis_server.url, keys, metrics_port=str(port),
        metrics_addr="127.0.0.1",
    )  # fmt: skip
    mirrors.append(MirrorTask(settings))
    for fields in entries[2:]:
        ids.append(await redis_client.xadd(keys.decisions, fields))

    async def all_on_kafka() -> bool:
        return len(await read_topic(kafka_broker.bootstrap, topics.decisions)) >= len(entries)

    await wait_for(all_on_kafka, 30, "every decision on the decisions topic")
    records = await read_topic(kafka_broker.bootstrap, topics.decisions)
    assert len(records) == len(entries)  # each once
    by_id = {dict(r.headers)["failover-entry-id"]: r for r in records}  # type: ignore[attr-defined]
    assert set(by_id) == set(ids)
    expected_keys = [b"leader", b"us", b"ap", None, b"us"]
    for entry_id, fields, key in zip(ids, entries, expected_keys, strict=True):
        record = by_id[entry_id]
        assert record.value == fields[b"data"]  # type: ignore[attr-defined]
        assert record.key == key  # type: ignore[attr-defined]
    # Both decisions for "us" share a partition, in stream order.
    us = [r for r in records if r.key == b"us"]  # type: ignore[attr-defined]
    assert [dict(r.headers)["failover-entry-id"] for r in us] == [ids[1], ids[4]]  # type: ignore[attr-defined]
    assert dict(by_id[ids[1]].headers)["failover-type"] == b"failover"  # type: ignore[attr-defined]

    await wait_for(lambda: _none_pending(redis_client, keys), 10, "the mirror's acks")
    # Its metrics count what it mirrored (and no error) while it runs.
    exposed = await asyncio.to_thread(_scrape, port)
    assert f"failover_mirror_decisions_total {float(len(entries))}" in exposed, exposed
    assert 'failover_mirror_errors_total{side="kafka"} 0.0' in exposed
    assert 'failover_build_info{role="mirror",' in exposed
    await wait_for(
        lambda: _exposes(port, "failover_mirror_lag_entries 0.0", "failover_mirror_pending 0.0"),
        10,
        "the lag gauges at 0 once all is mirrored",
    )
    assert await mirrors[0].close() == len(entries)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


async def _exposes(port: int, *lines: str) -> bool:
    exposed = await asyncio.to_thread(_scrape, port)
    return all(line in exposed.splitlines() for line in lines)


async def _none_pending(redis: aioredis.Redis, keys: Keys) -> bool:
    return await pending(redis, keys) == 0


@pytest.mark.chaos
async def test_acked_in_redis_only_after_kafka_acknowledged(
    own_kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    mirrors: list[MirrorTask],
) -> None:
    broker = own_kafka_broker
    topics = await make_topics(broker.bootstrap, decisions=1)
    port = free_port()
    settings = settings_for(
        broker, topics, redis_server.url, keys, metrics_port=str(port), metrics_addr="127.0.0.1"
    )
    mirror = MirrorTask(settings)
    mirrors.append(mirror)
    await redis_client.xadd(keys.decisions, encode_entry(failover(1, "us")))

    async def on_kafka(n: int) -> bool:
        return len(await read_topic(broker.bootstrap, topics.decisions)) >= n

    await wait_for(lambda: on_kafka(1), 30, "the first decision on Kafka")
    await wait_for(lambda: _none_pending(redis_client, keys), 10, "the first decision acked")

    assert broker.proc is not None
    broker.proc.send_signal(19)  # SIGSTOP: Kafka cannot acknowledge anything
    try:
        # Atomically, so the mirror takes both in one read (it holds a batch until acked).
        async with redis_client.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.decisions, encode_entry(failover(2, "ap", frm="us")))
            pipe.xadd(keys.decisions, encode_entry(failover(3, "us", frm="ap")))
            await pipe.execute()

        async def delivered_not_acked() -> bool:
            return await pending(redis_client, keys) == 2

        await wait_for(delivered_not_acked, 10, "the mirror to take both decisions")
        await asyncio.sleep(1.5)  # the point: nothing may be acked while Kafka is paused
        assert await pending(redis_client, keys) == 2, "acked before Kafka acknowledged"
        # A decision arriving meanwhile waits undelivered: the lag gauges show both.
        await redis_client.xadd(keys.decisions, encode_entry(failover(4, "eu", frm="us")))
        gauges = ("failover_mirror_lag_entries 1.0", "failover_mirror_pending 2.0")
        await wait_for(
            lambda: _exposes(port, *gauges),
            10,
            "the mirror's lag gauges during the Kafka pause",
        )
    finally:
        broker.proc.send_signal(18)  # SIGCONT

    await wait_for(lambda: on_kafka(4), 30, "the held decisions on Kafka after the pause")
    await wait_for(lambda: _none_pending(redis_client, keys), 10, "the held decisions acked")
    values = [r.value for r in await read_topic(broker.bootstrap, topics.decisions)]  # type: ignore[attr-defined]
    assert sorted(set(values)) == sorted(
        encode_entry(failover(n, to, frm))[b"data"]
        for n, to, frm in ((1, "us", "eu"), (2, "ap", "us"), (3, "us", "ap"), (4, "eu", "us"))
    )
    await wait_for(
        lambda: _exposes(port, "failover_mirror_lag_entries 0.0", "failover_mirror_pending 0.0"),
        10,
        "the lag gauges back at 0",
    )
    await mirror.close()


async def test_a_deleted_group_is_created_again_and_nothing_is_left_unmirrored(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    mirrors: list[MirrorTask],
) -> None:
    topics = await make_topics(kafka_broker.bootstrap, decisions=1)
    settings = settings_for(kafka_broker, topics, redis_server.url, keys)
    mirror = MirrorTask(settings)
    mirrors.append(mirror)
    first = await redis_client.xadd(keys.decisions, encode_entry(failover(1, "us")))

    async def mirrored_ids() -> set[bytes]:
        records = await read_topic(kafka_broker.bootstrap, topics.decisions)
        return {dict(r.headers)["failover-entry-id"] for r in records}  # type: ignore[attr-defined]

    async def has(*ids: bytes) -> bool:
        return set(ids) <= await mirrored_ids()

    await wait_for(lambda: has(first), 30, "the first decision on Kafka")
    await wait_for(lambda: _none_pending(redis_client, keys), 10, "the first decision acked")
    # An operator (or a FLUSH of the group's key space) destroys the group under the mirror.
    assert await redis_client.xgroup_destroy(keys.decisions, MIRROR_GROUP) == 1
    second = await redis_client.xadd(keys.decisions, encode_entry(failover(2, "ap", frm="us")))
    await wait_for(lambda: has(first, second), 30, "the decision written after the loss")
    await wait_for(lambda: _none_pending(redis_client, keys), 10, "everything acked again")
    groups = await redis_client.xinfo_groups(keys.decisions)
    assert [g["name"] for g in groups] == [MIRROR_GROUP.encode()]
    assert not mirror.task.done()  # it never gave up or died
    await mirror.close()


@pytest.mark.chaos
async def test_dead_mirrors_pending_decisions_are_claimed_and_sent(
    own_kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    mirrors: list[MirrorTask],
    workers: list[WorkerProcess],
) -> None:
    broker = own_kafka_broker
    topics = await make_topics(broker.bootstrap, decisions=1)
    env = kafka_env(broker.bootstrap, topics, redis_url=redis_server.url, namespace=keys.namespace)
    first = WorkerProcess("workers.mirror", env, "mirror-1")
    workers.append(first.start())
    assert broker.proc is not None

    async def group_exists() -> bool:
        assert first.proc is not None and first.proc.poll() is None, first.output()
        try:
            return bool(await redis_client.xinfo_groups(keys.decisions))
        except aioredis.ResponseError:
            return False

    await wait_for(group_exists, 15, "the mirror group")
    broker.proc.send_signal(19)  # SIGSTOP: the first mirror takes decisions it cannot send
    try:
        async with redis_client.pipeline(transaction=True) as pipe:
            for n in range(3):
                pipe.xadd(keys.decisions, encode_entry(failover(n, "us")))
            await pipe.execute()

        async def taken() -> bool:
            return await pending(redis_client, keys) == 3

        await wait_for(taken, 10, "the first mirror to take the decisions")
        first.kill()  # SIGKILL while holding them
    finally:
        broker.proc.send_signal(18)
    assert await pending(redis_client, keys) == 3
    second = MirrorTask(load_settings(env), claim_idle_ms=500)
    mirrors.append(second)

    async def on_kafka() -> bool:
        values = {r.value for r in await read_topic(broker.bootstrap, topics.decisions)}  # type: ignore[attr-defined]
        return len(values) == 3

    await wait_for(on_kafka, 30, "the dead mirror's decisions on Kafka")
    # Only a claim can clear the dead consumer's pending entries.
    await wait_for(lambda: _none_pending(redis_client, keys), 10, "the claimed decisions acked")
    assert await second.close() == 3


async def test_idempotent_producer_refusal_is_one_clear_line(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    """tansu refuses idempotent producers: the default setting must say what to change."""
    topics = await make_topics(kafka_broker.bootstrap)
    settings = settings_for(kafka_broker, topics, redis_server.url, keys, kafka_idempotent="true")
    assert settings.kafka.idempotent
    with pytest.raises(KafkaUnavailable, match="FAILOVER_KAFKA_IDEMPOTENT=false"):
        await run_mirror(settings, asyncio.Event())

    env = kafka_env(
        kafka_broker.bootstrap,
        topics,
        redis_url=redis_server.url,
        namespace=keys.namespace,
        kafka_idempotent="true",
    )
    proc = WorkerProcess("workers.mirror", env, "mirror-idem")
    workers.append(proc.start())
    assert proc.wait() == 1
    lines = [line for line in proc.output().splitlines() if line.startswith("mirror:")]
    assert len(lines) == 1 and "FAILOVER_KAFKA_IDEMPOTENT=false" in lines[0], proc.output()
    assert kafka_broker.bootstrap in lines[0]

    missing = Topics(health=topics.health, events=topics.events, decisions="no-such-topic")
    env = kafka_env(
        kafka_broker.bootstrap, missing, redis_url=redis_server.url, namespace=keys.namespace
    )
    proc = WorkerProcess("workers.mirror", env, "mirror-missing")
    workers.append(proc.start())
    assert proc.wait() == 2
    assert "no-such-topic" in proc.output()


@pytest.mark.chaos
async def test_sigterm_with_kafka_stuck_exits_and_keeps_decisions_pending(
    own_kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    broker = own_kafka_broker
    topics = await make_topics(broker.bootstrap, decisions=1)
    env = kafka_env(
        broker.bootstrap,
        topics,
        redis_url=redis_server.url,
        namespace=keys.namespace,
        shutdown_timeout_ms="1500",
    )
    mirror = WorkerProcess("workers.mirror", env, "mirror-term")
    workers.append(mirror.start())

    async def group_exists() -> bool:
        assert mirror.proc is not None and mirror.proc.poll() is None, mirror.output()
        try:
            return bool(await redis_client.xinfo_groups(keys.decisions))
        except aioredis.ResponseError:
            return False

    await wait_for(group_exists, 15, "the mirror group")
    assert broker.proc is not None
    broker.proc.send_signal(19)  # SIGSTOP
    try:
        await redis_client.xadd(keys.decisions, encode_entry(failover(1, "us")))
        await wait_for(lambda: _pending_is(redis_client, keys, 1), 10, "the mirror to take it")
        began = asyncio.get_running_loop().time()
        assert mirror.terminate(timeout_s=10) == 0, mirror.output()
        assert asyncio.get_running_loop().time() - began < 5.0
        assert await pending(redis_client, keys) == 1, "acked without Kafka's acknowledgement"
    finally:
        broker.proc.send_signal(18)  # SIGCONT
    nxt = MirrorTask(load_settings(env), claim_idle_ms=300)
    try:
        await wait_for(lambda: _pending_is(redis_client, keys, 0), 30, "the next mirror to send it")
        values = [r.value for r in await read_topic(broker.bootstrap, topics.decisions)]  # type: ignore[attr-defined]
        assert encode_entry(failover(1, "us"))[b"data"] in values
    finally:
        await nxt.close()


async def _pending_is(redis: aioredis.Redis, keys: Keys, n: int) -> bool:
    return await pending(redis, keys) == n
