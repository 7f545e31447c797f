"""Sentinel's promotion and switch messages wake the electors: the quarantine after a
primary change starts right after the failover leader's ``+promoted-slave``, not up to a
retry period later (DESIGN §4 v2).

Real servers: the replica set fixture (a primary, two replicas, three Sentinels); one
Sentinel down to show the watch does without it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from streams.address import RedisTarget
from streams.connection import connect
from streams.keys import Keys
from streams.replica_set import ReplicaSet
from streams.sentinel_watch import watch_switches
from tests.waiting import wait_for
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import ElectorTiming, Leadership

TTL_MS = 2000


async def test_a_client_without_sentinel_has_nothing_to_watch(
    redis_client: aioredis.Redis,
) -> None:
    assert watch_switches(redis_client) is None


@pytest.mark.chaos
async def test_the_quarantine_starts_when_sentinel_announces_the_switch(
    replica_set: ReplicaSet, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streams.sentinel_watch")
    caplog.set_level(logging.INFO, logger="workers.coordinator.quarantine")
    # A long retry period: without the switch message the first attempt on the new
    # primary would come up to 1.5 s after the switch, far outside the margin below.
    timing = ElectorTiming(
        ttl_ms=TTL_MS,
        renew_interval_ms=300,
        renew_deadline_ms=1200,
        retry_period_ms=1500,
        reelect_delay_ms=300,
        reelect_jitter_ms=0,
        min_reelect_ms=250,  # test-only
        min_replicas=1,
    )
    # One Sentinel is down from the start: the others still bring the news.
    dead_sentinel = replica_set.sentinels[2]
    target = RedisTarget(replica_set.url, sentinels=replica_set.sentinel_addresses)
    clients = [connect(target) for _ in range(2)]
    started: list[Leadership] = []
    electors = [
        Elector(c, keys, f"w{n}", timing, on_elected=started.append) for n, c in enumerate(clients)
    ]

    async def lead(_: Leadership) -> None:
        await asyncio.Event().wait()

    runs = [asyncio.create_task(e.run(lead)) for e in electors]
    try:
        await wait_for(lambda: bool(started), timeout=20, what="a first leader")
        watches = [e._listeners.switches for e in electors]
        assert all(w is not None for w in watches)
        await wait_for(
            lambda: all(w is not None and w.subscribed == 3 for w in watches),
            timeout=10,
            what="every watch subscribed to the three Sentinels",
        )
        dead_sentinel.kill()
        await wait_for(
            lambda: all(w is not None and w.subscribed == 2 for w in watches),
            timeout=10,
            what="the watches noticing the dead Sentinel",
        )
        await clients[0].wait(2, 2000)  # the lease and the marker are on both replicas
        old = replica_set.primary_port()
        replica_set.by_port(old).kill()
        killed = time.monotonic()
        switched = await asyncio.to_thread(replica_set.first_switch, old)
        await wait_for(
            lambda: any(e.quarantine.since is not None for e in electors),
            timeout=15,
            what="an elector seeing the quarantine",
        )
        since = min(e.quarantine.since for e in electors if e.quarantine.since is not None)
        assert killed < since < switched + 0.3, (since - switched, since - killed)
        lines = [r.getMessage() for r in caplog.records]
        heard = [n for n, line in enumerate(lines) if line.startswith("primary switch heard")]
        assert heard, lines
        assert any(line.startswith("quarantine: the Redis primary changed") for line in lines)
        new_port = replica_set.primary_port()
        # The failover leader's promotion message comes first (the others' +switch-master
        # only when its hello reaches them), and names the new primary.
        assert "says +promoted-slave slave" in lines[heard[0]], lines[heard[0]]
        assert f"(new primary 127.0.0.1:{new_port})" in lines[heard[0]]
    finally:
        for elector in electors:
            elector.stop()
        await asyncio.gather(*runs, return_exceptions=True)
        for client in clients:
            await client.aclose()
