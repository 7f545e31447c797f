"""Burrow-style lag status: the pure rules, then every status reproduced on a real Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from streams.keys import GROUP, Keys
from streams.lag import LagSampler
from streams.lease import Acquired, Lease
from streams.server import RedisServer
from workers.monitor.lag_status import (
    GroupSample,
    LagWindow,
    Verdict,
    evaluate,
    evaluate_instant,
    worst,
)
from workers.monitor.lagmon import LagMonitor
from workers.settings import Settings


def _s(
    t: int, lag: int, pending: int = 0, pos: str | None = "1-0", *, leader: bool = True
) -> GroupSample:
    return GroupSample(
        at_ms=t * 1000,
        leader=leader,
        group_found=pos is not None,
        lag=lag,
        pending=pending,
        delivered_id=pos,
    )


def test_no_leader_is_stop_at_once() -> None:
    assert evaluate([_s(0, 0, leader=False)], window=5).status == "STOP"


def test_missing_group_with_backlog_is_stop_but_empty_is_ok() -> None:
    assert evaluate([_s(0, 3, pos=None)], window=5).status == "STOP"
    assert evaluate([_s(0, 0, pos=None)], window=5).status == "OK"


def test_zero_backlog_anywhere_in_the_window_is_ok() -> None:
    samples = [_s(0, 5), _s(1, 0), _s(2, 5), _s(3, 5)]
    assert evaluate(samples, window=4).status == "OK"


def test_window_not_full_is_ok() -> None:
    verdict = evaluate([_s(0, 5), _s(1, 5)], window=4)
    assert verdict.status == "OK" and "2/4" in verdict.reason


def test_backlog_without_movement_is_stall() -> None:
    assert evaluate([_s(t, 5) for t in range(4)], window=4).status == "STALL"
    # Only acks moving (pending drops) is progress.
    acks = [_s(0, 0, 5), _s(1, 0, 4), _s(2, 0, 4), _s(3, 0, 4)]
    assert evaluate(acks, window=4).status == "OK"
    # Pending stuck, nothing delivered: stalled even with zero undelivered lag.
    assert evaluate([_s(t, 0, 3) for t in range(4)], window=4).status == "STALL"


def test_growing_backlog_while_reading_is_warn() -> None:
    samples = [_s(t, 2 + 3 * t, 0, f"{t}-0") for t in range(4)]
    verdict = evaluate(samples, window=4)
    assert verdict.status == "WARN" and "2 to 11" in verdict.reason
    shrinking = [*samples[:3], _s(3, 4, 0, "3-0")]
    assert evaluate(shrinking, window=4).status == "OK"
    flat = [_s(t, 5, 0, f"{t}-0") for t in range(4)]
    assert evaluate(flat, window=4).status == "OK"


def test_only_the_last_window_counts() -> None:
    old_zero = [_s(0, 0)] + [_s(t, 5) for t in range(1, 5)]
    assert evaluate(old_zero, window=4).status == "STALL"
    window = LagWindow(3)
    statuses = [window.add(s).status for s in [_s(0, 0), _s(1, 5), _s(2, 5), _s(3, 5)]]
    assert statuses == ["OK", "OK", "OK", "STALL"]


def test_worst_orders_statuses() -> None:
    verdicts = [Verdict("OK", ""), Verdict("STALL", "s"), Verdict("WARN", "w")]
    assert worst(verdicts).status == "STALL"
    assert worst([]).status == "OK"


def test_instant_status_uses_entry_ages() -> None:
    base = _s(0, 0)
    assert evaluate_instant(base, window_s=10).status == "OK"
    old = GroupSample(0, True, True, lag=3, pending=0, delivered_id="1-0", lag_seconds=12.0)
    assert evaluate_instant(old, window_s=10).status == "STALL"
    fresh = GroupSample(0, True, True, lag=3, pending=0, delivered_id="1-0", lag_seconds=2.0)
    assert evaluate_instant(fresh, window_s=10).status == "OK"
    stuck = GroupSample(0, True, True, 0, 2, "1-0", oldest_pending_idle_ms=11_000)
    assert evaluate_instant(stuck, window_s=10).status == "STALL"
    assert evaluate_instant(_s(0, 0, leader=False), window_s=10).status == "STOP"


# --- real scenarios ----------------------------------------------------------------------


def _monitor(r: aioredis.Redis, keys: Keys, url: str, window: int = 4) -> LagMonitor:
    settings = Settings(
        regions=("a", "b"),
        redis_url=url,
        namespace=keys.namespace,
        lag_interval_ms=20,
        lag_window=window,
    )
    return LagMonitor(r, settings)


async def _add(r: aioredis.Redis, stream: str, n: int) -> None:
    for i in range(n):
        await r.xadd(stream, {"data": f'{{"n":{i}}}'})


async def _consume(r: aioredis.Redis, stream: str, count: int) -> None:
    reply = await r.xreadgroup(GROUP, "reader", {stream: ">"}, count=count)
    ids = [entry_id for _, entries in reply for entry_id, _ in entries]
    if ids:
        await r.xack(stream, GROUP, *ids)


async def _status(monitor: LagMonitor, stream: str) -> str:
    # The window counts samples, not time: no pause between them is needed.
    _, verdicts = await monitor.sample()
    return verdicts[stream].status


async def test_real_consumer_keeping_up_is_ok(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    await Lease(redis_client, keys, "leader#1", 10_000).acquire()
    await redis_client.xgroup_create(keys.health, GROUP, id="0", mkstream=True)
    monitor = _monitor(redis_client, keys, redis_server.url)
    for _ in range(6):
        await _add(redis_client, keys.health, 3)
        await _consume(redis_client, keys.health, 100)
        status = await _status(monitor, keys.health)
    assert status == "OK"


async def test_real_growing_lag_is_warn(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    await Lease(redis_client, keys, "leader#1", 10_000).acquire()
    await redis_client.xgroup_create(keys.health, GROUP, id="0", mkstream=True)
    monitor = _monitor(redis_client, keys, redis_server.url)
    statuses = []
    for _ in range(6):
        await _add(redis_client, keys.health, 5)  # producers outpace the reader
        await _consume(redis_client, keys.health, 2)
        statuses.append(await _status(monitor, keys.health))
    assert statuses[-1] == "WARN", statuses
    assert "grew" in monitor.verdicts[keys.health].reason


async def test_real_stalled_consumer_is_stall(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    await Lease(redis_client, keys, "leader#1", 10_000).acquire()
    await redis_client.xgroup_create(keys.events, GROUP, id="0", mkstream=True)
    await _add(redis_client, keys.events, 4)
    # The reader took two entries and never acknowledged them, then stopped reading.
    await redis_client.xreadgroup(GROUP, "reader", {keys.events: ">"}, count=2)
    monitor = _monitor(redis_client, keys, redis_server.url)
    statuses = [await _status(monitor, keys.events) for _ in range(5)]
    assert statuses[:3] == ["OK", "OK", "OK"] and statuses[-1] == "STALL", statuses
    # Reading resumes: the window sees movement, then the backlog reaches zero.
    await _consume(redis_client, keys.events, 100)
    rows = await redis_client.xpending_range(keys.events, GROUP, min="-", max="+", count=10)
    await redis_client.xack(keys.events, GROUP, *[row["message_id"] for row in rows])
    assert await _status(monitor, keys.events) == "OK"


async def test_real_no_leader_is_stop(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    lease = Lease(redis_client, keys, "leader#1", 10_000)
    acquired = await lease.acquire()
    assert isinstance(acquired, Acquired)
    await redis_client.xgroup_create(keys.health, GROUP, id="0", mkstream=True)
    monitor = _monitor(redis_client, keys, redis_server.url)
    assert await _status(monitor, keys.health) == "OK"
    await lease.release(acquired.epoch)
    assert await _status(monitor, keys.health) == "STOP"
    assert "no leader" in monitor.verdicts[keys.health].reason


async def test_instant_status_on_a_real_stall(redis_client: aioredis.Redis, keys: Keys) -> None:
    await Lease(redis_client, keys, "leader#1", 10_000).acquire()
    await redis_client.xgroup_create(keys.health, GROUP, id="0", mkstream=True)
    await _add(redis_client, keys.health, 2)
    sampler = LagSampler(redis_client, keys)
    report = await sampler.sample()
    sample = GroupSample.of(report, report.streams[0])
    assert evaluate_instant(sample, window_s=0.2).status == "OK"
    await asyncio.sleep(0.25)  # the point: nothing is read for longer than the 0.2 s window
    report = await sampler.sample()
    verdict = evaluate_instant(GroupSample.of(report, report.streams[0]), window_s=0.2)
    assert verdict.status == "STALL" and "nothing read" in verdict.reason


async def test_monitor_run_loop_samples_until_stopped(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    monitor = _monitor(redis_client, keys, redis_server.url)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.sleep(0.2)  # the point: how many samples a 200 ms run takes
    stop.set()
    await asyncio.wait_for(task, 2)
    assert monitor.verdicts[keys.health].status == "STOP"
    taken = monitor.metrics.registry.get_sample_value("failover_lag_sample_seconds_count")
    assert taken is not None and 3 <= taken <= 11  # every 20 ms for 200 ms, on a busy box
