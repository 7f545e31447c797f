"""FAILOVER_MIN_REPLICAS: a lease counts only once WAIT confirms it on N replicas (§4 v2)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from streams.address import RedisTarget
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Lease, Unconfirmed
from streams.replica_set import ReplicaSet
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import ElectorTiming, Leadership

TIMING = ElectorTiming(
    ttl_ms=1500,
    renew_interval_ms=200,
    renew_deadline_ms=1000,
    retry_period_ms=200,
    reelect_delay_ms=300,
    reelect_jitter_ms=0,
    min_reelect_ms=250,  # test-only
    min_replicas=1,
)


async def test_without_replicas_the_lease_is_released_and_the_attempt_lost(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, "a", 5000, min_replicas=1, confirm_timeout_ms=100)
    got = await lease.acquire()
    assert isinstance(got, Unconfirmed) and got.replicas == 0
    assert await redis_client.exists(keys.leader) == 0  # released, not left to expire
    # The epoch it burned is not reused.
    plain = await Lease(redis_client, keys, "b", 5000).acquire()
    assert isinstance(plain, Acquired) and plain.epoch > got.epoch


async def test_an_elector_never_leads_on_an_unconfirmed_lease(
    redis_client: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    elector = Elector(redis_client, keys, "e", TIMING)

    async def lead(_: Leadership) -> None:
        raise AssertionError("led without a confirmed lease")

    with caplog.at_level(logging.WARNING, logger="workers.coordinator.elector"):
        task = asyncio.create_task(elector.run(lead))
        await asyncio.sleep(1.0)  # several attempts are the point
        elector.stop()
        await asyncio.wait_for(task, 5)
    lost = [r for r in caplog.records if "confirmed by 0 of 1 replicas" in r.getMessage()]
    assert len(lost) >= 2, [r.getMessage() for r in caplog.records]
    assert elector.leadership_changes == 0


async def test_replicas_confirm_the_lease(replica_set: ReplicaSet, keys: Keys) -> None:
    client = connect(RedisTarget(replica_set.url, sentinels=replica_set.sentinel_addresses))
    try:
        got = await Lease(client, keys, "a", 5000, min_replicas=2).acquire()
        assert isinstance(got, Acquired)
        for server in replica_set.servers:  # every copy has it, primary and replicas
            direct = connect(server.url)
            try:
                assert await direct.get(keys.leader) == b"a"
                assert int(await direct.get(keys.epoch)) == got.epoch
            finally:
                await direct.aclose()
    finally:
        await client.aclose()


@pytest.mark.chaos
async def test_paused_replicas_mean_no_lease_until_they_are_back(
    replica_set: ReplicaSet, keys: Keys
) -> None:
    client = connect(RedisTarget(replica_set.url, sentinels=replica_set.sentinel_addresses))
    replicas = [s for s in replica_set.servers if s.port != replica_set.primary_port()]
    try:
        for server in replicas:
            server.pause()
        lease = Lease(client, keys, "a", 5000, min_replicas=1, confirm_timeout_ms=300)
        got = await lease.acquire()
        assert isinstance(got, Unconfirmed) and got.replicas == 0
        assert await client.exists(keys.leader) == 0
        for server in replicas:
            server.resume()
        again = await lease.acquire()
        assert isinstance(again, Acquired) and again.epoch > got.epoch
    finally:
        for server in replicas:
            server.resume()
        await client.aclose()
