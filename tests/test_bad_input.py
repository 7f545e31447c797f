"""Bad input never stops the leader: each bad entry is exactly one dead letter, kept whole."""

from __future__ import annotations

import hashlib
import json
import time

import redis.asyncio as aioredis

from schemas.codec import cut_fields, fields_from_raw, pairs
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

T0 = 1_800_000_000.0
GOOD = {
    "type": "health",
    "event_id": "g",
    "region": "eu",
    "source": "o9",
    "status": "healthy",
    "observed_at": T0,
}
MANUAL = {
    "type": "manual_failover",
    "event_id": "m",
    "region": "eu",
    "actor": "op",
    "at": T0,
    "target": "us",
}


def _data(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _without(key: str) -> dict[str, object]:
    return {k: v for k, v in GOOD.items() if k != key}


# (name, stream, flat fields, a piece of the expected reason, expected raw encoding)
CASES: list[tuple[str, str, list[bytes], str, str]] = [
    ("not json", "health", [b"data", b"not json"], "not valid JSON", "utf-8"),
    ("json array", "health", [b"data", b"[1, 2]"], "invalid event", "utf-8"),
    ("json null", "events", [b"data", b"null"], "invalid event", "utf-8"),
    ("no type", "health", [b"data", _data(_without("type"))], "`type`", "utf-8"),
    ("unknown type", "events", [b"data", _data({**MANUAL, "type": "bogus"})], "bogus", "utf-8"),
    ("missing field", "health", [b"data", _data(_without("source"))], "`source`", "utf-8"),
    (
        "missing target",
        "events",
        [b"data", _data({k: v for k, v in MANUAL.items() if k != "target"})],
        "`target`",
        "utf-8",
    ),
    (
        "wrong type",
        "health",
        [b"data", _data({**GOOD, "observed_at": "yesterday"})],
        "observed_at",
        "utf-8",
    ),
    (
        "wrong optional type",
        "health",
        [b"data", _data({**GOOD, "latency_ms": "fast"})],
        "latency_ms",
        "utf-8",
    ),
    ("outside enum", "health", [b"data", _data({**GOOD, "status": "sick"})], "sick", "utf-8"),
    (
        "time in ms",
        "health",
        [b"data", _data({**GOOD, "observed_at": T0 * 1000})],
        "observed_at",
        "utf-8",
    ),
    (
        "one megabyte",
        "health",
        [b"data", _data({**GOOD, "detail": "x" * 1_000_000})],
        "too large",
        "utf-8",
    ),
    ("deep nesting", "health", [b"data", b"[" * 30_000 + b"]" * 30_000], "", "utf-8"),
    ("no data field", "health", [b"payload", _data(GOOD)], "no 'data' field", "utf-8"),
    ("empty data", "events", [b"data", b""], "not valid JSON", "utf-8"),
    (
        "duplicate data fields",
        "health",
        [b"data", _data(GOOD), b"x", b"1", b"data", _data(GOOD)],
        "2 'data' fields",
        "utf-8",
    ),
    ("binary garbage", "health", [b"data", b"\xff\xfe\x00\x01garbage"], "JSON", "base64"),
    ("binary field name", "events", [b"\xc3\x28", b"x"], "no 'data' field", "base64"),
    ("health on events", "events", [b"data", _data(GOOD)], "does not belong", "utf-8"),
    ("manual on health", "health", [b"data", _data(MANUAL)], "does not belong", "utf-8"),
    (
        "decision on events",
        "events",
        [
            b"data",
            _data(
                {
                    "type": "leader_changed",
                    "epoch": 1,
                    "leader": "x",
                    "at": T0,
                }
            ),
        ],
        "does not belong",
        "utf-8",
    ),
]


async def test_each_bad_entry_is_one_dead_letter_and_valid_events_around_it_apply(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # The decision needs every valid eu observation, in order: one sits after each bad entry.
    settings = settings_for(redis_server.url, keys.namespace, threshold=len(CASES))
    term = await start_term(redis_client, keys, settings)
    try:
        for i in range(3):
            await redis_client.xadd(keys.health, health(f"us-{i}", "us", "o1", "healthy", T0 + i))
        # Keyed by (stream, id): the two streams number their entries independently.
        written: dict[tuple[str, str], tuple[str, str, list[bytes], str, str]] = {}
        eu_ids = []
        for i, case in enumerate(CASES):
            _, stream, fields, _, _ = case
            key = keys.health if stream == "health" else keys.events
            entry_id = await redis_client.execute_command("XADD", key, "*", *fields)
            written[key, entry_id.decode()] = case
            await redis_client.xadd(
                keys.health, health(f"eu-{i}", "eu", "o1", "unhealthy", T0 + 10 + i)
            )
            eu_ids.append(f"eu-{i}")

        async def done() -> bool:
            return await backlog(redis_client, keys) == 0 and bool(
                await failovers(redis_client, keys)
            )

        await eventually(done, what="all entries committed and the decision made")
        assert not term.task.done()  # still leading
    finally:
        await term.stop()
    letters = await dead_letters(redis_client, keys)
    assert sorted((letter.stream, letter.entry_id) for letter in letters) == sorted(written)
    for letter in letters:
        name, _, fields, reason, encoding = written[letter.stream, letter.entry_id]
        assert reason in letter.reason, (name, letter.reason)
        assert letter.reason, name
        assert letter.deliveries == 1, name
        assert letter.raw_encoding == encoding, name
        if name == "one megabyte":
            # Over FAILOVER_MAX_ENTRY_BYTES: never read whole; the letter names it instead.
            assert letter.raw_truncated
            assert letter.raw_bytes == sum(map(len, fields))
            assert letter.raw_sha256 == hashlib.sha256(b"".join(fields)).hexdigest()
            assert fields_from_raw(letter.raw, letter.raw_encoding) == pairs(cut_fields(fields))
            continue
        assert not letter.raw_truncated, name
        assert fields_from_raw(letter.raw, letter.raw_encoding) == pairs(fields), name
    (decision,) = await failovers(redis_client, keys)
    assert (decision.from_region, decision.to_region) == ("eu", "us")
    assert decision.evidence == eu_ids
    assert term.pipeline.stats.applied == 3 + len(CASES)
    assert term.pipeline.stats.dead_letters == len(CASES)


async def test_valid_entries_with_unknown_fields_are_applied_not_dead_lettered(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    settings = settings_for(redis_server.url, keys.namespace)
    term = await start_term(redis_client, keys, settings)
    try:
        newer = {**GOOD, "added_in_v2": {"nested": [1, 2]}, "latency_ms": 3}
        await redis_client.xadd(keys.health, {b"data": _data(newer)})
        await redis_client.xadd(keys.events, {b"data": _data({**MANUAL, "ticket": "OPS-1"})})

        async def done() -> bool:
            return await backlog(redis_client, keys) == 0

        await eventually(done, what="caught up")
    finally:
        await term.stop()
    assert await redis_client.xlen(keys.dlq) == 0
    assert term.pipeline.stats.applied == 2


async def test_event_from_a_clock_running_ahead_is_a_dead_letter_not_a_stale_failover(
    redis_client: aioredis.Redis, redis_server: RedisServer, keys: Keys
) -> None:
    # One probe an hour ahead would otherwise drag the policy clock forward and make the
    # active region (heard from a moment ago) look stale: a failover on a broken clock.
    settings = settings_for(
        redis_server.url, keys.namespace, max_clock_skew_ms=5000, stale_after_ms=30000
    )
    term = await start_term(redis_client, keys, settings)
    now = time.time()
    try:
        for region in ("eu", "us", "ap"):
            for i in range(3):
                await redis_client.xadd(
                    keys.health, health(f"{region}-{i}", region, "o1", "healthy", now + i * 0.01)
                )
        skewed = await redis_client.xadd(
            keys.health, health("future", "us", "o2", "healthy", now + 3600)
        )
        await redis_client.xadd(
            keys.health, health("slightly-ahead", "ap", "o2", "healthy", now + 2)
        )

        async def done() -> bool:
            return await backlog(redis_client, keys) == 0

        await eventually(done, what="caught up")
        # Several ticks: a clock dragged an hour ahead would decide on one of them.
        ticked = term.pipeline.stats.commits
        await wait_for(
            lambda: term.pipeline.stats.commits >= ticked + 3, 5, "three more tick commits"
        )
    finally:
        await term.stop()
    (letter,) = await dead_letters(redis_client, keys)
    assert letter.entry_id == skewed.decode()
    assert "ahead of its arrival" in letter.reason
    assert "FAILOVER_MAX_CLOCK_SKEW_MS=5000" in letter.reason
    assert await failovers(redis_client, keys) == []
    assert term.pipeline.policy is not None
    clock = term.pipeline.policy.summary().clock
    assert clock is not None and clock < now + 60
    # Nine on-time events and the one 2 s ahead (within the allowed skew) were applied.
    assert term.pipeline.stats.applied == 10
