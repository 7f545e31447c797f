"""End to end over Kafka: records on Kafka -> bridge -> Redis streams -> the leader's decision
-> mirror -> a record on the decisions topic; with re-delivered duplicates and a SIGKILLed
bridge. Every component is a real process: tansu, Redis, bridge, coordinator, mirror.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from schemas.codec import decode_entry
from schemas.events import FailoverDecision, LeaderChanged
from streams.keys import Keys
from streams.server import RedisServer
from tests.kafka_broker import TansuBroker
from tests.kafka_helpers import (
    Topics,
    committed,
    kafka_env,
    make_topics,
    produce,
    read_topic,
)
from tests.waiting import wait_for
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.chaos]

HEALTH_PARTITIONS = 4


class Observations:
    """Health events as probes on Kafka publish them, keyed by observer so each one's
    events stay in order on one partition (the policy applies them in stream order)."""

    def __init__(self) -> None:
        self.n = 0
        self.base = time.time()

    def event(self, region: str, source: str, status: str) -> tuple[bytes, bytes]:
        self.n += 1
        value = {
            "type": "health",
            "event_id": f"{source}-{region}-{self.n}",
            "region": region,
            "source": source,
            "status": status,
            "observed_at": self.base + self.n * 0.001,
        }
        return f"{region}/{source}".encode(), json.dumps(value).encode()


async def decisions(redis: aioredis.Redis, keys: Keys) -> list[Any]:
    """Every decision the leader committed, decoded."""
    return [
        decode_entry(fields, stream="decisions")
        for _id, fields in await redis.xrange(keys.decisions)
    ]


async def failovers(redis: aioredis.Redis, keys: Keys) -> list[FailoverDecision]:
    """The failover decisions only."""
    return [d for d in await decisions(redis, keys) if isinstance(d, FailoverDecision)]


async def leader_caught_up(redis: aioredis.Redis, keys: Keys, expected: int) -> bool:
    """True once NS:health holds ``expected`` entries and the leader applied all of them."""
    if await redis.xlen(keys.health) < expected:
        return False
    last = await redis.xrevrange(keys.health, count=1)
    groups = await redis.xinfo_groups(keys.health)
    for group in groups:
        if group["name"] == b"coordinator":
            return bool(group["last-delivered-id"] == last[0][0] and group["pending"] == 0)
    return False


async def test_kafka_to_decision_to_kafka_with_duplicates_and_a_killed_bridge(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    keys: Keys,
    workers: list[WorkerProcess],
) -> None:
    broker = kafka_broker
    topics: Topics = await make_topics(broker.bootstrap, health=HEALTH_PARTITIONS, decisions=2)
    env = kafka_env(
        broker.bootstrap,
        topics,
        redis_url=redis_server.url,
        namespace=keys.namespace,
        regions="eu,us,ap",
        threshold="3",
        quorum="1",
        recovery_threshold="3",
        cooldown_ms="0",  # so only the duplicate rule stands between duplicates and a decision
        stale_after_ms="600000",
        window_ms="600000",
        tick_ms="200",
    )

    def start(module: str, name: str, group: str = "") -> WorkerProcess:
        worker = WorkerProcess(module, env | _group(group), name).start()
        workers.append(worker)
        return worker

    start("workers.coordinator", "coordinator")
    start("workers.mirror", "mirror")
    bridge = start("workers.bridge", "bridge")
    obs = Observations()
    sent: list[bytes] = []

    async def send(records: list[tuple[bytes, bytes]]) -> None:
        await produce(broker.bootstrap, topics.health, records)
        sent.extend(v for _k, v in records)

    async def settled(what: str) -> None:
        await wait_for(lambda: leader_caught_up(redis_client, keys, len(sent)), 60, what)

    # 1. Standbys are up; the active region has two failures: one short of the threshold.
    #    (Nothing else from eu/p1, so a replay of its events cannot reset the failing run.)
    await send([obs.event(r, "p1", "healthy") for r in ("us", "ap") for _ in range(3)])
    await send([obs.event("eu", "p1", "unhealthy") for _ in range(2)])
    await settled("the leader to apply the first records")
    assert await failovers(redis_client, keys) == []

    # 2. Kafka re-delivers everything (a bridge in a new group starts from the beginning,
    #    as after a lost offset commit or a reset): without the duplicate rule the re-applied
    #    failures would reach the threshold and fail over.
    assert bridge.terminate() == 0, bridge.output()
    group = f"{env['FAILOVER_KAFKA_GROUP']}-again"
    bridge = start("workers.bridge", "bridge-2", group)
    once = len(sent)
    await wait_for(
        lambda: leader_caught_up(redis_client, keys, 2 * once), 60, "the duplicates applied"
    )
    assert await failovers(redis_client, keys) == [], "re-delivered duplicates made a decision"

    # 3. A genuinely new failure crosses the threshold: exactly one failover, eu -> us.
    await send([obs.event("eu", "p1", "unhealthy")])

    async def decided() -> bool:
        return len(await failovers(redis_client, keys)) >= 1

    await wait_for(decided, 30, "the failover decision")
    (decision,) = await failovers(redis_client, keys)
    assert (decision.from_region, decision.to_region) == ("eu", "us")

    # ...and it reaches the decisions topic, keyed by its target, with the leader change.
    async def mirrored() -> list[Any]:
        return await read_topic(broker.bootstrap, topics.decisions)

    async def on_kafka() -> bool:
        return any(r.key == b"us" for r in await mirrored())

    await wait_for(on_kafka, 30, "the decision on the Kafka decisions topic")
    records = await mirrored()
    kafka_decisions = [decode_entry([(b"data", r.value)], stream="decisions") for r in records]
    assert [d for d in kafka_decisions if isinstance(d, FailoverDecision)] == [decision]
    assert any(isinstance(d, LeaderChanged) for d in kafka_decisions)
    assert {r.key for r in records} == {b"leader", b"us"}

    # 4. Mid-stream SIGKILL of the bridge: a paced stream of observations, among them two
    #    failures of the new active region (one short of the threshold again).
    fillers = [obs.event("ap", f"f{k % 6}", "healthy") for k in range(360)]
    fillers.insert(100, obs.event("us", "p2", "unhealthy"))
    fillers.insert(200, obs.event("us", "p2", "unhealthy"))

    async def feed() -> None:
        for i in range(0, len(fillers), 9):
            await send(fillers[i : i + 9])
            await asyncio.sleep(0.03)

    feeding = asyncio.create_task(feed())
    try:
        before = await redis_client.xlen(keys.health)
        await wait_for(
            lambda: _grown(redis_client, keys, before + 120), 30, "the bridge writing mid-stream"
        )
        bridge.kill()
        # Stable now: nothing else writes NS:health. What this bridge (in the new group, so
        # its offsets count from 0) wrote but did not commit is re-delivered.
        written = await redis_client.xlen(keys.health)
        offsets = await committed(broker.bootstrap, group, topics.health, HEALTH_PARTITIONS)
        uncommitted = written - once - sum(max(o, 0) for o in offsets.values())
        bridge = start("workers.bridge", "bridge-3", group)
        await feeding
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)

    async def nothing_lost() -> bool:
        got = {f[b"data"] for _id, f in await redis_client.xrange(keys.health)}
        return got >= set(sent)

    await wait_for(nothing_lost, 60, "every record after the kill")
    total = await redis_client.xlen(keys.health)
    await wait_for(lambda: leader_caught_up(redis_client, keys, total), 60, "the leader caught up")
    duplicates = total - len(set(sent)) - once  # minus the rewind's deliberate copies
    assert duplicates >= uncommitted, (duplicates, uncommitted)
    assert await failovers(redis_client, keys) == [decision], "the kill changed a decision"
    print(f"\nSIGKILL: {uncommitted} written-uncommitted, {duplicates} duplicates re-delivered")

    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            assert worker.terminate() == 0, worker.output()


def _group(group: str) -> dict[str, str]:
    return {"FAILOVER_KAFKA_GROUP": group} if group else {}


async def _grown(redis: aioredis.Redis, keys: Keys, n: int) -> bool:
    return int(await redis.xlen(keys.health)) >= n
