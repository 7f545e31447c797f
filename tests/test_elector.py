"""The elector against a real Redis: terms, step-downs, takeover, handoff, and a 5-way race.

Timings are short (TTL 0.3-3 s) and set through ElectorTiming directly. Some tests lower
``min_reelect_ms`` below the production floor (1000 ms, which settings enforce) so rounds
fit in seconds; that pause only spaces campaigns out and plays no part in safety.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest
import redis.asyncio as aioredis

from schemas.errors import ConfigError, RedisUnavailable
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Held, Lease
from streams.server import RedisServer
from tests.elector_fleet import Fleet, refusals
from tests.waiting import wait_for
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import DemotionReason, ElectorTiming, Leadership

FAST = ElectorTiming(
    ttl_ms=600,
    renew_interval_ms=100,
    renew_deadline_ms=400,
    retry_period_ms=100,
    reelect_delay_ms=300,
    reelect_jitter_ms=100,
    min_reelect_ms=250,  # test-only: production never goes under 1000 ms
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"renew_interval_ms": 400},  # interval == deadline
        {"renew_interval_ms": 500},  # interval > deadline
        {"renew_deadline_ms": 600},  # deadline == ttl
        {"renew_deadline_ms": 900},
        {"renew_interval_ms": 0},
        {"retry_period_ms": 0},
        {"reelect_jitter_ms": -1},
        {"min_reelect_ms": -5},
    ],
)
def test_timing_refuses_unsafe_values(kwargs: dict[str, int]) -> None:
    base = {
        "ttl_ms": 600,
        "renew_interval_ms": 100,
        "renew_deadline_ms": 400,
        "retry_period_ms": 100,
    }
    with pytest.raises(ConfigError, match="elector timing"):
        ElectorTiming(**(base | kwargs))


async def test_leader_renews_and_releases_on_stop(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    fleet = Fleet(redis_server.url, keys, FAST, work_cleanup_s=0.05)
    member = fleet.spawn()
    try:
        await fleet.leader(timeout=5)
        term = fleet.term_of(member)
        assert member.elector.is_leader
        leadership = member.elector.leadership
        assert leadership is not None and leadership.epoch == term.epoch
        assert leadership.acquired_at <= leadership.elected_at <= term.start
        await asyncio.sleep(0.45)  # time passing is the point: several renew intervals
        renewed = member.elector.renewed_at
        assert renewed is not None and renewed > leadership.acquired_at + 0.25
        pttl = await redis_client.pttl(keys.leader)
        # Kept fresh: without renewals it would be under 150 ms by now.
        assert pttl > 250, pttl
        await fleet.stop(member)
    finally:
        await fleet.close()
    assert term.reason == "shutdown"
    assert not member.elector.is_leader
    # Demotion is reported only after the work was cancelled and its cleanup awaited.
    assert term.end is not None and term.end >= member.work_cleaned_at[term.epoch]
    assert await redis_client.exists(keys.leader) == 0  # released, not left to expire
    fleet.assert_safe()


async def test_stop_before_run_and_while_following(redis_server: RedisServer, keys: Keys) -> None:
    client = connect(redis_server.url)
    try:
        idle = Elector(client, keys, "idle", FAST)
        idle.stop()
        await asyncio.wait_for(idle.run(_forever), 2)
        assert idle.leadership_changes == 0

        holder = Lease(client, keys, "holder", 60_000)
        assert isinstance(await holder.acquire(), Acquired)
        follower = Elector(client, keys, "follower", FAST)
        refused = refusals(follower)
        task = asyncio.create_task(follower.run(_forever))
        await wait_for(lambda: bool(refused), 5, "the follower to be refused")
        start = time.monotonic()
        follower.stop()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - start < 0.5
        assert follower.leadership_changes == 0 and not follower.is_leader
    finally:
        await client.aclose()


async def _forever(leadership: Leadership) -> None:
    await asyncio.Event().wait()


async def test_work_returning_steps_down_releases_and_campaigns_again_after_a_pause(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    fleet = Fleet(redis_server.url, keys, FAST)
    member = fleet.spawn()
    try:
        await fleet.leader(timeout=5)
        first = fleet.term_of(member)
        member.finish[first.epoch].set()  # the leader work returns
        await wait_for(lambda: first.end is not None, 2, "demotion")
        assert first.reason == "work_ended"
        await wait_for(lambda: len(fleet.terms) == 2, 5, "re-election")
        second = fleet.terms[1]
        assert second.epoch > first.epoch
        assert first.end is not None
        # Waited at least max(delay - jitter, min_reelect) = 250 ms before campaigning again.
        assert second.start - first.end >= 0.25
        # ... and the lease was released meanwhile (not left to expire: 600 ms TTL).
        assert second.start - first.end < 0.6 + 0.4
    finally:
        await fleet.close()
    fleet.assert_safe()


async def test_unexpected_error_in_work_releases_then_propagates(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    client = connect(redis_server.url)
    reasons: list[DemotionReason] = []

    async def broken(leadership: Leadership) -> None:
        await asyncio.sleep(0.05)
        raise ValueError("a bug in leader work")

    elector = Elector(client, keys, "o", FAST, on_demoted=lambda _, r: reasons.append(r))
    try:
        with pytest.raises(ValueError, match="a bug in leader work"):
            await asyncio.wait_for(elector.run(broken), 5)
    finally:
        await client.aclose()
    assert reasons == ["work_ended"]
    assert await redis_client.exists(keys.leader) == 0  # handed on before dying


async def test_redis_unavailable_in_work_steps_down_and_campaigns_again(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = connect(redis_server.url)
    terms: list[tuple[int, DemotionReason]] = []
    elected: list[int] = []

    async def flaky(leadership: Leadership) -> None:
        if len(elected) == 1:
            raise RedisUnavailable("simulated outage inside leader work")
        await asyncio.Event().wait()

    elector = Elector(
        client,
        keys,
        "o",
        FAST,
        on_elected=lambda lead: elected.append(lead.epoch),
        on_demoted=lambda lead, r: terms.append((lead.epoch, r)),
    )
    task = asyncio.create_task(elector.run(flaky))
    try:
        await wait_for(lambda: len(elected) == 2, 5, "second term")
        assert terms == [(elected[0], "redis_unavailable")]
        assert elected[1] > elected[0]
    finally:
        elector.stop()
        await asyncio.wait_for(task, 5)
        await client.aclose()


async def test_losing_the_lease_ends_leadership_at_once(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    timing = ElectorTiming(
        ttl_ms=3000, renew_interval_ms=100, renew_deadline_ms=2000, retry_period_ms=100
    )
    fleet = Fleet(redis_server.url, keys, timing)
    member = fleet.spawn()
    try:
        await fleet.leader(timeout=5)
        term = fleet.term_of(member)
        # Someone takes the lease away (an operator, or a bug): the next renew says
        # "not owner" and leadership ends within about one renew interval.
        await redis_client.delete(keys.leader)
        usurper = Lease(redis_client, keys, "usurper", 60_000)
        taken_at = time.monotonic()
        usurped = await usurper.acquire()
        assert isinstance(usurped, Acquired) and usurped.epoch > term.epoch
        await wait_for(lambda: term.end is not None, 2, "demotion")
        assert term.reason == "lost"
        assert term.end is not None and term.end - taken_at < 0.1 + 0.4  # interval + noise
        assert await redis_client.get(keys.leader) == b"usurper"  # not released by the loser
    finally:
        await fleet.close()


async def test_follower_sleeps_until_expiry_instead_of_polling(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    holder = Lease(redis_client, keys, "crashed-holder", 1500)
    sent = time.monotonic()
    assert isinstance(await holder.acquire(), Acquired)  # never renewed: expires at ~sent+1.5
    timing = ElectorTiming(
        ttl_ms=3000, renew_interval_ms=500, renew_deadline_ms=2000, retry_period_ms=1000
    )
    client = connect(redis_server.url)
    elector = Elector(client, keys, "follower", timing)
    attempts: list[Acquired | Held] = []
    acquire = elector.lease.acquire

    async def counted(seen_epoch: int = 0) -> Acquired | Held:
        attempts.append(await acquire(seen_epoch))
        return attempts[-1]

    elector.lease.acquire = counted  # type: ignore[method-assign]
    elected_at: list[float] = []
    elector._on_elected = lambda lead: elected_at.append(time.monotonic())
    task = asyncio.create_task(elector.run(_forever))
    try:
        await wait_for(lambda: bool(elected_at), 5, "takeover")
        assert elected_at[0] >= sent + 1.5 - 0.002  # not before expiry (2 ms: clock domains)
        assert elected_at[0] < sent + 1.5 + 0.4
        # Held (wait the 1 s retry period), Held (wait the ~0.5 s left), Acquired.
        assert 2 <= len(attempts) <= 4, attempts
        assert isinstance(attempts[-1], Acquired)
    finally:
        elector.stop()
        await asyncio.wait_for(task, 5)
        await client.aclose()


async def test_crash_takeover_waits_for_the_ttl_and_no_longer(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    timing = ElectorTiming(
        ttl_ms=1000, renew_interval_ms=200, renew_deadline_ms=660, retry_period_ms=200
    )
    fleet = Fleet(redis_server.url, keys, timing)
    leader = fleet.spawn()
    try:
        await fleet.leader(timeout=5)
        followers = [fleet.spawn(), fleet.spawn()]
        refused = [refusals(f.elector) for f in followers]
        first = fleet.term_of(leader)

        def following_and_renewed() -> bool:
            renewed_at = leader.elector.renewed_at
            return all(refused) and renewed_at is not None and renewed_at > first.start

        await wait_for(following_and_renewed, 5, "both followers refused and a renewal")
        crashed_at = await fleet.crash(leader)
        renewed_at = leader.elector.renewed_at
        assert renewed_at is not None
        assert not leader.elector.is_leader
        # Not released: the dead leader's lease is still there.
        assert await redis_client.get(keys.leader) == leader.owner.encode()
        successor = await fleet.leader(after_epoch=first.epoch, timeout=5)
        assert successor in followers
        second = fleet.term_of(successor)
        # Not before the TTL ran out (the lease was renewed in Redis no earlier than the
        # renew was sent; 2 ms for Redis's wall clock vs our monotonic clock)...
        assert second.start >= renewed_at + 1.0 - 0.002, (second.start, renewed_at)
        # ... and not much after: the follower slept until just after expiry.
        assert second.start - renewed_at < 1.0 + 0.3
        assert second.start > crashed_at
    finally:
        await fleet.close()
    fleet.assert_safe()


async def test_graceful_handoff_is_prompt_via_the_release_message(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    # A 1.5 s retry period and a 3 s TTL: without the release message no follower could
    # take over in well under a second, so prompt handoffs prove the message works.
    timing = ElectorTiming(
        ttl_ms=3000, renew_interval_ms=500, renew_deadline_ms=2000, retry_period_ms=1500
    )
    fleet = Fleet(redis_server.url, keys, timing)
    latencies: list[float] = []
    try:
        fleet.spawn()
        leader = await fleet.leader(timeout=5)
        for _ in range(5):
            refused = refusals(fleet.spawn().elector)
            # Every follower listens on the release channel before the leader lets go.
            deadline = time.monotonic() + 5
            while (await redis_client.pubsub_numsub(keys.released))[0][1] < len(fleet.members):
                assert time.monotonic() < deadline, "listeners never subscribed"
                await asyncio.sleep(0.01)
            # The new follower has tried once and is asleep: only the message can wake it.
            await wait_for(refused.__len__, 5, "the new follower's first try")
            epoch = fleet.term_of(leader).epoch
            stopped_at = time.monotonic()
            await fleet.stop(leader)
            leader = await fleet.leader(after_epoch=epoch, timeout=5)
            latencies.append(fleet.term_of(leader).start - stopped_at)
    finally:
        await fleet.close()
    fleet.assert_safe()
    assert max(latencies) < 0.5, latencies  # far below the 1.5 s retry period
    assert statistics.median(latencies) <= 0.1, latencies


@pytest.mark.chaos  # 200 rounds of stopped, crashed and abandoned leaders: about 30 s
async def test_five_electors_race_for_200_rounds_without_overlap(
    redis_server: RedisServer, keys: Keys
) -> None:
    """Five electors; each round the leader stops, crashes or its work returns (mixed).

    Every term is recorded from on_elected to on_demoted on the monotonic clock; no two
    may overlap, epochs only grow, and a crashed leader is never replaced before its lease
    could have expired.
    """
    timing = ElectorTiming(
        ttl_ms=400,
        renew_interval_ms=80,
        renew_deadline_ms=260,
        retry_period_ms=80,
        reelect_delay_ms=100,
        reelect_jitter_ms=50,
        min_reelect_ms=50,  # test-only, below the 1000 ms production floor (see module doc)
    )
    fleet = Fleet(redis_server.url, keys, timing)
    rng = random.Random(7)
    modes = ["stop", "crash", "return"] * 67
    rng.shuffle(modes)
    modes = modes[:200]
    crash_checks: list[tuple[float, float]] = []  # (last good renew sent, successor elected)
    started = time.monotonic()
    try:
        for _ in range(5):
            fleet.spawn()
        epoch = 0
        for mode in modes:
            leader = await fleet.leader(after_epoch=epoch, timeout=10)
            epoch = fleet.term_of(leader).epoch
            await asyncio.sleep(rng.uniform(0, 0.08))  # sometimes across a renewal or two
            if mode == "stop":
                await fleet.stop(leader)
                fleet.spawn()
            elif mode == "crash":
                await fleet.crash(leader)
                fleet.spawn()
                renewed_at = leader.elector.renewed_at
                assert renewed_at is not None
                successor = await fleet.leader(after_epoch=epoch, timeout=10)
                crash_checks.append((renewed_at, fleet.term_of(successor).start))
            else:
                leader.finish[epoch].set()
        await fleet.leader(after_epoch=epoch, timeout=10)
    finally:
        await fleet.close()
    elapsed = time.monotonic() - started
    fleet.assert_safe()
    assert len(fleet.terms) >= 201
    reasons = {t.reason for t in fleet.terms}
    assert {"shutdown", "crash", "work_ended"} <= reasons, reasons
    assert len(crash_checks) == modes.count("crash") >= 60
    for renewed_at, successor_start in crash_checks:
        assert successor_start >= renewed_at + 0.4 - 0.002
    assert elapsed < 90, elapsed
