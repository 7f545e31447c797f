"""Elector chaos: Redis paused (SIGSTOP), killed and restarted; elector processes SIGTERMed/KILLed.

Every test here uses its own private server or real subprocesses. Timings are short and set
through ElectorTiming; ``min_reelect_ms`` is lowered below the production floor (1000 ms)
only so re-election fits in the test, which has no bearing on safety.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from streams.connection import connect
from streams.keys import Keys
from streams.server import RedisServer
from tests.elector_fleet import Fleet, Member, Term, refusals
from tests.waiting import wait_for
from workers.coordinator.leadership import ElectorTiming

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parent.parent


def _timing(ttl_ms: int, retry_period_ms: int | None = None) -> ElectorTiming:
    return ElectorTiming(
        ttl_ms=ttl_ms,
        renew_interval_ms=ttl_ms // 5,
        renew_deadline_ms=ttl_ms * 2 // 3,
        retry_period_ms=retry_period_ms or ttl_ms // 5,
        reelect_delay_ms=300,
        reelect_jitter_ms=100,
        min_reelect_ms=250,  # test-only (production floor: 1000 ms)
    )


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def _just_renewed(member: Member) -> float:
    """Wait for the leader's next good renew; return its send time (monotonic)."""
    before = member.elector.renewed_at
    await _wait_for(lambda: member.elector.renewed_at != before, 5, "a renew")
    renewed = member.elector.renewed_at
    assert renewed is not None
    return renewed


@pytest.fixture
async def server_client(own_redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client to this test's own server, for checks made from outside the fleet."""
    client = connect(own_redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_pause_shorter_than_the_renew_deadline_changes_nothing(
    own_redis_server: RedisServer, server_client: aioredis.Redis, keys: Keys
) -> None:
    ttl_s, deadline_s = 1.5, 1.0
    fleet = Fleet(own_redis_server.url, keys, _timing(1500))
    try:
        for _ in range(3):
            fleet.spawn()
        leader = await fleet.leader(timeout=5)
        term = fleet.term_of(leader)
        renewed = await _just_renewed(leader)
        own_redis_server.pause()
        try:
            await asyncio.sleep(0.5)  # renewal due after 0.3 s hangs; deadline is 1.0 s
        finally:
            own_redis_server.resume()
        assert time.monotonic() - renewed < deadline_s, "the machine stalled; pause overran"
        await asyncio.sleep(ttl_s)  # followers' queued acquires ran; several renewals since
        assert fleet.terms == [term] and term.end is None  # no demotion, nobody else elected
        assert leader.elector.is_leader
        assert leader.elector.renewed_at is not None and leader.elector.renewed_at > renewed
        assert await server_client.get(keys.leader) == leader.owner.encode()
        assert int(await server_client.get(keys.epoch)) == term.epoch  # same epoch
    finally:
        await fleet.close()
    fleet.assert_safe()


async def test_long_pause_leader_steps_down_before_its_lease_can_expire(
    own_redis_server: RedisServer, server_client: aioredis.Redis, keys: Keys
) -> None:
    ttl_s, deadline_s = 1.0, 0.666
    fleet = Fleet(own_redis_server.url, keys, _timing(1000))
    try:
        for _ in range(3):
            fleet.spawn()
        leader = await fleet.leader(timeout=5)
        term = fleet.term_of(leader)
        await _just_renewed(leader)
        paused_at = time.monotonic()
        own_redis_server.pause()
        try:
            await _wait_for(lambda: term.end is not None, 3, "the leader to step down")
            assert term.reason == "renew_deadline"
            assert term.end is not None and term.renewed_at_end is not None
            # Stepped down (work cancelled and awaited) before the lease could expire in
            # Redis -- it lives at least until the last good renew's send time + TTL ...
            assert term.end < term.renewed_at_end + ttl_s, (term.end, term.renewed_at_end)
            # ... and not before the renew deadline: a short outage is ridden out.
            assert term.end >= term.renewed_at_end + deadline_s - 0.005
            assert not leader.elector.is_leader
            await asyncio.sleep(max(0.0, paused_at + 2 * ttl_s - time.monotonic()))
        finally:
            own_redis_server.resume()
        successor = await fleet.leader(after_epoch=term.epoch, timeout=5)
        second = fleet.term_of(successor)
        assert second.epoch > term.epoch
        assert second.start > paused_at + 2 * ttl_s
        assert int(await server_client.get(keys.epoch)) >= second.epoch
    finally:
        await fleet.close()
    fleet.assert_safe()


async def test_redis_killed_and_restarted_electors_recover_without_restart(
    own_redis_server: RedisServer, server_client: aioredis.Redis, keys: Keys
) -> None:
    """The server loses everything; the same electors elect a new leader on the new one.

    The epoch key is lost with the data, yet the next epoch is still larger than every
    earlier one (the acquire script's floor: the server's TIME, and the largest epoch the
    electors have seen), so nothing downstream sees an epoch go back. The lease is lost
    with the data too; the old leader notices at its next renew, never later than its
    renew deadline (its fenced writes fail meanwhile, as the lease no longer names it).
    The restarted server has a new replication id, which the electors remember, so nobody
    acquires for one TTL after the change is seen (the quarantine): the terms do not
    overlap. Both bounds are asserted here.
    """
    # A 1.5 s retry period (3 s TTL): a prompt handoff after the restart can only come from
    # the release listener, which must therefore have reconnected and re-subscribed.
    timing = _timing(3000, retry_period_ms=1500)
    deadline_s = timing.renew_deadline_ms / 1000
    fleet = Fleet(own_redis_server.url, keys, timing)
    try:
        for _ in range(3):
            fleet.spawn()
        first = await fleet.leader(timeout=5)
        first_epoch = fleet.term_of(first).epoch
        await fleet.stop(first)  # one handoff before the crash
        fleet.spawn()
        leader = await fleet.leader(after_epoch=first_epoch, timeout=5)
        term = fleet.term_of(leader)
        await _just_renewed(leader)

        own_redis_server.kill()
        await asyncio.sleep(0.3)  # the point: Redis is gone for a while
        await asyncio.to_thread(own_redis_server.start)  # same port, empty data
        restarted_at = time.monotonic()

        await _wait_for(lambda: term.end is not None, 5, "the old leader to notice")
        assert term.reason in ("lost", "renew_deadline"), term.reason
        assert term.end is not None and term.renewed_at_end is not None
        assert term.end <= term.renewed_at_end + deadline_s + 0.3
        after = await fleet.leader(after_epoch=term.epoch, timeout=10)
        new_term = fleet.term_of(after)
        assert new_term.start > restarted_at
        assert new_term.start > term.end  # the quarantine outlasts the old term
        # Epochs never go back, although the epoch key restarted empty.
        assert max(t.epoch for t in fleet.terms if t.start < restarted_at) < new_term.epoch
        assert await server_client.get(keys.leader) == after.owner.encode()

        # Recovered for good: a graceful handoff is prompt again (listener re-subscribed).
        await _wait_for(lambda: len(fleet.members) == 3, 1, "members")
        deadline = time.monotonic() + 5
        while (await server_client.pubsub_numsub(keys.released))[0][1] < 3:
            assert time.monotonic() < deadline, "release listeners did not re-subscribe"
            await asyncio.sleep(0.02)
        stopped_at = time.monotonic()
        await fleet.stop(after)
        nxt = await fleet.leader(after_epoch=new_term.epoch, timeout=5)
        assert fleet.term_of(nxt).start - stopped_at < 0.5  # far below the 1.5 s retry
    finally:
        await fleet.close()
    # Terms after the restart never overlap; the pre-crash term is bounded above.
    later = [t for t in fleet.terms if t.start > restarted_at]
    _assert_no_overlap(later)


def _assert_no_overlap(terms: list[Term]) -> None:
    ordered = sorted(terms, key=lambda t: t.start)
    for before, after in itertools.pairwise(ordered):
        assert before.end is not None and before.end < after.start, (before, after)


class _Proc:
    """One elector subprocess (tests/elector_process.py) and the JSON lines it prints."""

    def __init__(self, url: str, namespace: str, ttl_ms: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.elector_process", url, namespace, str(ttl_ms)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: list[dict[str, Any]] = []

    async def wait_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["event"] == name:
                return event
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(
                asyncio.to_thread(self.proc.stdout.readline), deadline - time.monotonic()
            )
            if not line:
                break
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event
        raise AssertionError(f"no {name!r} from the elector process; saw {self.events}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def test_sigterm_releases_the_lease_and_exits_0(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    proc = _Proc(redis_server.url, keys.namespace, 5000)
    pubsub = redis_client.pubsub()
    try:
        await pubsub.subscribe(keys.released)
        elected = await proc.wait_event("elected")
        assert await redis_client.get(keys.leader) == elected["owner"].encode()
        proc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.proc.wait, 10) == 0
        demoted = await proc.wait_event("demoted")
        await proc.wait_event("exiting")
        assert demoted["reason"] == "shutdown" and demoted["epoch"] == elected["epoch"]
        assert await redis_client.exists(keys.leader) == 0  # released, not left to expire
        message = None
        deadline = time.monotonic() + 2
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        assert message is not None and message["data"] == elected["owner"].encode()
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        proc.close()


async def test_sigterm_hands_over_to_a_follower_promptly(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    # Follower: 1.5 s retry period, and the process holds a 5 s lease, so a takeover well
    # under a second after SIGTERM can only come from the release.
    proc = _Proc(redis_server.url, keys.namespace, 5000)
    fleet = Fleet(redis_server.url, keys, _timing(5000, retry_period_ms=1500))
    try:
        elected = await proc.wait_event("elected")
        refused = refusals(fleet.spawn().elector)
        deadline = time.monotonic() + 5
        while (await redis_client.pubsub_numsub(keys.released))[0][1] < 2:
            assert time.monotonic() < deadline, "listeners did not subscribe"
            await asyncio.sleep(0.02)
        # The follower has tried once and is asleep: only the release message can wake it.
        await wait_for(refused.__len__, 5, "the follower's first try")
        signalled = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        follower = await fleet.leader(timeout=5)
        latency = fleet.term_of(follower).start - signalled
        assert latency < 0.5, latency
        assert fleet.term_of(follower).epoch > elected["epoch"]
        assert await asyncio.to_thread(proc.proc.wait, 10) == 0
        demoted = await proc.wait_event("demoted")
        assert demoted["t"] < fleet.term_of(follower).start  # same monotonic clock
    finally:
        proc.close()
        await fleet.close()
    fleet.assert_safe()


async def test_sigkill_leader_process_is_replaced_only_after_its_ttl(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl_s = 1.5
    proc = _Proc(redis_server.url, keys.namespace, 1500)
    fleet = Fleet(redis_server.url, keys, _timing(1500))
    try:
        await proc.wait_event("elected")
        fleet.spawn()
        await asyncio.sleep(0.7)  # a couple of renewals
        pttl_before = await redis_client.pttl(keys.leader)
        killed = time.monotonic()
        proc.proc.kill()
        await asyncio.to_thread(proc.proc.wait, 10)
        pttl = await redis_client.pttl(keys.leader)
        assert pttl > 0  # nothing released it
        follower = await fleet.leader(timeout=5)
        latency = fleet.term_of(follower).start - killed
        # Not before the lease ran out: it still had pttl to live when read after the kill
        # (10 ms: PTTL's rounding and Redis's wall clock vs our monotonic one) ...
        assert latency >= pttl / 1000 - 0.01, (latency, pttl)
        # ... and the dead leader had renewed it recently (every 0.3 s), so that was a good
        # part of the 1.5 s TTL: the wait really was for the lease, not a formality.
        assert pttl > 500, (pttl_before, pttl)
        assert latency < ttl_s + 0.4, latency
    finally:
        proc.close()
        await fleet.close()
    fleet.assert_safe()
