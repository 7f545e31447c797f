"""Backlog rounds under a large policy state share one commit; decisions never wait for it."""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.codec import dead_letter
from schemas.events import DeadLetter
from schemas.state import PlannedFailover
from streams.keys import Keys
from streams.server import RedisServer
from tests.pipeline_helpers import (
    backlog,
    eventually,
    failovers,
    health,
    settings_for,
    start_term,
)
from workers.coordinator.rounds import LARGE_STATE_BYTES, MAX_ROUNDS, Work, carries
from workers.policy.apply import Outcome
from workers.policy.state import decode_state

T0 = 1_800_000_000.0
BATCH = 200
REGIONS = ("eu", "us", "ap")


async def _fill(redis: aioredis.Redis, keys: Keys, observers: int, passes: int) -> list[str]:
    """``passes`` rounds of healthy reports from ``observers`` per region, with an outage of
    ``eu`` (one observer, three failing reports) halfway; returns the outage's event ids."""
    entries: list[dict[bytes, bytes]] = []
    eu_ids: list[str] = []
    t = T0
    for n in range(passes):
        if n == passes // 2:
            for i in range(3):
                t += 0.001
                entries.append(health(f"us-o-{i}", "us", "o", "healthy", t))
                entries.append(health(f"eu-o-{i}", "eu", "o", "unhealthy", t))
                eu_ids.append(f"eu-o-{i}")
        for source in range(observers):
            for region in REGIONS:
                t += 0.001
                entries.append(health(f"{n}-{source}-{region}", region, f"p{source}", "healthy", t))
    for start in range(0, len(entries), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for fields in entries[start : start + 1000]:
                pipe.xadd(keys.health, fields)  # type: ignore[arg-type]
            await pipe.execute()
    return eu_ids


async def _drain(
    redis: aioredis.Redis, server: RedisServer, keys: Keys, observers: int, passes: int
) -> tuple[int, int, list[str]]:
    """Run a term over the backlog; (entries applied, commits, the outage's event ids)."""
    eu_ids = await _fill(redis, keys, observers, passes)
    settings = settings_for(server.url, keys.namespace, batch_size=BATCH)
    term = await start_term(redis, keys, settings)
    try:
        await eventually(lambda: _drained(redis, keys), what="backlog drained")
    finally:
        await term.stop()
    return term.pipeline.stats.applied, term.pipeline.stats.commits, eu_ids


async def _drained(redis: aioredis.Redis, keys: Keys) -> bool:
    return await backlog(redis, keys) == 0


async def test_backlog_rounds_share_commits_when_the_state_is_large(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    observers, passes = 300, 6  # 900 runs: a state of ~130 KB
    applied, commits, eu_ids = await _drain(redis_client, redis_server, keys, observers, passes)
    total = observers * len(REGIONS) * passes + 6
    assert applied == total
    rounds = total // BATCH
    # One commit per round would be ~rounds; shared, about a quarter once the state is large.
    assert commits <= rounds // 2, (commits, rounds)
    raw = await redis_client.hget(keys.state, "policy")
    assert raw is not None and len(raw) >= LARGE_STATE_BYTES
    state = decode_state(raw)
    assert {r: len(runs) for r, runs in state.runs.items()} == {
        "eu": observers + 1,
        "us": observers + 1,
        "ap": observers,
    }
    for region in REGIONS:
        for source in range(observers):
            assert state.runs[region][f"p{source}"].count == passes
    (decision,) = await failovers(redis_client, keys)
    assert (decision.from_region, decision.to_region) == ("eu", "us")
    assert decision.evidence == eu_ids


async def test_a_small_state_commits_every_round(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    observers, passes = 20, 60  # 60 runs: a state of a few KB
    applied, commits, _ = await _drain(redis_client, redis_server, keys, observers, passes)
    assert applied == observers * len(REGIONS) * passes + 6
    assert commits >= applied // BATCH


def _letter(n: int) -> DeadLetter:
    return dead_letter("h", f"{n}-0".encode(), "not JSON", 1, [b"data", b"x"])


def test_a_round_is_carried_only_in_a_backlog_under_a_large_state_without_decisions() -> None:
    work = Work(rounds=1)
    big = LARGE_STATE_BYTES
    assert carries(work, BATCH, BATCH, big)
    assert carries(work, BATCH // 2, BATCH, big)
    assert not carries(work, BATCH // 2 - 1, BATCH, big)  # not a backlog: commit now
    assert not carries(work, BATCH, BATCH, big - 1)  # a small state costs little to write
    assert not carries(Work(rounds=MAX_ROUNDS), BATCH, BATCH, big)
    letters = Work(rounds=1, out=Outcome(letters=[_letter(n) for n in range(BATCH)]))
    assert not carries(letters, BATCH, BATCH, big)  # a read's worth of dead letters is held
    letters.out.letters.pop()
    assert carries(letters, BATCH, BATCH, big)
    work.out.planned.append(PlannedFailover("d1", "eu", "us", "quorum_unhealthy", ["e1"], T0))
    assert not carries(work, BATCH, BATCH, big)  # a decision goes out at once
