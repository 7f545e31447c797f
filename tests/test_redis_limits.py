"""Issue 9, findings 7-8: a full Redis and an evicting Redis, with a real fleet running.

``maxmemory`` + ``noeviction``: the OOM answer is a transient error for every process (no
exit); once memory is freed a leader is elected again and every accepted entry is applied.
``allkeys-*``: Redis may evict the state, the epoch or undelivered entries, so no
coordinator leads (one log line per attempt, a metric, ``failoverctl status``) unless
``FAILOVER_ALLOW_EVICTION=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.codec import encode_entry
from schemas.events import HealthEvent
from streams.connection import connect
from streams.group import ConsumerGroup, ensure_group
from streams.keys import GROUP, Keys
from streams.server import RedisServer, free_port
from tests.pipeline_helpers import take_lease
from tests.waiting import wait_for_sync
from tests.worker_process import ROOT, WorkerProcess

NAMESPACE = "{limits}"
ENV = {
    "PYTHONPATH": str(ROOT),
    "FAILOVER_NAMESPACE": NAMESPACE,
    "FAILOVER_REGIONS": "eu,us,ap",
    "FAILOVER_LEASE_TTL_MS": "1000",
    "FAILOVER_REELECT_DELAY_MS": "1000",
    "FAILOVER_REELECT_JITTER_MS": "0",
    "FAILOVER_TICK_MS": "100",
    "FAILOVER_STALE_AFTER_MS": "3600000",
    "FAILOVER_SHUTDOWN_TIMEOUT_MS": "3000",
}
KEYS = Keys(NAMESPACE)


def _fleet(
    url: str, workers: list[WorkerProcess], n: int = 3, first: int = 0, **extra: str
) -> None:
    env = {**os.environ, **ENV, "FAILOVER_REDIS_URL": url, **extra}
    for i in range(first, first + n):
        name = f"c{i}"
        workers.append(
            WorkerProcess("workers.coordinator", {**env, "FAILOVER_INSTANCE_ID": name}, name)
        )
        workers[-1].start()


def _alive(workers: list[WorkerProcess]) -> None:
    for w in workers:
        assert w.proc is not None and w.proc.poll() is None, f"{w.name} exited:\n{w.output()}"


def _backlog(r: redis.Redis) -> int:
    total = 0
    for stream in KEYS.input_streams:
        for g in r.xinfo_groups(stream):
            if g["name"] == GROUP.encode():
                total += int(g["lag"] or 0) + int(g["pending"])
    return total


def _produce(r: redis.Redis, n: int, start: int = 0) -> list[bytes]:
    ids = []
    now = time.time()
    for i in range(start, start + n):
        event = HealthEvent(f"e{i}", "eu", "o1", "healthy", now + i / 1000)
        ids.append(r.xadd(KEYS.health, encode_entry(event)))  # type: ignore[arg-type]
    return ids


@pytest.fixture
def r(own_redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis_server.url)
    try:
        yield client
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def test_finding_7_oom_under_noeviction_is_retried_by_every_process_and_nothing_is_lost(
    own_redis_server: RedisServer, r: redis.Redis, workers: list[WorkerProcess]
) -> None:
    # DEBUG: each retried attempt is logged there (at INFO an outage is rate-limited, and a
    # short one may end before its line), and the test checks the OOM was retried.
    _fleet(own_redis_server.url, workers, FAILOVER_LOG_LEVEL="DEBUG")
    wait_for_sync(lambda: r.exists(KEYS.leader) == 1, 20, "a leader")
    accepted = _produce(r, 200)
    wait_for_sync(lambda: _backlog(r) == 0, 20, "the first entries applied")
    # Full: every write that may grow memory is refused with OOM from now on.
    r.config_set("maxmemory-policy", "noeviction")
    # Below what is used, not at it: buffers freed a moment later would make room again.
    r.config_set("maxmemory", int(r.info("memory")["used_memory"] * 0.8))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        _produce(r, 1, start=200)
    # Several lease terms under OOM (the leader cannot commit, nobody can take the lease),
    # and at least until some process met the OOM and retried it (heartbeats write every
    # few seconds; a loaded host may take longer).
    start = time.monotonic()
    while time.monotonic() < start + 4 or not _saw_oom(workers):
        assert time.monotonic() < start + 30, "no process met the OOM in 30 s"
        _alive(workers)
        time.sleep(0.2)
    r.config_set("maxmemory", 0)  # memory freed
    accepted += _produce(r, 100, start=300)
    wait_for_sync(lambda: r.exists(KEYS.leader) == 1, 20, "a leader again")
    wait_for_sync(lambda: _backlog(r) == 0, 30, "every accepted entry applied")
    _alive(workers)
    assert r.xlen(KEYS.dlq) == 0
    assert r.xlen(KEYS.health) == len(accepted)
    assert _saw_oom(workers), "the OOM was seen and retried"


def _saw_oom(workers: list[WorkerProcess]) -> bool:
    return any("used memory > 'maxmemory'" in w.output() for w in workers)


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_finding_8_no_coordinator_leads_under_allkeys_eviction_unless_allowed(
    own_redis_server: RedisServer, r: redis.Redis, workers: list[WorkerProcess]
) -> None:
    r.config_set("maxmemory", 512 * 1024 * 1024)
    r.config_set("maxmemory-policy", "allkeys-lru")
    port = free_port()
    _fleet(own_redis_server.url, workers, n=1, FAILOVER_METRICS_PORT=str(port))
    _fleet(own_redis_server.url, workers, n=1, first=1)
    # Every election attempt is refused, each with one log line naming the policy.
    wait_for_sync(
        lambda: all(w.output().count("allkeys-lru") >= 2 for w in workers), 20, "refusals"
    )
    assert r.exists(KEYS.leader) == 0
    assert r.get(KEYS.epoch) is None
    _alive(workers)
    first_port_metric = _metric(port, "failover_eviction_unsafe")
    assert first_port_metric == 1.0
    env = {**os.environ, **ENV, "FAILOVER_REDIS_URL": own_redis_server.url}
    status = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "status", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert json.loads(status.stdout)["eviction"]["unsafe"] is True, status.stderr
    text = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "status"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    assert "maxmemory-policy allkeys-lru" in text
    # Back to a safe policy: the next attempt leads, without a restart.
    r.config_set("maxmemory-policy", "noeviction")
    wait_for_sync(lambda: r.exists(KEYS.leader) == 1, 20, "a leader once the policy is safe")
    wait_for_sync(lambda: _metric(port, "failover_eviction_unsafe") == 0.0, 10, "metric 0")
    _alive(workers)


def test_finding_8_allow_eviction_lets_a_coordinator_lead_and_says_so(
    own_redis_server: RedisServer, r: redis.Redis, workers: list[WorkerProcess]
) -> None:
    r.config_set("maxmemory", 512 * 1024 * 1024)
    r.config_set("maxmemory-policy", "allkeys-lfu")
    _fleet(own_redis_server.url, workers, n=1, FAILOVER_ALLOW_EVICTION="1")
    wait_for_sync(lambda: r.exists(KEYS.leader) == 1, 20, "a leader")
    assert "FAILOVER_ALLOW_EVICTION=1" in workers[0].output()


def test_readme_names_the_maxmemory_policy_to_use() -> None:
    readme = (Path(ROOT) / "README.md").read_text()
    assert "**`maxmemory-policy`: use `noeviction`.**" in readme


async def test_input_trim_keeps_up_with_more_than_10000_entries_between_two_trims(
    redis_server: RedisServer, namespace: str
) -> None:
    # XTRIM MINID ~ removes at most 10,000 entries per call unless told otherwise: at
    # 2,000 entries/s and a trim every 10 s the health stream grew without bound (soak).
    keys = Keys(namespace)
    client = connect(redis_server.url, socket_timeout=10)
    try:
        await ensure_group(client, keys)
        old_ms = int(time.time() * 1000) - 3_600_000
        async with client.pipeline(transaction=False) as pipe:
            for i in range(30_000):
                pipe.xadd(keys.health, {b"data": b"x"}, id=f"{old_ms}-{i + 1}")
            await pipe.execute()
        await client.xreadgroup(GROUP, "leader#1", {keys.health: ">"}, count=30_000)
        ids = [i for i, _ in await client.xrange(keys.health)]
        await client.xack(keys.health, GROUP, *ids)
        leadership = await take_lease(client, keys, "leader#1")
        group = ConsumerGroup(client, keys, "leader#1", leadership.epoch)
        removed = await group.trim(retention_ms=60_000)
        # All but the last (partial) macro node, in one call.
        assert removed >= 29_900, removed
        assert await client.xlen(keys.health) <= 100
    finally:
        await client.aclose()
