"""Lag snapshots, the lag monitor and its Prometheus endpoint, against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.lag import LagSampler, id_ms
from streams.lease import Acquired, Lease
from streams.server import RedisServer, free_port
from workers.exposition import serve
from workers.monitor.lagmon import LagMonitor
from workers.monitor.metrics import CoordinatorMetrics
from workers.settings import Settings


def _settings(keys: Keys, url: str, **kw: object) -> Settings:
    base: dict[str, object] = {
        "regions": ("a", "b"),
        "redis_url": url,
        "namespace": keys.namespace,
        "lag_interval_ms": 50,
        "lag_window": 4,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def _fill(r: aioredis.Redis, stream: str, n: int) -> list[str]:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"data": f'{{"n":{i}}}'})
        ids = await pipe.execute()
    return [i.decode() for i in ids]


async def test_empty_namespace_reports_zeroes(redis_client: aioredis.Redis, keys: Keys) -> None:
    report = await LagSampler(redis_client, keys).sample(with_state=True)
    assert report.leader is None and report.lease_ms_left is None and report.epoch == 0
    assert report.dlq_length == 0 and report.decisions_length == 0
    assert [s.stream for s in report.streams] == list(keys.input_streams)
    for s in report.streams:
        assert (s.kind, s.length, s.lag, s.pending, s.group_found) == ("none", 0, 0, 0, False)
    assert report.state is not None and report.state.summary is None


async def test_lag_pending_and_ages_follow_the_group(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ids = await _fill(redis_client, keys.health, 10)
    sampler = LagSampler(redis_client, keys)
    before = await sampler.sample()
    health = before.streams[0]
    # No group yet: everything is undelivered, the oldest entry is the first one.
    assert (health.length, health.lag, health.group_found) == (10, 10, False)
    assert health.first_undelivered_id == ids[0]
    assert health.lag_seconds == pytest.approx((before.now_ms - id_ms(ids[0])) / 1000)

    await redis_client.xgroup_create(keys.health, GROUP, id="0")
    await redis_client.xreadgroup(GROUP, "c1", {keys.health: ">"}, count=4)
    await redis_client.xack(keys.health, GROUP, ids[0], ids[1])
    await asyncio.sleep(0.02)
    after = (await sampler.sample()).streams[0]
    assert after.group_found and after.consumers == 1
    assert after.last_delivered_id == ids[3]
    assert (after.lag, after.lag_exact, after.pending) == (6, True, 2)
    assert after.first_undelivered_id == ids[4]
    assert after.oldest_pending_id == ids[2]
    assert after.oldest_pending_deliveries == 1
    assert after.oldest_pending_idle_ms >= 15
    assert after.oldest_pending_age_seconds >= 0.015
    assert after.backlog == 8


async def test_lag_is_counted_when_redis_reports_null(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ids = await _fill(redis_client, keys.events, 12)
    await redis_client.xgroup_create(keys.events, GROUP, id="0")
    await redis_client.xreadgroup(GROUP, "c1", {keys.events: ">"}, count=2)
    # Deleting an undelivered entry makes Redis 7 answer lag = NULL for the group.
    await redis_client.xdel(keys.events, ids[5])
    groups = await redis_client.xinfo_groups(keys.events)
    assert groups[0].get("lag") is None
    exact = (await LagSampler(redis_client, keys).sample()).streams[1]
    assert (exact.lag, exact.lag_exact, exact.first_undelivered_id) == (9, True, ids[2])
    # Past the cap after the delivered position, the delivered side is counted instead.
    other_side = (await LagSampler(redis_client, keys, count_cap=4).sample()).streams[1]
    assert (other_side.lag, other_side.lag_exact) == (9, True)
    capped = (await LagSampler(redis_client, keys, count_cap=2).sample()).streams[1]
    assert (capped.lag, capped.lag_exact) == (2, False)


async def test_lease_and_side_streams_in_the_snapshot(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, "node-a#1", 5000)
    acquired = await lease.acquire()
    await redis_client.xadd(keys.dlq, {"data": "x"})
    await redis_client.xadd(keys.decisions, {"data": "y"})
    await redis_client.xadd(keys.decisions, {"data": "z"})
    await redis_client.hset(keys.state, mapping={"epoch": 3, "leader": "node-a#1"})
    report = await LagSampler(redis_client, keys).sample(with_state=True)
    assert report.leader == "node-a#1"
    assert report.epoch == getattr(acquired, "epoch", None)
    assert report.lease_ms_left is not None and 4000 < report.lease_ms_left <= 5000
    assert (report.dlq_length, report.decisions_length) == (1, 2)
    assert report.state is not None
    assert (report.state.epoch, report.state.leader) == (3, "node-a#1")


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def _value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for lab, v in found[name] if all(lab.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


async def test_metrics_endpoint_is_scraped_and_parsed(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    monitor = LagMonitor(redis_client, _settings(keys, redis_server.url))
    server = serve(monitor.metrics.registry, 0, addr="127.0.0.1")
    try:
        ids = await _fill(redis_client, keys.health, 5)
        await redis_client.xgroup_create(keys.health, GROUP, id="0")
        await redis_client.xreadgroup(GROUP, "c1", {keys.health: ">"}, count=2)
        lease = Lease(redis_client, keys, "node-a#1", 5000)
        acquired = await lease.acquire()
        assert isinstance(acquired, Acquired)
        await monitor.sample()  # baseline epoch
        await lease.release(acquired.epoch)
        second = await Lease(redis_client, keys, "node-b#1", 5000).acquire()
        assert isinstance(second, Acquired)
        await redis_client.xadd(keys.dlq, {"data": "x"})
        await monitor.sample()
        found = await asyncio.to_thread(_scrape, server.port)
    finally:
        server.close()
    h = {"stream": keys.health, "group": GROUP}
    assert _value(found, "failover_stream_length", stream=keys.health) == 5
    assert _value(found, "failover_stream_length", stream=keys.dlq) == 1
    assert _value(found, "failover_stream_length", stream=keys.decisions) == 0
    assert _value(found, "failover_group_lag_entries", **h) == 3
    assert _value(found, "failover_group_pending", **h) == 2
    assert _value(found, "failover_group_lag_seconds", **h) > 0
    assert _value(found, "failover_oldest_pending_age_seconds", **h) > 0
    assert _value(found, "failover_dead_letters") == 1
    assert _value(found, "failover_leader_epoch") == second.epoch
    assert _value(found, "failover_leadership_changes_total") == 1
    assert _value(found, "failover_lag_status", state="OK", **h) == 1
    assert _value(found, "failover_lag_status", state="STOP", **h) == 0
    assert _value(found, "failover_lag_sample_seconds_count") == 2
    assert ids


def test_coordinator_metrics_are_exposed() -> None:
    metrics = CoordinatorMetrics("node-a")
    server = serve(metrics.registry, 0, addr="127.0.0.1")
    try:
        metrics.started("node-a#1234")
        fresh = _scrape(server.port)
        metrics.elected()
        metrics.committed(0.002)
        metrics.committed(0.004, fenced=True)
        metrics.decided("failover")
        metrics.decided("leader_changed")
        metrics.dead_lettered(3)
        metrics.demoted()
        found = _scrape(server.port)
    finally:
        server.close()
    c = {"coordinator": "node-a"}
    # Labelled counters exist at 0 before their first event, so increase() sees it.
    assert _value(fresh, "failover_commits_total", outcome="fenced", **c) == 0
    assert _value(fresh, "failover_decisions_total", type="failover", **c) == 0
    assert _value(fresh, "failover_dead_lettered_total", **c) == 0
    assert _value(found, "failover_is_leader", **c) == 0
    assert _value(found, "failover_commits_total", outcome="ok", **c) == 1
    assert _value(found, "failover_commits_total", outcome="fenced", **c) == 1
    assert _value(found, "failover_commit_latency_seconds_count", **c) == 2
    assert _value(found, "failover_decisions_total", type="failover", **c) == 1
    assert _value(found, "failover_dead_lettered_total", **c) == 3
    assert _value(found, "failover_coordinator_info", owner="node-a#1234", **c) == 1
    # No label named instance (Prometheus's own target label) on any series.
    assert not [n for n, rows in found.items() for labels, _ in rows if "instance" in labels]
    assert _value(found, "failover_build_info", role="coordinator") == 1
    assert "process_resident_memory_bytes" in found
    assert "python_info" in found


async def _commandstats_usec(r: aioredis.Redis) -> tuple[int, int]:
    stats = await r.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(entry["calls"]), int(entry["usec"])


async def _cost_us(r: aioredis.Redis, sampler: LagSampler, rounds: int) -> float:
    await sampler.sample()  # loads the script
    await r.config_resetstat()
    for _ in range(rounds):
        await sampler.sample()
    calls, usec = await _commandstats_usec(r)
    assert calls == rounds
    return usec / calls


async def test_sampling_costs_redis_under_1ms_per_stream(own_redis_server: RedisServer) -> None:
    """A loaded namespace (2 x 50k entries, 2k pending each) stays cheap, NULL lag included."""
    keys = Keys("{cost}")
    r = connect(own_redis_server.url)
    try:
        for stream in keys.input_streams:
            for _ in range(20):
                await _fill(r, stream, 2500)
            await r.xgroup_create(stream, GROUP, id="0")
            await r.xreadgroup(GROUP, "c1", {stream: ">"}, count=2000)
        sampler = LagSampler(r, keys)
        exact_us = await _cost_us(r, sampler, 50)
        # events: NULL lag after a deletion in the undelivered range, with more than the
        # cap on both sides of the delivered position: the most a sample ever counts.
        later = await r.xrange(keys.events, min="-", max="+", count=3000)
        await r.xdel(keys.events, later[2500][0])
        worst_us = await _cost_us(r, sampler, 50)
        report = await sampler.sample()
    finally:
        await r.aclose()
    assert report.streams[0].lag_exact and not report.streams[1].lag_exact
    per_stream_us = exact_us / 2
    counted_us = worst_us - per_stream_us
    print(
        f"lag sample: {exact_us:.0f}us per snapshot of 2 streams ({per_stream_us:.0f}us per"
        f" stream); a stream whose lag must be counted: {counted_us:.0f}us"
    )
    assert per_stream_us < 1000
    assert counted_us < 1000


def test_lagmon_process_serves_metrics_and_exits_0_on_sigterm(
    redis_server: RedisServer, keys: Keys
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_REGIONS": "a,b",
        "FAILOVER_METRICS_PORT": str(port),
        "FAILOVER_LAG_INTERVAL_MS": "100",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.lagmon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        while "failover_lag_status" not in found:
            assert time.monotonic() < deadline, "no metrics served"
            time.sleep(0.1)
            try:
                found = _scrape(port)
            except OSError:
                continue
        h = {"stream": keys.health, "group": GROUP}
        assert _value(found, "failover_lag_status", state="STOP", **h) == 1
        assert _value(found, "failover_leader_present") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


async def test_a_failed_sample_drops_redis_series_instead_of_freezing_them(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    """While Redis cannot be sampled, no stale leader_present=1 is served (FailoverNoLeader
    must be able to fire); lagmon_up, the error counter and the last success say why."""
    r = connect(own_redis_server.url)
    monitor = LagMonitor(r, _settings(keys, own_redis_server.url, lag_interval_ms=200))
    server = serve(monitor.metrics.registry, 0, addr="127.0.0.1")
    try:
        await Lease(r, keys, "node-a#1", 60_000).acquire()
        await monitor.sample()
        before = await asyncio.to_thread(_scrape, server.port)
        assert _value(before, "failover_leader_present") == 1
        assert _value(before, "failover_lagmon_up") == 1
        assert _value(before, "failover_lagmon_errors_total") == 0
        assert _value(before, "failover_leader_info", coordinator="node-a") == 1
        success = _value(before, "failover_lagmon_last_success_timestamp_seconds")
        assert success == pytest.approx(time.time(), abs=5)
        own_redis_server.pause()
        try:
            stop = asyncio.Event()
            runner = asyncio.create_task(monitor.run(stop))
            deadline = time.monotonic() + 10
            during = before
            while _value(during, "failover_lagmon_up") != 0:
                assert time.monotonic() < deadline, "the failed sample was never reported"
                await asyncio.sleep(0.05)
                during = await asyncio.to_thread(_scrape, server.port)
            stop.set()
            await runner
        finally:
            own_redis_server.resume()
    finally:
        server.close()
        await r.aclose()
    for gone in (
        "failover_leader_present",
        "failover_lag_status",
        "failover_leader_epoch",
        "failover_group_lag_entries",
        "failover_stream_length",
        "failover_dead_letters",
    ):
        assert gone not in during, gone
    assert _value(during, "failover_lagmon_errors_total") >= 1
    assert _value(during, "failover_lagmon_last_success_timestamp_seconds") == success


async def test_policy_summary_becomes_region_gauges(
    redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    summary = {
        "active_region": "b",
        "clock": 1.0,
        "regions": {
            "a": {
                "state": "down",
                "drained": False,
                "observers": {"p1": "unhealthy", "p2": "x"},
                "last_seen": 1.0,
                "down_reason": "quorum",
            },
            "b": {
                "state": "up",
                "drained": True,
                "observers": {"p1": "healthy"},
                "last_seen": 1.0,
                "down_reason": None,
                "fresh_observers": 3,
            },
        },
        "last_decision": {"decided_at": 1767225601.5},
        "refused": [],
        "no_target": None,
        "open_failover": None,
        "paused": True,
        "config_version": 4,
    }
    await redis_client.hset(keys.state, mapping={"summary": json.dumps(summary), "epoch": 1})
    monitor = LagMonitor(redis_client, _settings(keys, redis_server.url))
    server = serve(monitor.metrics.registry, 0, addr="127.0.0.1")
    try:
        await monitor.sample()
        found = await asyncio.to_thread(_scrape, server.port)
    finally:
        server.close()
    assert _value(found, "failover_active_region", region="b") == 1
    assert _value(found, "failover_active_region", region="a") == 0
    assert _value(found, "failover_region_state", region="a", state="down") == 1
    assert _value(found, "failover_region_state", region="a", state="up") == 0
    assert _value(found, "failover_region_state", region="b", state="up") == 1
    assert _value(found, "failover_region_observers", region="a") == 2
    assert _value(found, "failover_region_observers", region="b") == 3
    assert _value(found, "failover_region_drained", region="b") == 1
    assert _value(found, "failover_last_decision_timestamp_seconds") == 1767225601.5
    assert _value(found, "failover_paused") == 1
    assert _value(found, "failover_config_version") == 4
    assert "failover_panic" not in found  # absent from this summary: not invented


def test_a_taken_metrics_port_is_one_line_and_exit_2(redis_server: RedisServer, keys: Keys) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_METRICS_PORT": str(port),
        "FAILOVER_METRICS_ADDR": "127.0.0.1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.lagmon"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        holder.close()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"lagmon: FAILOVER_METRICS_PORT={port}: cannot serve metrics on 127.0.0.1:{port}:"
        " already in use (give each process on this host its own port)"
    ], done.stderr
