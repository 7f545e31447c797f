"""After the Redis primary changes, nobody acquires the lease for one full TTL (§4 v2).

Real servers: a Redis restarted without its data (a new replication id), and the replica
set fixture (primary + 2 replicas + 3 Sentinels) whose primary is killed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import pytest
import redis.asyncio as aioredis

from streams.address import RedisTarget
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Held, Lease, Quarantined
from streams.replica_set import ReplicaSet
from streams.retry import call
from streams.server import RedisServer
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import ElectorTiming, Leadership

TTL_MS = 2000


async def _replid(redis: aioredis.Redis) -> str:
    info = await redis.info("replication")
    return str(info["master_replid"])


async def test_the_first_acquire_records_the_primary_and_is_not_held_back(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, "a", TTL_MS)
    assert isinstance(await lease.acquire(), Acquired)
    replid = await _replid(redis_client)
    assert lease.seen_replid == replid
    assert await redis_client.get(keys.primary) == replid.encode()
    other = Lease(redis_client, keys, "b", TTL_MS)
    held = await other.acquire()
    assert isinstance(held, Held) and held.owner == "a"
    assert other.seen_replid == replid
    assert await redis_client.exists(keys.quarantine) == 0


async def test_a_primary_that_lost_its_data_is_quarantined_for_one_ttl(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    """The marker key is gone with the data; a coordinator that saw the old replication id
    still notices the change, and once it did, everyone is held back."""
    client = connect(own_redis_server.url)
    try:
        remembering = Lease(client, keys, "a", TTL_MS)
        assert isinstance(await remembering.acquire(), Acquired)
        old = remembering.seen_replid
        own_redis_server.restart()  # killed and started again: nothing was persisted
        got = await call(remembering.acquire, what="acquire", deadline_s=10)
        detected = time.monotonic()
        assert isinstance(got, Quarantined) and got.started and got.replid != old
        assert TTL_MS - 500 < got.pttl_ms <= TTL_MS
        assert await client.exists(keys.leader) == 0  # refused before the lease was looked at
        fresh = await Lease(client, keys, "b", TTL_MS).acquire()
        assert isinstance(fresh, Quarantined) and not fresh.started
        while True:
            result = await Lease(client, keys, "c", TTL_MS).acquire()
            if not isinstance(result, Quarantined):
                break
            await asyncio.sleep(0.05)
        assert isinstance(result, Acquired)
        assert time.monotonic() - detected >= TTL_MS / 1000 - 0.5  # the server's TTL ran out
        assert await client.get(keys.primary) == got.replid.encode()
    finally:
        await client.aclose()


def _target(group: ReplicaSet) -> RedisTarget:
    return RedisTarget(group.url, sentinels=group.sentinel_addresses)


@pytest.mark.chaos
async def test_a_fresh_coordinator_sees_a_promotion_through_the_stored_primary(
    replica_set: ReplicaSet, keys: Keys
) -> None:
    client = connect(_target(replica_set))
    try:
        assert isinstance(await Lease(client, keys, "a", TTL_MS).acquire(), Acquired)
        await client.wait(2, 2000)  # the marker is on both replicas
        old = replica_set.primary_port()
        replica_set.by_port(old).kill()
        await asyncio.to_thread(replica_set.wait_switch, old)
        fresh = Lease(client, keys, "b", TTL_MS)  # knows no replication id of its own
        got = await call(fresh.acquire, what="acquire", deadline_s=30)
        assert isinstance(got, Quarantined) and got.started
    finally:
        await client.aclose()


class _Terms:
    """Every term the electors of one test start and end (monotonic times)."""

    def __init__(self) -> None:
        self.started: list[Leadership] = []
        self.ended: list[tuple[Leadership, float]] = []

    def elected(self, term: Leadership) -> None:
        self.started.append(term)

    def demoted(self, term: Leadership, _: str) -> None:
        self.ended.append((term, time.monotonic()))


@pytest.mark.chaos
async def test_no_lease_is_acquired_within_one_ttl_of_a_promotion(
    replica_set: ReplicaSet, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.coordinator.quarantine")
    timing = ElectorTiming(
        ttl_ms=TTL_MS,
        renew_interval_ms=300,
        renew_deadline_ms=1200,
        retry_period_ms=300,
        reelect_delay_ms=300,
        reelect_jitter_ms=0,
        min_reelect_ms=250,  # test-only
        min_replicas=1,
    )
    terms = _Terms()
    clients = [connect(_target(replica_set)) for _ in range(3)]
    electors = [
        Elector(c, keys, f"e{n}", timing, on_elected=terms.elected, on_demoted=terms.demoted)
        for n, c in enumerate(clients[:2])
    ]

    async def lead(_: Leadership) -> None:
        await asyncio.Event().wait()

    runs = [asyncio.create_task(e.run(lead)) for e in electors]
    try:
        deadline = time.monotonic() + 20
        while not terms.started:
            assert time.monotonic() < deadline, "no first leader"
            await asyncio.sleep(0.05)
        await clients[2].wait(2, 2000)  # the lease and the marker are on both replicas
        old = replica_set.primary_port()
        replica_set.by_port(old).kill()
        killed = time.monotonic()
        await asyncio.to_thread(replica_set.wait_switch, old)
        # The lease may have survived on the promoted replica: hand it over, so a new
        # acquisition has to happen on the new primary.
        for elector in electors:
            if elector.is_leader:
                elector.stop()
        deadline = time.monotonic() + 30
        while not [t for t in terms.started if t.acquired_at > killed]:
            assert time.monotonic() < deadline, "no leader after the promotion"
            await asyncio.sleep(0.05)
        (after, *_) = [t for t in terms.started if t.acquired_at > killed]
        seen = [e.quarantine.since for e in electors if e.quarantine.since is not None]
        assert seen, "no elector saw the primary change"
        detected = min(seen)
        assert detected > killed
        gap = after.acquired_at - detected
        assert gap >= TTL_MS / 1000, (gap, msgspec.to_builtins(after))
        lines = [r.getMessage() for r in caplog.records]
        assert any(line.startswith("quarantine: the Redis primary changed") for line in lines)
        assert any(line.startswith("quarantine over") for line in lines)
    finally:
        for elector in electors:
            elector.stop()
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        for client in clients:
            await client.aclose()
