"""The Kafka -> Redis bridge against a real tansu broker and a real Redis, as real processes."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from streams.kafka import KafkaSecurity, aiokafka_security
from streams.kafka_source import faust_credentials
from streams.keys import Keys
from streams.server import RedisServer, free_port
from tests.kafka_broker import TansuBroker
from tests.kafka_helpers import (
    committed,
    kafka_env,
    make_topics,
    new_topics,
    produce,
)
from tests.waiting import wait_for
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.kafka

STARTED = " -> "  # in the bridge's one startup line, logged once faust has started


def health(region: str, source: str, n: int, status: str = "healthy") -> bytes:
    """One health event as a producer on Kafka would publish it."""
    return json.dumps(
        {
            "type": "health",
            "event_id": f"{source}-{region}-{n}",
            "region": region,
            "source": source,
            "status": status,
            "observed_at": 1_700_000_000 + n,
        }
    ).encode()


async def datas(redis: aioredis.Redis, key: str) -> list[bytes]:
    """The ``data`` values of a stream, in stream order; every entry must have only that."""
    out = []
    for _id, fields in await redis.xrange(key):
        assert list(fields) == [b"data"], fields
        out.append(fields[b"data"])
    return out


async def test_bridge_appends_each_value_unchanged_and_commits_after(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    topics = await make_topics(kafka_broker.bootstrap, health=4, events=1)
    valid = [(f"k{i % 5}".encode(), health("eu", f"p{i % 5}", i)) for i in range(60)]
    odd: list[tuple[bytes | None, bytes | None]] = [
        (b"k0", b"not json"),
        (b"k1", b"\xff\xfe\x00binary"),
        (b"k2", b""),
        (b"k3", None),  # a tombstone: stored empty, the leader dead-letters it
        (None, json.dumps({"type": "health", "extra": "x" * 20000}).encode()),
    ]
    placed = await produce(kafka_broker.bootstrap, topics.health, valid + odd)
    events = [(None, b'{"type":"drain","event_id":"d1","region":"ap","actor":"ops","at":1.0}')]
    await produce(kafka_broker.bootstrap, topics.events, events)
    env = kafka_env(
        kafka_broker.bootstrap, topics, redis_url=redis_server.url, namespace=keys.namespace
    )
    bridge = WorkerProcess("workers.bridge", env, "bridge")
    workers.append(bridge.start())

    total = len(valid) + len(odd)

    async def all_there() -> bool:
        return await redis_client.xlen(keys.health) >= total

    await wait_for(all_there, 30, "the health records in Redis")
    await wait_for(lambda: redis_client.xlen(keys.events), 10, "the events record in Redis")
    got = await datas(redis_client, keys.health)
    expected = [v if v is not None else b"" for _k, v in valid + odd]
    assert sorted(got) == sorted(expected)  # exactly the bytes, each once
    # Per partition, Kafka order is kept.
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for (partition, _offset), (_key, value) in zip(placed, valid + odd, strict=True):
        by_partition[partition].append(value if value is not None else b"")
    for values in by_partition.values():
        unique = [v for v in values if v]  # the two empty values are indistinguishable
        assert [v for v in got if v in set(unique)] == unique
    assert await datas(redis_client, keys.events) == [events[0][1]]

    assert bridge.terminate() == 0, bridge.output()
    # Offsets were committed for everything written: a new bridge would start at the end.
    offsets = await committed(kafka_broker.bootstrap, env["FAILOVER_KAFKA_GROUP"], topics.health, 4)
    ends = defaultdict(int)
    for partition, offset in placed:
        ends[partition] = max(ends[partition], offset + 1)
    assert {p: o for p, o in offsets.items() if o >= 0} == dict(ends)


async def test_many_writes_keep_each_partitions_order_and_commit_all(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    # Records of each partition are fetched in large runs, cut into batches of at most
    # FAILOVER_BATCH_SIZE and written one script call at a time: with 2,000 records and
    # batches of 64, each partition's records span many writes and interleave with the
    # other partitions' and the other topic's.
    topics = await make_topics(kafka_broker.bootstrap, health=4, events=1)
    valid = [(f"k{i % 13}".encode(), health("eu", f"p{i % 13}", i)) for i in range(2000)]
    placed = await produce(kafka_broker.bootstrap, topics.health, valid)
    events = [
        (None, json.dumps({"type": "drain", "event_id": f"d{i}", "region": "ap"}).encode())
        for i in range(150)
    ]
    await produce(kafka_broker.bootstrap, topics.events, events)
    env = kafka_env(
        kafka_broker.bootstrap,
        topics,
        redis_url=redis_server.url,
        namespace=keys.namespace,
        batch_size="64",
    )
    bridge = WorkerProcess("workers.bridge", env, "bridge")
    workers.append(bridge.start())

    async def all_there() -> bool:
        health_n = await redis_client.xlen(keys.health)
        return health_n >= len(valid) and await redis_client.xlen(keys.events) >= len(events)

    await wait_for(all_there, 60, "every record in Redis")
    got = await datas(redis_client, keys.health)
    assert sorted(got) == sorted(v for _k, v in valid)  # each once, unchanged
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for (partition, _offset), (_key, value) in zip(placed, valid, strict=True):
        by_partition[partition].append(value)
    assert len(by_partition) > 1
    for values in by_partition.values():
        members = set(values)
        assert [v for v in got if v in members] == values
    assert await datas(redis_client, keys.events) == [v for _k, v in events]

    assert bridge.terminate() == 0, bridge.output()
    offsets = await committed(kafka_broker.bootstrap, env["FAILOVER_KAFKA_GROUP"], topics.health, 4)
    ends = {p: max(o for q, o in placed if q == p) + 1 for p in by_partition}
    assert {p: o for p, o in offsets.items() if o >= 0} == ends


@pytest.mark.chaos
async def test_redis_outage_holds_offsets_and_skips_nothing(
    kafka_broker: TansuBroker,
    own_redis_server: RedisServer,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    topics = await make_topics(kafka_broker.bootstrap, health=1)
    env = kafka_env(
        kafka_broker.bootstrap,
        topics,
        redis_url=own_redis_server.url,
        namespace=keys.namespace,
        shutdown_timeout_ms="2000",
    )
    group = env["FAILOVER_KAFKA_GROUP"]
    metrics_port = free_port()
    env |= {"FAILOVER_METRICS_PORT": str(metrics_port), "FAILOVER_METRICS_ADDR": "127.0.0.1"}
    bridge = WorkerProcess("workers.bridge", env, "bridge")
    workers.append(bridge.start())
    redis = aioredis.Redis(port=own_redis_server.port, socket_timeout=2)
    try:
        first = [(None, health("eu", "p1", i)) for i in range(10)]
        await produce(kafka_broker.bootstrap, topics.health, first)

        async def have(n: int) -> bool:
            return int(await redis.xlen(keys.health)) >= n

        await wait_for(lambda: have(10), 30, "the first batch in Redis")

        async def first_committed() -> bool:
            got = await committed(kafka_broker.bootstrap, group, topics.health, 1)
            return got[0] == 10

        await wait_for(first_committed, 10, "the first batch's offsets committed")

        own_redis_server.pause()  # SIGSTOP: connections hang, nothing answers
        second = [(None, health("eu", "p1", i)) for i in range(10, 30)]
        await produce(kafka_broker.bootstrap, topics.health, second)
        # Several commit intervals pass while Redis is down: the offset must not move.
        for _ in range(3):
            await asyncio.sleep(1.0)
            got = await committed(kafka_broker.bootstrap, group, topics.health, 1)
            assert got[0] == 10, f"offset advanced past records not in Redis: {got}"
        # The consumer lag says so: 20 records fetched and not committed.
        lag = f'failover_bridge_consumer_lag_records{{partition="0",topic="{topics.health}"}}'
        lagging = f"{lag} 20.0"
        await wait_for(lambda: _exposes(metrics_port, lagging), 10, "the bridge's lag at 20")
        own_redis_server.resume()

        await wait_for(lambda: have(30), 30, "the held records after the outage")

        async def all_committed() -> bool:
            got = await committed(kafka_broker.bootstrap, group, topics.health, 1)
            return got[0] == 30

        await wait_for(all_committed, 10, "all offsets committed after the outage")
        got_values = [fields[b"data"] for _id, fields in await redis.xrange(keys.health)]
        assert sorted(set(got_values)) == sorted(v for _k, v in first + second)
        assert "redis" in bridge.output().lower()  # the outage was logged, with retries
        # Its metrics say what happened: every record written, the failed write attempts.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            exposed = resp.read().decode()
        assert f'failover_bridge_records_total{{stream="{keys.health}"}} 30.0' in exposed
        errors = re.search(r"^failover_bridge_write_errors_total (\S+)$", exposed, re.M)
        assert errors is not None and float(errors.group(1)) >= 1, exposed
        assert "failover_bridge_held_records 0.0" in exposed
        await wait_for(lambda: _exposes(metrics_port, f"{lag} 0.0"), 10, "the bridge's lag at 0")

        # SIGTERM during an outage: exit 0 within the shutdown timeout, commit nothing
        # unwritten; the next bridge delivers the held records.
        own_redis_server.pause()
        third = [(None, health("eu", "p1", i)) for i in range(30, 35)]
        await produce(kafka_broker.bootstrap, topics.health, third)
        await asyncio.sleep(0.5)
        began = time.monotonic()
        assert bridge.terminate(timeout_s=15) == 0, bridge.output()
        assert time.monotonic() - began < 2.0 + 3.0, "shutdown not bounded by its timeout"
        got = await committed(kafka_broker.bootstrap, group, topics.health, 1)
        assert got[0] == 30, f"offset advanced past records not in Redis: {got}"
        own_redis_server.resume()
        again = WorkerProcess("workers.bridge", env, "bridge-again")
        workers.append(again.start())
        expected = {v for _k, v in first + second + third}

        async def all_there() -> bool:
            # At least once: a write retried across the outage may be there twice, so the
            # stream's length says nothing; every record must be there.
            got = {fields[b"data"] for _id, fields in await redis.xrange(keys.health)}
            return got >= expected

        await wait_for(all_there, 30, "the records held at shutdown, by the next bridge")
        # (The dead bridge's last MULTI may sit in the paused server's socket and run on
        # resume, so wait for the new bridge to be up before stopping it.)
        await wait_for(lambda: STARTED in again.output(), 30, "the next bridge up")
        got_values = [fields[b"data"] for _id, fields in await redis.xrange(keys.health)]
        assert set(got_values) == expected
        assert again.terminate() == 0, again.output()
    finally:
        own_redis_server.resume()
        await redis.aclose()


@pytest.mark.chaos
async def test_sigkilled_bridge_loses_nothing_and_peer_takes_over(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    """Two bridges share the partitions; one is SIGKILLed mid-stream and comes back."""
    topics = await make_topics(kafka_broker.bootstrap, health=4)
    env = kafka_env(
        kafka_broker.bootstrap, topics, redis_url=redis_server.url, namespace=keys.namespace
    )
    keys_n = 8
    per_key = 150
    produced: list[bytes] = []

    async def producer() -> None:
        # Paced, so records keep arriving before, during and after the kill and rebalances.
        for n in range(per_key):
            batch = [(f"k{k}".encode(), health(f"r{k}", f"p{k}", n)) for k in range(keys_n)]
            await produce(kafka_broker.bootstrap, topics.health, batch)
            produced.extend(v for _k, v in batch)
            await asyncio.sleep(0.02)

    async def have(n: int) -> bool:
        return await redis_client.xlen(keys.health) >= n

    a = WorkerProcess("workers.bridge", env, "bridge-a")
    workers.append(a.start())  # a alone first: it owns every partition
    feeding = asyncio.create_task(producer())
    try:
        await wait_for(lambda: have(keys_n * 10), 45, "bridge a writing")
        b = WorkerProcess("workers.bridge", env, "bridge-b")
        workers.append(b.start())  # joins mid-stream: a rebalance while a is busy
        await wait_for(lambda: have(keys_n * 40), 45, "both bridges writing")
        a.kill()  # SIGKILL: whatever a wrote since its last commit is re-delivered to b
        await asyncio.sleep(0.5)
        a2 = WorkerProcess("workers.bridge", env, "bridge-a2")
        workers.append(a2.start())  # and another rebalance
        await feeding
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)

    total = keys_n * per_key

    async def complete() -> bool:
        got = {fields[b"data"] for _id, fields in await redis_client.xrange(keys.health)}
        return len(got) == total

    await wait_for(complete, 60, "every produced record in Redis after the kill")
    got = [fields[b"data"] for _id, fields in await redis_client.xrange(keys.health)]
    assert set(got) == set(produced)
    # Per key (so per partition), first appearances follow Kafka order.
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[bytes] = set()
    for value in got:
        if value in seen:
            continue
        seen.add(value)
        event = json.loads(value)
        firsts[event["source"]].append(int(event["event_id"].rsplit("-", 1)[1]))
    for source, ns in firsts.items():
        assert ns == sorted(ns), f"{source} out of order"
    duplicates = len(got) - len(set(got))
    print(f"\n{total} records, {duplicates} re-delivered duplicates after SIGKILL")
    for survivor in (b, a2):
        await wait_for(lambda w=survivor: STARTED in w.output(), 30, f"{survivor.name} up")
        assert survivor.terminate() == 0, survivor.output()


async def test_startup_errors_are_one_clear_line(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    topics = new_topics()  # not created
    base = dict(redis_url=redis_server.url, namespace=keys.namespace)

    nowhere = f"127.0.0.1:{free_port()}"
    down = WorkerProcess("workers.bridge", kafka_env(nowhere, topics, **base), "bridge-down")
    workers.append(down.start())
    assert down.wait() == 1
    lines = [line for line in down.output().splitlines() if line.startswith("bridge:")]
    assert len(lines) == 1 and nowhere in lines[0] and "unreachable" in lines[0], down.output()

    missing = WorkerProcess(
        "workers.bridge", kafka_env(kafka_broker.bootstrap, topics, **base), "bridge-missing"
    )
    workers.append(missing.start())
    assert missing.wait() == 2
    lines = [line for line in missing.output().splitlines() if line.startswith("bridge:")]
    assert len(lines) == 1, missing.output()
    assert topics.health in lines[0] and "FAILOVER_KAFKA_AUTO_CREATE_TOPICS" in lines[0]

    env = kafka_env(kafka_broker.bootstrap, topics, **base)
    env.pop("FAILOVER_KAFKA_BOOTSTRAP")
    unset = WorkerProcess("workers.bridge", env, "bridge-unset")
    workers.append(unset.start())
    assert unset.wait() == 2
    assert "FAILOVER_KAFKA_BOOTSTRAP" in unset.output()

    # With auto-create on, the same missing topics are created and the bridge runs.
    created = WorkerProcess(
        "workers.bridge",
        kafka_env(kafka_broker.bootstrap, topics, **base, kafka_auto_create_topics="true"),
        "bridge-create",
    )
    workers.append(created.start())
    await produce_when_ready(kafka_broker.bootstrap, topics.health, created)
    redis = aioredis.Redis(port=redis_server.port)
    try:
        await wait_for(lambda: redis.xlen(keys.health), 30, "a record through created topics")
    finally:
        await redis.aclose()
    assert created.terminate() == 0, created.output()


async def produce_when_ready(bootstrap: str, topic: str, worker: WorkerProcess) -> None:
    """Produce one record once ``worker`` has created ``topic``."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def exists() -> bool:
            assert worker.proc is not None and worker.proc.poll() is None, worker.output()
            return topic in await admin.list_topics()

        await wait_for(exists, 30, f"{topic} created by the bridge", interval_s=0.2)
    finally:
        await admin.close()
    await produce(bootstrap, topic, [(None, health("eu", "p", uuid.uuid4().int % 1000))])


def test_security_settings_reach_aiokafka_and_faust() -> None:
    sasl = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bridge",
        sasl_password="s3cret",
    )
    kwargs = aiokafka_security(sasl)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("bridge", "s3cret")
    assert kwargs["ssl_context"] is not None
    assert "s3cret" not in repr(sasl)
    creds = faust_credentials(sasl)
    assert creds is not None
    assert creds.protocol.value == "SASL_SSL"  # type: ignore[attr-defined]
    assert creds.mechanism.value == "SCRAM-SHA-512"  # type: ignore[attr-defined]
    assert creds.password == "s3cret"  # type: ignore[attr-defined]

    plain = aiokafka_security(KafkaSecurity())
    assert plain == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSecurity()) is None
    tls = faust_credentials(KafkaSecurity(security_protocol="SSL"))
    assert tls is not None and tls.protocol.value == "SSL"  # type: ignore[attr-defined]


async def _exposes(port: int, line: str) -> bool:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    return line in (await asyncio.to_thread(scrape)).splitlines()
