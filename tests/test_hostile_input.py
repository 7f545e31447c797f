"""Issue 9, findings 1-3: one hostile entry, id or clock must not crash or mislead the leader."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import redis.asyncio as aioredis

from schemas.codec import CLOCK_AHEAD, encode_data
from schemas.events import Drain, HealthEvent, Restore
from streams.group import split_id
from streams.keys import Keys
from streams.server import RedisServer
from tests.pipeline_helpers import (
    backlog,
    dead_letters,
    eventually,
    failovers,
    health,
    settings_for,
    start_term,
)
from tests.waiting import wait_for

MAX_SEQ = 2**64 - 1
YEAR_S = 365 * 86400


async def _server_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _caught_up(redis: aioredis.Redis, keys: Keys) -> None:
    async def done() -> bool:
        return await backlog(redis, keys) == 0

    await eventually(done, what="every entry committed")


async def test_finding_1_a_valid_event_with_an_extra_stream_field_is_applied(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # The reproduction: `XADD NS:health * data <valid health> source p1`.
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings)
    try:
        event = HealthEvent("e1", "eu", "p1", "healthy", time.time())
        await redis_client.execute_command(
            "XADD", keys.health, "*", "data", encode_data(event), "source", "p1"
        )
        # The same on the events stream, extra field first.
        drain = Drain(event_id="d1", region="ap", actor="op", at=time.time())
        await redis_client.execute_command(
            "XADD", keys.events, "*", "ticket", "OPS-1", "data", encode_data(drain)
        )
        await _caught_up(redis_client, keys)
        assert not term.task.done()
    finally:
        await term.stop()
    assert await dead_letters(redis_client, keys) == []
    assert term.pipeline.stats.applied == 2
    assert term.pipeline.policy is not None
    assert "ap" in term.pipeline.policy.state.drained


async def test_finding_2_ids_with_sequence_at_and_above_2_63_do_not_stop_any_leader(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # The trim runs at the start of every term and every 10 ticks; retention 1 ms makes it
    # cut right up to the group's last-delivered id, which is the hostile one.
    settings = settings_for(redis_server.url, keys.namespace, input_retention_ms=1)
    ms = await _server_ms(redis_client)
    drain = Drain(event_id="d", region="ap", actor="op", at=time.time())
    top = f"{ms}-{MAX_SEQ}"
    await redis_client.execute_command("XADD", keys.events, top, "data", encode_data(drain))
    half = f"{ms}-{2**63}"
    probe = HealthEvent("h", "eu", "o1", "healthy", time.time())
    await redis_client.execute_command("XADD", keys.health, half, "data", encode_data(probe))
    first = await start_term(redis_client, keys, settings, owner="leader#1")
    try:
        await _caught_up(redis_client, keys)
        ticked = first.pipeline.stats.commits
        # 20+ tick commits: the term has trimmed at least twice after applying them.
        await wait_for(lambda: first.pipeline.stats.commits >= ticked + 25, 10, "trims")
        assert not first.task.done()
    finally:
        await first.stop()
    # A new leader starts with the hostile id as the group's last-delivered id.
    second = await start_term(redis_client, keys, settings, owner="leader#2")
    try:
        restore = Restore(event_id="r", region="ap", actor="op", at=time.time())
        after = await redis_client.xadd(keys.events, {b"data": encode_data(restore)})
        assert split_id(after) > (ms, MAX_SEQ)  # Redis moved past the exhausted sequence
        await redis_client.xadd(keys.health, health("h2", "eu", "o1", "healthy", time.time()))
        await _caught_up(redis_client, keys)
        await wait_for(lambda: second.pipeline.stats.commits >= 25, 10, "trims")
        assert not second.task.done()
    finally:
        await second.stop()
    assert await dead_letters(redis_client, keys) == []
    assert first.pipeline.stats.applied + second.pipeline.stats.applied == 4
    assert second.pipeline.policy is not None
    assert "ap" not in second.pipeline.policy.state.drained  # drain, then restore: in order


async def test_finding_3_an_explicit_future_id_is_not_a_clock_and_replay_agrees(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(
        redis_server.url, keys.namespace, max_clock_skew_ms=5000, stale_after_ms=30000
    )
    term = await start_term(redis_client, keys, settings)
    now = time.time()
    future_ms = await _server_ms(redis_client) + YEAR_S * 1000
    try:
        for region in ("eu", "us", "ap"):
            await redis_client.xadd(
                keys.health, health(f"{region}-0", region, "o1", "healthy", now)
            )
        # The attack: an id a year ahead carrying an event time a year ahead.
        forged = HealthEvent("forged", "us", "o2", "healthy", now + YEAR_S)
        forged_id = f"{future_ms}-0"
        await redis_client.execute_command(
            "XADD", keys.health, forged_id, "data", encode_data(forged)
        )
        # An honest event with a future id (its time is now): applied.
        honest = HealthEvent("honest", "ap", "o2", "healthy", time.time())
        await redis_client.execute_command(
            "XADD", keys.health, f"{future_ms}-5", "data", encode_data(honest)
        )
        # Later auto ids are pinned to the future millisecond; ingestion goes on normally.
        pinned = []
        for i in range(3):
            fields = health(f"eu-{i + 1}", "eu", "o1", "healthy", time.time())
            pinned.append(await redis_client.xadd(keys.health, fields))
        assert all(p.startswith(f"{future_ms}-".encode()) for p in pinned)
        await _caught_up(redis_client, keys)
        ticked = term.pipeline.stats.commits
        await wait_for(lambda: term.pipeline.stats.commits >= ticked + 3, 5, "tick commits")
        assert not term.task.done()
    finally:
        await term.stop()
    (letter,) = await dead_letters(redis_client, keys)
    assert letter.entry_id == forged_id
    assert letter.reason.startswith(CLOCK_AHEAD)
    assert await failovers(redis_client, keys) == []
    assert term.pipeline.policy is not None
    clock = term.pipeline.policy.summary().clock
    assert clock is not None and clock < time.time() + 60
    assert term.pipeline.stats.applied == 3 + 1 + 3

    # Replay, long after, judges the same entries the same way (the CLI, as an operator runs it).
    env = {
        **os.environ,
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_REGIONS": "eu,us,ap",
        "FAILOVER_STALE_AFTER_MS": "30000",
        "FAILOVER_MAX_CLOCK_SKEW_MS": "5000",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.ops.cli",
        "replay",
        "--from",
        "-",
        "--to",
        f"{future_ms}-100",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert [u["entry_id"] for u in result["undecodable"]] == [forged_id]
    assert result["undecodable"][0]["reason"] == letter.reason
    assert result["applied"]["health"] == 7
