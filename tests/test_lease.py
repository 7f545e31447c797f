"""streams.lease and its Lua scripts against a real Redis: ownership, epochs, contention."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Held, Lease, LeaseInfo, make_owner_id, read_lease
from streams.retry import call
from streams.server import RedisServer

TTL_MS = 5000


def _lease(client: aioredis.Redis, keys: Keys, owner: str, ttl_ms: int = TTL_MS) -> Lease:
    return Lease(client, keys, owner, ttl_ms)


async def _epoch(client: aioredis.Redis, keys: Keys) -> int:
    return int(await client.get(keys.epoch) or 0)


def test_owner_ids_are_instance_plus_fresh_nonce() -> None:
    ids = {make_owner_id("coord-1") for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"coord-1#[0-9a-f]{12}", i) for i in ids)


async def _server_us(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


async def test_acquire_free_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    before = await _server_us(redis_client)
    result = await _lease(redis_client, keys, "a").acquire()
    after = await _server_us(redis_client)
    assert isinstance(result, Acquired)
    # The first epoch is the server's TIME in µs (the floor that survives data loss).
    assert before <= result.epoch <= after
    assert await redis_client.get(keys.leader) == b"a"
    assert TTL_MS - 500 < await redis_client.pttl(keys.leader) <= TTL_MS
    assert await _epoch(redis_client, keys) == result.epoch


async def test_contention_is_a_return_value_never_retried(
    redis_client: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    first = await _lease(redis_client, keys, "a").acquire()
    assert isinstance(first, Acquired)
    b = _lease(redis_client, keys, "b")
    attempts = 0

    async def acquire() -> Acquired | Held:
        nonlocal attempts
        attempts += 1
        return await b.acquire()

    with caplog.at_level(logging.DEBUG, logger="streams.connection"):
        result = await call(acquire, what="acquire", deadline_s=2.0)
    assert isinstance(result, Held)
    assert result.owner == "a"
    assert TTL_MS - 1000 < result.pttl_ms <= TTL_MS
    assert result.epoch == first.epoch  # a follower learns the epoch to stay above
    assert attempts == 1
    assert not caplog.records  # nothing was retried or logged as a failure
    assert await redis_client.get(keys.leader) == b"a"
    # A refused acquire does not burn an epoch.
    assert await _epoch(redis_client, keys) == first.epoch


async def test_renew_only_by_the_owner_under_its_epoch(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    a = _lease(redis_client, keys, "a", ttl_ms=1000)
    b = _lease(redis_client, keys, "b", ttl_ms=60_000)
    result = await a.acquire()
    assert isinstance(result, Acquired)
    await asyncio.sleep(0.3)
    before = await redis_client.pttl(keys.leader)
    assert before < 800

    assert await b.renew(result.epoch) is False  # non-owner: nothing happens
    assert await redis_client.pttl(keys.leader) <= before
    assert await redis_client.get(keys.leader) == b"a"

    assert await a.renew(result.epoch + 1) is False  # owner, wrong epoch: refused too
    assert await a.renew(result.epoch - 1) is False
    assert await redis_client.pttl(keys.leader) <= before

    assert await a.renew(result.epoch) is True
    assert await redis_client.pttl(keys.leader) > 900


async def test_renew_after_expiry_cannot_revive(redis_client: aioredis.Redis, keys: Keys) -> None:
    a = _lease(redis_client, keys, "a", ttl_ms=150)
    result = await a.acquire()
    assert isinstance(result, Acquired)
    await asyncio.sleep(0.3)
    assert await a.renew(result.epoch) is False
    assert await redis_client.exists(keys.leader) == 0


async def test_release_only_by_the_owner(redis_client: aioredis.Redis, keys: Keys) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.released)
    try:
        a, b = _lease(redis_client, keys, "a"), _lease(redis_client, keys, "b")
        result = await a.acquire()
        assert isinstance(result, Acquired)

        assert await b.release(result.epoch) is False  # non-owner: nothing happens or is published
        assert await a.release(result.epoch + 1) is False  # owner under a stale epoch
        assert await redis_client.get(keys.leader) == b"a"
        assert await _next_message(pubsub, timeout=0.3) is None

        assert await a.release(result.epoch) is True
        assert await redis_client.exists(keys.leader) == 0
        message = await _next_message(pubsub, timeout=2.0)
        assert message is not None and message["data"] == b"a"
        assert message["channel"] == keys.released.encode()

        assert await a.release(result.epoch) is False  # already gone
        assert await _next_message(pubsub, timeout=0.3) is None
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _next_message(pubsub: aioredis.client.PubSub, timeout: float) -> dict[str, object] | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return message  # type: ignore[no-any-return]
    return None


async def test_epoch_strictly_increases_across_every_acquisition(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    a = _lease(redis_client, keys, "a", ttl_ms=100)
    b = _lease(redis_client, keys, "b", ttl_ms=100)
    epochs: list[int] = []

    async def take(lease: Lease) -> int:
        result = await lease.acquire()
        assert isinstance(result, Acquired), result
        epochs.append(result.epoch)
        return result.epoch

    e = await take(a)
    assert await a.release(e)
    e = await take(a)  # the same owner again after its own release: a new epoch
    assert await a.release(e)
    e = await take(b)
    assert await b.release(e)
    await take(b)
    await asyncio.sleep(0.25)  # ... and after expiry
    await take(a)
    await asyncio.sleep(0.25)
    await take(a)  # the same owner again after its own expiry
    await take(a)  # ... and while still holding it (a lost reply): re-entrant, new epoch
    assert epochs == sorted(set(epochs)), epochs  # strictly increasing
    assert await _epoch(redis_client, keys) == epochs[-1]


async def test_reacquire_by_the_holder_fences_its_earlier_term(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """An acquire whose reply was lost still ran; acquiring again must not strand the owner.

    The owner gets the lease under a new epoch, and anything of its earlier term that
    reaches Redis late (renew, release) is refused.
    """
    a = _lease(redis_client, keys, "a")
    ghost = await a.acquire()
    current = await a.acquire()
    assert isinstance(ghost, Acquired) and isinstance(current, Acquired)
    assert current.epoch > ghost.epoch
    assert await a.renew(ghost.epoch) is False
    assert await a.release(ghost.epoch) is False
    assert await redis_client.get(keys.leader) == b"a"
    assert await a.renew(current.epoch) is True
    assert await a.release(current.epoch) is True


async def test_held_lease_expires_then_another_owner_acquires(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    a = _lease(redis_client, keys, "a", ttl_ms=300)
    b = _lease(redis_client, keys, "b", ttl_ms=300)
    first = await a.acquire()
    assert isinstance(first, Acquired)
    held = await b.acquire()
    assert isinstance(held, Held) and held.owner == "a"
    await asyncio.sleep((held.pttl_ms + 20) / 1000)
    second = await b.acquire()
    assert isinstance(second, Acquired) and second.epoch > first.epoch


async def test_lease_without_expiry_reports_a_full_ttl(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    await redis_client.set(keys.leader, "set-by-hand")  # no TTL: PTTL answers -1
    held = await _lease(redis_client, keys, "b", ttl_ms=700).acquire()
    assert held == Held(owner="set-by-hand", pttl_ms=700, epoch=0)


async def test_only_one_of_many_concurrent_acquirers_wins(
    redis_server_clients: list[aioredis.Redis], keys: Keys
) -> None:
    leases = [_lease(c, keys, f"o{i}") for i, c in enumerate(redis_server_clients)]
    results = await asyncio.gather(*(lease.acquire() for lease in leases))
    winners = [r for r in results if isinstance(r, Acquired)]
    assert len(winners) == 1
    owner = (await redis_server_clients[0].get(keys.leader)).decode()
    assert all(isinstance(r, Held) and r.owner == owner for r in results if r not in winners)


@pytest.fixture
async def redis_server_clients(redis_server: RedisServer) -> AsyncIterator[list[aioredis.Redis]]:
    """Ten clients with their own connection pools, so the acquires really race."""
    clients = [connect(redis_server.url) for _ in range(10)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def test_read_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    assert await read_lease(redis_client, keys) == LeaseInfo(owner=None, pttl_ms=None, epoch=0)
    a = _lease(redis_client, keys, "a")
    result = await a.acquire()
    assert isinstance(result, Acquired)
    info = await read_lease(redis_client, keys)
    assert info.owner == "a" and info.epoch == result.epoch
    assert info.pttl_ms is not None and TTL_MS - 1000 < info.pttl_ms <= TTL_MS
    await a.release(result.epoch)
    assert await read_lease(redis_client, keys) == LeaseInfo(
        owner=None, pttl_ms=None, epoch=result.epoch
    )


async def test_epoch_never_goes_back_when_redis_loses_its_data(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """A restart without persistence (or a lagging replica promoted) loses the epoch key:
    the next epoch is still above every earlier one (the server's TIME is the floor)."""
    a = _lease(redis_client, keys, "a", ttl_ms=100)
    epochs = []
    for _ in range(3):
        got = await a.acquire()
        assert isinstance(got, Acquired)
        epochs.append(got.epoch)
    await redis_client.delete(keys.leader, keys.epoch)  # what a data loss leaves behind
    after = await a.acquire()
    assert isinstance(after, Acquired)
    assert after.epoch > max(epochs), (epochs, after)


async def test_epoch_stays_above_the_largest_epoch_the_caller_has_seen(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """A promoted primary whose clock is behind: the epoch a follower saw is the floor."""
    ahead = await _server_us(redis_client) + 3_600_000_000  # an old primary an hour ahead
    got = await _lease(redis_client, keys, "a").acquire(seen_epoch=ahead)
    assert got == Acquired(epoch=ahead + 1)
    assert await _epoch(redis_client, keys) == ahead + 1
    # ... and the stored epoch then carries on from there for everyone.
    await redis_client.delete(keys.leader)
    nxt = await _lease(redis_client, keys, "b").acquire()
    assert isinstance(nxt, Acquired) and nxt.epoch == ahead + 2


async def test_epoch_stays_exact_far_above_the_clock(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    big = 2**52 + 7  # well past %.14g: must not be rounded on its way into Redis
    got = await _lease(redis_client, keys, "a").acquire(seen_epoch=big)
    assert got == Acquired(epoch=big + 1)
    assert await redis_client.get(keys.epoch) == str(big + 1).encode()
    assert await _lease(redis_client, keys, "a").renew(big + 1) is True
