"""The consumer group against a real Redis: creation, fenced reads and claims, pruning, waiting."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from streams.commit import FENCED
from streams.group import ZERO_ID, ConsumerGroup, ensure_group, last_delivered
from streams.keys import GROUP, Keys
from streams.lease import Acquired, Lease


async def _lead(redis: aioredis.Redis, keys: Keys, owner: str) -> ConsumerGroup:
    """Take the lease for ``owner`` (expiring whoever held it) and return its group view."""
    await redis.delete(keys.leader)
    result = await Lease(redis, keys, owner, 30_000).acquire()
    assert isinstance(result, Acquired)
    group = ConsumerGroup(redis, keys, owner, result.epoch)
    await group.ensure()
    return group


async def _add(redis: aioredis.Redis, stream: str, *fields: bytes) -> bytes:
    entry_id: bytes = await redis.execute_command("XADD", stream, "*", *fields)
    return entry_id


async def _pending(redis: aioredis.Redis, stream: str) -> dict[bytes, int]:
    """Pending count per consumer of the group on ``stream``."""
    rows = await redis.xinfo_consumers(stream, GROUP)
    return {row["name"]: row["pending"] for row in rows}


async def test_ensure_group_is_idempotent_and_starts_at_zero(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    early = await _add(redis_client, keys.health, b"data", b"{}")
    await ensure_group(redis_client, keys)
    await ensure_group(redis_client, keys)
    for stream in keys.input_streams:
        groups = await redis_client.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [GROUP.encode()]
    group = await _lead(redis_client, keys, "a#1")
    got = await group.read([0, 1], 10)
    assert got is not FENCED
    assert [e.entry_id for e in got[0]] == [early]  # written before the group existed


async def test_read_keeps_fields_in_order_with_duplicates(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    h1 = await _add(redis_client, keys.health, b"data", b"x", b"extra", b"1", b"data", b"y")
    e1 = await _add(redis_client, keys.events, b"data", b"\xff\x00", b"k", b"v")
    h2 = await _add(redis_client, keys.health, b"data", b"z")
    got = await group.read([0, 1], 10)
    assert got is not FENCED
    assert [(e.entry_id, e.fields, e.deliveries) for e in got[0]] == [
        (h1, [b"data", b"x", b"extra", b"1", b"data", b"y"], 1),
        (h2, [b"data", b"z"], 1),
    ]
    assert [(e.stream, e.entry_id, e.fields) for e in got[1]] == [
        (1, e1, [b"data", b"\xff\x00", b"k", b"v"])
    ]
    again = await group.read([0, 1], 10)
    assert again == [[], []]


async def test_read_respects_count_and_stream_selection(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    ids = [await _add(redis_client, keys.health, b"data", str(i).encode()) for i in range(7)]
    ev = await _add(redis_client, keys.events, b"data", b"e")
    got = await group.read([0], 3)
    assert got is not FENCED
    assert [e.entry_id for e in got[0]] == ids[:3]
    assert got[1] == []  # not asked for
    got = await group.read([1, 0], 3)
    assert got is not FENCED
    assert [e.entry_id for e in got[0]] == ids[3:6]
    assert [e.entry_id for e in got[1]] == [ev]


async def test_fenced_read_refuses_after_lease_loss(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    await _add(redis_client, keys.health, b"data", b"x")
    await redis_client.delete(keys.leader)  # the lease expired
    assert await group.read([0, 1], 10) is FENCED
    # Nothing was taken off the group: still undelivered, nobody holds it.
    assert await last_delivered(redis_client, keys) == [ZERO_ID, ZERO_ID]
    assert await _pending(redis_client, keys.health) == {}


async def test_fenced_read_refuses_after_epoch_change(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old = await _lead(redis_client, keys, "a#1")
    new = await _lead(redis_client, keys, "b#2")
    entry = await _add(redis_client, keys.health, b"data", b"x")
    assert await old.read([0, 1], 10) is FENCED
    # The same owner re-elected later under a newer epoch: its old term is still fenced.
    again = await _lead(redis_client, keys, "a#1")
    assert again.epoch > new.epoch > old.epoch
    assert await old.read([0, 1], 10) is FENCED
    assert await new.read([0, 1], 10) is FENCED
    got = await again.read([0, 1], 10)
    assert got is not FENCED
    assert [e.entry_id for e in got[0]] == [entry]


async def test_read_recovers_a_lost_reply_from_own_pending(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    first = [await _add(redis_client, keys.health, b"data", str(i).encode()) for i in range(3)]
    lost = await group.read([0, 1], 10)  # pretend this reply never arrived
    assert lost is not FENCED
    later = await _add(redis_client, keys.health, b"data", b"later")
    got = await group.read([0, 1], 10, after=[first[0], ZERO_ID])
    assert got is not FENCED
    assert [(e.entry_id, e.deliveries) for e in got[0]] == [
        (first[1], 2),
        (first[2], 2),
        (later, 1),
    ]


async def test_claim_takes_over_a_dead_leaders_pending_entries_in_order(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    dead = await _lead(redis_client, keys, "dead#1")
    ids = [await _add(redis_client, keys.health, b"data", str(i).encode()) for i in range(10)]
    taken = await dead.read([0, 1], 4)
    assert taken is not FENCED
    assert len(taken[0]) == 4
    new = await _lead(redis_client, keys, "new#2")
    assert await dead.claim(0, ZERO_ID, 100) is FENCED  # the ex-leader cannot claim back
    claimed = []
    cursor = ZERO_ID
    while True:
        page = await new.claim(0, cursor, 3)
        assert page is not FENCED
        claimed.extend(page.entries)
        cursor = page.cursor
        if page.done:
            break
    assert [(e.entry_id, e.deliveries) for e in claimed] == [(i, 2) for i in ids[:4]]
    assert claimed[0].fields == [b"data", b"0"]
    assert await _pending(redis_client, keys.health) == {b"dead#1": 0, b"new#2": 4}
    # The rest was never delivered: the next read continues after the claimed entries.
    got = await new.read([0, 1], 100)
    assert got is not FENCED
    assert [e.entry_id for e in got[0]] == ids[4:]


async def test_claim_counts_deliveries_and_reports_deleted_entries(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    first = await _lead(redis_client, keys, "a#1")
    ids = [await _add(redis_client, keys.events, b"data", str(i).encode()) for i in range(3)]
    assert await first.read([1], 10) is not FENCED
    await redis_client.xdel(keys.events, ids[1])
    second = await _lead(redis_client, keys, "b#2")
    page = await second.claim(1, ZERO_ID, 10)
    assert page is not FENCED
    assert [(e.entry_id, e.deliveries) for e in page.entries] == [(ids[0], 2), (ids[2], 2)]
    assert page.deleted == [ids[1]]
    third = await _lead(redis_client, keys, "c#3")
    page = await third.claim(1, ZERO_ID, 10)
    assert page is not FENCED
    assert [(e.entry_id, e.deliveries) for e in page.entries] == [(ids[0], 3), (ids[2], 3)]
    assert page.deleted == []


async def test_prune_deletes_only_empty_old_consumers(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old = await _lead(redis_client, keys, "old#1")
    await _add(redis_client, keys.health, b"data", b"x")
    assert await old.read([0, 1], 10) is not FENCED
    idle = await _lead(redis_client, keys, "idle#2")
    # A consumer that exists in the group and holds nothing (e.g. it acked everything).
    await redis_client.xgroup_createconsumer(keys.health, GROUP, "idle#2")
    new = await _lead(redis_client, keys, "new#3")
    await redis_client.xgroup_createconsumer(keys.health, GROUP, "new#3")
    assert await idle.prune() is FENCED
    # idle#2 goes, old#1 still holds an entry. (The count also covers consumers on the
    # events stream: Valkey 8 registers a reader there even when it read nothing, Redis 7.0
    # does not, so the exact consumer sets below are what this test pins.)
    assert await new.prune() >= 1
    assert await _pending(redis_client, keys.health) == {b"old#1": 1, b"new#3": 0}
    page = await new.claim(0, ZERO_ID, 10)
    assert page is not FENCED
    assert await new.prune() >= 1
    assert await _pending(redis_client, keys.health) == {b"new#3": 1}
    assert await _pending(redis_client, keys.events) == {}


async def test_wait_wakes_on_new_entries_and_times_out_quickly(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    await _add(redis_client, keys.health, b"data", b"x")
    assert await group.read([0, 1], 10) is not FENCED
    after = await group.last_delivered()
    assert after[1] == ZERO_ID and after[0] != ZERO_ID
    start = time.monotonic()
    assert await group.wait(after, 50) is False
    assert time.monotonic() - start < 1.0
    await _add(redis_client, keys.events, b"data", b"y")
    assert await group.wait(after, 50) is True


async def test_the_read_guard_never_outlives_its_transaction(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    guard = keys.read_guard("a#1")
    await _add(redis_client, keys.health, b"data", b"x")
    assert await group.read([0, 1], 10) != [[], []]
    assert await redis_client.exists(guard) == 0
    await redis_client.delete(keys.leader)
    assert await group.read([0, 1], 10) is FENCED
    assert await redis_client.exists(guard) == 0


async def test_without_its_guard_a_read_takes_nothing(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """The Redis behaviour the fenced read rests on: XREADGROUP checks every stream's group
    before serving any, so a missing guard fails the whole read."""
    await ensure_group(redis_client, keys)
    await _add(redis_client, keys.health, b"data", b"x")
    guard = keys.read_guard("ghost#1")
    with pytest.raises(rex.ResponseError, match="NOGROUP"):
        await redis_client.execute_command(
            "XREADGROUP", "GROUP", GROUP, "ghost#1", "COUNT", 10,
            "STREAMS", guard, keys.health, keys.events, ">", ">", ">",
        )  # fmt: skip
    assert await _pending(redis_client, keys.health) == {}
    assert await last_delivered(redis_client, keys) == [ZERO_ID, ZERO_ID]


async def _old_entries(redis: aioredis.Redis, stream: str, n: int) -> None:
    """``n`` entries with ids 1-0 .. n-0 (1970: older than any retention)."""
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1, n + 1):
            pipe.xadd(stream, {b"data": b"x"}, id=f"{i}-0")
        await pipe.execute()


async def test_trim_drops_only_old_entries_every_group_has_acked(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    group = await _lead(redis_client, keys, "a#1")
    await _old_entries(redis_client, keys.health, 600)
    got = await group.read([0], 500)  # 1..500 delivered, 501..600 undelivered
    assert got is not FENCED and len(got[0]) == 500
    await redis_client.xack(keys.health, GROUP, *[f"{i}-0" for i in range(1, 301)])
    # A second group (say an auditor) that has read nothing holds everything back...
    await redis_client.xgroup_create(keys.health, "auditor", id="0")
    assert await group.trim(1000) == 0
    assert await redis_client.xlen(keys.health) == 600
    await redis_client.xgroup_destroy(keys.health, "auditor")
    # ...without it, only what precedes the oldest pending entry (301-0) may go.
    removed = await group.trim(1000)
    assert isinstance(removed, int) and removed > 0
    kept = await redis_client.xrange(keys.health, "301-0", "+")
    assert len(kept) == 300  # every pending (301..500) and undelivered (501..600) entry
    assert await redis_client.xlen(keys.health) == 600 - removed
    assert await _pending(redis_client, keys.health) == {b"a#1": 200}


async def test_trim_keeps_entries_inside_the_retention_and_is_fenced(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old = await _lead(redis_client, keys, "old#1")
    await _old_entries(redis_client, keys.health, 600)
    got = await old.read([0], 600)
    assert got is not FENCED
    await redis_client.xack(keys.health, GROUP, *[f"{i}-0" for i in range(1, 601)])
    new = await _lead(redis_client, keys, "new#2")
    assert await old.trim(1) is FENCED  # an ex-leader removes nothing
    assert await redis_client.xlen(keys.health) == 600
    # All acked; a retention reaching back to ~250 ms after 1970 (plus the few ms until the
    # script runs) must keep every entry from 300-0 on, and may drop whole nodes before.
    seconds, micros = await redis_client.time()
    removed = await new.trim(int(seconds) * 1000 + int(micros) // 1000 - 250)
    assert isinstance(removed, int) and removed > 0
    assert len(await redis_client.xrange(keys.health, "300-0", "+")) == 301
