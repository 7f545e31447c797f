"""Heartbeats in Redis (DESIGN §4 v2): write one's own, list the fleet, forget on a clean stop.

A heartbeat is the hash ``NS:members:<owner>`` with a TTL of three intervals. Beside it, the
sorted set ``NS:members`` (owner -> last heartbeat, unix ms) and the hash
``NS:members:last`` (owner -> last heartbeat as JSON) remember every process for
:data:`FORGET_AFTER_MS`, so a process whose hash expired is listed as *missing* rather than
silently gone. A process that stops cleanly removes itself (it is not missing).
Owner ids contain ``#`` (``<instance>#<nonce>``), so no owner's key is ``NS:members:last``.
"""

from __future__ import annotations

import time
from typing import cast

import msgspec

from schemas.members import Heartbeat
from streams.connection import Client
from streams.errors import translated
from streams.keys import Keys
from streams.replies import text

FORGET_AFTER_MS = 86_400_000
"""A process silent this long is dropped from the index (no longer shown as missing)."""

_PRUNE_BATCH = 100
_json = msgspec.json.Encoder()


class LeaderView(msgspec.Struct, frozen=True):
    """The lease as a process sees it: owner ("" when none) and the current epoch."""

    leader: str
    epoch: int


class Member(msgspec.Struct, frozen=True):
    """One process of the fleet as ``failoverctl members`` shows it."""

    heartbeat: Heartbeat
    alive: bool
    """False: its hash expired (no heartbeat for three intervals) and it did not say goodbye."""
    last_seen_ms: int


async def read_leader(redis: Client, keys: Keys) -> LeaderView:
    """The lease owner and epoch, in one round trip."""
    with translated():
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.leader)
            pipe.get(keys.epoch)
            owner, epoch = await pipe.execute()
    return LeaderView(leader=text(owner) if owner else "", epoch=int(epoch) if epoch else 0)


async def write_heartbeat(redis: Client, keys: Keys, beat: Heartbeat) -> None:
    """Write ``beat`` atomically: the hash with its TTL, and the index entries."""
    now_ms = int(beat.at * 1000)
    key = keys.member(beat.owner)
    with translated():
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)  # fields dropped by a newer version must not linger
            pipe.hset(key, mapping=beat.to_fields())  # type: ignore[arg-type]
            pipe.pexpire(key, 3 * beat.interval_ms)
            pipe.zadd(keys.members, {beat.owner: now_ms})
            pipe.hset(keys.members_last, beat.owner, _json.encode(beat))
            await pipe.execute()


async def forget(redis: Client, keys: Keys, owner: str) -> None:
    """Remove ``owner`` from the fleet (a clean stop: it is not missing)."""
    with translated():
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.member(owner))
            pipe.zrem(keys.members, owner)
            pipe.hdel(keys.members_last, owner)
            await pipe.execute()


async def prune(redis: Client, keys: Keys, now_ms: int) -> int:
    """Drop up to a batch of processes silent for :data:`FORGET_AFTER_MS`; how many."""
    with translated():
        old = await redis.zrangebyscore(
            keys.members, "-inf", now_ms - FORGET_AFTER_MS, start=0, num=_PRUNE_BATCH
        )
        if not old:
            return 0
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.members, *old)
            pipe.hdel(keys.members_last, *old)
            await pipe.execute()
    return len(old)


async def list_members(redis: Client, keys: Keys, now_ms: int | None = None) -> list[Member]:
    """Every process remembered, alive or missing, oldest start first."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with translated():
        rows = cast(
            "list[tuple[bytes, float]]",
            await redis.zrangebyscore(
                keys.members, now_ms - FORGET_AFTER_MS, "+inf", withscores=True
            ),
        )
        owners = [text(owner) for owner, _ in rows]
        if not owners:
            return []
        async with redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.hgetall(keys.member(owner))
            pipe.hmget(keys.members_last, owners)
            replies = await pipe.execute()
    lasts: list[bytes | None] = replies[-1]
    members = []
    for (_, score), live, last in zip(rows, replies[:-1], lasts, strict=True):
        beat = _parse(live, last)
        if beat is None:
            continue  # written by something else: not shown rather than a crash
        members.append(Member(heartbeat=beat, alive=bool(live), last_seen_ms=int(score)))
    members.sort(key=lambda m: (m.heartbeat.started_at, m.heartbeat.owner))
    return members


def _parse(live: dict[bytes, bytes], last: bytes | None) -> Heartbeat | None:
    try:
        if live:
            return Heartbeat.from_fields({text(k): text(v) for k, v in live.items()})
        if last is not None:
            return msgspec.json.decode(last, type=Heartbeat)
    except (ValueError, msgspec.DecodeError):
        return None
    return None
