"""Helpers shared by the pipeline tests: settings, a leader term, producers, polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex

from schemas.codec import decode_entry, encode_entry
from schemas.events import DeadLetter, FailoverDecision, HealthEvent, LeaderChanged
from streams.keys import GROUP, Keys
from streams.lease import Acquired, Lease
from workers.coordinator.leadership import Leadership
from workers.coordinator.pipeline import LeaderPipeline
from workers.settings import Settings, load_settings


def settings_for(url: str, namespace: str, **overrides: Any) -> Settings:
    """Settings for a test leader: three regions, fast ticks, a long stale time.

    The clock-skew guard is off: these tests write synthetic event times (a fixed T0, not
    the Redis clock); ``tests/test_bad_input.py`` tests the guard with it on.
    """
    env = {
        "FAILOVER_REDIS_URL": url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": "eu,us,ap",
        "FAILOVER_TICK_MS": "50",
        "FAILOVER_STALE_AFTER_MS": "600000",
        "FAILOVER_COOLDOWN_MS": "0",
        "FAILOVER_MAX_CLOCK_SKEW_MS": "0",
    }
    env.update({f"FAILOVER_{k.upper()}": str(v) for k, v in overrides.items()})
    return load_settings(env)


async def take_lease(redis: aioredis.Redis, keys: Keys, owner: str) -> Leadership:
    """Make ``owner`` the leader now (whoever held the lease loses it)."""
    await redis.delete(keys.leader)
    result = await Lease(redis, keys, owner, 60_000).acquire()
    assert isinstance(result, Acquired)
    now = time.monotonic()
    return Leadership(owner=owner, epoch=result.epoch, acquired_at=now, elected_at=now)


class Term:
    """A leader pipeline running in a task, as the elector would run it."""

    def __init__(self, pipeline: LeaderPipeline) -> None:
        self.pipeline = pipeline
        self.task = asyncio.create_task(pipeline.run())

    async def stop(self) -> None:
        """Cancel the term (as a demotion would) and wait for it."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_term(
    redis: aioredis.Redis, keys: Keys, settings: Settings, owner: str = "leader#1"
) -> Term:
    """Take the lease for ``owner`` and run a pipeline under it."""
    leadership = await take_lease(redis, keys, owner)
    return Term(LeaderPipeline(redis, keys, settings, leadership))


def health(
    event_id: str, region: str, source: str, status: str, observed_at: float
) -> dict[bytes, bytes]:
    """Fields of one health entry."""
    return encode_entry(
        HealthEvent(
            event_id=event_id,
            region=region,
            source=source,
            status=status,  # type: ignore[arg-type]
            observed_at=observed_at,
        )
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def decisions(redis: aioredis.Redis, keys: Keys) -> list[tuple[str, Any]]:
    """Every entry of the decisions stream, decoded, with its id."""
    rows = await redis.xrange(keys.decisions)
    return [(i.decode(), decode_entry(f, stream="decisions")) for i, f in rows]


async def failovers(redis: aioredis.Redis, keys: Keys) -> list[FailoverDecision]:
    """The failover decisions only."""
    return [d for _, d in await decisions(redis, keys) if isinstance(d, FailoverDecision)]


async def leader_changes(redis: aioredis.Redis, keys: Keys) -> list[LeaderChanged]:
    """The leader_changed entries only."""
    return [d for _, d in await decisions(redis, keys) if isinstance(d, LeaderChanged)]


async def dead_letters(redis: aioredis.Redis, keys: Keys) -> list[DeadLetter]:
    """Every dead letter, decoded."""
    rows = await redis.xrange(keys.dlq)
    out = []
    for _, fields in rows:
        letter = decode_entry(fields, stream="dlq")
        assert isinstance(letter, DeadLetter)
        out.append(letter)
    return out


async def backlog(redis: aioredis.Redis, keys: Keys) -> int:
    """Entries of both input streams not yet committed (undelivered + pending)."""
    total = 0
    for stream in keys.input_streams:
        try:
            groups = await redis.xinfo_groups(stream)
        except rex.ResponseError:  # no stream yet: the leader has not started
            return -1
        mine = [g for g in groups if g["name"] == GROUP.encode()]
        if not mine:  # no group yet: the leader has not started
            return -1
        total += int(mine[0]["lag"] or 0) + int(mine[0]["pending"])
    return total


async def summary(redis: aioredis.Redis, keys: Keys) -> Mapping[str, Any]:
    """The committed policy summary (``NS:state`` field ``summary``)."""
    raw = await redis.hget(keys.state, "summary")
    assert raw is not None
    result: Mapping[str, Any] = msgspec.json.decode(raw)
    return result
